//! A minimal keep-alive HTTP/1.1 load client: the raw loopback ceiling that engine
//! figures are compared with, measured in the same run on the same sink.
//!
//! Shaped like the engine's sender: a few event-loop threads (one per core, at most one
//! per connection; epoll through mio), each driving its share of the connections, one
//! request in flight per connection (no pipelining, like Herald's pools). The figure is
//! what a sender with that many connections could reach if it spent nothing on
//! journaling, scheduling or signing. (A thread per connection, as this client had
//! before, makes every answer a thread wake-up on both sides: against an event-loop
//! receiver that measures the scheduler more than the sender's ceiling.)

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_http::{encode_request, Limits, Response, ResponseParser};
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::SinkError;

/// Most connections a load run opens: as many as an 8-shard Herald opens to 8 origins
/// at its cap of 32 per origin and shard (the raw ceiling matches the engine's count).
pub const LOAD_CONNECTIONS_MAX: usize = 2048;
/// Largest padding per request body.
pub const LOAD_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// A run fails when none of a thread's connections has made progress for this long: a
/// stuck sink fails the run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from a socket at a time.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What to send.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Keep-alive connections (1..=[`LOAD_CONNECTIONS_MAX`]), each with one request in
    /// flight at a time.
    pub connections: usize,
    /// Requests in total, spread evenly over the connections.
    pub requests: u64,
    /// Request target.
    pub target: String,
    /// Padding bytes in each body (at most [`LOAD_PAYLOAD_BYTES_MAX`]).
    pub payload_bytes: usize,
    /// When set, each body starts `{"<field>":<Unix ns now>,` so the sink measures
    /// latency as it does for the engine.
    pub latency_field: Option<String>,
    /// Extra headers on every request (e.g. a signature of the same size as Herald's).
    pub headers: Vec<(String, String)>,
    /// Connect with TLS, trusting this CA PEM (the sink's [`crate::Sink::ca_pem`]).
    pub tls_ca_pem: Option<String>,
}

/// What a load run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Requests answered.
    pub requests: u64,
    /// Answers that were not 2xx.
    pub non_success: u64,
    /// Wall time from the first connect to the last answer.
    pub elapsed: Duration,
    /// `requests / elapsed`.
    pub per_s: f64,
}

/// Sends `config.requests` requests to `addr` and waits for every answer.
pub fn run_load(addr: SocketAddr, config: &LoadConfig) -> Result<LoadReport, SinkError> {
    run_load_spread(&[addr], config)
}

/// [`run_load`] over several addresses (a sink's listeners, [`crate::Sink::addrs`]):
/// connection `i` goes to `addrs[i % addrs.len()]`, so every origin gets its share of
/// the connections, as a sender's pools per origin would.
pub fn run_load_spread(addrs: &[SocketAddr], config: &LoadConfig) -> Result<LoadReport, SinkError> {
    if addrs.is_empty() {
        return Err(SinkError::Config("load: no address to send to".into()));
    }
    if !(1..=LOAD_CONNECTIONS_MAX).contains(&config.connections) {
        return Err(SinkError::Config(format!(
            "connections = {} is outside 1..={LOAD_CONNECTIONS_MAX}",
            config.connections
        )));
    }
    if config.payload_bytes > LOAD_PAYLOAD_BYTES_MAX {
        return Err(SinkError::Config(format!(
            "payload_bytes = {} exceeds {LOAD_PAYLOAD_BYTES_MAX}",
            config.payload_bytes
        )));
    }
    let tls = match &config.tls_ca_pem {
        Some(pem) => Some(client_config(pem)?),
        None => None,
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(config.connections);
    let per_connection = config.requests / config.connections as u64;
    let remainder = config.requests % config.connections as u64;
    // Connection i gets its share of the requests, goes to thread i % threads and to
    // address i % addresses.
    let mut shares: Vec<Vec<(SocketAddr, u64)>> = vec![Vec::new(); threads];
    for i in 0..config.connections {
        shares[i % threads].push((
            addrs[i % addrs.len()],
            per_connection + u64::from((i as u64) < remainder),
        ));
    }
    let started = Instant::now();
    let results: Vec<Result<(u64, u64), SinkError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|counts| {
                let tls = tls.clone();
                scope.spawn(move || drive_connections(config, tls, &counts))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(SinkError::Config("a load thread panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    let mut requests = 0;
    let mut non_success = 0;
    for result in results {
        let (answered, failed) = result?;
        requests += answered;
        non_success += failed;
    }
    Ok(LoadReport {
        requests,
        non_success,
        elapsed,
        per_s: requests as f64 / elapsed.as_secs_f64().max(1e-9),
    })
}

fn client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, SinkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| SinkError::Tls(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| SinkError::Tls(format!("CA certificate: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn io_error(what: &str) -> impl Fn(io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        what: what.to_owned(),
        source,
    }
}

/// What every request of a run shares.
struct Template<'a> {
    config: &'a LoadConfig,
    host: String,
    pad: String,
    headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Template<'a> {
    fn new(addr: SocketAddr, config: &'a LoadConfig) -> Template<'a> {
        Template {
            config,
            host: addr.to_string(),
            pad: "x".repeat(config.payload_bytes),
            headers: std::iter::once(("Content-Type", &b"application/json"[..]))
                .chain(
                    config
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_bytes())),
                )
                .collect(),
        }
    }

    /// Appends one request to `out`, its body built in `body` (stamped now).
    fn encode(&self, out: &mut Vec<u8>, body: &mut Vec<u8>) -> Result<(), SinkError> {
        body.clear();
        body.push(b'{');
        if let Some(field) = &self.config.latency_field {
            let now_ns = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            body.extend_from_slice(format!("\"{field}\":{now_ns},").as_bytes());
        }
        body.extend_from_slice(b"\"pad\":\"");
        body.extend_from_slice(self.pad.as_bytes());
        body.extend_from_slice(b"\"}");
        encode_request(
            out,
            "POST",
            &self.config.target,
            &self.host,
            &self.headers,
            body,
        )
        .map_err(|e| SinkError::Config(format!("load request: {e}")))
    }
}

/// One connection of a load thread.
struct LoadConnection {
    /// Its request template (the Host header is its address).
    template: usize,
    stream: mio::net::TcpStream,
    tls: Option<rustls::ClientConnection>,
    parser: ResponseParser,
    out: Vec<u8>,
    out_sent: usize,
    /// Requests not yet sent.
    remaining: u64,
    in_flight: bool,
    answered: u64,
    non_success: u64,
}

enum Step {
    /// Waiting for the socket.
    Wait,
    /// Every request of this connection was answered.
    Done,
}

/// One load thread: opens its connections, then keeps one request in flight on each
/// until their shares are answered. Returns (answered, non-2xx).
fn drive_connections(
    config: &LoadConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    counts: &[(SocketAddr, u64)],
) -> Result<(u64, u64), SinkError> {
    let mut templates: Vec<(SocketAddr, Template<'_>)> = Vec::new();
    let mut poll = Poll::new().map_err(io_error("load: epoll"))?;
    let mut connections = Vec::with_capacity(counts.len());
    for (i, &(addr, count)) in counts.iter().enumerate() {
        let template = match templates.iter().position(|(a, _)| *a == addr) {
            Some(t) => t,
            None => {
                templates.push((addr, Template::new(addr, config)));
                templates.len() - 1
            }
        };
        // A blocking connect (immediate on loopback), then non-blocking for the loop.
        let tcp = TcpStream::connect(addr).map_err(io_error("load: connect"))?;
        tcp.set_nodelay(true).map_err(io_error("load: nodelay"))?;
        tcp.set_nonblocking(true)
            .map_err(io_error("load: non-blocking"))?;
        let mut stream = mio::net::TcpStream::from_std(tcp);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(io_error("load: register"))?;
        let tls = match &tls {
            Some(tls) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let mut client = rustls::ClientConnection::new(tls.clone(), name)
                    .map_err(|e| SinkError::Tls(e.to_string()))?;
                // One request in flight bounds what rustls holds; its default 64 KiB
                // limit would refuse a large body written before the handshake ends.
                client.set_buffer_limit(None);
                Some(client)
            }
            None => None,
        };
        connections.push(LoadConnection {
            template,
            stream,
            tls,
            parser: ResponseParser::new(Limits::default()),
            out: Vec::with_capacity(config.payload_bytes + 512),
            out_sent: 0,
            remaining: count,
            in_flight: false,
            answered: 0,
            non_success: 0,
        });
    }
    let mut body = Vec::with_capacity(config.payload_bytes + 64);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut open = connections.len();
    let mut done = vec![false; connections.len()];
    // Start every connection; afterwards only readiness drives them.
    for (i, connection) in connections.iter_mut().enumerate() {
        let template = &templates[connection.template].1;
        if let Step::Done = connection.drive(template, &mut body, &mut buf)? {
            done[i] = true;
            open -= 1;
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut progress = Instant::now();
    while open > 0 {
        match poll.poll(&mut events, Some(IO_TIMEOUT)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("load: epoll_wait")(e)),
        }
        if events.is_empty() {
            if progress.elapsed() >= IO_TIMEOUT {
                return Err(SinkError::Io {
                    what: format!("load: no answer within {IO_TIMEOUT:?}"),
                    source: io::ErrorKind::TimedOut.into(),
                });
            }
            continue;
        }
        progress = Instant::now();
        for event in events.iter() {
            let i = event.token().0;
            if done[i] {
                continue;
            }
            let template = &templates[connections[i].template].1;
            if let Step::Done = connections[i].drive(template, &mut body, &mut buf)? {
                done[i] = true;
                open -= 1;
            }
        }
    }
    Ok(connections
        .iter()
        .fold((0, 0), |(a, f), c| (a + c.answered, f + c.non_success)))
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl LoadConnection {
    /// Sends, reads and counts as far as the socket allows.
    fn drive(
        &mut self,
        template: &Template<'_>,
        body: &mut Vec<u8>,
        buf: &mut [u8],
    ) -> Result<Step, SinkError> {
        loop {
            if !self.in_flight && self.remaining > 0 {
                template.encode(&mut self.out, body)?;
                self.remaining -= 1;
                self.in_flight = true;
            }
            if !self.flush().map_err(io_error("load: write"))? {
                return Ok(Step::Wait);
            }
            if !self.in_flight {
                return Ok(Step::Done);
            }
            let n = match self.read(buf) {
                Ok(0) => {
                    return Err(SinkError::Io {
                        what: "load: the sink closed the connection".into(),
                        source: io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(n) => n,
                Err(e) if would_block(&e) => return Ok(Step::Wait),
                Err(e) => return Err(io_error("load: read")(e)),
            };
            let (_, response) = self
                .parser
                .feed(&buf[..n])
                .map_err(|e| SinkError::Config(format!("load: bad response: {e}")))?;
            if let Some(response) = response {
                self.answered(&response)?;
            }
        }
    }

    fn answered(&mut self, response: &Response) -> Result<(), SinkError> {
        self.in_flight = false;
        self.answered += 1;
        if !(200..300).contains(&response.status) {
            self.non_success += 1;
        }
        if response.keep_alive {
            Ok(())
        } else {
            Err(SinkError::Config(format!(
                "load: the sink ended keep-alive (status {})",
                response.status
            )))
        }
    }

    /// Plaintext from the socket (through rustls when it is https).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // The handshake may want to answer before any plaintext arrives.
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Sends what is buffered; `Ok(true)` once all of it went out.
    fn flush(&mut self) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            while self.out_sent < self.out.len() {
                match self.stream.write(&self.out[self.out_sent..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => self.out_sent += n,
                    Err(e) if would_block(&e) => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.out.clear();
            self.out_sent = 0;
            return Ok(true);
        };
        if self.out_sent < self.out.len() {
            // rustls buffers plaintext until the handshake is done.
            tls.writer().write_all(&self.out[self.out_sent..])?;
            self.out.clear();
            self.out_sent = 0;
        }
        while tls.wants_write() {
            match tls.write_tls(&mut self.stream) {
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}
