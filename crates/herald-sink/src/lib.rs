//! A loopback webhook receiver for tests, examples and `herald sink`.
//!
//! Keep-alive HTTP/1.1 on herald-http's [`RequestParser`](herald_http::RequestParser) and
//! [`encode_response`](herald_http::encode_response), served by an event loop (epoll
//! through mio) on a small fixed number of threads ([`SinkBuilder::threads`], default
//! 1), so that thousands of idle keep-alive connections cost descriptors and a few KiB
//! each rather than threads. Optional TLS with a generated CA (rustls, driven by hand),
//! scripted answers, delayed answers that park the connection rather than a thread,
//! signature verification with herald-sign, records of what arrived, and
//! publish→arrival latency read from a JSON field of the body.
//!
//! ```no_run
//! use std::time::Duration;
//! use herald_sink::{Action, Sink};
//!
//! let sink = Sink::builder()
//!     .script("/flaky", vec![Action::Status(500), Action::Status(500), Action::ok()])
//!     .start()?;
//! let url = sink.url("/flaky"); // http://127.0.0.1:<port>/flaky
//! // ... make something POST to `url` ...
//! sink.wait_for(3, Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! To model a receiver for capacity planning, requests that no script or responder
//! handles can be answered from a seeded model: a status mix ([`StatusMix`], e.g.
//! `200:97,500:2,429:1`), a latency distribution ([`LatencyModel`], e.g. median 5 ms and
//! p99 50 ms) and `Retry-After` on 429/503 ([`SinkBuilder::retry_after_s`]).
//!
//! A sink can listen on several ports at once ([`SinkBuilder::listeners`]): each is an
//! origin to a sender that pools and caps connections per origin, as Herald does, and
//! [`run_load_spread`] spreads the raw load client's connections over the same ports.
//! TLS uses a generated CA, or a certificate and key given as PEM
//! ([`SinkBuilder::tls_identity`]) when a remote sender must trust it.
//!
//! Everything is bounded: connections, head and body sizes ([`herald_http::Limits`]),
//! recorded requests, delays, script lengths. Waiting is always given a timeout.
//!
//! Receivers that misbehave below HTTP (never answer, drip, endless heads and bodies,
//! garbage, resets, redirects, …) are in [`hostile`]; certificates for tests, good and
//! bad ([`CertDefect`]), come from [`Pki`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod conn;
pub mod hostile;
mod load;
mod model;
mod server;
mod stats;
mod sys;
mod tls;

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use herald_http::Limits;
use herald_sign::{Scheme, Verifier, VerifyError};

pub use action::{
    target_path, Action, Responder, DELAY_MS_MAX, SCRIPTED_PATHS_MAX, SCRIPT_ACTIONS_MAX,
};
pub use load::{
    run_load, run_load_spread, LoadConfig, LoadReport, LOAD_CONNECTIONS_MAX, LOAD_PAYLOAD_BYTES_MAX,
};
pub use model::{LatencyModel, StatusMix, STATUS_MIX_ENTRIES_MAX};
pub use stats::{find_json_integer, Stats, LATENCY_US_MAX};
pub use sys::fd_table_size;
pub use tls::{crypto_provider, CertDefect, Identity, LeafOptions, Pki, Ymd, TLS_NAMES};

use crate::action::Behaviour;
use crate::stats::{lock, Counters, Latencies};

/// Largest `connections_max`: one descriptor and a few KiB each (more with TLS); the
/// sink raises its soft `RLIMIT_NOFILE` towards the hard limit to fit the setting.
pub const CONNECTIONS_MAX_LIMIT: usize = 262_144;
/// Default `connections_max`: room for a sender's whole pool and then some (10,000 idle
/// keep-alive connections are a tested figure, see BENCHES.md).
pub const CONNECTIONS_MAX_DEFAULT: usize = 16_384;
/// Most event-loop threads: each is a full epoll loop, and a receiver on loopback needs
/// at most one per core it may take from the sender.
pub const THREADS_MAX: usize = 64;
/// Default number of event-loop threads.
pub const THREADS_DEFAULT: usize = 1;
/// Largest `requests_max` (recorded requests are kept in memory, bodies included).
pub const REQUESTS_MAX_LIMIT: usize = 1_000_000;
/// Default `requests_max`.
pub const REQUESTS_MAX_DEFAULT: usize = 100_000;
/// Default idle timeout of a keep-alive connection: 30 s.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Longest idle timeout: 1 h.
pub const IDLE_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// Default body limit: 1 MiB captured and read (Herald's envelopes are at most 256 KiB).
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Most listening sockets (origins) of one sink: each is a port a sender pools
/// connections for separately (Herald caps connections per origin and shard), so a few
/// hundred model a platform's spread of receivers without a descriptor per endpoint.
pub const LISTENERS_MAX: usize = 256;

/// The sink could not start or a setting was refused. Always the caller's fault, except
/// [`SinkError::Io`] (the operating system refused a socket, thread or file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A setting is out of range; the message names it.
    #[error("invalid sink setting: {0}")]
    Config(String),
    /// The certificate or the TLS configuration could not be made.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Binding, spawning or writing the CA file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: io::Error,
    },
}

/// [`Sink::wait_for`] or [`Sink::wait_until`] gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitError {
    /// What was awaited.
    pub what: String,
    /// How long it waited, in milliseconds.
    pub waited_ms: u64,
    /// The counters when it gave up (boxed: keeps `Result`s small).
    pub stats: Box<Stats>,
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sink: gave up waiting for {} after {} ms; {} requests arrived so far ({:?})",
            self.what, self.waited_ms, self.stats.requests, self.stats
        )
    }
}

impl std::error::Error for WaitError {}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was complete.
    pub arrived: Instant,
    /// The same moment, in Unix milliseconds.
    pub arrived_unix_ms: u64,
    /// Connection it came on (numbered from 1 in accept order).
    pub connection: u64,
    /// Method as sent.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub version_minor: u8,
    /// Headers in arrival order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// Signature check result, when verification is on.
    pub verify: Option<Result<(), VerifyError>>,
    /// What the sink did.
    pub action: Action,
}

impl Record {
    /// Path part of the target.
    pub fn path(&self) -> &str {
        target_path(&self.target)
    }

    /// First value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        conn::header_str(&self.headers, name)
    }
}

/// State shared by the event-loop threads and the handle.
pub(crate) struct Shared {
    limits: Limits,
    idle_timeout_ms: u64,
    requests_max: usize,
    latency_field: Option<String>,
    verifier: Option<Verifier>,
    tls: Option<Arc<rustls::ServerConfig>>,
    behaviour: Mutex<Behaviour>,
    counters: Counters,
    records: Mutex<Vec<Record>>,
    latencies: Latencies,
    stop: AtomicBool,
    /// Number of the next accepted connection (from 1).
    next_connection: AtomicU64,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn url_scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// Settings of a [`Sink`]; from [`Sink::builder`].
#[must_use]
pub struct SinkBuilder {
    listen: SocketAddr,
    listeners: usize,
    tls: bool,
    tls_identity: Option<(String, String)>,
    ca_pem_out: Option<PathBuf>,
    connections_max: usize,
    threads: usize,
    limits: Limits,
    requests_max: usize,
    verify: Option<(Scheme, Vec<String>)>,
    verify_tolerance_s: u64,
    idle_timeout_ms: u64,
    latency_field: Option<String>,
    default_action: Action,
    status_mix: Option<StatusMix>,
    answer_latency: Option<LatencyModel>,
    retry_after_s: Option<u64>,
    seed: u64,
    scripts: Vec<(String, Vec<Action>)>,
    responder: Option<Responder>,
}

impl fmt::Debug for SinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkBuilder")
            .field("listen", &self.listen)
            .field("listeners", &self.listeners)
            .field("tls", &self.tls)
            .field("tls_identity", &self.tls_identity.is_some())
            .field("connections_max", &self.connections_max)
            .field("threads", &self.threads)
            .field("requests_max", &self.requests_max)
            .field("verify", &self.verify.as_ref().map(|(scheme, _)| scheme))
            .field("default_action", &self.default_action)
            .field("status_mix", &self.status_mix)
            .field("answer_latency", &self.answer_latency)
            .field("retry_after_s", &self.retry_after_s)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Default for SinkBuilder {
    fn default() -> Self {
        SinkBuilder {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            listeners: 1,
            tls: false,
            tls_identity: None,
            ca_pem_out: None,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            threads: THREADS_DEFAULT,
            limits: Limits {
                body_captured_bytes_max: BODY_BYTES_MAX_DEFAULT,
                body_bytes_max: BODY_BYTES_MAX_DEFAULT as u64,
                ..Limits::default()
            },
            requests_max: REQUESTS_MAX_DEFAULT,
            verify: None,
            verify_tolerance_s: herald_sign::TOLERANCE_S_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            latency_field: None,
            default_action: Action::ok(),
            scripts: Vec::new(),
            responder: None,
            status_mix: None,
            answer_latency: None,
            retry_after_s: None,
            seed: 0,
        }
    }
}

impl SinkBuilder {
    /// Address to bind; default `127.0.0.1:0` (any free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Listening sockets (1..=[`LISTENERS_MAX`]): origins to a sender, which pools and
    /// caps connections per origin. The first binds [`Self::listen`]; the others bind
    /// the same IP, on the following ports when that port is fixed, else on free ones.
    /// All share the event loops and the counters. Default 1.
    pub fn listeners(mut self, n: usize) -> Self {
        self.listeners = n;
        self
    }

    /// Serve https with this certificate chain and private key (PEM text), e.g. one
    /// issued by a CA a remote Herald trusts (`[egress] extra_ca_pems`), instead of a
    /// generated one.
    pub fn tls_identity(mut self, cert_chain_pem: String, key_pem: String) -> Self {
        self.tls = true;
        self.tls_identity = Some((cert_chain_pem, key_pem));
        self
    }

    /// Serve https with a freshly generated CA and a certificate for [`TLS_NAMES`]; the
    /// CA's PEM is [`Sink::ca_pem`].
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Also write the CA PEM to this file when starting (implies [`Self::tls`]).
    pub fn ca_pem_out(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls = true;
        self.ca_pem_out = Some(path.into());
        self
    }

    /// Most connections served at once (1..=[`CONNECTIONS_MAX_LIMIT`]); more are closed
    /// as soon as they are accepted. Default [`CONNECTIONS_MAX_DEFAULT`].
    pub fn connections_max(mut self, n: usize) -> Self {
        self.connections_max = n;
        self
    }

    /// Event-loop threads (1..=[`THREADS_MAX`]); connections are spread over them
    /// round-robin as they are accepted. Default [`THREADS_DEFAULT`].
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Parser limits. Bodies longer than `body_captured_bytes_max` are answered 413
    /// (the sink needs whole bodies). Default: herald-http's, with 1 MiB bodies.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Most requests recorded (0..=[`REQUESTS_MAX_LIMIT`]); later ones are only counted
    /// ([`Stats::records_dropped`]). 0 keeps counters only: the fast mode for
    /// benchmarks. Default [`REQUESTS_MAX_DEFAULT`].
    pub fn requests_max(mut self, n: usize) -> Self {
        self.requests_max = n;
        self
    }

    /// Verify every request's signature with `scheme` and these keys (the webhook's
    /// secrets; `whpk_` public keys for ed25519), counting failures.
    pub fn verify(mut self, scheme: Scheme, keys: &[&str]) -> Self {
        self.verify = Some((scheme, keys.iter().map(|k| k.to_string()).collect()));
        self
    }

    /// Timestamp tolerance of verification, in seconds; default 300.
    pub fn verify_tolerance_s(mut self, tolerance_s: u64) -> Self {
        self.verify_tolerance_s = tolerance_s;
        self
    }

    /// Close keep-alive connections idle (or stalled mid-request) this long
    /// (1..=[`IDLE_TIMEOUT_MS_MAX`]). Default [`IDLE_TIMEOUT_MS_DEFAULT`].
    pub fn idle_timeout_ms(mut self, ms: u64) -> Self {
        self.idle_timeout_ms = ms;
        self
    }

    /// Measure latency: every body carries `"<field>": <Unix nanoseconds when sent>`;
    /// the sink records arrival minus that into a histogram ([`Sink::latency`]).
    pub fn latency_field(mut self, field: &str) -> Self {
        self.latency_field = Some(field.to_owned());
        self
    }

    /// Action for requests no script or responder handles; default `200`. A status mix,
    /// when set, replaces its status; a latency model adds a delay before it.
    pub fn default_action(mut self, action: Action) -> Self {
        self.default_action = action;
        self
    }

    /// Answer requests that no script or responder handles with statuses drawn from
    /// `mix` (in place of the default action's status; see [`Sink::set_status_mix`]).
    pub fn status_mix(mut self, mix: StatusMix) -> Self {
        self.status_mix = Some(mix);
        self
    }

    /// Delay answers to requests that no script or responder handles by a time drawn
    /// from `model` (see [`Sink::set_answer_latency`]). A delay parks the connection on a
    /// deadline, never the event loop.
    pub fn answer_latency(mut self, model: LatencyModel) -> Self {
        self.answer_latency = Some(model);
        self
    }

    /// Send `Retry-After: <seconds>` with every 429 and 503 answer to requests that no
    /// script or responder handles (see [`Sink::set_retry_after_s`]).
    pub fn retry_after_s(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }

    /// Seed of the generator behind [`Self::status_mix`] and [`Self::answer_latency`];
    /// default 0. The n-th modelled answer is the same in every run with the same seed
    /// and settings (across connections, the n-th request to arrive gets it).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// A script for `path` (see [`Sink::set_script`]).
    pub fn script(mut self, path: &str, actions: Vec<Action>) -> Self {
        self.scripts.push((path.to_owned(), actions));
        self
    }

    /// A callback that chooses every action (wins over scripts and the default). It runs
    /// on the event loop: see [`Responder`] (it must return quickly).
    pub fn responder(
        mut self,
        f: impl Fn(&herald_http::Request) -> Action + Send + Sync + 'static,
    ) -> Self {
        self.responder = Some(Arc::new(f));
        self
    }

    /// Binds, generates certificates if asked, and starts accepting.
    pub fn start(self) -> Result<Sink, SinkError> {
        if !(1..=CONNECTIONS_MAX_LIMIT).contains(&self.connections_max) {
            return Err(SinkError::Config(format!(
                "connections_max = {} is outside 1..={CONNECTIONS_MAX_LIMIT}",
                self.connections_max
            )));
        }
        if !(1..=THREADS_MAX).contains(&self.threads) {
            return Err(SinkError::Config(format!(
                "threads = {} is outside 1..={THREADS_MAX}",
                self.threads
            )));
        }
        if self.requests_max > REQUESTS_MAX_LIMIT {
            return Err(SinkError::Config(format!(
                "requests_max = {} exceeds {REQUESTS_MAX_LIMIT}",
                self.requests_max
            )));
        }
        if !(1..=IDLE_TIMEOUT_MS_MAX).contains(&self.idle_timeout_ms) {
            return Err(SinkError::Config(format!(
                "idle_timeout_ms = {} is outside 1..={IDLE_TIMEOUT_MS_MAX}",
                self.idle_timeout_ms
            )));
        }
        let mut behaviour = Behaviour::new(Action::ok());
        behaviour.set_default(self.default_action)?;
        for (path, actions) in self.scripts {
            behaviour.set_script(&path, actions)?;
        }
        behaviour.set_responder(self.responder);
        behaviour.set_seed(self.seed);
        behaviour.set_status_mix(self.status_mix);
        behaviour.set_latency(self.answer_latency);
        behaviour.set_retry_after_s(self.retry_after_s);
        let verifier = match self.verify {
            Some((scheme, keys)) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                Some(
                    Verifier::new(scheme, &keys)
                        .map_err(|e| SinkError::Config(format!("verification keys: {e}")))?
                        .with_tolerance_s(self.verify_tolerance_s),
                )
            }
            None => None,
        };
        if !(1..=LISTENERS_MAX).contains(&self.listeners) {
            return Err(SinkError::Config(format!(
                "listeners = {} is outside 1..={LISTENERS_MAX}",
                self.listeners
            )));
        }
        let (generated, given) = match (&self.tls_identity, self.tls) {
            (Some((chain, key)), _) => (None, Some(tls::from_pem(chain, key)?)),
            (None, true) => (Some(tls::generate()?), None),
            (None, false) => (None, None),
        };
        if let (Some(path), Some(generated)) = (&self.ca_pem_out, &generated) {
            std::fs::write(path, &generated.ca_pem).map_err(|source| SinkError::Io {
                what: format!("writing the CA PEM to {}", path.display()),
                source,
            })?;
        }
        sys::fit_descriptors(self.connections_max + self.listeners);
        sys::presize_descriptor_table(self.connections_max + self.listeners);
        let mut listeners = Vec::with_capacity(self.listeners);
        let mut addrs = Vec::with_capacity(self.listeners);
        for i in 0..self.listeners {
            let mut at = self.listen;
            if self.listen.port() != 0 {
                let port = usize::from(self.listen.port()) + i;
                at.set_port(u16::try_from(port).map_err(|_| {
                    SinkError::Config(format!(
                        "listeners = {} from port {} run past port 65535",
                        self.listeners,
                        self.listen.port()
                    ))
                })?);
            }
            let listener = TcpListener::bind(at).map_err(|source| SinkError::Io {
                what: format!("binding {at}"),
                source,
            })?;
            sys::deepen_backlog(&listener);
            addrs.push(listener.local_addr().map_err(|source| SinkError::Io {
                what: "reading the bound address".into(),
                source,
            })?);
            listeners.push(listener);
        }
        let addr = addrs[0];
        let shared = Arc::new(Shared {
            limits: self.limits,
            idle_timeout_ms: self.idle_timeout_ms,
            requests_max: self.requests_max,
            latency_field: self.latency_field,
            verifier,
            tls: generated.as_ref().map(|g| g.server.clone()).or(given),
            behaviour: Mutex::new(behaviour),
            counters: Counters::default(),
            records: Mutex::new(Vec::new()),
            latencies: Latencies::default(),
            stop: AtomicBool::new(false),
            next_connection: AtomicU64::new(1),
        });
        let (workers, inboxes) =
            server::workers(&shared, listeners, self.threads, self.connections_max)?;
        let mut sink = Sink {
            shared,
            addr,
            addrs,
            ca_pem: generated.map(|g| g.ca_pem),
            ca_pem_path: self.ca_pem_out,
            inboxes,
            threads: Vec::with_capacity(self.threads),
        };
        for worker in workers {
            let index = sink.threads.len();
            let spawned = std::thread::Builder::new()
                .name(format!("herald-sink-{index}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(handle) => sink.threads.push(handle),
                // Dropping `sink` stops and joins the workers already running.
                Err(source) => {
                    return Err(SinkError::Io {
                        what: format!("spawning event-loop thread {index}"),
                        source,
                    })
                }
            }
        }
        Ok(sink)
    }
}

/// A running sink. Stops (closing every connection) on [`Sink::shutdown`] or drop.
pub struct Sink {
    shared: Arc<Shared>,
    addr: SocketAddr,
    addrs: Vec<SocketAddr>,
    ca_pem: Option<String>,
    ca_pem_path: Option<PathBuf>,
    /// One per event-loop thread: its waker stops it.
    inboxes: Vec<Arc<server::Inbox>>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("addr", &self.addr)
            .field("tls", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Settings with defaults: `127.0.0.1:0`, plain HTTP, answer 200.
    pub fn builder() -> SinkBuilder {
        SinkBuilder::default()
    }

    /// A plain-HTTP sink on `127.0.0.1:<free port>` answering 200 to everything.
    pub fn start_default() -> Result<Sink, SinkError> {
        Sink::builder().start()
    }

    /// Address bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every address bound, one per listener ([`SinkBuilder::listeners`]); the first is
    /// [`Sink::addr`].
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// URL of `path` on listener `listener` (taken modulo the listeners), with the bound
    /// IP as host: a distinct origin per listener.
    pub fn url_on(&self, listener: usize, path: &str) -> String {
        let addr = self.addrs[listener % self.addrs.len()];
        format!("{}://{}{}", self.scheme(), addr, path)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.shared.url_scheme()
    }

    /// URL of `path` on this sink, with the bound IP as host (e.g.
    /// `https://127.0.0.1:40123/hook`); the certificate covers it.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme(), self.addr, path)
    }

    /// URL of `path` with `localhost` as host.
    pub fn localhost_url(&self, path: &str) -> String {
        format!("{}://localhost:{}{}", self.scheme(), self.addr.port(), path)
    }

    /// PEM of the generated CA (TLS only): what clients must trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the CA PEM was written, if [`SinkBuilder::ca_pem_out`] was given.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.ca_pem_path.as_deref()
    }

    /// Replaces the default action.
    pub fn set_default_action(&self, action: Action) -> Result<(), SinkError> {
        lock(&self.shared.behaviour).set_default(action)
    }

    /// Scripts `path` (the target without query): the n-th request to it gets
    /// `actions[n]`, and the last action repeats. Replaces any script of that path and
    /// restarts it. 1..=[`SCRIPT_ACTIONS_MAX`] actions, at most
    /// [`SCRIPTED_PATHS_MAX`] paths.
    pub fn set_script(&self, path: &str, actions: Vec<Action>) -> Result<(), SinkError> {
        lock(&self.shared.behaviour).set_script(path, actions)
    }

    /// Removes the script of `path`; its requests get the default action again.
    pub fn clear_script(&self, path: &str) {
        lock(&self.shared.behaviour).clear_script(path);
    }

    /// Draws the status of every request that no script or responder handles from
    /// `mix` (`None`: the default action's status again). The generator goes on from
    /// where it was.
    pub fn set_status_mix(&self, mix: Option<StatusMix>) {
        lock(&self.shared.behaviour).set_status_mix(mix);
    }

    /// Delays the answer to every request that no script or responder handles by a time
    /// drawn from `model` (`None`: no added delay).
    pub fn set_answer_latency(&self, model: Option<LatencyModel>) {
        lock(&self.shared.behaviour).set_latency(model);
    }

    /// Sends `Retry-After: <seconds>` with every 429 and 503 answer to requests that no
    /// script or responder handles (`None`: only where an action says so).
    pub fn set_retry_after_s(&self, seconds: Option<u64>) {
        lock(&self.shared.behaviour).set_retry_after_s(seconds);
    }

    /// Installs (or with `None`, removes) the callback that chooses every action.
    pub fn set_responder(&self, responder: Option<Responder>) {
        lock(&self.shared.behaviour).set_responder(responder);
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Copies of the recorded requests, in arrival order.
    pub fn requests(&self) -> Vec<Record> {
        lock(&self.shared.records).clone()
    }

    /// Takes the recorded requests, making room for new ones.
    pub fn take_requests(&self) -> Vec<Record> {
        std::mem::take(&mut *lock(&self.shared.records))
    }

    /// Recorded requests to `path`, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Record> {
        lock(&self.shared.records)
            .iter()
            .filter(|r| r.path() == path)
            .cloned()
            .collect()
    }

    /// Publish→arrival latency so far, in microseconds (empty unless
    /// [`SinkBuilder::latency_field`] was set).
    pub fn latency(&self) -> Histogram<u64> {
        self.shared.latencies.merged()
    }

    /// Forgets the latencies recorded so far (e.g. after a warm-up).
    pub fn reset_latency(&self) {
        self.shared.latencies.reset();
    }

    /// Blocks until at least `count` requests have arrived in total, or `timeout`.
    pub fn wait_for(&self, count: u64, timeout: Duration) -> Result<Stats, WaitError> {
        self.wait_until(&format!("{count} requests"), timeout, |stats| {
            stats.requests >= count
        })
    }

    /// Blocks until `done(stats)` holds, or `timeout`; `what` names the condition in the
    /// error.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, WaitError> {
        let start = Instant::now();
        // Polling keeps the request path free of wake-ups; 1 ms is far below what any
        // caller of a network receiver can tell apart.
        loop {
            let stats = self.stats();
            if done(&stats) {
                return Ok(stats);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(WaitError {
                    what: what.to_owned(),
                    waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    stats: Box::new(stats),
                });
            }
            std::thread::sleep(Duration::from_millis(1).min(timeout - waited));
        }
    }

    /// Stops accepting, closes every connection and joins the threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for inbox in &self.inboxes {
            inbox.wake();
        }
        // Each loop checks the flag after every wake-up: the joins are bounded by one
        // turn of each loop.
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}
