//! Crash recovery end to end: a child process runs the engine and publishes under load
//! while the receiver is slow and failing; it is SIGKILLed mid-flight, the engine is
//! restarted on the same data directory, and every event the child saw acknowledged
//! must reach the (now healthy) receiver at least once.
//!
//! The child is this test binary re-invoked with [`CHILD_DIR_ENV`] set: the same test
//! function then runs the child's side.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{engine_with, envelope_id, event, secret, spec, tenant, wait_until, WAIT};
use herald::Scheme;
use herald_sink::{Action, Sink};

const TEST_NAME: &str = "sigkilled_engine_delivers_every_acknowledged_event_after_restart";
const CHILD_DIR_ENV: &str = "HERALD_E2E_CRASH_DATA_DIR";
const CHILD_URL_ENV: &str = "HERALD_E2E_CRASH_SINK_URL";
const TENANTS: [&str; 3] = ["crash-a", "crash-b", "crash-c"];
const SHARDS: usize = 2;
/// Publishing threads in the child.
const PUBLISHERS: usize = 4;
/// The child stops publishing after this many events or this long, whichever first, so
/// that a parent that never kills it does not leave it running.
const CHILD_EVENTS_MAX: usize = 20_000;
const CHILD_RUN_MAX: Duration = Duration::from_secs(60);
/// Acknowledgements (and failed attempts at the receiver) seen before the kill.
const ACKS_BEFORE_KILL: usize = 300;
const ATTEMPTS_BEFORE_KILL: u64 = 50;
/// Retries every 500 ms, 24 times: the deliveries outlive the time to the kill and the
/// restart by far, and after the restart they are due within half a second.
const RETRY_DELAY_MS: u64 = 500;
const RETRIES: usize = 24;

/// Short circuit-breaker periods: the breaker opens under the failing receiver (as it
/// would in production) but lets retries through within a fraction of a second.
fn dispatcher() -> herald::DispatcherConfig {
    let mut config = herald::DispatcherConfig::default();
    config.health.breaker_open_ms = 100;
    config.health.breaker_open_ms_max = 400;
    config
}

#[test]
fn sigkilled_engine_delivers_every_acknowledged_event_after_restart() {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let url = std::env::var(CHILD_URL_ENV).expect("the parent passes the sink URL");
        child(std::path::Path::new(&dir), &url);
        return;
    }

    // Slow and failing: attempts are in flight and deliveries pending when the kill comes.
    let sink = Sink::builder()
        .default_action(Action::delay(20, Action::Status(503)))
        .requests_max(herald_sink::REQUESTS_MAX_LIMIT)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir.path())
        .env(CHILD_URL_ENV, sink.url("/crash"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut acked = BTreeSet::new();
    let take = |acked: &mut BTreeSet<String>, line: String| {
        // The harness prints `test <name> ... ` without a newline before the child's
        // first line, so the marker is searched for, not expected at the start.
        if let Some(at) = line.find("ACK ") {
            acked.insert(line[at + 4..].trim().to_owned());
        }
    };
    let started = Instant::now();
    while acked.len() < ACKS_BEFORE_KILL || sink.stats().requests < ATTEMPTS_BEFORE_KILL {
        assert!(
            started.elapsed() < WAIT,
            "the child acknowledged {} events and the receiver saw {:?} in {WAIT:?}",
            acked.len(),
            sink.stats()
        );
        match lines.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => take(&mut acked, line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the child exited early: {:?}", child.wait())
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    // Everything the child printed before dying: an ACK line means durable.
    while let Ok(line) = lines.recv_timeout(WAIT) {
        take(&mut acked, line);
    }
    reader.join().unwrap();
    let acked_count = acked.len();
    assert!(acked_count >= ACKS_BEFORE_KILL);
    let attempts_before = sink.stats().requests;
    eprintln!("killed the child after {acked_count} acknowledged events and {attempts_before} failed attempts");
    let successes_before = sink.stats().successes();
    assert_eq!(successes_before, 0, "nothing succeeded before the restart");

    // The receiver recovers; the engine restarts on the same directory. Webhooks and
    // pending deliveries come from the journal alone.
    sink.set_default_action(Action::ok()).unwrap();
    let herald = engine_with(dir.path(), SHARDS, &[], dispatcher());
    for name in TENANTS {
        assert_eq!(herald.list_webhooks(&tenant(name)).unwrap().len(), 1);
    }
    let missing = || -> BTreeSet<String> {
        let delivered: BTreeSet<String> = sink
            .requests()
            .iter()
            .filter(|r| r.action.status() == Some(200))
            .map(|r| envelope_id(&r.body))
            .collect();
        acked.difference(&delivered).cloned().collect()
    };
    wait_until(
        "every acknowledged event to be delivered",
        WAIT,
        || missing().is_empty().then_some(()),
        || {
            let missing = missing();
            format!(
                "{} of {acked_count} acknowledged events missing, e.g. {:?}; sink {:?}",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                sink.stats()
            )
        },
    );
    herald.shutdown().unwrap();
}

/// The child's side: start the engine, create one webhook per tenant, publish from
/// several threads and print `ACK <event id>` for each acknowledged publish, until killed.
fn child(dir: &std::path::Path, url: &str) {
    let herald = engine_with(dir, SHARDS, &[], dispatcher());
    let scheme = Scheme::Standard;
    for name in TENANTS {
        let spec = spec(
            url,
            scheme.clone(),
            &secret(&scheme, 3),
            Some(vec![RETRY_DELAY_MS; RETRIES]),
        );
        herald.create_webhook(&tenant(name), spec).unwrap();
    }
    let started = Instant::now();
    std::thread::scope(|scope| {
        for publisher in 0..PUBLISHERS {
            let herald = herald.clone();
            scope.spawn(move || {
                for n in (publisher..CHILD_EVENTS_MAX).step_by(PUBLISHERS) {
                    if started.elapsed() > CHILD_RUN_MAX {
                        break;
                    }
                    let tenant = tenant(TENANTS[n % TENANTS.len()]);
                    let id = herald
                        .publish(&tenant, event(serde_json::json!({ "n": n })))
                        .unwrap();
                    // One line per acknowledged event; stdout is line-buffered, so the
                    // line is out before the next publish starts.
                    println!("ACK {id}");
                }
            });
        }
    });
}
