//! A small W3C WebDriver client for the console's browser tests.
//!
//! [`Browser::start`] runs Debian's `chromedriver` on a free loopback port, which starts
//! headless `chromium` with a fresh profile; commands go to chromedriver's HTTP API
//! through the suite's own [`Client`]. Nothing is downloaded: both programs must be
//! installed (`apt-get install chromium chromium-driver`, which `.ci/run` does).
//!
//! Every wait is bounded ([`BROWSER_TIMEOUT`]) and names what it waited for. Actions
//! on an element look it up again when the page re-rendered it in between (a stale
//! element), so tests address elements by CSS selector, not by handle.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use crate::{wait_exit, Client, Req};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`), same version as [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Bound on any wait for the page: an element to appear, a text to show, a script's
/// condition. Far above what a loaded two-core machine needs.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on chromedriver's start (it prints its port when ready).
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How often a wait polls the page.
const POLL: Duration = Duration::from_millis(50);

/// An error answer from WebDriver (`{"value":{"error","message"}}`).
#[derive(Debug, Clone)]
pub struct WebDriverError {
    /// HTTP status.
    pub status: u16,
    /// The W3C error code, such as `no such element` or `stale element reference`.
    pub error: String,
    /// Its message.
    pub message: String,
}

impl WebDriverError {
    /// Whether retrying the same lookup may succeed: the page changed under us.
    fn is_transient(&self) -> bool {
        matches!(
            self.error.as_str(),
            "no such element"
                | "stale element reference"
                | "element not interactable"
                | "element click intercepted"
        )
    }
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error, self.status, self.message)
    }
}

/// A headless Chromium driven over WebDriver; closed (browser and driver) on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Option<Child>,
    client: Client,
    session: String,
    profile: tempfile::TempDir,
}

/// Panics with the install command when chromium or chromedriver is missing.
fn require_installed() {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|path| !Path::new(path).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "the console's browser tests need Debian's chromium and chromium-driver, and {} is \
         missing: install them with `apt-get install chromium chromium-driver` (.ci/run does)",
        missing.join(" and ")
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width` × `height`
    /// CSS pixels and a new, temporary profile.
    pub fn start(width: u32, height: u32) -> Browser {
        require_installed();
        let profile = tempfile::Builder::new()
            .prefix("herald-chromium-")
            .tempdir()
            .expect("a temporary directory can be made");
        let driver_log = profile.path().join("chromedriver.log");
        let mut driver = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(&driver_log)
                    .unwrap_or_else(|e| panic!("creating {}: {e}", driver_log.display())),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let port = read_driver_port(&mut driver);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let client = Client {
            addr,
            key: None,
            tenant: None,
            log: Arc::new(driver_log),
        };
        let user_data_dir = profile.path().join("user-data");
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": {"implicit": 0, "pageLoad": 30_000, "script": 30_000},
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-quic",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-dev-shm-usage",
                            "--lang=en-US",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", user_data_dir.display()),
                        ],
                    },
                },
            },
        });
        let mut browser = Browser {
            driver: Some(driver),
            client,
            session: String::new(),
            profile,
        };
        let created = browser
            .call("POST", "/session", Some(capabilities))
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start chromium: {e}\nchromedriver log:\n{}",
                    crate::log_tail(&browser.profile.path().join("chromedriver.log"), 4096)
                )
            });
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {created}"))
            .to_string();
        browser
    }

    /// One WebDriver command; the answer's `value`.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let resp = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(&body).expect("JSON values serialise");
                self.client.send(Req {
                    method,
                    path,
                    headers: vec![(
                        "Content-Type",
                        "application/json; charset=utf-8".to_string(),
                    )],
                    body: Some(bytes),
                })
            }
            None => self.client.send(Req {
                method,
                path,
                ..Req::default()
            }),
        }
        .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let answer: Value = serde_json::from_slice(&resp.body).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path}: status {} body is not JSON ({e}): {}",
                resp.status,
                resp.text()
            )
        });
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if resp.status == 200 {
            return Ok(value);
        }
        Err(WebDriverError {
            status: resp.status,
            error: value["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string(),
            message: value["message"].as_str().unwrap_or_default().to_string(),
        })
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    /// Panics with `what` when a command fails.
    #[track_caller]
    fn must(&self, what: &str, result: Result<Value, WebDriverError>) -> Value {
        result.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Opens `url` and waits for the document to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        let result = self.session_call("POST", "/url", Some(json!({ "url": url })));
        self.must(&format!("opening {url}"), result);
    }

    /// The address bar.
    pub fn url(&self) -> String {
        let value = self.must("reading the URL", self.session_call("GET", "/url", None));
        value.as_str().unwrap_or_default().to_string()
    }

    /// Sets the window's size (CSS pixels).
    #[track_caller]
    pub fn resize(&self, width: u32, height: u32) {
        let result = self.session_call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
        self.must("resizing the window", result);
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    #[track_caller]
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        let result = self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        );
        self.must(&format!("running {script:?}"), result)
    }

    fn find_once(&self, css: &str) -> Result<String, WebDriverError> {
        let value = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )?;
        Ok(value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference in {value}"))
            .to_string())
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        let value = self.must(
            &format!("finding {css}"),
            self.session_call(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            ),
        );
        value.as_array().map_or(0, Vec::len)
    }

    /// Retries `action` on the element matching `css` while the page is still changing
    /// (absent, stale, not yet interactable), at most [`BROWSER_TIMEOUT`].
    #[track_caller]
    fn with_element<T>(
        &self,
        what: &str,
        css: &str,
        mut action: impl FnMut(&str) -> Result<Option<T>, WebDriverError>,
    ) -> T {
        let start = Instant::now();
        let mut last: Option<String>;
        loop {
            match self.find_once(css).and_then(|id| action(&id)) {
                Ok(Some(value)) => return value,
                Ok(None) => last = None,
                Err(e) if e.is_transient() => last = Some(e.to_string()),
                Err(e) => panic!("{what} ({css}): {e}"),
            }
            if start.elapsed() >= BROWSER_TIMEOUT {
                self.dump("timeout");
                panic!(
                    "gave up after {BROWSER_TIMEOUT:?} waiting to {what} ({css}){}",
                    last.map(|e| format!("; last error: {e}"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until an element matches `css`.
    #[track_caller]
    pub fn wait(&self, css: &str) {
        self.with_element("find", css, |_| Ok(Some(())));
    }

    /// Waits until no element matches `css`.
    #[track_caller]
    pub fn wait_gone(&self, css: &str) {
        self.wait_until(&format!("no element matching {css}"), || {
            (self.count(css) == 0).then_some(())
        });
    }

    /// Waits until the element matching `css` shows a text containing `needle`;
    /// returns the whole text.
    #[track_caller]
    pub fn wait_text(&self, css: &str, needle: &str) -> String {
        self.with_element(&format!("show {needle:?}"), css, |id| {
            let text = self.element_text(id)?;
            Ok(text.contains(needle).then_some(text))
        })
    }

    /// The rendered text of the element matching `css` (waiting for it).
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        self.with_element("read the text", css, |id| self.element_text(id).map(Some))
    }

    fn element_text(&self, id: &str) -> Result<String, WebDriverError> {
        let value = self.session_call("GET", &format!("/element/{id}/text"), None)?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// A DOM property (`value`, `checked`, …) of the element matching `css`.
    #[track_caller]
    pub fn property(&self, css: &str, name: &str) -> Value {
        self.with_element(&format!("read property {name}"), css, |id| {
            self.session_call("GET", &format!("/element/{id}/property/{name}"), None)
                .map(Some)
        })
    }

    /// Clicks the element matching `css` (waiting until it can be clicked).
    #[track_caller]
    pub fn click(&self, css: &str) {
        self.with_element("click", css, |id| {
            self.session_call("POST", &format!("/element/{id}/click"), Some(json!({})))
                .map(|_| Some(()))
        });
    }

    /// Replaces the text of the input matching `css` with `text`, as typed keys.
    #[track_caller]
    pub fn fill(&self, css: &str, text: &str) {
        self.with_element("type into", css, |id| {
            self.session_call("POST", &format!("/element/{id}/clear"), Some(json!({})))?;
            self.session_call(
                "POST",
                &format!("/element/{id}/value"),
                Some(json!({ "text": text })),
            )
            .map(|_| Some(()))
        });
    }

    /// Chooses the option with `value` in the select matching `select_css`.
    #[track_caller]
    pub fn choose(&self, select_css: &str, value: &str) {
        let option = format!("{select_css} option[value=\"{value}\"]");
        self.click(&option);
        self.wait_until(&format!("{select_css} to hold {value}"), || {
            (self.property(select_css, "value") == value).then_some(())
        });
    }

    /// Presses keys (WebDriver key codes, e.g. `"\u{E00C}"` for Escape) on the focused
    /// element.
    #[track_caller]
    pub fn keys(&self, keys: &str) {
        let actions = json!({"actions": [{
            "type": "key",
            "id": "keyboard",
            "actions": keys.chars().flat_map(|c| {
                let key = c.to_string();
                [json!({"type": "keyDown", "value": key}), json!({"type": "keyUp", "value": key})]
            }).collect::<Vec<_>>(),
        }]});
        let result = self.session_call("POST", "/actions", Some(actions));
        self.must("pressing keys", result);
    }

    /// Waits until `probe` (which may query the page) returns `Some`.
    #[track_caller]
    pub fn wait_until<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if start.elapsed() >= BROWSER_TIMEOUT {
                self.dump("timeout");
                panic!("gave up after {BROWSER_TIMEOUT:?} waiting for {what}");
            }
            std::thread::sleep(POLL);
        }
    }

    /// Saves a PNG of the viewport to `path` (directories are created).
    #[track_caller]
    pub fn screenshot(&self, path: &Path) {
        let value = self.must(
            "taking a screenshot",
            self.session_call("GET", "/screenshot", None),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("WebDriver screenshots are base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The browser's console messages since the last call (`level`, `message`).
    pub fn console_log(&self) -> Vec<(String, String)> {
        match self.session_call("POST", "/se/log", Some(json!({"type": "browser"}))) {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| {
                    (
                        e["level"].as_str().unwrap_or_default().to_string(),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Prints the page's URL, visible text and console to stderr (on a failure).
    pub fn dump(&self, why: &str) {
        let url = self.session_call("GET", "/url", None).unwrap_or_default();
        let text = self
            .session_call(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
            )
            .unwrap_or_default();
        let text = text.as_str().unwrap_or_default();
        let text: String = text.chars().take(4000).collect();
        eprintln!(
            "---- browser ({why}) at {url}\n{text}\n---- console: {:?}\n----",
            self.console_log()
        );
    }
}

/// Reads chromedriver's stdout until it names its port; keeps draining it afterwards.
fn read_driver_port(driver: &mut Child) -> u16 {
    let stdout = driver.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("chromedriver-stdout".into())
        .spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the port is known; keep draining.
                let _ = sender.send(line);
            }
        })
        .expect("a thread can be spawned");
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = DRIVER_START_TIMEOUT.saturating_sub(start.elapsed());
        match receiver.recv_timeout(left) {
            Ok(line) => {
                // "ChromeDriver was started successfully on port 40185."
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    return digits
                        .parse()
                        .unwrap_or_else(|e| panic!("chromedriver's port in {line:?}: {e}"));
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!(
                    "chromedriver did not say it started within {DRIVER_START_TIMEOUT:?}; it printed:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.session.is_empty() {
            self.dump("test failed");
        }
        if !self.session.is_empty() {
            // Closes chromium; chromedriver then stops below.
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill();
            if wait_exit(&mut driver, Duration::from_secs(10)).is_none() {
                eprintln!("chromedriver {} did not exit after SIGKILL", driver.id());
            }
        }
    }
}

/// Where the browser tests put their screenshots: `target/console-screenshots/` (the
/// target directory above this test executable), not committed.
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path is known");
    let target = exe
        .ancestors()
        .find(|dir| {
            dir.join("CACHEDIR.TAG").is_file() || dir.file_name().is_some_and(|n| n == "target")
        })
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::temp_dir().join("herald-target"));
    target.join("console-screenshots")
}
