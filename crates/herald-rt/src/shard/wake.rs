//! Waking a parked shard from foreign threads without polling.
//!
//! A shard sleeps inside glommio's reactor (io_uring). Foreign threads — callers
//! handing in work, and the journal's sync thread reporting durability — wake it by
//! writing one byte into a Unix socket pair whose other end the shard awaits as a
//! glommio stream. An atomic flag coalesces wake-ups: only the first notifier after
//! the shard announced it is going to sleep pays for the syscall; while the shard is
//! awake, notifying is a single atomic swap.
//!
//! Protocol (the shard is the only one to clear `NOTIFIED`):
//! * shard, before parking: set `SLEEPING` by compare-and-swap, unless `NOTIFIED` is
//!   set: then there is fresh work and the shard must not park.
//! * shard, after waking for any reason: clear `SLEEPING` and `NOTIFIED`, then look at
//!   every input.
//! * notifier, after publishing its work: clear `SLEEPING` and set `NOTIFIED`; if
//!   `SLEEPING` was set, write a byte.
//!
//! A byte written while the shard already woke on a timer stays in the socket and
//! causes one harmless spurious wake-up later; no wake-up is ever lost because the
//! shard re-checks all inputs after every wake-up.
//!
//! Promised wake-ups. The journal's sync thread sets `PROMISED` right before a sync
//! starts ([`Wake::promise`]) and notifies when it ends, which clears it. Work that
//! is answered only once its records are durable cannot join a sync under way, so its
//! notifier ([`Wake::notify_or_rely_on_promise`]) writes no byte while a wake-up is
//! promised: the shard takes that work when the sync ends, in time for the next one,
//! and is woken once per sync instead of once per request. All of it is one atomic
//! value, so a notifier that saw the promise made its change before the sync thread
//! clears the promise, and the shard looks at its work after that.

use std::io::{self, Write};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// The shard is parked, or about to be: a notifier must write a byte.
const SLEEPING: u8 = 1;
/// Work arrived since the shard last looked: it must not park.
const NOTIFIED: u8 = 2;
/// The sync thread will notify once the sync it is starting ends.
const PROMISED: u8 = 4;

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
        state: AtomicU8::new(0),
        writer,
    });
    Ok((wake.clone(), WakeReceiver { wake, reader }))
}

impl Wake {
    /// Tells the shard there is new work. Call after the work is visible to it.
    pub(crate) fn notify(&self) {
        self.notify_clearing(0);
    }

    /// Like [`notify`](Self::notify), for work whose answer waits for the journal:
    /// while a wake-up is promised it only marks the work as handed over (see the
    /// module's comment) and leaves waking the shard to the sync thread.
    pub(crate) fn notify_or_rely_on_promise(&self) {
        let previous = self.update(|state| {
            if state & PROMISED != 0 {
                // An unchanged value, but written: the sync thread's notification
                // comes after it, and with it this caller's work.
                state
            } else {
                (state & !SLEEPING) | NOTIFIED
            }
        });
        if previous & PROMISED == 0 && previous & SLEEPING != 0 {
            self.write_byte();
        }
    }

    /// Sync thread side: a sync starts, and [`end_promise`](Self::end_promise) follows
    /// when it ends.
    pub(crate) fn promise(&self) {
        self.state.fetch_or(PROMISED, Ordering::AcqRel);
    }

    /// Sync thread side: the sync ended; notifies the shard.
    pub(crate) fn end_promise(&self) {
        self.notify_clearing(PROMISED);
    }

    fn notify_clearing(&self, also: u8) {
        let previous = self.update(|state| (state & !(SLEEPING | also)) | NOTIFIED);
        if previous & SLEEPING != 0 {
            self.write_byte();
        }
    }

    fn update(&self, f: impl Fn(u8) -> u8) -> u8 {
        match self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| Some(f(state)))
        {
            Ok(previous) | Err(previous) => previous,
        }
    }

    fn write_byte(&self) {
        // WouldBlock: the buffer is full of unread wake-ups, the shard will run.
        // Other errors: the shard end is gone, so there is nobody to wake.
        let _ = (&self.writer).write(&[1]);
    }

    /// Shard side: about to park. Returns `false` if a notification arrived since the
    /// last [`awake`](Self::awake), in which case the shard must not park.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & NOTIFIED == 0).then_some(state | SLEEPING)
            })
            .is_ok()
    }

    /// Shard side: awake again; every input must be looked at after this.
    pub(crate) fn awake(&self) {
        self.state
            .fetch_and(!(SLEEPING | NOTIFIED), Ordering::AcqRel);
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

    /// Bytes waiting in the socket, read without blocking.
    fn bytes_waiting(receiver: &WakeReceiver) -> usize {
        receiver.reader.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 128];
        match (&receiver.reader).read_nonblocking(&mut buf) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn a_promised_wake_up_stands_in_for_the_bytes_of_work_that_waits_for_the_journal() {
        let (wake, receiver) = wake_pair().unwrap();
        // Without a promise such work wakes a sleeping shard like any other.
        assert!(wake.prepare_sleep());
        wake.notify_or_rely_on_promise();
        assert_eq!(bytes_waiting(&receiver), 1);
        wake.awake();

        // A sync starts while the shard sleeps: the work writes no byte, and the shard
        // sleeps on; the sync's end writes one.
        assert!(wake.prepare_sleep());
        wake.promise();
        for _ in 0..5 {
            wake.notify_or_rely_on_promise();
        }
        assert_eq!(bytes_waiting(&receiver), 0);
        wake.end_promise();
        assert_eq!(bytes_waiting(&receiver), 1);
        wake.awake();

        // Work handed over while the shard is awake does not keep it from parking; the
        // end of the sync then wakes it.
        wake.promise();
        wake.notify_or_rely_on_promise();
        assert!(wake.prepare_sleep(), "the sync's end will wake it");
        wake.end_promise();
        assert_eq!(bytes_waiting(&receiver), 1);
        wake.awake();

        // Other work still wakes the shard at once, and leaves the promise standing.
        wake.promise();
        assert!(wake.prepare_sleep());
        wake.notify();
        assert_eq!(bytes_waiting(&receiver), 1);
        wake.awake();
        assert!(wake.prepare_sleep());
        wake.notify_or_rely_on_promise();
        assert_eq!(bytes_waiting(&receiver), 0, "still promised");
        wake.end_promise();
        assert_eq!(bytes_waiting(&receiver), 1);
        wake.awake();

        // Once the promise is kept, the work wakes the shard itself again.
        assert!(wake.prepare_sleep());
        wake.notify_or_rely_on_promise();
        assert_eq!(bytes_waiting(&receiver), 1);
    }

    /// A shard loop on plain threads: it counts the work handed over, and parks on the
    /// socket with a read timeout far beyond any wake-up. Notifiers hand over work,
    /// most of it relying on promises that a sync thread keeps on and off; a lost
    /// wake-up shows as a park that times out.
    #[test]
    fn no_wake_up_is_lost_between_notifiers_and_promises() {
        use std::io::Read;
        use std::sync::atomic::{AtomicBool, AtomicU64};
        const NOTIFIERS: u64 = 3;
        const ITEMS: u64 = 20_000;
        let (wake, receiver) = wake_pair().unwrap();
        let handed = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let shard = {
            let (wake, handed) = (wake.clone(), handed.clone());
            std::thread::spawn(move || {
                let reader = receiver.reader;
                reader
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut seen = 0;
                let mut buf = [0u8; 64];
                while seen < NOTIFIERS * ITEMS {
                    wake.awake();
                    seen = handed.load(Ordering::SeqCst);
                    if seen == NOTIFIERS * ITEMS || !wake.prepare_sleep() {
                        continue;
                    }
                    if let Err(error) = (&reader).read(&mut buf) {
                        return Err(format!("parked with {seen} items seen: {error}"));
                    }
                }
                Ok(seen)
            })
        };
        let syncer = {
            let (wake, done) = (wake.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    wake.promise();
                    std::thread::yield_now();
                    wake.end_promise();
                }
            })
        };
        let notifiers: Vec<_> = (0..NOTIFIERS)
            .map(|n| {
                let (wake, handed) = (wake.clone(), handed.clone());
                std::thread::spawn(move || {
                    for i in 0..ITEMS {
                        handed.fetch_add(1, Ordering::SeqCst);
                        // The first notifier mixes in work that wakes the shard at
                        // once; the others only rely on promises.
                        if n > 0 || i % 2 == 0 {
                            wake.notify_or_rely_on_promise();
                        } else {
                            wake.notify();
                        }
                    }
                })
            })
            .collect();
        for notifier in notifiers {
            notifier.join().unwrap();
        }
        let seen = shard.join().unwrap();
        done.store(true, Ordering::SeqCst);
        syncer.join().unwrap();
        assert_eq!(seen, Ok(NOTIFIERS * ITEMS));
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
