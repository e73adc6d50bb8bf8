//! Tenant isolation and API keys: another tenant's ids are 404 whatever the route, the
//! admin acts for a tenant with `Herald-Tenant`, tenant keys do not see admin routes,
//! and a revoked key stops working at once; a tenant at its pending limit is refused
//! while others publish.

use std::time::Duration;

use herald_e2e::*;
use herald_sink::Sink;
use serde_json::json;

use crate::FAST_RETRIES;

#[test]
fn tenants_are_isolated_and_keys_revocable() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(&site, &Options::default().config(FAST_RETRIES));
    let admin = server.admin();
    let tenant_a = create_tenant(&admin, "tenant_a");
    let tenant_b = create_tenant(&admin, "tenant_b");

    // Tenant A's webhook, event and delivery.
    let secret = standard_secret(1);
    let webhook = create_webhook(
        &tenant_a,
        &json!({"url": sink.url("/a"), "events": ["*"], "secret": secret}),
    );
    let webhook_id = webhook["id"].as_str().expect("id").to_string();
    let event = publish(
        &tenant_a,
        &json!({"type": "order.created", "data": {"a": 1}}),
    );
    let event_id = event["id"].as_str().expect("id").to_string();
    let delivery = wait_delivery(&tenant_a, &webhook_id, &event_id, "success");
    let delivery_id = delivery["id"].as_str().expect("id").to_string();
    assert_all_verified(&sink, &sink.requests_to("/a"), &[&secret]);

    // Tenant B sees none of it: every route answers 404, and nothing changes.
    let wh = format!("/v1/webhooks/{webhook_id}");
    let del = format!("/v1/deliveries/{delivery_id}");
    let cases: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("GET", wh.clone(), None),
        (
            "PATCH",
            wh.clone(),
            Some(json!({"description": "hijacked"})),
        ),
        ("DELETE", wh.clone(), None),
        ("POST", format!("{wh}/secret/rotate"), Some(json!({}))),
        (
            "POST",
            format!("{wh}/test"),
            Some(json!({"event_type": "order.created"})),
        ),
        ("GET", format!("{wh}/deliveries"), None),
        (
            "POST",
            format!("{wh}/recover"),
            Some(json!({"since": "2000-01-01T00:00:00Z"})),
        ),
        ("GET", del.clone(), None),
        ("POST", format!("{del}/retry"), Some(json!({}))),
    ];
    for (method, path, body) in &cases {
        let answer = match body {
            Some(body) => tenant_b.json_request(method, path, body, Vec::new()),
            None => tenant_b.request(Req {
                method,
                path,
                ..Req::default()
            }),
        };
        assert_eq!(
            answer.status,
            404,
            "tenant B: {method} {path}: {}",
            answer.text()
        );
        assert_eq!(answer.error_code(), "not_found", "{method} {path}");
    }
    let listed = tenant_b.get("/v1/webhooks").expect(200);
    assert_eq!(listed["data"], json!([]), "tenant B lists no webhooks");
    assert!(listed["next_cursor"].is_null(), "{listed}");
    // B's own webhooks page with a cursor and never include A's.
    for n in 0..3 {
        create_webhook(
            &tenant_b,
            &json!({"url": sink.url(&format!("/b{n}")), "events": ["order.*"]}),
        );
    }
    let first = tenant_b.get("/v1/webhooks?limit=2").expect(200);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let second = tenant_b
        .get(&format!("/v1/webhooks?limit=2&cursor={cursor}"))
        .expect(200);
    assert!(second["next_cursor"].is_null(), "{second}");
    let mut ids: Vec<String> = [&first, &second]
        .iter()
        .flat_map(|page| page["data"].as_array().cloned().unwrap_or_default())
        .filter_map(|w| w["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3, "{first} {second}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "pages overlap: {first} {second}");
    assert!(
        !ids.contains(&webhook_id),
        "tenant A's webhook listed for B"
    );
    // A tenant key naming another tenant in Herald-Tenant gets nothing either.
    let named = tenant_b.acting_for("tenant_a").get(&wh);
    assert_eq!(named.status, 404, "{}", named.text());

    // A's webhook is untouched.
    let still = tenant_a.get(&wh).expect(200);
    assert_eq!(still["description"], serde_json::Value::Null, "{still}");
    assert_eq!(still["status"], "active");

    // The admin key acts for a tenant named in Herald-Tenant…
    let as_a = admin.acting_for("tenant_a");
    assert_eq!(as_a.get(&wh).expect(200)["id"], webhook_id.as_str());
    assert_eq!(as_a.get(&del).expect(200)["event_id"], event_id.as_str());
    let published = publish(
        &as_a,
        &json!({"type": "order.created", "data": {"by": "admin"}}),
    );
    assert_eq!(published["tenant_id"], "tenant_a", "{published}");
    // …but only for that tenant's ids, and not without naming one.
    assert_eq!(admin.acting_for("tenant_b").get(&wh).status, 404);
    let unnamed = admin.get("/v1/webhooks");
    assert_eq!(unnamed.status, 400, "{}", unnamed.text());
    assert_eq!(
        admin.acting_for("tenant_nobody").get("/v1/webhooks").status,
        404
    );

    // Tenant keys do not see admin routes.
    for (method, path) in [
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("POST", "/v1/tenants/tenant_a/keys"),
        ("DELETE", "/v1/tenants/tenant_a/keys/whatever"),
    ] {
        let answer = if method == "POST" {
            tenant_a.json_request(method, path, &json!({"id": "tenant_c"}), Vec::new())
        } else {
            tenant_a.request(Req {
                method,
                path,
                ..Req::default()
            })
        };
        assert_eq!(
            answer.status,
            404,
            "tenant key: {method} {path}: {}",
            answer.text()
        );
    }
    let tenants = admin.get("/v1/tenants").expect(200);
    let mut ids: Vec<&str> = tenants["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["tenant_a", "tenant_b"],
        "tenant_c was not created: {tenants}"
    );

    // Ids of dots only are refused: URL-normalising clients would lose them.
    for id in [".", ".."] {
        let refused = admin.post("/v1/tenants", &json!({ "id": id }));
        assert_eq!(refused.status, 400, "{id}: {}", refused.text());
        assert_eq!(refused.json()["error"]["field"], "id");
    }
    admin
        .post("/v1/tenants", &json!({ "id": "a.b" }))
        .expect(201);

    // A second key works, and stops working the moment it is revoked.
    let minted = admin
        .post("/v1/tenants/tenant_a/keys", &json!({}))
        .expect(201);
    let second_key = minted["api_key"].as_str().expect("api_key");
    let key_id = minted["id"].as_str().expect("id");
    let second = server.client().key(second_key);
    assert_eq!(second.get(&wh).expect(200)["id"], webhook_id.as_str());
    admin
        .delete(&format!("/v1/tenants/tenant_a/keys/{key_id}"))
        .expect(204);
    let revoked = second.get(&wh);
    assert_eq!(revoked.status, 401, "a revoked key: {}", revoked.text());
    assert_eq!(revoked.error_code(), "unauthorized");
    // The first key is unaffected.
    tenant_a.get(&wh).expect(200);
    // Revoking it again, or a key of another tenant, is not found.
    assert_eq!(
        admin
            .delete(&format!("/v1/tenants/tenant_a/keys/{key_id}"))
            .status,
        404
    );
    assert_eq!(
        admin
            .delete(&format!("/v1/tenants/tenant_b/keys/{key_id}"))
            .status,
        404
    );
}

/// A tenant whose receiver fails holds its backlog to `[limits]
/// pending_deliveries_per_tenant_max`: past it its publishes (single and in a batch)
/// answer 429 `too_many_pending` with `Retry-After`, while another tenant publishes on;
/// once its backlog ends (its webhook deleted) it publishes again.
#[test]
fn a_tenant_at_its_pending_limit_gets_429_while_others_publish() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    sink.set_script("/down", vec![herald_sink::Action::Status(503)])
        .expect("the script is valid");
    let server = Server::start(
        &site,
        &Options::default().config("[limits]\npending_deliveries_per_tenant_max = 2\n"),
    );
    let admin = server.admin();
    let busy = create_tenant(&admin, "tenant_busy");
    let calm = create_tenant(&admin, "tenant_calm");
    // Retried in an hour: each delivery stays pending after its first attempt fails.
    let down = json!({"url": sink.url("/down"), "events": ["*"], "retry_schedule_s": [3600]});
    let busy_webhook = create_webhook(&busy, &down);
    create_webhook(&calm, &down);
    let event = json!({"type": "order.created", "data": {"n": 1}});
    publish(&busy, &event);
    publish(&busy, &event);

    let refused = busy.post("/v1/events", &event);
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.error_code(), "too_many_pending");
    assert_eq!(refused.header("retry-after"), Some("10"));
    assert!(
        refused
            .error_message()
            .contains("2 deliveries pending (at most 2)"),
        "{}",
        refused.error_message()
    );
    let batch = busy
        .post("/v1/events/batch", &json!({ "events": [event.clone()] }))
        .expect(200);
    assert_eq!(batch["data"][0]["status"], 429, "{batch}");
    assert_eq!(
        batch["data"][0]["error"]["code"], "too_many_pending",
        "{batch}"
    );

    // The other tenant is not held back.
    publish(&calm, &event);
    publish(&calm, &event);

    // Deleting the failing webhook ends its backlog; with a new webhook (so that an
    // event needs room again) the tenant publishes again, up to its limit.
    let id = busy_webhook["id"].as_str().expect("id");
    busy.delete(&format!("/v1/webhooks/{id}")).expect(204);
    create_webhook(&busy, &down);
    wait_for(
        "the busy tenant to publish again",
        Duration::from_secs(10),
        || {
            let answer = busy.post("/v1/events", &event);
            (answer.status == 202).then_some(())
        },
    );
    publish(&busy, &event);
    let refused = busy.post("/v1/events", &event);
    assert_eq!(
        refused.status,
        429,
        "at the limit again: {}",
        refused.text()
    );
}

/// Changes of one webhook take turns: a disable and a description change sent at once,
/// again and again, always leave the webhook disabled with the new description (each
/// reads the whole configuration and writes it back; at once, one undid the other).
#[test]
fn concurrent_changes_of_a_webhook_never_undo_each_other() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default());
    let admin = server.admin();
    let tenant = create_tenant(&admin, "tenant_race");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": "http://127.0.0.1:9/race", "events": ["*"]}),
    );
    let id = webhook["id"].as_str().expect("id").to_string();
    let path = format!("/v1/webhooks/{id}");
    for round in 0..40 {
        let description = format!("round {round}");
        let (disabled, described) = std::thread::scope(|scope| {
            let disable = scope.spawn(|| tenant.patch(&path, &json!({"status": "disabled"})));
            let describe =
                scope.spawn(|| tenant.patch(&path, &json!({ "description": description })));
            (disable.join().unwrap(), describe.join().unwrap())
        });
        disabled.expect(200);
        described.expect(200);
        let now = tenant.get(&path).expect(200);
        assert_eq!(now["status"], "disabled", "round {round}: {now}");
        assert_eq!(
            now["description"],
            description.as_str(),
            "round {round}: {now}"
        );
        tenant
            .patch(&path, &json!({"status": "active"}))
            .expect(200);
    }
}
