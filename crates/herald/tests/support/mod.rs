//! A small loopback HTTP/1.1 receiver for tests: std threads, keep-alive, bounded.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Largest request head the receiver accepts.
const HEAD_BYTES_MAX: usize = 16 << 10;
/// Largest request body the receiver accepts.
const BODY_BYTES_MAX: usize = 1 << 20;
/// Most connections served at once; more are closed at once.
const CONNECTIONS_MAX: usize = 64;
/// Most requests recorded; a runaway sender cannot exhaust memory.
const RECORDED_MAX: usize = 100_000;
/// Status meaning "do not answer".
pub const HANG: u16 = 0;
/// Longest a request is held unanswered.
const HANG_MAX: Duration = Duration::from_secs(30);

/// Idle keep-alive connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("receiver got a non-JSON body")
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    /// Status to answer per path; 200 when absent.
    statuses: Mutex<HashMap<String, u16>>,
    stop: AtomicBool,
    connections: AtomicUsize,
}

/// A running receiver; stops on drop.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accept_shared = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accept_shared.stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                if accept_shared.connections.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
                    accept_shared.connections.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let shared = accept_shared.clone();
                std::thread::spawn(move || {
                    serve(stream, &shared);
                    shared.connections.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Receiver {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Status to answer on `path`; [`HANG`] holds the request unanswered until the
    /// status changes or the receiver stops (bounded by [`HANG_MAX`]).
    pub fn set_status(&self, path: &str, status: u16) {
        self.shared
            .statuses
            .lock()
            .unwrap()
            .insert(path.to_string(), status);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until `done(received)` holds, or panics after `timeout` with what arrived.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received.lock().unwrap();
        loop {
            if done(&received) {
                return received.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "receiver timed out after {timeout:?}; got {} requests: {:#?}",
                received.len(),
                received
                    .iter()
                    .map(|r| (&r.path, r.header("webhook-id")))
                    .collect::<Vec<_>>()
            );
            received = self
                .shared
                .arrived
                .wait_timeout(received, deadline - now)
                .unwrap()
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Unblock accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        // Parse a head out of what we have, reading more as needed.
        let (head_len, method, path, headers) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut slots);
            match request.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let headers: Vec<(String, String)> = request
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    break (
                        len,
                        request.method.unwrap_or("").to_string(),
                        request.path.unwrap_or("").to_string(),
                        headers,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < HEAD_BYTES_MAX => {}
                _ => return,
            }
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body_len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        if body_len > BODY_BYTES_MAX {
            return;
        }
        while buf.len() < head_len + body_len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_len..head_len + body_len].to_vec();
        buf.drain(..head_len + body_len);
        let status_of = |path: &str| {
            shared
                .statuses
                .lock()
                .unwrap()
                .get(path)
                .copied()
                .unwrap_or(200)
        };
        // The answer is the status in force when the request arrived, read before the
        // arrival is announced: a test that changes the status after seeing N requests
        // changes the answer of request N+1, never of request N.
        let status = status_of(&path);
        let hang = status == HANG;
        {
            let mut received = shared.received.lock().unwrap();
            if received.len() < RECORDED_MAX {
                received.push(Received {
                    method,
                    path: path.clone(),
                    headers,
                    body,
                });
            }
        }
        shared.arrived.notify_all();
        if hang {
            let started = Instant::now();
            while status_of(&path) == HANG
                && !shared.stop.load(Ordering::Acquire)
                && started.elapsed() < HANG_MAX
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            // The sender gave up on this request (or we stopped): drop the connection.
            return;
        }
        // A custom header naming the status, for tests that read the response headers.
        let response = format!(
            "HTTP/1.1 {status} X\r\nX-Receiver-Status: {status}\r\ncontent-length: 2\r\n\r\nok"
        );
        if stream.write_all(response.as_bytes()).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Polls `probe` every 5 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
