//! Where the shard threads may run: pinned to one CPU each, or floating, as
//! `Builder::pinning` says, and `Herald::pinned` telling which.
//!
//! One test in its own binary: the CPUs a thread may run on are read from `/proc` for
//! every thread named after a shard, so no other engine may run in the process meanwhile.

use std::time::{Duration, Instant};

use herald::{Herald, Pinning};

mod shard_threads;

/// Online CPUs, from `/sys/devices/system/cpu/online` (`0-1`, `0,2-3`, …).
fn online_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .expect("/sys/devices/system/cpu/online lists the online CPUs");
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>().expect("a CPU number") - a.parse::<usize>().expect("a CPU") + 1
            }
            None => 1,
        })
        .sum()
}

/// The `Cpus_allowed_list` of a thread's (or the process's) `status` file.
fn allowed_list(status: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("status has Cpus_allowed_list")
        .trim()
        .to_owned()
}

/// The CPUs every live thread named after a shard may run on.
fn shard_thread_cpus() -> Vec<String> {
    shard_threads::read(|task| {
        let status = std::fs::read_to_string(task.join("status")).ok()?;
        Some(allowed_list(&status))
    })
}

fn start(dir: &std::path::Path, shards: usize, pinning: Option<Pinning>) -> Herald {
    let mut builder = Herald::builder()
        .data_dir(dir)
        .shards(shards)
        .shutdown_grace(Duration::from_secs(2));
    if let Some(pinning) = pinning {
        builder = builder.pinning(pinning);
    }
    builder.start().expect("the engine starts")
}

/// Stops `herald` and waits until its shard threads (and glommio's helpers) are gone.
fn stop(herald: Herald) {
    herald.shutdown().unwrap();
    drop(herald);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !shard_threads::named().is_empty() {
        assert!(Instant::now() < deadline, "the engine's threads ended");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts an engine, checks where its shard threads may run against `pinned`, stops it.
fn check(shards: usize, pinning: Option<Pinning>, pinned: bool, process: &str) {
    let dir = tempfile::tempdir().unwrap();
    let herald = start(dir.path(), shards, pinning);
    assert_eq!(
        herald.pinned(),
        pinned,
        "{shards} shards, {pinning:?}: Herald::pinned"
    );
    let cpus = shard_thread_cpus();
    assert!(
        cpus.len() >= shards,
        "every shard thread is found: {cpus:?}"
    );
    if pinned {
        let mut distinct: Vec<&String> = cpus.iter().collect();
        distinct.sort();
        distinct.dedup();
        assert!(
            cpus.iter().all(|list| list.parse::<usize>().is_ok()),
            "{shards} shards, {pinning:?}: each shard thread runs on one CPU: {cpus:?} \
             (the process may use {process})"
        );
        assert_eq!(
            distinct.len(),
            shards,
            "{shards} shards, {pinning:?}: each on a CPU of its own: {cpus:?}"
        );
    } else {
        assert!(
            cpus.iter().all(|list| list == process),
            "{shards} shards, {pinning:?}: the shard threads may run wherever the process \
             may ({process}): {cpus:?}"
        );
    }
    stop(herald);
}

#[test]
fn shard_threads_are_pinned_only_when_a_cpu_is_left_over_unless_told() {
    let cpus = online_cpus();
    let process =
        allowed_list(&std::fs::read_to_string("/proc/self/status").expect("/proc/self/status"));
    assert!(cpus >= 1);

    // Shards on every CPU: floating by default, pinned when always asked.
    check(cpus, None, false, &process);
    check(cpus, Some(Pinning::Auto), false, &process);
    check(cpus, Some(Pinning::Always), true, &process);
    check(cpus, Some(Pinning::Never), false, &process);
    // More shards than CPUs: never pinned.
    check(cpus + 1, Some(Pinning::Always), false, &process);
    if cpus >= 2 {
        // A CPU left over: pinned by default, floating when told never.
        check(cpus - 1, None, true, &process);
        check(cpus - 1, Some(Pinning::Never), false, &process);
    }
}
