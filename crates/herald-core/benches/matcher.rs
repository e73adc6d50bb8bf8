//! Matching one event type against a tenant's webhooks, at 1,000 and 10,000 webhooks.
//!
//! Filters are a realistic mix: most webhooks subscribe to a few exact types, some to a
//! `prefix.*`, a few to `*`. Matching cost should track the number of matches, not the
//! number of webhooks.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use herald_core::{EventFilter, EventType, Matcher, WebhookId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;

const RESOURCES: &[&str] = &[
    "order", "payment", "refund", "customer", "menu", "store", "delivery", "invoice",
];
const ACTIONS: &[&str] = &["created", "updated", "deleted", "completed", "failed"];

fn random_type(rng: &mut StdRng) -> String {
    format!(
        "{}.{}",
        RESOURCES[rng.random_range(0..RESOURCES.len())],
        ACTIONS[rng.random_range(0..ACTIONS.len())]
    )
}

/// The index and, as a baseline in the same run, the plain list it replaces.
fn build(webhooks: usize) -> (Matcher, Vec<(WebhookId, Vec<EventFilter>)>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut matcher = Matcher::new();
    let mut list = Vec::with_capacity(webhooks);
    for i in 0..webhooks {
        let id = WebhookId::parse(&format!("wh_{i:06}")).unwrap();
        let roll = rng.random_range(0..100);
        let filters: Vec<EventFilter> = if roll < 1 {
            vec![EventFilter::All]
        } else if roll < 10 {
            let r = RESOURCES[rng.random_range(0..RESOURCES.len())];
            vec![EventFilter::parse(&format!("{r}.*")).unwrap()]
        } else {
            (0..rng.random_range(1..4))
                .map(|_| EventFilter::parse(&random_type(&mut rng)).unwrap())
                .collect()
        };
        matcher.insert(&id, &filters);
        list.push((id, filters));
    }
    (matcher, list)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher");
    for webhooks in [1_000, 10_000] {
        let (matcher, list) = build(webhooks);
        let event = EventType::parse("order.created").unwrap();
        let mut out = Vec::new();
        matcher.matches(&event, &mut out);
        let matched = out.len();
        group.bench_function(
            BenchmarkId::new("match", format!("{webhooks}_webhooks_{matched}_matches")),
            |b| {
                b.iter(|| {
                    out.clear();
                    matcher.matches(black_box(&event), &mut out);
                    black_box(out.len())
                })
            },
        );
        group.bench_function(
            BenchmarkId::new(
                "scan_baseline",
                format!("{webhooks}_webhooks_{matched}_matches"),
            ),
            |b| {
                b.iter(|| {
                    out.clear();
                    let event = black_box(&event);
                    out.extend(
                        list.iter()
                            .filter(|(_, filters)| filters.iter().any(|f| f.matches(event)))
                            .map(|(id, _)| id.clone()),
                    );
                    black_box(out.len())
                })
            },
        );
        let miss = EventType::parse("unsubscribed.type").unwrap();
        out.clear();
        matcher.matches(&miss, &mut out);
        let matched = out.len();
        group.bench_function(
            BenchmarkId::new(
                "match",
                format!("{webhooks}_webhooks_{matched}_matches_all_only"),
            ),
            |b| {
                b.iter(|| {
                    out.clear();
                    matcher.matches(black_box(&miss), &mut out);
                    black_box(out.len())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
