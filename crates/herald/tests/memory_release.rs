//! `herald::set_memory_release`: a shard calls the process's release function on its own
//! thread when it has just freed much at once, and only then: once replay has rebuilt
//! its state, when a checkpoint ends, and when it stops. (One test: the registration is
//! the process's, and this file is a process of its own.)

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald::{Herald, TenantId};

/// Upper bound of every wait; a passing run takes a small fraction of it.
const WAIT: Duration = Duration::from_secs(30);

static CALLS: AtomicU64 = AtomicU64::new(0);
static THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn release() {
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    THREADS.lock().unwrap().push(name);
    CALLS.fetch_add(1, Ordering::SeqCst);
}

fn other_release() {}

fn calls() -> u64 {
    CALLS.load(Ordering::SeqCst)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn checkpoints(herald: &Herald) -> u64 {
    herald.stats().unwrap()[0].checkpoints_written
}

#[test]
fn a_shard_releases_freed_memory_once_started_after_each_checkpoint_and_once_stopped() {
    herald::set_memory_release(release).expect("the first registration stands");
    assert!(
        herald::set_memory_release(other_release).is_err(),
        "a second registration is refused"
    );
    let data = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(data.path())
        .shards(1)
        .checkpoint_records(8)
        .checkpoint_interval(Duration::from_millis(20))
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("engine starts");

    // Started: replay (of nothing) rebuilt the state.
    wait_for("the release after start", || calls() >= 1);
    assert_eq!(calls(), 1, "no checkpoint without records");

    // Each checkpoint ends with a release, and nothing else releases.
    let tenant = TenantId::parse("acme").unwrap();
    for n in 0..60 {
        herald
            .publish(&tenant, support::padded_event("evt_release", n))
            .unwrap();
    }
    // Once the last checkpoint covers every record (its end is the journal's last
    // frame), no more are written: the schedule needs records since the last one.
    wait_for("a checkpoint covering every record", || {
        let stats = &herald.stats().unwrap()[0];
        !stats.checkpoint_underway && stats.checkpoint_seq_last == stats.journal_last_seq
    });
    let written = checkpoints(&herald);
    assert!(
        written >= 2,
        "{written} checkpoints of 60 events by 8 records"
    );
    assert_eq!(calls(), 1 + written, "one release per checkpoint");

    // Stopping writes no checkpoint (none is due) and releases once, as the shard ends.
    herald.shutdown().expect("a clean stop");
    assert_eq!(calls(), 2 + written, "one release once stopped");

    let threads = THREADS.lock().unwrap();
    assert!(
        threads.iter().all(|name| name.starts_with("herald-shard")),
        "released on the shard's own thread: {threads:?}"
    );
}
