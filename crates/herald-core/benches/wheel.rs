//! Timing wheel at 1,000,000 pending entries: cost per insert, cancel and expire.
//!
//! Each measured iteration handles all 1,000,000 entries, so criterion's time per
//! iteration divided by 1,000,000 is the cost per entry (also shown as throughput).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald_core::wheel::{TimerKey, TimingWheel};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::hint::black_box;

const ENTRIES: usize = 1_000_000;
const START_MS: u64 = 1_700_000_000_000;
/// Retry deadlines spread over the default schedule's reach (a bit over a day) plus a tail
/// out to 30 days, like a shard with a backlog of failing endpoints.
const DAY_MS: u64 = 86_400_000;

fn deadlines(seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..ENTRIES)
        .map(|_| {
            let offset = if rng.random_bool(0.9) {
                rng.random_range(0..DAY_MS + DAY_MS / 12)
            } else {
                rng.random_range(0..30 * DAY_MS)
            };
            START_MS + offset
        })
        .collect()
}

fn filled(deadlines: &[u64]) -> (TimingWheel<u64>, Vec<TimerKey>) {
    let mut wheel = TimingWheel::new(START_MS);
    let keys = deadlines
        .iter()
        .enumerate()
        .map(|(i, &d)| wheel.insert(d, i as u64))
        .collect();
    (wheel, keys)
}

fn bench_wheel(c: &mut Criterion) {
    let deadlines = deadlines(1);
    let mut group = c.benchmark_group("wheel_1m");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ENTRIES as u64));

    group.bench_function("insert", |b| {
        b.iter_batched(
            || {
                // Warm slab: capacity for all entries already allocated, as in steady state.
                let (mut wheel, keys) = filled(&deadlines);
                for key in keys {
                    wheel.cancel(key);
                }
                wheel
            },
            |mut wheel| {
                for (i, &d) in deadlines.iter().enumerate() {
                    black_box(wheel.insert(d, i as u64));
                }
                wheel
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("cancel", |b| {
        let mut rng = StdRng::seed_from_u64(2);
        b.iter_batched(
            || {
                let (wheel, mut keys) = filled(&deadlines);
                keys.shuffle(&mut rng);
                (wheel, keys)
            },
            |(mut wheel, keys)| {
                for key in keys {
                    black_box(wheel.cancel(key));
                }
                wheel
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("expire", |b| {
        b.iter_batched(
            || (filled(&deadlines).0, Vec::with_capacity(ENTRIES)),
            |(mut wheel, mut out)| {
                // A driver that sleeps until the next deadline, as the shard loop does.
                while let Some(next) = wheel.next_deadline_ms() {
                    wheel.expire(next, &mut out);
                }
                assert_eq!(out.len(), ENTRIES);
                (wheel, out)
            },
            BatchSize::PerIteration,
        )
    });

    group.bench_function("expire_stepped_1s", |b| {
        b.iter_batched(
            || (filled(&deadlines).0, Vec::with_capacity(ENTRIES)),
            |(mut wheel, mut out)| {
                // A driver polled once a second regardless of deadlines.
                let mut now = START_MS;
                while !wheel.is_empty() {
                    now += 1_000;
                    wheel.expire(now, &mut out);
                }
                assert_eq!(out.len(), ENTRIES);
                (wheel, out)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_wheel);
criterion_main!(benches);
