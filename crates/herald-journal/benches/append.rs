//! Append throughput: buffered appends into the mapping (the sync thread runs
//! with its default group policy in the background), by payload size.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_journal::{Journal, JournalConfig};

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for payload_bytes in [64usize, 1024, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(dir.path());
        config.segment_bytes = 64 * 1024 * 1024;
        config.segments_max = 64;
        let (mut journal, _) = Journal::open(config).unwrap();
        let payload = vec![0xA5u8; payload_bytes];
        let mut appended = 0u64;
        group.throughput(Throughput::Bytes(payload_bytes as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(payload_bytes),
            &payload,
            |b, payload| {
                b.iter(|| {
                    let seq = journal.append(1, 1, payload).unwrap();
                    appended += 1;
                    // Checkpoint now and then so old segments go and disk use stays bounded.
                    if appended.is_multiple_of(200_000) {
                        journal.checkpoint(b"bench").unwrap();
                    }
                    seq
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
