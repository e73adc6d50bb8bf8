//! https receivers: rustls server with a herald-sink PKI certificate, trusted via the extra-CA file.

mod support;

use bytes::Bytes;
use std::io::Write;
use std::time::Duration;

use herald_rt::{HttpClient, OutboundRequest, TransportError, TrustAnchors};
use support::{loopback_config, plain_receiver, run, test_pki, tls_receiver, url, Behaviour};

fn body() -> Bytes {
    Bytes::from_static(br#"{"type":"payment.processed"}"#)
}

/// System roots plus the test CA from a PEM file, as an operator would configure it.
fn trust_with_file(ca_pem: &str) -> TrustAnchors {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(ca_pem.as_bytes()).unwrap();
    let mut trust = TrustAnchors::system();
    assert_eq!(trust.add_pem_file(file.path()).unwrap(), 1);
    trust
}

#[test]
fn https_keeps_alive_and_resumes_sessions_on_reconnect() {
    let pki = test_pki();
    let keep_alive = tls_receiver(Behaviour::Ok, pki.server_config.clone());
    let closing = tls_receiver(Behaviour::OkThenClose, pki.server_config.clone());
    let port = |r: &support::Hostile| r.addr().port();
    // By name (SNI "localhost") and by IP literal (no SNI; the IP SAN is checked).
    let by_name =
        herald_http::Url::parse(&format!("https://localhost:{}/tls", port(&keep_alive))).unwrap();
    let by_ip = url(&keep_alive, "https", "/ip");
    let closing_url =
        herald_http::Url::parse(&format!("https://localhost:{}/c", port(&closing))).unwrap();
    let trust = trust_with_file(&pki.ca_pem);
    let (statuses, stats) = run(move || async move {
        let mut config = loopback_config(trust);
        config.egress.require_https = true;
        let client = HttpClient::new(config);
        let mut statuses = Vec::new();
        for url in [&by_name, &by_name, &by_ip, &closing_url, &closing_url] {
            let response = client
                .send(OutboundRequest::new(url.clone(), body()).header("webhook-id", "msg_1"))
                .await
                .unwrap();
            statuses.push(response.status);
        }
        (statuses, client.stats())
    });
    assert_eq!(statuses, [200; 5]);
    // localhost and 127.0.0.1 are different origins: two keep-alive connections.
    assert_eq!(keep_alive.connections(), 2);
    assert_eq!(closing.connections(), 2);
    assert_eq!(stats.connections_opened, 4);
    assert_eq!(stats.connections_reused, 1);
    assert!(
        stats.tls_resumed >= 1,
        "reconnecting to a known server resumes: {stats:?}"
    );
    let seen = keep_alive.received();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/tls");
    assert_eq!(seen[0].header("webhook-id"), Some("msg_1"));
    assert_eq!(seen[0].body, &body()[..]);
    assert_eq!(seen[2].target, "/ip");
}

/// Over TLS too, a record that arrived on an idle connection keeps it from reuse: here a
/// whole second answer (a `299`) that a reused connection would have handed to the next
/// request. Checked inside the window that spares a look off the socket ring (a minute):
/// on the ring, what arrived is known at every reuse.
/// The statuses of three requests to `url`, `pause` apart.
async fn statuses_of_three(
    client: &HttpClient,
    url: &herald_http::Url,
    pause: Duration,
) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .send(OutboundRequest::new(url.clone(), body()))
            .await
            .unwrap();
        statuses.push(response.status);
        glommio::timer::sleep(pause).await;
    }
    statuses
}

#[test]
fn an_extra_answer_over_tls_keeps_the_connection_from_reuse() {
    let pki = test_pki();
    let receiver = tls_receiver(Behaviour::AnsweredTwice, pki.server_config.clone());
    let url = url(&receiver, "https", "/twice");
    let trust = trust_with_file(&pki.ca_pem);
    let (statuses, stats) = run(move || async move {
        let mut config = loopback_config(trust);
        config.pool.liveness_check_after_idle_us = 60_000_000;
        let client = HttpClient::new(config);
        // Time for the extra answer (5 ms after the first) to arrive on a loaded machine.
        let statuses = statuses_of_three(&client, &url, Duration::from_millis(500)).await;
        (statuses, client.stats())
    });
    assert_eq!(statuses, [200; 3], "{stats:?}");
    assert_eq!(stats.connections_reused, 0, "{stats:?}");
    assert_eq!(stats.connections_opened, 3, "{stats:?}");
    assert_eq!(receiver.connections(), 3);
}

/// A second answer decrypted with the first, past the end of the read that finished the
/// first, is seen: the connection is not reused (its next request would take it).
#[test]
fn an_extra_answer_held_by_the_session_keeps_the_connection_from_reuse() {
    let pki = test_pki();
    let read_buffer = loopback_config(trust_with_file(&pki.ca_pem)).read_buffer_bytes;
    let receiver = tls_receiver(
        Behaviour::AnsweredTwiceAtOnce(read_buffer),
        pki.server_config.clone(),
    );
    let url = url(&receiver, "https", "/twice-at-once");
    let trust = trust_with_file(&pki.ca_pem);
    let (statuses, stats) = run(move || async move {
        let client = HttpClient::new(loopback_config(trust));
        let statuses = statuses_of_three(&client, &url, Duration::ZERO).await;
        (statuses, client.stats())
    });
    assert_eq!(statuses, [200; 3], "{stats:?}");
    assert_eq!(stats.connections_reused, 0, "{stats:?}");
}

/// A response whose body ends where the connection closes, from a receiver that closes
/// without a TLS `close_notify` (as many do), is the response: not an error retried
/// (the receiver would get the event again).
#[test]
fn a_close_delimited_answer_without_close_notify_is_taken() {
    let pki = test_pki();
    let receiver = tls_receiver(Behaviour::CloseDelimited, pki.server_config.clone());
    let url = url(&receiver, "https", "/until-close");
    let trust = trust_with_file(&pki.ca_pem);
    let answer = run(move || async move {
        let client = HttpClient::new(loopback_config(trust));
        client
            .send(OutboundRequest::new(url, body()))
            .await
            .map(|response| (response.status, response.body))
    });
    let (status, body) = answer.expect("the response");
    assert_eq!(status, 200);
    assert_eq!(body, b"ok until close");
}

#[test]
fn untrusted_certificates_are_refused() {
    let pki = test_pki();
    let other = test_pki();
    let receiver = tls_receiver(Behaviour::Ok, pki.server_config.clone());
    let url =
        herald_http::Url::parse(&format!("https://localhost:{}/", receiver.addr().port())).unwrap();
    let mut trust = TrustAnchors::empty();
    trust.add_pem(other.ca_pem.as_bytes()).unwrap();
    let error = run(move || async move {
        let client = HttpClient::new(loopback_config(trust));
        client
            .send(OutboundRequest::new(url, body()))
            .await
            .unwrap_err()
    });
    assert!(
        matches!(&error, TransportError::Tls(d) if d.contains("certificate")),
        "{error}"
    );
    assert!(receiver.received().is_empty());
}

#[test]
fn a_stalled_handshake_counts_against_the_connect_timeout() {
    // A plain receiver never answers a ClientHello.
    let receiver = plain_receiver(Behaviour::Ok);
    let url = url(&receiver, "https", "/");
    let error = run(move || async move {
        let client = HttpClient::new(loopback_config(TrustAnchors::empty()));
        let mut request = OutboundRequest::new(url, body());
        request.connect_timeout_ms = 200;
        client.send(request).await.unwrap_err()
    });
    assert!(
        matches!(&error, TransportError::ConnectTimeout(d) if d.contains("TLS handshake")),
        "{error}"
    );
}
