//! A shard's connections to one origin are capped (32 open, 1,024 requests queued for
//! them): an attempt past that finds no connection (`pool_full`) and sends nothing.
//! Five webhooks of one tenant on one receiver that holds every request, 256 attempts
//! each in flight at once (1,280 for 1,056 places): the refused attempts must be tried
//! again a minute later, not at their schedule's first delay (five minutes here), and
//! leave the webhooks' health alone. (That a refusal keeps the delivery's schedule owed
//! is the dispatcher's unit tests'.)

mod support;

use std::time::Duration;

use herald::{
    Breaker, DeliveryQuery, DeliveryRecord, DeliveryStatus, DispatcherConfig, EventFilter, Herald,
    RetrySchedule, Scheme, TenantId, WebhookSpec,
};
use herald_sink::{Action, Sink};
use support::{padded_event, wait_for};

const WEBHOOKS: usize = 5;
/// Attempts in flight per webhook (its `in_flight_max`, the most allowed).
const IN_FLIGHT: usize = 256;
/// Places for one origin's requests on a shard: its connections and the queue for them
/// (`PoolConfig`'s defaults).
const PLACES: usize = 32 + 1024;
const MINUTE_MS: u64 = 60_000;
const WAIT: Duration = Duration::from_secs(30);

/// Every delivery of `tenant`, a page at a time.
fn deliveries(herald: &Herald, tenant: &TenantId) -> Vec<DeliveryRecord> {
    let mut all = Vec::new();
    let mut query = DeliveryQuery::tenant(tenant.clone());
    query.limit = 500;
    loop {
        let page = herald.deliveries(query.clone()).unwrap();
        all.extend(page.items);
        match page.next_after {
            Some(after) => query.after = Some(after),
            None => return all,
        }
    }
}

fn refused(record: &DeliveryRecord) -> bool {
    record
        .attempts
        .iter()
        .any(|a| a.error.is_some_and(|e| e.name() == "pool_full"))
}

#[test]
fn attempts_past_an_origins_places_wait_a_minute_and_spare_the_endpoint() {
    // The receiver holds every request longer than the test runs: the first 32 take
    // the connections, the next 1,024 wait for them, the rest are refused.
    let sink = Sink::builder()
        .default_action(Action::delay(50_000, Action::ok()))
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dispatcher = DispatcherConfig {
        jitter_percent: 0,
        ..DispatcherConfig::default()
    };
    let herald = Herald::builder()
        .dispatcher_config(dispatcher)
        .data_dir(dir.path())
        .shards(1)
        .pin_threads(false)
        .allow_cidr("127.0.0.0/8")
        .shutdown_grace(Duration::from_millis(200))
        .start()
        .unwrap();
    let tenant = TenantId::parse("acme").unwrap();
    let schedule = vec![5 * MINUTE_MS, 30 * MINUTE_MS];
    for _ in 0..WEBHOOKS {
        let mut spec = WebhookSpec::new(
            herald::Url::parse(&sink.url("/hook")).unwrap(),
            vec![EventFilter::parse("*").unwrap()],
            Scheme::Standard,
            herald_sign::generate_secret(&Scheme::Standard, &[3; 32]),
        );
        spec.limits.in_flight_max = IN_FLIGHT as u32;
        spec.retry_schedule = Some(RetrySchedule::new(schedule.clone()).unwrap());
        herald.create_webhook(&tenant, spec).unwrap();
    }
    let receipts: Vec<_> = (0..IN_FLIGHT)
        .map(|n| herald.try_publish(&tenant, padded_event("evt", n)).unwrap())
        .collect();
    for receipt in receipts {
        receipt.wait().unwrap();
    }
    // Every delivery made its first attempt: sent, waiting for a connection, or refused.
    let expected_refused = WEBHOOKS * IN_FLIGHT - PLACES;
    let records = wait_for(WAIT, || {
        let records = deliveries(&herald, &tenant);
        let refused = records.iter().filter(|r| refused(r)).count();
        (records.len() == WEBHOOKS * IN_FLIGHT && refused >= expected_refused).then_some(records)
    });
    let refused: Vec<&DeliveryRecord> = records.iter().filter(|r| refused(r)).collect();
    assert_eq!(refused.len(), expected_refused, "attempts past the places");
    for record in &refused {
        let attempt = &record.attempts[0];
        assert_eq!(record.attempts.len(), 1, "{record:?}");
        assert_eq!(record.status, DeliveryStatus::Pending, "{record:?}");
        // A minute after the refusal, not the schedule's five.
        let refused_at = attempt.finished_at_ms.unwrap();
        assert_eq!(
            record.next_retry_at_ms,
            Some(refused_at + MINUTE_MS),
            "{record:?}"
        );
    }
    // The receiver saw no more requests than there are connections.
    assert!(sink.stats().requests <= 32, "{:?}", sink.stats());
    // The refusals say nothing of the endpoints: no failure counted, no breaker opened.
    for webhook in herald.list_webhooks(&tenant).unwrap() {
        assert!(webhook.spec.status.is_active(), "{webhook:?}");
        assert_eq!(webhook.health.consecutive_failures, 0, "{webhook:?}");
        assert_eq!(webhook.health.breaker, Breaker::Closed, "{webhook:?}");
    }
    drop(sink);
    herald.shutdown().unwrap();
}
