//! The live threads of this process named after a shard (`herald-shard-…`), for tests
//! that read a property of the shard threads from `/proc`: each shard's executor thread,
//! and the helper threads glommio starts from it before the shard runs (they inherit its
//! name and settings, and do no shard work).

use std::path::PathBuf;
use std::time::Duration;

/// Each live thread named after a shard, with what `read` takes from its `/proc` task
/// directory (`None`: it ended meanwhile).
///
/// A thread a shard starts takes the shard's name until it names itself, a moment after
/// it starts (the journal's threads do, `herald-journal-…`); read at that moment it would
/// count as a shard thread. So the threads are listed twice, 200 ms apart, and only those
/// named after a shard both times count.
pub fn read<T>(read: impl Fn(&std::path::Path) -> Option<T>) -> Vec<T> {
    let first = named();
    std::thread::sleep(Duration::from_millis(200));
    named()
        .into_iter()
        .filter(|task| first.contains(task))
        .filter_map(|task| read(&task))
        .collect()
}

/// The `/proc` task directories of live threads named after a shard, listed once.
pub fn named() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task lists threads") {
        let task = entry.expect("a thread entry").path();
        // A thread that ended between the listing and the read has no files left.
        if std::fs::read_to_string(task.join("comm")).is_ok_and(|n| n.starts_with("herald-shard-"))
        {
            found.push(task);
        }
    }
    found
}
