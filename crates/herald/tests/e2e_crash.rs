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
const TEST_NAME_CHECKPOINTING: &str =
    "sigkilled_engine_while_checkpointing_delivers_every_acknowledged_event_after_restart";
const CHILD_DIR_ENV: &str = "HERALD_E2E_CRASH_DATA_DIR";
const CHILD_URL_ENV: &str = "HERALD_E2E_CRASH_SINK_URL";
/// Checkpoints the checkpointing child reports (`CHECKPOINTS <n>`) before the kill.
const CHECKPOINTS_BEFORE_KILL: u64 = 3;
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
    crash_and_recover(TEST_NAME, false);
}

/// The same with checkpoints every few hundred records in small journal segments: each
/// checkpoint is written a part at a time over several shard turns while events and
/// outcomes are journaled between its parts, and compaction deletes the segments
/// completed ones cover. The kill lands before, during or after one; recovery reads the
/// latest complete checkpoint and every record journaled since it began.
#[test]
fn sigkilled_engine_while_checkpointing_delivers_every_acknowledged_event_after_restart() {
    crash_and_recover(TEST_NAME_CHECKPOINTING, true);
}

fn crash_and_recover(test_name: &str, checkpointing: bool) {
    if let Ok(dir) = std::env::var(CHILD_DIR_ENV) {
        let url = std::env::var(CHILD_URL_ENV).expect("the parent passes the sink URL");
        child(std::path::Path::new(&dir), &url, checkpointing);
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
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
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
    let mut checkpoints = 0;
    let mut take = |acked: &mut BTreeSet<String>, line: String| {
        // The harness prints `test <name> ... ` without a newline before the child's
        // first line, so the marker is searched for, not expected at the start.
        if let Some(at) = line.find("ACK ") {
            acked.insert(line[at + 4..].trim().to_owned());
        } else if let Some(at) = line.find("CHECKPOINTS ") {
            checkpoints = line[at + 12..].trim().parse().unwrap_or(checkpoints);
        }
        checkpoints
    };
    let started = Instant::now();
    let mut checkpointed = 0;
    while acked.len() < ACKS_BEFORE_KILL
        || sink.stats().requests < ATTEMPTS_BEFORE_KILL
        || (checkpointing && checkpointed < CHECKPOINTS_BEFORE_KILL)
    {
        assert!(
            started.elapsed() < WAIT,
            "the child acknowledged {} events, wrote {checkpointed} checkpoints and the receiver saw {:?} in {WAIT:?}",
            acked.len(),
            sink.stats()
        );
        match lines.recv_timeout(Duration::from_millis(10)) {
            Ok(line) => checkpointed = take(&mut acked, line),
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
        checkpointed = take(&mut acked, line);
    }
    reader.join().unwrap();
    let acked_count = acked.len();
    assert!(acked_count >= ACKS_BEFORE_KILL);
    let attempts_before = sink.stats().requests;
    eprintln!("killed the child after {acked_count} acknowledged events, {attempts_before} failed attempts and {checkpointed} checkpoints");
    let successes_before = sink.stats().successes();
    assert_eq!(successes_before, 0, "nothing succeeded before the restart");

    // The receiver recovers; the engine restarts on the same directory. Webhooks and
    // pending deliveries come from the journal alone.
    sink.set_default_action(Action::ok()).unwrap();
    let herald = engine(dir.path(), checkpointing);
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

/// Journal segments of the checkpointing engine: small, so that its checkpoints come in
/// many parts and compaction deletes segments while it runs.
const CHECKPOINTING_SEGMENT_BYTES: u64 = 256 * 1024;

/// The engine on `dir`; `checkpointing`: with checkpoints every 300 records (or 300 ms)
/// in small segments.
fn engine(dir: &std::path::Path, checkpointing: bool) -> herald::Herald {
    if !checkpointing {
        return engine_with(dir, SHARDS, &[], dispatcher());
    }
    herald::Herald::builder()
        .data_dir(dir)
        .shards(SHARDS)
        .pin_threads(false)
        .allow_cidr("127.0.0.0/8")
        .shutdown_grace(Duration::from_secs(2))
        .dispatcher_config(dispatcher())
        .journal_segment_bytes(CHECKPOINTING_SEGMENT_BYTES)
        .checkpoint_records(300)
        .checkpoint_interval(Duration::from_millis(300))
        .start()
        .expect("the engine starts")
}

/// The child's side: start the engine, create one webhook per tenant, publish from
/// several threads and print `ACK <event id>` for each acknowledged publish, until killed
/// (and, checkpointing, `CHECKPOINTS <n>` as the shards complete checkpoints).
fn child(dir: &std::path::Path, url: &str, checkpointing: bool) {
    let herald = engine(dir, checkpointing);
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
        if checkpointing {
            let herald = herald.clone();
            scope.spawn(move || {
                while started.elapsed() <= CHILD_RUN_MAX {
                    let written: u64 = herald
                        .stats()
                        .map(|shards| shards.iter().map(|s| s.checkpoints_written).sum())
                        .unwrap_or(0);
                    println!("CHECKPOINTS {written}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
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
