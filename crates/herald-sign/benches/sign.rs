//! One-at-a-time (`Signer::sign_into` in a loop) vs batched (`BatchSigner::sign_batch`)
//! signing of 64 messages, at 256 B, 1 KiB and 16 KiB bodies; ed25519 at 256 B, where the
//! batch reuses its scratch buffer instead of allocating per message; stripe and olo at
//! 1 KiB (their HMAC tags hashed in lanes like standard's); and 1 KiB bodies
//! taken in turn from 256 MiB, so that each comes cold from memory (as bodies of a
//! backlog do), where the batch loads a window of bodies before hashing them.
//!
//! `cargo bench -p herald-sign --bench sign -- --warm-up-time 1 --measurement-time 3`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald_sign::{generate_secret, BatchSigner, Message, Scheme, SignedHeaders, Signer};

const BATCH: usize = 64;

fn compare(c: &mut Criterion, scheme: Scheme, body_bytes: usize) {
    let secret = generate_secret(&scheme, &[7; 32]);
    let signer = Signer::new(scheme.clone(), &[&secret]).expect("generated secrets parse");
    let body = vec![b'x'; body_bytes];
    let ids: Vec<String> = (0..BATCH).map(|i| format!("msg_{i:028}")).collect();
    let jobs: Vec<(&Signer, Message<'_>)> = ids
        .iter()
        .map(|id| {
            let msg = Message {
                id,
                timestamp_s: 1_700_000_000,
                url: "https://example.com/hook",
                body: &body,
            };
            (&signer, msg)
        })
        .collect();
    let mut out = vec![SignedHeaders::new(); BATCH];
    let mut group = c.benchmark_group(format!("{scheme}/{body_bytes}B"));
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

/// Does processing the messages of one key together help? 64 messages round-robin over 16
/// signers, signed in that order and after grouping them by signer.
fn grouping(c: &mut Criterion) {
    let signers: Vec<Signer> = (0..16u8)
        .map(|seed| {
            let secret = generate_secret(&Scheme::Standard, &[seed; 32]);
            Signer::new(Scheme::Standard, &[&secret]).expect("generated secrets parse")
        })
        .collect();
    let body = vec![b'x'; 256];
    let ids: Vec<String> = (0..BATCH).map(|i| format!("msg_{i:028}")).collect();
    let round_robin: Vec<(&Signer, Message<'_>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let msg = Message {
                id,
                timestamp_s: 1_700_000_000,
                url: "https://example.com/hook",
                body: &body,
            };
            (&signers[i % signers.len()], msg)
        })
        .collect();
    let mut grouped = round_robin.clone();
    grouped.sort_by_key(|(signer, _)| std::ptr::from_ref(*signer) as usize);
    let mut out = vec![SignedHeaders::new(); BATCH];
    let mut batch = BatchSigner::new();
    let mut group = c.benchmark_group("standard/256B/16_signers");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(BenchmarkId::new("round_robin", BATCH), |b| {
        b.iter(|| batch.sign_batch(&round_robin, &mut out))
    });
    group.bench_function(BenchmarkId::new("grouped_by_signer", BATCH), |b| {
        b.iter(|| batch.sign_batch(&grouped, &mut out))
    });
    group.finish();
}

/// Bodies far apart in memory: each iteration signs the next 64 of 262,144 bodies of
/// 1 KiB (256 MiB, more than any cache) in a scrambled order, so that every body comes
/// from memory and the hardware cannot guess the next, as with the bodies of a backlog
/// drained between other work.
fn cold_bodies(c: &mut Criterion) {
    const BODY: usize = 1024;
    const ARENA: usize = 256 << 20;
    let secret = generate_secret(&Scheme::Standard, &[7; 32]);
    let signer = Signer::new(Scheme::Standard, &[&secret]).expect("generated secrets parse");
    let arena: Vec<u8> = (0..ARENA).map(|i| (i % 251) as u8).collect();
    let bodies: Vec<&[u8]> = arena.chunks(BODY).collect();
    let ids: Vec<String> = (0..BATCH).map(|i| format!("msg_{i:028}")).collect();
    let message = |index: usize, slot: usize| Message {
        id: &ids[slot],
        timestamp_s: 1_700_000_000,
        url: "https://example.com/hook",
        // An odd multiplier permutes the indices (the count is a power of two).
        body: bodies[index.wrapping_mul(40_503) % bodies.len()],
    };
    let mut out = vec![SignedHeaders::new(); BATCH];
    let mut group = c.benchmark_group("standard/1024B/cold");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut next = 0usize;
    group.bench_function(BenchmarkId::new("one_at_a_time", BATCH), |b| {
        b.iter(|| {
            for (slot, headers) in out.iter_mut().enumerate() {
                signer.sign_into(&message(next, slot), headers);
                next += 1;
            }
        })
    });
    let mut batch = BatchSigner::new();
    group.bench_function(BenchmarkId::new("batched", BATCH), |b| {
        b.iter(|| {
            let jobs: Vec<(&Signer, Message<'_>)> = (0..BATCH)
                .map(|slot| (&signer, message(next + slot, slot)))
                .collect();
            next += BATCH;
            batch.sign_batch(&jobs, &mut out);
        })
    });
    group.finish();
}

fn signing(c: &mut Criterion) {
    for body_bytes in [256, 1024, 16 * 1024] {
        compare(c, Scheme::Standard, body_bytes);
    }
    compare(c, Scheme::Ed25519, 256);
    compare(c, Scheme::stripe(), 1024);
    compare(c, Scheme::Olo, 1024);
}

criterion_group!(benches, signing, grouping, cold_bodies);
criterion_main!(benches);
