//! Herald's management REST API and the standalone server behind `herald serve`.
//!
//! The server is a client of the [`herald`] embedding API only: every route maps to one
//! of its operations, and its typed errors map one-to-one to HTTP statuses (invalid →
//! 400, unknown → 404, conflict → 409, capacity and storage → 503 with `Retry-After`).
//! Requests are parsed by `herald-http` under named limits. Tenants and API keys live in
//! an atomically replaced file next to the journals (`DATA_DIR/api/keys.json`).
//!
//! Start one with [`Server::start`], then [`Server::run_until_signal`] (SIGTERM/SIGINT)
//! or [`Server::shutdown`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod catalog;
mod changes;
pub mod config;
pub mod console;
mod inbound;
mod metrics;
mod offline;
mod routes;
mod server;
mod stats;
pub mod time;
mod views;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::{Config, ConfigError, LogFormat};
pub use offline::Offline;

use auth::{AdminKeyOrigin, KeyStore};
use routes::App;

/// The OpenAPI 3.1 description of every route, served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// `Content-Type` (when the body is not empty).
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
    /// Close the connection after this answer.
    pub close: bool,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            // A Value always serialises.
            body: serde_json::to_vec(value).expect("JSON values serialise"),
            close: false,
        }
    }

    /// A JSON answer from any serialisable value (no intermediate `Value`).
    pub fn serialize<T: serde::Serialize>(status: u16, value: &T) -> Response {
        match serde_json::to_vec(value) {
            Ok(body) => Response {
                status,
                headers: Vec::new(),
                content_type: "application/json",
                body,
                close: false,
            },
            // Our answer types are plain data; a failure is a bug.
            Err(error) => Response::error(500, "internal", &format!("answer not encoded: {error}")),
        }
    }

    /// `{"error":{"code","message"}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(
            status,
            &serde_json::json!({"error": {"code": code, "message": message}}),
        )
    }

    /// An empty answer (204).
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: Vec::new(),
            close: false,
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Appends the encoded answer to `out`.
    pub fn encode(&self, out: &mut Vec<u8>, close: bool) {
        self.encode_inner(out, close, true);
    }

    /// Appends the encoded answer to a `HEAD` request: the head `GET` would get, its
    /// `Content-Length` included, and no body (RFC 9110 §9.3.2). A client reading the
    /// body of a HEAD answer would otherwise take it for the next answer's head.
    pub fn encode_head(&self, out: &mut Vec<u8>, close: bool) {
        self.encode_inner(out, close, false);
    }

    fn encode_inner(&self, out: &mut Vec<u8>, close: bool, send_body: bool) {
        let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(self.headers.len() + 3);
        if !self.body.is_empty() {
            headers.push(("Content-Type", self.content_type.as_bytes()));
        }
        headers.push(("Cache-Control", b"no-store"));
        if close {
            headers.push(("Connection", b"close"));
        }
        for (name, value) in &self.headers {
            headers.push((name, value.as_bytes()));
        }
        let before = out.len();
        if herald_http::encode_response(out, self.status, &headers, &self.body).is_ok() {
            if !send_body {
                // The body is the tail of what was just appended.
                out.truncate(out.len() - self.body.len());
            }
        } else {
            // Our own headers are constants or formatted numbers; a failure is a bug.
            out.truncate(before);
            let fallback = Response::error(500, "internal", "response could not be encoded");
            let _ = herald_http::encode_response(
                out,
                500,
                &[("Content-Type", b"application/json")],
                &fallback.body,
            );
            if !send_body {
                out.truncate(out.len() - fallback.body.len());
            }
        }
    }
}

/// Why the server could not start (exit status 2 for configuration, 1 otherwise).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration; the message names the key.
    #[error("{0}")]
    Config(String),
    /// The engine, the key store or the listener failed.
    #[error("{0}")]
    Runtime(String),
    /// A shard's journal could not be opened (damaged, missing segments, its disk
    /// failing or full): starting again will fail the same way until it is checked
    /// and mended. The message says how.
    #[error("{0}")]
    Storage(String),
}

/// A running server: the engine, the key store and the API listener.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: server::tokio_util_tracker::Tracker,
    runtime: tokio::runtime::Runtime,
    generated_admin_key: Option<String>,
}

/// SIGTERM and SIGINT, watched since [`Server::watch_signals`].
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Server {
    /// Starts the engine on `config.data_dir` (replaying its journals), opens the key
    /// store and binds the API listener. `admin_key` (from `HERALD_ADMIN_KEY`) overrides
    /// the config's.
    pub fn start(config: Config, admin_key: Option<String>) -> Result<Server, StartError> {
        let Prepared {
            app,
            shards,
            tls,
            admin_key,
        } = prepare(config, admin_key)?;
        let listen = app.config.listen;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(shards.max(1))
            .thread_name("herald-api")
            .enable_all()
            .build()
            .map_err(|e| StartError::Runtime(format!("cannot start the API threads: {e}")))?;
        let listener = {
            let _runtime = runtime.enter();
            server::listen(listen)
        }
        .map_err(|e| StartError::Runtime(format!("cannot listen on {listen}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StartError::Runtime(format!("listener address: {e}")))?;
        // Only now that nothing else can fail: a generated key stored before a failed
        // start would be one nobody saw printed (the next start would print none).
        app.keys
            .settle_admin_key(&admin_key)
            .map_err(|e| StartError::Runtime(e.to_string()))?;
        let generated_admin_key = match admin_key {
            AdminKeyOrigin::Generated(key) => Some(key),
            AdminKeyOrigin::Configured | AdminKeyOrigin::Stored => None,
        };
        let app = Arc::new(app);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = server::tokio_util_tracker::Tracker::default();
        let _guard = runtime.enter();
        tokio::spawn(server::accept_loop(
            listener,
            tls,
            Arc::clone(&app),
            stop_rx,
            tasks.clone(),
        ));
        drop(_guard);
        Ok(Server {
            app,
            local_addr,
            stop,
            tasks,
            runtime,
            generated_admin_key,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine's shards, and whether their threads are pinned to CPUs (see the
    /// config's `pinning`).
    pub fn shards(&self) -> (usize, bool) {
        (self.app.herald.shards(), self.app.herald.pinned())
    }

    /// The engine behind the API, for a program that embeds the server and also works
    /// with the engine directly (a handle: clones share one engine).
    pub fn engine(&self) -> herald::Herald {
        self.app.herald.clone()
    }

    /// The admin key generated on this first start, to print once.
    pub fn generated_admin_key(&self) -> Option<&str> {
        self.generated_admin_key.as_deref()
    }

    /// Serves until SIGTERM or SIGINT, then shuts down.
    pub fn run_until_signal(self) -> Result<(), String> {
        let signals = self.watch_signals()?;
        self.run_until(signals)
    }

    /// Watches SIGTERM and SIGINT from now on: a signal that arrives after this call, even
    /// before [`Server::run_until`], stops the server cleanly rather than killing the
    /// process. Call it before telling anyone the server is up.
    pub fn watch_signals(&self) -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let _guard = self.runtime.enter();
        Ok(Signals {
            term: signal(SignalKind::terminate())
                .map_err(|e| format!("cannot watch SIGTERM: {e}"))?,
            int: signal(SignalKind::interrupt())
                .map_err(|e| format!("cannot watch SIGINT: {e}"))?,
        })
    }

    /// Serves until one of `signals` arrives, then shuts down.
    pub fn run_until(self, mut signals: Signals) -> Result<(), String> {
        let signal = self.runtime.block_on(async {
            tokio::select! {
                _ = signals.term.recv() => "SIGTERM",
                _ = signals.int.recv() => "SIGINT",
            }
        });
        tracing::info!(
            signal,
            "stopping: no new connections; finishing requests in flight"
        );
        self.shutdown()
    }

    /// Stops accepting, lets requests in flight finish (bounded), then stops the engine,
    /// which journals what it accepted and waits its grace period for deliveries in
    /// flight.
    pub fn shutdown(self) -> Result<(), String> {
        let _ = self.stop.send(true);
        let tasks = self.tasks.clone();
        let drained = self.runtime.block_on(async {
            tokio::time::timeout(SHUTDOWN_REQUESTS_GRACE, tasks.wait())
                .await
                .is_ok()
        });
        if !drained {
            tracing::warn!("some API connections were still busy at shutdown");
        }
        self.runtime
            .shutdown_timeout(std::time::Duration::from_secs(1));
        let result = self.app.herald.shutdown().map_err(|e| e.to_string());
        match &result {
            Ok(()) => tracing::info!("stopped cleanly"),
            Err(error) => tracing::error!(%error, "engine stopped with an error"),
        }
        result
    }
}

/// What [`Server::start`] and [`Offline::start`] share: the application (validated
/// config, started engine, opened key store, inbound sources), before any listener.
struct Prepared {
    app: App,
    shards: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Where the admin key came from, settled in the key store once the server started.
    admin_key: AdminKeyOrigin,
}

/// Validates `config`, starts the engine on `config.data_dir` (replaying its journals),
/// opens the key store and builds the inbound sources. `admin_key` (from
/// `HERALD_ADMIN_KEY`) overrides the config's.
fn prepare(config: Config, admin_key: Option<String>) -> Result<Prepared, StartError> {
    config
        .validate()
        .map_err(|e| StartError::Config(e.message))?;
    let default_scheme = config
        .default_scheme()
        .map_err(|e| StartError::Config(e.message))?;
    let retry = config
        .retry_schedule()
        .map_err(|e| StartError::Config(e.message))?;
    let shards = if config.shards == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.shards
    };
    let tls = match &config.tls {
        Some(tls) => Some(server::tls_acceptor(&tls.cert, &tls.key).map_err(StartError::Config)?),
        None => None,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        StartError::Runtime(format!(
            "cannot create data_dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let admin_key = admin_key.or_else(|| config.admin_key.as_ref().map(|k| k.expose().to_owned()));
    if let Some(key) = &admin_key {
        config::check_admin_key(key, "HERALD_ADMIN_KEY (or admin_key)")
            .map_err(StartError::Config)?;
    }
    let (keys, origin) = KeyStore::open(
        &config.data_dir.join("api"),
        admin_key.as_deref(),
        config.limits.tenants_max,
        config.limits.keys_per_tenant_max,
    )
    .map_err(|e| StartError::Runtime(e.to_string()))?;

    let mut builder = herald::Herald::builder()
        .data_dir(config.data_dir.join("engine"))
        .shards(shards)
        .batch_scheduling(config.batch_scheduling)
        .pinning(config.pinning)
        .socket_ring(config.socket_ring)
        .intake_capacity(config.limits.intake_capacity)
        .dispatcher_config(herald::DispatcherConfig {
            pending_deliveries_max: config.limits.pending_deliveries_max,
            pending_deliveries_per_tenant_max: config.limits.pending_deliveries_per_tenant_max(),
            ..herald::DispatcherConfig::default()
        })
        .journal_segment_bytes(config.journal.segment_bytes)
        .journal_segments_max(config.journal.segments_max)
        .journal_group_delay(std::time::Duration::from_micros(
            config.journal.group_delay_us,
        ))
        .journal_lazy_delay(std::time::Duration::from_micros(
            config.journal.lazy_delay_us,
        ))
        .journal_group_records_max(config.journal.group_records_max)
        .stream_window(
            config.ws.replay_window(),
            config.ws.replay_events_max,
            config.ws.replay_bytes_max,
        )
        .require_https(config.egress.require_https);
    for cidr in &config.egress.allow_cidrs {
        builder = builder.allow_cidr(cidr.clone());
    }
    for pem in &config.egress.extra_ca_pems {
        builder = builder.extra_ca_pem(pem.clone());
    }
    if let Some(schedule) = retry {
        let delays = schedule
            .retry_delays_ms()
            .iter()
            .map(|&ms| std::time::Duration::from_millis(ms))
            .collect();
        builder = builder.retry_schedule(delays);
    }
    let engine_dir = config.data_dir.join("engine");
    let herald = builder.start().map_err(|e| match e {
        herald::StartError::Storage { .. } if !e.journal_damaged() => StartError::Storage(format!(
            "{e}\ncheck {} and the file system under it: its owner and permissions, \
             nothing else in the way of its directories, free space, and no other \
             herald process using it",
            config.data_dir.display()
        )),
        herald::StartError::Storage { shard, .. } => StartError::Storage(format!(
            "{e}\ninspect the journal with `herald journal check --data-dir {}`; \
             `--repair` truncates it at damage, losing what follows (it says what), \
             and refuses a journal missing its oldest segment files (restore those \
             from a backup)",
            engine_dir.join(format!("shard-{shard}")).display()
        )),
        e if e.fault() == herald::Fault::Caller => StartError::Config(e.to_string()),
        e => StartError::Runtime(e.to_string()),
    })?;
    let inbound = inbound::sources(&config.inbound).map_err(StartError::Config)?;
    let mut app = App::new(config, herald, keys, default_scheme);
    app.inbound = inbound;
    Ok(Prepared {
        app,
        shards,
        tls,
        admin_key: origin,
    })
}

/// Time given to API requests in flight at shutdown: a publish waits at most for one
/// journal sync, so a few seconds is ample.
const SHUTDOWN_REQUESTS_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_answers_carry_the_length_but_no_body() {
        let response = Response::json(200, &serde_json::json!({"status": "ok"}));
        let mut get = Vec::new();
        response.encode(&mut get, false);
        let mut head = Vec::new();
        response.encode_head(&mut head, false);
        assert!(get.ends_with(b"{\"status\":\"ok\"}"));
        assert_eq!(head.len(), get.len() - response.body.len());
        assert!(head.ends_with(b"\r\n\r\n"));
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("Content-Length: 15\r\n"), "{text}");
    }
}
