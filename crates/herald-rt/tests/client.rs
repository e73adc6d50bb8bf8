//! The outbound client against loopback receivers: plain, TLS and Python's http.server.

mod support;

use bytes::Bytes;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use herald_rt::{
    ClientConfig, ClientStats, HttpClient, OutboundRequest, PoolConfig, TransportError,
    TrustAnchors, USER_AGENT,
};
use herald_sink::hostile::{closed_port, BlackHole};
use support::{loopback_config, plain_receiver, run, url, Behaviour};

fn body() -> Bytes {
    Bytes::from_static(br#"{"type":"order.created","id":"evt_1"}"#)
}

/// Posts `body()` to `url` and expects an answer.
async fn post(client: &HttpClient, url: &herald_http::Url) -> herald_http::Response {
    client
        .send(OutboundRequest::new(url.clone(), body()))
        .await
        .unwrap()
}

#[test]
fn post_carries_headers_and_body_and_reuses_the_connection() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/hooks/a?x=1");
    let stats = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        for i in 0..3 {
            let request = OutboundRequest::new(url.clone(), body())
                .header("webhook-id", format!("msg_{i}"))
                .header("X-Custom", "yes");
            let response = client.send(request).await.unwrap();
            assert_eq!(response.status, 200);
            assert_eq!(response.body, b"ok");
            assert!(response.keep_alive);
        }
        assert_eq!(client.idle_connections(&url), 1);
        client.stats()
    });
    assert_eq!(
        receiver.connections(),
        1,
        "one keep-alive connection for all requests"
    );
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.connections_reused, 2);
    let seen = receiver.received();
    assert_eq!(seen.len(), 3);
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hooks/a?x=1");
        assert_eq!(
            request.header("host"),
            Some(receiver.addr().to_string().as_str())
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some(USER_AGENT));
        assert!(USER_AGENT.starts_with("herald/"));
        assert_eq!(
            request.header("webhook-id"),
            Some(format!("msg_{i}").as_str())
        );
        assert_eq!(request.header("x-custom"), Some("yes"));
        assert_eq!(
            request.header("content-length"),
            Some(body().len().to_string().as_str())
        );
        assert_eq!(request.body, &body()[..]);
        assert_eq!(request.connection, 1);
    }
}

#[test]
fn caller_content_type_replaces_the_default() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/");
    run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let request = OutboundRequest::new(url, body())
            .header("Content-Type", "application/cloudevents+json")
            .header("User-Agent", "custom/1");
        client.send(request).await.unwrap();
    });
    let seen = receiver.received();
    let ct: Vec<_> = seen[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .collect();
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].1, b"application/cloudevents+json");
    assert_eq!(seen[0].header("user-agent"), Some("custom/1"));
}

#[test]
fn invalid_requests_are_refused_before_connecting() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/");
    let errors = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let mut errors = Vec::new();
        let cases = [
            OutboundRequest::new(url.clone(), body()).header("X-Evil", "a\r\nInjected: 1"),
            OutboundRequest::new(url.clone(), body()).header("Bad Name", "v"),
            OutboundRequest::new(url.clone(), body()).header("Content-Length", "1"),
            {
                let mut r = OutboundRequest::new(url.clone(), body());
                for i in 0..=herald_rt::REQUEST_HEADERS_MAX {
                    r = r.header(format!("x-h{i}"), "v");
                }
                r
            },
        ];
        for request in cases {
            errors.push(client.send(request).await.unwrap_err());
        }
        errors
    });
    for e in &errors {
        assert!(matches!(e, TransportError::InvalidRequest(_)), "{e}");
    }
    assert_eq!(receiver.connections(), 0);
}

#[test]
fn connection_close_is_honoured() {
    let receiver = plain_receiver(Behaviour::OkThenClose);
    let url = url(&receiver, "http", "/");
    let stats = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        for _ in 0..2 {
            let response = post(&client, &url).await;
            assert!(!response.keep_alive);
        }
        assert_eq!(client.idle_connections(&url), 0);
        client.stats()
    });
    assert_eq!(receiver.connections(), 2);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(stats.connections_reused, 0);
}

#[test]
fn dead_reused_connection_is_retried_once_on_a_fresh_one() {
    let receiver = plain_receiver(Behaviour::DropSecondRequest);
    let url = url(&receiver, "http", "/");
    let stats = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        for _ in 0..2 {
            let response = post(&client, &url).await;
            assert_eq!(response.status, 200);
        }
        client.stats()
    });
    assert_eq!(stats.stale_retries, 1);
    assert_eq!(receiver.connections(), 2);
    // At-least-once: the receiver saw the second request twice (once per connection).
    let seen = receiver.received();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[1].connection, 1);
    assert_eq!(seen[2].connection, 2);
}

#[test]
fn a_fresh_connection_failing_is_not_retried() {
    // The receiver accepts and closes without answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepter = std::thread::spawn(move || {
        let mut count = 0;
        // Ends at the test's own closing connection, made after the client is done.
        while let Ok((stream, _)) = listener.accept() {
            count += 1;
            let mut buf = [0u8; 1024];
            let n = std::io::Read::read(&mut &stream, &mut buf).unwrap_or(0);
            drop(stream);
            if n == 0 {
                break;
            }
        }
        count
    });
    let url = herald_http::Url::parse(&format!("http://{addr}/")).unwrap();
    let (error, stats) = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let error = client
            .send(OutboundRequest::new(url, body()))
            .await
            .unwrap_err();
        (error, client.stats())
    });
    drop(std::net::TcpStream::connect(addr).unwrap());
    assert!(matches!(error, TransportError::Connection(_)), "{error}");
    assert_eq!(stats.stale_retries, 0);
    assert_eq!(
        accepter.join().unwrap(),
        2,
        "one client connection, then the closing one"
    );
}

#[test]
fn egress_refuses_loopback_without_the_allowlist() {
    let receiver = plain_receiver(Behaviour::Ok);
    let by_ip = url(&receiver, "http", "/");
    let by_name =
        herald_http::Url::parse(&format!("http://localhost:{}/", receiver.addr().port())).unwrap();
    let by_mapped = herald_http::Url::parse(&format!(
        "http://[::ffff:127.0.0.1]:{}/",
        receiver.addr().port()
    ))
    .unwrap();
    let (errors, allowed) = run(move || async move {
        let client = HttpClient::new(ClientConfig::new(TrustAnchors::empty()));
        let mut errors = Vec::new();
        for url in [&by_ip, &by_name, &by_mapped] {
            errors.push(
                client
                    .send(OutboundRequest::new(url.clone(), body()))
                    .await
                    .unwrap_err(),
            );
        }
        // With the allowlist, the name resolves and the checked address is used.
        let allowing = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let allowed = allowing
            .send(OutboundRequest::new(by_name, body()))
            .await
            .map(|r| r.status);
        (errors, allowed)
    });
    for e in &errors {
        assert!(matches!(e, TransportError::EgressRefused(_)), "{e}");
        assert!(e.detail().contains("loopback"), "{e}");
    }
    assert_eq!(allowed, Ok(200));
    assert_eq!(
        receiver.connections(),
        1,
        "only the allowed request connected"
    );
}

#[test]
fn https_can_be_required() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/");
    let error = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.egress.require_https = true;
        let client = HttpClient::new(config);
        client
            .send(OutboundRequest::new(url, body()))
            .await
            .unwrap_err()
    });
    assert!(matches!(error, TransportError::EgressRefused(_)), "{error}");
    assert_eq!(receiver.connections(), 0);
}

#[test]
fn connect_refused_and_unresolvable_names_are_classified() {
    let port = closed_port().unwrap();
    let (refused, unresolvable) = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let url = herald_http::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let refused = client
            .send(OutboundRequest::new(url, body()))
            .await
            .unwrap_err();
        let url = herald_http::Url::parse("http://no-such-host.invalid/").unwrap();
        let mut request = OutboundRequest::new(url, body());
        request.connect_timeout_ms = 3_000;
        let unresolvable = client.send(request).await.unwrap_err();
        (refused, unresolvable)
    });
    assert!(matches!(refused, TransportError::Connect(_)), "{refused}");
    assert!(
        matches!(unresolvable, TransportError::Dns(_)),
        "{unresolvable}"
    );
}

#[test]
fn receivers_that_stall_or_dribble_hit_the_request_timeout() {
    let silent = plain_receiver(Behaviour::Silent);
    let dribble = plain_receiver(Behaviour::Drip(Duration::from_millis(20)));
    let urls = [
        url(&silent, "http", "/?token=s3cret"),
        url(&dribble, "http", "/?token=s3cret"),
    ];
    let errors = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let mut errors = Vec::new();
        for url in urls {
            let mut request = OutboundRequest::new(url, body());
            request.request_timeout_ms = 300;
            errors.push(client.send(request).await.unwrap_err());
        }
        errors
    });
    for e in &errors {
        assert!(matches!(e, TransportError::RequestTimeout(_)), "{e}");
        assert!(e.detail().contains("300 ms"), "{e}");
        assert!(
            !e.detail().contains("s3cret"),
            "query strings stay out of details: {e}"
        );
    }
}

/// Endless headers are cut off by the head's limit, an error. A body past the limit
/// (endless, or announced) is cut off too, but its response is still its status: a
/// 200 with a huge echo was taken, a 410 is gone; the connection is closed.
#[test]
fn endless_headers_and_bodies_are_cut_off_by_the_limits() {
    let headers = plain_receiver(Behaviour::EndlessHeaders);
    let bodies = plain_receiver(Behaviour::EndlessChunkedBody);
    let announced = plain_receiver(Behaviour::Oversized(410));
    let urls = [
        url(&headers, "http", "/"),
        url(&bodies, "http", "/"),
        url(&announced, "http", "/"),
    ];
    let answers = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.limits.body_bytes_max = 256 * 1024;
        let client = HttpClient::new(config);
        let mut answers = Vec::new();
        for url in &urls {
            answers.push(
                client
                    .send(OutboundRequest::new(url.clone(), body()))
                    .await
                    .map(|response| (response.status, response.keep_alive)),
            );
            assert_eq!(client.idle_connections(url), 0);
        }
        answers
    });
    assert!(
        matches!(&answers[0], Err(TransportError::Protocol(d)) if d.contains("head")),
        "{:?}",
        answers[0]
    );
    assert_eq!(answers[1], Ok((200, false)));
    assert_eq!(answers[2], Ok((410, false)));
}

#[test]
fn connections_per_origin_are_capped_and_waiters_bounded() {
    let receiver = plain_receiver(Behaviour::Slow(Duration::from_millis(150)));
    let url = url(&receiver, "http", "/");
    let results = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.pool = PoolConfig {
            connections_per_origin_max: 1,
            waiters_per_origin_max: 1,
            ..PoolConfig::default()
        };
        let client = Rc::new(HttpClient::new(config));
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let client = client.clone();
            let url = url.clone();
            tasks.push(glommio::spawn_local(async move {
                client
                    .send(OutboundRequest::new(url, body()))
                    .await
                    .map(|r| r.status)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await);
        }
        results
    });
    let ok = results.iter().filter(|r| matches!(r, Ok(200))).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(TransportError::PoolFull(_))))
        .count();
    assert_eq!((ok, full), (2, 1), "{results:?}");
    assert_eq!(
        receiver.connections(),
        1,
        "the waiter reused the one connection"
    );
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/");
    let stats = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.pool.idle_timeout_ms = 50;
        let client = HttpClient::new(config);
        post(&client, &url).await;
        assert_eq!(client.idle_connections(&url), 1);
        glommio::timer::sleep(std::time::Duration::from_millis(60)).await;
        assert_eq!(client.sweep_idle(), 1);
        assert_eq!(client.idle_connections(&url), 0);
        post(&client, &url).await;
        client.stats()
    });
    assert_eq!(stats.idle_closed, 1);
    assert_eq!(stats.connections_opened, 2);
    assert_eq!(receiver.connections(), 2);
}

/// Python's http.server: HTTP/1.0, no keep-alive, an implementation not written here.
#[test]
fn python_http_server_receives_the_request() {
    const SCRIPT: &str = r#"
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(n).decode()
        out = json.dumps({'path': self.path, 'ct': self.headers.get('Content-Type'),
                          'ua': self.headers.get('User-Agent'), 'id': self.headers.get('webhook-id'),
                          'body': body}).encode()
        self.send_response(202)
        self.send_header('Content-Type', 'application/json')
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is required for this test (.ci/run installs it)");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
    }
    let port: u16 = line.trim().parse().unwrap();
    let url = herald_http::Url::parse(&format!("http://127.0.0.1:{port}/in?a=b")).unwrap();
    let outcome = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let mut responses = Vec::new();
        for i in 0..2 {
            let request =
                OutboundRequest::new(url.clone(), body()).header("webhook-id", format!("msg_{i}"));
            responses.push(client.send(request).await);
        }
        (responses, client.stats())
    });
    let _ = child.kill();
    let _ = child.wait();
    let (responses, stats) = outcome;
    for (i, response) in responses.into_iter().enumerate() {
        let response = response.unwrap();
        assert_eq!(response.status, 202);
        assert!(!response.keep_alive, "HTTP/1.0 without keep-alive");
        let text = String::from_utf8(response.body).unwrap();
        assert!(text.contains(r#""path": "/in?a=b""#), "{text}");
        assert!(text.contains(r#""ct": "application/json""#), "{text}");
        assert!(text.contains(&format!(r#""ua": "{USER_AGENT}""#)), "{text}");
        assert!(text.contains(&format!(r#""id": "msg_{i}""#)), "{text}");
        assert!(text.contains(r#"order.created"#), "{text}");
    }
    assert_eq!(
        stats.connections_opened, 2,
        "a closed connection is never reused"
    );
}

#[test]
fn concurrent_requests_share_a_bounded_set_of_connections() {
    let receiver = plain_receiver(Behaviour::Slow(Duration::from_millis(5)));
    let url = url(&receiver, "http", "/");
    let (statuses, stats) = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.pool.connections_per_origin_max = 4;
        let client = Rc::new(HttpClient::new(config));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let client = client.clone();
                let url = url.clone();
                glommio::spawn_local(async move {
                    client
                        .send(OutboundRequest::new(url, body()))
                        .await
                        .map(|r| r.status)
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for task in tasks {
            statuses.push(task.await);
        }
        (statuses, client.stats())
    });
    assert!(statuses.iter().all(|s| *s == Ok(200)), "{statuses:?}");
    assert!(
        receiver.connections() <= 4,
        "{} connections",
        receiver.connections()
    );
    assert_eq!(stats.connections_opened as usize, receiver.connections());
    assert_eq!(receiver.received().len(), 40);
}

#[test]
fn a_tiny_read_buffer_still_parses_responses_across_reads() {
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "http", "/");
    let statuses = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.read_buffer_bytes = 3;
        let client = HttpClient::new(config);
        let mut statuses = Vec::new();
        for _ in 0..2 {
            let response = post(&client, &url).await;
            assert_eq!(response.body, b"ok");
            statuses.push(response.status);
        }
        statuses
    });
    assert_eq!(statuses, [200, 200]);
    assert_eq!(receiver.connections(), 1);
}

#[test]
fn connections_are_reused_only_after_a_cleanly_framed_response() {
    // (behaviour, pause between requests, connections expected, reuses expected)
    let cases = [
        (Behaviour::Chunked, 0, 1, 1),
        (Behaviour::TrailingGarbage, 0, 2, 0),
        // The pause leaves the receiver's late bytes (30 ms after its answer) time to
        // arrive however slowly it runs.
        (Behaviour::LateGarbage, 500, 2, 0),
    ];
    for (behaviour, pause_ms, connections, reuses) in cases {
        let receiver = plain_receiver(behaviour.clone());
        let url = url(&receiver, "http", "/");
        let (bodies, stats) = run(move || async move {
            let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
            let mut bodies = Vec::new();
            for _ in 0..2 {
                let response = post(&client, &url).await;
                bodies.push(response.body);
                glommio::timer::sleep(std::time::Duration::from_millis(pause_ms)).await;
            }
            (bodies, client.stats())
        });
        let expected: &[u8] = if behaviour == Behaviour::Chunked {
            b"ok!!!"
        } else {
            b"ok"
        };
        assert!(
            bodies.iter().all(|b| b == expected),
            "{behaviour:?}: {bodies:?}"
        );
        assert_eq!(receiver.connections(), connections, "{behaviour:?}");
        assert_eq!(stats.connections_reused, reuses, "{behaviour:?}");
        assert_eq!(stats.stale_retries, 0, "{behaviour:?}");
    }
}

#[test]
fn an_unanswered_connect_hits_the_connect_timeout() {
    let hole = BlackHole::start().unwrap();
    let url = herald_http::Url::parse(&format!("http://{}/", hole.addr())).unwrap();
    let error = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let mut request = OutboundRequest::new(url, body());
        request.connect_timeout_ms = 200;
        client.send(request).await.unwrap_err()
    });
    assert!(
        matches!(error, TransportError::ConnectTimeout(_)),
        "{error}"
    );
}

#[test]
fn the_stale_connection_retry_happens_at_most_once() {
    let receiver = plain_receiver(Behaviour::OnlyFirstAnswered);
    let url = url(&receiver, "http", "/");
    let (first, second, stats) = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let first = client.send(OutboundRequest::new(url.clone(), body())).await;
        let second = client.send(OutboundRequest::new(url, body())).await;
        (
            first.map(|r| r.status),
            second.map(|r| r.status),
            client.stats(),
        )
    });
    assert_eq!(first, Ok(200));
    assert!(
        matches!(second, Err(TransportError::Connection(_))),
        "{second:?}"
    );
    assert_eq!(stats.stale_retries, 1);
    assert_eq!(
        receiver.connections(),
        2,
        "one retry, on one fresh connection"
    );
}

/// Posts to a receiver behaving as `behaviour`, pausing before each request as long as
/// `pauses_ms` says, with pooled connections reused unchecked while idle for less than
/// `check_after_idle_us`, reads waiting on the socket ring or not; every answer must be
/// a 200. Returns the client's counters and the connections the receiver accepted.
fn post_after_pauses(
    behaviour: Behaviour,
    pauses_ms: &'static [u64],
    check_after_idle_us: u64,
    socket_ring: bool,
) -> (ClientStats, usize) {
    let receiver = plain_receiver(behaviour);
    let url = url(&receiver, "http", "/");
    let stats = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.pool.liveness_check_after_idle_us = check_after_idle_us;
        config.socket_ring = socket_ring;
        let client = HttpClient::new(config);
        for pause_ms in pauses_ms {
            glommio::timer::sleep(Duration::from_millis(*pause_ms)).await;
            assert_eq!(post(&client, &url).await.status, 200);
        }
        client.stats()
    });
    (stats, receiver.connections())
}

#[test]
fn a_connection_idle_for_less_than_the_threshold_is_reused_unchecked() {
    for socket_ring in [true, false] {
        // Every reuse within a minute: no check.
        let (stats, connections) =
            post_after_pauses(Behaviour::Ok, &[0, 0, 100], 60_000_000, socket_ring);
        assert_eq!(connections, 1);
        assert_eq!(stats.connections_reused, 2);
        assert_eq!(stats.liveness_checks, 0);
        // A threshold of zero checks every reuse; on the socket ring, which saw nothing
        // arrive after each answer, without a look at the socket.
        let (stats, connections) = post_after_pauses(Behaviour::Ok, &[0, 0, 100], 0, socket_ring);
        assert_eq!(connections, 1);
        assert_eq!(stats.connections_reused, 2);
        assert_eq!(stats.liveness_checks, 2);
        let peeks = if socket_ring { 0 } else { 2 };
        assert_eq!(stats.liveness_peeks, peeks, "socket ring {socket_ring}");
    }
}

#[test]
fn a_connection_the_receiver_closed_while_idle_is_not_reused() {
    for socket_ring in [true, false] {
        // A receiver with a short keep-alive timeout: it closes each connection 10 ms
        // after its answer, without `Connection: close`. The default threshold (1 ms) is
        // far below the 500 ms pause, which leaves the close time to arrive on a loaded
        // machine.
        let (stats, connections) = post_after_pauses(
            Behaviour::CloseWhenIdle(Duration::from_millis(10)),
            &[0, 500],
            PoolConfig::default().liveness_check_after_idle_us,
            socket_ring,
        );
        // The check saw the close (on the socket ring, the ring reported it): a fresh
        // connection, no request sent into a dead one.
        assert_eq!(stats.liveness_checks, 1, "socket ring {socket_ring}");
        assert_eq!(stats.liveness_peeks, u64::from(!socket_ring));
        assert_eq!(stats.stale_retries, 0);
        assert_eq!(stats.connections_opened, 2);
        assert_eq!(connections, 2);
    }
}

#[test]
fn bytes_nobody_asked_for_keep_an_idle_connection_from_reuse() {
    for socket_ring in [true, false] {
        // 30 ms after its answer the receiver writes bytes no request asked for (the
        // 500 ms pause leaves them time to arrive on a loaded machine).
        let (stats, connections) = post_after_pauses(
            Behaviour::LateGarbage,
            &[0, 500],
            PoolConfig::default().liveness_check_after_idle_us,
            socket_ring,
        );
        // The ring saw bytes arrive; a look told them from a close.
        assert_eq!(stats.liveness_checks, 1, "socket ring {socket_ring}");
        assert_eq!(stats.liveness_peeks, 1);
        assert_eq!(stats.stale_retries, 0);
        assert_eq!(stats.connections_opened, 2);
        assert_eq!(connections, 2);
    }
}

/// A receiver that answers one request with `200 ok` and then sets the flag it returns
/// when the client closes the connection (end of stream).
fn receiver_that_waits_for_the_close() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>)
{
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen_close = Arc::clone(&closed);
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // The request: a head and the body it announces.
        loop {
            let n = socket.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before its request was complete");
            seen.extend_from_slice(&buf[..n]);
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if seen.len() >= end + 4 + length {
                    break;
                }
            }
        }
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        // Then nothing more comes but the close.
        if matches!(socket.read(&mut buf), Ok(0)) {
            seen_close.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (addr, closed)
}

/// A connection the client closes is closed on the wire at once, whichever way its
/// reads wait: a poll left in the socket ring would hold the socket open for as long as
/// the ring lives.
#[test]
fn connections_the_client_closes_reach_the_receiver_as_closed() {
    for socket_ring in [true, false] {
        for drop_client in [false, true] {
            let (addr, closed) = receiver_that_waits_for_the_close();
            let url = herald_http::Url::parse(&format!("http://{addr}/hook")).unwrap();
            let seen = Arc::clone(&closed);
            let (in_use, closed_while_running) = run(move || async move {
                let mut config = loopback_config(TrustAnchors::empty());
                config.socket_ring = socket_ring;
                config.pool.idle_timeout_ms = 20;
                let client = HttpClient::new(config);
                let response = post(&client, &url).await;
                assert_eq!(response.status, 200);
                assert_eq!(response.body, b"ok");
                let in_use = client.socket_ring_in_use();
                // Kept alive until the end of the wait when not dropped now.
                let mut kept = None;
                if drop_client {
                    drop(client);
                } else {
                    glommio::timer::sleep(Duration::from_millis(30)).await;
                    assert_eq!(client.sweep_idle(), 1);
                    kept = Some(client);
                }
                // The executor (and the client, unless dropped) stays up meanwhile.
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while !seen.load(std::sync::atomic::Ordering::SeqCst)
                    && std::time::Instant::now() < deadline
                {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                drop(kept);
                (in_use, seen.load(std::sync::atomic::Ordering::SeqCst))
            });
            assert_eq!(
                in_use,
                Some(socket_ring),
                "this kernel has COOP_TASKRUN rings; the setting decides"
            );
            assert!(
                closed_while_running,
                "socket ring {socket_ring}, client dropped {drop_client}: the receiver saw \
                 the close while the client's executor still ran"
            );
        }
    }
}

/// With the socket ring, a connection is read only once the kernel reported it readable:
/// a response that comes a little after its request costs no read that finds nothing,
/// and one that comes a byte at a time is still read to its end (each short read waits
/// for the next report, none is lost).
#[test]
fn the_socket_ring_reads_only_what_the_kernel_reported() {
    let slow = plain_receiver(Behaviour::Slow(Duration::from_millis(3)));
    let slow_url = url(&slow, "http", "/slow");
    let drip = plain_receiver(Behaviour::Drip(Duration::from_millis(1)));
    let drip_url = url(&drip, "http", "/drip");
    const REQUESTS: u64 = 20;
    let (in_use, stats, dripped) = run(move || async move {
        let mut config = loopback_config(TrustAnchors::empty());
        config.socket_ring = true;
        let client = HttpClient::new(config);
        for _ in 0..REQUESTS {
            let response = post(&client, &slow_url).await;
            assert_eq!(response.status, 200);
            assert_eq!(response.body, b"ok");
        }
        let stats = client.stats();
        let dripped = post(&client, &drip_url).await;
        (client.socket_ring_in_use(), stats, dripped)
    });
    assert_eq!(in_use, Some(true), "this kernel has COOP_TASKRUN rings");
    assert_eq!(stats.connections_opened, 1);
    assert_eq!(stats.connections_reused, REQUESTS - 1);
    // Reading as soon as a request is written finds nothing at least once per request
    // (the receiver answers 3 ms later); only a stale report may cost such a read now.
    assert!(
        stats.reads_found_empty < REQUESTS / 2,
        "{} reads found nothing for {REQUESTS} requests",
        stats.reads_found_empty
    );
    assert_eq!(dripped.status, 200);
    assert_eq!(dripped.body, b"ok");
}

/// A receiver that answers twice: its second, unasked-for answer (a `299`, 5 ms after
/// the first) is never taken for the next request's. On the socket ring the ring saw it
/// arrive, so the idle connection is looked at and dropped even inside the window that
/// spares the look (here a minute); off the ring a look past the window (0) finds it.
#[test]
fn a_receiver_that_answered_twice_never_has_its_extra_answer_taken_for_the_next() {
    for (socket_ring, check_after_idle_us) in [(true, 60_000_000), (false, 0)] {
        let receiver = plain_receiver(Behaviour::AnsweredTwice);
        let url = url(&receiver, "http", "/");
        let (statuses, stats) = run(move || async move {
            let mut config = loopback_config(TrustAnchors::empty());
            config.pool.liveness_check_after_idle_us = check_after_idle_us;
            config.socket_ring = socket_ring;
            let client = HttpClient::new(config);
            let mut statuses = Vec::new();
            for _ in 0..3 {
                statuses.push(post(&client, &url).await.status);
                // Time for the extra answer to arrive, however slowly the receiver runs.
                glommio::timer::sleep(Duration::from_millis(500)).await;
            }
            (statuses, client.stats())
        });
        assert_eq!(statuses, [200; 3], "socket ring {socket_ring}");
        assert_eq!(stats.connections_reused, 0, "socket ring {socket_ring}");
        assert_eq!(stats.liveness_checks, 2, "socket ring {socket_ring}");
        assert_eq!(stats.liveness_peeks, 2, "socket ring {socket_ring}");
        assert_eq!(receiver.connections(), 3);
    }
}
