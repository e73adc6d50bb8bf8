//! Inbound webhooks (`POST /v1/inbound/{source}`) signed by the providers' own
//! libraries: a payment-provider event signed with the Python `stripe` package's
//! signature routine, and a Standard Webhooks event signed with the `standardwebhooks`
//! package, each delivered on to a subscribed webhook exactly once (a replay is answered
//! as a duplicate), plus every rejection: bad signature, stale timestamp, unknown source,
//! unmapped type (accepted and dropped), unknown tenant.

use std::process::Command;
use std::sync::OnceLock;

use herald_e2e::*;
use herald_sink::Sink;
use serde_json::{json, Value};

const STRIPE_SECRET: &str = "whsec_inbound_test_secret_0123456789";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(crate) fn config() -> String {
    format!(
        r#"{}
[inbound.payments]
scheme = "stripe"
secret = "{STRIPE_SECRET}"
tenant_path = "data.object.metadata.tenant_id"
[inbound.payments.types]
"payment_intent.succeeded" = "payment.captured"
"charge.refunded" = "payment.refunded"

[inbound.orders]
scheme = "standard"
secret = "{STANDARD_SECRET}"
tenant = "tenant_in"
[inbound.orders.types]
"order.placed" = "order.created"

[inbound.{LONG_SOURCE}]
scheme = "standard"
secret = "{STANDARD_SECRET}"
tenant = "tenant_in"
[inbound.{LONG_SOURCE}.types]
"order.placed" = "order.created"
"#,
        crate::FAST_RETRIES
    )
}

/// A source name of 60 characters: with a provider id of 200, `in:{source}:{id}` would
/// be longer than an idempotency key may be.
const LONG_SOURCE: &str = "orders_from_the_point_of_sale_of_the_flagship_restaurant_xyz";

/// Installs the providers' Python libraries once (PyPI is reachable from CI).
fn python_ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let have = Command::new("python3")
            .args(["-c", "import stripe, standardwebhooks"])
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "stripe",
                    "standardwebhooks",
                ])
                .status()
                .expect("python3 -m pip runs (install python3-pip)");
            assert!(
                status.success(),
                "pip could not install stripe and standardwebhooks"
            );
        }
    });
}

/// Runs a Python snippet with `payload` on stdin; returns its stdout, trimmed.
fn python(snippet: &str, args: &[&str], payload: &str) -> String {
    python_ready();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(snippet)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload.as_bytes())
        .expect("payload written");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `Stripe-Signature` for `payload` at `age_s` seconds ago, made by the `stripe` package.
pub(crate) fn stripe_header(payload: &str, age_s: i64) -> String {
    python(
        "import stripe, sys, time\n\
         payload = sys.stdin.read()\n\
         t = int(time.time()) - int(sys.argv[2])\n\
         sig = stripe.WebhookSignature._compute_signature('%d.%s' % (t, payload), sys.argv[1])\n\
         print('t=%d,v1=%s' % (t, sig))",
        &[STRIPE_SECRET, &age_s.to_string()],
        payload,
    )
}

/// Standard Webhooks headers (id, timestamp, signature) made by `standardwebhooks`.
fn standard_headers(id: &str, payload: &str) -> Vec<(&'static str, String)> {
    let line = python(
        "import standardwebhooks, sys, datetime\n\
         payload = sys.stdin.read()\n\
         now = datetime.datetime.now(tz=datetime.timezone.utc)\n\
         sig = standardwebhooks.Webhook(sys.argv[1]).sign(sys.argv[2], now, payload)\n\
         print('%d %s' % (int(now.timestamp()), sig))",
        &[STANDARD_SECRET, id],
        payload,
    );
    let (timestamp, signature) = line.split_once(' ').expect("timestamp and signature");
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature.to_string()),
    ]
}

pub(crate) fn post_inbound(
    server: &Server,
    source: &str,
    payload: &str,
    headers: Vec<(&str, String)>,
) -> Resp {
    let mut headers = headers;
    headers.push(("Content-Type", "application/json".to_string()));
    server.client().request(Req {
        method: "POST",
        path: &format!("/v1/inbound/{source}"),
        headers,
        body: Some(payload.as_bytes().to_vec()),
    })
}

pub(crate) fn payment_event(id: &str, kind: &str, tenant: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "data": {"object": {
            "id": "pi_3Nx", "object": "payment_intent", "amount": 2599, "currency": "usd",
            "metadata": {"tenant_id": tenant, "order_id": "ord_1001"}
        }}
    })
    .to_string()
}

/// A server with the sources of [`config`], and tenant `tenant_in` with a webhook of
/// `events` to a receiver's `/in`.
fn receiving(site: &Site, events: Value) -> (Sink, Server, Client) {
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(site, &Options::default().config(&config()));
    let tenant = create_tenant(&server.admin(), "tenant_in");
    create_webhook(&tenant, &json!({"url": sink.url("/in"), "events": events}));
    (sink, server, tenant)
}

#[test]
fn provider_signed_events_become_platform_events_once() {
    let site = Site::new();
    let (sink, server, _tenant) = receiving(&site, json!(["payment.*", "order.*"]));

    // The payment provider's event, signed by its own library, delivered once.
    let payload = payment_event("evt_1NxPay", "payment_intent.succeeded", "tenant_in");
    let header = stripe_header(&payload, 0);
    let first = post_inbound(
        &server,
        "payments",
        &payload,
        vec![("Stripe-Signature", header.clone())],
    )
    .expect(200);
    assert_eq!(first["status"], "accepted", "{first}");
    assert_eq!(first["type"], "payment.captured", "{first}");
    let event_id = first["event_id"].as_str().expect("event_id").to_string();
    let received = wait_received(&sink, "/in", &event_id);
    let body: Value = serde_json::from_slice(&received[0].body).expect("envelope");
    assert_eq!(body["type"], "payment.captured", "{body}");
    assert_eq!(
        body["data"]["id"], "pi_3Nx",
        "the provider's object is the data: {body}"
    );
    // The provider retries: the same event is a duplicate, never a second fan-out.
    let again = post_inbound(
        &server,
        "payments",
        &payload,
        vec![("Stripe-Signature", header)],
    )
    .expect(200);
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["event_id"], event_id.as_str(), "{again}");

    // A Standard Webhooks sender.
    let order = json!({"type": "order.placed", "data": {"order_id": "ord_2002", "total": 1200}})
        .to_string();
    let accepted = post_inbound(
        &server,
        "orders",
        &order,
        standard_headers("msg_2002", &order),
    )
    .expect(200);
    assert_eq!(accepted["type"], "order.created", "{accepted}");
    let order_event = accepted["event_id"].as_str().expect("event_id").to_string();
    wait_received(&sink, "/in", &order_event);

    // Unmapped types are accepted and dropped.
    let other = payment_event("evt_1NxOther", "customer.created", "tenant_in");
    let ignored = post_inbound(
        &server,
        "payments",
        &other,
        vec![("Stripe-Signature", stripe_header(&other, 0))],
    )
    .expect(200);
    assert_eq!(ignored["status"], "ignored", "{ignored}");

    // Rejections, each with a reason.
    let tampered = payload.replace("2599", "1");
    // (case, source, body, headers, status)
    type Case<'a> = (&'a str, &'a str, String, Vec<(&'a str, String)>, u16);
    let cases: Vec<Case<'_>> = vec![
        (
            "bad signature",
            "payments",
            tampered.clone(),
            vec![("Stripe-Signature", stripe_header(&payload, 0))],
            401,
        ),
        (
            "stale timestamp",
            "payments",
            payload.clone(),
            vec![("Stripe-Signature", stripe_header(&payload, 3600))],
            401,
        ),
        ("no signature", "payments", payload.clone(), Vec::new(), 401),
        (
            "unknown source",
            "nope",
            payload.clone(),
            vec![("Stripe-Signature", stripe_header(&payload, 0))],
            404,
        ),
        (
            "unknown tenant",
            "payments",
            payment_event("evt_1NxGhost", "charge.refunded", "tenant_ghost"),
            Vec::new(),
            400,
        ),
        (
            "wrong standard secret",
            "orders",
            order.clone(),
            standard_headers("msg_2002", &order.replace("1200", "1")),
            401,
        ),
    ];
    for (name, source, body, mut headers, status) in cases {
        if name == "unknown tenant" {
            headers.push(("Stripe-Signature", stripe_header(&body, 0)));
        }
        let answer = post_inbound(&server, source, &body, headers);
        assert_eq!(answer.status, status, "{name}: {}", answer.text());
        assert!(
            !answer.error_message().is_empty(),
            "{name}: a reason is given"
        );
    }
    // A header the signature is read from, sent twice, is refused.
    let twice = post_inbound(
        &server,
        "payments",
        &payload,
        vec![
            ("Stripe-Signature", stripe_header(&payload, 0)),
            ("Stripe-Signature", stripe_header(&payload, 0)),
        ],
    );
    assert_eq!(twice.status, 401, "{}", twice.text());
    assert!(
        twice.error_message().contains("not several"),
        "{}",
        twice.text()
    );
    // Exactly the two accepted events reached the receiver.
    let delivered = sink.requests_to("/in");
    assert_eq!(delivered.len(), 2, "one delivery per accepted event");
    let metrics = server.client().get("/metrics").text();
    assert!(
        metrics.contains("herald_inbound_requests_total{source=\"payments\",result=\"rejected\"}"),
        "{metrics}"
    );
}

/// The data is published as the provider signed it: numbers past 64 bits keep every
/// digit. A provider id that makes too long a key is still de-duplicated. A tenant's own
/// keys and event ids cannot take an inbound event's key first.
#[test]
fn inbound_data_keys_and_the_tenants_keys_stay_apart() {
    let site = Site::new();
    let (sink, server, tenant) = receiving(&site, json!(["order.*"]));
    let big = "123456789012345678901234567890";
    let order = format!(r#"{{"type":"order.placed","data":{{"total":{big},"items":[1,2]}}}}"#);
    let long_id = format!("msg_{}", "7".repeat(196));
    assert_eq!(long_id.len(), 200);
    let first = post_inbound(
        &server,
        LONG_SOURCE,
        &order,
        standard_headers(&long_id, &order),
    )
    .expect(200);
    assert_eq!(first["status"], "accepted", "{first}");
    let event_id = first["event_id"].as_str().expect("event_id").to_string();
    let received = wait_received(&sink, "/in", &event_id);
    let body = String::from_utf8_lossy(&received[0].body).to_string();
    assert!(
        body.contains(&format!(r#""data":{{"total":{big},"items":[1,2]}}"#)),
        "the data as signed: {body}"
    );
    let again = post_inbound(
        &server,
        LONG_SOURCE,
        &order,
        standard_headers(&long_id, &order),
    )
    .expect(200);
    assert_eq!(again["status"], "duplicate", "{again}");
    assert_eq!(again["event_id"], event_id.as_str(), "{again}");
    // The inbound keys' prefix is not the tenant's to use, as a key or as an event id.
    let event = json!({"type": "order.created", "data": {"n": 1}});
    let keyed = tenant.json_request(
        "POST",
        "/v1/events",
        &event,
        vec![("Idempotency-Key", "in:orders:msg_3003".to_string())],
    );
    assert_eq!(keyed.status, 400, "{}", keyed.text());
    assert!(keyed.text().contains("Idempotency-Key"), "{}", keyed.text());
    let with_id = tenant.post(
        "/v1/events",
        &json!({"id": "in:orders:msg_3003", "type": "order.created", "data": {"n": 1}}),
    );
    assert_eq!(with_id.status, 400, "{}", with_id.text());
    // The provider's event with that id is its own.
    let order = json!({"type": "order.placed", "data": {"order_id": "ord_3003"}}).to_string();
    let accepted = post_inbound(
        &server,
        "orders",
        &order,
        standard_headers("msg_3003", &order),
    )
    .expect(200);
    assert_eq!(accepted["status"], "accepted", "{accepted}");
}
