//! Steady-state signing allocates nothing: counted with an instrumented global allocator.
//! This binary has no test harness: the check runs on the main thread alone, so no other
//! thread's allocations are counted.
use std::alloc::System;

use herald_sign::{generate_secret, BatchSigner, Message, Scheme, SignedHeaders, Signer};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn main() {
    warmed_up_signing_allocates_nothing();
    println!("warmed_up_signing_allocates_nothing: ok");
}

fn warmed_up_signing_allocates_nothing() {
    let schemes = [
        Scheme::Standard,
        Scheme::Ed25519,
        Scheme::stripe(),
        Scheme::Stripe {
            header: "Crumb-Signature".into(),
        },
        Scheme::Olo,
    ];
    let signers: Vec<Signer> = schemes
        .iter()
        .map(|scheme| {
            let old = generate_secret(scheme, &[1; 32]);
            let new = generate_secret(scheme, &[2; 32]);
            Signer::new(scheme.clone(), &[&old, &new]).unwrap()
        })
        .collect();
    let bodies: Vec<Vec<u8>> = [0usize, 256, 1024, 16 * 1024]
        .iter()
        .map(|&len| vec![b'{'; len])
        .collect();
    let ids: Vec<String> = (0..64).map(|i| format!("msg_{i:020}")).collect();
    let jobs: Vec<(&Signer, Message<'_>)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                &signers[i % signers.len()],
                Message {
                    id,
                    timestamp_s: 1_700_000_000 + i as i64,
                    url: "https://example.com/hook",
                    body: &bodies[i % bodies.len()],
                },
            )
        })
        .collect();
    let mut out = vec![SignedHeaders::new(); jobs.len()];
    let mut batch = BatchSigner::new();
    batch.sign_batch(&jobs, &mut out);
    let expected: Vec<String> = out.iter().map(|headers| format!("{headers:?}")).collect();

    let region = Region::new(GLOBAL);
    for _ in 0..20 {
        batch.sign_batch(&jobs, &mut out);
    }
    // One at a time into warmed buffers: HMAC schemes need no scratch at all.
    for ((signer, msg), headers) in jobs.iter().zip(out.iter_mut()) {
        if *signer.scheme() != Scheme::Ed25519 {
            signer.sign_into(msg, headers);
        }
    }
    let change = region.change();
    assert_eq!(
        (change.allocations, change.reallocations),
        (0, 0),
        "{change:?}"
    );

    // The measured work did sign: same output as the warm-up round.
    let again: Vec<String> = out.iter().map(|headers| format!("{headers:?}")).collect();
    assert_eq!(again, expected);
}
