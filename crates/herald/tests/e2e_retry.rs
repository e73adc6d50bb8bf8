//! Retry behaviour end to end, against herald-sink scripts: a receiver that fails twice
//! then succeeds, one that always fails, 410 Gone, and 429/503 with Retry-After.

mod common;

use std::time::Duration;

use common::{deliveries, engine, envelope_id, event, secret, spec, tenant, wait_until, WAIT};
use herald::{DeliveryError, DeliveryStatus, DisableReason, Scheme, WebhookStatus};
use herald_sink::{Action, Sink};

/// Attempts at 0, +200 ms, +400 ms.
const SHORT_SCHEDULE_MS: [u64; 2] = [200, 400];

fn standard_spec(url: &str, delays_ms: &[u64]) -> herald::WebhookSpec {
    spec(
        url,
        Scheme::Standard,
        &secret(&Scheme::Standard, 7),
        Some(delays_ms.to_vec()),
    )
}

#[test]
fn a_receiver_that_fails_twice_then_succeeds_gets_the_same_event_three_times() {
    let sink = Sink::builder()
        .verify(Scheme::Standard, &[&secret(&Scheme::Standard, 7)])
        .script(
            "/flaky",
            vec![Action::Status(500), Action::Status(503), Action::ok()],
        )
        .script("/down", vec![Action::Status(503)])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1, &[]);
    let tenant = tenant("retry");
    let flaky = herald
        .create_webhook(
            &tenant,
            standard_spec(&sink.url("/flaky"), &SHORT_SCHEDULE_MS),
        )
        .unwrap();
    let down = herald
        .create_webhook(&tenant, standard_spec(&sink.url("/down"), &[50, 50]))
        .unwrap();
    let id = herald
        .publish(&tenant, event(serde_json::json!({"retry": true})))
        .unwrap();

    let log = wait_until(
        "both deliveries to finish",
        WAIT,
        || {
            let log = deliveries(&herald, &tenant);
            (log.len() == 2 && log.iter().all(|d| d.status != DeliveryStatus::Pending))
                .then_some(log)
        },
        || {
            format!(
                "{:?} / sink {:?}",
                deliveries(&herald, &tenant),
                sink.stats()
            )
        },
    );
    let of = |webhook: &herald::WebhookId| log.iter().find(|d| &d.webhook == webhook).unwrap();
    let flaky_delivery = of(&flaky);
    assert_eq!(flaky_delivery.status, DeliveryStatus::Success);
    assert_eq!(flaky_delivery.attempt, 3);
    assert_eq!(flaky_delivery.response_status, Some(200));
    let down_delivery = of(&down);
    assert_eq!(down_delivery.status, DeliveryStatus::Exhausted);
    assert_eq!(
        down_delivery.attempt, 3,
        "the schedule allows three attempts"
    );
    assert_eq!(down_delivery.error, Some(DeliveryError::Status(503)));

    let attempts = sink.requests_to("/flaky");
    assert_eq!(attempts.len(), 3);
    assert_eq!(
        sink.requests_to("/down").len(),
        3,
        "no attempt after exhaustion"
    );
    for attempt in &attempts {
        assert_eq!(
            envelope_id(&attempt.body),
            id.as_str(),
            "same event each time"
        );
        assert_eq!(attempt.body, attempts[0].body, "same bytes each time");
        assert_eq!(
            attempt.header("webhook-id"),
            attempts[0].header("webhook-id"),
            "a stable id receivers can de-duplicate on"
        );
    }
    // Retries are not early: they wait the scheduled delay after the failed attempt
    // (which ended after the sink saw the request). The engine's clock counts whole
    // milliseconds and a shard turn reads it once, so the failure's time may be taken
    // a little before its true end (on a loaded machine, a turn's length): a tenth of
    // the delay is allowed for that. A retry sent early (at once, or on the wrong
    // step of the schedule) still fails.
    for (pair, delay_ms) in attempts.windows(2).zip(SHORT_SCHEDULE_MS) {
        let gap = pair[1].arrived - pair[0].arrived;
        assert!(
            gap + Duration::from_millis(delay_ms / 10) >= Duration::from_millis(delay_ms),
            "retry came {gap:?} after the failure; the schedule says {delay_ms} ms"
        );
    }
    let stats = sink.stats();
    assert_eq!(stats.verify_failed, 0);
    assert_eq!(stats.verified, 6);
    herald.shutdown().unwrap();
}

#[test]
fn gone_disables_the_webhook() {
    let sink = Sink::builder()
        .script("/gone", vec![Action::Status(410)])
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1, &[]);
    let tenant = tenant("gone");
    let gone = herald
        .create_webhook(&tenant, standard_spec(&sink.url("/gone"), &[50, 50, 50]))
        .unwrap();
    let control = herald
        .create_webhook(&tenant, standard_spec(&sink.url("/control"), &[50]))
        .unwrap();
    // A change of settings prepared from what was read before the engine disabled it.
    let read_before = herald.webhook(&tenant, &gone).unwrap().unwrap().spec;
    herald
        .publish(&tenant, event(serde_json::json!({"n": 1})))
        .unwrap();
    let webhook = wait_until(
        "the webhook to be disabled",
        WAIT,
        || {
            let webhook = herald.webhook(&tenant, &gone).unwrap()?;
            (!webhook.spec.status.is_active()).then_some(webhook)
        },
        || format!("{:?}", herald.webhook(&tenant, &gone)),
    );
    assert!(
        matches!(
            webhook.spec.status,
            WebhookStatus::Disabled {
                reason: DisableReason::Gone,
                ..
            }
        ),
        "{:?}",
        webhook.spec.status
    );
    assert_eq!(sink.requests_to("/gone").len(), 1, "410 is not retried");

    // A later event reaches the active webhook but not the disabled one.
    let second = herald
        .publish(&tenant, event(serde_json::json!({"n": 2})))
        .unwrap();
    wait_until(
        "the second event at the control webhook",
        WAIT,
        || {
            sink.requests_to("/control")
                .iter()
                .any(|r| envelope_id(&r.body) == second.as_str())
                .then_some(())
        },
        || format!("{:?}", sink.stats()),
    );
    assert_eq!(sink.requests_to("/gone").len(), 1);
    // The receiver answered before the engine recorded the outcome: wait for the log.
    let log = wait_until(
        "both events and the webhook.disabled event to be recorded as delivered to the control webhook",
        WAIT,
        || {
            let log = deliveries(&herald, &tenant);
            let control_done = log
                .iter()
                .filter(|d| d.webhook == control && d.status == DeliveryStatus::Success)
                .count()
                == 3;
            control_done.then_some(log)
        },
        || format!("{:?}", deliveries(&herald, &tenant)),
    );
    let to_gone: Vec<_> = log.iter().filter(|d| d.webhook == gone).collect();
    assert_eq!(to_gone.len(), 1, "{log:?}");
    assert_eq!(to_gone[0].status, DeliveryStatus::Failed);
    // Subscribers to `*` hear about the disabling as an operational event.
    let notice = sink
        .requests_to("/control")
        .into_iter()
        .find(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"]
                == "webhook.disabled"
        })
        .expect("the control webhook received webhook.disabled");
    let notice: serde_json::Value = serde_json::from_slice(&notice.body).unwrap();
    assert!(
        notice["data"].to_string().contains(gone.as_str()),
        "the notice names the disabled webhook: {notice}"
    );
    // Written now, the change keeps the webhook disabled; its settings are taken.
    let mut changed = read_before;
    changed.headers = vec![("X-Team".to_string(), "kitchen".to_string())];
    herald
        .update_webhook_settings(&tenant, &gone, changed)
        .unwrap();
    let after = herald.webhook(&tenant, &gone).unwrap().unwrap().spec;
    assert_eq!(after.status, webhook.spec.status);
    assert_eq!(
        after.headers,
        [("X-Team".to_string(), "kitchen".to_string())]
    );
    herald.shutdown().unwrap();
}

#[test]
fn retry_after_is_honoured_on_429_and_503() {
    const RETRY_AFTER_S: u64 = 1;
    let paths = [("/busy", 429), ("/unavailable", 503)];
    let mut builder = Sink::builder();
    for (path, status) in paths {
        builder = builder.script(
            path,
            vec![
                Action::RetryAfter {
                    status,
                    seconds: RETRY_AFTER_S,
                },
                Action::ok(),
            ],
        );
    }
    let sink = builder.start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let herald = engine(dir.path(), 1, &[]);
    let tenant = tenant("retry-after");
    for (path, _) in paths {
        // The schedule alone would retry after 20 ms.
        herald
            .create_webhook(&tenant, standard_spec(&sink.url(path), &[20, 20]))
            .unwrap();
    }
    herald
        .publish(&tenant, event(serde_json::json!({"n": 1})))
        .unwrap();
    sink.wait_for(4, WAIT).unwrap();
    for (path, status) in paths {
        let attempts = sink.requests_to(path);
        assert_eq!(attempts.len(), 2, "{path}");
        assert_eq!(attempts[0].action.status(), Some(status));
        let gap = attempts[1].arrived - attempts[0].arrived;
        assert!(
            gap >= Duration::from_secs(RETRY_AFTER_S),
            "{path}: next attempt {gap:?} after a {status} asking for {RETRY_AFTER_S} s"
        );
    }
    wait_until(
        "both deliveries to succeed",
        WAIT,
        || {
            let log = deliveries(&herald, &tenant);
            (log.len() == 2 && log.iter().all(|d| d.status == DeliveryStatus::Success))
                .then_some(())
        },
        || format!("{:?}", deliveries(&herald, &tenant)),
    );
    herald.shutdown().unwrap();
}
