//! Authentication and tenant isolation against a real server (one shard, a temporary
//! data directory): another tenant's resources are 404, never 403, whatever the route.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use herald_api::{Config, Server};
use herald_http::{Limits, ResponseParser};
use serde_json::{json, Value};

const ADMIN_KEY: &str = "admin-key-for-tenancy-tests-0123456789";

/// One request on its own connection; `(status, JSON body or Null)`.
fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, Value) {
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).unwrap();
    let mut parser = ResponseParser::new(Limits::default());
    let (_, response) = parser.feed(&all).unwrap();
    let response = response.unwrap_or_else(|| panic!("no whole answer: {all:?}"));
    let value = if response.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&response.body).unwrap()
    };
    (response.status, value)
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// A server of one shard that may send to loopback, with `adjust` applied to its
/// configuration, and the directory it keeps its data in.
fn start(adjust: impl FnOnce(&mut Config)) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        shards: 1,
        ..Config::default()
    };
    config.egress.allow_cidrs.push("127.0.0.0/8".to_string());
    adjust(&mut config);
    (
        Server::start(config, Some(ADMIN_KEY.to_string())).unwrap(),
        dir,
    )
}

/// Creates each tenant of `ids` with the admin key; their keys as `Bearer` values.
fn create_tenants(server: &Server, ids: &[&str]) -> Vec<String> {
    let admin = bearer(ADMIN_KEY);
    ids.iter()
        .map(|id| {
            let (status, created) = call(
                server,
                "POST",
                "/v1/tenants",
                &[("Authorization", admin.as_str())],
                Some(&json!({"id": id})),
            );
            assert_eq!(status, 201, "{created}");
            bearer(created["api_key"].as_str().unwrap())
        })
        .collect()
}

/// Creates a webhook to a closed loopback port as `headers`; the create answer.
fn create_webhook(server: &Server, headers: &[(&str, &str)]) -> Value {
    let (status, webhook) = call(
        server,
        "POST",
        "/v1/webhooks",
        headers,
        Some(&json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"]})),
    );
    assert_eq!(status, 201, "{webhook}");
    webhook
}

#[test]
fn tenants_see_only_their_own_resources() {
    let (server, _dir) = start(|_| {});
    let admin = bearer(ADMIN_KEY);
    let admin = [("Authorization", admin.as_str())];
    let keys = create_tenants(&server, &["acme", "globex"]);
    let acme = [("Authorization", keys[0].as_str())];
    let globex = [("Authorization", keys[1].as_str())];

    // acme's webhook: the create answer has the documented shape.
    let webhook = create_webhook(&server, &acme);
    for key in ["id", "url", "events", "status", "created_at", "secret"] {
        assert!(webhook.get(key).is_some(), "{key} missing from {webhook}");
    }
    let id = webhook["id"].as_str().unwrap().to_string();
    let (status, sent) = call(
        &server,
        "POST",
        &format!("/v1/webhooks/{id}/test"),
        &acme,
        None,
    );
    assert_eq!(status, 202, "{sent}");
    let delivery = sent["delivery_id"].as_str().unwrap().to_string();
    assert!(delivery.starts_with("del_"), "{delivery}");

    // globex, by key or named in Herald-Tenant, sees none of it: 404 everywhere.
    let globex_named = [("Authorization", admin[0].1), ("Herald-Tenant", "globex")];
    let acme_naming_globex = [
        ("Authorization", keys[0].as_str()),
        ("Herald-Tenant", "globex"),
    ];
    let patch = json!({"description": "mine now"});
    let since = json!({"since": "2020-01-01T00:00:00Z"});
    let probes: Vec<(&str, String, Option<&Value>)> = vec![
        ("GET", format!("/v1/webhooks/{id}"), None),
        ("PATCH", format!("/v1/webhooks/{id}"), Some(&patch)),
        ("POST", format!("/v1/webhooks/{id}/secret/rotate"), None),
        ("POST", format!("/v1/webhooks/{id}/test"), None),
        ("GET", format!("/v1/webhooks/{id}/deliveries"), None),
        ("POST", format!("/v1/webhooks/{id}/recover"), Some(&since)),
        ("GET", format!("/v1/deliveries/{delivery}"), None),
        ("POST", format!("/v1/deliveries/{delivery}/retry"), None),
        ("DELETE", format!("/v1/webhooks/{id}"), None),
    ];
    for headers in [&globex[..], &globex_named[..], &acme_naming_globex[..]] {
        for (method, path, body) in &probes {
            let (status, answer) = call(&server, method, path, headers, *body);
            assert_eq!(status, 404, "{method} {path} as {headers:?}: {answer}");
            assert_eq!(answer["error"]["code"], "not_found", "{answer}");
        }
    }
    for headers in [&globex[..], &globex_named[..]] {
        let (status, list) = call(&server, "GET", "/v1/webhooks", headers, None);
        assert_eq!((status, &list["data"]), (200, &json!([])), "{headers:?}");
    }
    // A tenant key naming another tenant is refused whatever the route.
    let (status, _) = call(&server, "GET", "/v1/webhooks", &acme_naming_globex, None);
    assert_eq!(status, 404);

    // A tenant key does not learn that the admin routes exist.
    for (method, path) in [
        ("GET", "/v1/tenants".to_string()),
        ("POST", "/v1/tenants/acme/keys".to_string()),
        ("DELETE", "/v1/tenants/acme/keys/key_0000".to_string()),
    ] {
        let (status, answer) = call(&server, method, &path, &acme, None);
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }

    // The owner, and the admin naming the owner, still see the webhook.
    let acme_named = [("Authorization", admin[0].1), ("Herald-Tenant", "acme")];
    for headers in [&acme[..], &acme_named[..]] {
        let (status, answer) = call(&server, "GET", &format!("/v1/webhooks/{id}"), headers, None);
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = call(
            &server,
            "GET",
            &format!("/v1/deliveries/{delivery}"),
            headers,
            None,
        );
        assert_eq!(status, 200, "{answer}");
    }
    // The admin must name a tenant that exists.
    let (status, _) = call(&server, "GET", "/v1/webhooks", &admin, None);
    assert_eq!(status, 400);
    let nobody = [("Authorization", admin[0].1), ("Herald-Tenant", "nobody")];
    assert_eq!(call(&server, "GET", "/v1/webhooks", &nobody, None).0, 404);

    // Malformed or unknown credentials are 401 with the error shape.
    let long = format!("Bearer {}", "k".repeat(4096));
    let forged = format!("{}x", keys[0]);
    let lower = keys[0].replacen("Bearer", "bearer", 1);
    for (value, expected) in [
        ("Basic YWRtaW46YWRtaW4=", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        (long.as_str(), 401),
        (forged.as_str(), 401),
        ("Bearer hrk_nothex_abc", 401),
        (lower.as_str(), 200),
    ] {
        let (status, answer) = call(
            &server,
            "GET",
            "/v1/webhooks",
            &[("Authorization", value)],
            None,
        );
        assert_eq!(status, expected, "{value:.40}: {answer}");
        if expected == 401 {
            assert_eq!(answer["error"]["code"], "unauthorized", "{answer}");
        }
    }
    let (status, _) = call(&server, "GET", "/v1/webhooks", &[], None);
    assert_eq!(status, 401);
    // Without a key a route's methods are not revealed: 401, not 405. A tenant key
    // finds admin routes absent whatever the method; with a valid key, 405.
    assert_eq!(call(&server, "PUT", "/v1/webhooks", &[], None).0, 401);
    let tenant_key = [("Authorization", keys[0].as_str())];
    assert_eq!(
        call(&server, "PUT", "/v1/tenants", &tenant_key, None).0,
        404
    );
    assert_eq!(
        call(&server, "PUT", "/v1/webhooks", &tenant_key, None).0,
        405
    );
    server.shutdown().unwrap();
}

#[test]
fn a_tenant_is_deleted_once_its_webhooks_are_and_its_keys_die_with_it() {
    let (server, _dir) = start(|config| config.limits.tenants_max = 2);
    let keys = create_tenants(&server, &["acme", "globex"]);
    let admin = bearer(ADMIN_KEY);
    let admin = [("Authorization", admin.as_str())];
    // The cap is reached, and its message says how to make room.
    let (status, full) = call(
        &server,
        "POST",
        "/v1/tenants",
        &admin,
        Some(&json!({"id": "initech"})),
    );
    assert_eq!(status, 409, "{full}");
    assert!(
        full["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DELETE /v1/tenants/{id}"),
        "{full}"
    );

    let acme = [("Authorization", keys[0].as_str())];
    let globex = [("Authorization", keys[1].as_str())];
    let (status, shown) = call(&server, "GET", "/v1/tenants/acme", &admin, None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], "acme");
    assert_eq!(shown["keys"].as_array().map(Vec::len), Some(1), "{shown}");
    assert!(shown["keys"][0].get("sha256").is_none(), "{shown}");

    let webhook = create_webhook(&server, &acme);
    let id = webhook["id"].as_str().unwrap().to_string();
    // Refused while a webhook is left, and the answer names it.
    let (status, refused) = call(&server, "DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "conflict", "{refused}");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains(&id),
        "{refused}"
    );
    assert_eq!(
        call(&server, "GET", "/v1/webhooks", &acme, None).0,
        200,
        "nothing changed"
    );

    // Tenant keys find the route absent, as every admin route.
    assert_eq!(
        call(&server, "DELETE", "/v1/tenants/acme", &acme, None).0,
        404
    );
    assert_eq!(call(&server, "GET", "/v1/tenants/acme", &acme, None).0, 404);
    assert_eq!(
        call(&server, "PATCH", "/v1/tenants/acme", &admin, None).0,
        405
    );

    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        &acme,
        None,
    );
    assert_eq!(status, 204);
    let (status, answer) = call(&server, "DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(status, 204, "{answer}");

    // Gone: its key no longer authenticates, the admin cannot act for it, and it is
    // neither shown nor listed; the other tenant is untouched.
    let (status, answer) = call(&server, "GET", "/v1/webhooks", &acme, None);
    assert_eq!(status, 401, "{answer}");
    let acme_named = [("Authorization", admin[0].1), ("Herald-Tenant", "acme")];
    assert_eq!(
        call(&server, "GET", "/v1/webhooks", &acme_named, None).0,
        404
    );
    assert_eq!(
        call(&server, "GET", "/v1/tenants/acme", &admin, None).0,
        404
    );
    let (status, answer) = call(&server, "DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(
        (status, &answer["error"]["code"]),
        (404, &json!("not_found")),
        "{answer}"
    );
    let (_, list) = call(&server, "GET", "/v1/tenants", &admin, None);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["globex"], "{list}");
    assert_eq!(call(&server, "GET", "/v1/webhooks", &globex, None).0, 200);
    for bad in ["/v1/tenants/..", "/v1/tenants/a%20b", "/v1/tenants/nobody"] {
        let (status, answer) = call(&server, "DELETE", bad, &admin, None);
        assert!(matches!(status, 400 | 404), "{bad}: {status} {answer}");
    }

    // globex goes with its webhooks when asked to (and only with a yes or a no).
    for _ in 0..2 {
        create_webhook(&server, &globex);
    }
    let (status, refused) = call(
        &server,
        "DELETE",
        "/v1/tenants/globex?with_webhooks=maybe",
        &admin,
        None,
    );
    assert_eq!(
        (status, &refused["error"]["field"]),
        (400, &json!("with_webhooks")),
        "{refused}"
    );
    assert_eq!(
        call(
            &server,
            "DELETE",
            "/v1/tenants/globex?with_webhooks=false",
            &admin,
            None
        )
        .0,
        409
    );
    assert_eq!(
        call(&server, "GET", "/v1/webhooks", &globex, None).0,
        200,
        "nothing changed"
    );
    let (status, answer) = call(
        &server,
        "DELETE",
        "/v1/tenants/globex?with_webhooks=true",
        &admin,
        None,
    );
    assert_eq!(status, 204, "{answer}");
    assert_eq!(call(&server, "GET", "/v1/webhooks", &globex, None).0, 401);
    let globex_again = create_tenants(&server, &["globex"]);
    let (status, list) = call(
        &server,
        "GET",
        "/v1/webhooks",
        &[("Authorization", globex_again[0].as_str())],
        None,
    );
    assert_eq!(
        (status, &list["data"]),
        (200, &json!([])),
        "its webhooks went with it: {list}"
    );

    // Its place under the cap is free; made again, it has a new key and the old one
    // stays dead.
    let (status, again) = call(
        &server,
        "POST",
        "/v1/tenants",
        &admin,
        Some(&json!({"id": "acme"})),
    );
    assert_eq!(status, 201, "{again}");
    assert_eq!(call(&server, "GET", "/v1/webhooks", &acme, None).0, 401);
    let renewed = bearer(again["api_key"].as_str().unwrap());
    let (status, list) = call(
        &server,
        "GET",
        "/v1/webhooks",
        &[("Authorization", renewed.as_str())],
        None,
    );
    assert_eq!((status, &list["data"]), (200, &json!([])), "{list}");
    server.shutdown().unwrap();
}

#[test]
fn deliveries_are_found_by_event_within_the_tenant() {
    let (server, _dir) = start(|_| {});
    let keys = create_tenants(&server, &["acme", "globex"]);
    let acme = [("Authorization", keys[0].as_str())];
    let globex = [("Authorization", keys[1].as_str())];
    let webhooks: Vec<String> = (0..2)
        .map(|_| {
            create_webhook(&server, &acme)["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    create_webhook(&server, &globex);
    let events: Vec<String> = (0..3)
        .map(|n| {
            let body =
                json!({"type": "order.created", "id": format!("order-{n}"), "data": {"n": n}});
            let (status, envelope) = call(&server, "POST", "/v1/events", &acme, Some(&body));
            assert_eq!(status, 202, "{envelope}");
            envelope["id"].as_str().unwrap().to_string()
        })
        .collect();
    // globex publishes an event of the same id: its deliveries are globex's alone.
    let body = json!({"type": "order.created", "id": "order-1", "data": {}});
    assert_eq!(
        call(&server, "POST", "/v1/events", &globex, Some(&body)).0,
        202
    );

    let list = |headers: &[(&str, &str)], path: &str| {
        let (status, page) = call(&server, "GET", path, headers, None);
        assert_eq!(status, 200, "{path}: {page}");
        page["data"].as_array().unwrap().clone()
    };
    // Every webhook's delivery of the event, and nothing else (the deliveries are in
    // the log as soon as the event is accepted, pending or not).
    let found = list(&acme, &format!("/v1/deliveries?event_id={}", events[1]));
    let mut to: Vec<&str> = found
        .iter()
        .map(|d| d["webhook_id"].as_str().unwrap())
        .collect();
    to.sort_unstable();
    let mut expected: Vec<&str> = webhooks.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(to, expected, "{found:?}");
    assert!(
        found.iter().all(|d| d["event_id"] == events[1].as_str()),
        "{found:?}"
    );
    // Narrowed to one webhook, by its route or by `webhook_id`.
    for path in [
        format!(
            "/v1/webhooks/{}/deliveries?event_id={}",
            webhooks[0], events[1]
        ),
        format!(
            "/v1/deliveries?webhook_id={}&event_id={}",
            webhooks[0], events[1]
        ),
    ] {
        let found = list(&acme, &path);
        assert_eq!(found.len(), 1, "{path}: {found:?}");
        assert_eq!(found[0]["webhook_id"], webhooks[0].as_str(), "{found:?}");
        assert_eq!(found[0]["event_id"], events[1].as_str(), "{found:?}");
    }
    let found = list(&globex, &format!("/v1/deliveries?event_id={}", events[1]));
    assert_eq!(found.len(), 1, "globex's own event only: {found:?}");
    assert!(list(&acme, "/v1/deliveries?event_id=order-9").is_empty());
    let (status, refused) = call(&server, "GET", "/v1/deliveries?event_id=a%20b", &acme, None);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "event_id", "{refused}");
    server.shutdown().unwrap();
}

#[test]
fn a_tenant_made_with_a_deleted_ones_id_sees_nothing_it_left() {
    let (server, _dir) = start(|_| {});
    let keys = create_tenants(&server, &["acme", "globex"]);
    let admin = bearer(ADMIN_KEY);
    let admin = [("Authorization", admin.as_str())];
    let list = |headers: &[(&str, &str)], path: &str| {
        let (status, page) = call(&server, "GET", path, headers, None);
        assert_eq!(status, 200, "{path}: {page}");
        page["data"].as_array().unwrap().clone()
    };
    let publish = |headers: &[(&str, &str)], key: &str| {
        let body = json!({"type": "order.created", "data": {"n": 1}});
        let headers: Vec<(&str, &str)> = [headers, &[("Idempotency-Key", key)]].concat();
        let (status, envelope) = call(&server, "POST", "/v1/events", &headers, Some(&body));
        assert_eq!(status, 202, "{envelope}");
        envelope["id"].as_str().unwrap().to_string()
    };
    // acme's deliveries are pending (the receiver's port is closed) when it is deleted.
    for key in &keys {
        let tenant = [("Authorization", key.as_str())];
        create_webhook(&server, &tenant);
        publish(&tenant, "order-1");
    }
    let acme = [("Authorization", keys[0].as_str())];
    let old = list(&acme, "/v1/deliveries");
    assert_eq!(old.len(), 1, "{old:?}");
    let old_event = old[0]["event_id"].as_str().unwrap().to_string();
    assert_eq!(
        publish(&acme, "order-1"),
        old_event,
        "a repeat while remembered"
    );

    let (status, answer) = call(
        &server,
        "DELETE",
        "/v1/tenants/acme?with_webhooks=true",
        &admin,
        None,
    );
    assert_eq!(status, 204, "{answer}");
    let again = create_tenants(&server, &["acme"]);
    let acme = [("Authorization", again[0].as_str())];
    assert!(list(&acme, "/v1/deliveries").is_empty());
    let old_id = old[0]["id"].as_str().unwrap();
    assert_eq!(
        call(
            &server,
            "GET",
            &format!("/v1/deliveries/{old_id}"),
            &acme,
            None
        )
        .0,
        404
    );
    assert_ne!(publish(&acme, "order-1"), old_event, "the key is forgotten");
    // globex kept its own.
    let globex = [("Authorization", keys[1].as_str())];
    assert_eq!(list(&globex, "/v1/deliveries").len(), 1);
    server.shutdown().unwrap();
}

/// A webhook that outlived its tenant (left by a request under way when it was deleted)
/// is deleted when a tenant of its id is made again, before the new tenant sees it.
#[test]
fn a_webhook_left_behind_by_a_deleted_tenant_goes_before_its_id_is_used_again() {
    let (server, _dir) = start(|_| {});
    create_tenants(&server, &["acme"]);
    let admin = bearer(ADMIN_KEY);
    let admin = [("Authorization", admin.as_str())];
    let (status, answer) = call(&server, "DELETE", "/v1/tenants/acme", &admin, None);
    assert_eq!(status, 204, "{answer}");
    // What a request authenticated just before the deletion could have left.
    let engine = server.engine();
    let acme = herald::TenantId::parse("acme").unwrap();
    let stray = herald::WebhookSpec::new(
        herald::Url::parse("http://127.0.0.1:9/stray").unwrap(),
        vec![herald::EventFilter::parse("*").unwrap()],
        herald::Scheme::Standard,
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
    );
    engine.create_webhook(&acme, stray).unwrap();
    let again = create_tenants(&server, &["acme"]);
    let (status, list) = call(
        &server,
        "GET",
        "/v1/webhooks",
        &[("Authorization", again[0].as_str())],
        None,
    );
    assert_eq!((status, &list["data"]), (200, &json!([])), "{list}");
    assert!(engine.list_webhooks(&acme).unwrap().is_empty());
    server.shutdown().unwrap();
}
