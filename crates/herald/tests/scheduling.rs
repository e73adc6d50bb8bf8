//! The shard threads' scheduling policy: `SCHED_BATCH` unless turned off.
//!
//! One test in its own binary: the policy is read from `/proc` for every thread named
//! after a shard, so no other engine may be running in the process meanwhile.

use std::time::{Duration, Instant};

use herald::Herald;

mod shard_threads;

/// `SCHED_OTHER` and `SCHED_BATCH` (`sched.h`).
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// The scheduling policy of every live thread named after a shard.
fn shard_thread_policies() -> Vec<u32> {
    shard_threads::read(|task| {
        let stat = std::fs::read_to_string(task.join("stat")).ok()?;
        // Fields after the name in parentheses start with the third (state); the
        // policy is the 41st (proc(5)).
        let (_, rest) = stat
            .rsplit_once(')')
            .expect("stat has the name in parentheses");
        Some(
            rest.split_whitespace()
                .nth(41 - 3)
                .expect("stat has a policy field")
                .parse()
                .expect("the policy is a number"),
        )
    })
}

fn start(dir: &std::path::Path, batch: Option<bool>) -> Herald {
    let mut builder = Herald::builder()
        .data_dir(dir)
        .shards(2)
        .pin_threads(false)
        .shutdown_grace(Duration::from_secs(2));
    if let Some(batch) = batch {
        builder = builder.batch_scheduling(batch);
    }
    builder.start().expect("the engine starts")
}

#[test]
fn shard_threads_run_batch_scheduled_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();

    let batch = |policies: &[u32]| policies.iter().filter(|p| **p == SCHED_BATCH).count();

    let herald = start(dir.path(), None);
    let policies = shard_thread_policies();
    assert_eq!(
        batch(&policies),
        2,
        "by default both shard threads run under SCHED_BATCH: {policies:?}"
    );
    herald.shutdown().unwrap();
    drop(herald);
    // The shard threads are joined by then; glommio's helpers may take a moment more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shard_threads::named().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first engine's threads ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let herald = start(dir.path(), Some(false));
    let policies = shard_thread_policies();
    assert!(
        policies.len() >= 2 && policies.iter().all(|p| *p == SCHED_OTHER),
        "turned off, the shard threads keep the default policy: {policies:?}"
    );
    herald.shutdown().unwrap();
}
