//! The engine end to end on loopback: publish → journal → sign → send → verify.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::{
    DeliveryQuery, DeliveryStatus, Error, Event, EventFilter, EventId, EventType, Fault, Herald,
    Scheme, TenantId, Unsent, Url, WebhookId, WebhookSpec,
};
use support::{Received, Receiver};

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(20);

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn secret(scheme: &Scheme, seed: u8) -> String {
    herald_sign::generate_secret(scheme, &[seed; 32])
}

fn spec(url: &str, filters: &[&str], scheme: Scheme, secret: &str) -> WebhookSpec {
    WebhookSpec::new(
        Url::parse(url).unwrap(),
        filters
            .iter()
            .map(|f| EventFilter::parse(f).unwrap())
            .collect(),
        scheme,
        secret.to_string(),
    )
}

fn engine(dir: &std::path::Path, shards: usize) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(shards)
        .allow_cidr("127.0.0.0/8")
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("engine starts")
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks the signature of a received request against the webhook's secret.
fn verify(received: &Received, scheme: &Scheme, secret: &str, url: &str) {
    let verifier = herald_sign::Verifier::new(scheme.clone(), &[secret]).unwrap();
    verifier
        .verify(&received.headers, url, &received.body, now_s())
        .unwrap_or_else(|e| panic!("signature of {} does not verify: {e}", received.path));
}

/// Waits until every delivery of `tenant` has ended (the receiver sees a request before
/// the engine sees its response).
fn settle(herald: &Herald, tenant: &TenantId) {
    support::wait_for(WAIT, || {
        let page = herald
            .deliveries(DeliveryQuery {
                limit: 1000,
                ..DeliveryQuery::tenant(tenant.clone())
            })
            .unwrap();
        page.items.iter().all(|r| r.status.is_final()).then_some(())
    });
}

struct Hook {
    path: &'static str,
    tenant: &'static str,
    filters: &'static [&'static str],
    scheme: Scheme,
    secret: String,
}

#[test]
fn every_matching_webhook_receives_each_event_signed_and_webhooks_survive_restart() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let hooks = vec![
        Hook {
            path: "/acme/orders",
            tenant: "acme",
            filters: &["order.*"],
            scheme: Scheme::Standard,
            secret: secret(&Scheme::Standard, 1),
        },
        Hook {
            path: "/acme/all",
            tenant: "acme",
            filters: &["*"],
            scheme: Scheme::Standard,
            secret: secret(&Scheme::Standard, 2),
        },
        Hook {
            path: "/acme/pay",
            tenant: "acme",
            filters: &["payment.processed", "refund.*"],
            scheme: Scheme::stripe(),
            secret: secret(&Scheme::stripe(), 3),
        },
        Hook {
            path: "/globex/created",
            tenant: "globex",
            filters: &["order.created"],
            scheme: Scheme::Olo,
            secret: secret(&Scheme::Olo, 4),
        },
        Hook {
            path: "/initech/none",
            tenant: "initech",
            filters: &["never.sent"],
            scheme: Scheme::Standard,
            secret: secret(&Scheme::Standard, 5),
        },
    ];
    let events: &[(&str, &str)] = &[
        ("acme", "order.created"),
        ("acme", "order.updated"),
        ("acme", "payment.processed"),
        ("acme", "user.signup"),
        ("globex", "order.created"),
        ("globex", "order.cancelled"),
        ("initech", "order.created"),
    ];

    let herald = engine(dir.path(), 2);
    let mut ids: BTreeMap<&str, WebhookId> = BTreeMap::new();
    for hook in &hooks {
        let id = herald
            .create_webhook(
                &tenant(hook.tenant),
                spec(
                    &receiver.url(hook.path),
                    hook.filters,
                    hook.scheme.clone(),
                    &hook.secret,
                ),
            )
            .unwrap();
        ids.insert(hook.path, id);
    }

    // Publish through each of the three forms.
    let mut published: Vec<(&str, &str, EventId)> = Vec::new();
    for (index, &(tenant_name, event_type)) in events.iter().enumerate() {
        let event = Event::parse(event_type, &serde_json::json!({"n": index})).unwrap();
        let t = tenant(tenant_name);
        let id = match index % 3 {
            0 => herald.publish(&t, event).unwrap(),
            1 => herald.try_publish(&t, event).unwrap().wait().unwrap(),
            _ => futures_lite::future::block_on(herald.publish_async(&t, event)).unwrap(),
        };
        published.push((tenant_name, event_type, id));
    }

    // Which (path, event id) pairs must arrive: every hook whose tenant matches and one
    // of whose filters matches the type.
    let mut expected: BTreeSet<(String, String)> = BTreeSet::new();
    for (tenant_name, event_type, id) in &published {
        let event_type = EventType::parse(event_type).unwrap();
        for hook in &hooks {
            let matches = hook
                .filters
                .iter()
                .any(|f| EventFilter::parse(f).unwrap().matches(&event_type));
            if hook.tenant == *tenant_name && matches {
                expected.insert((hook.path.to_string(), id.to_string()));
            }
        }
    }
    assert_eq!(expected.len(), 8, "the table above expects 8 deliveries");

    let received = receiver.wait_until(WAIT, |r| r.len() >= expected.len());
    // The receiver sees a request before the engine sees its response: wait for the log
    // to show every delivery settled, then nothing more may have arrived.
    for t in ["acme", "globex", "initech"] {
        let items = support::wait_for(WAIT, || {
            let page = herald.deliveries(DeliveryQuery::tenant(tenant(t))).unwrap();
            page.items
                .iter()
                .all(|r| r.status.is_final())
                .then_some(page.items)
        });
        for record in &items {
            assert_eq!(record.status, DeliveryStatus::Success, "{record:?}");
            assert_eq!(record.response_status, Some(200));
        }
    }
    let received_after = receiver.received();
    assert_eq!(
        received_after.len(),
        received.len(),
        "unexpected extra requests"
    );

    let mut got: BTreeSet<(String, String)> = BTreeSet::new();
    for request in &received {
        let hook = hooks
            .iter()
            .find(|h| h.path == request.path)
            .unwrap_or_else(|| panic!("request to unknown path {}", request.path));
        verify(
            request,
            &hook.scheme,
            &hook.secret,
            &receiver.url(hook.path),
        );
        assert_eq!(request.method, "POST");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert!(request
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("herald/")));
        let body = request.json();
        assert_eq!(body["tenant_id"], hook.tenant, "tenant isolation");
        let (_, event_type, _) = published
            .iter()
            .find(|(_, _, id)| body["id"] == id.as_str())
            .expect("body id is a published event id");
        assert_eq!(body["type"], *event_type);
        let fresh = got.insert((
            request.path.clone(),
            body["id"].as_str().unwrap().to_string(),
        ));
        assert!(
            fresh,
            "duplicate delivery {} to {}",
            body["id"], request.path
        );
    }
    assert_eq!(got, expected);
    herald.shutdown().unwrap();

    // Restart on the same directory: the registry comes back from the journal and keeps
    // dispatching.
    let herald = engine(dir.path(), 2);
    for hook in &hooks {
        let t = tenant(hook.tenant);
        let webhook = herald
            .webhook(&t, &ids[hook.path])
            .unwrap()
            .expect("webhook persisted");
        assert_eq!(webhook.spec.url.to_string(), receiver.url(hook.path));
    }
    assert_eq!(herald.list_webhooks(&tenant("acme")).unwrap().len(), 3);
    let before = receiver.received().len();
    let id = herald
        .publish(
            &tenant("globex"),
            Event::parse("order.created", &serde_json::json!({"after": "restart"})).unwrap(),
        )
        .unwrap();
    let received = receiver.wait_until(WAIT, |r| r.len() > before);
    let last = &received[before];
    assert_eq!(last.path, "/globex/created");
    assert_eq!(last.json()["id"], id.as_str());
    verify(
        last,
        &Scheme::Olo,
        &hooks[3].secret,
        &receiver.url("/globex/created"),
    );
    // The delivery log survived too: the earlier deliveries are still listed.
    let page = herald
        .deliveries(DeliveryQuery::tenant(tenant("acme")))
        .unwrap();
    assert_eq!(page.items.len(), 7);
    herald.shutdown().unwrap();
}

#[test]
fn errors_name_the_fault_and_give_the_item_back() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1);
    let acme = tenant("acme");
    let standard = secret(&Scheme::Standard, 9);

    // Unknown webhook on update and delete.
    let missing = WebhookId::parse("wh_missing").unwrap();
    let error = herald
        .update_webhook(
            &acme,
            &missing,
            spec(&receiver.url("/x"), &["*"], Scheme::Standard, &standard),
        )
        .unwrap_err();
    assert!(matches!(error, Error::UnknownWebhook { .. }), "{error:?}");
    assert_eq!(error.fault(), Fault::Caller);
    let error = herald.delete_webhook(&acme, &missing).unwrap_err();
    assert!(matches!(error, Error::UnknownWebhook { .. }), "{error:?}");

    // An invalid spec (no filters) and an invalid secret.
    let error = herald
        .create_webhook(
            &acme,
            spec(&receiver.url("/x"), &[], Scheme::Standard, &standard),
        )
        .unwrap_err();
    assert_eq!(error.fault(), Fault::Caller, "{error:?}");
    let error = herald
        .create_webhook(
            &acme,
            spec(&receiver.url("/x"), &["*"], Scheme::Standard, "nope"),
        )
        .unwrap_err();
    assert_eq!(error.fault(), Fault::Caller, "{error:?}");

    // Event data that is not JSON.
    let event = Event::from_json_bytes(
        EventType::parse("order.created").unwrap(),
        b"{not json".to_vec(),
    );
    let error = herald.publish(&acme, event).unwrap_err();
    assert!(matches!(error, Error::Invalid { .. }), "{error:?}");

    // Unknown delivery.
    let error = herald
        .retry_delivery(&acme, herald::DeliveryId(12345))
        .unwrap_err();
    match error {
        Error::UnknownDelivery { tenant, delivery } => {
            assert_eq!(tenant, acme);
            assert_eq!(delivery, herald::DeliveryId(12345));
        }
        other => panic!("expected UnknownDelivery, got {other:?}"),
    }

    // After shutdown: refused, with the event given back unchanged.
    let clone = herald.clone();
    herald.shutdown().unwrap();
    let event = Event::parse("order.created", &serde_json::json!({"late": true})).unwrap();
    let error = clone.publish(&acme, event.clone()).unwrap_err();
    assert_eq!(error.fault(), Fault::Shutdown);
    let (back_tenant, back) = error.into_event().expect("event given back");
    assert_eq!(back_tenant, acme);
    assert_eq!(back.data, event.data);
    assert_eq!(back.event_type, event.event_type);
    assert!(back.id.is_some(), "the id it would have had is filled in");
    let error = clone.list_webhooks(&acme).unwrap_err();
    assert!(matches!(
        error,
        Error::ShuttingDown {
            unsent: Unsent::Request
        }
    ));
    // Shutting down twice is fine.
    clone.shutdown().unwrap();
}

#[test]
fn try_publish_gives_the_event_back_when_the_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(1)
        .intake_capacity(1)
        .start()
        .unwrap();
    let acme = tenant("acme");
    let mut receipts = Vec::new();
    let mut refused = None;
    // With room for one request, a burst of hand-offs overtakes the shard quickly.
    for n in 0..100_000 {
        let event = Event::parse("tick", &serde_json::json!({ "n": n })).unwrap();
        match herald.try_publish(&acme, event) {
            Ok(receipt) => receipts.push(receipt),
            Err(error) => {
                refused = Some((n, error));
                break;
            }
        }
    }
    let (n, error) = refused.expect("a queue of one fills up under a burst");
    assert_eq!(error.fault(), Fault::Capacity);
    assert!(matches!(error, Error::Backpressure { shard: 0, .. }));
    let (_, event) = error.into_event().expect("event given back");
    assert_eq!(
        event.data,
        serde_json::json!({ "n": n }).to_string().into_bytes()
    );
    // Every accepted hand-off still becomes durable.
    for receipt in receipts {
        let id = receipt.event_id().clone();
        assert_eq!(receipt.wait().unwrap(), id);
    }
    // The refused event can be published again, with the id it was given.
    let id = event.id.clone().unwrap();
    assert_eq!(herald.publish(&acme, event).unwrap(), id);
}

#[test]
fn publish_async_works_inside_tokio_and_last_drop_stops_the_engine() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 2);
    let acme = tenant("acme");
    let standard = secret(&Scheme::Standard, 7);
    herald
        .create_webhook(
            &acme,
            spec(&receiver.url("/tokio"), &["*"], Scheme::Standard, &standard),
        )
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ids = runtime.block_on({
        let herald = herald.clone();
        async move {
            let mut tasks = Vec::new();
            for n in 0..20 {
                let herald = herald.clone();
                let acme = acme.clone();
                tasks.push(tokio::spawn(async move {
                    let event = Event::parse("async.test", &serde_json::json!({ "n": n })).unwrap();
                    herald.publish_async(&acme, event).await
                }));
            }
            let mut ids = BTreeSet::new();
            for task in tasks {
                ids.insert(task.await.unwrap().unwrap().to_string());
            }
            ids
        }
    });
    let received = receiver.wait_until(WAIT, |r| r.len() >= 20);
    let got: BTreeSet<String> = received
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids);

    // Dropping the last handle stops and joins the shards (bounded).
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(herald);
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(WAIT)
        .expect("dropping the last handle returns");
    // The journal lock was released: the directory opens again.
    let herald = engine(dir.path(), 2);
    herald.shutdown().unwrap();
}

#[test]
fn attempts_in_flight_at_shutdown_are_retried_after_restart() {
    let receiver = Receiver::start();
    receiver.set_status("/slow", support::HANG);
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Herald::builder()
            .data_dir(dir.path())
            .shards(1)
            .allow_cidr("127.0.0.0/8")
            .shutdown_grace(Duration::from_millis(100))
            .start()
            .unwrap()
    };
    let acme = tenant("acme");
    let standard = secret(&Scheme::Standard, 11);
    let herald = start();
    let webhook = herald
        .create_webhook(
            &acme,
            spec(&receiver.url("/slow"), &["*"], Scheme::Standard, &standard),
        )
        .unwrap();
    let id = herald
        .publish(
            &acme,
            Event::parse("order.created", &serde_json::json!({})).unwrap(),
        )
        .unwrap();
    receiver.wait_until(WAIT, |r| r.len() == 1);
    // The receiver holds the request: shutting down leaves the attempt in flight.
    herald.shutdown().unwrap();
    receiver.set_status("/slow", 200);

    let herald = start();
    let received = receiver.wait_until(WAIT, |r| r.len() == 2);
    for request in &received {
        assert_eq!(
            request.json()["id"],
            id.as_str(),
            "the same event both times"
        );
        verify(
            request,
            &Scheme::Standard,
            &standard,
            &receiver.url("/slow"),
        );
    }
    // Once the log shows success, the repeated attempt kept its number.
    let record = support::wait_for(WAIT, || {
        let page = herald
            .deliveries(DeliveryQuery {
                webhook: Some(webhook.clone()),
                ..DeliveryQuery::tenant(acme.clone())
            })
            .unwrap();
        page.items
            .into_iter()
            .find(|r| r.status == DeliveryStatus::Success)
    });
    assert_eq!(record.attempt, 1, "{record:?}");
    assert_eq!(record.event_id, id);
    herald.shutdown().unwrap();
}

#[test]
fn checkpoints_keep_state_across_restarts() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        Herald::builder()
            .data_dir(dir.path())
            .shards(2)
            .allow_cidr("127.0.0.0/8")
            .checkpoint_records(5)
            .journal_segment_bytes(64 * 1024)
            .start()
            .unwrap()
    };
    let standard = secret(&Scheme::Standard, 12);
    let tenants = ["acme", "globex", "initech", "umbrella"];
    let herald = start();
    let mut webhooks = BTreeMap::new();
    for name in tenants {
        let id = herald
            .create_webhook(
                &tenant(name),
                spec(
                    &receiver.url(&format!("/{name}")),
                    &["*"],
                    Scheme::Standard,
                    &standard,
                ),
            )
            .unwrap();
        webhooks.insert(name, id);
    }
    // Enough records for several checkpoints and segment rolls on every shard.
    let payload = serde_json::json!({ "pad": "x".repeat(2000) });
    for round in 0..30 {
        for name in tenants {
            let event = Event::parse("order.created", &payload)
                .unwrap()
                .with_location(herald::LocationId::parse(&format!("loc-{round}")).unwrap());
            herald.publish(&tenant(name), event).unwrap();
        }
    }
    receiver.wait_until(WAIT, |r| r.len() >= 120);
    for name in tenants {
        settle(&herald, &tenant(name));
    }
    herald.shutdown().unwrap();
    // Checkpoints let old segments go: each shard wrote several 64 KiB segments' worth
    // of records, and the journal no longer starts at its first record.
    for shard in 0..2 {
        let report = herald_journal::check(&dir.path().join(format!("shard-{shard}"))).unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert!(
            report.checkpoint_seq.is_some(),
            "shard {shard} wrote a checkpoint"
        );
        assert!(
            report.first_seq.is_some_and(|seq| seq > 1),
            "shard {shard} still holds its first segment: {report:?}"
        );
    }

    for _ in 0..2 {
        let herald = start();
        for name in tenants {
            let t = tenant(name);
            let listed = herald.list_webhooks(&t).unwrap();
            assert_eq!(listed.len(), 1, "{name}");
            assert_eq!(&listed[0].id, &webhooks[name]);
            // The delivery log came back from the checkpoint plus the records after it.
            let page = herald
                .deliveries(DeliveryQuery {
                    limit: 1000,
                    ..DeliveryQuery::tenant(t)
                })
                .unwrap();
            assert_eq!(page.items.len(), 30, "{name}");
            assert!(page
                .items
                .iter()
                .all(|r| r.status == DeliveryStatus::Success));
        }
        herald.shutdown().unwrap();
    }
    assert_eq!(receiver.received().len(), 120, "nothing was sent twice");
}

#[test]
fn start_refuses_bad_settings_and_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, herald::Builder)> = vec![
        ("no data_dir", Herald::builder()),
        (
            "zero shards",
            Herald::builder().data_dir(dir.path()).shards(0),
        ),
        (
            "too many shards",
            Herald::builder().data_dir(dir.path()).shards(257),
        ),
        (
            "zero intake",
            Herald::builder().data_dir(dir.path()).intake_capacity(0),
        ),
        (
            "bad cidr",
            Herald::builder()
                .data_dir(dir.path())
                .allow_cidr("10.0.0.0/33"),
        ),
        (
            "missing CA file",
            Herald::builder()
                .data_dir(dir.path())
                .extra_ca_pem(dir.path().join("none.pem")),
        ),
        (
            "io memory",
            Herald::builder()
                .data_dir(dir.path())
                .io_memory_bytes(64 << 20),
        ),
        (
            "segment size",
            Herald::builder()
                .data_dir(dir.path())
                .journal_segment_bytes(1000),
        ),
    ];
    for (what, builder) in cases {
        match builder.start() {
            Err(error) => assert_eq!(error.fault(), Fault::Caller, "{what}: {error}"),
            Ok(_) => panic!("{what}: started"),
        }
    }
    let first = engine(dir.path(), 1);
    let error = Herald::builder()
        .data_dir(dir.path())
        .shards(1)
        .start()
        .expect_err("a directory is used by one engine at a time");
    assert_eq!(error.fault(), Fault::Caller, "{error}");
    first.shutdown().unwrap();
    engine(dir.path(), 1).shutdown().unwrap();
}

#[test]
fn manual_operations_and_webhook_changes() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1);
    let acme = tenant("acme");
    let standard = secret(&Scheme::Standard, 13);
    let url = receiver.url("/ops");
    let webhook = herald
        .create_webhook(&acme, spec(&url, &["order.*"], Scheme::Standard, &standard))
        .unwrap();
    let deliveries_of = |event: &EventId| {
        herald
            .deliveries(DeliveryQuery {
                event: Some(event.clone()),
                ..DeliveryQuery::tenant(acme.clone())
            })
            .unwrap()
            .items
    };
    let settled = |event: &EventId, status: DeliveryStatus| {
        support::wait_for(WAIT, || {
            deliveries_of(event)
                .into_iter()
                .find(|r| r.status == status)
        })
    };

    // A 400 is a final failure; retry_delivery sends it once more.
    receiver.set_status("/ops", 400);
    let first = herald
        .publish(
            &acme,
            Event::parse("order.created", &serde_json::json!(1)).unwrap(),
        )
        .unwrap();
    let second = herald
        .publish(
            &acme,
            Event::parse("order.updated", &serde_json::json!(2)).unwrap(),
        )
        .unwrap();
    let failed = settled(&first, DeliveryStatus::Failed);
    assert_eq!(failed.response_status, Some(400));
    settled(&second, DeliveryStatus::Failed);
    receiver.set_status("/ops", 200);
    herald.retry_delivery(&acme, failed.id).unwrap();
    let retried = settled(&first, DeliveryStatus::Success);
    assert_eq!(retried.id, failed.id);

    // resend_failed picks up what is still failed: the second event only.
    assert_eq!(herald.resend_failed(&acme, &webhook, 0).unwrap(), 1);
    settled(&second, DeliveryStatus::Success);

    // A test event reaches the webhook whatever its filters.
    let test_type = EventType::parse("diagnostics.ping").unwrap();
    let test_id = herald
        .send_test_event(&acme, &webhook, test_type.clone())
        .unwrap();
    let received = receiver.wait_until(WAIT, |r| {
        r.iter().any(|x| x.json()["id"] == test_id.as_str())
    });
    let test = received
        .iter()
        .find(|x| x.json()["id"] == test_id.as_str())
        .unwrap();
    assert_eq!(test.json()["type"], "diagnostics.ping");
    assert_eq!(test.json()["data"], serde_json::json!({"test": true}));
    verify(test, &Scheme::Standard, &standard, &url);

    // Narrowing the filters stops matching deliveries; the update is visible at once.
    herald
        .update_webhook(
            &acme,
            &webhook,
            spec(&url, &["payment.*"], Scheme::Standard, &standard),
        )
        .unwrap();
    let shown = herald.webhook(&acme, &webhook).unwrap().unwrap();
    assert_eq!(
        shown.spec.filters,
        vec![EventFilter::parse("payment.*").unwrap()]
    );
    let unmatched = herald
        .publish(
            &acme,
            Event::parse("order.created", &serde_json::json!(3)).unwrap(),
        )
        .unwrap();
    assert!(deliveries_of(&unmatched).is_empty());

    // Deleting removes it from the registry and from matching.
    herald.delete_webhook(&acme, &webhook).unwrap();
    assert!(herald.webhook(&acme, &webhook).unwrap().is_none());
    assert!(herald.list_webhooks(&acme).unwrap().is_empty());
    let orphan = herald
        .publish(
            &acme,
            Event::parse("payment.processed", &serde_json::json!(4)).unwrap(),
        )
        .unwrap();
    assert!(deliveries_of(&orphan).is_empty());
    herald.shutdown().unwrap();
}

#[test]
fn a_data_directory_keeps_its_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let herald = engine(dir.path(), 2);
    let standard = secret(&Scheme::Standard, 14);
    let webhook = herald
        .create_webhook(
            &acme,
            spec("http://127.0.0.1:9/x", &["*"], Scheme::Standard, &standard),
        )
        .unwrap();
    herald.shutdown().unwrap();
    for shards in [1, 3] {
        let error = Herald::builder()
            .data_dir(dir.path())
            .shards(shards)
            .start()
            .expect_err("another shard count would route tenants to the wrong journals");
        assert_eq!(error.fault(), Fault::Caller, "{error}");
        assert!(error.to_string().contains("shards=2"), "{error}");
    }
    let herald = engine(dir.path(), 2);
    assert!(herald.webhook(&acme, &webhook).unwrap().is_some());
    herald.shutdown().unwrap();
}

/// A turn whose records someone waits for (a webhook's creation, a publish) is committed
/// to be synced within the group delay; the turn that brings a delivery's outcome alone,
/// while nothing waits, is committed lazily, and that outcome still becomes durable.
#[test]
fn outcomes_alone_are_committed_lazily_and_what_is_waited_for_is_not() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1);
    let acme = tenant("acme");
    let url = receiver.url("/lazy");
    let standard = secret(&Scheme::Standard, 17);
    herald
        .create_webhook(&acme, spec(&url, &["*"], Scheme::Standard, &standard))
        .unwrap();
    let stats = || herald.stats().unwrap().remove(0);
    let created = stats();
    assert!(
        created.journal_commits_urgent >= 1,
        "the webhook's record was waited for: {created:?}"
    );
    herald
        .publish(
            &acme,
            Event::parse("order.created", &serde_json::json!({"n": 1})).unwrap(),
        )
        .unwrap();
    let published = stats();
    assert!(
        published.journal_commits_urgent > created.journal_commits_urgent,
        "the event's record was waited for: {published:?}"
    );
    settle(&herald, &acme);
    assert_eq!(receiver.received().len(), 1);
    // The outcome's turn held no reply and no delivery waiting for a record.
    let settled = support::wait_for(WAIT, || {
        let now = stats();
        (now.journal_commits_lazy > published.journal_commits_lazy
            && now.journal_durable_seq >= now.journal_last_seq)
            .then_some(now)
    });
    assert_eq!(
        settled.journal_commits_urgent, published.journal_commits_urgent,
        "nothing else was waited for"
    );
    herald.shutdown().unwrap();
}

/// One shard with room for 4 queued requests and 4 awaiting the disk, whose journal
/// syncs `group_delay` apart.
fn slow_disk_engine(dir: &std::path::Path, group_delay: Duration) -> Herald {
    Herald::builder()
        .data_dir(dir)
        .shards(1)
        .intake_capacity(4)
        .awaiting_durable_max(4)
        .journal_group_delay(group_delay)
        .allow_cidr("127.0.0.0/8")
        .start()
        .unwrap()
}

#[test]
fn a_slow_disk_turns_into_back_pressure() {
    let dir = tempfile::tempdir().unwrap();
    // Syncs happen a second apart (or after 256 records), so answers pile up: the shard
    // carries out at most 4 requests that wait for the disk and leaves the rest queued
    // (room for 4), after which hand-offs are refused.
    let herald = slow_disk_engine(dir.path(), Duration::from_secs(1));
    let acme = tenant("acme");
    let mut receipts = Vec::new();
    let refused = loop {
        let event = Event::parse("tick", &serde_json::json!(receipts.len())).unwrap();
        match herald.try_publish(&acme, event) {
            Ok(receipt) => receipts.push(receipt),
            Err(error) => break error,
        }
        assert!(
            receipts.len() <= 8,
            "more than 4 waiting + 4 queued were taken"
        );
    };
    assert!(matches!(refused, Error::Backpressure { .. }), "{refused:?}");
    assert!(receipts.len() >= 4, "at least the queue's worth is taken");
    // Once the disk catches up, everything taken is answered.
    for receipt in receipts {
        receipt.wait().unwrap();
    }
    herald.shutdown().unwrap();
}

/// Hands publishes to `herald`'s one shard until its queue refuses one; returns the
/// receipts of those it took.
fn fill_intake(herald: &Herald, tenant: &TenantId) -> Vec<herald::PublishReceipt> {
    let mut receipts = Vec::new();
    loop {
        let event = Event::parse("tick", &serde_json::json!(receipts.len())).unwrap();
        match herald.try_publish(tenant, event) {
            Ok(receipt) => receipts.push(receipt),
            Err(Error::Backpressure { .. }) => return receipts,
            Err(error) => panic!("filling the intake: {error}"),
        }
        assert!(receipts.len() <= 64, "a queue of 4 was never full");
    }
}

/// What a refused `try_*` form must give back.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GivenBack {
    Event,
    Events,
    Webhook,
    Nothing,
}

#[test]
fn every_try_form_refuses_at_once_when_the_queue_is_full() {
    use futures_lite::future::block_on;
    let dir = tempfile::tempdir().unwrap();
    // As in `a_slow_disk_turns_into_back_pressure`: syncs 250 ms apart keep a queue of 4
    // full for most of that time once 8 publishes are handed off.
    let herald = slow_disk_engine(dir.path(), Duration::from_millis(250));
    let acme = tenant("acme");
    // Nothing listens on the discard port: deliveries fail and wait for their retry.
    let hook = spec(
        "http://127.0.0.1:9/full",
        &["*"],
        Scheme::Standard,
        &secret(&Scheme::Standard, 41),
    );
    let webhook = herald.create_webhook(&acme, hook.clone()).unwrap();
    herald
        .publish(
            &acme,
            Event::parse("order.created", &serde_json::json!({})).unwrap(),
        )
        .unwrap();
    let delivery = herald
        .deliveries(DeliveryQuery::tenant(acme.clone()))
        .unwrap()
        .items[0]
        .id;
    let test_event = || Event::parse("order.created", &serde_json::json!({"t": 1})).unwrap();
    // Each form: Ok(()) when it was taken (then it ran to its end), or its refusal.
    type Form<'a> = Box<dyn Fn() -> Result<(), Error> + 'a>;
    let forms: Vec<(&str, GivenBack, Form<'_>)> = vec![
        (
            "try_publish_detailed_async",
            GivenBack::Event,
            Box::new(|| {
                let f = herald.try_publish_detailed_async(&acme, test_event())?;
                block_on(f).map(drop)
            }),
        ),
        (
            "try_publish_batch_detailed_async",
            GivenBack::Events,
            Box::new(|| {
                let f = herald
                    .try_publish_batch_detailed_async(&acme, vec![test_event(), test_event()])?;
                block_on(f).map(drop)
            }),
        ),
        (
            "try_create_webhook_async",
            GivenBack::Webhook,
            Box::new(|| block_on(herald.try_create_webhook_async(&acme, hook.clone())?).map(drop)),
        ),
        (
            "try_put_webhook_async",
            GivenBack::Webhook,
            Box::new(|| block_on(herald.try_put_webhook_async(&acme, &webhook, hook.clone())?)),
        ),
        (
            "try_update_webhook_async",
            GivenBack::Webhook,
            Box::new(|| {
                block_on(herald.try_update_webhook_async(&acme, &webhook, hook.clone())?)
            }),
        ),
        (
            "try_webhook_async",
            GivenBack::Nothing,
            Box::new(|| block_on(herald.try_webhook_async(&acme, &webhook)?).map(drop)),
        ),
        (
            "try_check_url_async",
            GivenBack::Nothing,
            Box::new(|| block_on(herald.try_check_url_async(&hook.url)?)),
        ),
        (
            "try_retry_delivery_async",
            GivenBack::Nothing,
            Box::new(|| {
                // Taken, it may find the delivery in flight: a conflict, not a refusal.
                match block_on(herald.try_retry_delivery_async(&acme, delivery)?) {
                    Ok(()) | Err(Error::Conflict { .. }) => Ok(()),
                    Err(error) => Err(error),
                }
            }),
        ),
        (
            "try_resend_failed_async",
            GivenBack::Nothing,
            Box::new(|| block_on(herald.try_resend_failed_async(&acme, &webhook, 0)?).map(drop)),
        ),
        (
            "try_send_test_event_async",
            GivenBack::Nothing,
            Box::new(|| {
                let event_type = EventType::parse("order.created").unwrap();
                block_on(herald.try_send_test_event_async(&acme, &webhook, event_type)?).map(drop)
            }),
        ),
        (
            "try_send_test_event_with_async",
            GivenBack::Event,
            Box::new(|| {
                block_on(herald.try_send_test_event_with_async(&acme, &webhook, test_event())?)
                    .map(drop)
            }),
        ),
        (
            "try_delete_webhook_async",
            GivenBack::Nothing,
            Box::new(|| {
                block_on(herald.try_delete_webhook_async(&acme, &webhook)?)?;
                // Taken, it deleted the webhook: put it back, so that the next attempt
                // and the checks after the loop find it.
                herald.put_webhook(&acme, &webhook, hook.clone())
            }),
        ),
    ];
    for (name, given_back, form) in &forms {
        // The queue could drain between the fill and the call (a sync landing just
        // then): try again a few times before calling the form a waiting one.
        let mut refusal = None;
        for attempt in 0..5 {
            if attempt > 0 {
                // A form that was taken wrote records of its own (a test send's attempt,
                // say) after the fill's receipts were answered; their group syncs up to
                // 250 ms later and would drain the next fill's queue at the same point of
                // every retry. Let that sync land first.
                std::thread::sleep(Duration::from_millis(400));
            }
            let receipts = fill_intake(&herald, &acme);
            let result = form();
            for receipt in receipts {
                receipt.wait().unwrap();
            }
            match result {
                Ok(()) => eprintln!("{name} was taken on attempt {attempt}"),
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            }
        }
        let error =
            refusal.unwrap_or_else(|| panic!("{name} was taken 5 times of 5 on a full queue"));
        assert_eq!(error.fault(), Fault::Capacity, "{name}: {error:?}");
        let unsent = match error {
            Error::Backpressure { shard: 0, unsent } => unsent,
            other => panic!("{name}: {other:?}"),
        };
        let back = match unsent {
            Unsent::Event { .. } => GivenBack::Event,
            Unsent::Events { events, .. } => {
                assert_eq!(events.len(), 2, "{name} gives the whole batch back");
                GivenBack::Events
            }
            Unsent::Webhook { spec, .. } => {
                assert_eq!(spec.url, hook.url, "{name} gives the spec back");
                GivenBack::Webhook
            }
            Unsent::Request => GivenBack::Nothing,
        };
        assert_eq!(back, *given_back, "{name}");
    }
    // With room again, the forms are taken and carried out.
    let f = herald
        .try_publish_batch_detailed_async(&acme, vec![test_event()])
        .unwrap();
    assert!(block_on(f).unwrap()[0].is_ok());
    block_on(herald.try_delete_webhook_async(&acme, &webhook).unwrap()).unwrap();
    assert!(block_on(herald.try_webhook_async(&acme, &webhook).unwrap())
        .unwrap()
        .is_none());
    herald.shutdown().unwrap();
}

#[test]
fn batches_publish_in_one_hand_off_with_per_event_results() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 2);
    let acme = tenant("acme");
    let standard = secret(&Scheme::Standard, 15);
    herald
        .create_webhook(
            &acme,
            spec(&receiver.url("/batch"), &["*"], Scheme::Standard, &standard),
        )
        .unwrap();
    let good = |n: usize| Event::parse("batch.item", &serde_json::json!({ "n": n })).unwrap();
    let bad = Event::from_json_bytes(EventType::parse("batch.item").unwrap(), b"[1,".to_vec());
    let events = vec![good(0), bad, good(2)];
    let results = herald.publish_batch(&acme, events).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(Error::Invalid { .. })),
        "{results:?}"
    );
    let async_results =
        futures_lite::future::block_on(herald.publish_batch_async(&acme, vec![good(3), good(4)]))
            .unwrap();
    let mut ids: BTreeSet<String> = results
        .into_iter()
        .chain(async_results)
        .filter_map(Result::ok)
        .map(|id| id.to_string())
        .collect();
    let received = receiver.wait_until(WAIT, |r| r.len() >= 4);
    for request in &received {
        verify(
            request,
            &Scheme::Standard,
            &standard,
            &receiver.url("/batch"),
        );
        assert!(ids.remove(request.json()["id"].as_str().unwrap()));
    }
    assert!(ids.is_empty());

    // The batch limit is the caller's to respect.
    let too_many = (0..=herald::PUBLISH_BATCH_MAX).map(good).collect();
    let error = herald.publish_batch(&acme, too_many).unwrap_err();
    assert_eq!(error.fault(), Fault::Caller);

    // After shutdown the whole batch comes back.
    herald.shutdown().unwrap();
    let error = herald
        .publish_batch(&acme, vec![good(5), good(6)])
        .unwrap_err();
    match error.into_unsent() {
        Some(Unsent::Events { tenant, events }) => {
            assert_eq!(tenant, acme);
            assert_eq!(events.len(), 2);
            assert_eq!(events[1].data, good(6).data);
        }
        other => panic!("expected the events back, got {other:?}"),
    }
}

#[test]
fn shutdown_answers_every_publisher_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(2)
        .intake_capacity(8)
        .start()
        .unwrap();
    // Every event gets a delivery (refused by the egress guard, so it ends at once), which
    // makes what was journaled countable after a restart.
    let standard = secret(&Scheme::Standard, 16);
    for p in 0..6 {
        herald
            .create_webhook(
                &tenant(&format!("t{p}")),
                spec(
                    "http://127.0.0.1:9/none",
                    &["*"],
                    Scheme::Standard,
                    &standard,
                ),
            )
            .unwrap();
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    // Publishers that got an event through: the engine stops only once each has, so
    // that every one is under way at the stop however slowly the threads start.
    let through = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut publishers = Vec::new();
    for p in 0..6 {
        let herald = herald.clone();
        let done_tx = done_tx.clone();
        let through = std::sync::Arc::clone(&through);
        publishers.push(std::thread::spawn(move || {
            let t = tenant(&format!("t{p}"));
            let mut acknowledged = 0u64;
            loop {
                let event = Event::parse("load", &serde_json::json!(acknowledged)).unwrap();
                // Blocking, async and batch forms all have to come back.
                let result = match p % 3 {
                    0 => herald.publish(&t, event).map(|_| ()),
                    1 => {
                        futures_lite::future::block_on(herald.publish_async(&t, event)).map(|_| ())
                    }
                    _ => herald.publish_batch(&t, vec![event]).map(|_| ()),
                };
                match result {
                    Ok(()) => {
                        acknowledged += 1;
                        if acknowledged == 1 {
                            through.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    Err(error) => {
                        assert_eq!(error.fault(), Fault::Shutdown, "{error:?}");
                        break;
                    }
                }
            }
            done_tx.send((p, acknowledged)).unwrap();
        }));
    }
    drop(done_tx);
    support::wait_for(WAIT, || {
        (through.load(std::sync::atomic::Ordering::SeqCst) == 6).then_some(())
    });
    // A while more, so that the stop meets publishes in flight.
    std::thread::sleep(Duration::from_millis(100));
    herald.shutdown().unwrap();
    let mut acknowledged = BTreeMap::new();
    for _ in 0..6 {
        let (p, count) = done_rx
            .recv_timeout(WAIT)
            .expect("every publisher gets an answer after shutdown");
        acknowledged.insert(p, count);
    }
    for publisher in publishers {
        publisher.join().unwrap();
    }
    // Every acknowledged event is in the journal: after a restart each has its delivery.
    let herald = engine(dir.path(), 2);
    for (p, count) in acknowledged {
        let t = tenant(&format!("t{p}"));
        let mut deliveries = 0;
        let mut after = None;
        loop {
            let page = herald
                .deliveries(DeliveryQuery {
                    after,
                    limit: 1000,
                    ..DeliveryQuery::tenant(t.clone())
                })
                .unwrap();
            deliveries += page.items.len() as u64;
            match page.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert!(count > 0, "publisher {p} got nothing through");
        assert_eq!(deliveries, count, "publisher {p}");
    }
    herald.shutdown().unwrap();
}
