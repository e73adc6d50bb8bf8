//! One connection: read, parse with herald-http's `RequestParser`, act, answer.
//! One std thread per connection, blocking sockets: simple, and on loopback as fast as
//! the sender can keep a few keep-alive connections busy.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use herald_http::{encode_response, HttpError, Request, RequestParser};
use herald_sign::HeaderLookup;

use crate::action::{target_path, Action, Choice};
use crate::stats::{bump, find_json_integer, lock, LATENCY_US_MAX};
use crate::{Record, Shared};

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// A client that does not take our answer within this long is dropped.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Delays sleep in slices this long so that shutdown is never held up by them.
const DELAY_SLICE: Duration = Duration::from_millis(10);

/// Headers of a parsed request, looked up the way `herald-sign` wants (as `&str`).
pub(crate) struct Lookup<'a>(pub(crate) &'a [(String, Vec<u8>)]);

impl HeaderLookup for Lookup<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        header_str(self.0, name)
    }
}

/// First value of header `name` (case-insensitive), if it is UTF-8.
pub(crate) fn header_str<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(candidate, _)| candidate.eq_ignore_ascii_case(name))
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// What to do with the connection after a request.
enum Flow {
    Continue,
    /// Write what is buffered, then close.
    Close,
}

/// How a connection ended (for the counters).
enum End {
    Quiet,
    Idle,
    Failed(io::Error),
}

pub(crate) fn run(shared: Arc<Shared>, id: u64, tcp: TcpStream) {
    // Best effort: a socket that refuses options still works, only less promptly.
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(shared.idle_timeout_ms)));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let histogram = shared
        .latency_field
        .is_some()
        .then(|| shared.latencies.register());
    let mut connection = Connection {
        shared: &shared,
        id,
        parser: RequestParser::new(shared.limits),
        histogram: histogram.as_deref(),
        out: Vec::with_capacity(4096),
    };
    let end = match &shared.tls {
        Some(config) => match rustls::ServerConnection::new(config.clone()) {
            Ok(server) => {
                let mut stream = rustls::StreamOwned::new(server, tcp);
                let end = connection.serve(&mut stream);
                if matches!(end, End::Quiet) {
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                }
                end
            }
            Err(error) => End::Failed(io::Error::other(error)),
        },
        None => {
            let mut stream = tcp;
            let end = connection.serve(&mut stream);
            let _ = stream.shutdown(Shutdown::Both);
            end
        }
    };
    match end {
        End::Quiet => {}
        End::Idle => bump(&shared.counters.idle_timeouts),
        End::Failed(error) => {
            // rustls reports protocol failures as InvalidData; plain sockets never do.
            if shared.tls.is_some() && error.kind() == io::ErrorKind::InvalidData {
                bump(&shared.counters.tls_errors);
            }
        }
    }
    if let Some(histogram) = &histogram {
        shared.latencies.retire(histogram);
    }
    lock(&shared.connections).remove(&id);
    shared
        .counters
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

struct Connection<'a> {
    shared: &'a Shared,
    id: u64,
    parser: RequestParser,
    histogram: Option<&'a Mutex<Histogram<u64>>>,
    out: Vec<u8>,
}

impl Connection<'_> {
    fn serve<S: Read + Write>(&mut self, stream: &mut S) -> End {
        let mut buf = vec![0u8; READ_BUFFER_BYTES];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => return End::Quiet,
                Ok(n) => n,
                Err(error) => {
                    return match error.kind() {
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => End::Idle,
                        io::ErrorKind::Interrupted => continue,
                        // A TLS peer that closes without close_notify, or a reset: the
                        // client went away, which is its right between requests.
                        io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::BrokenPipe
                            if self.parser.is_idle() =>
                        {
                            End::Quiet
                        }
                        _ if self.shared.stopping() => End::Quiet,
                        _ => End::Failed(error),
                    };
                }
            };
            let mut offset = 0;
            let mut flow = Flow::Continue;
            while offset < n {
                match self.parser.feed(&buf[offset..n]) {
                    Ok((used, Some(request))) => {
                        offset += used;
                        flow = self.handle(request, stream);
                        if matches!(flow, Flow::Close) {
                            break;
                        }
                    }
                    Ok((used, None)) => {
                        if used == 0 {
                            break;
                        }
                        offset += used;
                    }
                    Err(error) => {
                        self.bad_request(&error);
                        flow = Flow::Close;
                        break;
                    }
                }
            }
            if !self.out.is_empty() {
                let written = stream.write_all(&self.out).and_then(|()| stream.flush());
                self.out.clear();
                if let Err(error) = written {
                    return End::Failed(error);
                }
            }
            if matches!(flow, Flow::Close) {
                return End::Quiet;
            }
        }
    }

    fn bad_request(&mut self, error: &HttpError) {
        bump(&self.shared.counters.bad_requests);
        let status = match error {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            _ => 400,
        };
        self.answer(status, None, false);
    }

    fn handle<S: Read + Write>(&mut self, request: Request, stream: &mut S) -> Flow {
        let shared = self.shared;
        let arrived = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        bump(&shared.counters.requests);
        shared
            .counters
            .body_bytes
            .fetch_add(request.body_bytes_total, Ordering::Relaxed);
        if request.body_truncated() {
            // The sink needs whole bodies to verify and record them.
            bump(&shared.counters.bad_requests);
            self.answer(413, None, false);
            return Flow::Close;
        }

        if let (Some(field), Some(histogram)) = (&shared.latency_field, self.histogram) {
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
                let action = responder(&request);
                // A callback's invalid answer is the test's bug; a 500 makes it visible
                // at the sender without tearing the sink down.
                if action.check().is_ok() {
                    action
                } else {
                    Action::Status(500)
                }
            }
        };
        let keep_alive = request.keep_alive;
        if shared.requests_max > 0 {
            let mut records = lock(&shared.records);
            if records.len() < shared.requests_max {
                records.push(Record {
                    arrived,
                    arrived_unix_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
                    connection: self.id,
                    method: request.method,
                    target: request.target,
                    version_minor: request.version_minor,
                    headers: request.headers,
                    body: request.body,
                    verify,
                    action: action.clone(),
                });
            } else {
                bump(&shared.counters.records_dropped);
            }
        }
        self.act(&action, keep_alive, stream)
    }

    fn act<S: Read + Write>(&mut self, action: &Action, keep_alive: bool, stream: &mut S) -> Flow {
        match action {
            Action::Status(status) => self.answer(*status, None, keep_alive),
            Action::RetryAfter { status, seconds } => {
                self.answer(*status, Some(*seconds), keep_alive)
            }
            Action::Delay { delay_ms, then } => {
                // Answers already due go out before the wait, as a real server's would.
                if !self.out.is_empty() {
                    let written = stream.write_all(&self.out).and_then(|()| stream.flush());
                    self.out.clear();
                    if written.is_err() {
                        return Flow::Close;
                    }
                }
                let until = Instant::now() + Duration::from_millis(*delay_ms);
                loop {
                    if self.shared.stopping() {
                        return Flow::Close;
                    }
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    std::thread::sleep(DELAY_SLICE.min(until - now));
                }
                self.act(then, keep_alive, stream)
            }
            Action::Close => {
                bump(&self.shared.counters.closed_without_answer);
                Flow::Close
            }
        }
    }

    fn answer(&mut self, status: u16, retry_after_s: Option<u64>, keep_alive: bool) -> Flow {
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
            return Flow::Close;
        }
        self.shared.counters.answered(status);
        if keep_alive {
            Flow::Continue
        } else {
            Flow::Close
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
