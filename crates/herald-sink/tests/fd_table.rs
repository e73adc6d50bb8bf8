//! Starting a sink grows the process's file descriptor table once, to fit the
//! connections it may hold, so that the table does not grow (each time waiting for an
//! RCU grace period, with every thread opening a descriptor meanwhile) while the first
//! connections arrive.
//!
//! One test in its own binary: the table is the process's, and any other test opening
//! descriptors would grow it too.

use herald_sink::{fd_table_size, Sink};
use rustix::process::{getrlimit, Resource};

#[test]
fn starting_a_sink_grows_the_descriptor_table_to_its_connections() {
    let connections = 3000;
    let before = fd_table_size().expect("FDSize in /proc/self/status");
    assert!(
        before < connections,
        "a fresh test process has a small table ({before} slots), so the test can tell"
    );
    let sink = Sink::builder()
        .connections_max(connections)
        .start()
        .expect("the sink starts");
    let after = fd_table_size().expect("FDSize in /proc/self/status");
    // The sink raises the soft limit to fit (up to the hard limit) before it grows the
    // table within it.
    let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let wanted = connections.min(usize::try_from(soft).unwrap_or(usize::MAX));
    drop(sink);
    assert!(
        after >= wanted,
        "the table has {after} slots after the start ({before} before), not {wanted} or more"
    );
}
