//! Idempotent publishing through the engine: repeats answer with the first event and
//! send nothing, across restarts and checkpoints.

mod support;

use std::time::Duration;

use futures_lite::future::block_on;
use herald::{
    DeliveryQuery, DeliveryStatus, Error, Event, EventFilter, EventId, Fault, Herald, Scheme,
    TenantId, Url, WebhookSpec,
};
use support::Receiver;

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(20);

fn engine(dir: &std::path::Path, checkpoint_records: u64) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(2)
        .pin_threads(false)
        .allow_cidr("127.0.0.0/8")
        .checkpoint_records(checkpoint_records)
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("engine starts")
}

fn order(n: u64) -> Event {
    Event::parse("order.created", &serde_json::json!({ "order": n })).unwrap()
}

/// Every delivery of `tenant`, once all have ended.
fn settled(herald: &Herald, tenant: &TenantId) -> Vec<herald::DeliveryRecord> {
    support::wait_for(WAIT, || {
        let page = herald
            .deliveries(DeliveryQuery {
                limit: 1000,
                ..DeliveryQuery::tenant(tenant.clone())
            })
            .unwrap();
        page.items
            .iter()
            .all(|r| r.status.is_final())
            .then_some(page.items)
    })
}

#[test]
fn a_repeat_after_restart_is_a_duplicate_with_one_delivery() {
    // Once replaying the journal from its start, once from a checkpoint.
    for checkpoint_records in [1_000_000, 1] {
        let receiver = Receiver::start();
        let dir = tempfile::tempdir().unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let herald = engine(dir.path(), checkpoint_records);
        let spec = WebhookSpec::new(
            Url::parse(&receiver.url("/orders")).unwrap(),
            vec![EventFilter::parse("order.*").unwrap()],
            Scheme::Standard,
            herald_sign::generate_secret(&Scheme::Standard, &[3; 32]),
        );
        herald.create_webhook(&acme, spec).unwrap();
        let first = herald
            .publish_detailed(&acme, order(1).with_idempotency_key("order-1"))
            .unwrap();
        assert!(!first.duplicate);
        // A repeat while running: same answer, nothing new.
        let again = herald
            .publish_detailed(&acme, order(1).with_idempotency_key("order-1"))
            .unwrap();
        assert_eq!(again.event_id, first.event_id);
        assert_eq!(again.created_at_ms, first.created_at_ms);
        assert!(again.duplicate);
        assert_eq!(settled(&herald, &acme).len(), 1);
        herald.shutdown().unwrap();
        drop(herald);

        let herald = engine(dir.path(), checkpoint_records);
        let after = block_on(
            herald.publish_detailed_async(&acme, order(1).with_idempotency_key("order-1")),
        )
        .unwrap();
        assert_eq!(
            after.event_id, first.event_id,
            "checkpoint_records={checkpoint_records}"
        );
        assert_eq!(after.created_at_ms, first.created_at_ms);
        assert!(after.duplicate);
        // A different event under the same key conflicts, after the restart too.
        let error = herald
            .publish(&acme, order(2).with_idempotency_key("order-1"))
            .unwrap_err();
        assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
        assert_eq!(error.fault(), Fault::Caller);
        assert!(error.to_string().contains("order-1"), "{error}");
        // The plain form answers a duplicate with the first id too.
        let id = herald
            .publish(&acme, order(1).with_idempotency_key("order-1"))
            .unwrap();
        assert_eq!(id, first.event_id);

        let deliveries = settled(&herald, &acme);
        assert_eq!(deliveries.len(), 1, "{deliveries:?}");
        assert_eq!(deliveries[0].status, DeliveryStatus::Success);
        let received = receiver.received();
        assert_eq!(
            received.len(),
            1,
            "exactly one request reached the receiver"
        );
        assert_eq!(received[0].json()["id"], first.event_id.as_str());
        herald.shutdown().unwrap();
    }
}

#[test]
fn batches_report_each_event_and_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1_000_000);
    let acme = TenantId::parse("acme").unwrap();
    let given = EventId::parse("evt_given_1").unwrap();
    let events = vec![
        order(1).with_idempotency_key("a"),
        order(1).with_idempotency_key("a"),
        order(2).with_idempotency_key("a"),
        order(3),
        order(4).with_idempotency_key("x".repeat(256)),
        order(5).with_idempotency_key("line\nbreak"),
        order(6).with_id(given.clone()).with_idempotency_key("b"),
        // Same content, but a different given id: a different event.
        order(6)
            .with_id(EventId::parse("evt_given_2").unwrap())
            .with_idempotency_key("b"),
    ];
    let results = block_on(herald.publish_batch_detailed_async(&acme, events)).unwrap();
    assert_eq!(results.len(), 8);
    let first = results[0].as_ref().unwrap();
    assert!(!first.duplicate);
    let second = results[1].as_ref().unwrap();
    assert!(second.duplicate);
    assert_eq!(second.event_id, first.event_id);
    assert!(matches!(results[2], Err(Error::Conflict { .. })));
    assert!(!results[3].as_ref().unwrap().duplicate);
    for bad in &results[4..6] {
        let error = bad.as_ref().unwrap_err();
        assert_eq!(error.field(), Some("idempotency_key"), "{error:?}");
    }
    assert_eq!(results[6].as_ref().unwrap().event_id, given);
    assert!(matches!(results[7], Err(Error::Conflict { .. })));

    // The blocking batch form answers ids, the duplicate's being the first one's.
    let ids = herald
        .publish_batch(&acme, vec![order(1).with_idempotency_key("a")])
        .unwrap();
    assert_eq!(ids[0].as_ref().unwrap(), &first.event_id);
    herald.shutdown().unwrap();
}

#[test]
fn keys_expire_after_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(1)
        .pin_threads(false)
        // Long enough that the repeat below, made right after a publish, always falls
        // inside it, however slow the machine (50 ms failed under load).
        .idempotency_window(Duration::from_secs(1))
        .start()
        .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let first = herald
        .publish_detailed(&acme, order(1).with_idempotency_key("k"))
        .unwrap();
    // A different event conflicts until (by the engine's wall clock) the window has
    // passed; then it is accepted as new.
    let after = support::wait_for(WAIT, || {
        match herald.publish_detailed(&acme, order(2).with_idempotency_key("k")) {
            Ok(after) => Some(after),
            Err(Error::Conflict { .. }) => None,
            Err(other) => panic!("{other:?}"),
        }
    });
    assert!(!after.duplicate);
    assert_ne!(after.event_id, first.event_id);
    // …and the key now answers for the new event.
    let again = herald
        .publish_detailed(&acme, order(2).with_idempotency_key("k"))
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.event_id, after.event_id);
    herald.shutdown().unwrap();
}
