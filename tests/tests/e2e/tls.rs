//! The API over https (`[tls] cert`, `key`): a client that trusts the issuing CA gets
//! answers; a plain-HTTP client gets none; unreadable certificate files are refused at
//! start with exit status 2.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use herald_e2e::raw::closed_within;
use herald_e2e::*;
use herald_http::{Limits, ResponseParser};
use herald_sink::Pki;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

/// A CA and a leaf for `localhost`/`127.0.0.1` written to the site: (chain PEM path, key
/// PEM path, CA certificate).
fn certificates(site: &Site) -> (PathBuf, PathBuf, CertificateDer<'static>) {
    let pki = Pki::generate("herald-e2e test CA").expect("a CA");
    let leaf = pki
        .issue(&["localhost", "127.0.0.1"])
        .expect("a server certificate");
    let chain = site.write("api-chain.pem", &leaf.chain_pem);
    let key = site.write("api-key.pem", &leaf.key_pem);
    (chain, key, pki.ca_der().clone())
}

/// One request over TLS trusting `ca`; returns (status, JSON body).
fn https_request(
    addr: std::net::SocketAddr,
    ca: &CertificateDer<'static>,
    request: &str,
) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .expect("the CA is a valid trust anchor");
    let config = rustls::ClientConfig::builder_with_provider(herald_sink::crypto_provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("a DNS name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    tcp.set_write_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(request.as_bytes())
        .expect("the request is written over TLS");
    let mut parser = ResponseParser::new(Limits::default());
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tls.read(&mut buf).expect("the answer is read over TLS");
        assert!(
            n > 0,
            "the server closed the TLS connection without answering"
        );
        if let (_, Some(response)) = parser.feed(&buf[..n]).expect("a parsable answer") {
            let body = if response.body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&response.body).expect("a JSON body")
            };
            return (response.status, body);
        }
    }
}

#[test]
fn api_over_https() {
    let site = Site::new();
    let (chain, key, ca) = certificates(&site);
    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        chain.display().to_string(),
        key.display().to_string()
    );
    let server = Server::start(&site, &Options::default().config(&config));
    let addr = server.addr();

    let (status, body) = https_request(
        addr,
        &ca,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let tenant = r#"{"id":"tenant_tls"}"#;
    let (status, body) = https_request(
        addr,
        &ca,
        &format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{tenant}",
            tenant.len()
        ),
    );
    assert_eq!(status, 201, "{body}");
    assert!(body["api_key"].is_string(), "{body}");

    // Plain HTTP on the https port: no HTTP answer, and the connection is closed.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .expect("written");
    let (closed, received) = closed_within(&mut plain, Duration::from_secs(15));
    assert!(
        closed,
        "a plain-HTTP client on the https port was not closed"
    );
    assert!(
        !received.starts_with(b"HTTP/"),
        "the https port answered plain HTTP: {:?}",
        String::from_utf8_lossy(&received)
    );
}

#[test]
fn unreadable_certificate_files_exit_2() {
    let site = Site::new();
    let config =
        "[tls]\ncert = \"/nonexistent/herald-api.pem\"\nkey = \"/nonexistent/herald-api.key\"\n";
    let exited = run_to_exit(
        &site,
        &Options::default().config(config),
        Duration::from_secs(20),
    );
    assert_eq!(exited.status.code(), Some(2), "stderr: {}", exited.stderr);
    assert!(
        exited.stderr.contains("tls.cert") || exited.stderr.contains("/nonexistent/herald-api.pem"),
        "stderr names neither the key nor the file: {}",
        exited.stderr
    );
}
