//! The listener against a real server on 127.0.0.1:0 (one shard, a temporary data
//! directory), spoken to over raw TCP so that framing can be checked byte by byte.
//! Every read has a socket timeout, so a defect fails the test instead of hanging it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use herald_api::{Config, Server};
use herald_http::{Limits, ResponseParser};

const ADMIN_KEY: &str = "admin-key-for-listener-tests-0123456789";
/// Upper bound on any one read: generous, it only turns a hang into a failure.
const READ_TIMEOUT: Duration = Duration::from_secs(20);

struct Running {
    server: Option<Server>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(adjust: impl FnOnce(&mut Config)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            shards: 1,
            ..Config::default()
        };
        adjust(&mut config);
        let server = Server::start(config, Some(ADMIN_KEY.to_string())).unwrap();
        Running {
            server: Some(server),
            _dir: dir,
        }
    }

    fn connect(&self) -> TcpStream {
        let addr = self.server.as_ref().unwrap().local_addr();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.shutdown();
        }
    }
}

/// Reads answers off `stream`; `heads[i]` says whether answer `i` answers a HEAD.
fn read_answers(stream: &mut TcpStream, heads: &[bool]) -> Vec<herald_http::Response> {
    let mut parser = ResponseParser::new(Limits::default());
    let mut answers = Vec::new();
    let mut pending = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while answers.len() < heads.len() {
        parser.set_request_is_head(heads[answers.len()]);
        let mut fed = 0;
        loop {
            let (used, response) = parser.feed(&pending[fed..]).unwrap();
            fed += used;
            match response {
                Some(response) => {
                    answers.push(response);
                    if answers.len() == heads.len() {
                        break;
                    }
                    parser.set_request_is_head(heads[answers.len()]);
                }
                None if fed == pending.len() => break,
                None => {}
            }
        }
        pending.drain(..fed);
        if answers.len() == heads.len() {
            assert!(
                pending.is_empty(),
                "bytes after the last answer: {pending:?}"
            );
            break;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed after {} answers", answers.len());
        pending.extend_from_slice(&buf[..n]);
    }
    answers
}

/// Reads until the server closes, returning everything it sent.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn head_answers_have_no_body_and_pipelining_keeps_its_order() {
    let running = Running::start(|_| {});
    let mut stream = running.connect();
    let host = "Host: x\r\n";
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    let requests = format!(
        "HEAD /healthz HTTP/1.1\r\n{host}\r\n\
         GET /healthz HTTP/1.1\r\n{host}\r\n\
         HEAD /v1/tenants HTTP/1.1\r\n{host}{auth}\r\n\
         GET /v1/nope HTTP/1.1\r\n{host}\r\n\
         GET /v1/tenants HTTP/1.1\r\n{host}{auth}\r\n"
    );
    stream.write_all(requests.as_bytes()).unwrap();
    let answers = read_answers(&mut stream, &[true, false, true, false, false]);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 404, 200]);
    assert!(answers[0].body.is_empty());
    assert_eq!(
        answers[0].header("content-length"),
        Some(answers[1].body.len().to_string().as_bytes())
    );
    assert_eq!(answers[1].body, br#"{"status":"ok"}"#);
    assert!(answers[2].body.is_empty());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&answers[4].body).unwrap()["data"],
        serde_json::json!([])
    );
}

#[test]
fn over_the_connection_cap_an_idle_connection_makes_room_else_a_503_that_closes() {
    let running = Running::start(|config| config.limits.connections_max = 1);
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = running.connect();
    first.write_all(get).unwrap();
    // Answered: the first connection holds the only slot, and is now idle.
    assert_eq!(read_answers(&mut first, &[false])[0].status, 200);
    // A second one closes it and is served.
    let mut second = running.connect();
    second.write_all(get).unwrap();
    assert_eq!(read_answers(&mut second, &[false])[0].status, 200);
    assert_eq!(
        read_to_close(&mut first),
        "",
        "the idle connection made room"
    );
    // With the only connection busy (half a request head, read by the server before the
    // third arrives), a third gets a 503 and is closed.
    second.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    // Long enough for the server to read it on a loaded machine (it waits up to its
    // header read timeout, 10 s, for the rest).
    std::thread::sleep(Duration::from_secs(2));
    let mut third = running.connect();
    third.write_all(get).unwrap();
    let answer = read_to_close(&mut third);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");
    // The busy connection still works.
    second.write_all(b"Host: x\r\n\r\n").unwrap();
    assert_eq!(read_answers(&mut second, &[false])[0].status, 200);
}

/// A connection to `to` from `source` (another loopback address: another client).
fn connect_from(source: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &std::net::SocketAddr::new(source.into(), 0)).unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream
}

#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    let running = Running::start(|config| config.limits.connections_per_address_max = 2);
    let addr = running.server.as_ref().unwrap().local_addr();
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two connections that are never idle (half a head each) from 127.0.0.1.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = running.connect();
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    // A third from the same address is refused, with what to do.
    let mut third = running.connect();
    third.write_all(get).unwrap();
    let answer = read_to_close(&mut third);
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("Retry-After: 1\r\n"), "{answer}");
    assert!(
        answer.contains(r#""code":"too_many_connections""#),
        "{answer}"
    );
    assert!(
        answer.contains("limits.connections_per_address_max"),
        "{answer}"
    );
    // Another client is served meanwhile.
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), addr);
    other.write_all(get).unwrap();
    assert_eq!(read_answers(&mut other, &[false])[0].status, 200);
    // The held connections still work; one closed frees its place for a new one.
    held[0].write_all(b"Host: x\r\n\r\n").unwrap();
    assert_eq!(read_answers(&mut held[0], &[false])[0].status, 200);
    drop(held.remove(0));
    let answer = first_status_with_room(&running, get);
    assert_eq!(answer, 200);
}

#[test]
fn refusals_under_way_take_no_other_clients_room() {
    let running = Running::start(|config| {
        config.limits.connections_max = 6;
        config.limits.connections_per_address_max = 2;
    });
    let addr = running.server.as_ref().unwrap().local_addr();
    let get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    // Two busy connections from 127.0.0.1, each proven served once and then holding
    // half a head (so neither is idle: an idle one would make room).
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut stream = running.connect();
            stream.write_all(get).unwrap();
            assert_eq!(read_answers(&mut stream, &[false])[0].status, 200);
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    // Let the server read those halves (until then the connections look idle); 2 s,
    // for a loaded machine, within the header read timeout (10 s).
    std::thread::sleep(Duration::from_secs(2));
    // Twice the cap's worth of connections from the same address, each refused and
    // kept open: the server holds each for its answer's drain (up to a second).
    let refused: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut stream = running.connect();
            stream.write_all(get).unwrap();
            let answer = read_to_close(&mut stream);
            assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
            stream
        })
        .collect();
    // Another client is served: the refusals under way are not in the server's count.
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 2), addr);
    other.write_all(get).unwrap();
    assert_eq!(read_answers(&mut other, &[false])[0].status, 200);
    drop(refused);
}

/// Connects from 127.0.0.1 until a request is answered other than 429 (a closed
/// connection's place frees once the server has seen it close); returns that status.
fn first_status_with_room(running: &Running, request: &[u8]) -> u16 {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let mut stream = running.connect();
        stream.write_all(request).unwrap();
        let status = read_answers(&mut stream, &[false])[0].status;
        if status != 429 || std::time::Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_framing_large_bodies_and_slow_heads_are_answered_then_closed() {
    let running = Running::start(|config| {
        config.limits.body_bytes_max = 1024;
        config.limits.header_read_timeout_ms = 300;
        config.limits.idle_timeout_ms = 300;
        config.limits.body_read_timeout_ms = 300;
    });
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    let cases: &[(&str, String, &str)] = &[
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            "HTTP/1.1 400 ",
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\n\
                 Content-Length: 3\r\n\r\n{{}}"
            ),
            "HTTP/1.1 400 ",
        ),
        (
            "a declared body over limits.body_bytes_max, with Expect: 100-continue",
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Expect: 100-continue\r\nContent-Length: 4096\r\n\r\n"
            ),
            "HTTP/1.1 413 ",
        ),
        (
            "a chunked body over limits.body_bytes_max",
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n800\r\n{}\r\n0\r\n\r\n",
                " ".repeat(0x800)
            ),
            "HTTP/1.1 413 ",
        ),
        (
            "a head that never ends (slowloris)",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_string(),
            "HTTP/1.1 408 ",
        ),
        (
            "a body that stops short",
            format!(
                "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"id\":"
            ),
            "HTTP/1.1 408 ",
        ),
    ];
    for (what, request, status_line) in cases {
        let mut stream = running.connect();
        stream.write_all(request.as_bytes()).unwrap();
        let answer = read_to_close(&mut stream);
        assert!(answer.starts_with(status_line), "{what}: {answer}");
        // A timeout names the setting that ended it.
        if status_line.contains("408") {
            let setting = if what.contains("body") {
                "limits.body_read_timeout_ms"
            } else {
                "limits.header_read_timeout_ms"
            };
            assert!(answer.contains(setting), "{what}: {answer}");
        }
        assert!(answer.contains("Connection: close\r\n"), "{what}: {answer}");
        assert!(!answer.contains("100 Continue"), "{what}: {answer}");
    }
    // An idle connection is closed without an answer.
    let mut idle = running.connect();
    assert_eq!(read_to_close(&mut idle), "");
}

#[test]
fn expect_100_continue_gets_an_interim_answer_before_the_body() {
    let running = Running::start(|_| {});
    let mut stream = running.connect();
    let body = r#"{"id":"acme"}"#;
    let head = format!(
        "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let mut got = vec![0u8; interim.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(got, interim);
    stream.write_all(body.as_bytes()).unwrap();
    let answer = &read_answers(&mut stream, &[false])[0];
    assert_eq!(
        answer.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[test]
fn the_tls_listener_serves_https_and_drops_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let pki = herald_sink::Pki::generate("listener test CA").unwrap();
    let leaf = pki.issue(&["localhost"]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &leaf.chain_pem).unwrap();
    std::fs::write(&key_path, &leaf.key_pem).unwrap();
    let running = Running::start(|config| {
        config.tls = Some(herald_api::config::TlsConfig {
            cert: cert_path.clone(),
            key: key_path.clone(),
        });
    });

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der().clone()).unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(herald_sink::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(client_config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, running.connect());
    let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    write!(
        tls,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n\
         HEAD /v1/tenants HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n\
         GET /v1/tenants HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    tls.flush().unwrap();
    let mut all = Vec::new();
    // The server closes after the last answer (close_notify, then EOF).
    tls.read_to_end(&mut all).unwrap();
    let mut parser = ResponseParser::new(Limits::default());
    let mut statuses = Vec::new();
    let mut rest = &all[..];
    for head in [false, true, false] {
        parser.set_request_is_head(head);
        let (used, response) = parser.feed(rest).unwrap();
        rest = &rest[used..];
        let response = response.expect("a whole answer");
        assert_eq!(response.body.is_empty(), head);
        statuses.push(response.status);
    }
    assert!(rest.is_empty());
    assert_eq!(statuses, [200, 200, 200]);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = running.connect();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_to_close(&mut plain);
    assert!(!answer.contains("200"), "{answer:?}");
}

/// `herald_api_requests_total` of `route` answered 200, from the server's `/metrics`.
fn answered(running: &Running, route: &str) -> u64 {
    let mut stream = running.connect();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = read_to_close(&mut stream);
    let series = format!("herald_api_requests_total{{route=\"{route}\",status=\"200\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// A client that pipelines requests for large answers and reads none holds about one
/// answer on the server beyond what the sockets' buffers take: past 64 KiB of waiting
/// answers the server writes them and reads no further request, instead of building as
/// many answers as the count allows (here all 300 of the ~96 KB OpenAPI document, 28 MB;
/// the kernel's buffers take ~4 MB of them on loopback).
#[test]
fn a_client_that_does_not_read_holds_about_one_large_answer() {
    const REQUESTS: usize = 300;
    let running = Running::start(|config| config.limits.pipelined_requests_max = 1000);
    let mut stream = running.connect();
    let requests = "GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(REQUESTS);
    stream.write_all(requests.as_bytes()).unwrap();
    // Wait until the server stops answering (the count stays put for half a second).
    let mut last = u64::MAX;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(500));
        let now = answered(&running, "/v1/openapi.json");
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    let built = answered(&running, "/v1/openapi.json");
    eprintln!("{built} answers built while the client read none");
    assert!(built >= 1, "no answer built");
    assert!(
        built < REQUESTS as u64 / 2,
        "{built} answers of ~96 KB built for a client that reads none"
    );
    // Reading now gets every answer, in order.
    let answers = read_answers(&mut stream, &[false; REQUESTS]);
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && !a.body.is_empty()));
}

/// A request without a valid key to a route that needs one is answered 401 on its head:
/// no `100 Continue` is sent and its body is not waited for (before, the server read
/// and buffered up to `body_bytes_max` of it first, for anyone). A request with the key
/// is read whole as before.
#[test]
fn a_request_without_a_key_is_refused_before_its_body() {
    let running = Running::start(|_| {});
    let body_len = 200 * 1024;
    for (expect, auth) in [
        ("Expect: 100-continue\r\n", String::new()),
        ("", String::new()),
        ("", "Authorization: Bearer not-a-key\r\n".to_owned()),
    ] {
        let mut stream = running.connect();
        // Long enough for an answer on the head, far shorter than the body timeout.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let head = format!(
            "POST /v1/webhooks HTTP/1.1\r\nHost: x\r\n{auth}{expect}Content-Type: \
             application/json\r\nContent-Length: {body_len}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        // Ten bytes of the body, then nothing.
        if expect.is_empty() {
            stream.write_all(b"{\"url\": \"h").unwrap();
        }
        let text = read_to_close(&mut stream);
        assert!(
            text.starts_with("HTTP/1.1 401 "),
            "{expect:?} {auth:?}: {text}"
        );
        assert!(!text.contains("100 Continue"), "{text}");
    }
    // With the admin key the body is read (and the missing tenant header refused).
    let mut stream = running.connect();
    let body = br#"{"url":"https://example.com/h","events":["*"]}"#;
    let head = format!(
        "POST /v1/webhooks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Expect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut continued = [0u8; 25];
    stream.read_exact(&mut continued).unwrap();
    assert_eq!(&continued, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).unwrap();
    let answer = &read_answers(&mut stream, &[false])[0];
    assert_ne!(answer.status, 401, "{answer:?}");
}
