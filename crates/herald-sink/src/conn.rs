//! One connection as a state machine driven by its worker's event loop: read (through
//! rustls when serving https), parse with herald-http's `RequestParser`, act, answer.
//!
//! A connection never blocks its thread: a delayed answer parks the connection (not the
//! thread) until a deadline the worker keeps, and output the peer does not take yet
//! waits in a buffer for the socket's next writable event.

use std::cmp::Reverse;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use herald_http::{encode_response, HttpError, ReceivedHeaders, Request, RequestParser};
use herald_sign::HeaderLookup;
use mio::net::TcpStream;

use crate::action::{target_path, Action, Choice};
use crate::server::{Timer, TimerKind, Timers};
use crate::stats::{bump, find_json_integer, lock, LATENCY_US_MAX};
use crate::{Record, Shared};

/// Socket reads one connection gets per turn of the loop before the others are served:
/// a client that floods us cannot starve the rest.
const READS_PER_TURN: usize = 16;

/// Headers of a parsed request, looked up the way `herald-sign` wants (as `&str`).
pub(crate) struct Lookup<'a>(pub(crate) &'a ReceivedHeaders);

impl HeaderLookup for Lookup<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }
}

/// First value of header `name` (case-insensitive), if it is UTF-8.
pub(crate) fn header_str<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// How a connection ended (for the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The peer went away between requests, or we closed after an answer.
    Quiet,
    /// Idle (or stalled mid-request) for the idle timeout.
    Idle,
    /// A TLS handshake or record failed.
    TlsError,
    /// The socket failed.
    Failed,
}

/// What the worker does with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Waiting for the socket or for a deadline already set.
    Wait,
    /// The read budget ran out and input may be left: drive again after the others.
    Again,
    /// Close it.
    Close(End),
}

enum State {
    /// Reading and answering requests.
    Serving,
    /// An answer is delayed: at the deadline do `then`. Nothing more is read meanwhile,
    /// so later (pipelined) requests are answered in order, after it.
    Delayed { then: Action, keep_alive: bool },
    /// Send what is buffered, then close.
    Closing,
}

/// What the worker lends a connection while driving it.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    /// This worker's latency histogram (when latency is measured).
    pub(crate) histogram: Option<&'a Mutex<Histogram<u64>>>,
    pub(crate) timers: &'a mut Timers,
    /// When the loop woke up (idle accounting needs no finer clock).
    pub(crate) now: Instant,
}

enum ReadOutcome {
    /// Plaintext bytes read, and whether the socket read behind them was shorter than
    /// asked (the socket is empty for now).
    Data(usize, bool),
    Blocked,
    Eof,
    TlsError,
    Failed,
}

/// The socket as rustls reads it, noting whether the last read returned less than
/// asked: on a socket whose readiness reported no hang-up or error that means it is
/// empty, and reading it again would only say `WouldBlock` (a system call for nothing
/// on every TLS request).
struct ShortReads<'a> {
    stream: &'a mut TcpStream,
    short: bool,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

pub(crate) struct Conn {
    /// Numbered from 1 in accept order, unique for the sink's life.
    pub(crate) id: u64,
    /// Index in the worker's table (the mio token).
    slot: usize,
    stream: TcpStream,
    tls: Option<Box<rustls::ServerConnection>>,
    parser: RequestParser,
    /// Plaintext read but not yet parsed: what followed a request whose answer is delayed.
    unparsed: Vec<u8>,
    /// Plaintext answers not yet handed to the socket (or to rustls).
    out: Vec<u8>,
    out_sent: usize,
    state: State,
    /// Last time the peer sent something (or a delayed answer went out).
    pub(crate) last_active: Instant,
    /// The peer ended its side.
    read_closed: bool,
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        slot: usize,
        stream: TcpStream,
        tls: Option<Box<rustls::ServerConnection>>,
        shared: &Shared,
        now: Instant,
    ) -> Conn {
        Conn {
            id,
            slot,
            stream,
            tls,
            parser: RequestParser::new(shared.limits),
            unparsed: Vec::new(),
            out: Vec::new(),
            out_sent: 0,
            state: State::Serving,
            last_active: now,
            read_closed: false,
        }
    }

    pub(crate) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// True while an answer is delayed (the connection is not idle: we are).
    pub(crate) fn is_delayed(&self) -> bool {
        matches!(self.state, State::Delayed { .. })
    }

    /// Reads, parses, acts and writes as far as the socket allows. `buf` is the worker's
    /// read buffer. `short_read_drains`: the caller got a readiness event that reported
    /// no hang-up or error, so a plain read shorter than `buf` emptied the socket and a
    /// second read would only say `WouldBlock` (any byte or FIN that arrives later makes
    /// epoll report the socket again: edge-triggered readiness fires on every arrival).
    pub(crate) fn drive(
        &mut self,
        ctx: &mut Ctx<'_>,
        buf: &mut [u8],
        short_read_drains: bool,
    ) -> Progress {
        let mut reads = 0;
        // A plain read shorter than asked: nothing more to read until the next event.
        let mut drained = false;
        // A TLS connection's socket read shorter than asked: the same for the socket, but
        // what rustls already decrypted is read first.
        let mut socket_drained = false;
        loop {
            // Answers already due go out before anything else is read.
            match self.flush() {
                Err(_) => return Progress::Close(End::Failed),
                // The socket's next writable event drives us again.
                Ok(false) => return Progress::Wait,
                Ok(true) => {}
            }
            match self.state {
                State::Closing => return Progress::Close(End::Quiet),
                // The delay's deadline drives us again.
                State::Delayed { .. } => return Progress::Wait,
                State::Serving => {}
            }
            if !self.unparsed.is_empty() {
                let input = std::mem::take(&mut self.unparsed);
                self.parse(&input, ctx);
                continue;
            }
            if self.read_closed {
                return Progress::Close(End::Quiet);
            }
            if drained {
                return Progress::Wait;
            }
            if reads == READS_PER_TURN {
                return Progress::Again;
            }
            reads += 1;
            match self.read(buf, socket_drained, short_read_drains) {
                ReadOutcome::Data(n, socket_short) => {
                    self.last_active = ctx.now;
                    let short = short_read_drains && socket_short;
                    if self.tls.is_none() {
                        drained = short;
                    } else {
                        // rustls may still hold plaintext of records that came with the
                        // short read: those are read (without a system call) before
                        // the connection waits.
                        socket_drained |= short;
                    }
                    self.parse(&buf[..n], ctx);
                }
                ReadOutcome::Blocked => {
                    // A TLS handshake may have produced records to send.
                    return match self.flush() {
                        Err(_) => Progress::Close(End::Failed),
                        Ok(_) => Progress::Wait,
                    };
                }
                ReadOutcome::Eof => self.read_closed = true,
                ReadOutcome::TlsError => {
                    // Best effort: the alert rustls queued tells the peer why.
                    let _ = self.flush();
                    return Progress::Close(End::TlsError);
                }
                ReadOutcome::Failed => return Progress::Close(End::Failed),
            }
        }
    }

    /// A delay's deadline passed: act as the delayed action said. The caller then drives
    /// the connection. False when the connection was not waiting for a delay.
    pub(crate) fn resume(&mut self, ctx: &mut Ctx<'_>) -> bool {
        match std::mem::replace(&mut self.state, State::Serving) {
            State::Delayed { then, keep_alive } => {
                self.last_active = ctx.now;
                self.act(then, keep_alive, ctx);
                true
            }
            other => {
                self.state = other;
                false
            }
        }
    }

    /// Ends the connection; a quiet end of a TLS connection says `close_notify` first.
    pub(crate) fn close(mut self, end: End) {
        if end == End::Quiet {
            if let Some(tls) = &mut self.tls {
                tls.send_close_notify();
                // Best effort: the peer may already be gone.
                let _ = tls.write_tls(&mut self.stream);
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads plaintext into `buf`. `socket_drained`: a TLS connection's socket was
    /// emptied by an earlier read of this turn, so only what rustls holds is read (plain
    /// connections are not read again once drained; see `drive`). `short_read_drains`
    /// as for `drive`: without it a short socket read says nothing, and the socket is
    /// read until it says `WouldBlock`. `Data` says whether the socket read was shorter
    /// than asked.
    fn read(
        &mut self,
        buf: &mut [u8],
        socket_drained: bool,
        short_read_drains: bool,
    ) -> ReadOutcome {
        let Some(tls) = &mut self.tls else {
            return loop {
                match self.stream.read(buf) {
                    Ok(0) => break ReadOutcome::Eof,
                    Ok(n) => break ReadOutcome::Data(n, n < buf.len()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadOutcome::Blocked,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break ReadOutcome::Failed,
                }
            };
        };
        let mut tcp_eof = false;
        let mut socket = ShortReads {
            stream: &mut self.stream,
            short: socket_drained,
        };
        loop {
            match tls.reader().read(buf) {
                // close_notify: the client ended the session cleanly.
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => return ReadOutcome::Data(n, socket.short),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && short_read_drains
                        && socket.short =>
                {
                    return ReadOutcome::Blocked
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !tcp_eof => {}
                // The peer closed the socket (without close_notify): it went away.
                Err(_) => return ReadOutcome::Eof,
            }
            match tls.read_tls(&mut socket) {
                Ok(0) => tcp_eof = true,
                Ok(_) => {
                    if tls.process_new_packets().is_err() {
                        return ReadOutcome::TlsError;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Failed,
            }
        }
    }

    /// Sends buffered output; `Ok(true)` once everything went out.
    fn flush(&mut self) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            while self.out_sent < self.out.len() {
                match self.stream.write(&self.out[self.out_sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.out_sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.clear();
            self.out_sent = 0;
            return Ok(true);
        };
        loop {
            let mut taken = 0;
            if self.out_sent < self.out.len() {
                taken = tls.writer().write(&self.out[self.out_sent..])?;
                self.out_sent += taken;
            }
            let mut wrote = false;
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => wrote = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.out_sent == self.out.len() {
                self.out.clear();
                self.out_sent = 0;
                return Ok(true);
            }
            if taken == 0 && !wrote {
                // rustls holds plaintext until the handshake is done: reading drives it.
                return Ok(false);
            }
        }
    }

    fn parse(&mut self, input: &[u8], ctx: &mut Ctx<'_>) {
        let mut offset = 0;
        while offset < input.len() {
            match self.parser.feed(&input[offset..]) {
                Ok((used, Some(request))) => {
                    offset += used;
                    self.handle(request, ctx);
                    if !matches!(self.state, State::Serving) {
                        break;
                    }
                }
                Ok((used, None)) => {
                    if used == 0 {
                        // Cannot happen (a parser without a request takes every byte);
                        // dropping the rest beats looping on it.
                        return;
                    }
                    offset += used;
                }
                Err(error) => {
                    self.bad_request(&error, ctx.shared);
                    return;
                }
            }
        }
        if offset < input.len() && matches!(self.state, State::Delayed { .. }) {
            self.unparsed.extend_from_slice(&input[offset..]);
        }
    }

    fn bad_request(&mut self, error: &HttpError, shared: &Shared) {
        bump(&shared.counters.bad_requests);
        self.answer(error.server_status(), None, false, shared);
    }

    fn handle(&mut self, request: Request, ctx: &mut Ctx<'_>) {
        let shared = ctx.shared;
        let recording = shared.requests_max > 0;
        // Wall-clock time is read only when something needs it: a benchmark sink with
        // counters only reads no clock per request.
        let since_epoch = if recording || shared.verifier.is_some() || ctx.histogram.is_some() {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
        } else {
            Duration::ZERO
        };
        bump(&shared.counters.requests);
        shared
            .counters
            .body_bytes
            .fetch_add(request.body_bytes_total, Ordering::Relaxed);
        if request.body_truncated() {
            // The sink needs whole bodies to verify and record them.
            bump(&shared.counters.bad_requests);
            self.answer(413, None, false, shared);
            return;
        }

        if let (Some(field), Some(histogram)) = (&shared.latency_field, ctx.histogram) {
            match find_json_integer(&request.body, field) {
                Some(sent_unix_ns) => {
                    let now_ns = u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX);
                    let latency_us =
                        (now_ns.saturating_sub(sent_unix_ns) / 1000).clamp(1, LATENCY_US_MAX);
                    // In bounds by the clamp above: recording cannot fail.
                    let _ = lock(histogram).record(latency_us);
                }
                None => bump(&shared.counters.latency_missing),
            }
        }

        let verify = shared.verifier.as_ref().map(|verifier| {
            let host = request
                .header("host")
                .and_then(|h| std::str::from_utf8(h).ok())
                .unwrap_or("");
            let url = format!("{}://{}{}", shared.url_scheme(), host, request.target);
            let now_s = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
            verifier.verify(&Lookup(&request.headers), &url, &request.body, now_s)
        });
        match &verify {
            Some(Ok(())) => bump(&shared.counters.verified),
            Some(Err(_)) => bump(&shared.counters.verify_failed),
            None => {}
        }

        let choice = lock(&shared.behaviour).choose(target_path(&request.target));
        let action = match choice {
            Choice::Act(action) => action,
            Choice::Ask(responder) => {
                // A callback that panics or answers something invalid is the test's
                // bug; a 500 makes it visible at the sender (the panic message goes to
                // stderr as usual) without taking down the loop and every connection on
                // it.
                let answered = panic::catch_unwind(AssertUnwindSafe(|| responder(&request)));
                match answered {
                    Ok(action) if action.check().is_ok() => action,
                    _ => Action::Status(500),
                }
            }
        };
        let keep_alive = request.keep_alive;
        if recording {
            let arrived = Instant::now();
            let mut records = lock(&shared.records);
            if records.len() < shared.requests_max {
                records.push(Record {
                    arrived,
                    arrived_unix_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
                    connection: self.id,
                    method: request.method,
                    target: request.target,
                    version_minor: request.version_minor,
                    headers: request.headers.to_pairs(),
                    body: request.body,
                    verify,
                    action: action.clone(),
                });
            } else {
                bump(&shared.counters.records_dropped);
            }
        }
        self.act(action, keep_alive, ctx);
    }

    fn act(&mut self, action: Action, keep_alive: bool, ctx: &mut Ctx<'_>) {
        match action {
            Action::Status(status) => self.answer(status, None, keep_alive, ctx.shared),
            Action::RetryAfter { status, seconds } => {
                self.answer(status, Some(seconds), keep_alive, ctx.shared)
            }
            Action::Delay { delay_ms, then } => {
                self.state = State::Delayed {
                    then: *then,
                    keep_alive,
                };
                ctx.timers.push(Reverse(Timer {
                    at: Instant::now() + Duration::from_millis(delay_ms),
                    slot: self.slot,
                    id: self.id,
                    kind: TimerKind::Delay,
                }));
            }
            Action::Close => {
                bump(&ctx.shared.counters.closed_without_answer);
                self.state = State::Closing;
            }
        }
    }

    fn answer(
        &mut self,
        status: u16,
        retry_after_s: Option<u64>,
        keep_alive: bool,
        shared: &Shared,
    ) {
        let mut digits = [0u8; 20];
        let retry_after = retry_after_s.map(|s| format_decimal(s, &mut digits));
        let mut headers: [(&str, &[u8]); 2] = [("", b""); 2];
        let mut count = 0;
        if let Some(value) = retry_after {
            headers[count] = ("Retry-After", value);
            count += 1;
        }
        if !keep_alive {
            headers[count] = ("Connection", b"close");
            count += 1;
        }
        // Statuses were checked (200..=599) and the headers are constants: encoding
        // cannot fail; if it ever did, closing is the only honest answer.
        if encode_response(&mut self.out, status, &headers[..count], b"").is_err() {
            self.state = State::Closing;
            return;
        }
        shared.counters.answered(status);
        if !keep_alive {
            self.state = State::Closing;
        }
    }
}

fn format_decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}
