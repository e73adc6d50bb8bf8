//! Starting an engine grows the process's file descriptor table to what its shards may
//! need, once, so that it does not grow (waiting for an RCU grace period with every
//! thread that opens a socket meanwhile) while shards connect.
//!
//! One test in its own binary: the table is the process's, and any other test opening
//! descriptors would grow it too.

use std::time::Duration;

use herald::Herald;

/// The table's size as the kernel reports it (`FDSize` in `/proc/self/status`).
fn fd_table_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .expect("status has FDSize")
        .trim()
        .parse()
        .expect("FDSize is a number")
}

/// The soft `RLIMIT_NOFILE`, from `/proc/self/limits` (`None`: unlimited).
fn soft_nofile_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("limits has Max open files");
    let soft = line["Max open files".len()..]
        .split_whitespace()
        .next()
        .expect("a soft limit");
    soft.parse().ok()
}

#[test]
fn starting_the_engine_grows_the_descriptor_table_in_advance() {
    // The slots reserved besides the shards' connections (API connections, listeners,
    // segment files): the table holds at least these once the engine runs.
    let wanted = soft_nofile_limit().unwrap_or(usize::MAX).min(4096);
    let before = fd_table_size();
    assert!(
        before < wanted,
        "a fresh test process has a small table ({before} slots), so the test can tell"
    );
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::builder()
        .data_dir(dir.path())
        .shards(2)
        .shutdown_grace(Duration::from_secs(2))
        .start()
        .expect("the engine starts");
    let after = fd_table_size();
    herald.shutdown().unwrap();
    assert!(
        after >= wanted,
        "the table has {after} slots after the start ({before} before), not {wanted}"
    );
}
