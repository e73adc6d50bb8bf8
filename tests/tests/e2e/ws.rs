//! The event stream, `GET /v1/ws`, driven with a real WebSocket client (`tungstenite`):
//! subscribing with an API key (header or subprotocol) or a JWT (HS256 and RS256),
//! filters (types and locations), the message format (the webhook body plus `seq`),
//! disconnect and resume with `after`, tenant isolation, every refusal, the per-tenant
//! connection cap, a slow consumer cut off while another keeps up, resume outside the
//! replay window, resume after a restart, the close on shutdown, and a Stripe-signed
//! inbound event reaching both a webhook and a stream client.

use std::net::TcpStream;
use std::time::Duration;

use herald_e2e::*;
use herald_sink::Sink;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

const JWT_SECRET: &str = "e2e-ws-jwt-secret-0123456789abcdef";
const RSA_PRIVATE_PEM: &str = include_str!("fixtures/ws-jwt-test-rsa.pem");
const RSA_PUBLIC_PEM: &str = include_str!("fixtures/ws-jwt-test-rsa.pub.pem");
/// How long a test waits for one frame; far above any real delay.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

type Ws = WebSocket<TcpStream>;

/// How a client presents its credential.
#[derive(Clone, Copy)]
enum Auth<'a> {
    Bearer(&'a str),
    Protocol(&'a str),
    Nothing,
}

/// Opens a stream; `Err` holds the HTTP status and body of a refused handshake.
fn connect(
    server: &Server,
    query: &str,
    auth: Auth<'_>,
) -> Result<(Ws, Option<String>), (u16, String)> {
    connect_with(server, query, auth, &[])
}

fn connect_with(
    server: &Server,
    query: &str,
    auth: Auth<'_>,
    headers: &[(&'static str, &str)],
) -> Result<(Ws, Option<String>), (u16, String)> {
    let url = format!("ws://{}/v1/ws{query}", server.addr());
    let mut request = url.into_client_request().expect("a valid ws URL");
    let set = |request: &mut tungstenite::handshake::client::Request,
               name: &'static str,
               value: String| {
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).expect("header value"));
    };
    match auth {
        Auth::Bearer(token) => set(&mut request, "authorization", format!("Bearer {token}")),
        Auth::Protocol(token) => set(
            &mut request,
            "sec-websocket-protocol",
            format!("herald.v1, bearer.{token}"),
        ),
        Auth::Nothing => {}
    }
    for (name, value) in headers {
        set(&mut request, name, value.to_string());
    }
    let stream = TcpStream::connect(server.addr()).expect("the server accepts");
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .expect("timeout set");
    match tungstenite::client::client(request, stream) {
        Ok((ws, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii").to_string());
            Ok((ws, protocol))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("handshake failed: {other}"),
    }
}

/// The next event message, answering pings on the way.
fn next_event(ws: &mut Ws) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return serde_json::from_str(text.as_str()).expect("a message is JSON")
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected an event, got {other:?}"),
            Err(error) => panic!("expected an event, the stream failed: {error}"),
        }
    }
}

/// Reads until the server's close frame; returns its code and reason.
fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Message::Close(None)) => panic!("closed without a code"),
            Ok(Message::Text(text)) => panic!("expected a close, got an event: {text}"),
            Ok(_) => continue,
            Err(error) => panic!("expected a close frame, the stream failed: {error}"),
        }
    }
}

fn jwt(algorithm: Algorithm, claims: &Value) -> String {
    let key = match algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("RSA key"),
        other => panic!("no key for {other:?}"),
    };
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key).expect("token signed")
}

fn ws_config(extra: &str) -> String {
    format!(
        "[ws]\njwt_secret = \"{JWT_SECRET}\"\njwt_public_key_pem = \"\"\"\n{RSA_PUBLIC_PEM}\"\"\"\n{extra}"
    )
}

/// Creates a tenant; returns its API key and client.
fn tenant(server: &Server, id: &str) -> (String, Client) {
    let created = server
        .admin()
        .post("/v1/tenants", &json!({ "id": id }))
        .expect(201);
    let key = created["api_key"].as_str().expect("api_key").to_string();
    (key.clone(), server.client().key(&key))
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = server.client().get("/metrics").text();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in metrics:\n{text}"))
}

fn seq(message: &Value) -> u64 {
    message["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {message}"))
}

#[test]
fn clients_subscribe_filter_resume_and_stay_within_their_tenant() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let server = Server::start(
        &site,
        &Options::default().config(&ws_config("connections_per_tenant_max = 4\n")),
    );
    let (key, acme) = tenant(&server, "acme_ws");
    let (other_key, other) = tenant(&server, "other_ws");
    create_webhook(&acme, &json!({"url": sink.url("/all"), "events": ["*"]}));
    let exp = now_s() + 600;

    let (mut filtered, _) = connect(
        &server,
        "?events=order.*,kds.ticket.bumped&location_id=loc_1",
        Auth::Bearer(&key),
    )
    .expect("a key as bearer token");
    let (mut browser, protocol) =
        connect(&server, "", Auth::Protocol(&key)).expect("a key as subprotocol");
    assert_eq!(
        protocol.as_deref(),
        Some("herald.v1"),
        "the agreed subprotocol is echoed"
    );
    let rs256 = jwt(
        Algorithm::RS256,
        &json!({"tenant_id": "acme_ws", "exp": exp}),
    );
    let (mut by_rsa, _) = connect(&server, "", Auth::Bearer(&rs256)).expect("an RS256 JWT");
    let hs256 = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "other_ws", "exp": exp}),
    );
    let (mut other_stream, _) = connect(&server, "", Auth::Protocol(&hs256)).expect("an HS256 JWT");

    let events = [
        ("order.created", Some("loc_1")),
        ("order.created", Some("loc_2")),
        ("kds.ticket.bumped", Some("loc_1")),
        ("payment.captured", Some("loc_1")),
        ("order.paid", None),
    ];
    let mut ids = Vec::new();
    for (n, (event_type, location)) in events.iter().enumerate() {
        let mut event = json!({"type": event_type, "data": {"n": n}});
        if let Some(location) = location {
            event["location_id"] = json!(location);
        }
        ids.push(
            publish(&acme, &event)["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let other_id = publish(&other, &json!({"type": "order.created", "data": {}}))["id"].clone();

    // Every client of the tenant gets every event, in order, with a growing seq; the
    // message is the webhook body plus seq.
    let mut all = Vec::new();
    for id in &ids {
        let message = next_event(&mut by_rsa);
        assert_eq!(message["id"], id.as_str(), "{message}");
        assert_eq!(message["tenant_id"], "acme_ws", "{message}");
        all.push(message);
    }
    assert!(all.windows(2).all(|w| seq(&w[0]) < seq(&w[1])), "{all:?}");
    let delivered = wait_received(&sink, "/all", &ids[0]);
    let mut webhook_body = body_json(&delivered[0]);
    webhook_body["seq"] = all[0]["seq"].clone();
    assert_eq!(
        all[0], webhook_body,
        "the message is the webhook body plus seq"
    );

    // Filters: order.* and kds.ticket.bumped, at loc_1 only.
    let got: Vec<Value> = (0..2).map(|_| next_event(&mut filtered)).collect();
    assert_eq!(got[0]["id"], ids[0].as_str());
    assert_eq!(got[1]["id"], ids[2].as_str());

    // Another tenant's stream sees only its own event.
    let mine = next_event(&mut other_stream);
    assert_eq!(mine["id"], other_id, "{mine}");

    // Disconnect after two, miss the rest, resume with after.
    let first = next_event(&mut browser);
    let second = next_event(&mut browser);
    assert_eq!(second["id"], ids[1].as_str());
    browser.close(None).expect("close sent");
    let _ = browser.read();
    let late = publish(
        &acme,
        &json!({"type": "order.created", "location_id": "loc_1", "data": {}}),
    )["id"]
        .clone();
    let (mut resumed, _) = connect(
        &server,
        &format!("?after={}", seq(&second)),
        Auth::Protocol(&key),
    )
    .expect("resume");
    for id in ids[2..].iter().map(|id| json!(id)).chain([late.clone()]) {
        assert_eq!(next_event(&mut resumed)["id"], id);
    }
    assert!(seq(&first) < seq(&second));
    // The filtered client got the late one too; the other tenant did not.
    assert_eq!(next_event(&mut filtered)["id"], late);

    // The tenant's cap: 4 open (filtered, by_rsa, resumed + one more), the fifth refused.
    // The closed one's slot is given back once the server has seen its close.
    wait_for("the closed stream to be released", READ_TIMEOUT, || {
        (metric(&server, "herald_ws_clients ") == 4.0).then_some(())
    });
    let (_fourth, _) = connect(&server, "", Auth::Bearer(&key)).expect("the fourth fits");
    let (status, body) =
        connect(&server, "", Auth::Bearer(&key)).expect_err("the fifth is refused");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("ws.connections_per_tenant_max"), "{body}");

    // Refusals, each an HTTP answer with a reason.
    let expired = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "acme_ws", "exp": now_s() - 3600}),
    );
    let forged = {
        let mut parts: Vec<String> = hs256.split('.').map(str::to_string).collect();
        parts[2] = jwt(Algorithm::HS256, &json!({"tenant_id": "x", "exp": exp}))
            .rsplit('.')
            .next()
            .expect("signature")
            .to_string();
        parts.join(".")
    };
    let ghost = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "ghost_ws", "exp": exp}),
    );
    let no_claim = jwt(Algorithm::RS256, &json!({"sub": "acme_ws", "exp": exp}));
    // (case, query, credential, extra headers, status, text in the answer)
    type Case<'a> = (
        &'a str,
        &'a str,
        Auth<'a>,
        Vec<(&'static str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "no credential",
            "",
            Auth::Nothing,
            vec![],
            401,
            "Authorization",
        ),
        (
            "bad key",
            "",
            Auth::Bearer("hk_nope_nope"),
            vec![],
            401,
            "not valid",
        ),
        (
            "bad key as subprotocol",
            "",
            Auth::Protocol("hk_nope_nope"),
            vec![],
            401,
            "not valid",
        ),
        (
            "expired JWT",
            "",
            Auth::Bearer(&expired),
            vec![],
            401,
            "expired",
        ),
        (
            "forged JWT",
            "",
            Auth::Bearer(&forged),
            vec![],
            401,
            "signature",
        ),
        (
            "JWT without the tenant claim",
            "",
            Auth::Bearer(&no_claim),
            vec![],
            401,
            "tenant_id",
        ),
        (
            "JWT for an unknown tenant",
            "",
            Auth::Bearer(&ghost),
            vec![],
            404,
            "ghost_ws",
        ),
        (
            "another tenant's stream",
            "",
            Auth::Bearer(&key),
            vec![("herald-tenant", "other_ws")],
            404,
            "other_ws",
        ),
        (
            "a JWT naming another tenant",
            "",
            Auth::Bearer(&hs256),
            vec![("herald-tenant", "acme_ws")],
            404,
            "acme_ws",
        ),
        (
            "bad filter",
            "?events=order.**",
            Auth::Bearer(&other_key),
            vec![],
            400,
            "events",
        ),
        (
            "bad location",
            "?location_id=a%20b",
            Auth::Bearer(&other_key),
            vec![],
            400,
            "location_id",
        ),
        (
            "bad after",
            "?after=last",
            Auth::Bearer(&other_key),
            vec![],
            400,
            "after",
        ),
        (
            "unknown parameter",
            "?event=order.*",
            Auth::Bearer(&other_key),
            vec![],
            400,
            "event",
        ),
        (
            "subprotocols without herald.v1",
            "",
            Auth::Nothing,
            vec![("sec-websocket-protocol", "chat")],
            400,
            "herald.v1",
        ),
        (
            "two credentials",
            "",
            Auth::Bearer(&key),
            vec![("sec-websocket-protocol", "herald.v1, bearer.x")],
            401,
            "once",
        ),
    ];
    for (name, query, auth, headers, status, text) in cases {
        let (got, body) = connect_with(&server, query, auth, &headers)
            .err()
            .unwrap_or_else(|| panic!("{name}: the handshake was accepted"));
        assert_eq!(got, status, "{name}: {body}");
        assert!(body.contains(text), "{name}: {body}");
    }
    // Not a WebSocket handshake at all.
    let plain = server.client().key(&key).get("/v1/ws");
    assert_eq!(plain.status, 426, "{}", plain.text());
    assert_eq!(plain.header("upgrade"), Some("websocket"));
    let post = server.client().key(&key).post("/v1/ws", &json!({}));
    assert_eq!(post.status, 405, "{}", post.text());

    assert_eq!(metric(&server, "herald_ws_clients "), 5.0);
    assert!(metric(&server, "herald_ws_messages_sent_total ") >= 16.0);
}

/// Bytes a TCP connection can hold that its reader never reads: the sender's largest
/// send buffer (`tcp_wmem` max) plus the receiver's initial receive buffer (`tcp_rmem`
/// default; it grows only as the application reads).
fn socket_buffer_bytes() -> usize {
    let field = |path: &str, index: usize| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.split_whitespace().nth(index)?.parse::<usize>().ok())
    };
    let send_max = field("/proc/sys/net/ipv4/tcp_wmem", 2).unwrap_or(4 << 20);
    let receive = field("/proc/sys/net/ipv4/tcp_rmem", 1).unwrap_or(128 << 10);
    send_max + receive
}

#[test]
fn a_slow_consumer_is_cut_off_while_another_keeps_up() {
    let site = Site::new();
    let server = Server::start(
        &site,
        &Options::default().config(&ws_config("send_queue_max = 4\n")),
    );
    let (key, acme) = tenant(&server, "acme_slow");
    let (mut slow, _) = connect(&server, "", Auth::Bearer(&key)).expect("slow client");
    let (mut fast, _) = connect(&server, "", Auth::Bearer(&key)).expect("fast client");
    // Large events, so that the slow client's socket buffers fill with a few dozen:
    // twice what the kernel lets the server's send buffer grow to plus a receive buffer
    // nobody reads (about 50 events with Linux's defaults).
    const FILLER_BYTES: usize = 200 * 1024;
    let events = (2 * socket_buffer_bytes() / FILLER_BYTES + 8).clamp(20, 400);
    let reader = std::thread::spawn(move || {
        (0..events)
            .map(|_| seq(&next_event(&mut fast)))
            .collect::<Vec<u64>>()
    });
    let filler = "x".repeat(FILLER_BYTES);
    for n in 0..events {
        publish(
            &acme,
            &json!({"type": "order.created", "data": {"n": n, "filler": filler}}),
        );
    }
    let fast_seqs = reader.join().expect("the fast client read every event");
    assert_eq!(fast_seqs.len(), events);
    // The slow client now reads: what was buffered, then the close naming its resume point.
    let mut received = Vec::new();
    let (code, reason) = loop {
        match slow.read() {
            Ok(Message::Text(text)) => {
                let message: Value = serde_json::from_str(text.as_str()).expect("JSON");
                received.push(seq(&message));
            }
            Ok(Message::Close(Some(frame))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(_) => continue,
            Err(error) => panic!("the slow client expected a close frame: {error}"),
        }
    };
    assert_eq!(code, 4001, "{reason}");
    assert!(received.len() < events, "the slow client was cut off early");
    let last = *received.last().expect("some events arrived before the cut");
    assert!(reason.contains(&format!("after={last}")), "{reason}");
    assert_eq!(
        received,
        fast_seqs[..received.len()],
        "no gap before the cut"
    );
    // It resumes where it stopped and gets the rest.
    let (mut resumed, _) =
        connect(&server, &format!("?after={last}"), Auth::Bearer(&key)).expect("resume");
    for expected in &fast_seqs[received.len()..] {
        assert_eq!(seq(&next_event(&mut resumed)), *expected);
    }
    assert_eq!(
        metric(&server, "herald_ws_slow_consumer_closes_total "),
        1.0
    );
}

#[test]
fn resume_outside_the_window_is_refused_and_the_window_survives_a_restart() {
    let site = Site::new();
    let options = Options::default().config(&ws_config("replay_events_max = 3\n"));
    let server = Server::start(&site, &options);
    let (key, acme) = tenant(&server, "acme_window");
    let (mut live, _) = connect(&server, "", Auth::Bearer(&key)).expect("subscribe");
    for n in 0..5 {
        publish(&acme, &json!({"type": "order.created", "data": {"n": n}}));
    }
    let seqs: Vec<u64> = (0..5).map(|_| seq(&next_event(&mut live))).collect();

    // Only the last three are kept: resuming before them is refused with a reason.
    let (mut outside, _) = connect(&server, &format!("?after={}", seqs[0]), Auth::Bearer(&key))
        .expect("the handshake succeeds; the close says why");
    let (code, reason) = expect_close(&mut outside);
    assert_eq!(code, 4000, "{reason}");
    assert!(
        reason.contains("resync") && reason.contains("replay window"),
        "{reason}"
    );
    let (mut ahead, _) =
        connect(&server, "?after=999999999", Auth::Bearer(&key)).expect("handshake");
    let (code, reason) = expect_close(&mut ahead);
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.contains("ahead"), "{reason}");
    // Not the shard's last seq, which moves with other tenants' records.
    assert!(
        !reason.contains("last seq"),
        "the reason tells of the shard: {reason}"
    );

    // A clean stop closes open streams with 1001 and a resume point.
    let stopping = std::thread::spawn(move || expect_close(&mut live));
    assert!(server.terminate().success());
    let (code, reason) = stopping.join().expect("the client saw the stop");
    assert_eq!(code, u16::from(CloseCode::Away), "{reason}");
    assert!(reason.contains(&format!("after={}", seqs[4])), "{reason}");

    // After a restart the window is rebuilt from the journal.
    let server = Server::start(&site, &options);
    let (mut resumed, _) = connect(&server, &format!("?after={}", seqs[2]), Auth::Bearer(&key))
        .expect("resume after the restart");
    assert_eq!(seq(&next_event(&mut resumed)), seqs[3]);
    assert_eq!(seq(&next_event(&mut resumed)), seqs[4]);
    let acme = server.client().key(&key);
    let later = publish(&acme, &json!({"type": "order.created", "data": {"n": 5}}));
    let message = next_event(&mut resumed);
    assert_eq!(message["id"], later["id"]);
    assert!(
        seq(&message) > seqs[4],
        "the seq keeps growing across restarts"
    );
    let (mut outside, _) =
        connect(&server, &format!("?after={}", seqs[0]), Auth::Bearer(&key)).expect("handshake");
    assert_eq!(expect_close(&mut outside).0, 4000);
}

#[test]
fn a_stripe_signed_inbound_event_reaches_a_webhook_and_a_stream_client() {
    let site = Site::new();
    let sink = Sink::start_default().expect("the sink starts");
    let config = format!("{}\n{}", crate::inbound::config(), ws_config(""));
    let server = Server::start(&site, &Options::default().config(&config));
    let (key, tenant) = tenant(&server, "tenant_in");
    create_webhook(
        &tenant,
        &json!({"url": sink.url("/in"), "events": ["payment.*"]}),
    );
    let (mut stream, _) =
        connect(&server, "?events=payment.*", Auth::Protocol(&key)).expect("subscribe");

    let payload =
        crate::inbound::payment_event("evt_1NxWs", "payment_intent.succeeded", "tenant_in");
    let header = crate::inbound::stripe_header(&payload, 0);
    let accepted = crate::inbound::post_inbound(
        &server,
        "payments",
        &payload,
        vec![("Stripe-Signature", header.clone())],
    )
    .expect(200);
    let event_id = accepted["event_id"].as_str().expect("event_id").to_string();
    let delivered = wait_received(&sink, "/in", &event_id);
    let message = next_event(&mut stream);
    assert_eq!(message["id"], event_id.as_str(), "{message}");
    assert_eq!(message["type"], "payment.captured", "{message}");
    assert_eq!(message["data"]["id"], "pi_3Nx", "{message}");
    let mut webhook_body = body_json(&delivered[0]);
    webhook_body["seq"] = message["seq"].clone();
    assert_eq!(message, webhook_body);
    // The provider's retry is a duplicate: no second message.
    let again = crate::inbound::post_inbound(
        &server,
        "payments",
        &payload,
        vec![("Stripe-Signature", header)],
    )
    .expect(200);
    assert_eq!(again["status"], "duplicate");

    // The engine's own events are on the stream too: a receiver answering 410 gets its
    // webhook disabled and the tenant a webhook.disabled event.
    sink.set_script("/gone", vec![herald_sink::Action::Status(410)])
        .expect("scripted");
    create_webhook(
        &tenant,
        &json!({"url": sink.url("/gone"), "events": ["order.*"]}),
    );
    let (mut operational, _) =
        connect(&server, "?events=webhook.*", Auth::Bearer(&key)).expect("subscribe");
    publish(&tenant, &json!({"type": "order.created", "data": {}}));
    let disabled = next_event(&mut operational);
    assert_eq!(disabled["type"], "webhook.disabled", "{disabled}");
    assert!(seq(&disabled) > seq(&message));
    // Nothing else reached the payment stream in between: the next is a new payment.
    let refund = crate::inbound::payment_event("evt_1NxWs2", "charge.refunded", "tenant_in");
    crate::inbound::post_inbound(
        &server,
        "payments",
        &refund,
        vec![(
            "Stripe-Signature",
            crate::inbound::stripe_header(&refund, 0),
        )],
    )
    .expect(200);
    assert_eq!(next_event(&mut stream)["type"], "payment.refunded");
}

#[test]
fn a_silent_client_is_pinged_then_closed_after_the_idle_timeout() {
    use std::io::Read;
    let site = Site::new();
    let config = ws_config("ping_interval_ms = 100\nidle_timeout_ms = 400\n");
    let server = Server::start(&site, &Options::default().config(&config));
    let (key, _) = tenant(&server, "acme_idle");
    let (mut ws, _) = connect(&server, "", Auth::Bearer(&key)).expect("subscribe");
    // Read the raw socket, so that no pong is ever sent: frames from a server are
    // unmasked, and pings and closes are short (a two-byte head, then the payload).
    let socket = ws.get_mut();
    let mut pings = 0;
    let code = loop {
        let mut head = [0u8; 2];
        socket.read_exact(&mut head).expect("a frame head");
        let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
        socket.read_exact(&mut payload).expect("a frame payload");
        match head[0] & 0x0f {
            0x9 => pings += 1,
            0x8 => break u16::from_be_bytes([payload[0], payload[1]]),
            other => panic!("unexpected frame opcode {other:#x}"),
        }
    };
    assert_eq!(code, 4002, "an idle client is closed with 4002");
    assert!(pings >= 1, "the server pinged before giving up");
}

/// An open stream does not outlive its credential: revoking the API key it was opened
/// with, or its JWT's `exp` passing, closes it with 4003 at the next ping, while a
/// stream opened with a key still valid stays open.
#[test]
fn a_stream_closes_once_its_key_is_revoked_or_its_token_expires() {
    let site = Site::new();
    let config = ws_config("ping_interval_ms = 200\nidle_timeout_ms = 60000\n");
    let server = Server::start(&site, &Options::default().config(&config));
    let (key, client) = tenant(&server, "acme_cred");
    let admin = server.admin();
    let minted = admin
        .post("/v1/tenants/acme_cred/keys", &json!({}))
        .expect(201);
    let second_key = minted["api_key"].as_str().expect("api_key");
    let key_id = minted["id"].as_str().expect("id");
    let (mut kept, _) = connect(&server, "", Auth::Bearer(&key)).expect("subscribe");
    let (mut revoked, _) = connect(&server, "", Auth::Bearer(second_key)).expect("subscribe");
    // Within the leeway (30 s) of an exp 24 s ago: accepted, and lapses 6 s on (room
    // for the handshake on a loaded machine; the stream's close waits that long).
    let exp = now_s() - 24;
    let token = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "acme_cred", "exp": exp}),
    );
    let (mut expiring, _) = connect(&server, "", Auth::Bearer(&token)).expect("subscribe");
    // A handshake with a body is refused: the body would be held for the stream's life.
    for framing in [
        "Content-Length: 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let handshake = format!(
            "GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Authorization: Bearer {key}\r\n{framing}"
        );
        let outcome = raw::exchange(server.addr(), handshake.as_bytes(), 1, READ_TIMEOUT);
        let answer = outcome.responses.first().expect("an answer");
        assert_eq!(answer.status, 400, "{framing}: {}", answer.text());
        assert!(answer.text().contains("no body"), "{}", answer.text());
    }

    admin
        .delete(&format!("/v1/tenants/acme_cred/keys/{key_id}"))
        .expect(204);
    let (code, reason) = expect_close(&mut revoked);
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    let (code, reason) = expect_close(&mut expiring);
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    // The stream of the key still valid goes on.
    client
        .post(
            "/v1/events",
            &json!({"type": "order.created", "data": {"n": 1}}),
        )
        .expect(202);
    assert_eq!(next_event(&mut kept)["data"]["n"], 1);
}

/// Deleting a tenant closes its streams at their next ping, whatever opened them: a
/// JWT naming it and the admin key naming it in `Herald-Tenant`, whose credentials
/// stay valid, as well as its own key; another tenant's stream goes on.
#[test]
fn a_deleted_tenants_streams_close() {
    let site = Site::new();
    let config = ws_config("ping_interval_ms = 200\nidle_timeout_ms = 60000\n");
    let server = Server::start(&site, &Options::default().config(&config));
    let (key, _) = tenant(&server, "acme_gone");
    let (_, other) = tenant(&server, "globex_stays");
    let token = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "acme_gone", "exp": now_s() + 3600}),
    );
    let (mut by_key, _) = connect(&server, "", Auth::Bearer(&key)).expect("subscribe");
    let (mut by_token, _) = connect(&server, "", Auth::Bearer(&token)).expect("subscribe");
    let (mut by_admin, _) = connect_with(
        &server,
        "",
        Auth::Bearer(ADMIN_KEY),
        &[("Herald-Tenant", "acme_gone")],
    )
    .expect("subscribe");
    let other_token = jwt(
        Algorithm::HS256,
        &json!({"tenant_id": "globex_stays", "exp": now_s() + 3600}),
    );
    let (mut kept, _) = connect(&server, "", Auth::Bearer(&other_token)).expect("subscribe");

    server.admin().delete("/v1/tenants/acme_gone").expect(204);
    for (opened_with, ws, why) in [
        ("its key", &mut by_key, "no longer valid"),
        ("a JWT", &mut by_token, "no longer exists"),
        ("the admin key", &mut by_admin, "no longer exists"),
    ] {
        let (code, reason) = expect_close(ws);
        assert_eq!(code, 4003, "{opened_with}: {reason}");
        assert!(reason.contains(why), "{opened_with}: {reason}");
    }
    // A JWT naming it cannot open a new one either.
    assert!(connect(&server, "", Auth::Bearer(&token)).is_err());
    other
        .post(
            "/v1/events",
            &json!({"type": "order.created", "data": {"n": 7}}),
        )
        .expect(202);
    assert_eq!(next_event(&mut kept)["data"]["n"], 7);
}

/// A stream that always has an event ready (here a long replay read slowly) is still
/// pinged, and its credential checked: a revoked key stops it mid-replay.
#[test]
fn a_busy_stream_closes_once_its_key_is_revoked() {
    let site = Site::new();
    let config = ws_config("ping_interval_ms = 100\nidle_timeout_ms = 60000\n");
    let server = Server::start(&site, &Options::default().config(&config));
    let (key, client) = tenant(&server, "acme_busy");
    let admin = server.admin();
    let minted = admin
        .post("/v1/tenants/acme_busy/keys", &json!({}))
        .expect(201);
    let second_key = minted["api_key"].as_str().expect("api_key");
    let key_id = minted["id"].as_str().expect("id");
    let (mut first, _) = connect(&server, "", Auth::Bearer(&key)).expect("subscribe");
    // Large events, twice what the socket's buffers hold: the replay cannot be written
    // ahead of the reader, so the stream has an event ready for as long as it reads.
    const FILLER_BYTES: usize = 200 * 1024;
    let events = (2 * socket_buffer_bytes() / FILLER_BYTES + 8).clamp(20, 400);
    let filler = "x".repeat(FILLER_BYTES);
    for n in 0..events {
        publish(
            &client,
            &json!({"type": "order.created", "data": {"n": n, "filler": filler}}),
        );
    }
    let oldest = seq(&next_event(&mut first));
    drop(first);
    let (mut busy, _) = connect(
        &server,
        &format!("?after={oldest}"),
        Auth::Bearer(second_key),
    )
    .expect("subscribe");
    // A receive buffer of a set size: the kernel would otherwise grow it as the client
    // reads (up to `tcp_rmem`'s maximum, 32 MiB on some hosts), and the whole replay
    // would fit in the buffers before the revocation is noticed.
    rustix::net::sockopt::set_socket_recv_buffer_size(busy.get_ref(), 64 * 1024)
        .expect("SO_RCVBUF set");
    assert_eq!(next_event(&mut busy)["data"]["n"], 1);
    admin
        .delete(&format!("/v1/tenants/acme_busy/keys/{key_id}"))
        .expect(204);
    // A message every few milliseconds: the replay alone lasts a while.
    let mut read = 1;
    let (code, reason) = loop {
        match busy.read() {
            Ok(Message::Text(_)) => read += 1,
            Ok(Message::Close(Some(frame))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Message::Close(None)) => panic!("closed without a code"),
            Ok(_) => {}
            Err(error) => panic!("expected a close frame, the stream failed: {error}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.contains("revoked"), "{reason}");
    assert!(
        read < events - 1,
        "the revoked key's stream replayed all {read} events before it closed"
    );
}

/// Streams are never closed to make room for a new connection, so they may take at
/// most half of `limits.connections_max` (and `ws.connections_max`): past that a new
/// stream gets 503, and requests still find a connection.
#[test]
fn streams_leave_room_for_requests() {
    let site = Site::new();
    let config = format!(
        "{}\n[limits]\nconnections_max = 8\n",
        ws_config("connections_max = 100\n")
    );
    let server = Server::start(&site, &Options::default().config(&config));
    let (first, _) = tenant(&server, "acme_room_a");
    let (second, _) = tenant(&server, "acme_room_b");
    let mut open = Vec::new();
    for key in [&first, &second, &first, &second] {
        open.push(
            connect(&server, "", Auth::Bearer(key))
                .expect("subscribe")
                .0,
        );
    }
    let Err((status, body)) = connect(&server, "", Auth::Bearer(&first)) else {
        panic!("a fifth stream was accepted");
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ws.connections_max"), "{body}");
    for _ in 0..3 {
        server.client().get("/healthz").expect(200);
    }
    // A stream that closes gives its place back.
    let mut closing = open.pop().expect("a stream");
    closing.close(None).expect("close sent");
    wait_for("the closed stream's place", READ_TIMEOUT, || {
        connect(&server, "", Auth::Bearer(&first)).ok()
    });
}
