//! The README's story from an operator's seat: tenant, webhook, test send, publish,
//! delivery log, a failing receiver and its retries, secret rotation, disable and
//! re-enable; and the receiver outcome classes (4xx final, 5xx retried then exhausted,
//! 410 disables).

use herald_e2e::*;
use herald_sink::{Action, Sink};
use serde_json::{json, Value};

use crate::FAST_RETRIES;

/// `id` of a JSON object, as text.
fn id_of(value: &Value, field: &str) -> String {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value}"))
        .to_string()
}

#[test]
fn readme_story() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let anonymous = server.client();
    let admin = server.admin();

    // The unauthenticated endpoints.
    assert_eq!(
        anonymous.get("/healthz").expect(200),
        json!({"status": "ok"})
    );
    wait_for("GET /readyz to answer 200", DELIVERY_TIMEOUT, || {
        let ready = anonymous.get("/readyz");
        (ready.status == 200).then(|| assert_eq!(ready.json(), json!({"status": "ready"})))
    });
    let openapi = anonymous.get("/v1/openapi.json").expect(200);
    assert!(
        openapi["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI document: {}",
        &openapi.to_string()[..200.min(openapi.to_string().len())]
    );

    let metrics = anonymous.get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.header("content-type")
    );
    let text = metrics.text();
    assert!(
        text.contains("# TYPE herald_") && text.contains("herald_api_requests"),
        "not Herald's Prometheus exposition: {}",
        &text[..text.len().min(500)]
    );

    // 1. A tenant and its key.
    let tenant = create_tenant(&admin, "tenant_story");

    // The event catalog.
    let types = tenant.get("/v1/event-types").expect(200);
    let types = types["data"].as_array().expect("data is a list").clone();
    assert_eq!(types.len(), 24, "the catalog holds 24 event types");
    for info in &types {
        assert!(
            info["type"].is_string()
                && info["description"].is_string()
                && !info["sample"].is_null(),
            "catalog entry lacks type/description/sample: {info}"
        );
    }
    let order_created_sample = types
        .iter()
        .find(|t| t["type"] == "order.created")
        .expect("order.created is in the catalog")["sample"]
        .clone();

    // 2. A webhook on the loopback receiver; the secret is generated.
    let path = "/hooks/story";
    let webhook = create_webhook(
        &tenant,
        &json!({
            "url": sink.url(path),
            "events": ["order.*"],
            "description": "the README's receiver",
            "retry_schedule_s": [0.2, 0.4],
        }),
    );
    let webhook_id = id_of(&webhook, "id");
    let secret_0 = id_of(&webhook, "secret");
    assert!(secret_0.starts_with("whsec_"), "{secret_0}");
    assert_eq!(webhook["status"], "active", "{webhook}");
    assert_eq!(webhook["url"], sink.url(path), "{webhook}");
    assert_eq!(webhook["events"], json!(["order.*"]), "{webhook}");
    assert_eq!(webhook["signature"]["scheme"], "standard", "{webhook}");
    assert_eq!(webhook["retry_schedule_s"], json!([0.2, 0.4]), "{webhook}");
    assert_eq!(webhook["description"], "the README's receiver", "{webhook}");
    assert!(
        webhook["created_at"].is_string() && webhook["updated_at"].is_string(),
        "{webhook}"
    );
    let fetched = tenant
        .get(&format!("/v1/webhooks/{webhook_id}"))
        .expect(200);
    assert_eq!(fetched["id"], webhook_id.as_str());
    assert!(
        fetched.get("secret").is_none_or(Value::is_null),
        "GET must not reveal the secret: {fetched}"
    );
    let listed = tenant.get("/v1/webhooks").expect(200);
    assert!(
        listed["data"]
            .as_array()
            .is_some_and(|d| d.iter().any(|w| w["id"] == webhook_id.as_str())),
        "{listed}"
    );

    // 3. Test send: the catalog's sample arrives, signed, and shows in the log.
    let sent = tenant
        .post(
            &format!("/v1/webhooks/{webhook_id}/test"),
            &json!({"event_type": "order.created"}),
        )
        .expect(202);
    let test_delivery = id_of(&sent, "delivery_id");
    let test_event = id_of(&sent, "event_id");
    assert!(test_delivery.starts_with("del_"), "{sent}");
    let got = wait_received(&sink, path, &test_event);
    verify(&sink, &got[0], &[&secret_0]).expect("the test send verifies");
    let body = body_json(&got[0]);
    assert_eq!(body["type"], "order.created", "{body}");
    assert_eq!(body["id"], test_event.as_str(), "{body}");
    assert_eq!(
        body["data"], order_created_sample,
        "the catalog sample is sent"
    );
    wait_delivery(&tenant, &webhook_id, &test_event, "success");
    let detail = tenant
        .get(&format!("/v1/deliveries/{test_delivery}"))
        .expect(200);
    assert_eq!(detail["response_code"], 200, "{detail}");
    assert!(
        detail["attempt_history"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{detail}"
    );

    // 4. Publish: the envelope, the delivery, the log.
    let envelope = publish(
        &tenant,
        &json!({
            "type": "order.created",
            "location_id": "loc_main-street",
            "data": {"order_id": "ord_1", "total_cents": 1250},
        }),
    );
    let event_1 = id_of(&envelope, "id");
    assert_eq!(envelope["type"], "order.created", "{envelope}");
    assert_eq!(envelope["tenant_id"], "tenant_story", "{envelope}");
    assert_eq!(envelope["location_id"], "loc_main-street", "{envelope}");
    assert!(
        envelope["created_at"].is_string() && envelope["api_version"].is_string(),
        "{envelope}"
    );
    let got = wait_received(&sink, path, &event_1);
    verify(&sink, &got[0], &[&secret_0]).expect("the event verifies");
    let body = body_json(&got[0]);
    assert_eq!(
        body["data"],
        json!({"order_id": "ord_1", "total_cents": 1250})
    );
    assert_eq!(body["tenant_id"], "tenant_story");
    assert_eq!(body["location_id"], "loc_main-street");
    let logged = wait_delivery(&tenant, &webhook_id, &event_1, "success");
    assert_eq!(logged["attempts"], 1, "{logged}");
    assert_eq!(logged["response_code"], 200, "{logged}");
    assert_eq!(logged["event_type"], "order.created", "{logged}");
    assert_eq!(logged["webhook_id"], webhook_id.as_str(), "{logged}");
    assert!(logged["delivered_at"].is_string(), "{logged}");
    let only_success = deliveries(&tenant, &webhook_id, "status=success");
    assert!(only_success.iter().all(|d| d["status"] == "success"));
    assert!(only_success
        .iter()
        .any(|d| d["event_id"] == event_1.as_str()));
    // A successful delivery cannot be retried.
    let logged_id = id_of(&logged, "id");
    let again = tenant.post(&format!("/v1/deliveries/{logged_id}/retry"), &json!({}));
    assert_eq!(again.status, 409, "{}", again.text());

    // An event the webhook does not subscribe to is not fanned out to it (fan-out is
    // durable before the 202, so the log already tells).
    let other = publish(&tenant, &json!({"type": "payment.processed", "data": {}}));
    let other_id = id_of(&other, "id");
    assert!(
        deliveries(&tenant, &webhook_id, "")
            .iter()
            .all(|d| d["event_id"] != other_id.as_str()),
        "payment.processed reached an order.* webhook"
    );

    // 5a. A failing receiver: 503 once, then 200: retried on the schedule.
    sink.set_script(path, vec![Action::Status(503), Action::ok()])
        .expect("a script is valid");
    let event_2 = id_of(
        &publish(&tenant, &json!({"type": "order.updated", "data": {"n": 2}})),
        "id",
    );
    let logged = wait_delivery(&tenant, &webhook_id, &event_2, "success");
    assert_eq!(logged["attempts"], 2, "{logged}");
    let detail = tenant
        .get(&format!("/v1/deliveries/{}", id_of(&logged, "id")))
        .expect(200);
    let history = detail["attempt_history"]
        .as_array()
        .expect("attempt_history");
    assert_eq!(history.len(), 2, "{detail}");
    assert_eq!(history[0]["response_code"], 503, "{detail}");
    assert_eq!(history[1]["response_code"], 200, "{detail}");
    let got = wait_received(&sink, path, &event_2);
    assert_eq!(got.len(), 2, "two attempts arrived");
    assert_all_verified(&sink, &got, &[&secret_0]);

    // The log filters by event type, and pages with a cursor.
    let updated = deliveries(&tenant, &webhook_id, "event_type=order.updated");
    assert!(
        updated.iter().all(|d| d["event_type"] == "order.updated"),
        "{updated:?}"
    );
    assert!(
        updated.iter().any(|d| d["event_id"] == event_2.as_str()),
        "{updated:?}"
    );
    let everything = deliveries(&tenant, &webhook_id, "");
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..=everything.len() {
        let mut page_path = format!("/v1/webhooks/{webhook_id}/deliveries?limit=1");
        if let Some(cursor) = &cursor {
            page_path.push_str(&format!("&cursor={cursor}"));
        }
        let page = tenant.get(&page_path).expect(200);
        let data = page["data"].as_array().expect("data").clone();
        assert!(data.len() <= 1, "limit=1 gave {}", data.len());
        paged.extend(data.iter().map(|d| d["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let all_ids: Vec<Value> = everything.iter().map(|d| d["id"].clone()).collect();
    assert_eq!(
        paged, all_ids,
        "pages of one walk the whole log once, in order"
    );

    // A batch: each event is answered and delivered.
    let batch = tenant
        .post(
            "/v1/events/batch",
            &json!({"events": [
                {"type": "order.created", "data": {"batch": 0}},
                {"type": "order.cancelled", "data": {"batch": 1}},
            ]}),
        )
        .expect(200);
    for item in batch["data"].as_array().expect("data") {
        assert_eq!(item["status"], 202, "{batch}");
        let id = id_of(&item["event"], "id");
        let got = wait_received(&sink, path, &id);
        verify(&sink, &got[0], &[&secret_0]).expect("a batch event verifies");
        wait_delivery(&tenant, &webhook_id, &id, "success");
    }

    // 5b. A final failure (400), then a manual retry.
    sink.set_script(path, vec![Action::Status(400), Action::ok()])
        .expect("a script is valid");
    let event_3 = id_of(
        &publish(&tenant, &json!({"type": "order.updated", "data": {"n": 3}})),
        "id",
    );
    let failed = wait_delivery(&tenant, &webhook_id, &event_3, "failed");
    assert_eq!(failed["response_code"], 400, "{failed}");
    assert_eq!(failed["attempts"], 1, "a 400 is not retried: {failed}");
    assert!(failed["next_retry_at"].is_null(), "{failed}");
    let failed_only = deliveries(&tenant, &webhook_id, "status=failed");
    assert!(failed_only
        .iter()
        .any(|d| d["event_id"] == event_3.as_str()));
    assert!(failed_only.iter().all(|d| d["status"] == "failed"));
    tenant
        .post(
            &format!("/v1/deliveries/{}/retry", id_of(&failed, "id")),
            &json!({}),
        )
        .expect(202);
    let retried = wait_delivery(&tenant, &webhook_id, &event_3, "success");
    assert_eq!(retried["attempts"], 2, "{retried}");

    // 5c. Another final failure, re-queued by recover.
    sink.set_script(path, vec![Action::Status(422), Action::ok()])
        .expect("a script is valid");
    let event_4 = id_of(
        &publish(&tenant, &json!({"type": "order.updated", "data": {"n": 4}})),
        "id",
    );
    wait_delivery(&tenant, &webhook_id, &event_4, "failed");
    let recovered = tenant
        .post(
            &format!("/v1/webhooks/{webhook_id}/recover"),
            &json!({"since": "2000-01-01T00:00:00Z"}),
        )
        .expect(202);
    assert_eq!(
        recovered["requeued"], 1,
        "only event_4 is failed now: {recovered}"
    );
    wait_delivery(&tenant, &webhook_id, &event_4, "success");
    sink.clear_script(path);

    // 6. Rotation with a grace period: requests carry both signatures.
    let rotated = tenant
        .post(
            &format!("/v1/webhooks/{webhook_id}/secret/rotate"),
            &json!({"grace_s": 3600}),
        )
        .expect(200);
    let secret_1 = id_of(&rotated, "secret");
    assert_ne!(secret_1, secret_0, "rotation makes a new secret");
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    let event_5 = id_of(
        &publish(&tenant, &json!({"type": "order.created", "data": {"n": 5}})),
        "id",
    );
    let got = wait_received(&sink, path, &event_5);
    let signatures = got[0]
        .header("webhook-signature")
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        signatures
            .split(' ')
            .filter(|s| s.starts_with("v1,"))
            .count(),
        2,
        "one signature per live secret: {signatures:?}"
    );
    verify(&sink, &got[0], &[&secret_0]).expect("the old secret still verifies during grace");
    verify(&sink, &got[0], &[&secret_1]).expect("the new secret verifies");

    // Rotation without grace: the previous secrets stop signing at once.
    let rotated = tenant
        .post(
            &format!("/v1/webhooks/{webhook_id}/secret/rotate"),
            &json!({"grace_s": 0}),
        )
        .expect(200);
    let secret_2 = id_of(&rotated, "secret");
    let event_6 = id_of(
        &publish(&tenant, &json!({"type": "order.created", "data": {"n": 6}})),
        "id",
    );
    let got = wait_received(&sink, path, &event_6);
    verify(&sink, &got[0], &[&secret_2]).expect("the newest secret verifies");
    assert!(
        verify(&sink, &got[0], &[&secret_0, &secret_1]).is_err(),
        "secrets rotated out without grace must no longer sign"
    );

    // 7. Disable: no deliveries. A second webhook (the witness) shows the event was
    // fanned out all the same.
    let witness_path = "/hooks/witness";
    let witness_secret = standard_secret(2);
    let witness = create_webhook(
        &tenant,
        &json!({
            "url": sink.url(witness_path),
            "events": ["order.*"],
            "secret": witness_secret,
            "headers": {"X-Kitchen": "north"},
        }),
    );
    assert_eq!(
        witness["headers"],
        json!({"X-Kitchen": "north"}),
        "{witness}"
    );
    assert_eq!(
        witness["secret"],
        witness_secret.as_str(),
        "the given secret is kept"
    );
    let witness_id = id_of(&witness, "id");
    let disabled = tenant
        .patch(
            &format!("/v1/webhooks/{webhook_id}"),
            &json!({"status": "disabled"}),
        )
        .expect(200);
    assert_eq!(disabled["status"], "disabled", "{disabled}");
    assert_eq!(disabled["disabled_reason"], "manual", "{disabled}");
    let event_7 = id_of(
        &publish(&tenant, &json!({"type": "order.created", "data": {"n": 7}})),
        "id",
    );
    let got = wait_received(&sink, witness_path, &event_7);
    assert_eq!(
        got[0].header("x-kitchen"),
        Some("north"),
        "the webhook's own header is sent"
    );
    wait_delivery(&tenant, &witness_id, &event_7, "success");
    assert!(
        deliveries(&tenant, &webhook_id, "")
            .iter()
            .all(|d| d["event_id"] != event_7.as_str()),
        "a disabled webhook got a delivery"
    );

    // 8. Re-enable: deliveries again.
    let enabled = tenant
        .patch(
            &format!("/v1/webhooks/{webhook_id}"),
            &json!({"status": "active"}),
        )
        .expect(200);
    assert_eq!(enabled["status"], "active", "{enabled}");
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    let event_8 = id_of(
        &publish(&tenant, &json!({"type": "order.created", "data": {"n": 8}})),
        "id",
    );
    let got = wait_received(&sink, path, &event_8);
    verify(&sink, &got[0], &[&secret_2]).expect("after re-enabling");
    wait_delivery(&tenant, &webhook_id, &event_8, "success");
    assert!(
        sink.requests_to(path)
            .iter()
            .all(|r| r.header("webhook-id") != Some(event_7.as_str())),
        "the event published while disabled reached the webhook"
    );

    // Every request received verifies with the webhook's secrets.
    assert_all_verified(
        &sink,
        &sink.requests_to(path),
        &[&secret_0, &secret_1, &secret_2],
    );
    assert_all_verified(&sink, &sink.requests_to(witness_path), &[&witness_secret]);
    let stats = sink.stats();
    assert_eq!(stats.bad_requests, 0, "{stats:?}");

    // Delete: the webhook is gone.
    tenant
        .delete(&format!("/v1/webhooks/{witness_id}"))
        .expect(204);
    assert_eq!(
        tenant.get(&format!("/v1/webhooks/{witness_id}")).status,
        404
    );
}

#[test]
fn receiver_outcome_classes() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let tenant = create_tenant(&server.admin(), "tenant_outcomes");
    let secret = standard_secret(9);

    // (path, receiver's answers, expected final status, expected attempts)
    let cases: &[(&str, Vec<Action>, &str, u64)] = &[
        ("/ok", vec![Action::ok()], "success", 1),
        ("/accepted", vec![Action::Status(202)], "success", 1),
        ("/not-found", vec![Action::Status(404)], "failed", 1),
        ("/redirect", vec![Action::Status(302)], "failed", 1),
        // The webhooks use the server's default schedule [0.2, 0.4]: three attempts.
        ("/down", vec![Action::Status(500)], "failed", 3),
        (
            "/busy",
            vec![Action::Status(429), Action::ok()],
            "success",
            2,
        ),
        (
            "/timeout-ish",
            vec![Action::Status(408), Action::ok()],
            "success",
            2,
        ),
    ];
    let mut hooks = Vec::new();
    for (path, actions, _, _) in cases {
        sink.set_script(path, actions.clone())
            .expect("valid script");
        let webhook = create_webhook(
            &tenant,
            &json!({"url": sink.url(path), "events": ["order.created"], "secret": secret}),
        );
        assert_eq!(
            webhook["retry_schedule_s"],
            Value::Null,
            "server default applies"
        );
        hooks.push(id_of(&webhook, "id"));
    }
    let event = id_of(
        &publish(&tenant, &json!({"type": "order.created", "data": {}})),
        "id",
    );
    for ((path, _, status, attempts), hook) in cases.iter().zip(&hooks) {
        let logged = wait_delivery(&tenant, hook, &event, status);
        assert_eq!(logged["attempts"], *attempts, "{path}: {logged}");
        let received = wait_received(&sink, path, &event);
        assert_eq!(
            received.len() as u64,
            *attempts,
            "{path}: requests received"
        );
        assert_all_verified(&sink, &received, &[&secret]);
    }

    // 410 Gone disables the webhook.
    sink.set_script("/gone", vec![Action::Status(410)])
        .expect("valid script");
    let gone = create_webhook(
        &tenant,
        &json!({"url": sink.url("/gone"), "events": ["order.*"], "secret": secret}),
    );
    let gone_id = id_of(&gone, "id");
    let event = id_of(
        &publish(&tenant, &json!({"type": "order.updated", "data": {}})),
        "id",
    );
    let disabled = wait_for("the 410 webhook to be disabled", DELIVERY_TIMEOUT, || {
        let webhook = tenant.get(&format!("/v1/webhooks/{gone_id}")).expect(200);
        (webhook["status"] == "disabled").then_some(webhook)
    });
    assert_eq!(disabled["disabled_reason"], "gone", "{disabled}");
    let received = wait_received(&sink, "/gone", &event);
    assert_eq!(received.len(), 1, "a 410 is not retried");
    assert_all_verified(&sink, &received, &[&secret]);
}
