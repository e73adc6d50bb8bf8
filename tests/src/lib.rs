//! Harness of Herald's end-to-end suite: starts the real `herald` binary (`herald
//! serve`), talks to it over loopback HTTP, and receives its deliveries with
//! `herald-sink`, checking every signature with `herald-sign`'s `Verifier`.
//!
//! * [`Site`]: a temporary directory holding one server's data dir, config and logs;
//!   it outlives restarts of the server on it.
//! * [`Server`]: one `herald serve` process. Stdout is read on a thread (the
//!   `listening on ADDR` line gives the port); stderr goes to a log file whose tail is
//!   printed when a test panics while the server runs. Stopped by SIGTERM
//!   ([`Server::terminate`]), SIGKILL ([`Server::kill`]) or, on drop, SIGKILL.
//! * [`Client`]: a small blocking HTTP/1.1 client over `std::net::TcpStream` (one
//!   connection per request), parsing answers with `herald-http`'s `ResponseParser`.
//! * [`raw`]: byte-level exchanges for the listener's defences.
//! * [`wait_for`]: every wait is bounded and names what it waited for.
//! * [`browser`]: a WebDriver client driving Debian's headless Chromium, for the
//!   operator console's tests.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod browser;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_http::{Limits, Response, ResponseParser};
use herald_sign::{Scheme, Verifier, VerifyError};
use herald_sink::{Record, Sink};
use serde_json::{json, Value};

/// Admin key the suite gives servers through `HERALD_ADMIN_KEY`.
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// How long a server may take from spawn to `listening on` (journal replay included).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM (it finishes requests in flight and
/// waits a grace period for deliveries in flight).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on one HTTP exchange with the server.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on waiting for a delivery or a delivery-log state.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------- the binary

/// The `herald` binary under test.
///
/// `HERALD_BIN` names it explicitly; otherwise it is `herald` in the profile directory of
/// this test executable (`target/<profile>/deps/e2e-…` → `target/<profile>/herald`). When
/// it is missing there, or older than a source file of the workspace's crates (so that
/// `cargo test -p herald-e2e` never tests a stale server), `cargo build -p herald-cli
/// --bin herald` runs once for the same profile and target dir. Under `cargo test
/// --workspace` it is already built and fresh (herald-cli is tested too).
pub fn herald_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate_or_build)
}

fn locate_or_build() -> PathBuf {
    if let Some(path) = std::env::var_os("HERALD_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HERALD_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path is known");
    // The profile directory is the first ancestor holding `deps/` (tests live in it).
    let profile_dir = exe
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("deps").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no target/<profile> directory above the test executable {}",
                exe.display()
            )
        })
        .to_path_buf();
    let bin = profile_dir.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root");
    let built_at = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    if built_at.is_some_and(|built| newest_source(workspace) <= built) {
        return bin;
    }
    let profile_name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = match profile_name {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace).args([
        "build",
        "-p",
        "herald-cli",
        "--bin",
        "herald",
        "--profile",
        profile,
    ]);
    // target/<profile>: build into the same target directory.
    if let Some(target_dir) = profile_dir.parent() {
        if target_dir.file_name().and_then(|n| n.to_str()) == Some("target") {
            command.env("CARGO_TARGET_DIR", target_dir);
        }
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the herald binary: {e}"));
    assert!(
        status.success(),
        "`cargo build -p herald-cli --bin herald --profile {profile}` failed: {status}"
    );
    assert!(
        bin.is_file(),
        "cargo built herald-cli but {} does not exist",
        bin.display()
    );
    bin
}

/// The newest modification time of what the binary is built from: `Cargo.lock`, the
/// root manifest, and the files under `crates/` except tests, benches, examples, fuzz
/// targets and Markdown. Walks at most a few thousand entries.
fn newest_source(workspace: &Path) -> SystemTime {
    let mut newest = UNIX_EPOCH;
    let mut note = |path: &Path| {
        if let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = newest.max(modified);
        }
    };
    note(&workspace.join("Cargo.lock"));
    note(&workspace.join("Cargo.toml"));
    let skipped = ["tests", "benches", "examples", "fuzz", "target"];
    let mut stack = vec![workspace.join("crates")];
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > 20_000 {
                return newest;
            }
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            if is_dir && !skipped.contains(&name.as_ref()) && !name.starts_with('.') {
                stack.push(path);
            } else if !is_dir && !name.ends_with(".md") {
                note(&path);
            }
        }
    }
    newest
}

// ---------------------------------------------------------------------- waiting

/// Polls `probe` every 20 ms until it returns `Some`, for at most `timeout`; panics
/// naming `what` when it never does.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("gave up after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `probe` every 20 ms until what it reads satisfies `done`, for at most
/// `timeout`; panics naming `what` and the last reading when it never does.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let start = Instant::now();
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("gave up after {timeout:?} waiting for {what}; last read {value:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for the server process: {e}"),
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Unix seconds now.
pub fn now_s() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since.as_secs()).expect("seconds fit in i64")
}

// ---------------------------------------------------------------------- site and server

/// A temporary directory for one server's life (its restarts included): `data/`, config
/// files and one stderr log per start.
#[derive(Debug)]
pub struct Site {
    dir: tempfile::TempDir,
    starts: AtomicUsize,
}

impl Site {
    /// A fresh directory.
    pub fn new() -> Site {
        Site {
            dir: tempfile::Builder::new()
                .prefix("herald-e2e-")
                .tempdir()
                .expect("a temporary directory can be made"),
            starts: AtomicUsize::new(0),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The server's data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Writes `text` to `name` in the site and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    fn next_log(&self) -> PathBuf {
        let n = self.starts.fetch_add(1, Ordering::Relaxed) + 1;
        self.path().join(format!("herald-{n}.stderr.log"))
    }
}

impl Default for Site {
    fn default() -> Self {
        Site::new()
    }
}

/// How to start `herald serve`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Contents of a `--config` file, if any.
    pub config: Option<String>,
    /// Pass `--allow-loopback` (receivers on 127.0.0.1).
    pub allow_loopback: bool,
    /// `HERALD_ADMIN_KEY`; `None` leaves it unset.
    pub admin_key: Option<String>,
    /// More arguments after `serve`.
    pub args: Vec<String>,
    /// Start the server with this soft limit on open files (`ulimit -Sn`), as a service
    /// manager would; `None` inherits the suite's.
    pub soft_open_files: Option<u64>,
}

impl Default for Options {
    /// Loopback receivers allowed, the suite's admin key, no config file.
    fn default() -> Self {
        Options {
            config: None,
            allow_loopback: true,
            admin_key: Some(ADMIN_KEY.to_string()),
            args: Vec::new(),
            soft_open_files: None,
        }
    }
}

impl Options {
    /// With this config file contents.
    pub fn config(mut self, toml: &str) -> Options {
        self.config = Some(toml.to_string());
        self
    }

    /// Without `--allow-loopback`.
    pub fn no_loopback(mut self) -> Options {
        self.allow_loopback = false;
        self
    }

    /// With this `HERALD_ADMIN_KEY` (`None`: unset).
    pub fn admin_key(mut self, key: Option<&str>) -> Options {
        self.admin_key = key.map(str::to_string);
        self
    }

    /// With more arguments.
    pub fn arg(mut self, arg: &str) -> Options {
        self.args.push(arg.to_string());
        self
    }

    /// Started under this soft limit on open files.
    pub fn soft_open_files(mut self, limit: u64) -> Options {
        self.soft_open_files = Some(limit);
        self
    }
}

/// A `herald serve` process that has not been stopped yet.
fn command(site: &Site, options: &Options, log: &Path) -> Command {
    let mut command = match options.soft_open_files {
        // The shell sets the limit and becomes the server (same process id).
        Some(limit) => {
            let mut shell = Command::new("sh");
            shell
                .arg("-c")
                .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
                .arg(herald_bin());
            shell
        }
        None => Command::new(herald_bin()),
    };
    command
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir"])
        .arg(site.data_dir());
    if options.allow_loopback {
        command.arg("--allow-loopback");
    }
    if let Some(config) = &options.config {
        let n = site.starts.load(Ordering::Relaxed);
        let path = site.write(&format!("herald-{n}.toml"), config);
        command.arg("--config").arg(path);
    }
    command.args(&options.args);
    match &options.admin_key {
        Some(key) => command.env("HERALD_ADMIN_KEY", key),
        None => command.env_remove("HERALD_ADMIN_KEY"),
    };
    if std::env::var_os("HERALD_LOG").is_none() {
        command.env("HERALD_LOG", "info");
    }
    let stderr = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    command
}

/// The last `bytes` of a log file, for failure messages.
pub fn log_tail(path: &Path, bytes: usize) -> String {
    match std::fs::read(path) {
        Ok(text) => {
            let start = text.len().saturating_sub(bytes);
            String::from_utf8_lossy(&text[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A running `herald serve`.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `herald serve` on `site` and waits (bounded) for its `listening on` line.
    pub fn start(site: &Site, options: &Options) -> Server {
        let log = site.next_log();
        let mut child = command(site, options, &log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", herald_bin().display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = mpsc::channel::<String>();
        let kept = Arc::clone(&lines);
        std::thread::Builder::new()
            .name("herald-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    kept.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(line.clone());
                    // The receiver is gone once the address is known; keep draining.
                    let _ = sender.send(line);
                }
            })
            .expect("a thread can be spawned");
        let start = Instant::now();
        let addr = loop {
            let left = START_TIMEOUT.saturating_sub(start.elapsed());
            match receiver.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        break addr.trim().parse::<SocketAddr>().unwrap_or_else(|e| {
                            panic!("cannot parse the address in {line:?}: {e}")
                        });
                    }
                }
                Err(error) => {
                    let status = match wait_exit(&mut child, Duration::from_secs(1)) {
                        Some(status) => format!("exited with {status}"),
                        None => {
                            let _ = child.kill();
                            let _ = child.wait();
                            format!("still running after {START_TIMEOUT:?}; killed")
                        }
                    };
                    panic!(
                        "herald serve did not print `listening on` ({error}); it {status}.\nstderr:\n{}",
                        log_tail(&log, 8192)
                    );
                }
            }
        };
        Server {
            child: Some(child),
            addr,
            log,
            stdout: lines,
        }
    }

    /// The API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Lines printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The stderr log so far.
    pub fn log(&self) -> String {
        log_tail(&self.log, usize::MAX)
    }

    /// Path of the stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A client without credentials.
    pub fn client(&self) -> Client {
        Client {
            addr: self.addr,
            key: None,
            tenant: None,
            log: Arc::new(self.log.clone()),
        }
    }

    /// A client with the suite's admin key.
    pub fn admin(&self) -> Client {
        self.client().key(ADMIN_KEY)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends `SIG<name>` (`TERM`, `INT`) and waits (bounded) for the exit status.
    pub fn stop_with(mut self, name: &str) -> ExitStatus {
        let mut child = self.child.take().expect("the server runs");
        signal(&child, name);
        match wait_exit(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "herald serve did not exit within {STOP_TIMEOUT:?} of SIG{name}.\nstderr:\n{}",
                    log_tail(&self.log, 8192)
                );
            }
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("the server runs");
        child.kill().expect("SIGKILL can be sent to our own child");
        let _ = child.wait();
    }
}

/// Sends `SIG<name>` to a child with kill(1) (keeps the suite free of `unsafe`).
fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("cannot run kill -{name}: {e}"));
    assert!(
        status.success(),
        "kill -{name} {} failed: {status}",
        child.id()
    );
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "---- herald serve stderr ({}), last 8 KiB ----\n{}\n---- end ----",
                    self.log.display(),
                    log_tail(&self.log, 8192)
                );
            }
        }
    }
}

/// What a `herald serve` that was expected to exit on its own did.
#[derive(Debug)]
pub struct Exited {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// Runs `herald serve` expecting it to exit by itself (a refused configuration), at most
/// `timeout`.
pub fn run_to_exit(site: &Site, options: &Options, timeout: Duration) -> Exited {
    let log = site.next_log();
    let mut command = command(site, options, &log);
    command.stdout(Stdio::piped());
    let mut child = command.spawn().expect("herald can be started");
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let status = match wait_exit(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "herald serve {:?} kept running for {timeout:?}; expected it to exit.\nstderr:\n{}",
                options.args,
                log_tail(&log, 8192)
            );
        }
    };
    let stdout = reader.join().unwrap_or_default();
    Exited {
        status,
        stdout,
        stderr: log_tail(&log, usize::MAX),
    }
}

// ---------------------------------------------------------------------- HTTP client

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// Whether the server kept the connection open.
    pub keep_alive: bool,
}

impl Resp {
    fn from_parsed(response: Response) -> Resp {
        Resp {
            status: response.status,
            headers: response.headers.to_pairs(),
            body: response.body,
            keep_alive: response.keep_alive,
        }
    }

    /// First value of header `name`, if UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Panics, showing the body, unless the status is `status`; returns the JSON body
    /// (`null` when empty).
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// `error.code` of an error answer (after checking the error shape).
    #[track_caller]
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = &body["error"];
        assert!(
            error["code"].as_str().is_some_and(|c| !c.is_empty())
                && error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "status {}: not the error shape {{\"error\":{{\"code\",\"message\"}}}}: {body}",
            self.status
        );
        error["code"].as_str().unwrap_or_default().to_string()
    }

    /// `error.message` of an error answer.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Limits for parsing the server's answers: bodies up to 8 MiB (the OpenAPI document
/// and long listings are far below).
fn client_limits() -> Limits {
    Limits {
        body_captured_bytes_max: 8 << 20,
        body_bytes_max: 8 << 20,
        ..Limits::default()
    }
}

/// One request as sent by [`Client::send`].
#[derive(Debug, Clone, Default)]
pub struct Req<'a> {
    /// Method.
    pub method: &'a str,
    /// Target (path and query).
    pub path: &'a str,
    /// More headers.
    pub headers: Vec<(&'a str, String)>,
    /// Body (sent with `Content-Length`; `Content-Type` is not added).
    pub body: Option<Vec<u8>>,
}

/// A blocking HTTP/1.1 client for the management API: one connection per request,
/// `Authorization: Bearer` and `Herald-Tenant` when set.
#[derive(Debug, Clone)]
pub struct Client {
    addr: SocketAddr,
    key: Option<String>,
    tenant: Option<String>,
    log: Arc<PathBuf>,
}

impl Client {
    /// The same server with this API key.
    pub fn key(&self, key: &str) -> Client {
        Client {
            key: Some(key.to_string()),
            ..self.clone()
        }
    }

    /// The same server and key, acting for `tenant` (`Herald-Tenant`).
    pub fn acting_for(&self, tenant: &str) -> Client {
        Client {
            tenant: Some(tenant.to_string()),
            ..self.clone()
        }
    }

    /// The same key and tenant on another server (e.g. the same site restarted).
    pub fn on(&self, server: &Server) -> Client {
        Client {
            addr: server.addr(),
            log: Arc::new(server.log_path().to_path_buf()),
            ..self.clone()
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `GET path`.
    #[track_caller]
    pub fn get(&self, path: &str) -> Resp {
        self.request(Req {
            method: "GET",
            path,
            ..Req::default()
        })
    }

    /// `DELETE path`.
    #[track_caller]
    pub fn delete(&self, path: &str) -> Resp {
        self.request(Req {
            method: "DELETE",
            path,
            ..Req::default()
        })
    }

    /// `POST path` with a JSON body.
    #[track_caller]
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.json_request("POST", path, body, Vec::new())
    }

    /// `PATCH path` with a JSON body.
    #[track_caller]
    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        self.json_request("PATCH", path, body, Vec::new())
    }

    /// A JSON request with more headers.
    #[track_caller]
    pub fn json_request(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        mut headers: Vec<(&str, String)>,
    ) -> Resp {
        headers.push(("Content-Type", "application/json".to_string()));
        self.request(Req {
            method,
            path,
            headers,
            body: Some(serde_json::to_vec(body).expect("JSON values serialise")),
        })
    }

    /// Sends `req`; panics (with the server's log tail) when the exchange fails.
    #[track_caller]
    pub fn request(&self, req: Req<'_>) -> Resp {
        let (method, path) = (req.method.to_string(), req.path.to_string());
        self.send(req).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {e}\nserver stderr (last 4 KiB):\n{}",
                log_tail(&self.log, 4096)
            )
        })
    }

    /// Sends `req` on a new connection and reads the answer, both bounded by
    /// [`REQUEST_TIMEOUT`].
    pub fn send(&self, req: Req<'_>) -> io::Result<Resp> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            req.method, req.path, self.addr
        );
        if let Some(key) = &self.key {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        if let Some(tenant) = &self.tenant {
            head.push_str(&format!("Herald-Tenant: {tenant}\r\n"));
        }
        for (name, value) in &req.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &req.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        if let Some(body) = &req.body {
            wire.extend_from_slice(body);
        }
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        // A server may answer (413, 400) before reading a whole body and close: the
        // answer is still worth reading when the write fails.
        let written = stream.write_all(&wire);
        match read_response(&mut stream) {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(written.err().unwrap_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection without answering",
                )
            })),
            Err(e) => Err(written.err().unwrap_or(e)),
        }
    }
}

/// Reads one response; `None` when the peer closed before sending any byte.
fn read_response(stream: &mut TcpStream) -> io::Result<Option<Resp>> {
    let mut parser = ResponseParser::new(client_limits());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return match parser.feed_eof() {
                Ok(response) => Ok(response.map(Resp::from_parsed)),
                Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            };
        }
        match parser.feed(&buf[..n]) {
            Ok((_, Some(response))) => return Ok(Some(Resp::from_parsed(response))),
            Ok((_, None)) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
        }
    }
}

/// Byte-level exchanges with the listener.
pub mod raw {
    use super::*;

    /// What came back on a raw connection.
    #[derive(Debug)]
    pub struct Outcome {
        /// Complete responses, in order.
        pub responses: Vec<Resp>,
        /// Whether the server closed the connection (read returned 0 or an error)
        /// before `timeout`.
        pub closed: bool,
        /// Bytes left that did not form a complete response.
        pub leftover: Vec<u8>,
    }

    /// Connects to `addr`, writes `bytes`, then reads until the server closes the
    /// connection, `responses_wanted` responses arrived, or `timeout` passed.
    pub fn exchange(
        addr: SocketAddr,
        bytes: &[u8],
        responses_wanted: usize,
        timeout: Duration,
    ) -> Outcome {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream
            .set_write_timeout(Some(timeout))
            .expect("a timeout can be set");
        // A refused write still lets us read what the server answered.
        let _ = stream.write_all(bytes);
        read_until(&mut stream, responses_wanted, timeout)
    }

    /// Reads from `stream` until it closes, `responses_wanted` responses arrived, or
    /// `timeout` passed.
    pub fn read_until(
        stream: &mut TcpStream,
        responses_wanted: usize,
        timeout: Duration,
    ) -> Outcome {
        let start = Instant::now();
        let mut parser = ResponseParser::new(client_limits());
        let mut responses = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut closed = false;
        while responses.len() < responses_wanted {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            stream
                .set_read_timeout(Some(left))
                .expect("a timeout can be set");
            match stream.read(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            // Parse every complete response buffered.
            loop {
                match parser.feed(&pending) {
                    Ok((used, Some(response))) => {
                        pending.drain(..used);
                        responses.push(Resp::from_parsed(response));
                    }
                    Ok((used, None)) => {
                        // The parser keeps partial input itself.
                        pending.drain(..used);
                        break;
                    }
                    Err(e) => panic!("the server's answer does not parse: {e}"),
                }
            }
        }
        Outcome {
            responses,
            closed,
            leftover: pending,
        }
    }

    /// Whether the server closes `stream` within `timeout` (read returns 0 or an error),
    /// draining whatever it sends first; returns what it sent.
    pub fn closed_within(stream: &mut TcpStream, timeout: Duration) -> (bool, Vec<u8>) {
        let start = Instant::now();
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return (false, received);
            }
            stream
                .set_read_timeout(Some(left))
                .expect("a timeout can be set");
            match stream.read(&mut buf) {
                Ok(0) => return (true, received),
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return (false, received)
                }
                Err(_) => return (true, received),
            }
        }
    }

    /// Closes the writing half (the server sees end of input).
    pub fn shutdown_write(stream: &TcpStream) {
        let _ = stream.shutdown(Shutdown::Write);
    }
}

// ---------------------------------------------------------------------- the API, briefly

/// Creates tenant `id` with the admin client; returns a client with the tenant's key.
#[track_caller]
pub fn create_tenant(admin: &Client, id: &str) -> Client {
    let created = admin.post("/v1/tenants", &json!({ "id": id })).expect(201);
    assert_eq!(created["id"], id, "{created}");
    let key = created["api_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no api_key in {created}"));
    admin.key(key)
}

/// Creates a webhook; returns its JSON (with `secret`).
#[track_caller]
pub fn create_webhook(tenant: &Client, body: &Value) -> Value {
    let webhook = tenant.post("/v1/webhooks", body).expect(201);
    assert!(
        webhook["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wh_")),
        "{webhook}"
    );
    assert!(webhook["secret"].is_string(), "{webhook}");
    webhook
}

/// Publishes an event; returns the envelope (asserting 202).
#[track_caller]
pub fn publish(tenant: &Client, event: &Value) -> Value {
    let envelope = tenant.post("/v1/events", event).expect(202);
    assert!(envelope["id"].is_string(), "{envelope}");
    envelope
}

/// Every delivery of a webhook in the log, following cursors (bounded to 100 pages).
#[track_caller]
pub fn deliveries(tenant: &Client, webhook_id: &str, query: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let mut path = format!("/v1/webhooks/{webhook_id}/deliveries?limit=100");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = tenant.get(&path).expect(200);
        all.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
    panic!("more than 100 pages of deliveries for {webhook_id}");
}

/// Waits until the log holds a delivery of `event_id` to `webhook_id` with `status`;
/// returns it.
#[track_caller]
pub fn wait_delivery(tenant: &Client, webhook_id: &str, event_id: &str, status: &str) -> Value {
    wait_for(
        &format!("delivery of {event_id} to {webhook_id} with status {status}"),
        DELIVERY_TIMEOUT,
        || {
            deliveries(tenant, webhook_id, "")
                .into_iter()
                .find(|d| d["event_id"] == event_id && d["status"] == status)
        },
    )
}

// ---------------------------------------------------------------------- receiving

/// Headers of a received request as `herald-sign` wants them.
pub fn text_headers(record: &Record) -> Vec<(String, String)> {
    record
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// Verifies a received request (standard scheme) against `secrets` (any may match).
pub fn verify(sink: &Sink, record: &Record, secrets: &[&str]) -> Result<(), VerifyError> {
    verify_scheme(sink, record, Scheme::Standard, secrets)
}

/// Verifies a received request with `scheme` against `secrets`.
pub fn verify_scheme(
    sink: &Sink,
    record: &Record,
    scheme: Scheme,
    secrets: &[&str],
) -> Result<(), VerifyError> {
    let verifier = Verifier::new(scheme, secrets)?;
    let url = format!("{}://{}{}", sink.scheme(), sink.addr(), record.target);
    verifier.verify(&text_headers(record), &url, &record.body, now_s())
}

/// Panics unless every record verifies against `secrets`, naming the first that does
/// not.
#[track_caller]
pub fn assert_all_verified(sink: &Sink, records: &[Record], secrets: &[&str]) {
    for record in records {
        if let Err(e) = verify(sink, record, secrets) {
            panic!(
                "request {} {} (webhook-id {:?}) does not verify: {e}",
                record.method,
                record.target,
                record.header("webhook-id")
            );
        }
    }
}

/// The `webhook-id` (event id) of a received request.
pub fn webhook_id_of(record: &Record) -> String {
    record
        .header("webhook-id")
        .unwrap_or_else(|| panic!("request to {} without webhook-id", record.target))
        .to_string()
}

/// The body of a received request as JSON.
pub fn body_json(record: &Record) -> Value {
    serde_json::from_slice(&record.body).unwrap_or_else(|e| {
        panic!(
            "delivered body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&record.body)
        )
    })
}

/// The event a received request carries: its `webhook-id` header (standard and ed25519
/// schemes), else the envelope's `id` (every scheme).
pub fn event_id_of(record: &Record) -> Option<String> {
    if let Some(id) = record.header("webhook-id") {
        return Some(id.to_string());
    }
    let body: Value = serde_json::from_slice(&record.body).ok()?;
    body["id"].as_str().map(str::to_string)
}

/// Waits until a request for `event_id` arrived on `path`; returns every such request.
#[track_caller]
pub fn wait_received(sink: &Sink, path: &str, event_id: &str) -> Vec<Record> {
    wait_for(
        &format!("a request for {event_id} on {path}"),
        DELIVERY_TIMEOUT,
        || {
            let found: Vec<Record> = sink
                .requests_to(path)
                .into_iter()
                .filter(|r| event_id_of(r).as_deref() == Some(event_id))
                .collect();
            (!found.is_empty()).then_some(found)
        },
    )
}

/// A valid standard secret (`whsec_` + base64 of 32 bytes) made from `seed`.
pub fn standard_secret(seed: u8) -> String {
    herald_sign::generate_secret(&Scheme::Standard, &[seed; 32])
}
