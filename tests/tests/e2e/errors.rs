//! Every error class the API promises, table-driven: 400, 401, 404, 405, 409, 413, 415,
//! each with the `{"error":{"code","message","field"?}}` shape; and odd bodies on every
//! write route never yield a 5xx.

use herald_e2e::*;
use herald_sink::Sink;
use serde_json::{json, Value};

/// Body limit of this test's server: small, so the 413 case stays cheap.
const BODY_BYTES_MAX: usize = 64 * 1024;

/// Who sends a case.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    Tenant,
    Admin,
    /// `Authorization` exactly as given.
    Header(&'static str),
}

/// One request and what must come back.
#[derive(Debug)]
struct Case {
    name: &'static str,
    who: Who,
    method: &'static str,
    path: String,
    /// `Content-Type`, if sent.
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    /// `error.field`, when the answer must name one.
    field: Option<&'static str>,
    /// A fragment `error.message` must contain.
    message_has: Option<&'static str>,
}

impl Case {
    fn new(name: &'static str, who: Who, method: &'static str, path: &str, status: u16) -> Case {
        Case {
            name,
            who,
            method,
            path: path.to_string(),
            content_type: None,
            body: None,
            headers: Vec::new(),
            status,
            field: None,
            message_has: None,
        }
    }

    /// A JSON body (with `Content-Type: application/json`).
    fn json(mut self, body: &Value) -> Case {
        self.content_type = Some("application/json");
        self.body = Some(serde_json::to_vec(body).expect("JSON serialises"));
        self
    }

    /// Body bytes as given, sent as `application/json`.
    fn raw_json(mut self, body: &str) -> Case {
        self.content_type = Some("application/json");
        self.body = Some(body.as_bytes().to_vec());
        self
    }

    fn content_type(mut self, content_type: Option<&'static str>) -> Case {
        self.content_type = content_type;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.push((name, value.to_string()));
        self
    }

    fn field(mut self, field: &'static str) -> Case {
        self.field = Some(field);
        self
    }

    fn message_has(mut self, fragment: &'static str) -> Case {
        self.message_has = Some(fragment);
        self
    }
}

#[test]
fn error_answers_are_the_promised_ones() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let config = format!(
        "{}\n[limits]\nbody_bytes_max = {BODY_BYTES_MAX}\n",
        crate::FAST_RETRIES
    );
    let server = Server::start(&site, &Options::default().config(&config));
    let admin = server.admin();
    let tenant = create_tenant(&admin, "tenant_errors");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": sink.url("/errors"), "events": ["*"], "secret": standard_secret(3)}),
    );
    let wh = format!("/v1/webhooks/{}", webhook["id"].as_str().expect("id"));
    // For the 409s: a key and a client id already used with another body.
    publish_with_key(
        &tenant,
        "key-conflict",
        &json!({"type": "order.created", "data": {"n": 1}}),
    )
    .expect(202);
    publish(
        &tenant,
        &json!({"type": "order.created", "id": "evt_client-1", "data": {"n": 1}}),
    );
    let url = sink.url("/errors");
    let batch_too_big: Vec<Value> = (0..1001)
        .map(|_| json!({"type": "order.created", "data": {}}))
        .collect();

    use Who::*;
    let cases = vec![
        // 400: malformed JSON, wrong types, missing or bad fields, bad event types, bad URLs.
        Case::new("malformed JSON", Tenant, "POST", "/v1/webhooks", 400).raw_json("{\"url\": "),
        Case::new(
            "JSON array for an object",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .raw_json("[1, 2]"),
        Case::new("url of the wrong type", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": 5, "events": ["order.*"]})),
        Case::new(
            "events of the wrong type",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": url, "events": "order.*"})),
        Case::new("url missing", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"events": ["order.*"]}))
            .field("url"),
        Case::new("events missing", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": url}))
            .field("events"),
        Case::new("events empty", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": url, "events": []}))
            .field("events"),
        Case::new(
            "event filter with a space",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": url, "events": ["order.*", "order created"]}))
        .field("events[1]"),
        Case::new("unknown field", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": url, "events": ["*"], "colour": "red"})),
        Case::new("url not a URL", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": "not a url", "events": ["*"]}))
            .field("url"),
        Case::new("url not http(s)", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": "ftp://example.com/hook", "events": ["*"]}))
            .field("url"),
        Case::new(
            "url to a private address",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": "http://10.0.0.1/x", "events": ["*"]}))
        .field("url")
        .message_has("private"),
        Case::new(
            "url to the metadata service",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": "http://169.254.169.254/latest/meta-data", "events": ["*"]}))
        .field("url"),
        Case::new(
            "standard secret not whsec_",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": url, "events": ["*"], "secret": "your-webhook-secret"}))
        .field("secret")
        .message_has("whsec_"),
        Case::new(
            "unknown signature scheme",
            Tenant,
            "POST",
            "/v1/webhooks",
            400,
        )
        .json(&json!({"url": url, "events": ["*"], "signature": {"scheme": "md5"}}))
        .field("signature.scheme"),
        Case::new("negative retry delay", Tenant, "POST", "/v1/webhooks", 400)
            .json(&json!({"url": url, "events": ["*"], "retry_schedule_s": [-1]}))
            .field("retry_schedule_s"),
        Case::new("PATCH status unknown", Tenant, "PATCH", &wh, 400)
            .json(&json!({"status": "paused"}))
            .field("status"),
        Case::new("PATCH url to a private address", Tenant, "PATCH", &wh, 400)
            .json(&json!({"url": "http://192.168.1.1/x"}))
            .field("url"),
        Case::new("event type with a space", Tenant, "POST", "/v1/events", 400)
            .json(&json!({"type": "order created", "data": {}}))
            .field("type"),
        Case::new(
            "event type with a wildcard",
            Tenant,
            "POST",
            "/v1/events",
            400,
        )
        .json(&json!({"type": "order.*", "data": {}}))
        .field("type"),
        Case::new(
            "event type empty segment",
            Tenant,
            "POST",
            "/v1/events",
            400,
        )
        .json(&json!({"type": "order..created", "data": {}}))
        .field("type"),
        Case::new("event without data", Tenant, "POST", "/v1/events", 400)
            .json(&json!({"type": "order.created"})),
        Case::new("event type not a string", Tenant, "POST", "/v1/events", 400)
            .json(&json!({"type": 7, "data": {}})),
        Case::new("event id with a space", Tenant, "POST", "/v1/events", 400)
            .json(&json!({"type": "order.created", "id": "evt 1", "data": {}}))
            .field("id"),
        Case::new(
            "Idempotency-Key too long",
            Tenant,
            "POST",
            "/v1/events",
            400,
        )
        .json(&json!({"type": "order.created", "data": {}}))
        .header("Idempotency-Key", &"k".repeat(256))
        .field("Idempotency-Key"),
        Case::new("empty batch", Tenant, "POST", "/v1/events/batch", 400)
            .json(&json!({"events": []}))
            .field("events"),
        Case::new("batch over 1000", Tenant, "POST", "/v1/events/batch", 400)
            .json(&json!({"events": batch_too_big}))
            .field("events"),
        Case::new("batch not a list", Tenant, "POST", "/v1/events/batch", 400)
            .json(&json!({"events": 5})),
        Case::new("limit=0", Tenant, "GET", "/v1/webhooks?limit=0", 400).field("limit"),
        Case::new(
            "limit not a number",
            Tenant,
            "GET",
            "/v1/webhooks?limit=ten",
            400,
        )
        .field("limit"),
        Case::new(
            "bad percent-encoding",
            Tenant,
            "GET",
            "/v1/webhooks?limit=%zz",
            400,
        ),
        Case::new(
            "bad cursor",
            Tenant,
            "GET",
            "/v1/webhooks?cursor=%21%21",
            400,
        )
        .field("cursor")
        .message_has("next_cursor"),
        Case::new(
            "an offset's + not encoded in a query",
            Tenant,
            "GET",
            &format!("{wh}/deliveries?since=2026-01-31T12:00:00+01:00"),
            400,
        )
        .field("since")
        .message_has("%2B"),
        Case::new(
            "unknown delivery status",
            Tenant,
            "GET",
            &format!("{wh}/deliveries?status=lost"),
            400,
        )
        .field("status"),
        Case::new(
            "bad event_type filter",
            Tenant,
            "GET",
            &format!("{wh}/deliveries?event_type=a%20b"),
            400,
        )
        .field("event_type"),
        Case::new(
            "rotate grace over a week",
            Tenant,
            "POST",
            &format!("{wh}/secret/rotate"),
            400,
        )
        .json(&json!({"grace_s": 99_999_999}))
        .field("grace_s"),
        Case::new(
            "rotate grace negative",
            Tenant,
            "POST",
            &format!("{wh}/secret/rotate"),
            400,
        )
        .json(&json!({"grace_s": -1})),
        Case::new(
            "recover since not RFC 3339",
            Tenant,
            "POST",
            &format!("{wh}/recover"),
            400,
        )
        .json(&json!({"since": "yesterday"}))
        .field("since"),
        Case::new(
            "test send of an unknown type",
            Tenant,
            "POST",
            &format!("{wh}/test"),
            400,
        )
        .json(&json!({"event_type": "nothing.known"}))
        .field("event_type"),
        Case::new(
            "admin without Herald-Tenant",
            Admin,
            "GET",
            "/v1/webhooks",
            400,
        )
        .field("Herald-Tenant"),
        Case::new("tenant id with a space", Admin, "POST", "/v1/tenants", 400)
            .json(&json!({"id": "bad tenant"}))
            .field("id"),
        Case::new("empty body", Tenant, "POST", "/v1/events", 400).raw_json(""),
        // 401: missing or bad credentials.
        Case::new("no Authorization", Nobody, "GET", "/v1/webhooks", 401),
        Case::new(
            "unknown key",
            Header("Bearer hrt_not-a-key"),
            "GET",
            "/v1/webhooks",
            401,
        ),
        Case::new(
            "Basic instead of Bearer",
            Header("Basic dXNlcjpwYXNz"),
            "GET",
            "/v1/webhooks",
            401,
        ),
        Case::new("empty bearer", Header("Bearer "), "POST", "/v1/events", 401)
            .json(&json!({"type": "order.created", "data": {}})),
        Case::new(
            "bad key on an admin route",
            Header("Bearer hra_wrong"),
            "GET",
            "/v1/tenants",
            401,
        ),
        // 404: unknown routes and ids.
        Case::new("unknown route", Tenant, "GET", "/v1/nope", 404),
        Case::new("root", Nobody, "GET", "/", 404),
        Case::new(
            "unknown webhook",
            Tenant,
            "GET",
            "/v1/webhooks/wh_missing",
            404,
        ),
        Case::new(
            "unknown webhook DELETE",
            Tenant,
            "DELETE",
            "/v1/webhooks/wh_missing",
            404,
        ),
        Case::new(
            "unknown webhook deliveries",
            Tenant,
            "GET",
            "/v1/webhooks/wh_missing/deliveries",
            404,
        ),
        Case::new(
            "unknown delivery",
            Tenant,
            "GET",
            "/v1/deliveries/del_00000000000fffff",
            404,
        ),
        Case::new(
            "delivery id of another form",
            Tenant,
            "GET",
            "/v1/deliveries/nonsense",
            404,
        ),
        Case::new(
            "retry of an unknown delivery",
            Tenant,
            "POST",
            "/v1/deliveries/del_00000000000fffff/retry",
            404,
        )
        .json(&json!({})),
        Case::new(
            "keys of an unknown tenant",
            Admin,
            "POST",
            "/v1/tenants/tenant_nobody/keys",
            404,
        )
        .json(&json!({})),
        // 405: known route, other method.
        Case::new("DELETE /v1/events", Tenant, "DELETE", "/v1/events", 405),
        Case::new("PUT /v1/webhooks", Tenant, "PUT", "/v1/webhooks", 405).json(&json!({})),
        Case::new("POST /healthz", Nobody, "POST", "/healthz", 405).json(&json!({})),
        Case::new(
            "GET /v1/events/batch",
            Tenant,
            "GET",
            "/v1/events/batch",
            405,
        ),
        // 409: conflicts.
        Case::new("tenant exists", Admin, "POST", "/v1/tenants", 409)
            .json(&json!({"id": "tenant_errors"})),
        Case::new(
            "Idempotency-Key reused with another body",
            Tenant,
            "POST",
            "/v1/events",
            409,
        )
        .json(&json!({"type": "order.created", "data": {"n": 2}}))
        .header("Idempotency-Key", "key-conflict"),
        Case::new(
            "client event id reused with another body",
            Tenant,
            "POST",
            "/v1/events",
            409,
        )
        .json(&json!({"type": "order.created", "id": "evt_client-1", "data": {"n": 2}})),
        // 413: body over limits.body_bytes_max.
        Case::new("body over the limit", Tenant, "POST", "/v1/events", 413)
            .json(
                &json!({"type": "order.created", "data": {"pad": "x".repeat(BODY_BYTES_MAX + 1)}}),
            )
            .message_has("body_bytes_max"),
        // 415: not JSON.
        Case::new("text/plain", Tenant, "POST", "/v1/webhooks", 415)
            .json(&json!({"url": url, "events": ["*"]}))
            .content_type(Some("text/plain")),
        Case::new("form encoded", Tenant, "POST", "/v1/events", 415)
            .json(&json!({"type": "order.created", "data": {}}))
            .content_type(Some("application/x-www-form-urlencoded")),
        Case::new("no Content-Type", Tenant, "POST", "/v1/events", 415)
            .json(&json!({"type": "order.created", "data": {}}))
            .content_type(None),
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let client = match case.who {
            Nobody => server.client(),
            Tenant => tenant.clone(),
            Admin => admin.clone(),
            Header(_) => server.client(),
        };
        let mut headers = case.headers.clone();
        if let Some(content_type) = case.content_type {
            headers.push(("Content-Type", content_type.to_string()));
        }
        if let Header(value) = case.who {
            headers.push(("Authorization", value.to_string()));
        }
        let answer = client.request(Req {
            method: case.method,
            path: &case.path,
            headers,
            body: case.body.clone(),
        });
        if let Some(problem) = check(case, &answer) {
            failures.push(format!(
                "{} ({} {}): {problem}; got {} {}",
                case.name,
                case.method,
                case.path.chars().take(80).collect::<String>(),
                answer.status,
                answer.text().chars().take(300).collect::<String>()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // The controls: just under the body limit, and JSON with a charset, are accepted.
    let padding = "x".repeat(BODY_BYTES_MAX - 200);
    let near = tenant.post(
        "/v1/events",
        &json!({"type": "order.created", "data": {"pad": padding}}),
    );
    assert_eq!(near.status, 202, "a body under the limit: {}", near.text());
    let charset = tenant.request(Req {
        method: "POST",
        path: "/v1/events",
        headers: vec![(
            "Content-Type",
            "application/json; charset=utf-8".to_string(),
        )],
        body: Some(br#"{"type":"order.created","data":{}}"#.to_vec()),
    });
    assert_eq!(charset.status, 202, "{}", charset.text());
    // A batch mixing good and bad items answers per item.
    let batch = tenant
        .post(
            "/v1/events/batch",
            &json!({"events": [
                {"type": "order.created", "data": {"i": 0}},
                {"type": "bad type", "data": {}},
                {"type": "order.created"},
                {"type": "order.updated", "data": {"i": 3}},
            ]}),
        )
        .expect(200);
    let statuses: Vec<u64> = batch["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|item| item["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [202, 400, 400, 202], "{batch}");
    assert!(batch["data"][0]["event"]["id"].is_string(), "{batch}");
    assert!(batch["data"][1]["error"]["code"].is_string(), "{batch}");
}

/// What is wrong with `answer` for `case`, if anything.
fn check(case: &Case, answer: &Resp) -> Option<String> {
    if answer.status >= 500 {
        return Some("a 5xx for bad input".into());
    }
    if answer.status != case.status {
        return Some(format!("expected {}", case.status));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&answer.body) else {
        return Some("the body is not JSON".into());
    };
    let error = &body["error"];
    let (Some(code), Some(message)) = (error["code"].as_str(), error["message"].as_str()) else {
        return Some("not the {\"error\":{\"code\",\"message\"}} shape".into());
    };
    if code.is_empty() || message.is_empty() {
        return Some("empty code or message".into());
    }
    if let Some(field) = case.field {
        if error["field"] != field {
            return Some(format!("expected error.field {field:?}"));
        }
    }
    if let Some(fragment) = case.message_has {
        if !message.contains(fragment) {
            return Some(format!("the message does not mention {fragment:?}"));
        }
    }
    if case.status == 405 && answer.header("allow").is_none() {
        return Some("a 405 without Allow".into());
    }
    None
}

/// `POST /v1/events` with an `Idempotency-Key`.
fn publish_with_key(tenant: &Client, key: &str, event: &Value) -> Resp {
    tenant.json_request(
        "POST",
        "/v1/events",
        event,
        vec![("Idempotency-Key", key.to_string())],
    )
}

#[test]
fn odd_bodies_never_yield_a_5xx() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(&site, &Options::default().config(crate::FAST_RETRIES));
    let admin = server.admin();
    let tenant = create_tenant(&admin, "tenant_odd");
    let webhook = create_webhook(
        &tenant,
        &json!({"url": sink.url("/odd"), "events": ["*"], "secret": standard_secret(4)}),
    );
    let wh = format!("/v1/webhooks/{}", webhook["id"].as_str().expect("id"));
    let deep_array = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let bodies: Vec<String> = vec![
        String::new(),
        "null".into(),
        "0".into(),
        "-1e999".into(),
        "\"text\"".into(),
        "[]".into(),
        "{}".into(),
        "{\"url\":".into(),
        "{\"url\": null, \"events\": null}".into(),
        "{\"events\": [\"\"]}".into(),
        "{\"type\": \"\", \"data\": null}".into(),
        "{\"type\": \"a.b\", \"data\": 1, \"id\": \"\"}".into(),
        "{\"events\": [{}]}".into(),
        "{\"since\": \"9999-99-99T99:99:99Z\"}".into(),
        "{\"grace_s\": 1e300}".into(),
        "\u{0}\u{1}\u{2}".into(),
        "\u{feff}{}".into(),
        deep_array,
        deep_object,
    ];
    let routes: Vec<(&Client, &str, String)> = vec![
        (&tenant, "POST", "/v1/webhooks".into()),
        (&tenant, "PATCH", wh.clone()),
        (&tenant, "POST", format!("{wh}/secret/rotate")),
        (&tenant, "POST", format!("{wh}/test")),
        (&tenant, "POST", format!("{wh}/recover")),
        (&tenant, "POST", "/v1/events".into()),
        (&tenant, "POST", "/v1/events/batch".into()),
        (&admin, "POST", "/v1/tenants".into()),
    ];
    let mut failures = Vec::new();
    for (client, method, path) in &routes {
        for body in &bodies {
            let answer = client.request(Req {
                method,
                path,
                headers: vec![("Content-Type", "application/json".to_string())],
                body: Some(body.as_bytes().to_vec()),
            });
            let shaped = answer.status < 400 || {
                let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
                json["error"]["code"].is_string() && json["error"]["message"].is_string()
            };
            if answer.status >= 500 || !shaped {
                failures.push(format!(
                    "{method} {path} with {:?}: {} {}",
                    body.chars().take(40).collect::<String>(),
                    answer.status,
                    answer.text().chars().take(200).collect::<String>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad input answered badly:\n{}",
        failures.join("\n")
    );
    // The server is still healthy.
    assert_eq!(
        server.client().get("/healthz").expect(200),
        json!({"status": "ok"})
    );
}
