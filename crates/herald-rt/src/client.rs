//! The per-shard outbound HTTP/1.1 client.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use herald_http::{HeaderFields, Limits, Response, ResponseParser, Url};

use crate::conn::{Conn, Socket};
use crate::deadline::Deadlines;
use crate::dns::{DnsConfig, Resolver};
use crate::egress::{EgressPolicy, EgressRefusal};
use crate::error::TransportError;
use crate::pool::{OriginKey, Pool, PoolConfig, PoolFull};
use crate::ring::SocketRing;
use crate::tls::{self, TrustAnchors};

/// Default connect timeout (DNS, TCP and TLS handshake): 5 s.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default whole-request timeout: 30 s.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Most hosts [`HttpClient`] keeps shared names for (a few dozen bytes each); past it
/// they are forgotten and shared again as requests come.
const ORIGIN_HOSTS_MAX: usize = 4096;
/// Most caller headers on one request (signature headers plus a webhook's custom ones).
pub const REQUEST_HEADERS_MAX: usize = 64;
/// Longest [`HttpClient::check_url`] waits for a name to resolve: the connect timeout
/// delivery gives the same lookup, so a name that passes the check would also resolve in
/// time for a delivery.
pub const CHECK_URL_TIMEOUT_MS: u64 = CONNECT_TIMEOUT_MS_DEFAULT;

/// Why [`HttpClient::check_url`] refused a destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// The URL is plain `http://` and the client requires https.
    #[error("plain http is not allowed (https is required)")]
    PlainHttp,
    /// The host is, or resolves only to, addresses the egress guard refuses.
    #[error("{host}: {refusal}")]
    Address {
        /// The URL's host as written.
        host: String,
        /// Whether the host is an IP literal (no lookup took place).
        literal: bool,
        /// The first refused address and its class.
        refusal: EgressRefusal,
    },
    /// The name could not be resolved.
    #[error("cannot resolve {host}: {detail}")]
    Lookup {
        /// The name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// The lookup did not finish within its budget.
    #[error("lookup of {host} did not finish within {timeout_ms} ms")]
    LookupTimeout {
        /// The name.
        host: String,
        /// The budget.
        timeout_ms: u64,
    },
}

/// The `User-Agent` every request carries unless the caller sets one.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Configuration of one shard's client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// CAs that https receivers are verified against.
    pub trust: TrustAnchors,
    /// Which addresses may be connected to, and whether plain http is allowed.
    pub egress: EgressPolicy,
    /// Per-origin connection limits and idle timeout.
    pub pool: PoolConfig,
    /// Resolver cache and concurrency.
    pub dns: DnsConfig,
    /// Response head, header count and body limits (a receiver sending endless headers
    /// or an endless body is cut off by these).
    pub limits: Limits,
    /// Size of the buffer one socket read fills. Default 16 KiB (one TLS record).
    pub read_buffer_bytes: usize,
    /// TLS sessions remembered for resumption, per shard. Default 256.
    pub tls_sessions_max: usize,
    /// Wait for responses on a ring of the shard's own that never interrupts the shard
    /// (`IORING_SETUP_COOP_TASKRUN`; see `ring.rs`), instead of glommio's. Default
    /// `true`; where the kernel has no such ring, connections wait through glommio.
    pub socket_ring: bool,
    /// Request buffers kept for reuse between requests. Default 256. A request holds
    /// one only while it is encoded and written, so in steady state one or two are in
    /// use and the rest wait for a burst of retries on fresh connections. (Reads all
    /// fill one buffer per client of [`ClientConfig::read_buffer_bytes`].)
    pub spare_buffers_max: usize,
}

impl ClientConfig {
    /// Defaults around the given trust anchors: only public addresses, 32 connections
    /// per origin, 30 s idle timeout, herald-http's default limits.
    pub fn new(trust: TrustAnchors) -> ClientConfig {
        ClientConfig {
            trust,
            egress: EgressPolicy::new(),
            pool: PoolConfig::default(),
            dns: DnsConfig::default(),
            limits: Limits::default(),
            read_buffer_bytes: 16 * 1024,
            tls_sessions_max: 256,
            spare_buffers_max: 256,
            socket_ring: true,
        }
    }
}

/// One webhook delivery attempt as the transport sees it: always a `POST` of a JSON body.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// Where to send it; shared, since every attempt to one webhook goes to the same
    /// place and cloning a URL costs several allocations.
    pub url: Arc<Url>,
    /// Extra headers (signature headers, the webhook's custom headers), in one buffer.
    /// `Host` and `Content-Length` are set by the encoder and refused here;
    /// `Content-Type` and `User-Agent` replace the defaults.
    pub headers: HeaderFields,
    /// The body, shared between the fan-out of one event (and with the dispatcher,
    /// which hands out the same bytes, held through the journal's mapping): copied
    /// once, into the request's wire buffer.
    pub body: Bytes,
    /// Budget for DNS, TCP connect and TLS handshake. Default 5 s.
    pub connect_timeout_ms: u64,
    /// Budget for the whole exchange, connect included. Default 30 s.
    pub request_timeout_ms: u64,
}

impl OutboundRequest {
    /// A request with no extra headers and the default timeouts.
    pub fn new(url: impl Into<Arc<Url>>, body: impl Into<Bytes>) -> OutboundRequest {
        OutboundRequest {
            url: url.into(),
            headers: HeaderFields::new(),
            body: body.into(),
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.headers.push(name.as_ref(), value.as_ref());
        self
    }
}

/// Counters of one client (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections opened (TCP connected, and for https handshaken).
    pub connections_opened: u64,
    /// Requests sent on a connection that had carried one before.
    pub connections_reused: u64,
    /// TLS handshakes that resumed an earlier session.
    pub tls_resumed: u64,
    /// Requests retried on a fresh connection because a reused one turned out dead.
    pub stale_retries: u64,
    /// Idle connections checked for a close or for bytes nobody asked for before reuse:
    /// those idle at least [`PoolConfig::liveness_check_after_idle_us`], and on the socket
    /// ring any it saw something arrive on.
    pub liveness_checks: u64,
    /// Of those, the checks that looked at the socket (a `recv(2)` peek). On the socket
    /// ring ([`ClientConfig::socket_ring`]) the ring's reports answer the others: only a
    /// connection it saw something arrive on is peeked at.
    pub liveness_peeks: u64,
    /// Idle connections closed by the idle timeout.
    pub idle_closed: u64,
    /// Reads that found their connection empty (they would have blocked). Counted for
    /// connections on the socket ring ([`ClientConfig::socket_ring`]), which reads only
    /// after the kernel reported the socket readable: these come from stale reports.
    pub reads_found_empty: u64,
}

/// The outbound HTTP client of one shard: single-threaded, runs inside a glommio
/// `LocalExecutor`, keeps keep-alive connections per origin.
///
/// Error details name the receiver by host and port only, never by path or query:
/// webhook URLs often carry access tokens in the query string, and details end up in
/// logs and the delivery log.
///
/// # Stale connections and at-least-once
///
/// A receiver may close an idle keep-alive connection at any moment. A request sent on a
/// reused connection that fails before any response byte arrives (write error, reset, or
/// close) is sent once more on a fresh connection. The receiver may in rare cases have
/// seen the first copy (it processed the request and then died before answering), so it
/// may see the request twice; that is within Herald's at-least-once contract, and every
/// request carries a stable event id for de-duplication.
pub struct HttpClient {
    config: ClientConfig,
    tls: futures_rustls::TlsConnector,
    // Boxed so that a send task's future holds a pointer, not the connection (the
    // parser's buffers and the stream), keeping every task's allocation small.
    pool: Rc<Pool<Box<Conn>>>,
    resolver: Resolver,
    spare_buffers: RefCell<Vec<Vec<u8>>>,
    /// The `Host` value of the request being encoded, reused (encoding never awaits).
    host_header: RefCell<String>,
    /// Hosts as the pool's keys hold them, so that looking up a request's origin clones a
    /// shared name instead of allocating one per request. Keys compare by content, so
    /// forgetting them (past [`ORIGIN_HOSTS_MAX`]) is always safe.
    origin_hosts: RefCell<HashSet<Arc<str>>>,
    /// The one buffer every socket read of this client fills ([`ClientConfig::read_buffer_bytes`]),
    /// borrowed only while a read and the parse of what it brought run, which never
    /// await: the parser keeps what it needs. One for all exchanges instead of one per
    /// exchange in flight (16 KiB each, held for as long as a receiver takes to answer),
    /// and a buffer in constant use stays in the cache.
    read_scratch: RefCell<Vec<u8>>,
    stats: Cell<ClientStats>,
    last_sweep: Cell<Instant>,
    /// Every request's deadline (see `deadline.rs`).
    deadlines: Rc<Deadlines>,
    /// The shard's socket ring, set up with the first connection (on the executor):
    /// `Some(None)` once it turned out unavailable or is turned off.
    socket_ring: RefCell<Option<Option<Rc<SocketRing>>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("egress", &self.config.egress)
            .field("pool", &self.config.pool)
            .field("stats", &self.stats.get())
            .finish()
    }
}

/// Where a failure happened, to decide whether a stale-connection retry is safe.
struct AttemptError {
    error: TransportError,
    /// No byte of a response had arrived.
    before_response: bool,
}

impl HttpClient {
    /// A client; cheap apart from building the rustls configuration.
    pub fn new(config: ClientConfig) -> HttpClient {
        let tls_config: Arc<rustls::ClientConfig> =
            tls::client_config(&config.trust, config.tls_sessions_max);
        HttpClient {
            tls: futures_rustls::TlsConnector::from(tls_config),
            pool: Rc::new(Pool::new(config.pool)),
            resolver: Resolver::new(config.dns),
            spare_buffers: RefCell::new(Vec::new()),
            host_header: RefCell::new(String::new()),
            origin_hosts: RefCell::new(HashSet::new()),
            read_scratch: RefCell::new(vec![0; config.read_buffer_bytes.max(1)]),
            stats: Cell::new(ClientStats::default()),
            last_sweep: Cell::new(Instant::now()),
            deadlines: Rc::new(Deadlines::default()),
            socket_ring: RefCell::new(None),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        let mut stats = self.stats.get();
        if let Some(Some(ring)) = self.socket_ring.borrow().as_ref() {
            stats.reads_found_empty = ring.reads_found_empty();
        }
        stats
    }

    /// Connections open or being opened, idle ones included.
    pub fn connections_open(&self) -> usize {
        self.pool.total_open()
    }

    fn bump(&self, f: impl FnOnce(&mut ClientStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    /// Idle connections kept for `url`'s origin.
    pub fn idle_connections(&self, url: &Url) -> usize {
        self.pool.idle_count(&self.origin_key(url))
    }

    /// Closes idle connections past the idle timeout. `send` does this at most once a
    /// second on its own; a shard loop may also call it from its timer so that a quiet
    /// shard releases sockets.
    pub fn sweep_idle(&self) -> usize {
        let now = Instant::now();
        self.last_sweep.set(now);
        let closed = self.pool.sweep(now);
        self.bump(|s| s.idle_closed += closed as u64);
        closed
    }

    /// POSTs `request` and returns the receiver's response (any status), or why there
    /// is none.
    pub async fn send(&self, request: OutboundRequest) -> Result<Response, TransportError> {
        self.send_from(&request, Instant::now()).await
    }

    /// [`HttpClient::send`] of a borrowed request, for a caller that has just read the
    /// clock: `started` (now, to within the caller's own work) starts the request
    /// timeout's budget and dates the pool checkout, so that a send reads the clock once
    /// for all three. Borrowed, so that a caller's task that owns the request holds it
    /// once: a request taken by value is held twice by this function's future (as its
    /// argument and as the local its body uses), and the task is copied whole into its
    /// allocation when spawned.
    pub async fn send_from(
        &self,
        request: &OutboundRequest,
        started: Instant,
    ) -> Result<Response, TransportError> {
        if started.saturating_duration_since(self.last_sweep.get()) >= Duration::from_secs(1) {
            self.sweep_idle();
        }
        let timeout_ms = request.request_timeout_ms.max(1);
        let budget = Duration::from_millis(timeout_ms);
        let exchange = self.exchange(request, started);
        let deadline = self.deadlines.until(started + budget);
        let timer = async {
            deadline.await;
            Err(TransportError::RequestTimeout(format!(
                "no complete response from {} within {timeout_ms} ms",
                request.url.host_header()
            )))
        };
        futures_lite::future::or(exchange, timer).await
    }

    async fn exchange(
        &self,
        request: &OutboundRequest,
        started: Instant,
    ) -> Result<Response, TransportError> {
        let url = &request.url;
        if self.config.egress.require_https && !url.is_tls() {
            return Err(TransportError::EgressRefused(format!(
                "http://{}: plain http is not allowed (https required)",
                url.host_header()
            )));
        }
        // Encoded before any connection is taken: a request that cannot be sent is
        // refused without touching the network.
        let mut wire = self.take_buffer();
        if let Err(e) = self.encode(request, &mut wire) {
            self.give_buffer(wire);
            return Err(e);
        }
        self.exchange_encoded(request, wire, started).await
    }

    /// Sends `wire`, the encoded `request`, and reads the response. The buffer goes back
    /// to the spares as soon as it is written ([`HttpClient::attempt`]); a retry on a
    /// fresh connection encodes the request again.
    async fn exchange_encoded(
        &self,
        request: &OutboundRequest,
        wire: Vec<u8>,
        started: Instant,
    ) -> Result<Response, TransportError> {
        let mut wire = Some(wire);
        let key = self.origin_key(&request.url);
        let checkout = self.pool.checkout(&key, started).await.map_err(|full| {
            let limits = &self.config.pool;
            TransportError::PoolFull(match full {
                PoolFull::OriginQueue => format!(
                    "{} connections to {} busy and {} requests waiting",
                    limits.connections_per_origin_max,
                    request.url.host_header(),
                    limits.waiters_per_origin_max
                ),
                PoolFull::ShardConnections => format!(
                    "shard has {} connections open, none idle",
                    limits.connections_total_max
                ),
            })
        })?;
        let lease = checkout.lease;
        let idle_for = checkout.idle_for;
        // See `PoolConfig::liveness_check_after_idle_us` for why a connection answered a
        // moment ago is not looked at off the socket ring.
        let check_after = Duration::from_micros(self.config.pool.liveness_check_after_idle_us);
        let idle = checkout.conn.filter(|conn| {
            let past_window = idle_for >= check_after;
            let (reusable, peeked) = conn.reusable(past_window);
            if past_window || peeked {
                self.bump(|s| {
                    s.liveness_checks += 1;
                    s.liveness_peeks += u64::from(peeked);
                });
            }
            reusable
        });

        let result = async {
            if let Some(mut conn) = idle {
                self.bump(|s| s.connections_reused += 1);
                let first = wire.take().expect("the encoded request is sent once first");
                match self.attempt(&mut conn, first).await {
                    Ok(response) => return Ok((conn, response)),
                    Err(e) if !e.before_response => return Err(e.error),
                    Err(_) => {
                        tracing::debug!(
                            origin = %request.url.host_header(),
                            "reused connection was dead; retrying once"
                        );
                        self.bump(|s| s.stale_retries += 1);
                    }
                }
            }
            // The connect budget starts now, not at `send`: time spent queued for a slot
            // or on a dead reused connection is the request timeout's business.
            let deadline =
                Instant::now() + Duration::from_millis(request.connect_timeout_ms.max(1));
            // Boxed: connecting (DNS, TCP, a whole TLS handshake) is the rare path but its
            // future is several KiB; inline it would make every send task that large, and
            // allocations of that size are the slow ones in glibc malloc.
            let mut conn = Box::pin(self.open(&request.url, deadline)).await?;
            let wire = match wire.take() {
                Some(wire) => wire,
                None => {
                    // The first copy went out on a connection that turned out dead.
                    let mut again = self.take_buffer();
                    self.encode(request, &mut again)?;
                    again
                }
            };
            match self.attempt(&mut conn, wire).await {
                Ok(response) => Ok((conn, response)),
                Err(e) => Err(e.error),
            }
        }
        .await;

        let (conn, (response, reusable)) = result?;
        if reusable {
            lease.release(conn, Instant::now());
        } else {
            drop(conn);
            drop(lease);
        }
        Ok(response)
    }

    fn encode(&self, request: &OutboundRequest, out: &mut Vec<u8>) -> Result<(), TransportError> {
        if request.headers.len() > REQUEST_HEADERS_MAX {
            return Err(TransportError::InvalidRequest(format!(
                "{} headers, more than {REQUEST_HEADERS_MAX}",
                request.headers.len()
            )));
        }
        // The defaults the caller did not set, in front of the caller's fields.
        let content_type: (&str, &[u8]) = ("Content-Type", b"application/json");
        let user_agent: (&str, &[u8]) = ("User-Agent", USER_AGENT.as_bytes());
        let defaults = match (
            request.headers.contains("content-type"),
            request.headers.contains("user-agent"),
        ) {
            (false, false) => &[content_type, user_agent][..],
            (false, true) => &[content_type][..],
            (true, false) => &[user_agent][..],
            (true, true) => &[][..],
        };
        let mut host = self.host_header.borrow_mut();
        host.clear();
        request.url.write_host_header(&mut host);
        // Head and body in one buffer: one write (one TLS record for a small request).
        herald_http::encode_request_fields(
            out,
            "POST",
            &request.url.target,
            &host,
            defaults,
            &request.headers,
            &request.body,
        )
        .map_err(|e| TransportError::InvalidRequest(e.to_string()))
    }

    /// One request/response on `conn`. Returns the response and whether the connection
    /// may carry another request.
    async fn attempt(
        &self,
        conn: &mut Conn,
        wire: Vec<u8>,
    ) -> Result<(Response, bool), AttemptError> {
        let before = |e: std::io::Error, what: &str| AttemptError {
            error: TransportError::Connection(format!("{what}: {e}")),
            before_response: true,
        };
        let written = conn.stream.write_all(&wire).await;
        // Back to the spares at once, not after the response: the shard's next send
        // encodes into it while it is still in the cache (a buffer kept for the whole
        // exchange comes back cold, and writing a request into cold lines cost more than
        // encoding it).
        self.give_buffer(wire);
        written.map_err(|e| before(e, "sending request"))?;
        conn.stream
            .flush()
            .await
            .map_err(|e| before(e, "sending request"))?;
        conn.parser.reset();
        let mut received = false;
        loop {
            // A read into the shared buffer and the parse of its bytes, in one poll.
            let read = std::future::poll_fn(|cx| {
                let mut scratch = self.read_scratch.borrow_mut();
                match Pin::new(&mut conn.stream).poll_read(cx, &mut scratch) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => Poll::Ready(Ok((0, None))),
                    Poll::Ready(Ok(n)) => {
                        let parsed = parse_guarded(|| conn.parser.feed(&scratch[..n]));
                        Poll::Ready(Ok((n, Some(parsed))))
                    }
                }
            })
            .await;
            let (n, parsed) = match read {
                Ok(read) => read,
                // A TLS peer that closed without a `close_notify` (many do): the end of a
                // body that ends with the connection, as a plain close is. (Truncating
                // such a body takes a forged close; the status was read whole, and a
                // body truncated anywhere else is an error still.)
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => (0, None),
                Err(e) => {
                    return Err(AttemptError {
                        error: TransportError::Connection(format!("reading response: {e}")),
                        before_response: !received,
                    })
                }
            };
            let Some(parsed) = parsed else {
                return match parse_guarded(|| conn.parser.feed_eof()) {
                    Ok(Some(response)) => Ok((response, false)),
                    Ok(None) => Err(AttemptError {
                        error: TransportError::Connection(
                            "receiver closed the connection without a response".to_owned(),
                        ),
                        before_response: true,
                    }),
                    Err(e) => Err(AttemptError {
                        error: TransportError::Protocol(e),
                        before_response: false,
                    }),
                };
            };
            received = true;
            let (used, response) = match parsed {
                Ok(parsed) => parsed,
                // A body past the client's limit: the response is still its status (a
                // 200 with a huge echo succeeded, a 410 is gone), read without the rest
                // of its body, and its connection closed.
                Err(e) => match conn.parser.take_oversized() {
                    Some(response) => return Ok((response, false)),
                    None => {
                        return Err(AttemptError {
                            error: TransportError::Protocol(e),
                            before_response: false,
                        })
                    }
                },
            };
            if let Some(response) = response {
                conn.requests += 1;
                // Bytes after the response would be an unrequested second response
                // (we never pipeline): the framing cannot be trusted any more. Over TLS
                // they may sit in the session, past the end of this read.
                let reusable = response.keep_alive && used == n && !conn.holds_unread();
                return Ok((response, reusable));
            }
        }
    }

    /// Applies the egress guard to `url` exactly as a delivery would, without
    /// connecting: plain http is refused when https is required; an IP literal is
    /// judged as is; a name is resolved (off the executor, through the shard's cache,
    /// within `timeout_ms`) and refused when none of its addresses is permitted, the
    /// same rule [`send`](Self::send) applies before connecting.
    pub async fn check_url(&self, url: &Url, timeout_ms: u64) -> Result<(), UrlRefusal> {
        if self.config.egress.require_https && !url.is_tls() {
            return Err(UrlRefusal::PlainHttp);
        }
        let lookup = self.resolver.resolve(&url.host);
        let addresses = futures_lite::future::or(async { Some(lookup.await) }, async {
            Timer::new(Duration::from_millis(timeout_ms.max(1))).await;
            None
        })
        .await
        .ok_or_else(|| UrlRefusal::LookupTimeout {
            host: url.host.clone(),
            timeout_ms,
        })?
        .map_err(|e| match e {
            crate::DnsError::Lookup { host, detail } => UrlRefusal::Lookup { host, detail },
        })?;
        match self.permitted(&addresses) {
            Ok(_) => Ok(()),
            Err(refusal) => Err(match refusal {
                Some(refusal) => UrlRefusal::Address {
                    host: url.host.clone(),
                    literal: crate::dns::ip_literal(&url.host).is_some(),
                    refusal,
                },
                None => UrlRefusal::Lookup {
                    host: url.host.clone(),
                    detail: "no addresses".to_owned(),
                },
            }),
        }
    }

    /// The addresses the egress guard permits, in the resolver's order; when there are
    /// none, the first refusal (`None` for an empty answer).
    fn permitted(&self, addresses: &[IpAddr]) -> Result<Vec<IpAddr>, Option<EgressRefusal>> {
        let mut refusal = None;
        let permitted: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|ip| match self.config.egress.check(*ip) {
                Ok(()) => true,
                Err(r) => {
                    refusal.get_or_insert(r);
                    false
                }
            })
            .collect();
        if permitted.is_empty() {
            Err(refusal)
        } else {
            Ok(permitted)
        }
    }

    /// Resolves, checks and connects (and for https, handshakes) within `deadline`.
    async fn open(&self, url: &Url, deadline: Instant) -> Result<Box<Conn>, TransportError> {
        let remaining = |now: Instant| deadline.saturating_duration_since(now);
        let lookup = self.resolver.resolve(&url.host);
        let addresses = futures_lite::future::or(async { Some(lookup.await) }, async {
            Timer::new(remaining(Instant::now())).await;
            None
        })
        .await
        .ok_or_else(|| {
            TransportError::Dns(format!(
                "lookup of {} did not finish within the connect timeout",
                url.host
            ))
        })?
        .map_err(|e| TransportError::Dns(e.to_string()))?;

        let permitted = self.permitted(&addresses).map_err(|refusal| {
            TransportError::EgressRefused(match refusal {
                Some(r) => format!("{}: {r}", url.host),
                None => format!("{}: no address", url.host),
            })
        })?;

        let mut last_error = None;
        let mut stream = None;
        for ip in permitted {
            let left = remaining(Instant::now());
            if left.is_zero() {
                break;
            }
            // Connect to exactly the address that was checked: never re-resolve.
            let addr = SocketAddr::new(ip, url.port);
            match TcpStream::connect_timeout(addr, left).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_error = Some((addr, e)),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                return Err(match last_error {
                    Some((addr, e)) if is_timeout(&e) || remaining(Instant::now()).is_zero() => {
                        TransportError::ConnectTimeout(format!("{addr}: {e}"))
                    }
                    Some((addr, e)) => TransportError::Connect(format!("{addr}: {e}")),
                    None => TransportError::ConnectTimeout(format!(
                        "{}: connect timeout elapsed",
                        url.host_header()
                    )),
                })
            }
        };
        // Webhook requests are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let stream = Socket::new(stream, self.socket_ring().as_ref());

        let conn = if url.is_tls() {
            let name = tls::server_name(&url.host).map_err(TransportError::Tls)?;
            let handshake = self.tls.connect(name, stream);
            let left = remaining(Instant::now());
            let tls_stream = futures_lite::future::or(async { Some(handshake.await) }, async {
                Timer::new(left).await;
                None
            })
            .await
            .ok_or_else(|| {
                TransportError::ConnectTimeout(format!(
                    "{}: TLS handshake did not finish within the connect timeout ({} ms left)",
                    url.host_header(),
                    left.as_millis()
                ))
            })?
            .map_err(|e| {
                TransportError::Tls(format!("{}: {}", url.host_header(), tls_detail(&e)))
            })?;
            if tls_stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                self.bump(|s| s.tls_resumed += 1);
            }
            Box::new(Conn::tls(tls_stream, self.parser()))
        } else {
            Box::new(Conn::plain(stream, self.parser()))
        };
        self.bump(|s| s.connections_opened += 1);
        Ok(conn)
    }

    /// Whether connections wait for responses on the shard's own socket ring (see
    /// [`ClientConfig::socket_ring`]); known once the first connection was opened.
    pub fn socket_ring_in_use(&self) -> Option<bool> {
        self.socket_ring.borrow().as_ref().map(Option::is_some)
    }

    /// The shard's socket ring, set up on first use.
    fn socket_ring(&self) -> Option<Rc<SocketRing>> {
        self.socket_ring
            .borrow_mut()
            .get_or_insert_with(|| {
                if self.config.socket_ring {
                    SocketRing::new()
                } else {
                    None
                }
            })
            .clone()
    }

    fn origin_key(&self, url: &Url) -> OriginKey {
        let mut hosts = self.origin_hosts.borrow_mut();
        let host = match hosts.get(url.host.as_str()) {
            Some(host) => Arc::clone(host),
            None => {
                if hosts.len() >= ORIGIN_HOSTS_MAX {
                    hosts.clear();
                }
                let host: Arc<str> = Arc::from(url.host.as_str());
                hosts.insert(Arc::clone(&host));
                host
            }
        };
        OriginKey {
            https: url.is_tls(),
            host,
            port: url.port,
        }
    }

    fn parser(&self) -> ResponseParser {
        ResponseParser::new(self.config.limits)
    }

    fn take_buffer(&self) -> Vec<u8> {
        let mut buf = self.spare_buffers.borrow_mut().pop().unwrap_or_default();
        buf.clear();
        buf
    }

    fn give_buffer(&self, buf: Vec<u8>) {
        let mut spare = self.spare_buffers.borrow_mut();
        // A buffer that grew for one huge body is not kept.
        if spare.len() < self.config.spare_buffers_max
            && buf.capacity() <= self.config.read_buffer_bytes.max(64 * 1024)
        {
            spare.push(buf);
        }
    }
}

/// `parse` (the response parser at a receiver's bytes), its error as text; a panic in it
/// (a defect, met on a receiver's input) is such an error too: it ends that attempt as a
/// protocol failure, retried by schedule, and closes the connection, instead of unwinding
/// through the executor and ending the shard's thread with every tenant's deliveries on
/// it. (Caught here, around the parser, not around the whole send: catching at every poll
/// of a send cost 2 % of the engine's CPU per delivery.)
fn parse_guarded<T>(
    parse: impl FnOnce() -> Result<T, herald_http::HttpError>,
) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(parsed) => parsed.map_err(|e| e.to_string()),
        Err(panic) => {
            let message = crate::shard::panic_text(panic.as_ref());
            tracing::error!(
                panic = message,
                "the response parser panicked; the attempt fails as a protocol error"
            );
            Err(format!(
                "the response could not be parsed (a defect in the parser: {message})"
            ))
        }
    }
}

fn is_timeout(e: &glommio::GlommioError<()>) -> bool {
    match e {
        glommio::GlommioError::IoError(io) => io.kind() == std::io::ErrorKind::TimedOut,
        glommio::GlommioError::TimedOut(_) => true,
        _ => false,
    }
}

fn tls_detail(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls_error) => rustls_error.to_string(),
        None => format!("handshake failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in the parser is the attempt's protocol error, as the parser's own
    /// errors are; the thread goes on.
    #[test]
    fn a_parser_panic_is_a_protocol_error_not_a_dead_thread() {
        let panicked = parse_guarded::<()>(|| panic!("boom at byte 7"));
        assert_eq!(
            panicked,
            Err(
                "the response could not be parsed (a defect in the parser: boom at byte 7)"
                    .to_owned()
            )
        );
        let refused = parse_guarded::<()>(|| Err(herald_http::HttpError::InvalidContentLength));
        assert_eq!(
            refused,
            Err(herald_http::HttpError::InvalidContentLength.to_string())
        );
        assert_eq!(parse_guarded(|| Ok(3)), Ok(3));
    }

    #[test]
    fn configuration_can_be_built_once_and_sent_to_shards() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<ClientConfig>();
        assert_send_sync_clone::<TransportError>();
    }

    #[test]
    fn origin_keys_share_their_host_and_stay_equal_past_the_cap() {
        let client = HttpClient::new(ClientConfig::new(TrustAnchors::empty()));
        let url = Url::parse("https://hooks.example.com:8443/a").unwrap();
        let (first, second) = (client.origin_key(&url), client.origin_key(&url));
        assert_eq!(first, second);
        assert!(Arc::ptr_eq(&first.host, &second.host), "one shared name");
        assert_eq!(
            (first.https, &*first.host, first.port),
            (true, "hooks.example.com", 8443)
        );
        for i in 0..=ORIGIN_HOSTS_MAX {
            client.origin_key(&Url::parse(&format!("http://h{i}.example/")).unwrap());
        }
        assert!(client.origin_hosts.borrow().len() <= ORIGIN_HOSTS_MAX);
        // Forgotten names are shared again; keys compare by content either way.
        assert_eq!(client.origin_key(&url), first);
    }

    #[test]
    fn error_classes_are_distinct_and_carry_their_detail() {
        let errors = [
            TransportError::Dns("d".into()),
            TransportError::EgressRefused("d".into()),
            TransportError::Connect("d".into()),
            TransportError::ConnectTimeout("d".into()),
            TransportError::Tls("d".into()),
            TransportError::RequestTimeout("d".into()),
            TransportError::Protocol("d".into()),
            TransportError::Connection("d".into()),
            TransportError::PoolFull("d".into()),
            TransportError::InvalidRequest("d".into()),
        ];
        let classes: std::collections::HashSet<_> = errors.iter().map(|e| e.class()).collect();
        assert_eq!(classes.len(), errors.len());
        for e in &errors {
            assert_eq!(e.detail(), "d");
            assert!(e.to_string().ends_with(": d"), "{e}");
        }
    }
}
