//! Durability across stops: idempotent publishes across a graceful restart, SIGKILL
//! under load, SIGTERM under load. "Acknowledged" means the server answered 202; every
//! such event must reach the receiver at least once after the restart. Duplicates are
//! allowed (at-least-once) and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_e2e::*;
use herald_sink::{Action, Sink};
use serde_json::{json, Value};

use crate::FAST_RETRIES;

/// Bound on waiting for every acknowledged event after a restart.
const REDELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn idempotency_survives_a_restart() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let path = "/idem";
    let secret = standard_secret(5);
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let tenant = create_tenant(&server.admin(), "tenant_idem");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": sink.url(path), "events": ["order.*"], "secret": secret}),
    );
    let webhook_id = webhook["id"].as_str().expect("id").to_string();
    let body = json!({"type": "order.created", "data": {"order_id": "ord_idem", "n": 1}});
    let keyed = |client: &Client, body: &Value| {
        client.json_request(
            "POST",
            "/v1/events",
            body,
            vec![("Idempotency-Key", "idem-key-1".to_string())],
        )
    };

    let first = keyed(&tenant, &body).expect(202);
    let event_id = first["id"].as_str().expect("id").to_string();
    let again = keyed(&tenant, &body).expect(202);
    assert_eq!(again["id"], first["id"], "same key, same answer");
    assert_eq!(
        again["created_at"], first["created_at"],
        "same key, same answer"
    );
    let client_id = "evt_idem-client-1";
    let by_id = json!({"type": "order.created", "id": client_id, "data": {"n": 2}});
    assert_eq!(publish(&tenant, &by_id)["id"], client_id);
    assert_eq!(
        publish(&tenant, &by_id)["id"],
        client_id,
        "same client id, same answer"
    );
    wait_delivery(&tenant, &webhook_id, &event_id, "success");
    wait_delivery(&tenant, &webhook_id, client_id, "success");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM → exit 0; got {status}");

    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let tenant = tenant.on(&server);
    let replayed = keyed(&tenant, &body).expect(202);
    assert_eq!(replayed["id"], first["id"], "the key outlives a restart");
    assert_eq!(replayed["created_at"], first["created_at"]);
    let conflict = keyed(
        &tenant,
        &json!({"type": "order.created", "data": {"order_id": "ord_other"}}),
    );
    assert_eq!(
        conflict.status,
        409,
        "same key, other body: {}",
        conflict.text()
    );
    assert_eq!(conflict.error_code(), "conflict");
    assert_eq!(
        publish(&tenant, &by_id)["id"],
        client_id,
        "the client id outlives a restart"
    );
    let other = tenant.post(
        "/v1/events",
        &json!({"type": "order.created", "id": client_id, "data": {"n": 3}}),
    );
    assert_eq!(
        other.status,
        409,
        "same client id, other body: {}",
        other.text()
    );

    // A marker published after all the replays: once it is in, the replays had their
    // chance to fan out (fan-out is durable before the 202 anyway).
    let marker = publish(
        &tenant,
        &json!({"type": "order.created", "data": {"marker": true}}),
    );
    let marker_id = marker["id"].as_str().expect("id").to_string();
    wait_received(&sink, path, &marker_id);
    wait_delivery(&tenant, &webhook_id, &marker_id, "success");
    let log = deliveries(&tenant, &webhook_id, "");
    for id in [event_id.as_str(), client_id] {
        let entries = log.iter().filter(|d| d["event_id"] == id).count();
        assert_eq!(
            entries, 1,
            "{id}: one delivery in the log, got {entries}: {log:?}"
        );
        let received = sink
            .requests_to(path)
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id))
            .count();
        assert_eq!(received, 1, "{id}: received once, got {received}");
    }
    assert_all_verified(&sink, &sink.requests_to(path), &[&secret]);
}

/// How the server is stopped mid-load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Kill,
    Term,
}

/// Publishes `events_total` events from `threads` threads, stops the server once
/// `stop_after` were acknowledged, restarts it, and checks that every acknowledged
/// event reaches the receiver (signed) at least once.
fn load_stop_restart(
    tenant_id: &str,
    stop: Stop,
    threads: usize,
    events_total: usize,
    stop_after: usize,
) {
    let site = Site::new();
    // A slow receiver, so that deliveries are still pending or in flight at the stop.
    let sink = Sink::builder()
        .default_action(Action::delay(20, Action::ok()))
        .start()
        .expect("the sink starts");
    let path = "/load";
    let secret = standard_secret(6);
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let tenant = create_tenant(&server.admin(), tenant_id);
    // One request at a time: deliveries fall behind publishing, so that many are still
    // pending at the stop and only the journal can bring them back.
    create_webhook(
        &tenant,
        &json!({"url": sink.url(path), "events": ["order.*"], "secret": secret, "max_in_flight": 1}),
    );

    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let acknowledged_count = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let per_thread = events_total / threads;
    let publishers: Vec<_> = (0..threads)
        .map(|t| {
            let tenant = tenant.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let count = Arc::clone(&acknowledged_count);
            let unexpected = Arc::clone(&unexpected);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let body = json!({"type": "order.created", "data": {"thread": t, "n": i}});
                    let sent = tenant.send(Req {
                        method: "POST",
                        path: "/v1/events",
                        headers: vec![("Content-Type", "application/json".to_string())],
                        body: Some(serde_json::to_vec(&body).expect("JSON serialises")),
                    });
                    match sent {
                        Ok(answer) if answer.status == 202 => {
                            let id = answer.json()["id"].as_str().map(str::to_string);
                            match id {
                                Some(id) => {
                                    acknowledged.lock().expect("not poisoned").push(id);
                                    count.fetch_add(1, Ordering::SeqCst);
                                }
                                None => unexpected
                                    .lock()
                                    .expect("not poisoned")
                                    .push(format!("202 without id: {}", answer.text())),
                            }
                        }
                        // Stopping: "shutting down" is a fine answer, and not an ack.
                        Ok(answer) if answer.status == 503 => break,
                        Ok(answer) => {
                            unexpected.lock().expect("not poisoned").push(format!(
                                "{} {}",
                                answer.status,
                                answer.text()
                            ));
                            break;
                        }
                        // The server is gone (refused, reset, closed without an answer).
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();

    wait_for(
        &format!("{stop_after} acknowledged publishes"),
        Duration::from_secs(60),
        || (acknowledged_count.load(Ordering::SeqCst) >= stop_after).then_some(()),
    );
    let at_stop = acknowledged_count.load(Ordering::SeqCst);
    match stop {
        Stop::Kill => server.kill(),
        Stop::Term => {
            let status = server.terminate();
            assert!(
                status.success(),
                "SIGTERM under load → exit 0; got {status}"
            );
        }
    }
    for publisher in publishers {
        publisher.join().expect("a publisher thread panicked");
    }
    let unexpected = unexpected.lock().expect("not poisoned").clone();
    assert!(
        unexpected.is_empty(),
        "unexpected answers while publishing: {unexpected:?}"
    );
    let acknowledged: Vec<String> = acknowledged.lock().expect("not poisoned").clone();
    let distinct: BTreeSet<&str> = acknowledged.iter().map(String::as_str).collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "two publishes got the same event id"
    );

    let received_before_restart = sink.requests_to(path).len();
    let restarted_at = std::time::Instant::now();
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let missing = wait_for(
        &format!(
            "every one of {} acknowledged events at the receiver",
            acknowledged.len()
        ),
        REDELIVERY_TIMEOUT,
        || {
            let received: BTreeSet<String> = sink
                .requests_to(path)
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_string))
                .collect();
            let missing: Vec<&str> = distinct
                .iter()
                .filter(|id| !received.contains(**id))
                .copied()
                .collect();
            missing.is_empty().then_some(missing)
        },
    );
    assert!(missing.is_empty());
    let caught_up = restarted_at.elapsed();

    let records = sink.requests_to(path);
    assert_all_verified(&sink, &records, &[&secret]);
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for record in &records {
        *per_event.entry(webhook_id_of(record)).or_default() += 1;
    }
    let duplicated: Vec<(&String, &usize)> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    let unacknowledged_delivered = per_event
        .keys()
        .filter(|id| !distinct.contains(id.as_str()))
        .count();
    println!(
        "{stop:?} under load: {} published, {at_stop} acknowledged when stopped, {} acknowledged in all, \
         {} distinct events received ({unacknowledged_delivered} never acknowledged), {} requests \
         ({received_before_restart} before the restart; caught up {caught_up:?} after it), \
         {} events received more than once{}",
        events_total,
        acknowledged.len(),
        per_event.len(),
        records.len(),
        duplicated.len(),
        if duplicated.is_empty() {
            String::new()
        } else {
            format!(
                ": {:?}",
                duplicated.iter().take(20).collect::<Vec<_>>()
            )
        }
    );
    drop(server);
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event() {
    load_stop_restart("tenant_kill", Stop::Kill, 2, 300, 100);
}

#[test]
fn sigterm_under_load_exits_zero_and_loses_nothing() {
    load_stop_restart("tenant_term", Stop::Term, 2, 300, 100);
}

#[test]
fn acknowledged_api_changes_survive_sigkill() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let admin = server.admin();
    let tenant = create_tenant(&admin, "tenant_state");

    // A second key, revoked; a third, kept.
    let revoked = admin
        .post("/v1/tenants/tenant_state/keys", &json!({}))
        .expect(201);
    let kept = admin
        .post("/v1/tenants/tenant_state/keys", &json!({}))
        .expect(201);
    admin
        .delete(&format!(
            "/v1/tenants/tenant_state/keys/{}",
            revoked["id"].as_str().expect("id")
        ))
        .expect(204);

    // W1: rotated with grace (two live secrets). W2: disabled. W3: moved to another path
    // and other events.
    let secret_1 = standard_secret(11);
    let w1 = create_webhook(
        &tenant,
        &json!({"url": sink.url("/w1"), "events": ["order.*"], "secret": secret_1, "description": "first"}),
    );
    let w1_id = w1["id"].as_str().expect("id").to_string();
    let rotated = tenant
        .post(
            &format!("/v1/webhooks/{w1_id}/secret/rotate"),
            &json!({"grace_s": 3600}),
        )
        .expect(200);
    let secret_2 = rotated["secret"].as_str().expect("secret").to_string();
    let w1_before = tenant.get(&format!("/v1/webhooks/{w1_id}")).expect(200);
    let w2 = create_webhook(
        &tenant,
        &json!({"url": sink.url("/w2"), "events": ["order.*"]}),
    );
    let w2_id = w2["id"].as_str().expect("id").to_string();
    tenant
        .patch(
            &format!("/v1/webhooks/{w2_id}"),
            &json!({"status": "disabled"}),
        )
        .expect(200);
    let secret_3 = standard_secret(13);
    let w3 = create_webhook(
        &tenant,
        &json!({"url": sink.url("/w3"), "events": ["order.*"], "secret": secret_3}),
    );
    let w3_id = w3["id"].as_str().expect("id").to_string();
    let moved = tenant
        .patch(
            &format!("/v1/webhooks/{w3_id}"),
            &json!({"url": sink.url("/moved"), "events": ["payment.*"]}),
        )
        .expect(200);
    assert_eq!(moved["url"], sink.url("/moved"), "{moved}");
    assert_eq!(moved["events"], json!(["payment.*"]), "{moved}");

    // An idempotent publish, answered before the kill.
    let keyed_body = json!({"type": "inventory.low_stock", "data": {"sku": "bun"}});
    let keyed = |client: &Client| {
        client.json_request(
            "POST",
            "/v1/events",
            &keyed_body,
            vec![("Idempotency-Key", "before-the-kill".to_string())],
        )
    };
    let first = keyed(&tenant).expect(202);

    // SIGKILL: every change was answered, so every change must be durable.
    server.kill();
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let tenant = tenant.on(&server);

    let replayed = keyed(&tenant).expect(202);
    assert_eq!(
        replayed["id"], first["id"],
        "the idempotency key outlives SIGKILL"
    );

    // Keys: the revoked one stays revoked, the kept one works.
    let revoked_key = revoked["api_key"].as_str().expect("api_key");
    assert_eq!(
        server.client().key(revoked_key).get("/v1/webhooks").status,
        401
    );
    let kept_key = kept["api_key"].as_str().expect("api_key");
    server
        .client()
        .key(kept_key)
        .get("/v1/webhooks")
        .expect(200);

    // Webhooks as they were.
    let w1_after = tenant.get(&format!("/v1/webhooks/{w1_id}")).expect(200);
    for field in [
        "url",
        "events",
        "description",
        "created_at",
        "updated_at",
        "signature",
    ] {
        assert_eq!(
            w1_after[field], w1_before[field],
            "{field} after the restart"
        );
    }
    let w2_after = tenant.get(&format!("/v1/webhooks/{w2_id}")).expect(200);
    assert_eq!(w2_after["status"], "disabled", "{w2_after}");
    let w3_after = tenant.get(&format!("/v1/webhooks/{w3_id}")).expect(200);
    assert_eq!(w3_after["url"], sink.url("/moved"), "{w3_after}");

    // Deliveries follow that state.
    let order = publish(&tenant, &json!({"type": "order.created", "data": {}}));
    let order_id = order["id"].as_str().expect("id");
    let got = wait_received(&sink, "/w1", order_id);
    verify(&sink, &got[0], &[&secret_1]).expect("the rotated-out secret, within its grace");
    verify(&sink, &got[0], &[&secret_2]).expect("the new secret");
    let payment = publish(&tenant, &json!({"type": "payment.processed", "data": {}}));
    let payment_id = payment["id"].as_str().expect("id");
    let got = wait_received(&sink, "/moved", payment_id);
    verify(&sink, &got[0], &[&secret_3]).expect("the moved webhook's secret");
    wait_delivery(&tenant, &w1_id, order_id, "success");
    wait_delivery(&tenant, &w3_id, payment_id, "success");
    assert!(
        deliveries(&tenant, &w2_id, "").is_empty(),
        "the disabled webhook got deliveries"
    );
    assert!(
        deliveries(&tenant, &w3_id, "")
            .iter()
            .all(|d| d["event_id"] != order_id),
        "order.created reached a payment.* webhook"
    );
    assert!(sink.requests_to("/w2").is_empty() && sink.requests_to("/w3").is_empty());
}
