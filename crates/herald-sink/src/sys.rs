//! What the sink asks of the operating system for many connections: descriptors (the
//! usual soft limit, 1024 on many systems, is far below what an event-driven sink holds),
//! a descriptor table grown once at start, and a deep accept queue.

use std::net::TcpListener;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Accept queue asked for (the kernel caps it at `net.core.somaxconn`). std binds with
/// 128: a client opening connections in a burst overflows that whenever the loop is
/// busy for a moment, and each overflow costs the client a one-second SYN retransmit.
const LISTEN_BACKLOG: i32 = 4096;

/// Deepens `listener`'s accept queue (listening again on a listening socket only
/// changes its backlog). Best effort: the default queue still works.
pub(crate) fn deepen_backlog(listener: &TcpListener) {
    let _ = rustix::net::listen(listener, LISTEN_BACKLOG);
}

/// Descriptors kept beyond `connections_max`: the listener, epoll instances and wakers,
/// the CA file, and whatever else the embedding process has open.
const DESCRIPTORS_RESERVED: u64 = 256;

/// Raises the soft `RLIMIT_NOFILE` (up to the hard limit) when it is below
/// `connections_max` plus a reserve; never lowers it. Best effort: if the limit cannot
/// be raised, connections beyond it are refused by the kernel at accept and retried.
pub(crate) fn fit_descriptors(connections_max: usize) {
    let wanted = connections_max as u64 + DESCRIPTORS_RESERVED;
    let limit = getrlimit(Resource::Nofile);
    let Some(current) = limit.current else {
        return; // unlimited
    };
    if current >= wanted {
        return;
    }
    // The hard limit may be "unlimited" only nominally (the kernel caps descriptors at
    // nr_open): ask for what is needed rather than for infinity.
    let raised = limit
        .maximum
        .map_or(wanted, |hard| hard.min(wanted.max(current)));
    let _ = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        },
    );
}

/// The largest descriptor table grown in advance (512 KiB of slots): a sink allowed
/// more connections still gets them, its table growing past this as they come.
const PRESIZE_SLOTS_MAX: u64 = 65_536;

/// Grows the process's descriptor table at start to fit `connections_max` plus the
/// reserve, within the soft `RLIMIT_NOFILE` and [`PRESIZE_SLOTS_MAX`]; returns the
/// slots asked for (0 when nothing was done).
///
/// Linux keeps a process's descriptors in one table that starts small and doubles when
/// a new descriptor does not fit; in a process with more than one thread each growth
/// waits for an RCU grace period (7–12 ms on a 2-core VM), and every thread opening a
/// descriptor meanwhile waits with it. A sink accepting its first few hundred
/// connections would stop answering for that long, several times, at the start of a
/// measurement. A table never shrinks, so duplicating a descriptor to the highest slot
/// needed and closing it grows the table once, here. The engine does the same for its
/// shards (`herald-rt`'s `shard::fds`); the sink has its own, since it does not depend
/// on the engine. Best effort: on failure the table grows on demand as before.
pub(crate) fn presize_descriptor_table(connections_max: usize) -> u64 {
    let wanted = (connections_max as u64 + DESCRIPTORS_RESERVED).min(PRESIZE_SLOTS_MAX);
    let slots = getrlimit(Resource::Nofile)
        .current
        .map_or(wanted, |soft| soft.min(wanted));
    let Some(highest) = slots
        .checked_sub(1)
        .and_then(|h| rustix::fd::RawFd::try_from(h).ok())
    else {
        return 0;
    };
    let Ok(probe) = std::fs::File::open("/") else {
        return 0;
    };
    match rustix::io::fcntl_dupfd_cloexec(&probe, highest) {
        Ok(duplicate) => {
            drop(duplicate);
            slots
        }
        Err(_) => 0,
    }
}

/// Slots in the calling process's descriptor table as the kernel reports them
/// (`FDSize` in `/proc/self/status`); `None` where that cannot be read. For tests of
/// the presizing, here and in the engine.
pub fn fd_table_size() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .and_then(|size| size.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_of_a_listening_socket_can_be_deepened() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        deepen_backlog(&listener);
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(listener.accept().is_ok(), "still listening");
    }

    #[test]
    fn never_lowers_the_soft_limit() {
        let before = getrlimit(Resource::Nofile);
        fit_descriptors(0);
        let after = getrlimit(Resource::Nofile);
        assert_eq!(before, after, "already enough: unchanged");
        fit_descriptors(crate::CONNECTIONS_MAX_LIMIT);
        let raised = getrlimit(Resource::Nofile);
        assert!(raised.current >= before.current || raised.current.is_none());
        assert_eq!(raised.maximum, before.maximum);
    }
}
