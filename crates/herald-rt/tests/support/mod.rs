//! Loopback test receivers (plain and TLS) and an executor helper.
#![allow(dead_code)] // reason: each test binary uses a different subset

use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_rt::{Cidr, ClientConfig, TrustAnchors};

/// Runs `f` on a small glommio executor (tests run in parallel threads; the memlock
/// budget is shared).
pub fn run<F, T>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(128 * 1024)
        .ring_depth(64)
        .spawn(move || async move { f().await })
        .unwrap()
        .join()
        .unwrap()
}

/// A client config that may reach loopback.
pub fn loopback_config(trust: TrustAnchors) -> ClientConfig {
    let mut config = ClientConfig::new(trust);
    config
        .egress
        .allow(Cidr::parse("127.0.0.0/8").unwrap())
        .unwrap();
    config
}

/// What the test receiver does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// 200 "ok", keep-alive (or close when `close`).
    Ok { close: bool },
    /// Read the request, never answer.
    Silent,
    /// Answer one byte every 20 ms, forever.
    Dribble,
    /// A status line, then header lines forever.
    EndlessHeaders,
    /// A chunked body that never ends.
    EndlessBody,
    /// Answer the first request of a connection; on the second, close without answering.
    DropSecondRequest,
    /// Wait this many ms, then 200 keep-alive.
    Slow(u64),
    /// 200 with a chunked body (two chunks and a trailer), keep-alive.
    Chunked,
    /// 200 keep-alive followed, in the same write, by bytes nobody asked for.
    TrailingGarbage,
    /// 200 keep-alive, then 30 ms later bytes nobody asked for.
    LateGarbage,
    /// Answer only the first request of the first connection; close everything else
    /// without answering.
    OnlyFirstAnswered,
}

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub connection: usize,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A receiver on 127.0.0.1 that counts connections and records requests.
pub struct Receiver {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn url(&self, scheme: &str, path: &str) -> herald_http::Url {
        herald_http::Url::parse(&format!("{scheme}://{}{path}", self.addr)).unwrap()
    }
}

/// Starts a plain HTTP receiver.
pub fn plain_receiver(behavior: Behavior) -> Receiver {
    start(behavior, None)
}

/// Starts a TLS receiver with the given rustls server configuration.
pub fn tls_receiver(behavior: Behavior, config: Arc<rustls::ServerConfig>) -> Receiver {
    start(behavior, Some(config))
}

fn start(behavior: Behavior, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (accepted2, seen2) = (accepted.clone(), seen.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let connection = accepted2.fetch_add(1, Ordering::SeqCst);
            let seen = seen2.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                // Bounds every test: a receiver never outlives a stuck client for long.
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
                match tls {
                    None => serve(stream, behavior, connection, &seen),
                    Some(config) => {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        let stream = rustls::StreamOwned::new(conn, stream);
                        serve(stream, behavior, connection, &seen);
                    }
                }
            });
        }
    });
    Receiver {
        addr,
        accepted,
        seen,
    }
}

/// Reads one request (its `connection` field left 0); None on EOF or error.
fn read_request<S: Read>(stream: &mut S, buf: &mut Vec<u8>) -> Option<Seen> {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let method = req.method.unwrap().to_owned();
            let target = req.path.unwrap().to_owned();
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while buf.len() < len + length {
                let n = stream.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[len..len + length].to_vec();
            buf.drain(..len + length);
            return Some(Seen {
                connection: 0,
                method,
                target,
                headers,
                body,
            });
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn serve<S: Read + Write>(
    mut stream: S,
    behavior: Behavior,
    connection: usize,
    seen: &Mutex<Vec<Seen>>,
) {
    let mut buf = Vec::new();
    let mut on_this_connection = 0;
    while let Some(request) = read_request(&mut stream, &mut buf) {
        on_this_connection += 1;
        seen.lock().unwrap().push(Seen {
            connection,
            ..request
        });
        let ok_keep_alive: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let written = match behavior {
            Behavior::Ok { close: false } => stream.write_all(ok_keep_alive),
            Behavior::Ok { close: true } => {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                let _ = stream.flush();
                return;
            }
            Behavior::Silent => {
                // Wait for the client to give up.
                let mut sink = [0u8; 64];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Behavior::Dribble => loop {
                for &byte in b"HTTP/1.1 200 OK\r\nX-Slow: "
                    .iter()
                    .chain(std::iter::repeat(&b'a'))
                {
                    if stream
                        .write_all(&[byte])
                        .and_then(|_| stream.flush())
                        .is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            },
            Behavior::EndlessHeaders => {
                if stream.write_all(b"HTTP/1.1 200 OK\r\n").is_err() {
                    return;
                }
                loop {
                    if stream
                        .write_all(b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n")
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Behavior::EndlessBody => {
                if stream
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                let chunk = format!("1000\r\n{}\r\n", "b".repeat(0x1000));
                loop {
                    if stream.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                }
            }
            Behavior::OnlyFirstAnswered => {
                if connection > 0 || on_this_connection >= 2 {
                    return;
                }
                stream.write_all(ok_keep_alive)
            }
            Behavior::DropSecondRequest => {
                if on_this_connection >= 2 {
                    return;
                }
                stream.write_all(ok_keep_alive)
            }
            Behavior::Chunked => stream.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            Behavior::TrailingGarbage => {
                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
            }
            Behavior::LateGarbage => stream
                .write_all(ok_keep_alive)
                .and_then(|_| stream.flush())
                .and_then(|_| {
                    std::thread::sleep(Duration::from_millis(30));
                    stream.write_all(b"surprise")
                }),
            Behavior::Slow(ms) => {
                std::thread::sleep(Duration::from_millis(ms));
                stream.write_all(ok_keep_alive)
            }
        };
        if written.and_then(|_| stream.flush()).is_err() {
            return;
        }
    }
}

/// A CA and a leaf certificate for `localhost` and 127.0.0.1 signed by it.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

pub fn test_pki() -> TestPki {
    let pki = herald_sink::Pki::generate("herald test CA").unwrap();
    let identity = pki.issue(&["localhost", "127.0.0.1"]).unwrap();
    TestPki {
        ca_pem: pki.ca_pem().to_owned(),
        server_config: identity.server_config().unwrap(),
    }
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

/// A listener whose accept queue is full: further connection attempts get no answer
/// (the kernel drops their SYNs), like a receiver behind a black-holing firewall.
/// Returns the listener (keep it alive) and the connection filling the queue.
pub fn black_hole() -> (TcpListener, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Listening again on a listening socket only changes its backlog (to the minimum:
    // Linux then queues one connection).
    rustix::net::listen(&listener, 0).unwrap();
    let filler = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, filler)
}

/// Connects and disconnects to make sure the receiver thread is up (it is, once bound;
/// kept for symmetry with child-process receivers).
pub fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listening on {addr}");
}
