//! Waking a parked shard from foreign threads without polling.
//!
//! A shard sleeps inside glommio's reactor (io_uring). Foreign threads — callers
//! handing in work, and the journal's sync thread reporting durability — wake it by
//! adding to an eventfd that a task of the shard reads through glommio (so the read
//! completes on the shard's ring and a sleeping shard wakes for it). An atomic flag
//! coalesces wake-ups: only the first notifier after the shard announced it is going to
//! sleep pays for the system call; while the shard is awake, notifying is a single
//! atomic swap.
//!
//! An eventfd rather than a socket pair: a wake-up is an 8-byte counter addition for
//! the notifier (no socket buffer to allocate), and the read that takes it completes
//! with its value in the ring, where a socket's reader took a `recv` of its own after
//! each readiness and armed a new poll.
//!
//! Protocol (the shard is the only one to move the flag away from `NOTIFIED`):
//! * shard, before parking: `AWAKE → SLEEPING` by compare-and-swap; if that fails the
//!   flag was `NOTIFIED`, so there is fresh work and the shard must not park.
//! * shard, after waking for any reason: swap to `AWAKE`, then look at every input.
//! * notifier, after publishing its work: swap to `NOTIFIED`; if the previous value
//!   was `SLEEPING`, add 1 to the eventfd.
//!
//! A wake-up added while the shard already woke on a timer stays in the counter and
//! causes one harmless spurious wake-up later; no wake-up is ever lost because the
//! shard re-checks all inputs after every wake-up.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

/// The foreign-thread side: cheap to share, safe to call from any thread.
pub(crate) struct Wake {
    state: AtomicU8,
    /// Blocking, as glommio's read of it must wait rather than fail with `EAGAIN`; a
    /// write of 1 blocks only when the counter would pass `u64::MAX - 1`, which one
    /// write per parking of the shard between two reads cannot reach.
    eventfd: OwnedFd,
}

/// The shard side, before it is bound to the shard's executor.
pub(crate) struct WakeReceiver {
    wake: Arc<Wake>,
}

/// A connected wake pair.
pub(crate) fn wake_pair() -> io::Result<(Arc<Wake>, WakeReceiver)> {
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    let wake = Arc::new(Wake {
        state: AtomicU8::new(AWAKE),
        eventfd,
    });
    Ok((wake.clone(), WakeReceiver { wake }))
}

impl Wake {
    /// Tells the shard there is new work. Call after the work is visible to it.
    pub(crate) fn notify(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == SLEEPING {
            // An error is not expected of an eventfd write of 1 (see `eventfd`); the
            // shard's idle timer bounds how long it could sleep through one.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }

    /// Shard side: about to park. Returns `false` if a notification arrived since the
    /// last [`awake`](Self::awake), in which case the shard must not park.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.state
            .compare_exchange(AWAKE, SLEEPING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Shard side: awake again; every input must be looked at after this.
    pub(crate) fn awake(&self) {
        self.state.store(AWAKE, Ordering::Release);
    }
}

impl WakeReceiver {
    /// The shared flag.
    pub(crate) fn wake(&self) -> &Arc<Wake> {
        &self.wake
    }

    /// The eventfd as a file of the current glommio executor, to read wake-ups from
    /// (8 bytes at offset 0: the count added since the last read).
    pub(crate) fn into_glommio(self) -> io::Result<glommio::io::BufferedFile> {
        let reader = self.wake.eventfd.as_fd().try_clone_to_owned()?;
        Ok(crate::ring::glommio_file(reader))
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for WakeReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakeReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The eventfd's count, without waiting: 0 when nothing was added.
    fn take_count(wake: &Wake) -> u64 {
        // A duplicate shares the file status flags: the eventfd is non-blocking from
        // here on, which only this test's reads see.
        let fd = wake.eventfd.as_fd().try_clone_to_owned().unwrap();
        rustix::io::ioctl_fionbio(&fd, true).unwrap();
        let mut buf = [0u8; 8];
        match rustix::io::read(&fd, &mut buf) {
            Ok(8) => u64::from_ne_bytes(buf),
            Ok(n) => panic!("an eventfd read of {n} bytes"),
            Err(rustix::io::Errno::AGAIN) => 0,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn notify_while_awake_prevents_sleep_without_a_write() {
        let (wake, _receiver) = wake_pair().unwrap();
        wake.notify();
        assert!(
            !wake.prepare_sleep(),
            "a pending notification must keep it awake"
        );
        wake.awake();
        assert!(wake.prepare_sleep());
        // Nothing was added for the notification that arrived while awake.
        assert_eq!(take_count(&wake), 0);
    }

    #[test]
    fn many_notifies_while_sleeping_add_one() {
        let (wake, _receiver) = wake_pair().unwrap();
        assert!(wake.prepare_sleep());
        for _ in 0..100 {
            wake.notify();
        }
        assert_eq!(take_count(&wake), 1);
        // Awake and parked again: the next notification adds again.
        wake.awake();
        assert!(wake.prepare_sleep());
        wake.notify();
        assert_eq!(take_count(&wake), 1);
    }

    #[test]
    fn foreign_thread_wakes_a_parked_glommio_executor() {
        let (wake, receiver) = wake_pair().unwrap();
        let shard_wake = receiver.wake().clone();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let _executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(move || async move {
                let file = receiver.into_glommio().unwrap();
                let mut woken = 0;
                while woken < 3 {
                    shard_wake.awake();
                    if !shard_wake.prepare_sleep() {
                        woken += 1;
                        continue;
                    }
                    parked_tx.send(()).unwrap();
                    let read = file.read_at(0, 8).await.unwrap();
                    assert_eq!(read.len(), 8);
                    let count = u64::from_ne_bytes(read[..8].try_into().unwrap());
                    assert!(count >= 1, "a wake-up reads a count of at least 1");
                    woken += 1;
                }
                done_tx.send(woken).unwrap();
            })
            .unwrap();
        for _ in 0..3 {
            parked_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the executor parks again after each wake-up");
            std::thread::sleep(Duration::from_millis(5));
            wake.notify();
        }
        // A lost wake-up leaves the executor parked for good: bounded here.
        let woken = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("every wake-up reaches the parked executor");
        assert_eq!(woken, 3);
    }
}
