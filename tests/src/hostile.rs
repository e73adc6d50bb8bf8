//! Hostile webhook receivers: small loopback servers on std threads, each misbehaving in
//! one way, for the suite's tests of what a delivery does against them.
//!
//! Every server is bounded: at most [`CONNECTIONS_MAX`] connections at once (more are
//! closed on accept), every endless writer stops after [`ENDLESS_BYTES_MAX`] bytes or when
//! the peer goes away, the slow ones after [`HOLD_MAX`], and all of them when the server
//! is dropped (threads look at a stop flag at least every 50 ms; drop joins the accept
//! thread).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_sink::{Identity, LeafOptions, Pki};

/// Most connections one hostile server holds at once.
pub const CONNECTIONS_MAX: usize = 32;
/// Most bytes an endless writer sends on one connection (far above any limit of the
/// client under test, so reaching it means the client did not cut it off).
pub const ENDLESS_BYTES_MAX: u64 = 256 << 20;
/// Longest a slow server holds one connection.
pub const HOLD_MAX: Duration = Duration::from_secs(120);
/// Largest request head and body read before answering.
const REQUEST_BYTES_MAX: usize = 1 << 20;
/// How often waiting threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// How a server misbehaves.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads the request and never answers; holds the connection open.
    Silent,
    /// Answers a valid `200` one byte per second.
    Drip,
    /// Answers a status line, then header lines without end.
    EndlessHeaders,
    /// Answers a chunked `200` whose chunks never end.
    EndlessChunkedBody,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers the head and part of the body a `Content-Length` promises, then closes.
    CloseMidResponse,
    /// Resets the connection (RST, by closing with the request unread) once the request
    /// arrives.
    Reset,
    /// TLS with this configuration (certificate); answers `200` over it when the
    /// handshake succeeds.
    Tls(Arc<rustls::ServerConfig>),
    /// Answers `status` (a 3xx) with `Location: location` and an empty body.
    Redirect {
        /// The redirect status, e.g. 301, 302, 307 or 308.
        status: u16,
        /// Where it points.
        location: String,
    },
}

impl Behaviour {
    /// A short name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Silent => "silent",
            Behaviour::Drip => "drip",
            Behaviour::EndlessHeaders => "endless-headers",
            Behaviour::EndlessChunkedBody => "endless-chunked-body",
            Behaviour::Garbage => "garbage",
            Behaviour::CloseMidResponse => "close-mid-response",
            Behaviour::Reset => "reset",
            Behaviour::Tls(_) => "tls",
            Behaviour::Redirect { .. } => "redirect",
        }
    }
}

struct Shared {
    stop: AtomicBool,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Requests read completely (over TLS: after a successful handshake).
    requests: AtomicUsize,
}

/// A running hostile server; stops on drop.
pub struct Hostile {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Hostile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hostile")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Hostile {
    /// Starts a server on `127.0.0.1:<free port>` behaving as `behaviour`.
    pub fn start(behaviour: Behaviour) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the bound address");
        let tls = matches!(behaviour, Behaviour::Tls(_));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("hostile-{}", behaviour.name()))
            .spawn(move || accept_loop(listener, behaviour, accept_shared))
            .expect("a thread can be spawned");
        Hostile {
            addr,
            tls,
            shared,
            accept: Some(accept),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of `path` on this server (`https` for a TLS one).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Requests read completely so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, behaviour: Behaviour, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if shared.open.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
                    continue; // dropped: closed at once
                }
                shared.open.fetch_add(1, Ordering::Relaxed);
                let behaviour = behaviour.clone();
                let conn_shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("hostile-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, &behaviour, &conn_shared);
                        conn_shared.open.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    shared.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Reads one request (head, then a `Content-Length` body), bounded in size and by the
/// stop flag. `Ok(false)` when the peer went away first.
fn read_request(stream: &mut impl Read, shared: &Shared) -> io::Result<bool> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        if shared.stop.load(Ordering::Relaxed) || started.elapsed() > HOLD_MAX {
            return Ok(false);
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > REQUEST_BYTES_MAX {
            return Ok(false);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length.min(REQUEST_BYTES_MAX) {
                shared.requests.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
        }
    }
}

/// Sleeps up to `total`, in short steps, unless the server stops; `false` when stopped.
fn pause(total: Duration, shared: &Shared) -> bool {
    let until = Instant::now() + total;
    while Instant::now() < until {
        if shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    true
}

/// Writes `unit` again and again until the peer stops reading, the server stops, or
/// [`ENDLESS_BYTES_MAX`] bytes went out.
fn write_endlessly(stream: &mut impl Write, unit: &[u8], shared: &Shared) {
    let mut sent = 0u64;
    while sent < ENDLESS_BYTES_MAX && !shared.stop.load(Ordering::Relaxed) {
        if stream.write_all(unit).is_err() {
            return;
        }
        sent += unit.len() as u64;
    }
}

fn serve(mut stream: TcpStream, behaviour: &Behaviour, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    match behaviour {
        Behaviour::Reset => {
            // Wait for the first bytes, read one, and close with the rest unread: the
            // kernel answers unread data with RST instead of FIN.
            let mut byte = [0u8; 1];
            let started = Instant::now();
            loop {
                match stream.read(&mut byte) {
                    Ok(0) => return Ok(()),
                    Ok(_) => break,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if shared.stop.load(Ordering::Relaxed) || started.elapsed() > HOLD_MAX {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            // Let the rest of the request land in the receive buffer.
            pause(Duration::from_millis(100), shared);
            drop(stream);
            return Ok(());
        }
        Behaviour::Tls(config) => {
            let connection = rustls::ServerConnection::new(Arc::clone(config))
                .map_err(|e| io::Error::other(e.to_string()))?;
            let mut tls = rustls::StreamOwned::new(connection, stream);
            if read_request(&mut tls, shared)? {
                tls.write_all(ok)?;
                tls.conn.send_close_notify();
                tls.flush()?;
            }
            return Ok(());
        }
        _ => {}
    }
    if !read_request(&mut stream, shared)? {
        return Ok(());
    }
    match behaviour {
        Behaviour::Silent => {
            // Hold the connection until the peer closes it (read returns 0) or we stop.
            let mut sink = [0u8; 1024];
            let started = Instant::now();
            while !shared.stop.load(Ordering::Relaxed) && started.elapsed() < HOLD_MAX {
                match stream.read(&mut sink) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
        Behaviour::Drip => {
            for byte in ok.iter() {
                if stream.write_all(std::slice::from_ref(byte)).is_err()
                    || !pause(Duration::from_secs(1), shared)
                {
                    return Ok(());
                }
            }
        }
        Behaviour::EndlessHeaders => {
            stream.write_all(b"HTTP/1.1 200 OK\r\n")?;
            write_endlessly(
                &mut stream,
                b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
                shared,
            );
        }
        Behaviour::EndlessChunkedBody => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let mut chunk = b"1000\r\n".to_vec();
            chunk.extend_from_slice(&[b'x'; 0x1000]);
            chunk.extend_from_slice(b"\r\n");
            write_endlessly(&mut stream, &chunk, shared);
        }
        Behaviour::Garbage => {
            stream.write_all(b"\x00\x01\x02SSH-2.0-OpenSSH_9.6 definitely not HTTP\r\n\r\n")?;
            pause(Duration::from_millis(200), shared);
        }
        Behaviour::CloseMidResponse => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"half\":",
            )?;
            stream.flush()?;
        }
        Behaviour::Redirect { status, location } => {
            let answer = format!(
                "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(answer.as_bytes())?;
            stream.flush()?;
        }
        Behaviour::Reset | Behaviour::Tls(_) => unreachable!("answered above"),
    }
    Ok(())
}

// ---------------------------------------------------------------------- certificates

/// A test certificate authority (herald-sink's [`Pki`]).
#[derive(Debug)]
pub struct TestCa {
    pki: Pki,
}

/// What is wrong with a server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertDefect {
    /// Nothing: issued by the CA for the names asked for, valid now.
    None,
    /// Issued by the CA, but expired in 2020.
    Expired,
    /// Signed by its own key, not by the CA.
    SelfSigned,
    /// Issued by the CA for another name (`wrong-host.invalid`).
    WrongHost,
}

impl TestCa {
    /// A fresh CA.
    pub fn new() -> TestCa {
        TestCa {
            pki: Pki::generate("herald-e2e hostile CA").expect("a CA"),
        }
    }

    /// The CA certificate as PEM (what the client must trust).
    pub fn pem(&self) -> String {
        self.pki.ca_pem().to_owned()
    }

    /// A TLS server configuration presenting a certificate for `names` with `defect`.
    pub fn server_config(&self, names: &[&str], defect: CertDefect) -> Arc<rustls::ServerConfig> {
        let mut options = LeafOptions::for_names(names);
        let identity = match defect {
            CertDefect::None => self.pki.issue_with(&options),
            CertDefect::Expired => {
                options.validity = Some(((2019, 1, 1), (2020, 1, 1)));
                self.pki.issue_with(&options)
            }
            CertDefect::WrongHost => self.pki.issue(&["wrong-host.invalid"]),
            CertDefect::SelfSigned => Identity::self_signed(names),
        }
        .expect("a server certificate");
        identity.server_config().expect("a usable certificate")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
