//! The sink, driven over real loopback sockets by a minimal client built on herald-http.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_http::{encode_request, Limits, Response, ResponseParser};
use herald_sign::{Message, Scheme, SignedHeaders, Signer};
use herald_sink::{Action, Sink, SinkError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

const WAIT: Duration = Duration::from_secs(10);

/// A keep-alive client: one request at a time, responses parsed with herald-http.
struct Client<S> {
    stream: S,
    parser: ResponseParser,
    host: String,
}

impl Client<TcpStream> {
    fn plain(sink: &Sink) -> Self {
        let stream = TcpStream::connect(sink.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            stream,
            parser: ResponseParser::new(Limits::default()),
            host: sink.addr().to_string(),
        }
    }
}

impl<S: Read + Write> Client<S> {
    fn send_raw(&mut self, bytes: &[u8]) -> Option<Response> {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> Option<Response> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.stream.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => panic!("client read failed: {e}"),
            };
            if n == 0 {
                return self.parser.feed_eof().unwrap();
            }
            let (used, response) = self.parser.feed(&buf[..n]).unwrap();
            assert_eq!(used, n, "the sink sends nothing after a response");
            if response.is_some() {
                return response;
            }
        }
    }

    fn post(&mut self, target: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Option<Response> {
        let mut out = Vec::new();
        encode_request(&mut out, "POST", target, &self.host, headers, body).unwrap();
        self.send_raw(&out)
    }
}

fn status(response: Option<Response>) -> u16 {
    response.expect("the sink answered").status
}

#[test]
fn keep_alive_requests_are_answered_and_recorded() {
    let sink = Sink::start_default().unwrap();
    let mut client = Client::plain(&sink);
    for i in 0..3 {
        let body = format!("{{\"n\":{i}}}");
        let response = client
            .post(
                &format!("/hook?n={i}"),
                &[("X-Test", b"yes")],
                body.as_bytes(),
            )
            .unwrap();
        assert_eq!(response.status, 200);
        assert!(response.keep_alive);
    }
    let stats = sink.wait_for(3, WAIT).unwrap();
    assert_eq!(stats.connections_accepted, 1, "one keep-alive connection");
    assert_eq!(stats.status_count(200), 3);
    assert_eq!(stats.body_bytes, 21);
    let records = sink.requests();
    assert_eq!(records.len(), 3);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.method, "POST");
        assert_eq!(record.path(), "/hook");
        assert_eq!(record.target, format!("/hook?n={i}"));
        assert_eq!(record.header("x-test"), Some("yes"));
        assert_eq!(record.body, format!("{{\"n\":{i}}}").as_bytes());
        assert_eq!(record.connection, records[0].connection);
        assert_eq!(record.version_minor, 1);
    }
    assert_eq!(sink.requests_to("/hook").len(), 3);
    assert!(sink.requests_to("/other").is_empty());
    assert_eq!(sink.take_requests().len(), 3);
    assert!(sink.requests().is_empty());
}

#[test]
fn scripted_answers_per_path() {
    let sink = Sink::builder()
        .script(
            "/flaky",
            vec![Action::Status(500), Action::Status(503), Action::ok()],
        )
        .script(
            "/slow-down",
            vec![Action::RetryAfter {
                status: 429,
                seconds: 7,
            }],
        )
        .script("/gone", vec![Action::Status(410)])
        .start()
        .unwrap();
    let mut client = Client::plain(&sink);
    let cases: &[(&str, u16, Option<&[u8]>)] = &[
        ("/flaky", 500, None),
        ("/flaky?x=1", 503, None),
        ("/flaky", 200, None),
        ("/flaky", 200, None),
        ("/slow-down", 429, Some(b"7")),
        ("/gone", 410, None),
        ("/anything", 200, None),
    ];
    for (target, want_status, want_retry_after) in cases {
        let response = client.post(target, &[], b"{}").unwrap();
        assert_eq!(response.status, *want_status, "{target}");
        assert_eq!(
            response.header("retry-after"),
            *want_retry_after,
            "{target}"
        );
    }
    sink.set_script("/flaky", vec![Action::Status(502)])
        .unwrap();
    assert_eq!(status(client.post("/flaky", &[], b"")), 502);
    sink.clear_script("/flaky");
    sink.set_default_action(Action::Status(204)).unwrap();
    assert_eq!(status(client.post("/flaky", &[], b"")), 204);
    let stats = sink.stats();
    assert_eq!(stats.requests, 9);
    assert_eq!(stats.status_count(200), 3);
    assert_eq!(stats.successes(), 4);
}

#[test]
fn responder_chooses_and_invalid_answers_and_panics_become_500() {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let sink = Sink::builder()
        .responder(move |request| {
            counter.fetch_add(1, Ordering::Relaxed);
            match &request.body[..] {
                b"bad" => Action::Status(42),
                b"panic" => panic!("a responder that panics (expected by the test)"),
                _ => Action::Status(201),
            }
        })
        .start()
        .unwrap();
    let mut client = Client::plain(&sink);
    assert_eq!(status(client.post("/", &[], b"ok")), 201);
    assert_eq!(status(client.post("/", &[], b"bad")), 500);
    assert_eq!(status(client.post("/", &[], b"panic")), 500);
    assert_eq!(
        status(client.post("/", &[], b"ok")),
        201,
        "the loop survived the panic"
    );
    assert_eq!(seen.load(Ordering::Relaxed), 4);
    sink.set_responder(None);
    assert_eq!(status(client.post("/", &[], b"ok")), 200);
}

#[test]
fn close_without_answer_and_delay() {
    let sink = Sink::builder()
        .script("/close", vec![Action::Close])
        .script("/slow", vec![Action::delay(50, Action::Status(202))])
        .start()
        .unwrap();
    let mut client = Client::plain(&sink);
    let started = Instant::now();
    assert_eq!(status(client.post("/slow", &[], b"")), 202);
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "a delayed answer cannot come before its delay"
    );
    assert!(
        client.post("/close", &[], b"").is_none(),
        "closed, no answer"
    );
    let stats = sink
        .wait_until("the close to be counted", WAIT, |s| s.connections_open == 0)
        .unwrap();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.closed_without_answer, 1);
    assert_eq!(sink.requests()[1].action, Action::Close);
}

#[test]
fn http_1_0_and_connection_close_end_the_connection() {
    let sink = Sink::start_default().unwrap();
    for request in [
        &b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"[..],
        &b"POST /new HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let mut client = Client::plain(&sink);
        let response = client.send_raw(request).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some(&b"close"[..]));
        assert!(client.read_response().is_none(), "then the sink closes");
    }
    assert_eq!(sink.requests()[0].version_minor, 0);
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        head_bytes_max: 1024,
        body_captured_bytes_max: 100,
        body_bytes_max: 200,
        ..Limits::default()
    };
    let sink = Sink::builder().limits(limits).start().unwrap();
    let big_header = vec![b'a'; 2000];
    type Headers<'a> = &'a [(&'a str, &'a [u8])];
    let cases: &[(Headers<'_>, usize, u16)] = &[
        (&[("X-Big", &big_header)], 0, 431),
        (&[], 150, 413), // over the captured size: the sink needs whole bodies
        (&[], 300, 413), // over body_bytes_max: refused from the Content-Length
        (&[], 100, 200),
    ];
    for (headers, body_len, want) in cases {
        let mut client = Client::plain(&sink);
        let response = client.post("/", headers, &vec![b'x'; *body_len]).unwrap();
        assert_eq!(response.status, *want, "body {body_len}");
        if *want != 200 {
            assert!(client.read_response().is_none(), "closed after {want}");
        }
    }
    assert_eq!(sink.stats().bad_requests, 3);
    let mut client = Client::plain(&sink);
    assert_eq!(status(client.send_raw(b"NOT HTTP\r\n\r\n")), 400);
}

#[test]
fn connections_beyond_the_limit_are_refused() {
    let sink = Sink::builder().connections_max(1).start().unwrap();
    let mut first = Client::plain(&sink);
    assert_eq!(status(first.post("/", &[], b"")), 200);
    let mut second = Client::plain(&sink);
    assert!(second.read_response().is_none(), "refused: closed at once");
    assert_eq!(sink.stats().connections_refused, 1);
    drop(first);
    sink.wait_until("the first connection to close", WAIT, |s| {
        s.connections_open == 0
    })
    .unwrap();
    let mut third = Client::plain(&sink);
    assert_eq!(status(third.post("/", &[], b"")), 200);
}

#[test]
fn recorded_requests_are_bounded() {
    let sink = Sink::builder().requests_max(2).start().unwrap();
    let mut client = Client::plain(&sink);
    for _ in 0..5 {
        assert_eq!(status(client.post("/", &[], b"")), 200);
    }
    assert_eq!(sink.requests().len(), 2);
    assert_eq!(sink.stats().records_dropped, 3);
    assert_eq!(sink.stats().requests, 5);

    let counting = Sink::builder().requests_max(0).start().unwrap();
    let mut client = Client::plain(&counting);
    assert_eq!(status(client.post("/", &[], b"")), 200);
    assert!(counting.requests().is_empty());
    assert_eq!(counting.stats().records_dropped, 0, "0 means counters only");
}

#[test]
fn idle_connections_are_closed() {
    let sink = Sink::builder().idle_timeout_ms(50).start().unwrap();
    let mut client = Client::plain(&sink);
    assert_eq!(status(client.post("/", &[], b"")), 200);
    assert!(client.read_response().is_none(), "closed once idle");
    sink.wait_until("an idle timeout", WAIT, |s| s.idle_timeouts == 1)
        .unwrap();
}

#[test]
fn wait_gives_up_with_the_counts() {
    let sink = Sink::start_default().unwrap();
    let error = sink.wait_for(1, Duration::from_millis(20)).unwrap_err();
    assert_eq!(error.stats.requests, 0);
    assert!(error.waited_ms >= 20);
    assert!(error.to_string().contains("1 requests"), "{error}");
}

#[test]
fn settings_out_of_range_are_refused() {
    let cases: Vec<(herald_sink::SinkBuilder, &str)> = vec![
        (Sink::builder().connections_max(0), "connections_max"),
        (
            Sink::builder().connections_max(herald_sink::CONNECTIONS_MAX_LIMIT + 1),
            "connections_max",
        ),
        (
            Sink::builder().requests_max(herald_sink::REQUESTS_MAX_LIMIT + 1),
            "requests_max",
        ),
        (Sink::builder().idle_timeout_ms(0), "idle_timeout_ms"),
        (
            Sink::builder().default_action(Action::Status(100)),
            "status",
        ),
        (
            Sink::builder().script(
                "/",
                vec![Action::delay(herald_sink::DELAY_MS_MAX + 1, Action::ok())],
            ),
            "delay_ms",
        ),
        (Sink::builder().script("/", vec![]), "actions"),
        (
            Sink::builder().verify(Scheme::Standard, &["not-a-secret"]),
            "keys",
        ),
    ];
    for (builder, needle) in cases {
        match builder.start() {
            Err(SinkError::Config(message)) => assert!(message.contains(needle), "{message}"),
            other => panic!("expected a config error about {needle}, got {other:?}"),
        }
    }
    let sink = Sink::start_default().unwrap();
    assert!(sink.set_default_action(Action::Status(1000)).is_err());
    assert!(sink.set_script("/", vec![Action::Status(99)]).is_err());
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn signatures_are_verified_on_arrival() {
    let standard = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cases: Vec<(Scheme, &str)> = vec![
        (Scheme::Standard, standard),
        (Scheme::stripe(), "whsec_stripe_style"),
        (Scheme::Olo, "olo-secret"),
    ];
    for (scheme, secret) in cases {
        let sink = Sink::builder()
            .verify(scheme.clone(), &[secret])
            .start()
            .unwrap();
        let signer = Signer::new(scheme.clone(), &[secret]).unwrap();
        let mut client = Client::plain(&sink);
        let url = sink.url("/hook");
        let body = br#"{"id":"evt_1"}"#;
        for (sent_body, timestamp_s) in [
            (&body[..], now_s()),
            (&b"{\"id\":\"evt_2\"}"[..], now_s()), // signed over `body`: mismatch
            (&body[..], now_s() - 3600),           // outside the tolerance
        ] {
            let mut signed = SignedHeaders::new();
            signer.sign_into(
                &Message {
                    id: "msg_1",
                    timestamp_s,
                    url: &url,
                    body,
                },
                &mut signed,
            );
            let headers: Vec<(&str, &[u8])> =
                signed.iter().map(|(n, v)| (n, v.as_bytes())).collect();
            assert_eq!(status(client.post("/hook", &headers, sent_body)), 200);
        }
        let stats = sink.stats();
        assert_eq!((stats.verified, stats.verify_failed), (1, 2), "{scheme:?}");
        let records = sink.requests();
        assert!(records[0].verify.as_ref().unwrap().is_ok());
        assert!(records[1].verify.as_ref().unwrap().is_err());
        assert!(records[2].verify.as_ref().unwrap().is_err());
    }
}

#[test]
fn latency_is_read_from_the_body() {
    let sink = Sink::builder()
        .latency_field("sent_unix_ns")
        .start()
        .unwrap();
    let mut client = Client::plain(&sink);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let body = format!("{{\"data\":{{\"sent_unix_ns\":{now_ns}}}}}");
    assert_eq!(status(client.post("/", &[], body.as_bytes())), 200);
    assert_eq!(status(client.post("/", &[], b"{}")), 200);
    assert_eq!(sink.latency().len(), 1);
    assert_eq!(sink.stats().latency_missing, 1);
    drop(client);
    sink.wait_until("the connection to close", WAIT, |s| s.connections_open == 0)
        .unwrap();
    assert_eq!(sink.latency().len(), 1, "kept after the connection closed");
    sink.reset_latency();
    assert_eq!(sink.latency().len(), 0);
}

fn tls_client(
    sink: &Sink,
    roots_pem: Option<&str>,
) -> Client<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(herald_sink::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(sink.addr()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    Client {
        stream: rustls::StreamOwned::new(connection, tcp),
        parser: ResponseParser::new(Limits::default()),
        host: format!("localhost:{}", sink.addr().port()),
    }
}

#[test]
fn tls_with_the_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    let sink = Sink::builder().ca_pem_out(&ca_path).start().unwrap();
    assert_eq!(sink.scheme(), "https");
    assert!(sink.url("/x").starts_with("https://127.0.0.1:"));
    assert_eq!(sink.ca_pem_path(), Some(ca_path.as_path()));
    let pem = std::fs::read_to_string(&ca_path).unwrap();
    assert_eq!(Some(pem.as_str()), sink.ca_pem());

    let mut client = tls_client(&sink, Some(&pem));
    for _ in 0..2 {
        assert_eq!(status(client.post("/secure", &[], b"{}")), 200);
    }
    assert_eq!(sink.stats().connections_accepted, 1);

    let mut untrusting = tls_client(&sink, None);
    let mut out = Vec::new();
    encode_request(&mut out, "POST", "/", "localhost", &[], b"").unwrap();
    assert!(
        untrusting.stream.write_all(&out).is_err(),
        "the client refuses the certificate"
    );
    drop(untrusting);
    sink.wait_until("a TLS error", WAIT, |s| s.tls_errors == 1)
        .unwrap();
    assert_eq!(sink.stats().requests, 2);
}

/// Requests that arrive together over TLS, many records in one write and more bytes than
/// one socket read takes, are all answered: the sink stops reading a socket a read left
/// empty only once rustls holds no more plaintext.
#[test]
fn pipelined_tls_requests_in_one_write_are_all_answered() {
    let sink = Sink::builder().tls(true).start().unwrap();
    let pem = sink.ca_pem().unwrap().to_owned();
    let mut client = tls_client(&sink, Some(&pem));
    // Small requests first (several to a TLS record), then larger ones: ~41 KiB in one
    // write, three TLS records at least (16 KiB of plaintext at most each).
    let mut out = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..48 {
        let pad = if i < 24 { 8 } else { 1600 };
        let body = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(pad));
        encode_request(&mut out, "POST", "/p", &client.host, &[], body.as_bytes()).unwrap();
        bodies.push(body);
    }
    client.stream.write_all(&out).unwrap();
    client.stream.flush().unwrap();
    let mut statuses = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while statuses.len() < bodies.len() {
        let n = client.stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} responses", statuses.len());
        pending.extend_from_slice(&buf[..n]);
        loop {
            let (used, response) = client.parser.feed(&pending).unwrap();
            pending.drain(..used);
            match response {
                Some(response) => statuses.push(response.status),
                None => break,
            }
        }
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let recorded: Vec<Vec<u8>> = sink.requests().iter().map(|r| r.body.clone()).collect();
    let sent: Vec<Vec<u8>> = bodies.into_iter().map(String::into_bytes).collect();
    assert_eq!(recorded, sent, "every request arrived whole and in order");
    assert_eq!(sink.stats().connections_accepted, 1);
}

#[test]
fn shutdown_closes_open_connections() {
    let sink = Sink::builder()
        .script(
            "/hang",
            vec![Action::delay(herald_sink::DELAY_MS_MAX, Action::ok())],
        )
        .start()
        .unwrap();
    let mut idle = Client::plain(&sink);
    assert_eq!(status(idle.post("/", &[], b"")), 200);
    let mut hanging = Client::plain(&sink);
    let mut out = Vec::new();
    encode_request(&mut out, "POST", "/hang", "h", &[], b"").unwrap();
    hanging.stream.write_all(&out).unwrap();
    sink.wait_for(2, WAIT).unwrap();
    let addr = sink.addr();
    sink.shutdown();
    assert!(idle.read_response().is_none());
    assert!(hanging.read_response().is_none());
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn load_client_measures_the_ceiling() {
    for tls in [false, true] {
        let sink = Sink::builder()
            .tls(tls)
            .requests_max(0)
            .latency_field("sent_unix_ns")
            .script("/fail", vec![Action::Status(503)])
            .start()
            .unwrap();
        let mut config = herald_sink::LoadConfig {
            connections: 3,
            requests: 100,
            target: "/load".into(),
            payload_bytes: 64,
            latency_field: Some("sent_unix_ns".into()),
            headers: vec![("webhook-id".into(), "msg_1".into())],
            tls_ca_pem: sink.ca_pem().map(str::to_owned),
        };
        let report = herald_sink::run_load(sink.addr(), &config).unwrap();
        assert_eq!(report.requests, 100, "tls={tls}");
        assert_eq!(report.non_success, 0);
        assert!(report.per_s > 0.0);
        let stats = sink.stats();
        assert_eq!(stats.requests, 100);
        assert_eq!(stats.connections_accepted, 3);
        assert_eq!(sink.latency().len(), 100);
        assert_eq!(stats.latency_missing, 0);

        config.target = "/fail".into();
        config.requests = 4;
        config.connections = 1;
        let report = herald_sink::run_load(sink.addr(), &config).unwrap();
        assert_eq!(report.non_success, 4);
    }
    let sink = Sink::start_default().unwrap();
    let bad = herald_sink::LoadConfig {
        connections: 0,
        requests: 1,
        target: "/".into(),
        payload_bytes: 0,
        latency_field: None,
        headers: vec![],
        tls_ca_pem: None,
    };
    assert!(herald_sink::run_load(sink.addr(), &bad).is_err());
    let too_big = herald_sink::LoadConfig {
        connections: 1,
        payload_bytes: herald_sink::LOAD_PAYLOAD_BYTES_MAX + 1,
        ..bad
    };
    assert!(herald_sink::run_load(sink.addr(), &too_big).is_err());
}

/// Writes one request without waiting for its answer.
fn send_only(stream: &mut TcpStream, target: &str, host: &str) {
    let mut out = Vec::new();
    encode_request(&mut out, "POST", target, host, &[], b"{}").unwrap();
    stream.write_all(&out).unwrap();
}

/// Reads one answer from a plain keep-alive connection.
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut parser = ResponseParser::new(Limits::default());
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the sink closed instead of answering");
        if let (_, Some(response)) = parser.feed(&buf[..n]).unwrap() {
            return response.status;
        }
    }
}

fn connect(sink: &Sink) -> TcpStream {
    let stream = TcpStream::connect(sink.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn thousands_of_idle_connections_are_held_while_another_is_served() {
    const IDLE: usize = 2_000;
    let sink = Sink::builder().requests_max(0).start().unwrap();
    let host = sink.addr().to_string();
    let mut idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(&sink)).collect();
    // Each is served once (written all at once, then read), so each is a keep-alive
    // connection with a request behind it, now idle.
    for stream in &mut idle {
        send_only(stream, "/first", &host);
    }
    for stream in &mut idle {
        assert_eq!(read_status(stream), 200);
    }
    let stats = sink
        .wait_until("every connection to be open", WAIT, |s| {
            s.connections_open == IDLE as u64
        })
        .unwrap();
    assert_eq!(stats.connections_refused, 0);

    let mut busy = Client::plain(&sink);
    for i in 0..100 {
        assert_eq!(status(busy.post(&format!("/busy/{i}"), &[], b"{}")), 200);
    }
    let stats = sink.stats();
    assert_eq!(stats.connections_open, IDLE as u64 + 1, "none was dropped");
    assert_eq!(stats.requests, IDLE as u64 + 100);
    assert_eq!(stats.idle_timeouts, 0);

    // Every idle connection is still served.
    for stream in &mut idle {
        send_only(stream, "/second", &host);
    }
    for stream in &mut idle {
        assert_eq!(read_status(stream), 200);
    }
    assert_eq!(sink.stats().status_count(200), 2 * IDLE as u64 + 100);
    assert_eq!(sink.stats().connections_accepted, IDLE as u64 + 1);
}

#[test]
fn delayed_answers_do_not_hold_up_other_connections() {
    // One event-loop thread: if a delay blocked it, nothing else would be answered.
    let sink = Sink::builder()
        .threads(1)
        .script(
            "/parked",
            vec![Action::delay(herald_sink::DELAY_MS_MAX, Action::ok())],
        )
        .script("/slow", vec![Action::delay(100, Action::Status(202))])
        .start()
        .unwrap();
    let host = sink.addr().to_string();
    let mut parked: Vec<TcpStream> = (0..50).map(|_| connect(&sink)).collect();
    for stream in &mut parked {
        send_only(stream, "/parked", &host);
    }
    sink.wait_for(50, WAIT).unwrap();
    let mut slow: Vec<TcpStream> = (0..50).map(|_| connect(&sink)).collect();
    for stream in &mut slow {
        send_only(stream, "/slow", &host);
    }
    let mut fast = Client::plain(&sink);
    for _ in 0..20 {
        assert_eq!(status(fast.post("/fast", &[], b"")), 200);
    }
    for stream in &mut slow {
        assert_eq!(read_status(stream), 202, "every shorter delay completes");
    }
    let stats = sink.stats();
    assert_eq!(stats.requests, 120);
    assert_eq!(stats.status_count(202), 50);
    assert_eq!(
        stats.status_count(200),
        20,
        "the parked answers are still due"
    );
    for stream in &mut parked {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "nothing sent on a parked connection yet: {read:?}"
        );
    }
    assert_eq!(stats.connections_open, 101);
}

#[test]
fn pipelined_requests_are_answered_in_order_across_a_delay() {
    let sink = Sink::builder()
        .script("/slow", vec![Action::delay(50, Action::Status(202))])
        .script("/gone", vec![Action::Status(410)])
        .start()
        .unwrap();
    let host = sink.addr().to_string();
    let mut out = Vec::new();
    for target in ["/slow", "/fast", "/slow", "/gone"] {
        encode_request(&mut out, "POST", target, &host, &[], b"{}").unwrap();
    }
    let mut stream = connect(&sink);
    stream.write_all(&out).unwrap();
    let mut parser = ResponseParser::new(Limits::default());
    let mut statuses = Vec::new();
    let mut buf = [0u8; 4096];
    let mut pending: Vec<u8> = Vec::new();
    while statuses.len() < 4 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {statuses:?}");
        pending.extend_from_slice(&buf[..n]);
        loop {
            let (used, response) = parser.feed(&pending).unwrap();
            pending.drain(..used);
            match response {
                Some(response) => statuses.push(response.status),
                None => break,
            }
        }
    }
    assert_eq!(statuses, [202, 200, 202, 410]);
    let paths: Vec<String> = sink
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/slow", "/fast", "/slow", "/gone"]);
}

#[test]
fn several_event_loop_threads_share_the_connections() {
    let sink = Sink::builder().threads(3).start().unwrap();
    let mut clients: Vec<_> = (0..9).map(|_| Client::plain(&sink)).collect();
    for round in 0..3 {
        for (i, client) in clients.iter_mut().enumerate() {
            let target = format!("/c{i}/r{round}");
            assert_eq!(status(client.post(&target, &[], b"{}")), 200);
        }
    }
    let stats = sink.wait_for(27, WAIT).unwrap();
    assert_eq!(stats.connections_accepted, 9);
    let records = sink.requests();
    let mut connections: Vec<u64> = records.iter().map(|r| r.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert_eq!(
        connections,
        (1..=9).collect::<Vec<u64>>(),
        "numbered in accept order"
    );
    let report = herald_sink::run_load(
        sink.addr(),
        &herald_sink::LoadConfig {
            connections: 6,
            requests: 600,
            target: "/load".into(),
            payload_bytes: 16,
            latency_field: None,
            headers: vec![],
            tls_ca_pem: None,
        },
    )
    .unwrap();
    assert_eq!((report.requests, report.non_success), (600, 0));
    drop(clients);
    sink.wait_until("every connection to close", WAIT, |s| {
        s.connections_open == 0
    })
    .unwrap();
    sink.shutdown();
}

#[test]
fn status_mix_proportions_over_two_thousand_requests() {
    let mix: herald_sink::StatusMix = "200:97,500:2,429:1".parse().unwrap();
    let sink = Sink::builder()
        .status_mix(mix.clone())
        .retry_after_s(5)
        .seed(2024)
        .requests_max(0)
        .start()
        .unwrap();
    let report = herald_sink::run_load(
        sink.addr(),
        &herald_sink::LoadConfig {
            connections: 4,
            requests: 2_000,
            target: "/mixed".into(),
            payload_bytes: 16,
            latency_field: None,
            headers: vec![],
            tls_ca_pem: None,
        },
    )
    .unwrap();
    assert_eq!(report.requests, 2_000);
    let stats = sink.stats();
    let (ok, failed, limited) = (
        stats.status_count(200),
        stats.status_count(500),
        stats.status_count(429),
    );
    assert_eq!(ok + failed + limited, 2_000, "{:?}", stats.statuses);
    assert_eq!(report.non_success, failed + limited);
    // Expected 1,940 / 40 / 20, binomial standard deviations ~7.6 / 6.3 / 4.4: these
    // bounds are about four of them (the counts are fixed by the seed anyway).
    assert!((1_910..=1_970).contains(&ok), "{:?}", stats.statuses);
    assert!((15..=65).contains(&failed), "{:?}", stats.statuses);
    assert!((4..=38).contains(&limited), "{:?}", stats.statuses);
    assert_eq!(mix.share(429), 0.01);

    // The 429s carry Retry-After; the 500s do not.
    sink.set_status_mix(Some("429:1,500:1".parse().unwrap()));
    let mut client = Client::plain(&sink);
    let mut seen = (0, 0);
    for _ in 0..20 {
        let response = client.post("/mixed", &[], b"{}").unwrap();
        match response.status {
            429 => {
                assert_eq!(response.header("retry-after"), Some(&b"5"[..]));
                seen.0 += 1;
            }
            500 => {
                assert_eq!(response.header("retry-after"), None);
                seen.1 += 1;
            }
            other => panic!("answered {other}"),
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "{seen:?}");
    sink.set_status_mix(None);
    assert_eq!(status(client.post("/mixed", &[], b"{}")), 200);
}

#[test]
fn a_seed_repeats_the_answers_and_scripts_bypass_the_model() {
    let run = |seed: u64| {
        let sink = Sink::builder()
            .status_mix("200:80,503:15,410:5".parse().unwrap())
            .answer_latency(herald_sink::LatencyModel::fixed(0).unwrap())
            .script("/scripted", vec![Action::Status(202)])
            .seed(seed)
            .start()
            .unwrap();
        let mut client = Client::plain(&sink);
        let mut statuses = Vec::new();
        for i in 0..200 {
            // Scripted requests in between take no draw.
            if i % 10 == 0 {
                assert_eq!(status(client.post("/scripted", &[], b"")), 202);
            }
            statuses.push(status(client.post("/modelled", &[], b"")));
        }
        statuses
    };
    let first = run(7);
    assert_eq!(first, run(7), "same seed, same answers in the same order");
    assert_ne!(first, run(8));
    assert!(first.contains(&503) && first.contains(&410) && first.contains(&200));
}

#[test]
fn modelled_latency_parks_answers_without_holding_up_others() {
    // Every modelled answer waits the longest delay; scripted ones are not modelled.
    let sink = Sink::builder()
        .threads(1)
        .answer_latency(herald_sink::LatencyModel::fixed(herald_sink::DELAY_MS_MAX).unwrap())
        .script("/quick", vec![Action::ok()])
        .start()
        .unwrap();
    let host = sink.addr().to_string();
    let mut parked: Vec<TcpStream> = (0..100).map(|_| connect(&sink)).collect();
    for stream in &mut parked {
        send_only(stream, "/modelled", &host);
    }
    sink.wait_for(100, WAIT).unwrap();
    let mut quick = Client::plain(&sink);
    for _ in 0..50 {
        assert_eq!(status(quick.post("/quick", &[], b"")), 200);
    }
    assert_eq!(
        sink.stats().status_count(200),
        50,
        "only the quick ones so far"
    );
    for stream in &mut parked {
        stream.set_nonblocking(true).unwrap();
        let read = stream.read(&mut [0u8; 1]);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a parked answer went out: {read:?}"
        );
    }
    let records = sink.requests_to("/modelled");
    assert_eq!(records.len(), 100);
    assert!(records
        .iter()
        .all(|r| r.action == Action::delay(herald_sink::DELAY_MS_MAX, Action::ok())));
}

#[test]
fn log_normal_latency_is_drawn_per_request_and_every_answer_completes() {
    let model: herald_sink::LatencyModel = "5,p99=50".parse().unwrap();
    let sink = Sink::builder()
        .threads(1)
        .answer_latency(model)
        .seed(99)
        .start()
        .unwrap();
    let host = sink.addr().to_string();
    // 40 connections, 25 rounds: each round puts 40 delayed answers in flight at once
    // on the one loop thread, then collects them all.
    let mut streams: Vec<TcpStream> = (0..40).map(|_| connect(&sink)).collect();
    for _ in 0..25 {
        for stream in &mut streams {
            send_only(stream, "/modelled", &host);
        }
        for stream in &mut streams {
            assert_eq!(read_status(stream), 200);
        }
    }
    let delays: Vec<u64> = sink
        .requests()
        .iter()
        .map(|r| match &r.action {
            Action::Delay { delay_ms, then } => {
                assert_eq!(**then, Action::ok());
                *delay_ms
            }
            // A draw that rounds to 0 ms answers at once.
            Action::Status(200) => 0,
            other => panic!("unexpected action {other:?}"),
        })
        .collect();
    assert_eq!(delays.len(), 1_000);
    // Median 5 ms: about half at or below it (whole ms, so 5 itself is ~8 % of draws);
    // p99 50 ms: about 10 of 1,000 above it.
    let at_most_median = delays.iter().filter(|&&ms| ms <= 5).count();
    let above_p99 = delays.iter().filter(|&&ms| ms > 50).count();
    assert!((430..=640).contains(&at_most_median), "{at_most_median}");
    assert!((2..=25).contains(&above_p99), "{above_p99}");
    assert_eq!(sink.stats().status_count(200), 1_000);
}

#[test]
fn load_client_drives_every_connection_and_large_tls_bodies() {
    let sink = Sink::builder().requests_max(0).start().unwrap();
    let mut config = herald_sink::LoadConfig {
        connections: herald_sink::LOAD_CONNECTIONS_MAX,
        requests: 4_096,
        target: "/many".into(),
        payload_bytes: 32,
        latency_field: None,
        headers: vec![],
        tls_ca_pem: None,
    };
    let report = herald_sink::run_load(sink.addr(), &config).unwrap();
    assert_eq!((report.requests, report.non_success), (4_096, 0));
    let stats = sink.stats();
    assert_eq!(
        stats.connections_accepted,
        herald_sink::LOAD_CONNECTIONS_MAX as u64
    );
    assert_eq!(stats.requests, 4_096);

    // Bodies above rustls's default 64 KiB plaintext buffer, written before the
    // handshake is done.
    let tls = Sink::builder().tls(true).requests_max(0).start().unwrap();
    config.connections = 2;
    config.requests = 6;
    config.payload_bytes = 200 * 1024;
    config.tls_ca_pem = tls.ca_pem().map(str::to_owned);
    let report = herald_sink::run_load(tls.addr(), &config).unwrap();
    assert_eq!((report.requests, report.non_success), (6, 0));
    assert!(tls.stats().body_bytes > 6 * 200 * 1024);
    assert_eq!(tls.stats().tls_errors, 0);
}

#[test]
fn several_listeners_are_origins_sharing_the_counters() {
    let sink = Sink::builder()
        .listeners(3)
        .requests_max(100)
        .start()
        .unwrap();
    let addrs = sink.addrs().to_vec();
    assert_eq!(addrs.len(), 3);
    assert_eq!(addrs[0], sink.addr());
    let ports: std::collections::BTreeSet<u16> = addrs.iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 3, "a port per listener: {addrs:?}");
    assert_eq!(sink.url_on(4, "/x"), format!("http://{}/x", addrs[1]));
    // The load client spreads its connections over every listener.
    let config = herald_sink::LoadConfig {
        connections: 6,
        requests: 60,
        target: "/spread".into(),
        payload_bytes: 8,
        latency_field: None,
        headers: vec![],
        tls_ca_pem: None,
    };
    let report = herald_sink::run_load_spread(&addrs, &config).unwrap();
    assert_eq!((report.requests, report.non_success), (60, 0));
    let stats = sink.stats();
    assert_eq!((stats.connections_accepted, stats.requests), (6, 60));
    let hosts: std::collections::BTreeMap<String, usize> =
        sink.requests().iter().fold(Default::default(), |mut m, r| {
            *m.entry(r.header("host").unwrap().to_owned()).or_default() += 1;
            m
        });
    let expected: std::collections::BTreeMap<String, usize> =
        addrs.iter().map(|a| (a.to_string(), 20)).collect();
    assert_eq!(
        hosts, expected,
        "two connections of ten requests per listener"
    );

    assert!(herald_sink::run_load_spread(&[], &config).is_err());
    for bad in [0, herald_sink::LISTENERS_MAX + 1] {
        let err = Sink::builder().listeners(bad).start().unwrap_err();
        assert!(err.to_string().contains("listeners"), "{err}");
    }
}

#[test]
fn tls_with_a_given_certificate() {
    let pki = herald_sink::Pki::generate("given CA").unwrap();
    let leaf = pki.issue(&["localhost", "127.0.0.1"]).unwrap();
    let other = pki.issue(&["localhost"]).unwrap();
    let sink = Sink::builder()
        .tls_identity(leaf.chain_pem.clone(), leaf.key_pem.clone())
        .start()
        .unwrap();
    assert_eq!(sink.scheme(), "https");
    assert_eq!(sink.ca_pem(), None, "nothing generated");
    let mut client = tls_client(&sink, Some(pki.ca_pem()));
    assert_eq!(status(client.post("/given", &[], b"{}")), 200);

    for (chain, key, needle) in [
        (String::new(), leaf.key_pem.clone(), "no CERTIFICATE"),
        (leaf.chain_pem.clone(), "garbage".to_owned(), "private key"),
        (
            leaf.chain_pem.clone(),
            other.key_pem.clone(),
            "does the key match",
        ),
    ] {
        let err = Sink::builder()
            .tls_identity(chain, key)
            .start()
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
