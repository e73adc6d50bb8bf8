//! Misbehaving receivers: small loopback servers, each answering every request in one
//! chosen way ([`Behaviour`]): never, one byte at a time, with endless headers or an
//! endless chunked body, with garbage, half a response, a reset, a redirect, late, or
//! with bytes nobody asked for. They are what a sender's tests point at to check that
//! every misbehaviour ends as a classified failure within the sender's own limits.
//!
//! Unlike [`crate::Sink`] (an event loop answering well-formed HTTP), a hostile server
//! needs byte-level control of each connection, so it runs a thread per connection;
//! that is cheap at the scale of a test and bounded:
//! * at most [`CONNECTIONS_MAX`] connections at once (more are closed on accept);
//! * every endless writer stops after [`ENDLESS_BYTES_MAX`] bytes or when the peer goes
//!   away, every slow or silent one after [`HOLD_MAX`];
//! * requests are parsed with herald-http's [`RequestParser`] under its default
//!   [`Limits`], and at most [`RECEIVED_MAX`] are kept for the test to read;
//! * everything stops when the [`Hostile`] handle is dropped (threads look at a stop flag
//!   at least every 50 ms; drop joins the accept thread).
//!
//! Any behaviour can be served over TLS ([`Hostile::start_tls`]); certificates come from
//! the workspace's test PKI ([`crate::Pki`], [`crate::CertDefect`] for bad ones).
//! [`closed_port`] and [`BlackHole`] stand for receivers that refuse connections or
//! never complete them.
//!
//! ```no_run
//! use herald_sink::hostile::{Behaviour, Hostile};
//!
//! let silent = Hostile::start(Behaviour::Silent)?;
//! let url = silent.url("/hook"); // http://127.0.0.1:<port>/hook
//! // ... point a sender at `url`, expect its request timeout ...
//! assert_eq!(silent.requests(), 1);
//! # Ok::<(), herald_sink::SinkError>(())
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use herald_http::{Limits, RequestParser};

use crate::stats::lock;
use crate::SinkError;

/// Most connections one hostile server holds at once: enough for a sender's pool and
/// its retries in a test, few enough that threads stay cheap.
pub const CONNECTIONS_MAX: usize = 32;
/// Most bytes an endless writer sends on one connection: far above any limit of a
/// client under test, so reaching it means the client did not cut it off.
pub const ENDLESS_BYTES_MAX: u64 = 256 << 20;
/// Longest a slow, silent or dripping server holds one connection: longer than any
/// request timeout a test uses, short enough that a stuck client cannot keep a thread
/// for long.
pub const HOLD_MAX: Duration = Duration::from_secs(120);
/// Most requests kept for [`Hostile::received`] (bodies included); later ones are
/// still counted by [`Hostile::requests`].
pub const RECEIVED_MAX: usize = 10_000;
/// How often waiting threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Longest one write may block: a peer that stopped reading ends the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// A well-formed `200` that keeps the connection open.
const OK_KEEP_ALIVE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// A well-formed `200` announcing that the server closes the connection.
const OK_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
const CLOSE_DELIMITED: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok until close";

/// A `200` keeping the connection open, `len` bytes long in all (its body pads it; at
/// least its head).
fn sized_ok(len: usize) -> Vec<u8> {
    let head = |body: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {body}\r\n\r\n");
    // The head's length depends on the body's digits: settle it.
    let mut body = len.saturating_sub(head(0).len());
    while head(body).len() + body > len && body > 0 {
        body -= 1;
    }
    let mut answer = head(body).into_bytes();
    answer.resize(answer.len() + body, b'x');
    answer
}

/// How a hostile server answers each request it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// A well-formed `200 ok`, keeping the connection open: the control case.
    Ok,
    /// A well-formed `200 ok` with `Connection: close`, then closes.
    OkThenClose,
    /// Reads the request and never answers; holds the connection until the peer closes
    /// it.
    Silent,
    /// Sends a well-formed `200` (with `Connection: close`) one byte per interval, e.g.
    /// one a second.
    Drip(Duration),
    /// Sends a status line, then header lines without end.
    EndlessHeaders,
    /// Sends the head of a chunked `200`, then 4 KiB chunks without end.
    EndlessChunkedBody,
    /// Sends bytes that are not HTTP, then closes.
    Garbage,
    /// Sends the head and part of the body a `Content-Length` promises, then closes.
    CloseMidResponse,
    /// Resets the connection (RST: closes with the request unread) once its first bytes
    /// arrive; over TLS, before the handshake.
    Reset,
    /// Answers `status` (a 3xx) with `Location: location`, an empty body, and closes.
    Redirect {
        /// The redirect status, e.g. 301, 302, 307 or 308.
        status: u16,
        /// Where it points.
        location: String,
    },
    /// Waits this long (at most [`HOLD_MAX`]), then a `200 ok` keeping the connection
    /// open.
    Slow(Duration),
    /// A `200` with a chunked body (`ok`, `!!!`) and a trailer, keeping the connection
    /// open.
    Chunked,
    /// A `200 ok` keeping the connection open, followed in the same write by the start
    /// of a response nobody asked for.
    TrailingGarbage,
    /// A `200 ok` keeping the connection open, then 30 ms later bytes nobody asked for.
    LateGarbage,
    /// A `200 ok` keeping the connection open, then 5 ms later a whole second response
    /// (`299`, keeping it open) nobody asked for: a receiver that answers twice. A client
    /// that reused the connection would take the `299` for its next request's answer.
    AnsweredTwice,
    /// A `200` of exactly this many bytes, keeping the connection open, and in the same
    /// write a second response (`299`) nobody asked for. Over TLS both arrive in the
    /// records of one read: a client whose read buffer is this size reads the first
    /// response to its end, while the session holds the second.
    AnsweredTwiceAtOnce(usize),
    /// Answers the first request of each connection with `200 ok`; at the second,
    /// closes without answering (a keep-alive connection the server dropped).
    DropSecondRequest,
    /// Answers only the first request of the first connection with `200 ok`; closes
    /// every other connection, and that one at its second request, without answering.
    OnlyFirstAnswered,
    /// A `200 ok` keeping the connection open (no `Connection: close`), then closes it
    /// this long later (at most [`HOLD_MAX`]) without a word: a receiver with a short
    /// keep-alive timeout.
    CloseWhenIdle(Duration),
    /// A `200` without `Content-Length` or chunking, its body ending where the
    /// connection closes (as an HTTP/1.0 server answers); over TLS the connection closes
    /// without a `close_notify`, as many servers close it.
    CloseDelimited,
    /// Answers this status announcing a 2 GiB body (`Content-Length`), sends its first
    /// 4 KiB and closes: an answer whose body is past any client's limit.
    Oversized(u16),
}

impl Behaviour {
    /// A short name, for messages and thread names.
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Ok => "ok",
            Behaviour::OkThenClose => "ok-then-close",
            Behaviour::Silent => "silent",
            Behaviour::Drip(_) => "drip",
            Behaviour::EndlessHeaders => "endless-headers",
            Behaviour::EndlessChunkedBody => "endless-chunked-body",
            Behaviour::Garbage => "garbage",
            Behaviour::CloseMidResponse => "close-mid-response",
            Behaviour::Reset => "reset",
            Behaviour::Redirect { .. } => "redirect",
            Behaviour::Slow(_) => "slow",
            Behaviour::Chunked => "chunked",
            Behaviour::TrailingGarbage => "trailing-garbage",
            Behaviour::LateGarbage => "late-garbage",
            Behaviour::AnsweredTwice => "answered-twice",
            Behaviour::AnsweredTwiceAtOnce(_) => "answered-twice-at-once",
            Behaviour::DropSecondRequest => "drop-second-request",
            Behaviour::OnlyFirstAnswered => "only-first-answered",
            Behaviour::CloseWhenIdle(_) => "close-when-idle",
            Behaviour::CloseDelimited => "close-delimited",
            Behaviour::Oversized(_) => "oversized",
        }
    }
}

/// A request as a hostile server read it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Connection it came on (numbered from 1 in accept order, as [`crate::Record`]).
    pub connection: u64,
    /// Method as sent.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (at most [`Limits::body_captured_bytes_max`] of herald-http's defaults).
    pub body: Vec<u8>,
}

impl Received {
    /// First value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::conn::header_str(&self.headers, name)
    }
}

struct Shared {
    stop: AtomicBool,
    open: AtomicUsize,
    accepted: AtomicUsize,
    /// Requests read completely (over TLS: after a successful handshake).
    requests: AtomicUsize,
    received: Mutex<Vec<Received>>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// A running hostile server on `127.0.0.1`; stops on drop.
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
    /// Starts a plain-HTTP server on `127.0.0.1:<free port>` behaving as `behaviour`.
    pub fn start(behaviour: Behaviour) -> Result<Hostile, SinkError> {
        Hostile::spawn(behaviour, None)
    }

    /// Starts a server that speaks TLS with `config` (its certificate; see
    /// [`crate::Identity::server_config`]) and behaves as `behaviour` inside it. A
    /// handshake the client refuses ends the connection before any request.
    pub fn start_tls(
        behaviour: Behaviour,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<Hostile, SinkError> {
        Hostile::spawn(behaviour, Some(config))
    }

    fn spawn(
        behaviour: Behaviour,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Hostile, SinkError> {
        let io = |what: &str| {
            let what = what.to_string();
            move |source| SinkError::Io { what, source }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("make the listener non-blocking"))?;
        let addr = listener
            .local_addr()
            .map_err(io("read the bound address"))?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
        });
        let is_tls = tls.is_some();
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("hostile-{}", behaviour.name()))
            .spawn(move || accept_loop(listener, behaviour, tls, accept_shared))
            .map_err(io("spawn the accept thread"))?;
        Ok(Hostile {
            addr,
            tls: is_tls,
            shared,
            accept: Some(accept),
        })
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

    /// Connections accepted so far (those closed at once for being over
    /// [`CONNECTIONS_MAX`] included).
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Requests read completely so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The requests read so far, in arrival order (the first [`RECEIVED_MAX`]).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.received).clone()
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

/// A port on 127.0.0.1 with nothing listening (bound, then released): connecting to
/// it is refused.
pub fn closed_port() -> Result<u16, SinkError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| SinkError::Io {
        what: "bind 127.0.0.1:0".into(),
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| SinkError::Io {
            what: "read the bound address".into(),
            source,
        })?
        .port();
    Ok(port)
}

/// A listener whose accept queue is full: further connection attempts get no answer
/// (the kernel drops their SYNs), like a receiver behind a black-holing firewall. The
/// queue stays full while the handle lives.
#[derive(Debug)]
pub struct BlackHole {
    listener: TcpListener,
    _filler: TcpStream,
}

impl BlackHole {
    /// Binds `127.0.0.1:<free port>` and fills its accept queue.
    pub fn start() -> Result<BlackHole, SinkError> {
        let io = |what: &'static str| {
            move |source| SinkError::Io {
                what: what.into(),
                source,
            }
        };
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind 127.0.0.1:0"))?;
        // Listening again on a listening socket only changes its backlog (to the
        // minimum: Linux then queues one connection).
        rustix::net::listen(&listener, 0)
            .map_err(|e| io("shrink the backlog")(io::Error::from(e)))?;
        let addr = listener
            .local_addr()
            .map_err(io("read the bound address"))?;
        let filler = TcpStream::connect(addr).map_err(io("fill the accept queue"))?;
        Ok(BlackHole {
            listener,
            _filler: filler,
        })
    }

    /// The address nothing will complete a connection to.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }
}

fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: Arc<Shared>,
) {
    while !shared.stopping() {
        match listener.accept() {
            Ok((stream, _)) => {
                let connection = shared.accepted.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                if shared.open.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
                    continue; // dropped: closed at once
                }
                shared.open.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                let tls = tls.clone();
                let conn_shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name("hostile-conn".into())
                    .spawn(move || {
                        let _ = serve(stream, connection, &behaviour, tls, &conn_shared);
                        conn_shared.open.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 5),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// A connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Stream {
    /// Ends the connection in order: over TLS, a `close_notify` first.
    fn close(mut self) {
        if let Stream::Tls(tls) = &mut self {
            tls.conn.send_close_notify();
        }
        let _ = self.flush();
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

fn waiting(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads the next request of the connection: `None` when the peer went away, the
/// server stopped, [`HOLD_MAX`] passed, or the bytes are not a request herald-http
/// accepts. Bytes after it stay in `pending` (pipelining).
fn read_request(
    stream: &mut Stream,
    parser: &mut RequestParser,
    pending: &mut Vec<u8>,
    shared: &Shared,
) -> io::Result<Option<herald_http::Request>> {
    let mut chunk = [0u8; 4096];
    let started = Instant::now();
    loop {
        if !pending.is_empty() {
            let Ok((used, request)) = parser.feed(pending) else {
                return Ok(None);
            };
            pending.drain(..used);
            if let Some(request) = request {
                shared.requests.fetch_add(1, Ordering::SeqCst);
                return Ok(Some(request));
            }
        }
        if shared.stopping() || started.elapsed() > HOLD_MAX {
            return Ok(None);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if waiting(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps up to `total` in short steps; `false` when the server stopped meanwhile.
fn pause(total: Duration, shared: &Shared) -> bool {
    let until = Instant::now() + total.min(HOLD_MAX);
    while Instant::now() < until {
        if shared.stopping() {
            return false;
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    true
}

/// Writes `unit` again and again until the peer stops reading, the server stops, or
/// [`ENDLESS_BYTES_MAX`] bytes went out.
fn write_endlessly(stream: &mut Stream, unit: &[u8], shared: &Shared) {
    let mut sent = 0u64;
    while sent < ENDLESS_BYTES_MAX && !shared.stopping() {
        if stream.write_all(unit).is_err() {
            return;
        }
        sent += unit.len() as u64;
    }
}

/// Holds the connection, reading and discarding, until the peer closes it, the server
/// stops or [`HOLD_MAX`] passed.
fn hold(stream: &mut Stream, shared: &Shared) {
    let mut sink = [0u8; 1024];
    let started = Instant::now();
    while !shared.stopping() && started.elapsed() < HOLD_MAX {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if waiting(&e) => {}
            Err(_) => return,
        }
    }
}

/// Reads one byte, then closes with the rest unread: the kernel answers unread data
/// with RST instead of FIN.
fn reset(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let started = Instant::now();
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(()),
            Ok(_) => break,
            Err(e) if waiting(&e) => {
                if shared.stopping() || started.elapsed() > HOLD_MAX {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    // Let the rest of the request land in the receive buffer.
    pause(Duration::from_millis(100), shared);
    drop(stream);
    Ok(())
}

/// What to do after answering a request.
enum Next {
    /// Read the next request on the connection.
    KeepAlive,
    /// Close the connection in order.
    Close,
    /// Close the connection at once, unanswered (over TLS without a `close_notify`).
    Drop,
}

fn serve(
    stream: TcpStream,
    connection: u64,
    behaviour: &Behaviour,
    tls: Option<Arc<rustls::ServerConfig>>,
    shared: &Shared,
) -> io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    if *behaviour == Behaviour::Reset {
        return reset(stream, shared);
    }
    if *behaviour == Behaviour::OnlyFirstAnswered && connection > 1 {
        return Ok(());
    }
    let mut stream = match tls {
        None => Stream::Plain(stream),
        Some(config) => {
            let connection = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(connection, stream)))
        }
    };
    let mut parser = RequestParser::new(Limits::default());
    let mut pending = Vec::new();
    let mut on_this_connection = 0usize;
    while let Some(request) = read_request(&mut stream, &mut parser, &mut pending, shared)? {
        on_this_connection += 1;
        {
            let mut received = lock(&shared.received);
            if received.len() < RECEIVED_MAX {
                received.push(Received {
                    connection,
                    method: request.method,
                    target: request.target,
                    headers: request.headers.to_pairs(),
                    body: request.body,
                });
            }
        }
        match answer(&mut stream, behaviour, on_this_connection, shared)? {
            Next::KeepAlive => stream.flush()?,
            Next::Close => {
                stream.close();
                return Ok(());
            }
            Next::Drop => return Ok(()),
        }
    }
    Ok(())
}

/// Answers the `nth` request of a connection (from 1) as `behaviour` says.
fn answer(
    stream: &mut Stream,
    behaviour: &Behaviour,
    nth: usize,
    shared: &Shared,
) -> io::Result<Next> {
    match behaviour {
        Behaviour::Ok => stream.write_all(OK_KEEP_ALIVE)?,
        Behaviour::OkThenClose => {
            stream.write_all(OK_CLOSE)?;
            return Ok(Next::Close);
        }
        Behaviour::CloseDelimited => {
            stream.write_all(CLOSE_DELIMITED)?;
            stream.flush()?;
            return Ok(Next::Drop);
        }
        Behaviour::Silent => {
            hold(stream, shared);
            return Ok(Next::Close);
        }
        Behaviour::Drip(interval) => {
            for byte in OK_CLOSE {
                stream.write_all(std::slice::from_ref(byte))?;
                stream.flush()?;
                if !pause(*interval, shared) {
                    break;
                }
            }
            return Ok(Next::Close);
        }
        Behaviour::EndlessHeaders => {
            stream.write_all(b"HTTP/1.1 200 OK\r\n")?;
            write_endlessly(stream, b"X-Endless: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n", shared);
            return Ok(Next::Close);
        }
        Behaviour::EndlessChunkedBody => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let mut chunk = b"1000\r\n".to_vec();
            chunk.extend_from_slice(&[b'x'; 0x1000]);
            chunk.extend_from_slice(b"\r\n");
            write_endlessly(stream, &chunk, shared);
            return Ok(Next::Close);
        }
        Behaviour::Garbage => {
            stream.write_all(b"\x00\x01\x02SSH-2.0-OpenSSH_9.6 definitely not HTTP\r\n\r\n")?;
            stream.flush()?;
            pause(Duration::from_millis(200), shared);
            return Ok(Next::Close);
        }
        Behaviour::CloseMidResponse => {
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"half\":",
            )?;
            return Ok(Next::Close);
        }
        Behaviour::Oversized(status) => {
            let head = format!("HTTP/1.1 {status} Big\r\nContent-Length: 2147483648\r\n\r\n");
            stream.write_all(head.as_bytes())?;
            // The client may close once it read the head: what follows may not be read.
            let _ = stream.write_all(&[b'x'; 4096]);
            return Ok(Next::Close);
        }
        Behaviour::Redirect { status, location } => {
            let answer = format!(
                "HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                 Connection: close\r\n\r\n"
            );
            stream.write_all(answer.as_bytes())?;
            return Ok(Next::Close);
        }
        Behaviour::Slow(delay) => {
            if !pause(*delay, shared) {
                return Ok(Next::Close);
            }
            stream.write_all(OK_KEEP_ALIVE)?;
        }
        Behaviour::Chunked => stream.write_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\nX-T: 1\r\n\r\n",
        )?,
        Behaviour::TrailingGarbage => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")?
        }
        Behaviour::LateGarbage => {
            stream.write_all(OK_KEEP_ALIVE)?;
            stream.flush()?;
            pause(Duration::from_millis(30), shared);
            stream.write_all(b"surprise")?;
        }
        Behaviour::AnsweredTwice => {
            stream.write_all(OK_KEEP_ALIVE)?;
            stream.flush()?;
            pause(Duration::from_millis(5), shared);
            stream.write_all(b"HTTP/1.1 299 Twice\r\nContent-Length: 0\r\n\r\n")?;
        }
        Behaviour::AnsweredTwiceAtOnce(len) => {
            let mut answers = sized_ok(*len);
            answers.extend_from_slice(b"HTTP/1.1 299 Twice\r\nContent-Length: 0\r\n\r\n");
            stream.write_all(&answers)?;
        }
        Behaviour::CloseWhenIdle(after) => {
            stream.write_all(OK_KEEP_ALIVE)?;
            stream.flush()?;
            pause(*after, shared);
            return Ok(Next::Drop);
        }
        Behaviour::DropSecondRequest | Behaviour::OnlyFirstAnswered => {
            if nth >= 2 {
                return Ok(Next::Drop);
            }
            stream.write_all(OK_KEEP_ALIVE)?;
        }
        Behaviour::Reset => unreachable!("reset before any request is read"),
    }
    Ok(Next::KeepAlive)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with a two-byte body, as a sender would POST it.
    const REQUEST: &[u8] = b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";

    /// Connects, sets a read timeout and sends [`REQUEST`].
    fn send(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(read_timeout)).unwrap();
        stream.write_all(REQUEST).unwrap();
        stream
    }

    /// Sends one request on a fresh connection and reads until the server closes it or
    /// `limit` bytes came (bounded by a read timeout).
    fn exchange(addr: SocketAddr, limit: usize) -> Vec<u8> {
        let mut stream = send(addr, Duration::from_secs(5));
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < limit {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
        out
    }

    #[test]
    fn each_behaviour_answers_as_documented() {
        let cases: Vec<(Behaviour, &[u8])> = vec![
            (Behaviour::OkThenClose, OK_CLOSE),
            (Behaviour::Garbage, b"\x00\x01\x02SSH-2.0"),
            (
                Behaviour::CloseMidResponse,
                b"HTTP/1.1 200 OK\r\nContent-Type",
            ),
            (
                Behaviour::Redirect {
                    status: 307,
                    location: "http://elsewhere.invalid/".into(),
                },
                b"HTTP/1.1 307 Moved\r\nLocation: http://elsewhere.invalid/\r\n",
            ),
            (Behaviour::Drip(Duration::from_millis(1)), OK_CLOSE),
        ];
        for (behaviour, starts) in cases {
            let server = Hostile::start(behaviour.clone()).unwrap();
            let answer = exchange(server.addr(), 1 << 16);
            assert!(
                answer.starts_with(starts),
                "{}: {:?}",
                behaviour.name(),
                String::from_utf8_lossy(&answer)
            );
            assert_eq!(server.requests(), 1, "{}", behaviour.name());
            let received = server.received();
            assert_eq!(received[0].connection, 1);
            assert_eq!(received[0].target, "/hook");
            assert_eq!(received[0].header("host"), Some("x"));
            assert_eq!(received[0].body, b"{}");
        }
    }

    #[test]
    fn endless_answers_stop_when_the_reader_does() {
        for behaviour in [Behaviour::EndlessHeaders, Behaviour::EndlessChunkedBody] {
            let server = Hostile::start(behaviour.clone()).unwrap();
            // Far more than any head or body limit; the server would go on.
            let answer = exchange(server.addr(), 1 << 20);
            assert!(answer.len() >= 1 << 20, "{}", behaviour.name());
            assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        }
    }

    #[test]
    fn silence_and_reset_send_nothing() {
        let silent = Hostile::start(Behaviour::Silent).unwrap();
        let mut stream = send(silent.addr(), Duration::from_millis(300));
        let error = stream.read(&mut [0u8; 16]).unwrap_err();
        assert!(waiting(&error), "{error}");
        drop(stream);

        let reset = Hostile::start(Behaviour::Reset).unwrap();
        let mut stream = send(reset.addr(), Duration::from_secs(5));
        let result = stream.read(&mut [0u8; 16]);
        assert!(
            matches!(&result, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{result:?}"
        );
        assert_eq!(reset.requests(), 0, "reset before the request is read");
    }

    #[test]
    fn a_second_request_is_dropped_and_later_connections_refused() {
        let server = Hostile::start(Behaviour::OnlyFirstAnswered).unwrap();
        let mut stream = send(server.addr(), Duration::from_secs(5));
        let mut answer = vec![0u8; OK_KEEP_ALIVE.len()];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(answer, OK_KEEP_ALIVE);
        stream.write_all(REQUEST).unwrap();
        assert!(matches!(stream.read(&mut [0u8; 16]), Ok(0) | Err(_)));
        // A second connection is closed without reading anything.
        assert!(exchange(server.addr(), 16).is_empty());
        assert_eq!(server.connections(), 2);
        assert_eq!(server.requests(), 2);
    }

    #[test]
    fn nothing_answers_at_a_closed_port_or_a_black_hole() {
        let port = closed_port().unwrap();
        let refused = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        let hole = BlackHole::start().unwrap();
        let result = TcpStream::connect_timeout(&hole.addr(), Duration::from_millis(200));
        assert!(result.is_err(), "{result:?}");
    }
}
