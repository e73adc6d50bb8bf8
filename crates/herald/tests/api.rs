//! The embedding API's surface: async forms of every operation, test sends with a chosen
//! payload, URL checks through the egress guard, error kinds and builder settings.

mod support;

use std::error::Error as _;
use std::time::Duration;

use futures_lite::future::block_on;
use herald::{
    DeliveryQuery, DeliveryStatus, Error, Event, EventFilter, EventId, EventType, Fault, Herald,
    Scheme, StartError, TenantId, Url, WebhookSpec, WebhookStatus,
};
use support::Receiver;

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(20);

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

fn spec(url: &str, filters: &[&str]) -> WebhookSpec {
    WebhookSpec::new(
        Url::parse(url).unwrap(),
        filters
            .iter()
            .map(|f| EventFilter::parse(f).unwrap())
            .collect(),
        Scheme::Standard,
        herald_sign::generate_secret(&Scheme::Standard, &[7; 32]),
    )
}

fn builder(dir: &std::path::Path) -> herald::Builder {
    Herald::builder()
        .data_dir(dir)
        .shards(2)
        .pin_threads(false)
        .shutdown_grace(Duration::from_secs(2))
}

/// An engine of [`builder`]'s settings that may send to loopback receivers.
fn loopback_engine(dir: &std::path::Path) -> Herald {
    builder(dir).allow_cidr("127.0.0.0/8").start().unwrap()
}

fn wait_for_status(
    herald: &Herald,
    tenant: &TenantId,
    delivery: herald::DeliveryId,
    status: DeliveryStatus,
) -> herald::DeliveryRecord {
    support::wait_for(WAIT, || {
        block_on(herald.delivery_async(tenant, delivery))
            .unwrap()
            .filter(|r| r.status == status)
    })
}

#[test]
fn every_operation_has_an_async_form_that_needs_no_runtime() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = loopback_engine(dir.path());
    let acme = tenant("acme");
    let url = receiver.url("/async");

    // Webhooks: create, read, list, replace, update.
    let webhook = block_on(herald.create_webhook_async(&acme, spec(&url, &["order.*"]))).unwrap();
    let shown = block_on(herald.webhook_async(&acme, &webhook))
        .unwrap()
        .unwrap();
    assert_eq!(shown.spec.url.to_string(), url);
    let second = herald::WebhookId::parse("wh_second").unwrap();
    block_on(herald.put_webhook_async(&acme, &second, spec(&url, &["never.*"]))).unwrap();
    let listed = block_on(herald.list_webhooks_async(&acme)).unwrap();
    assert_eq!(listed.len(), 2);
    let page = block_on(herald.list_webhooks_page_async(&acme, None, 1)).unwrap();
    assert_eq!(page.len(), 1);
    let rest = block_on(herald.list_webhooks_page_async(&acme, Some(&page[0].id), 10)).unwrap();
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0].id, page[0].id);
    let unknown = herald::WebhookId::parse("wh_unknown").unwrap();
    let error =
        block_on(herald.update_webhook_async(&acme, &unknown, spec(&url, &["*"]))).unwrap_err();
    assert!(matches!(error, Error::UnknownWebhook { .. }), "{error:?}");

    // Deliveries: a 400 fails finally; retry and resend bring it back.
    receiver.set_status("/async", 400);
    let event_id = block_on(herald.publish_async(
        &acme,
        Event::parse("order.created", &serde_json::json!({"n": 1})).unwrap(),
    ))
    .unwrap();
    let page = support::wait_for(WAIT, || {
        let page = block_on(herald.deliveries_async(DeliveryQuery {
            event: Some(event_id.clone()),
            ..DeliveryQuery::tenant(acme.clone())
        }))
        .unwrap();
        (page.items.len() == 1 && page.items[0].status == DeliveryStatus::Failed).then_some(page)
    });
    let delivery = page.items[0].id;
    receiver.set_status("/async", 200);
    block_on(herald.retry_delivery_async(&acme, delivery)).unwrap();
    wait_for_status(&herald, &acme, delivery, DeliveryStatus::Success);
    // Retrying a successful delivery conflicts with its state.
    let error = block_on(herald.retry_delivery_async(&acme, delivery)).unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(error.fault(), Fault::Caller);
    assert_eq!(
        block_on(herald.resend_failed_async(&acme, &webhook, 0)).unwrap(),
        0
    );

    // Test sends, both forms.
    let test_id = block_on(herald.send_test_event_async(
        &acme,
        &webhook,
        EventType::parse("diagnostics.ping").unwrap(),
    ))
    .unwrap();
    receiver.wait_until(WAIT, |r| {
        r.iter().any(|x| x.json()["id"] == test_id.as_str())
    });

    // Stats from every shard; delete.
    let stats = block_on(herald.stats_async()).unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(
        stats.iter().map(|s| s.dispatcher.webhooks).sum::<usize>(),
        2
    );
    block_on(herald.delete_webhook_async(&acme, &second)).unwrap();
    assert!(block_on(herald.webhook_async(&acme, &second))
        .unwrap()
        .is_none());

    // The futures are Send + 'static: they run on another runtime's threads too.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let list = herald.list_webhooks_async(&acme);
    let webhooks = runtime
        .block_on(async { tokio::spawn(list).await })
        .unwrap()
        .unwrap();
    assert_eq!(webhooks.len(), 1);
    drop(runtime);
    herald.shutdown().unwrap();

    // After shutdown the async forms fail with the shutdown error, not a hang.
    let error = block_on(herald.webhook_async(&acme, &webhook)).unwrap_err();
    assert_eq!(error.fault(), Fault::Shutdown);
}

#[test]
fn a_test_send_with_a_chosen_payload_reports_its_delivery() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let herald = loopback_engine(dir.path());
    let acme = tenant("acme");
    let url = receiver.url("/test");
    // The filters do not match the test event: a test send ignores them.
    let webhook = herald
        .create_webhook(&acme, spec(&url, &["never.matches"]))
        .unwrap();

    let event = Event::parse("order.created", &serde_json::json!({"order": 42}))
        .unwrap()
        .with_id(EventId::parse("evt_chosen_1").unwrap());
    let sent = herald.send_test_event_with(&acme, &webhook, event).unwrap();
    assert_eq!(sent.event_id.as_str(), "evt_chosen_1");
    let record = wait_for_status(&herald, &acme, sent.delivery, DeliveryStatus::Success);
    assert_eq!(record.webhook, webhook);
    assert_eq!(record.event_id, sent.event_id);
    let received = receiver.wait_until(WAIT, |r| !r.is_empty());
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].json()["data"], serde_json::json!({"order": 42}));
    assert_eq!(received[0].json()["type"], "order.created");

    // Without an id one is generated; the async form reports the same way.
    let sent = block_on(herald.send_test_event_with_async(
        &acme,
        &webhook,
        Event::parse("order.updated", &serde_json::json!([1, 2])).unwrap(),
    ))
    .unwrap();
    assert!(sent.event_id.as_str().starts_with("evt_"));
    wait_for_status(&herald, &acme, sent.delivery, DeliveryStatus::Success);

    // Invalid data is the caller's error, naming the field.
    let bad = Event::from_json_bytes(EventType::parse("x").unwrap(), b"{not json".to_vec());
    let error = herald
        .send_test_event_with(&acme, &webhook, bad)
        .unwrap_err();
    assert_eq!(error.field(), Some("data"), "{error:?}");
    assert!(error.source().is_some(), "the envelope error is the source");

    // A disabled webhook conflicts; an unknown one is unknown.
    let mut disabled = spec(&url, &["*"]);
    disabled.status = WebhookStatus::Disabled {
        reason: herald::DisableReason::Manual,
        at_ms: 0,
    };
    herald.update_webhook(&acme, &webhook, disabled).unwrap();
    let event = Event::parse("a", &serde_json::Value::Null).unwrap();
    let error = herald
        .send_test_event_with(&acme, &webhook, event.clone())
        .unwrap_err();
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    let unknown = herald::WebhookId::parse("wh_none").unwrap();
    let error = herald
        .send_test_event_with(&acme, &unknown, event)
        .unwrap_err();
    assert!(matches!(error, Error::UnknownWebhook { .. }), "{error:?}");
    herald.shutdown().unwrap();
}

#[test]
fn check_url_applies_the_egress_guard_as_delivery_would() {
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path()).start().unwrap();
    let url = |text: &str| Url::parse(text).unwrap();

    // (url, refused, text the reason must contain)
    let cases: &[(&str, bool, &str)] = &[
        (
            "http://127.0.0.1:8080/hook",
            true,
            "127.0.0.1 is a loopback address; allow it with [egress] allow_cidrs",
        ),
        (
            "https://10.1.2.3/hook",
            true,
            "10.1.2.3 is a private address",
        ),
        (
            "http://169.254.169.254/latest",
            true,
            "169.254.169.254 is a cloud metadata address",
        ),
        ("http://[::1]:9000/", true, "::1 is a loopback address"),
        (
            "http://[::ffff:192.168.1.1]/",
            true,
            "192.168.1.1 is a private address",
        ),
        ("http://0.0.0.0/", true, "0.0.0.0 is an unspecified address"),
        ("http://localhost:8080/hook", true, "localhost resolves to"),
        ("https://93.184.215.14/hook", false, ""),
        ("https://[2606:4700::1111]/", false, ""),
        (
            "https://no-such-host.invalid/hook",
            true,
            "cannot resolve no-such-host.invalid",
        ),
    ];
    for (text, refused, reason) in cases {
        let sync = herald.check_url(&url(text));
        let async_form = block_on(herald.check_url_async(&url(text)));
        match (sync, async_form) {
            (Ok(()), Ok(())) => assert!(!refused, "{text} passed"),
            (Err(error), Err(same)) => {
                assert!(refused, "{text}: {error}");
                assert_eq!(error.to_string(), same.to_string());
                assert_eq!(error.field(), Some("url"), "{text}");
                assert_eq!(error.fault(), Fault::Caller);
                let Error::Invalid { message, .. } = &error else {
                    panic!("{text}: {error:?}");
                };
                assert!(message.contains(reason), "{text}: {message}");
                assert!(
                    error.source().is_some(),
                    "{text}: the refusal is the source"
                );
            }
            (sync, async_form) => panic!("{text}: {sync:?} vs {async_form:?}"),
        }
    }
    herald.shutdown().unwrap();

    // The allowlist of the builder is honoured, for literals and names alike.
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path())
        .allow_cidr("127.0.0.0/8")
        .allow_cidr("::1/128")
        .start()
        .unwrap();
    herald.check_url(&url("http://127.0.0.1:8080/")).unwrap();
    herald.check_url(&url("http://localhost:8080/")).unwrap();
    let error = herald.check_url(&url("http://10.0.0.1/")).unwrap_err();
    assert_eq!(error.field(), Some("url"));
    herald.shutdown().unwrap();
}

#[test]
fn require_https_refuses_plain_http_at_create_check_and_delivery() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let http_url = receiver.url("/plain");
    // A webhook created while plain http is permitted…
    let herald = loopback_engine(dir.path());
    let webhook = herald
        .create_webhook(&acme, spec(&http_url, &["*"]))
        .unwrap();
    herald.shutdown().unwrap();
    drop(herald);

    let herald = builder(dir.path())
        .allow_cidr("127.0.0.0/8")
        .require_https(true)
        .start()
        .unwrap();
    // …cannot be created or updated with an http url any more…
    for error in [
        herald
            .create_webhook(&acme, spec(&http_url, &["*"]))
            .unwrap_err(),
        block_on(herald.update_webhook_async(&acme, &webhook, spec(&http_url, &["a"])))
            .unwrap_err(),
        herald
            .check_url(&Url::parse(&http_url).unwrap())
            .unwrap_err(),
    ] {
        assert_eq!(error.field(), Some("url"), "{error:?}");
        assert!(error.to_string().contains("https"), "{error}");
    }
    // …and the existing one is refused at send time.
    let event_id = herald
        .publish(&acme, Event::parse("a", &serde_json::Value::Null).unwrap())
        .unwrap();
    let record = support::wait_for(WAIT, || {
        herald
            .deliveries(DeliveryQuery {
                event: Some(event_id.clone()),
                ..DeliveryQuery::tenant(acme.clone())
            })
            .unwrap()
            .items
            .into_iter()
            .find(|r| r.error.is_some())
    });
    assert_eq!(
        record.error,
        Some(herald::DeliveryError::Transport(
            herald_core::TransportError::EgressDenied
        ))
    );
    assert!(receiver.received().is_empty());
    herald.shutdown().unwrap();
}

#[test]
fn a_tenant_at_its_most_webhooks_conflicts_until_one_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path())
        .allow_cidr("127.0.0.0/8")
        .dispatcher_config(herald::DispatcherConfig {
            webhooks_per_tenant_max: 2,
            ..herald::DispatcherConfig::default()
        })
        .start()
        .unwrap();
    let acme = tenant("acme");
    let url = "http://127.0.0.1:9/hook";
    let first = herald.create_webhook(&acme, spec(url, &["*"])).unwrap();
    herald.create_webhook(&acme, spec(url, &["*"])).unwrap();
    let error = herald.create_webhook(&acme, spec(url, &["*"])).unwrap_err();
    // A state the caller can change, not bad input: the same call succeeds later.
    assert!(matches!(error, Error::Conflict { .. }), "{error:?}");
    assert_eq!(error.fault(), Fault::Caller);
    assert!(error.to_string().contains("delete one first"), "{error}");
    // Another tenant's room is its own.
    herald
        .create_webhook(&tenant("other"), spec(url, &["*"]))
        .unwrap();
    herald.delete_webhook(&acme, &first).unwrap();
    herald.create_webhook(&acme, spec(url, &["*"])).unwrap();
    herald.shutdown().unwrap();
}

#[test]
fn invalid_input_names_its_field_and_keeps_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path()).start().unwrap();
    let acme = tenant("acme");
    let mut no_filters = spec("https://example.com/hook", &["*"]);
    no_filters.filters.clear();
    let mut bad_header = spec("https://example.com/hook", &["*"]);
    bad_header.headers = vec![("bad header".to_string(), "v".to_string())];
    for (spec, field) in [(no_filters, "filters"), (bad_header, "headers")] {
        let error = herald.create_webhook(&acme, spec).unwrap_err();
        assert_eq!(error.field(), Some(field), "{error:?}");
        assert_eq!(error.fault(), Fault::Caller);
        let source = error.source().expect("the spec error is the source");
        assert!(
            error.to_string().contains(&source.to_string()),
            "{error} / {source}"
        );
    }
    let error = Event::parse("order.*", &serde_json::Value::Null).unwrap_err();
    assert_eq!(error.field(), Some("event_type"));
    let bad = Event::from_json_bytes(EventType::parse("a").unwrap(), b"[".to_vec());
    let error = herald.publish(&acme, bad).unwrap_err();
    assert_eq!(error.field(), Some("data"));
    herald.shutdown().unwrap();
}

#[test]
fn builder_settings_are_durations_and_the_retry_schedule_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    // A schedule beyond the limits is the caller's configuration error.
    let too_long = vec![Duration::from_secs(8 * 24 * 3600)];
    let error = builder(dir.path())
        .retry_schedule(too_long)
        .start()
        .unwrap_err();
    assert!(matches!(error, StartError::Config { .. }), "{error:?}");
    assert!(error.to_string().contains("retry_schedule"), "{error}");

    // A valid one becomes the schedule of webhooks without their own: one retry here,
    // so a failing endpoint is exhausted after two attempts.
    let receiver = Receiver::start();
    receiver.set_status("/down", 503);
    let herald = builder(dir.path())
        .allow_cidr("127.0.0.0/8")
        .retry_schedule(vec![Duration::from_millis(10)])
        .journal_group_delay(Duration::from_micros(500))
        .checkpoint_interval(Duration::from_secs(60))
        .shutdown_grace(Duration::from_millis(500))
        .start()
        .unwrap();
    let acme = tenant("acme");
    herald
        .create_webhook(&acme, spec(&receiver.url("/down"), &["*"]))
        .unwrap();
    let event_id = herald
        .publish(&acme, Event::parse("a", &serde_json::Value::Null).unwrap())
        .unwrap();
    let record = support::wait_for(WAIT, || {
        herald
            .deliveries(DeliveryQuery {
                event: Some(event_id.clone()),
                ..DeliveryQuery::tenant(acme.clone())
            })
            .unwrap()
            .items
            .into_iter()
            .find(|r| r.status == DeliveryStatus::Exhausted)
    });
    assert_eq!(record.attempt, 2);
    herald.shutdown().unwrap();
}

#[test]
fn webhooks_and_deliveries_show_their_history_across_restarts() {
    let receiver = Receiver::start();
    receiver.set_status("/flaky", 503);
    let dir = tempfile::tempdir().unwrap();
    let acme = tenant("acme");
    let start = || {
        builder(dir.path())
            .allow_cidr("127.0.0.0/8")
            // The third attempt waits long enough for the test to switch the receiver
            // to 200 after it has seen two 503s, however loaded the machine.
            .retry_schedule(vec![Duration::from_millis(50), Duration::from_secs(2)])
            .start()
            .unwrap()
    };
    let herald = start();
    let mut described = spec(&receiver.url("/flaky"), &["*"]);
    described.description = Some("orders to the warehouse".to_string());
    let webhook = herald.create_webhook(&acme, described.clone()).unwrap();
    let created = herald.webhook(&acme, &webhook).unwrap().unwrap();
    assert_eq!(created.created_at_ms, created.updated_at_ms);
    assert_eq!(
        created.spec.description.as_deref(),
        Some("orders to the warehouse")
    );
    std::thread::sleep(Duration::from_millis(5));
    herald.update_webhook(&acme, &webhook, described).unwrap();
    let updated = herald.webhook(&acme, &webhook).unwrap().unwrap();
    assert_eq!(updated.created_at_ms, created.created_at_ms);
    assert!(updated.updated_at_ms > created.updated_at_ms);

    // Two 503s, then the receiver recovers.
    let event_id = herald
        .publish(&acme, Event::parse("a", &serde_json::Value::Null).unwrap())
        .unwrap();
    receiver.wait_until(WAIT, |r| r.len() >= 2);
    receiver.set_status("/flaky", 200);
    let query = DeliveryQuery {
        event: Some(event_id.clone()),
        ..DeliveryQuery::tenant(acme.clone())
    };
    let record = support::wait_for(WAIT, || {
        herald
            .deliveries(query.clone())
            .unwrap()
            .items
            .into_iter()
            .find(|r| r.status == DeliveryStatus::Success)
    });
    let statuses: Vec<Option<u16>> = record.attempts.iter().map(|a| a.response_status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    assert!(record
        .attempts
        .iter()
        .all(|a| a.finished_at_ms.is_some_and(|f| f >= a.started_at_ms)));
    assert_eq!(
        record.finished_at_ms,
        record.attempts.last().unwrap().finished_at_ms
    );
    // The latest response's headers, names lower-cased (the receiver's 200 has one).
    assert_eq!(
        record.response_headers.to_vec(),
        [("content-length".to_string(), "0".to_string())]
    );
    herald.shutdown().unwrap();
    drop(herald);

    // After a restart (the journal replayed) both read the same.
    let herald = start();
    let shown = herald.webhook(&acme, &webhook).unwrap().unwrap();
    assert_eq!(
        (shown.created_at_ms, shown.updated_at_ms, &shown.spec),
        (updated.created_at_ms, updated.updated_at_ms, &updated.spec)
    );
    let replayed = herald.delivery(&acme, record.id).unwrap().unwrap();
    assert_eq!(replayed.attempts, record.attempts);
    assert_eq!(replayed.finished_at_ms, record.finished_at_ms);
    assert_eq!(replayed.response_headers, record.response_headers);

    // A description over the limit names its field.
    let mut long = spec(&receiver.url("/x"), &["*"]);
    long.description = Some("d".repeat(herald::DESCRIPTION_BYTES_MAX + 1));
    let error = herald.create_webhook(&acme, long).unwrap_err();
    assert_eq!(error.field(), Some("description"), "{error:?}");
    herald.shutdown().unwrap();
}

#[test]
fn stats_count_events_outcomes_latency_journal_and_connections() {
    let receiver = Receiver::start();
    receiver.set_status("/down", 503);
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path())
        .allow_cidr("127.0.0.0/8")
        .retry_schedule(vec![Duration::from_secs(3600)])
        .start()
        .unwrap();
    let acme = tenant("acme");
    herald
        .create_webhook(&acme, spec(&receiver.url("/up"), &["up.*"]))
        .unwrap();
    herald
        .create_webhook(&acme, spec(&receiver.url("/down"), &["down.*"]))
        .unwrap();
    for _ in 0..3 {
        herald
            .publish(&acme, Event::parse("up.x", &serde_json::json!(1)).unwrap())
            .unwrap();
    }
    herald
        .publish(
            &acme,
            Event::parse("down.x", &serde_json::json!(2)).unwrap(),
        )
        .unwrap();
    let sum = |stats: &[herald::ShardStats]| {
        let mut total = herald::Counters::default();
        let mut sync = herald::Histogram::new(&herald::JOURNAL_SYNC_BOUNDS_US);
        let (mut retries, mut bytes, mut connections, mut in_flight) = (0, 0, 0, 0);
        for shard in stats {
            let c = &shard.counters;
            total.events_accepted += c.events_accepted;
            total.deliveries_succeeded += c.deliveries_succeeded;
            total.attempts_succeeded += c.attempts_succeeded;
            total.attempts_retryable += c.attempts_retryable;
            total.attempt_latency_ms.merge(&c.attempt_latency_ms);
            sync.merge(&shard.journal_sync_us);
            retries += shard.dispatcher.retries_pending;
            bytes += shard.journal_bytes_appended;
            connections += shard.connections_open;
            in_flight += shard.sends_in_flight;
        }
        (total, sync, retries, bytes, connections, in_flight)
    };
    // Three successes, and one delivery waiting an hour for its retry.
    let (counters, sync, retries, bytes, connections, in_flight) = support::wait_for(WAIT, || {
        let figures = sum(&block_on(herald.stats_async()).unwrap());
        (figures.0.deliveries_succeeded == 3 && figures.2 == 1).then_some(figures)
    });
    assert_eq!(counters.events_accepted, 4);
    assert_eq!(counters.attempts_succeeded, 3);
    assert_eq!(counters.attempts_retryable, 1);
    let latency = counters.attempt_latency_ms;
    assert_eq!(latency.count, 4);
    assert!(latency.cumulative()[herald::HISTOGRAM_BUCKETS - 1] <= latency.count);
    assert_eq!(retries, 1);
    assert!(bytes > 0, "journal bytes appended");
    assert!(sync.count > 0, "journal syncs recorded");
    assert!(connections >= 1, "keep-alive connections stay open");
    assert_eq!(in_flight, 0);
    // The blocking form reports the same counters.
    let blocking = sum(&herald.stats().unwrap());
    assert_eq!(blocking.0.events_accepted, 4);
    herald.shutdown().unwrap();
}

#[test]
fn a_journal_record_that_does_not_decode_stops_start_up_and_keeps_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A record of a known kind whose payload is not a record of that kind.
        let config = herald_journal::JournalConfig::new(dir.path().join("shard-0"));
        let (mut journal, _) = herald_journal::Journal::open(config).unwrap();
        journal
            .append(
                herald_core::record::kind::EVENT_ACCEPTED,
                herald_core::RECORD_VERSION,
                &[0xA5; 16],
            )
            .unwrap();
        journal.commit().unwrap();
        journal.sync().unwrap();
    }
    let error = builder(dir.path()).shards(1).start().unwrap_err();
    assert!(
        matches!(error, StartError::Storage { shard: 0, .. }),
        "{error:?}"
    );
    assert_eq!(error.fault(), Fault::Storage);
    assert!(error.to_string().contains("record 1: "), "{error}");
    let mut chain: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        chain.push(cause);
        next = cause.source();
    }
    assert!(
        chain.iter().any(|e| e
            .downcast_ref::<herald_core::session::RecoveryError<herald_journal::JournalError>>()
            .is_some()),
        "recovery's error is a source: {chain:?}"
    );
    assert!(
        chain
            .iter()
            .any(|e| e.downcast_ref::<herald_core::DecodeError>().is_some()),
        "the decoding error is in the chain: {chain:?}"
    );
}

#[test]
fn a_purged_tenant_shows_nothing_again_even_after_a_restart() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (acme, initech) = (tenant("acme"), tenant("initech"));
    let start = || {
        builder(dir.path())
            .allow_cidr("127.0.0.0/8")
            .start()
            .unwrap()
    };
    let herald = start();
    let url = receiver.url("/purge");
    let webhook = herald.create_webhook(&acme, spec(&url, &["*"])).unwrap();
    herald.create_webhook(&initech, spec(&url, &["*"])).unwrap();
    let order = |n: u64| Event::parse("order.created", &serde_json::json!({ "n": n })).unwrap();
    let first = herald
        .publish(&acme, order(1).with_idempotency_key("order-1"))
        .unwrap();
    herald.publish(&acme, order(2)).unwrap();
    herald.publish(&initech, order(3)).unwrap();
    let all_of = |herald: &Herald, t: &TenantId| {
        herald
            .deliveries(DeliveryQuery::tenant(t.clone()))
            .unwrap()
            .items
    };
    let acme_deliveries = support::wait_for(WAIT, || {
        let items = all_of(&herald, &acme);
        (items.len() == 2 && items.iter().all(|d| d.status == DeliveryStatus::Success))
            .then_some(items)
    });
    let mut seen = herald
        .subscribe(&acme, herald::StreamFilter::default(), Some(0), 8)
        .unwrap();
    let last_seq = (0..2).map(|_| seen.blocking_recv().unwrap().seq).max();

    // Refused while the tenant has a webhook.
    let refused = herald.purge_tenant(&acme).unwrap_err();
    assert!(matches!(refused, Error::Conflict { .. }), "{refused:?}");
    assert!(refused.to_string().contains("webhook"), "{refused}");
    herald.delete_webhook(&acme, &webhook).unwrap();
    assert_eq!(herald.purge_tenant(&acme).unwrap(), 2);

    let shows_nothing_of_the_old_tenant = |herald: &Herald| {
        assert!(all_of(herald, &acme).is_empty());
        for d in &acme_deliveries {
            assert!(herald.delivery(&acme, d.id).unwrap().is_none());
        }
        assert_eq!(
            all_of(herald, &initech).len(),
            1,
            "another tenant's log stays"
        );
        let refused = herald
            .subscribe(&acme, herald::StreamFilter::default(), Some(0), 8)
            .unwrap_err();
        assert!(
            matches!(refused, herald::SubscribeError::OutsideWindow { floor, .. } if Some(floor) > last_seq),
            "{refused:?}"
        );
    };
    shows_nothing_of_the_old_tenant(&herald);
    herald.shutdown().unwrap();
    drop(herald);

    let herald = start();
    shows_nothing_of_the_old_tenant(&herald);
    // The idempotency key is forgotten: the same publish is a new event.
    let again = herald
        .publish(&acme, order(1).with_idempotency_key("order-1"))
        .unwrap();
    assert_ne!(again, first);
    herald.shutdown().unwrap();
}

#[test]
fn a_tenant_with_more_keys_than_a_step_takes_is_purged_whole() {
    let dir = tempfile::tempdir().unwrap();
    let herald = builder(dir.path()).start().unwrap();
    let bulk = tenant("bulk");
    let keys = herald::PURGE_KEYS_PER_STEP + 10;
    let keyed = |n: usize| {
        Event::parse("order.created", &serde_json::json!({ "n": n }))
            .unwrap()
            .with_idempotency_key(format!("order-{n}"))
    };
    let mut first_ids = Vec::new();
    for start in (0..keys).step_by(1024) {
        let batch: Vec<Event> = (start..keys.min(start + 1024)).map(keyed).collect();
        for id in herald.publish_batch(&bulk, batch).unwrap() {
            first_ids.push(id.unwrap());
        }
    }
    // Remembered: a repeat is answered with the first event.
    assert_eq!(herald.publish(&bulk, keyed(0)).unwrap(), first_ids[0]);
    assert_eq!(herald.purge_tenant(&bulk).unwrap(), 0);
    // Every key is forgotten, the newest too (a second step's).
    for n in [0, keys - 1] {
        assert_ne!(
            herald.publish(&bulk, keyed(n)).unwrap(),
            first_ids[n],
            "key {n}"
        );
    }
    herald.shutdown().unwrap();
}

#[test]
fn a_resend_looks_past_a_long_log_in_steps() {
    let dir = tempfile::tempdir().unwrap();
    let herald = loopback_engine(dir.path());
    let acme = tenant("acme");
    // A receiver that never answers: attempts stay in flight or wait for a connection,
    // so no delivery ends while the test looks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let busy = herald
        .create_webhook(&acme, spec(&format!("{url}/busy"), &["a.*"]))
        .unwrap();
    let failing_spec = spec(&format!("{url}/failing"), &["b.*"]);
    let failing = herald.create_webhook(&acme, failing_spec.clone()).unwrap();
    let events = herald_core::QUERY_SCAN_MAX + 10;
    for start in (0..events).step_by(1024) {
        let batch: Vec<Event> = (start..events.min(start + 1024))
            .map(|n| Event::parse("a.x", &serde_json::json!(n)).unwrap())
            .collect();
        for result in herald.publish_batch(&acme, batch).unwrap() {
            result.unwrap();
        }
    }
    // Six deliveries behind the others in the log, ended failed by a disable; the last
    // three accepted after `middle_ms`.
    let publish_late = |n: u64| {
        herald
            .publish(&acme, Event::parse("b.x", &serde_json::json!(n)).unwrap())
            .unwrap()
    };
    let mut late: Vec<EventId> = (0..3).map(publish_late).collect();
    std::thread::sleep(Duration::from_millis(5));
    let middle_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(5));
    late.extend((3..6).map(publish_late));
    let mut disabled = failing_spec.clone();
    disabled.status = WebhookStatus::Disabled {
        reason: herald::DisableReason::Manual,
        at_ms: 0,
    };
    herald.update_webhook(&acme, &failing, disabled).unwrap();
    for event in &late {
        support::wait_for(WAIT, || {
            let page = herald
                .deliveries(DeliveryQuery {
                    event: Some(event.clone()),
                    // Delivery ids count from 1 in the shard: the busy webhook's
                    // came first, one per event.
                    after: Some(herald::DeliveryId(events as u64)),
                    ..DeliveryQuery::tenant(acme.clone())
                })
                .unwrap();
            page.items
                .iter()
                .any(|d| d.status == DeliveryStatus::Failed)
                .then_some(())
        });
    }
    herald
        .update_webhook(&acme, &failing, failing_spec)
        .unwrap();
    // The first step looks at the busy webhook's deliveries only; the next finds them,
    // in both forms: the later three, then the rest.
    assert_eq!(
        block_on(herald.resend_failed_async(&acme, &failing, middle_ms)).unwrap(),
        3
    );
    assert_eq!(herald.resend_failed(&acme, &failing, 0).unwrap(), 3);
    assert_eq!(
        herald.resend_failed(&acme, &failing, 0).unwrap(),
        0,
        "re-queued, so pending now"
    );
    assert_eq!(herald.list_webhooks(&acme).unwrap().len(), 2, "{busy}");
    drop(silent);
    herald.shutdown().unwrap();
}
