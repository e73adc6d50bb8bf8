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
