//! What the sink asks of the operating system for many connections: descriptors (the
//! usual soft limit, 1024 on many systems, is far below what an event-driven sink holds)
//! and a deep accept queue.

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
