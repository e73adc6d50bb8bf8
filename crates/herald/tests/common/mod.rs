//! Shared helpers of the end-to-end tests: engines on temporary directories, webhook
//! specs, bounded waits, and a receiver not written here (Python's http.server).
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound of every wait in these tests. Generous because CI machines are slow and
/// shared; a passing run takes a small fraction of it.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `probe` every 5 ms until it returns `Some`, or panics after `timeout` naming
/// `what` and showing the last state `describe` gives.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if started.elapsed() >= timeout {
            panic!(
                "gave up after {} ms waiting for {what}; state: {}",
                started.elapsed().as_millis(),
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `id` member of a delivered envelope.
pub fn envelope_id(body: &[u8]) -> String {
    let value: serde_json::Value =
        serde_json::from_slice(body).expect("the engine delivers JSON envelopes");
    value["id"]
        .as_str()
        .expect("every envelope has a string id")
        .to_owned()
}

/// One request as Python's http.server saw it.
#[derive(Debug, Clone)]
pub struct PythonRequest {
    /// Request target.
    pub path: String,
    /// Header names and values (the last of a repeated name wins).
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

/// Python's http.server answering every POST with 200 over HTTP/1.0 and closing: an
/// HTTP implementation not written here. Killed on drop.
pub struct PythonReceiver {
    child: Child,
    /// Port it listens on (127.0.0.1).
    pub port: u16,
    lines: mpsc::Receiver<String>,
}

const PYTHON_RECEIVER: &str = r#"
import http.server, json, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        record = {"path": self.path, "headers": [[k, v] for k, v in self.headers.items()],
                  "body": body.decode("utf-8")}
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl PythonReceiver {
    /// Starts `python3 -c <handler>` and reads the port it bound. Panics (failing the
    /// test) when python3 is missing: the foreign implementation is part of the test.
    pub fn start() -> PythonReceiver {
        let mut child = Command::new("python3")
            .arg("-u")
            .arg("-c")
            .arg(PYTHON_RECEIVER)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 must be installed: the end-to-end tests use its http.server");
        let stdout: ChildStdout = child.stdout.take().expect("stdout was piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = lines
            .recv_timeout(WAIT)
            .expect("python3 http.server printed its port")
            .trim()
            .parse()
            .expect("the first line is the port");
        PythonReceiver { child, port, lines }
    }

    /// URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits (bounded) for the next request it received.
    pub fn next_request(&self, timeout: Duration) -> PythonRequest {
        let line = self
            .lines
            .recv_timeout(timeout)
            .expect("python3 http.server received a request in time");
        let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        PythonRequest {
            path: value["path"].as_str().unwrap_or_default().to_owned(),
            headers: value["headers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|pair| {
                    (
                        pair[0].as_str().unwrap_or_default().to_owned(),
                        pair[1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body: value["body"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tenant id from a literal.
pub fn tenant(name: &str) -> herald::TenantId {
    herald::TenantId::parse(name).expect("test tenant ids are valid")
}

/// A deterministic secret of `scheme` (signing key for ed25519).
pub fn secret(scheme: &herald::Scheme, seed: u8) -> String {
    herald_sign::generate_secret(scheme, &[seed; 32])
}

/// The key a receiver verifies `secret` with: the public key for ed25519, else itself.
pub fn verifying_key(scheme: &herald::Scheme, secret: &str) -> String {
    match scheme {
        herald::Scheme::Ed25519 => {
            herald_sign::public_key(secret).expect("generated ed25519 keys are valid")
        }
        _ => secret.to_owned(),
    }
}

/// A webhook for every event type, with an optional retry schedule (milliseconds between
/// attempts).
pub fn spec(
    url: &str,
    scheme: herald::Scheme,
    secret: &str,
    retry_delays_ms: Option<Vec<u64>>,
) -> herald::WebhookSpec {
    let mut spec = herald::WebhookSpec::new(
        herald::Url::parse(url).expect("test URLs are valid"),
        vec![herald::EventFilter::parse("*").expect("`*` is a filter")],
        scheme,
        secret.to_owned(),
    );
    spec.retry_schedule = retry_delays_ms
        .map(|delays| herald::RetrySchedule::new(delays).expect("test schedules are valid"));
    spec
}

/// An engine on `dir` that may send to loopback and trusts `extra_ca_pems`.
pub fn engine(
    dir: &std::path::Path,
    shards: usize,
    extra_ca_pems: &[&std::path::Path],
) -> herald::Herald {
    engine_with(
        dir,
        shards,
        extra_ca_pems,
        herald::DispatcherConfig::default(),
    )
}

/// [`engine`] with a dispatcher policy.
pub fn engine_with(
    dir: &std::path::Path,
    shards: usize,
    extra_ca_pems: &[&std::path::Path],
    dispatcher: herald::DispatcherConfig,
) -> herald::Herald {
    let mut builder = herald::Herald::builder()
        .data_dir(dir)
        .shards(shards)
        .pin_threads(false)
        .allow_cidr("127.0.0.0/8")
        .shutdown_grace(Duration::from_secs(2));
    for path in extra_ca_pems {
        builder = builder.extra_ca_pem(path);
    }
    builder = builder.dispatcher_config(dispatcher);
    builder.start().expect("the engine starts")
}

/// An event of type `order.created` carrying `data`.
pub fn event(data: serde_json::Value) -> herald::Event {
    herald::Event::parse("order.created", &data).expect("a valid event")
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// The deliveries of `tenant` (first page, up to 1000).
pub fn deliveries(
    herald: &herald::Herald,
    tenant: &herald::TenantId,
) -> Vec<herald::DeliveryRecord> {
    let mut query = herald::DeliveryQuery::tenant(tenant.clone());
    query.limit = 1000;
    herald
        .deliveries(query)
        .expect("the delivery log answers")
        .items
}
