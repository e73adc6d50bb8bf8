//! `herald bench run|raw` as a user runs them: embedded with a scenario file and flags on
//! top, the raw ceiling, and remote mode against a real `herald serve`. Small counts;
//! the checks are on the report's completeness and consistency, never on timings.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn herald(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

const KEYS: [&str; 14] = [
    "deliveries_per_s",
    "accepted_per_s",
    "raw_per_s",
    "ratio_to_raw",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "cpu_us_per_delivery",
    "peak_rss_bytes",
    "journal_bytes_per_delivery",
    "records_per_delivery",
    "disk_write_bytes_per_delivery",
];

#[test]
fn run_embedded_with_a_scenario_file_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"smoke\"\ntenants = 9\nwebhooks_per_tenant = 2\npayload_bytes = 128\n",
    )
    .unwrap();
    let json = dir.path().join("r.json");
    let svg = dir.path().join("r.svg");
    let out = herald(&[
        "bench",
        "run",
        "--scenario",
        scenario.to_str().unwrap(),
        "--tenants",
        "2",
        "--events",
        "300",
        "--shards",
        "1",
        "--compare-raw",
        "--json",
        json.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // The table, and progress as plain lines (stderr is not a terminal here).
    assert!(stdout.contains("delivered"), "{stdout}");
    assert!(stdout.contains("raw ceiling"), "{stdout}");
    assert!(stderr.lines().any(|l| l.starts_with("t=")), "{stderr}");
    assert!(!stderr.contains('\r'), "no rewritten line off a terminal");

    let report = json_file(&json);
    for key in KEYS {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    assert_eq!(report["scenario"], "smoke");
    assert_eq!(report["tenants"], 2, "the flag overrides the file");
    assert_eq!(report["webhooks_per_tenant"], 2, "the file's value stays");
    assert_eq!(report["payload_bytes"], 128);
    assert_eq!(report["accepted"], 300);
    assert_eq!(report["delivered"], 600, "delivered = accepted × fan-out");
    assert!(report["raw_per_s"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&svg).unwrap();
    roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
}

#[test]
fn raw_reports_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("raw.json");
    let out = herald(&[
        "bench",
        "raw",
        "--requests",
        "1000",
        "--connections",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = json_file(&json);
    assert_eq!(report["requests"], 1000);
    assert!(report["raw_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_knobs_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("bad.toml");
    std::fs::write(&scenario, "tenant = 3\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--scenario", scenario.to_str().unwrap()], "unknown field"),
        (&["--tenants", "0"], "tenants"),
        (&["--events", "5", "--duration", "1s"], "exclude"),
        (&["--status-mix", "200:0"], "status_mix"),
        (&["--target", "http://127.0.0.1:9"], "api-key"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["bench", "run"];
        all.extend_from_slice(args);
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(&all)
            .env_remove("HERALD_ADMIN_KEY")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// A `herald serve` on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const ADMIN_KEY: &str = "bench-admin-key-0123456789";

fn serve() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--allow-loopback")
        .env("HERALD_ADMIN_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    let started = Instant::now();
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no `listening on` after {:?}: {e}", started.elapsed()));
    Server {
        child,
        addr,
        _dir: dir,
    }
}

#[test]
fn run_remote_against_herald_serve() {
    let server = serve();
    let dir = tempfile::tempdir().unwrap();
    let target = format!("http://{}", server.addr);
    for (batch, events) in [("1", "60"), ("25", "200")] {
        let json = dir.path().join(format!("remote-{batch}.json"));
        let out = herald(&[
            "bench",
            "run",
            "--target",
            &target,
            "--api-key",
            ADMIN_KEY,
            "--events",
            events,
            "--tenants",
            "2",
            "--fanout",
            "2",
            "--batch",
            batch,
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "batch {batch}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let report = json_file(&json);
        for key in KEYS {
            assert!(report.get(key).is_some(), "{key} missing: {report}");
        }
        let events: u64 = events.parse().unwrap();
        assert_eq!(report["mode"], "remote");
        assert_eq!(report["accepted"], events);
        assert_eq!(
            report["delivered"],
            events * 2,
            "delivered = accepted × fan-out"
        );
        assert_eq!(report["latency_samples"], events * 2);
        // Remotely the engine figures are the server's, from its GET /metrics.
        assert_eq!(report["figures_source"], "metrics");
        assert!(
            report["journal_bytes_per_delivery"].as_f64().unwrap() > 0.0,
            "{report}"
        );
        assert_eq!(report["retries"]["attempts_succeeded"], events * 2);
        assert_eq!(
            report["device_write_bytes_per_delivery"],
            serde_json::Value::Null
        );
    }
}
