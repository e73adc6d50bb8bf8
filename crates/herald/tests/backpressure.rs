//! A shard at its pending-delivery limit refuses new events with
//! [`Error::Backpressure`] and gives each refused event back, so a caller can publish
//! it again later without having kept a copy.

mod support;

use herald::{
    DispatcherConfig, Error, Event, EventFilter, EventId, Fault, Herald, Scheme, TenantId, Unsent,
    WebhookSpec,
};
use support::closed_url;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// An engine whose one shard holds at most one pending delivery.
fn engine(dir: &std::path::Path) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(1)
        .allow_cidr("127.0.0.0/8")
        .dispatcher_config(DispatcherConfig {
            pending_deliveries_max: 1,
            ..DispatcherConfig::default()
        })
        .start()
        .unwrap()
}

fn event(n: u64) -> Event {
    Event::parse("order.created", &serde_json::json!({ "n": n }))
        .unwrap()
        .with_idempotency_key(format!("order-{n}"))
}

/// Whether `back` is `sent` as handed in: what the caller gave is unchanged (the engine
/// may have filled in the defaults: api version, creation time).
fn same(back: &Event, sent: &Event) -> bool {
    back.event_type == sent.event_type
        && back.data == sent.data
        && back.idempotency_key == sent.idempotency_key
        && back.location_id == sent.location_id
        && (sent.id.is_none() || back.id == sent.id)
}

/// The event an error gives back, checking that it is a back-pressure refusal.
fn given_back(error: Error) -> Event {
    assert_eq!(error.fault(), Fault::Capacity, "{error}");
    assert!(
        matches!(
            &error,
            Error::Backpressure {
                shard: 0,
                unsent: Unsent::Event { .. }
            }
        ),
        "{error:?}"
    );
    let (owner, event) = error.into_event().expect("the event is given back");
    assert_eq!(owner, tenant("acme"));
    event
}

#[test]
fn a_full_shard_gives_every_refused_event_back() {
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path());
    let acme = tenant("acme");
    let secret = herald_sign::generate_secret(&Scheme::Standard, &[1; 32]);
    let webhook = herald
        .create_webhook(
            &acme,
            WebhookSpec::new(
                closed_url(),
                vec![EventFilter::parse("order.*").unwrap()],
                Scheme::Standard,
                secret,
            ),
        )
        .unwrap();
    // The first event takes the shard's one pending delivery.
    herald.publish(&acme, event(0)).unwrap();

    // Blocking publish: refused, the event given back as it was handed in.
    let refused = given_back(herald.publish(&acme, event(1)).unwrap_err());
    assert!(same(&refused, &event(1)), "{refused:?}");
    // Waiting for room in the queue does not help with a full shard, nor does try_.
    let receipt = herald.try_publish(&acme, event(2)).unwrap();
    let back = given_back(receipt.wait().unwrap_err());
    assert!(same(&back, &event(2)), "{back:?}");
    // An id the caller chose comes back too.
    let chosen = event(3).with_id(EventId::parse("evt_chosen").unwrap());
    let refused_chosen = given_back(herald.publish(&acme, chosen.clone()).unwrap_err());
    assert!(same(&refused_chosen, &chosen), "{refused_chosen:?}");
    // A batch: each refused event comes back in its own result, in order.
    let results = herald
        .publish_batch(&acme, vec![event(4), event(5)])
        .unwrap();
    let back: Vec<Event> = results
        .into_iter()
        .map(|result| given_back(result.unwrap_err()))
        .collect();
    assert_eq!(back.len(), 2);
    assert!(
        same(&back[0], &event(4)) && same(&back[1], &event(5)),
        "{back:?}"
    );
    // A test send of the caller's event as well.
    let test = given_back(
        herald
            .send_test_event_with(&acme, &webhook, event(6))
            .unwrap_err(),
    );
    assert!(same(&test, &event(6)), "{test:?}");

    // Once there is room, the given-back events publish as they are.
    herald.delete_webhook(&acme, &webhook).unwrap();
    herald.publish(&acme, refused).unwrap();
    assert_eq!(
        herald.publish(&acme, refused_chosen).unwrap(),
        EventId::parse("evt_chosen").unwrap()
    );
    herald.shutdown().unwrap();
}
