//! The event loop: a few worker threads (one by default), each with its own epoll
//! instance (mio), its own connections and its own deadlines.
//!
//! Worker 0 owns the listening sockets (one per origin): it accepts, refuses connections beyond
//! `connections_max`, numbers the rest in accept order and hands them round-robin to
//! the workers (itself included) through each worker's inbox and waker. A connection
//! then lives on one worker until it closes. Deadlines (idle timeouts and delayed
//! answers) sit in a binary heap per worker; the loop sleeps in `epoll_wait` until the
//! earliest one, so a delayed answer costs a heap entry, not a thread.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::conn::{Conn, Ctx, End, Progress};
use crate::stats::{bump, lock};
use crate::{Shared, SinkError};

/// Bytes read from a socket at a time (one buffer per worker, shared by its connections).
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Readiness events taken from epoll per wake-up.
const EVENTS_PER_POLL: usize = 1024;
/// After `accept` fails for want of descriptors or memory, try again this much later
/// (the pending connection stays in the backlog; edge-triggered epoll would not say so
/// again).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

const WAKER: Token = Token(usize::MAX - 2);
/// Listener `i` is `Token(LISTENER_FIRST - i)`, far above any connection slot.
const LISTENER_FIRST: usize = usize::MAX - 16;

fn listener_of(token: Token) -> Option<usize> {
    let i = LISTENER_FIRST.checked_sub(token.0)?;
    (token.0 <= LISTENER_FIRST && i < crate::LISTENERS_MAX).then_some(i)
}

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// Check whether the connection has been idle for the idle timeout.
    Idle,
    /// A delayed answer is due.
    Delay,
}

/// A deadline of connection `id` in `slot`. Stale entries (the connection closed, its
/// slot reused) are recognised by the id and skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Timer {
    pub(crate) at: Instant,
    pub(crate) slot: usize,
    pub(crate) id: u64,
    pub(crate) kind: TimerKind,
}

/// Earliest deadline first. Each open connection has one idle entry and at most one
/// delay entry (plus stale ones of closed connections, which expire within
/// `DELAY_MS_MAX` or the idle timeout): the heap is bounded by the connections.
pub(crate) type Timers = BinaryHeap<Reverse<Timer>>;

/// Connections handed to a worker, and the waker that tells it (also used to stop it).
pub(crate) struct Inbox {
    queue: Mutex<Vec<(u64, TcpStream)>>,
    waker: Waker,
}

impl Inbox {
    pub(crate) fn wake(&self) {
        // Only fails if the eventfd is gone, i.e. the worker already ended.
        let _ = self.waker.wake();
    }
}

/// Worker 0's listening sockets and where to send what they accept.
struct Acceptor {
    sockets: Vec<TcpListener>,
    inboxes: Vec<Arc<Inbox>>,
    next: usize,
    connections_max: u64,
    retry_at: Option<Instant>,
}

/// A worker, built on the caller's thread (so that failures surface from `start`) and
/// then moved to its own.
pub(crate) struct Worker {
    index: usize,
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Arc<Inbox>,
    acceptor: Option<Acceptor>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    timers: Timers,
    again: Vec<usize>,
    buf: Vec<u8>,
    histogram: Option<Arc<Mutex<Histogram<u64>>>>,
}

fn io_error(what: &str) -> impl FnOnce(io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        what: what.to_owned(),
        source,
    }
}

/// Makes `threads` workers; worker 0 gets `listeners`. Returns them with their inboxes.
pub(crate) fn workers(
    shared: &Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    threads: usize,
    connections_max: usize,
) -> Result<(Vec<Worker>, Vec<Arc<Inbox>>), SinkError> {
    for listener in &listeners {
        listener
            .set_nonblocking(true)
            .map_err(io_error("making the listener non-blocking"))?;
    }
    let mut workers = Vec::with_capacity(threads);
    let mut inboxes = Vec::with_capacity(threads);
    for index in 0..threads {
        let poll = Poll::new().map_err(io_error("creating an epoll instance"))?;
        let waker =
            Waker::new(poll.registry(), WAKER).map_err(io_error("creating an eventfd waker"))?;
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Vec::new()),
            waker,
        });
        inboxes.push(inbox.clone());
        workers.push(Worker {
            index,
            shared: shared.clone(),
            poll,
            inbox,
            acceptor: None,
            conns: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            again: Vec::new(),
            buf: vec![0; READ_BUFFER_BYTES],
            histogram: None,
        });
    }
    let first = &mut workers[0];
    let mut sockets = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let mut socket = TcpListener::from_std(listener);
        first
            .poll
            .registry()
            .register(&mut socket, Token(LISTENER_FIRST - i), Interest::READABLE)
            .map_err(io_error("registering the listener"))?;
        sockets.push(socket);
    }
    first.acceptor = Some(Acceptor {
        sockets,
        inboxes: inboxes.clone(),
        next: 0,
        connections_max: connections_max as u64,
        retry_at: None,
    });
    Ok((workers, inboxes))
}

impl Worker {
    /// The loop; returns once the sink stops, with every connection of this worker closed.
    pub(crate) fn run(mut self) {
        if self.shared.latency_field.is_some() {
            self.histogram = Some(self.shared.latencies.register());
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        while !self.shared.stopping() {
            let timeout = if self.again.is_empty() {
                self.next_deadline()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    // epoll_wait fails only on a bad descriptor or argument: not
                    // recoverable by retrying at full speed.
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            if self.shared.stopping() {
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => self.take_inbox(),
                    token if listener_of(token).is_some() => {
                        self.accept(listener_of(token));
                    }
                    Token(slot) => {
                        let clean = !(event.is_read_closed() || event.is_error());
                        self.drive(slot, now, clean);
                    }
                }
            }
            for slot in std::mem::take(&mut self.again) {
                self.drive(slot, now, false);
            }
            self.expire(Instant::now());
        }
        self.close_all();
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|Reverse(timer)| timer.at);
        let retry = self.acceptor.as_ref().and_then(|a| a.retry_at);
        match (timer, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Accepts what listener `which` has waiting (`None`: every listener, after a
    /// back-off).
    fn accept(&mut self, which: Option<usize>) {
        let Some(mut acceptor) = self.acceptor.take() else {
            return;
        };
        acceptor.retry_at = None;
        let listeners = match which {
            Some(i) => i..i + 1,
            None => 0..acceptor.sockets.len(),
        };
        for i in listeners {
            if !self.accept_from(&mut acceptor, i) {
                break;
            }
        }
        self.acceptor = Some(acceptor);
    }

    /// Accepts from listener `i` until it has nothing waiting; `false` when accepting
    /// must back off (out of descriptors and the like).
    fn accept_from(&mut self, acceptor: &mut Acceptor, i: usize) -> bool {
        let Some(socket) = acceptor.sockets.get(i) else {
            return true;
        };
        loop {
            let stream = match socket.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                // Out of descriptors and the like: back off instead of spinning.
                Err(_) => {
                    acceptor.retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return false;
                }
            };
            let counters = &self.shared.counters;
            if counters.connections_open.load(Ordering::Relaxed) >= acceptor.connections_max {
                bump(&counters.connections_refused);
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let id = self.shared.next_connection.fetch_add(1, Ordering::Relaxed);
            counters.connections_open.fetch_add(1, Ordering::Relaxed);
            bump(&counters.connections_accepted);
            let target = acceptor.next % acceptor.inboxes.len();
            acceptor.next = acceptor.next.wrapping_add(1);
            if target == self.index {
                self.add(id, stream);
            } else {
                let inbox = &acceptor.inboxes[target];
                lock(&inbox.queue).push((id, stream));
                inbox.wake();
            }
        }
        true
    }

    fn take_inbox(&mut self) {
        let handed = std::mem::take(&mut *lock(&self.inbox.queue));
        for (id, stream) in handed {
            self.add(id, stream);
        }
    }

    fn add(&mut self, id: u64, stream: TcpStream) {
        let shared = self.shared.clone();
        // Best effort: a socket that refuses the option still works, only less promptly.
        let _ = stream.set_nodelay(true);
        let tls = match &shared.tls {
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(server) => Some(Box::new(server)),
                Err(_) => {
                    bump(&shared.counters.tls_errors);
                    Self::forget(&shared, stream);
                    return;
                }
            },
            None => None,
        };
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let now = Instant::now();
        let mut conn = Conn::new(id, slot, stream, tls, &shared, now);
        // Both directions, edge-triggered, for the connection's whole life: writable
        // events only come after a write found the socket full, so this costs nothing
        // on the usual path and saves re-registering.
        let registered = self.poll.registry().register(
            conn.stream_mut(),
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.free.push(slot);
            conn.close(End::Failed);
            shared
                .counters
                .connections_open
                .fetch_sub(1, Ordering::Relaxed);
            return;
        }
        self.conns[slot] = Some(conn);
        self.timers.push(Reverse(Timer {
            at: now + Duration::from_millis(shared.idle_timeout_ms),
            slot,
            id,
            kind: TimerKind::Idle,
        }));
    }

    /// A connection that never made it into the table.
    fn forget(shared: &Shared, stream: TcpStream) {
        let _ = stream.shutdown(Shutdown::Both);
        shared
            .counters
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Drives the connection in `slot`; `clean_event`: see [`Conn::drive`].
    fn drive(&mut self, slot: usize, now: Instant, clean_event: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let mut ctx = Ctx {
            shared: &self.shared,
            histogram: self.histogram.as_deref(),
            timers: &mut self.timers,
            now,
        };
        match conn.drive(&mut ctx, &mut self.buf, clean_event) {
            Progress::Wait => {}
            Progress::Again => self.again.push(slot),
            Progress::Close(end) => self.close(slot, end),
        }
    }

    fn close(&mut self, slot: usize, end: End) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) else {
            return;
        };
        self.free.push(slot);
        conn.close(end);
        let counters = &self.shared.counters;
        match end {
            End::Idle => bump(&counters.idle_timeouts),
            End::TlsError => bump(&counters.tls_errors),
            End::Quiet | End::Failed => {}
        }
        counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Handles every deadline at or before `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse(timer)) = self.timers.peek() {
            if timer.at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(timer.slot).and_then(Option::as_mut) else {
                continue;
            };
            if conn.id != timer.id {
                continue;
            }
            let idle_timeout = Duration::from_millis(self.shared.idle_timeout_ms);
            match timer.kind {
                TimerKind::Idle => {
                    let at = if conn.is_delayed() {
                        // Waiting for our own delayed answer is not the peer's idleness.
                        now + idle_timeout
                    } else {
                        conn.last_active + idle_timeout
                    };
                    if at <= now {
                        self.close(timer.slot, End::Idle);
                    } else {
                        self.timers.push(Reverse(Timer { at, ..timer }));
                    }
                }
                TimerKind::Delay => {
                    let mut ctx = Ctx {
                        shared: &self.shared,
                        histogram: self.histogram.as_deref(),
                        timers: &mut self.timers,
                        now,
                    };
                    if conn.resume(&mut ctx) {
                        self.drive(timer.slot, now, false);
                    }
                }
            }
        }
        if let Some(acceptor) = &self.acceptor {
            if acceptor.retry_at.is_some_and(|at| at <= now) {
                self.accept(None);
            }
        }
    }

    /// The sink is stopping: close every connection (a peer waiting for an answer sees
    /// the connection end) and the listener.
    fn close_all(&mut self) {
        self.acceptor = None;
        for slot in 0..self.conns.len() {
            if let Some(conn) = self.conns[slot].take() {
                conn.close(End::Failed);
                self.shared
                    .counters
                    .connections_open
                    .fetch_sub(1, Ordering::Relaxed);
            }
        }
        for (_, stream) in std::mem::take(&mut *lock(&self.inbox.queue)) {
            Self::forget(&self.shared, stream);
        }
        if let Some(histogram) = &self.histogram {
            self.shared.latencies.retire(histogram);
        }
    }
}
