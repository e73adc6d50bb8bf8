//! The API listener's defences against hostile or sloppy clients: a stalled request head
//! is cut off after `limits.header_read_timeout_ms`, ambiguous framing is refused,
//! pipelined requests are answered in order, and the per-connection and connection
//! caps hold; and the HTTP/1.1 edges clients use: chunked bodies, `Expect:
//! 100-continue`, oversized heads, garbage, HTTP/1.0, the idle keep-alive timeout.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use herald_e2e::raw::{closed_within, exchange, read_until};
use herald_e2e::*;
use serde_json::json;

/// The listener limits of this test's server.
const CONFIG: &str = "[limits]\n\
    header_read_timeout_ms = 500\n\
    requests_per_connection_max = 5\n\
    pipelined_requests_max = 4\n";

/// Far above every server timeout in [`CONFIG`]: reaching it means the server did not
/// act.
const BOUND: Duration = Duration::from_secs(15);

#[test]
fn listener_defences() {
    let site = Site::new();
    let server = Server::start(&site, &Options::default().config(CONFIG));
    let addr = server.addr();
    let host = format!("Host: {addr}\r\n");

    // Slowloris: half a head, then nothing. The server closes the connection (after a
    // 408, if it answers at all) long before BOUND.
    let mut stalled = TcpStream::connect(addr).expect("connect");
    stalled
        .write_all(format!("GET /healthz HTTP/1.1\r\n{host}X-Slow: 1\r\n").as_bytes())
        .expect("half a head is written");
    let (closed, received) = closed_within(&mut stalled, BOUND);
    assert!(
        closed,
        "a stalled request head was not cut off within {BOUND:?} (header_read_timeout_ms = 500)"
    );
    if !received.is_empty() {
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "answer to a stalled head: {text:?}"
        );
    }

    // The same stall after a complete request on a keep-alive connection.
    let mut stalled = TcpStream::connect(addr).expect("connect");
    stalled
        .write_all(
            format!("GET /healthz HTTP/1.1\r\n{host}\r\nGET /healthz HTTP/1.1\r\n").as_bytes(),
        )
        .expect("written");
    let outcome = read_until(&mut stalled, 1, BOUND);
    assert_eq!(
        outcome.responses.len(),
        1,
        "the complete request is answered"
    );
    assert_eq!(outcome.responses[0].status, 200);
    let (closed, _) = closed_within(&mut stalled, BOUND);
    assert!(
        closed,
        "the second, stalled head was not cut off within {BOUND:?}"
    );

    // Content-Length and Transfer-Encoding together: 400, connection closed.
    let smuggle = format!(
        "POST /v1/events HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
         Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         GET /healthz HTTP/1.1\r\n{host}\r\n"
    );
    let outcome = exchange(addr, smuggle.as_bytes(), 2, BOUND);
    assert!(!outcome.responses.is_empty(), "no answer to CL+TE");
    assert_eq!(
        outcome.responses[0].status,
        400,
        "{}",
        outcome.responses[0].text()
    );
    assert_eq!(
        outcome.responses.len(),
        1,
        "nothing after an ambiguous request may be answered (request smuggling)"
    );
    assert!(outcome.closed, "the connection is closed after CL+TE");

    // Two Content-Lengths that disagree: 400 as well.
    let doubled = format!(
        "POST /v1/events HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
         Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"
    );
    let outcome = exchange(addr, doubled.as_bytes(), 1, BOUND);
    assert_eq!(
        outcome.responses.first().map(|r| r.status),
        Some(400),
        "conflicting Content-Length"
    );

    // Pipelining: five requests in one write (more than pipelined_requests_max = 4),
    // answered in order; the fifth is the last this connection may carry
    // (requests_per_connection_max = 5), so it comes with Connection: close.
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    let pipelined = [
        format!("GET /healthz HTTP/1.1\r\n{host}\r\n"),
        format!("GET /v1/nope HTTP/1.1\r\n{host}\r\n"),
        format!("GET /readyz HTTP/1.1\r\n{host}\r\n"),
        format!("DELETE /v1/events HTTP/1.1\r\n{host}{auth}\r\n"),
        format!(
            "POST /v1/tenants HTTP/1.1\r\n{host}{auth}Content-Type: application/json\r\n\
             Content-Length: 20\r\n\r\n{{\"id\":\"tenant_pipe\"}}"
        ),
        format!("GET /healthz HTTP/1.1\r\n{host}\r\n"),
    ]
    .concat();
    let outcome = exchange(addr, pipelined.as_bytes(), 6, BOUND);
    let statuses: Vec<u16> = outcome.responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [200, 404, 200, 405, 201],
        "answers in request order, and none past requests_per_connection_max"
    );
    assert_eq!(outcome.responses[0].json(), json!({"status": "ok"}));
    assert_eq!(outcome.responses[2].json(), json!({"status": "ready"}));
    assert_eq!(outcome.responses[4].json()["id"], "tenant_pipe");
    assert!(
        !outcome.responses[4].keep_alive,
        "the fifth answer closes the connection"
    );
    assert!(
        outcome.closed,
        "the connection is closed after requests_per_connection_max"
    );

    // The server still serves normally.
    assert_eq!(
        server.client().get("/healthz").expect(200),
        json!({"status": "ok"})
    );
}

#[test]
fn connection_cap_answers_503() {
    let site = Site::new();
    let server = Server::start(
        &site,
        &Options::default().config("[limits]\nconnections_max = 4\n"),
    );
    let addr = server.addr();
    // Four busy connections, each proven accepted by one keep-alive request and then
    // holding half a request head (so none is idle: an idle one would make room).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .expect("written");
        let outcome = read_until(&mut stream, 1, BOUND);
        assert_eq!(outcome.responses.first().map(|r| r.status), Some(200));
        stream
            .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
            .expect("written");
        held.push(stream);
    }
    // Let the server read those halves (until then the connections look idle); 2 s,
    // for a loaded machine, within the header read timeout (10 s).
    std::thread::sleep(Duration::from_secs(2));
    // The fifth gets a 503 with Retry-After and is closed.
    let outcome = exchange(
        addr,
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
        1,
        BOUND,
    );
    let answer = outcome.responses.first().expect("an answer over the cap");
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        answer.header("retry-after").is_some(),
        "503 without Retry-After"
    );
    // Once one is closed, new connections are served again.
    // (The head deadline, 10 s by default, is far beyond this test's exchanges.)
    drop(held.pop());
    wait_for("a connection slot to free up", BOUND, || {
        let answer = server.client().send(Req {
            method: "GET",
            path: "/healthz",
            ..Req::default()
        });
        answer.ok().filter(|a| a.status == 200)
    });
}

#[test]
fn listener_protocol_edges() {
    let site = Site::new();
    let server = Server::start(
        &site,
        &Options::default()
            .config("[limits]\nidle_timeout_ms = 500\nheader_read_timeout_ms = 2000\n"),
    );
    let addr = server.addr();
    let host = format!("Host: {addr}\r\n");
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    let admin = server.admin();
    create_tenant(&admin, "tenant_edges");
    let tenant_auth = format!("{auth}Herald-Tenant: tenant_edges\r\n");

    // A chunked body is accepted.
    let event = r#"{"type":"order.created","data":{"chunked":true}}"#;

    // A body that arrives slowly (well within body_read_timeout_ms, beyond
    // header_read_timeout_ms) is still accepted.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\n{host}{tenant_auth}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                event.len(),
                &event[..5]
            )
            .as_bytes(),
        )
        .expect("head written");
    std::thread::sleep(Duration::from_millis(2500));
    let _ = stream.write_all(&event.as_bytes()[5..]);
    let outcome = read_until(&mut stream, 1, BOUND);
    assert_eq!(
        outcome.responses.first().map(|r| r.status),
        Some(202),
        "a body slower than header_read_timeout_ms but within body_read_timeout_ms: {:?}",
        outcome.responses.first().map(Resp::text)
    );

    let (first, second) = event.split_at(10);
    let chunked = format!(
        "POST /v1/events HTTP/1.1\r\n{host}{tenant_auth}Content-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    let outcome = exchange(addr, chunked.as_bytes(), 1, BOUND);
    let answer = outcome
        .responses
        .first()
        .expect("an answer to a chunked body");
    assert_eq!(answer.status, 202, "{}", answer.text());
    assert_eq!(answer.json()["data"], json!({"chunked": true}));

    // Expect: 100-continue gets an interim 100 (skipped by the parser), then the answer.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\n{host}{tenant_auth}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
                event.len()
            )
            .as_bytes(),
        )
        .expect("head written");
    // Read the interim answer byte by byte up to its blank line (bounded by BOUND per
    // read and by the length of a short head).
    stream.set_read_timeout(Some(BOUND)).expect("timeout");
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") && interim.len() < 256 {
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut stream, &mut byte) {
            Ok(1) => interim.push(byte[0]),
            _ => break,
        }
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "expected 100 Continue, got {:?}",
        String::from_utf8_lossy(&interim)
    );
    stream.write_all(event.as_bytes()).expect("body written");
    let outcome = read_until(&mut stream, 1, BOUND);
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(202));

    // A head over 16 KiB: 431; garbage: 400; HTTP/1.0: answered and closed.
    let huge = format!(
        "GET /healthz HTTP/1.1\r\n{host}X-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let outcome = exchange(addr, huge.as_bytes(), 1, BOUND);
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(431));
    let outcome = exchange(addr, b"HELLO THERE\r\n\r\n", 1, BOUND);
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(400));
    let outcome = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n", 2, BOUND);
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(200));
    assert!(outcome.closed, "HTTP/1.0 without keep-alive is closed");

    // An idle keep-alive connection is closed after idle_timeout_ms.
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(format!("GET /healthz HTTP/1.1\r\n{host}\r\n").as_bytes())
        .expect("written");
    let outcome = read_until(&mut stream, 1, BOUND);
    assert_eq!(outcome.responses.first().map(|r| r.status), Some(200));
    let (closed, _) = closed_within(&mut stream, BOUND);
    assert!(
        closed,
        "an idle keep-alive connection outlived idle_timeout_ms = 500"
    );
}
