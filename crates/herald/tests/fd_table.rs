//! Starting an engine raises the soft limit on open files toward what its shards may
//! need, and grows the process's file descriptor table to it once, so that it does not
//! grow (waiting for an RCU grace period with every thread that opens a socket
//! meanwhile) while shards connect.
//!
//! One test in its own binary: the table is the process's, and any other test opening
//! descriptors would grow it too.

use std::time::Duration;

use herald::Herald;
use herald_sink::fd_table_size;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

#[test]
fn starting_the_engine_raises_the_open_files_limit_and_grows_the_table_in_advance() {
    // Start as a service under a common default would: a soft limit of 1,024.
    let limit = getrlimit(Resource::Nofile);
    let low = limit.maximum.unwrap_or(u64::MAX).min(1024);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: limit.maximum,
        },
    )
    .expect("lowering the soft limit is allowed");
    // The slots reserved besides the shards' connections (API connections, listeners,
    // segment files): the table holds at least these once the engine runs, where the
    // hard limit allows.
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let wanted = hard.min(4096) as usize;
    let before = fd_table_size().expect("FDSize in /proc/self/status");
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
    let after = fd_table_size().expect("FDSize in /proc/self/status");
    let soft = getrlimit(Resource::Nofile).current;
    herald.shutdown().unwrap();
    assert!(
        soft.is_none_or(|soft| soft >= wanted as u64),
        "the soft limit is {soft:?} after the start, not {wanted} or more"
    );
    assert_eq!(
        getrlimit(Resource::Nofile).maximum,
        limit.maximum,
        "the hard limit is left alone"
    );
    assert!(
        after >= wanted,
        "the table has {after} slots after the start ({before} before), not {wanted}"
    );
}
