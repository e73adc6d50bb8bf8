//! The process's file descriptor table, grown once at start instead of while shards run.
//!
//! Linux keeps a process's descriptors in one table that starts with 64 slots and
//! doubles when a new descriptor does not fit. When the process has more than one
//! thread, growing it waits for an RCU grace period (`synchronize_rcu` in
//! `expand_fdtable`), and every thread that opens a descriptor meanwhile (a shard
//! connecting a socket, a listener accepting one) waits with it. On this kind of
//! machine a grace period took 7–12 ms: in an open loop at 40,000 events/s the
//! first quarter-second of a run stopped delivering for 4.5, 9.8 and 9.1 ms while the
//! table grew 64 → 1,024 slots for the first few hundred connections (per-interval p99
//! 28–37 ms there, ~3 ms after), and `perf` showed shards and the sink in
//! uninterruptible sleep in `expand_files` < `alloc_fd` < `socket`.
//!
//! Before that, the soft `RLIMIT_NOFILE` is raised (never lowered, never past the hard
//! limit) to fit the same count: a soft limit of 1,024 is common and below what the
//! shards' pools may open.
//!
//! A table never shrinks, so taking a descriptor at the highest slot the engine may
//! need and closing it again grows the table once, at start, to its final size: later
//! sockets find their slot free. The cost is the table itself, 8 bytes per slot plus
//! two bitmaps (64 KiB for the default's 8,192 slots).

use std::fs::File;
use std::io;
use std::path::Path;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Slots reserved besides the shards' outbound connections: the management API's
/// accepted connections (its default `connections_max` is 4,096), listeners, journal
/// segment files, each shard's eventfds and rings, and what an embedding process holds.
pub(crate) const FDS_BESIDE_CONNECTIONS: usize = 4096;

/// The largest table grown in advance: 512 KiB of slots. A process allowed more
/// descriptors still gets them; the table then grows past this as it did before.
pub(crate) const FD_TABLE_PRESIZE_MAX: usize = 65_536;

/// Readies the process for `shards` shards of up to `connections_per_shard` connections
/// each: raises the soft `RLIMIT_NOFILE` to the slots they may need, then grows the
/// descriptor table to as many as the limit allows. Neither is required to run, so a
/// failure is a warning.
pub(crate) fn prepare(shards: usize, connections_per_shard: usize, dir: &Path) {
    let needed = fd_slots_wanted(shards, connections_per_shard, None);
    if let Err(error) = raise_soft_nofile_limit(needed as u64) {
        tracing::warn!(
            needed,
            %error,
            "could not raise the soft limit on open files; connections past it will fail"
        );
    }
    let slots = fd_slots_wanted(shards, connections_per_shard, soft_nofile_limit());
    if let Err(error) = presize_fd_table(slots, dir) {
        tracing::warn!(
            slots,
            %error,
            "could not grow the file descriptor table in advance; it grows as sockets open"
        );
    }
}

/// Slots the engine asks for: every shard's outbound connections at their cap, and
/// [`FDS_BESIDE_CONNECTIONS`], within [`FD_TABLE_PRESIZE_MAX`] and the process's soft
/// `RLIMIT_NOFILE` (`None`: unlimited).
pub(crate) fn fd_slots_wanted(
    shards: usize,
    connections_per_shard: usize,
    soft_limit: Option<u64>,
) -> usize {
    let wanted = shards
        .saturating_mul(connections_per_shard)
        .saturating_add(FDS_BESIDE_CONNECTIONS)
        .min(FD_TABLE_PRESIZE_MAX);
    match soft_limit {
        Some(limit) => wanted.min(usize::try_from(limit).unwrap_or(usize::MAX)),
        None => wanted,
    }
}

/// Grows the table so that descriptors `0..slots` fit without growing it again, by
/// duplicating a descriptor of `dir` (any open file would do) to the slot `slots - 1`
/// or above and closing it. Returns the slot the duplicate took (`None` when `slots` is
/// 0). It changes no descriptor the process holds; an error only means the table grows
/// on demand, as without it.
pub(crate) fn presize_fd_table(slots: usize, dir: &Path) -> io::Result<Option<usize>> {
    let Some(highest) = slots.checked_sub(1) else {
        return Ok(None);
    };
    let probe = File::open(dir)?;
    let highest = rustix::fd::RawFd::try_from(highest).map_err(|_| io::ErrorKind::InvalidInput)?;
    let duplicate = rustix::io::fcntl_dupfd_cloexec(&probe, highest)?;
    let slot = std::os::fd::AsRawFd::as_raw_fd(&duplicate) as usize;
    drop(duplicate);
    Ok(Some(slot))
}

/// The process's soft `RLIMIT_NOFILE` (`None`: unlimited).
pub(crate) fn soft_nofile_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

/// Raises the soft `RLIMIT_NOFILE` to `wanted` descriptors, or to the hard limit if that
/// is lower; never lowers it. Many systems start processes at a soft limit of 1,024
/// (systemd's default for services, with a hard limit of 524,288), below what the
/// shards' pools may open (1,024 connections each by default) beside the API's: past it
/// a connect fails with `EMFILE`, a transport error that turns deliveries into retries.
/// Returns the soft limit in force afterwards (`None`: unlimited).
pub(crate) fn raise_soft_nofile_limit(wanted: u64) -> io::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return Ok(None);
    };
    let raised = limit.maximum.map_or(wanted, |hard| hard.min(wanted));
    if raised <= current {
        return Ok(Some(current));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        },
    )?;
    Ok(Some(raised))
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sink::fd_table_size;

    #[test]
    fn the_wanted_slots_cover_every_connection_within_the_caps() {
        let cases = [
            // (shards, connections per shard, soft limit, slots)
            (2, 1024, Some(20_000), 2 * 1024 + FDS_BESIDE_CONNECTIONS),
            (1, 0, None, FDS_BESIDE_CONNECTIONS),
            (2, 1024, Some(1024), 1024),
            (64, 1024, None, FD_TABLE_PRESIZE_MAX),
            (64, 1024, Some(1_000_000), FD_TABLE_PRESIZE_MAX),
            (usize::MAX, usize::MAX, Some(u64::MAX), FD_TABLE_PRESIZE_MAX),
            (2, 1024, Some(0), 0),
        ];
        for (shards, per_shard, limit, slots) in cases {
            assert_eq!(
                fd_slots_wanted(shards, per_shard, limit),
                slots,
                "{shards} shards × {per_shard}, limit {limit:?}"
            );
        }
    }

    #[test]
    fn the_soft_limit_is_raised_toward_the_hard_one_and_never_lowered() {
        let before = getrlimit(Resource::Nofile);
        let Some(current) = before.current else {
            return; // unlimited: nothing to raise
        };
        assert_eq!(raise_soft_nofile_limit(0).unwrap(), Some(current));
        assert_eq!(getrlimit(Resource::Nofile), before, "never lowered");
        let hard = before.maximum.unwrap_or(u64::MAX);
        let wanted = current.saturating_add(1);
        let after = raise_soft_nofile_limit(wanted).unwrap();
        assert_eq!(after, Some(wanted.min(hard)));
        assert_eq!(getrlimit(Resource::Nofile).current, after);
        assert_eq!(getrlimit(Resource::Nofile).maximum, before.maximum);
    }

    #[test]
    fn presizing_grows_the_table_at_once_and_closes_what_it_took() {
        let dir = std::env::temp_dir();
        // Within the limit of any machine the tests run on (at least 1,024 descriptors).
        let slots = 1000.min(soft_nofile_limit().unwrap_or(u64::MAX) as usize);
        let slot = presize_fd_table(slots, &dir).unwrap().unwrap();
        assert!(slot >= slots - 1, "took slot {slot} for {slots} slots");
        assert!(
            fd_table_size().unwrap() >= slots,
            "FDSize {:?} after presizing to {slots}",
            fd_table_size()
        );
        assert!(
            !std::path::Path::new(&format!("/proc/self/fd/{slot}")).exists(),
            "the duplicate at {slot} is closed"
        );
        assert_eq!(presize_fd_table(0, &dir).unwrap(), None);
    }
}
