//! Waking a parked shard from foreign threads without polling.
//!
//! A shard sleeps inside glommio's reactor (io_uring). Foreign threads — callers
//! handing in work, and the journal's sync thread reporting durability — wake it by
//! writing one byte into a Unix socket pair whose other end the shard awaits as a
//! glommio stream. An atomic flag coalesces wake-ups: only the first notifier after
//! the shard announced it is going to sleep pays for the syscall; while the shard is
//! awake, notifying is a single atomic swap.
//!
//! Protocol (the shard is the only one to move the flag away from `NOTIFIED`):
//! * shard, before parking: `AWAKE → SLEEPING` by compare-and-swap; if that fails the
//!   flag was `NOTIFIED`, so there is fresh work and the shard must not park.
//! * shard, after waking for any reason: swap to `AWAKE`, then look at every input.
//! * notifier, after publishing its work: swap to `NOTIFIED`; if the previous value
//!   was `SLEEPING`, write a byte.
//!
//! A byte written while the shard already woke on a timer stays in the socket and
//! causes one harmless spurious wake-up later; no wake-up is ever lost because the
//! shard re-checks all inputs after every wake-up.

use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const NOTIFIED: u8 = 2;

/// The foreign-thread side: cheap to share, safe to call from any thread.
pub(crate) struct Wake {
    state: AtomicU8,
    writer: StdUnixStream,
}

/// The shard side, before it is bound to the shard's executor.
pub(crate) struct WakeReceiver {
    wake: Arc<Wake>,
    reader: StdUnixStream,
}

/// A connected wake pair.
pub(crate) fn wake_pair() -> io::Result<(Arc<Wake>, WakeReceiver)> {
    let (writer, reader) = StdUnixStream::pair()?;
    // A full socket buffer means plenty of wake-ups are already pending: a notifier must
    // never block on it.
    writer.set_nonblocking(true)?;
    let wake = Arc::new(Wake {
        state: AtomicU8::new(AWAKE),
        writer,
    });
    Ok((wake.clone(), WakeReceiver { wake, reader }))
}

impl Wake {
    /// Tells the shard there is new work. Call after the work is visible to it.
    pub(crate) fn notify(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == SLEEPING {
            // WouldBlock: the buffer is full of unread wake-ups, the shard will run.
            // Other errors: the shard end is gone, so there is nobody to wake.
            let _ = (&self.writer).write(&[1]);
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

    /// Binds the reading end to the current glommio executor.
    pub(crate) fn into_glommio(self) -> io::Result<glommio::net::UnixStream> {
        use std::os::fd::{FromRawFd, IntoRawFd};
        self.reader.set_nonblocking(true)?;
        let fd = self.reader.into_raw_fd();
        // SAFETY: `fd` comes from `into_raw_fd` on a connected Unix stream socket we own,
        // so it is open, of the right type, and nothing else will close it; ownership
        // passes to the glommio stream, which closes it on drop.
        #[allow(unsafe_code)]
        let stream = unsafe { glommio::net::UnixStream::from_raw_fd(fd) };
        Ok(stream)
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
    use futures_lite::AsyncReadExt;
    use std::time::Duration;

    #[test]
    fn notify_while_awake_prevents_sleep_without_a_byte() {
        let (wake, receiver) = wake_pair().unwrap();
        wake.notify();
        assert!(
            !wake.prepare_sleep(),
            "a pending notification must keep it awake"
        );
        wake.awake();
        assert!(wake.prepare_sleep());
        // No byte was written for the notification that arrived while awake.
        receiver.reader.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 8];
        let error = (&receiver.reader).read_nonblocking(&mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    }

    trait ReadNonblocking {
        fn read_nonblocking(self, buf: &mut [u8]) -> io::Result<usize>;
    }
    impl ReadNonblocking for &StdUnixStream {
        fn read_nonblocking(self, buf: &mut [u8]) -> io::Result<usize> {
            use std::io::Read;
            let mut stream = self;
            stream.read(buf)
        }
    }

    #[test]
    fn many_notifies_while_sleeping_write_one_byte() {
        let (wake, receiver) = wake_pair().unwrap();
        assert!(wake.prepare_sleep());
        for _ in 0..100 {
            wake.notify();
        }
        receiver.reader.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        assert_eq!((&receiver.reader).read_nonblocking(&mut buf).unwrap(), 1);
    }

    #[test]
    fn foreign_thread_wakes_a_parked_glommio_executor() {
        let (wake, receiver) = wake_pair().unwrap();
        let shard_wake = receiver.wake().clone();
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(move || async move {
                let mut stream = receiver.into_glommio().unwrap();
                let mut woken = 0;
                while woken < 3 {
                    shard_wake.awake();
                    if !shard_wake.prepare_sleep() {
                        woken += 1;
                        continue;
                    }
                    let mut buf = [0u8; 16];
                    let read = stream.read(&mut buf).await.unwrap();
                    assert!(read > 0);
                    woken += 1;
                }
                woken
            })
            .unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            wake.notify();
        }
        assert_eq!(executor.join().unwrap(), 3);
    }
}
