//! The listener: accepts connections (plain or TLS), reads requests with
//! `herald-http`'s `RequestParser` under its `Limits`, hands each to the router and
//! writes the answers in order.
//!
//! Defences, each a named setting in `[limits]`: a cap on open connections (a connection
//! over it closes the oldest idle one, so idle connections cannot starve new requests;
//! with none idle, or every idle one already closing for an earlier newcomer, it gets a
//! 503 and is closed), a listen backlog that holds a burst of them, refusals kept out of
//! the counts and bounded in number (past 256 under way a connection to refuse is
//! closed unanswered), a cap per client address (IPv6: per
//! /64) checked first, so that one client cannot hold every slot with connections that
//! are never idle (a 429), a deadline for a whole request once its first byte
//! arrived (slowloris), an idle keep-alive timeout, a cap on requests per connection,
//! pipelined requests answered in order with at most `pipelined_requests_max` answers
//! buffered, and the parser's refusal of ambiguous framing (both `Content-Length` and
//! `Transfer-Encoding`, repeated lengths) with a 400 and a close.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use herald_http::{HttpError, Limits, RequestParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::routes::App;
use crate::Response;

/// Bytes read from a socket at a time. Requests larger than this arrive over several
/// reads; the parser keeps what it needs.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Time allowed for a TLS handshake: a client that stalls it holds a connection slot.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for writing one batch of answers to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of answers to pipelined requests kept before they are written. Answers are
/// batched by count too (`pipelined_requests_max`), but one answer can be megabytes (a
/// page of large webhooks): a client that pipelines such requests and does not read
/// would otherwise have the server build and hold every answer. Past this, the server
/// writes what it has and reads no further request until it is written, so such a
/// client holds at most one answer and this much.
const OUT_BUFFERED_BYTES_MAX: usize = 64 * 1024;

/// Open API connections, for the cap and the metrics, and the idle ones among them (no
/// request under way: before the first byte, in the TLS handshake, or kept alive
/// between requests).
#[derive(Debug)]
pub struct ConnectionCount {
    /// `connections_max`.
    max: usize,
    open: AtomicUsize,
    idle: AtomicUsize,
    /// Each idle connection holds a place in this semaphore's queue from the moment it
    /// became idle (a new one from its accept, so that the queue's order is the order
    /// of idleness, not of the tasks' first runs), and a newcomer over the cap adds one
    /// permit: the one idle longest takes it (tokio's semaphore is fair) and closes
    /// while the server is still over its cap. A permit that reaches a connection whose
    /// next request arrived first goes on to the next in line (or, with none waiting,
    /// to the next connection to become idle); one that reaches a connection ending
    /// anyway is spent by its end; one that comes once the server is back under its
    /// cap is spent without closing anything (see [`IdleMark`]).
    shed: Arc<tokio::sync::Semaphore>,
    /// Permits given to `shed` and not yet spent.
    owed: AtomicUsize,
    /// Permits given for a descriptor (an accept that found none, EMFILE) rather than
    /// for a newcomer over the cap: a connection that takes one closes over the cap or
    /// not.
    for_descriptors: AtomicUsize,
    /// Connections being refused (answered 503 or 429, then drained): not counted in
    /// `open` or per address, so that refusals cannot take anyone's room; at most
    /// [`REFUSALS_UNDER_WAY_MAX`].
    refusing: AtomicUsize,
    /// Open connections per client address ([`address_key`]); addresses with none have
    /// no entry, so the map holds at most `connections_max` entries.
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionCount {
    /// No connections yet, at most `max` open (`connections_max`).
    pub fn new(max: usize) -> Self {
        ConnectionCount {
            max,
            open: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            shed: Arc::new(tokio::sync::Semaphore::new(0)),
            owed: AtomicUsize::new(0),
            for_descriptors: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            by_address: Mutex::default(),
        }
    }
}

/// The client a connection's address stands for: an IPv4 address (or one mapped into
/// IPv6) as itself, an IPv6 address by its /64, the block a single host or home network
/// is commonly given (counting per address would let one host open a connection from
/// each of its 2^64 addresses).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl ConnectionCount {
    /// Currently open.
    pub fn get(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Has the connection idle the longest close, unless every idle one is already
    /// owed; returns whether one was. The count is a hint: a connection may leave
    /// idleness meanwhile, and then the next one to become idle closes instead.
    fn shed_idle(&self) -> bool {
        if self.idle.load(Ordering::Relaxed) <= self.owed.load(Ordering::Relaxed) {
            return false;
        }
        self.owed.fetch_add(1, Ordering::Relaxed);
        self.shed.add_permits(1);
        true
    }

    /// Has the connection idle the longest close to free its descriptor, under the cap
    /// too (see [`ConnectionCount::shed_idle`]).
    fn shed_idle_for_descriptor(&self) -> bool {
        if self.idle.load(Ordering::Relaxed) <= self.owed.load(Ordering::Relaxed) {
            return false;
        }
        self.for_descriptors.fetch_add(1, Ordering::Relaxed);
        self.shed_idle()
    }

    /// Whether a connection that took a permit closes: while the server is over its
    /// cap, or for a descriptor wanted.
    fn closes_for_permit(&self) -> bool {
        self.get() > self.max
            || self
                .for_descriptors
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }

    /// Counts a new connection from `peer`; returns its slot and how many connections
    /// are open in all and from its address, itself included.
    fn open(self: &Arc<Self>, peer: IpAddr) -> (ConnectionSlot, usize, usize) {
        let address = address_key(peer);
        let from_address = {
            let mut by_address = self
                .by_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let count = by_address.entry(address).or_insert(0);
            *count += 1;
            *count
        };
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let slot = ConnectionSlot {
            count: Arc::clone(self),
            address,
        };
        (slot, open, from_address)
    }
}

/// A refusal under way, counted in [`ConnectionCount::refusing`] while it lives.
struct RefusingSlot(Arc<ConnectionCount>);

impl RefusingSlot {
    /// A place for one more refusal, if fewer than [`REFUSALS_UNDER_WAY_MAX`] are under
    /// way.
    fn take(count: &Arc<ConnectionCount>) -> Option<RefusingSlot> {
        count
            .refusing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < REFUSALS_UNDER_WAY_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| RefusingSlot(Arc::clone(count)))
    }
}

impl Drop for RefusingSlot {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Decrements the counts when a connection ends, however it ends.
struct ConnectionSlot {
    count: Arc<ConnectionCount>,
    address: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.count.open.fetch_sub(1, Ordering::Relaxed);
        let mut by_address = self
            .count
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// A permit of [`ConnectionCount::shed`], once a connection's place in its queue comes.
type ShedPlace = Pin<
    Box<
        dyn Future<Output = Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// Counts a connection as idle while it lives, and holds its place in the queue of idle
/// connections that make room for newcomers, then the permit that reaches it. Dropped,
/// it spends that permit: the connection ends, which makes the room; one whose next
/// request arrived gives it up instead ([`IdleMark::hand_on`]).
pub(crate) struct IdleMark {
    count: Arc<ConnectionCount>,
    /// Its place in the queue, until a permit reached it.
    place: Option<ShedPlace>,
    /// A permit that reached it: one connection owed to a newcomer.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl IdleMark {
    /// Counts the connection idle and queues it behind every connection idle before it.
    fn new(count: &Arc<ConnectionCount>) -> IdleMark {
        count.idle.fetch_add(1, Ordering::Relaxed);
        let mut mark = IdleMark {
            count: Arc::clone(count),
            place: None,
            permit: None,
        };
        // Polled once here, so that the queue holds it from now, whenever its task
        // first runs; the task's own polls give it their waker.
        mark.queue();
        mark
    }

    /// Takes a place at the end of the queue, and a permit if one is free.
    fn queue(&mut self) {
        self.place = Some(Box::pin(Arc::clone(&self.count.shed).acquire_owned()));
        self.collect();
    }

    /// Takes the permit that reached its place, if one did, without waiting.
    fn collect(&mut self) {
        let Some(place) = &mut self.place else {
            return;
        };
        if let Poll::Ready(acquired) = place
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
            self.place = None;
            // The semaphore is never closed.
            self.permit = acquired.ok();
        }
    }

    /// Spends the permit it holds: what it was owed for is done.
    fn spend(&mut self) {
        if let Some(permit) = self.permit.take() {
            permit.forget();
            self.count.owed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Resolves once this connection is to close to make room: a permit reached it while
    /// the server is over its cap. One that comes once the server is back under its cap
    /// (another connection ended meanwhile) is spent, and the connection waits on at the
    /// end of the queue.
    async fn shed(&mut self) {
        loop {
            if self.permit.is_none() {
                match &mut self.place {
                    Some(place) => {
                        let acquired = place.await;
                        self.place = None;
                        match acquired {
                            Ok(permit) => self.permit = Some(permit),
                            // The semaphore is never closed.
                            Err(_) => std::future::pending().await,
                        }
                    }
                    None => {
                        self.queue();
                        continue;
                    }
                }
            }
            if self.count.closes_for_permit() {
                return;
            }
            self.spend();
        }
    }

    /// The connection's next request arrived: it is not idle, and a permit that reached
    /// it (or its place, unseen) goes to the next connection in line.
    fn hand_on(mut self) {
        self.place = None;
        self.permit = None;
    }
}

impl Drop for IdleMark {
    fn drop(&mut self) {
        self.collect();
        self.spend();
        self.count.idle.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`IdleMark::shed`] of a connection that is idle; never, for one that is not.
async fn shed(idle: Option<&mut IdleMark>) {
    match idle {
        Some(idle) => idle.shed().await,
        None => std::future::pending().await,
    }
}

/// Connections the kernel completes and queues for the accept loop (capped by
/// `net.core.somaxconn`, 4096 by default since Linux 5.4, 128 before). A burst of
/// clients (publishers reconnecting after a restart, a load balancer's pool opening)
/// arrives faster than one accept loop takes them; past the queue the kernel drops their
/// handshakes, and each client waits a full second before its SYN is sent again. The
/// standard library's 128 turned the end-to-end suite's 10,000 connections, opened by
/// ten threads, into a 40-second wait (0.2–2.3 s with this).
const LISTEN_BACKLOG: u32 = 4096;

/// The API's listening socket on `addr`, with [`LISTEN_BACKLOG`] and `SO_REUSEADDR` (a
/// restart binds again while the last run's connections linger in `TIME_WAIT`). Call
/// within the runtime that will accept on it.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts until `stop` turns true; each connection runs as its own task and closes
/// after its current request once `stop` is set.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    tasks: tokio_util_tracker::Tracker,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: free a descriptor held by an idle connection, and
                // back off instead of spinning.
                app.connections.shed_idle_for_descriptor();
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (slot, open, from_address) = app.connections.open(peer.ip());
        // One client over its share is refused without touching anyone else's room.
        // Over the cap, the oldest idle connection makes room (the count stays over the
        // cap only until it has closed); with none idle, or each idle one already owed
        // to an earlier newcomer, the newcomer is refused.
        let refusal = if from_address > app.config.limits.connections_per_address_max {
            Some(Refusal::Address)
        } else if open > app.config.limits.connections_max && !app.connections.shed_idle() {
            Some(Refusal::Cap)
        } else {
            None
        };
        if let Some(why) = refusal {
            // A refused connection leaves the counts at once: refusals held for their
            // answer must not fill the room of the clients within their share.
            drop(slot);
            match RefusingSlot::take(&app.connections) {
                Some(refusing) => {
                    tasks.spawn(refuse(stream, refusing, why));
                }
                // A flood of refusals: closed without an answer.
                None => drop(stream),
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Idle from now, and queued to make room in the order of its accept: a burst of
        // newcomers not yet run is room for the ones after them, oldest first.
        let idle = IdleMark::new(&app.connections);
        let app = Arc::clone(&app);
        let stop = stop.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(stream, peer, app, stop, Some(idle)).await,
                // Boxed: a TLS connection's state (its handshake, its session) is large,
                // and inline it would size every connection's task, plain text too.
                Some(acceptor) => {
                    Box::pin(serve_tls(acceptor, stream, peer, app, stop, idle)).await
                }
            }
        });
    }
}

/// Serves one connection over TLS: its handshake, then [`serve_connection`].
async fn serve_tls(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    mut idle: IdleMark,
) {
    // No request is under way before the handshake is done: the connection can be shed
    // meanwhile, and is closed on stopping, like any idle one.
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => handshake,
        _ = idle.shed() => return,
        _ = stop.changed() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_connection(stream, peer, app, stop, Some(idle)).await,
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Time given to a connection refused over the cap: to take its 503, and to finish
/// sending its request.
const REFUSE_TIME: Duration = Duration::from_secs(1);
/// Most request bytes read (and dropped) from a connection refused over the cap.
const REFUSE_DRAIN_BYTES_MAX: usize = 64 * 1024;
/// Most refusals under way at once. Each holds a descriptor for up to [`REFUSE_TIME`]
/// outside the connection caps (counted in them, one address's refused connections
/// would take every other client's room); past this many, a flood, a connection to be
/// refused is closed without an answer. A client within reason gets its 429 or 503
/// with `Retry-After`.
const REFUSALS_UNDER_WAY_MAX: usize = 256;

/// Why a new connection is refused.
enum Refusal {
    /// The server holds `connections_max` connections and none is idle (or each idle
    /// one is closing for an earlier newcomer): 503.
    Cap,
    /// Its client address holds `connections_per_address_max`: 429.
    Address,
}

/// Answers 503 or 429 and closes. The answer says `Connection: close`, and what the
/// client already sent is read and dropped before closing: closing a socket with unread
/// bytes makes the kernel send a reset, which can destroy the answer before the client
/// reads it.
async fn refuse(mut stream: TcpStream, _refusing: RefusingSlot, why: Refusal) {
    let response = match why {
        Refusal::Cap => Response::error(
            503,
            "unavailable",
            "too many open connections; retry shortly",
        ),
        Refusal::Address => Response::error(
            429,
            "too_many_connections",
            "too many open connections from this address (limits.connections_per_address_max); \
             reuse or close some, or retry shortly",
        ),
    }
    .with_header("Retry-After", "1".to_string());
    let mut out = Vec::new();
    response.encode(&mut out, true);
    let _ = tokio::time::timeout(REFUSE_TIME, async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSE_DRAIN_BYTES_MAX {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Serves one connection until the client closes, a limit or timeout ends it, or the
/// server stops. [`crate::Offline`] drives it over an in-memory stream.
pub(crate) async fn serve_connection<S>(
    mut stream: S,
    peer: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    mut idle_since_accept: Option<IdleMark>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &app.config.limits;
    let mut parser = RequestParser::new(Limits {
        body_captured_bytes_max: usize::try_from(limits.body_bytes_max).unwrap_or(usize::MAX),
        body_bytes_max: limits.body_bytes_max,
        ..Limits::default()
    });
    let mut buf = vec![0u8; READ_CHUNK_BYTES];
    // Unparsed bytes are buf[start..end].
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::new();
    let mut buffered_answers = 0usize;
    let mut served = 0usize;
    // The head must arrive within header_read_timeout of its first byte; once it has,
    // the body gets body_read_timeout from then.
    let mut request_deadline: Option<Instant> = None;
    let mut reading_body = false;
    let mut continue_sent = false;
    // The loop ends only by handing the connection to the event stream; every other
    // end returns.
    let (upgrade, leftover) = loop {
        // Parse what is buffered first: pipelined requests need no read.
        if start < end {
            if request_deadline.is_none() {
                request_deadline = Some(Instant::now() + limits.header_read_timeout());
            }
            let fed = parser.feed(&buf[start..end]);
            match fed {
                Ok((used, request)) => {
                    start += used;
                    if let Some(request) = request {
                        request_deadline = None;
                        reading_body = false;
                        continue_sent = false;
                        served += 1;
                        let stopping = *stop.borrow();
                        let last = !request.keep_alive
                            || served >= limits.requests_per_connection_max
                            || stopping;
                        let response = if crate::ws::is_stream_request(&request) {
                            match crate::ws::accept(&app, &request) {
                                Ok(upgrade) => {
                                    // Answers to pipelined requests before it go first.
                                    if write_out(&mut stream, &mut out).await.is_err() {
                                        return;
                                    }
                                    break (upgrade, buf[start..end].to_vec());
                                }
                                Err(refused) => {
                                    app.metrics.observe_request(crate::ws::PATH, refused.status);
                                    refused
                                }
                            }
                        } else {
                            app.handle(&request, peer).await
                        };
                        let close = last || response.close;
                        if request.method == "HEAD" {
                            response.encode_head(&mut out, close);
                        } else {
                            response.encode(&mut out, close);
                        }
                        buffered_answers += 1;
                        if close {
                            let _ = write_out(&mut stream, &mut out).await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                        // Keep answering pipelined requests, flushing every so often (by
                        // count and by bytes).
                        if start < end
                            && buffered_answers < limits.pipelined_requests_max
                            && out.len() < OUT_BUFFERED_BYTES_MAX
                        {
                            continue;
                        }
                        if write_out(&mut stream, &mut out).await.is_err() {
                            return;
                        }
                        buffered_answers = 0;
                        continue;
                    }
                    if parser.is_reading_body() && !reading_body {
                        let refused = parser
                            .head_in_progress()
                            .and_then(|head| app.refuse_before_body(head, peer));
                        if let Some(response) = refused {
                            // Answered on its head: the body is never read, and the
                            // connection, with the body still coming, closes.
                            response.encode(&mut out, true);
                            let _ = write_out(&mut stream, &mut out).await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                        reading_body = true;
                        request_deadline = Some(Instant::now() + limits.body_read_timeout());
                    }
                    if parser.expects_continue() && !continue_sent {
                        continue_sent = true;
                        out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                }
                Err(error) => {
                    answer_bad_request(&mut stream, &mut out, &app, &error).await;
                    return;
                }
            }
        }
        if !out.is_empty() {
            if write_out(&mut stream, &mut out).await.is_err() {
                return;
            }
            buffered_answers = 0;
        }
        if start == end {
            start = 0;
            end = 0;
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        // Wait for more bytes: the request deadline while one is under way, the idle
        // timeout between requests.
        let deadline = match request_deadline {
            Some(deadline) if !parser.is_idle() => deadline,
            _ => {
                request_deadline = None;
                Instant::now() + limits.idle_timeout()
            }
        };
        let idle = match parser.is_idle() {
            true => Some(
                idle_since_accept
                    .take()
                    .unwrap_or_else(|| IdleMark::new(&app.connections)),
            ),
            false => None,
        };
        let mut idle = idle;
        let read = tokio::select! {
            // Bytes that arrived win over a request to make room: a connection whose
            // next request is already here is not idle (a permit that reached it
            // passes to the next in line).
            biased;
            read = tokio::time::timeout_at(deadline, stream.read(&mut buf[end..])) => read,
            _ = stop.changed(), if idle.is_some() => {
                // Stopping: an idle connection is closed now.
                return;
            }
            _ = shed(idle.as_mut()), if idle.is_some() => {
                // A new connection over the cap needs this one's place.
                return;
            }
        };
        match (&read, idle) {
            // A request is arriving: a permit that reached the connection goes on.
            (Ok(Ok(n)), Some(idle)) if *n > 0 => idle.hand_on(),
            // Ending (or busy already): a permit it holds is spent by its end.
            (_, idle) => drop(idle),
        }
        match read {
            Ok(Ok(0)) => {
                if let Err(error) = parser.feed_eof() {
                    tracing::debug!(%peer, %error, "client closed mid-request");
                }
                return;
            }
            Ok(Ok(n)) => {
                if request_deadline.is_none() {
                    request_deadline = Some(Instant::now() + limits.header_read_timeout());
                }
                end += n;
            }
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "read failed");
                return;
            }
            Err(_) => {
                if !parser.is_idle() {
                    app.metrics.request_timeouts.inc();
                    let message = if reading_body {
                        format!(
                            "the request body did not arrive within {} ms of its head \
                             (limits.body_read_timeout_ms); send it at once after the head",
                            limits.body_read_timeout_ms
                        )
                    } else {
                        format!(
                            "the request head did not arrive within {} ms of its first byte \
                             (limits.header_read_timeout_ms)",
                            limits.header_read_timeout_ms
                        )
                    };
                    let response = Response::error(408, "request_timeout", &message);
                    response.encode(&mut out, true);
                    let _ = write_out(&mut stream, &mut out).await;
                }
                return;
            }
        }
    };
    // A stream lives for hours: the request path's buffers and parser (a read buffer, a
    // body of up to body_bytes_max, an earlier answer's capacity) go before it starts.
    drop((parser, buf, out));
    // Boxed: inline, a stream's state would size every connection's task, idle ones
    // too.
    Box::pin(crate::ws::serve(stream, leftover, upgrade, app, peer, stop)).await;
}

async fn answer_bad_request<S>(stream: &mut S, out: &mut Vec<u8>, app: &App, error: &HttpError)
where
    S: AsyncWrite + Unpin,
{
    let status = error.server_status();
    let (code, message) = match status {
        413 => (
            "payload_too_large",
            format!(
                "the request body is larger than {} bytes (limits.body_bytes_max)",
                app.config.limits.body_bytes_max
            ),
        ),
        431 => (
            "invalid_request",
            format!("request head too large: {error}"),
        ),
        _ => (
            "invalid_request",
            format!("malformed HTTP request: {error}"),
        ),
    };
    app.metrics.observe_request("unparsed", status);
    let response = Response::error(status, code, &message);
    response.encode(out, true);
    let _ = write_out(stream, out).await;
    let _ = stream.shutdown().await;
}

async fn write_out<S>(stream: &mut S, out: &mut Vec<u8>) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let result = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
    out.clear();
    result
}

/// Loads a PEM certificate chain and key for the API's https listener.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    use rustls::pki_types::pem::{self, PemObject};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls.cert {} holds no certificate", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!("tls.key {} holds no private key", key.display()),
        e => format!("tls.key {}: {e}", key.display()),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(herald::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("tls.cert/tls.key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Tracks spawned connection tasks so that shutdown can wait for them.
pub mod tokio_util_tracker {
    use std::future::Future;
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    /// Counts live tasks; [`Tracker::wait`] resolves when none remain.
    #[derive(Debug, Clone)]
    pub struct Tracker {
        live: Arc<Semaphore>,
    }

    /// Most tasks tracked at once (well above any connection cap).
    const TASKS_MAX: u32 = 1 << 20;

    impl Default for Tracker {
        fn default() -> Self {
            Tracker {
                live: Arc::new(Semaphore::new(TASKS_MAX as usize)),
            }
        }
    }

    impl Tracker {
        /// Spawns `task`, counting it until it ends.
        pub fn spawn<F>(&self, task: F)
        where
            F: Future<Output = ()> + Send + 'static,
        {
            let live = Arc::clone(&self.live);
            tokio::spawn(async move {
                // The semaphore is never closed, and TASKS_MAX exceeds the connection cap.
                let _permit = live.try_acquire_owned();
                task.await;
            });
        }

        /// Waits until every tracked task has ended.
        pub async fn wait(&self) {
            // Holding every permit means no task holds one.
            let _all = self.live.acquire_many(TASKS_MAX).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A count at its cap of none, with one connection open: every newcomer is over it.
    fn over_cap() -> (Arc<ConnectionCount>, ConnectionSlot) {
        let count = Arc::new(ConnectionCount::new(0));
        let (slot, _, _) = count.open(IpAddr::from([127, 0, 0, 1]));
        (count, slot)
    }

    fn owed(count: &ConnectionCount) -> usize {
        count.owed.load(Ordering::Relaxed)
    }

    /// A connection that waits until it is shed, or until `leave` fires (its next
    /// request arrived); returns whether it was shed.
    async fn idle_connection(
        mut mark: IdleMark,
        leave: tokio::sync::oneshot::Receiver<()>,
    ) -> bool {
        let request_arrived = tokio::select! {
            biased;
            _ = leave => true,
            _ = mark.shed() => false,
        };
        if request_arrived {
            mark.hand_on();
        }
        !request_arrived
    }

    /// Whether `mark` is to close, polled once.
    fn shed_now(mark: &mut IdleMark) -> bool {
        let mut shed = std::pin::pin!(mark.shed());
        shed.as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }

    #[tokio::test]
    async fn every_idle_connection_owed_to_a_newcomer_closes_though_none_was_waiting_yet() {
        let (count, _open) = over_cap();
        // Ten idle connections whose tasks have not waited yet (as after a burst of
        // accepts): twelve newcomers over the cap, ten of them granted room.
        let marks: Vec<_> = (0..10).map(|_| IdleMark::new(&count)).collect();
        let granted = (0..12).filter(|_| count.shed_idle()).count();
        assert_eq!(
            granted, 10,
            "ten idle connections make room for ten newcomers"
        );
        let (_keep, leave): (Vec<_>, Vec<_>) =
            (0..10).map(|_| tokio::sync::oneshot::channel()).unzip();
        let tasks: Vec<_> = marks
            .into_iter()
            .zip(leave)
            .map(|(mark, leave)| tokio::spawn(idle_connection(mark, leave)))
            .collect();
        for task in tasks {
            let shed = tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("an idle connection owed to a newcomer never closed")
                .unwrap();
            assert!(shed);
        }
        assert_eq!(count.idle.load(Ordering::Relaxed), 0);
        assert_eq!(owed(&count), 0);
    }

    #[tokio::test]
    async fn the_connection_idle_longest_closes_whichever_task_runs_first() {
        let (count, _open) = over_cap();
        let mut oldest = IdleMark::new(&count);
        let mut middle = IdleMark::new(&count);
        let mut newest = IdleMark::new(&count);
        assert!(count.shed_idle());
        // The newest connection's task runs first (a runtime runs the task spawned
        // last first): it stays, and so does the next.
        assert!(!shed_now(&mut newest));
        assert!(!shed_now(&mut middle));
        assert!(shed_now(&mut oldest));
        drop(oldest);
        assert_eq!(owed(&count), 0);
        // One idle again after a request queues behind those still idle.
        let mut again = IdleMark::new(&count);
        assert!(count.shed_idle());
        assert!(!shed_now(&mut again));
        assert!(shed_now(&mut middle));
        assert!(!shed_now(&mut newest));
    }

    #[tokio::test]
    async fn a_permit_that_reaches_a_connection_whose_request_arrived_passes_on() {
        let (count, _open) = over_cap();
        let (first_leaves, first_leave) = tokio::sync::oneshot::channel();
        let (_second_stays, second_leave) = tokio::sync::oneshot::channel();
        let idle = |leave| idle_connection(IdleMark::new(&count), leave);
        let first = tokio::spawn(idle(first_leave));
        let second = tokio::spawn(idle(second_leave));
        // Both wait (this test's runtime runs them as it yields), the first the longest.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        // The first's request arrives as a newcomer asks for its place.
        first_leaves.send(()).unwrap();
        assert!(count.shed_idle());
        assert!(!first.await.unwrap(), "the first had a request to serve");
        let shed = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the permit the first received was lost")
            .unwrap();
        assert!(shed);
    }

    #[tokio::test]
    async fn a_permit_taken_as_a_connection_became_idle_is_owed_until_one_closes() {
        let (count, _open) = over_cap();
        let first = IdleMark::new(&count);
        assert!(count.shed_idle());
        // Its request arrived: with nobody else idle, the permit waits for the next.
        first.hand_on();
        assert_eq!(owed(&count), 1);
        // The next takes it as it becomes idle, and its request too arrives first.
        let second = IdleMark::new(&count);
        second.hand_on();
        assert_eq!(owed(&count), 1, "the newcomer's room is still owed");
        let mut third = IdleMark::new(&count);
        assert!(
            shed_now(&mut third),
            "the next idle connection makes the room"
        );
        drop(third);
        assert_eq!(owed(&count), 0);
        assert_eq!(count.idle.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_connection_that_ends_holding_a_permit_makes_the_room_by_itself() {
        let (count, _open) = over_cap();
        let first = IdleMark::new(&count);
        let mut second = IdleMark::new(&count);
        assert!(count.shed_idle());
        // The first's client closes (or it times out) as the permit reaches it.
        drop(first);
        assert_eq!(owed(&count), 0);
        assert!(
            !shed_now(&mut second),
            "one newcomer, one connection closed"
        );
    }

    #[tokio::test]
    async fn a_permit_that_comes_once_the_server_is_under_its_cap_closes_nothing() {
        let count = Arc::new(ConnectionCount::new(1));
        let mut idle = IdleMark::new(&count);
        let mut next = IdleMark::new(&count);
        // A newcomer over the cap, gone again (its connection closed) before the idle
        // one ran: nothing open, nothing to make room for.
        assert!(count.shed_idle());
        assert!(!shed_now(&mut idle));
        assert!(!shed_now(&mut next), "the permit is spent, not passed on");
        assert_eq!(owed(&count), 0);
    }

    #[tokio::test]
    async fn a_connection_shed_for_a_descriptor_closes_under_the_cap_too() {
        let count = Arc::new(ConnectionCount::new(10));
        let mut idle = IdleMark::new(&count);
        let mut next = IdleMark::new(&count);
        assert!(count.shed_idle_for_descriptor());
        assert!(shed_now(&mut idle), "an accept found no descriptor");
        drop(idle);
        assert!(!shed_now(&mut next), "one descriptor wanted, one freed");
        assert_eq!(owed(&count), 0);
    }

    #[test]
    fn refusals_under_way_are_bounded() {
        let count = Arc::new(ConnectionCount::new(0));
        let mut under_way: Vec<_> = (0..REFUSALS_UNDER_WAY_MAX)
            .map(|_| RefusingSlot::take(&count).expect("room for a refusal"))
            .collect();
        assert!(
            RefusingSlot::take(&count).is_none(),
            "a flood is not answered"
        );
        under_way.pop();
        assert!(RefusingSlot::take(&count).is_some(), "one ended makes room");
        assert_eq!(count.get(), 0, "refusals are not open connections");
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_one_itself() {
        let key = |text: &str| address_key(text.parse().unwrap());
        assert_eq!(key("192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }
}
