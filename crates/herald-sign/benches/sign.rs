//! One-at-a-time vs batched signing at 256 B, 1 KiB and 16 KiB bodies.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_sign::{BatchSigner, Message, Scheme, SignedHeaders, Signer};

const BATCH: usize = 64;

fn signing(c: &mut Criterion) {
    let signer = Signer::new(
        Scheme::Standard,
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    .expect("valid secret");
    for body_bytes in [256usize, 1024, 16 * 1024] {
        let body = vec![b'x'; body_bytes];
        let ids: Vec<String> = (0..BATCH).map(|i| format!("msg_{i:024}")).collect();
        let jobs: Vec<(&Signer, Message<'_>)> = ids
            .iter()
            .map(|id| {
                (
                    &signer,
                    Message {
                        id,
                        timestamp_s: 1_700_000_000,
                        url: "https://example.com/hook",
                        body: &body,
                    },
                )
            })
            .collect();
        let mut out = vec![SignedHeaders::new(); BATCH];
        let mut group = c.benchmark_group(format!("standard/{body_bytes}B"));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(BenchmarkId::new("one_at_a_time", BATCH), |b| {
            b.iter(|| {
                for ((signer, msg), headers) in jobs.iter().zip(out.iter_mut()) {
                    signer.sign_into(msg, headers);
                }
            })
        });
        let mut batch = BatchSigner::new();
        group.bench_function(BenchmarkId::new("batched", BATCH), |b| {
            b.iter(|| batch.sign_batch(&jobs, &mut out))
        });
        group.finish();
    }
}

criterion_group!(benches, signing);
criterion_main!(benches);
