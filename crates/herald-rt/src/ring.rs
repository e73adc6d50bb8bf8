//! Waiting for responses on a ring of the shard's own.
//!
//! glommio waits for a readable socket with a one-shot poll on its own io_uring. That
//! ring runs completions the default way: a poll that completes while the shard thread
//! is running on another core (a receiver answering, on loopback or from the network
//! card's interrupt) interrupts that core with an IPI so the shard posts the completion
//! at once. With a response every few microseconds that was ~11 % of a shard's time in
//! a closed loop, and a VM exit on both cores each time.
//!
//! The client's connections therefore wait on a second ring, set up with
//! `IORING_SETUP_COOP_TASKRUN`: its completions run the next time the shard enters the
//! kernel anyway (it sends and receives all the time) or wakes it if it sleeps, never
//! interrupting it. Each connection arms one multishot poll when it is opened, so a
//! response costs no submission at all, only a completion. The ring signals an eventfd
//! when it posts completions; a task of the shard reads that eventfd through glommio,
//! so a sleeping shard wakes for it, then takes every completion and wakes the readers.
//! Reads and writes themselves stay plain non-blocking system calls, and a read is made
//! only after the ring reported the socket readable (since its last read came back short
//! or empty): a response is seldom there the moment its request is written, and reading
//! to find that out cost ~2.4 reads that found nothing per response (`recvfrom` per
//! delivery 3.4 → 1.5 in a closed loop; the rest is the pool's liveness peeks). A report
//! of the peer's close or an error stays, so the bytes before a close and the close
//! itself are both read.
//!
//! When the kernel has no such ring (before 5.19) or it cannot be set up, connections
//! wait through glommio as before ([`SocketRing::new`] gives `None`).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, types, IoUring};

/// Entries of the ring's submission queue (its completion queue has twice as many).
/// Submissions are rare (a connection opened or closed); completions are one per
/// readiness event of a connection, taken in batches, and an overflow is survived (the
/// kernel keeps the excess, and a poll it ended is armed again when next needed).
const RING_ENTRIES: u32 = 512;

/// The `user_data` of cancellations, whose completions carry nothing to act on (the
/// cancelled poll's own last completion comes under its slot's old generation).
const CANCEL_USER_DATA: u64 = u64::MAX;

/// One registered socket.
struct Slot {
    /// Bumped when the slot is released, so completions for its previous socket (a
    /// cancellation racing a last event) are recognised and ignored.
    generation: u32,
    fd: RawFd,
    in_use: bool,
    /// A multishot poll is in the kernel for this socket.
    armed: bool,
    /// The socket may have something to read: an event arrived since a read last found
    /// it drained, or nothing is known yet (just registered). Reads are tried only then,
    /// so a reader does not pay a system call to learn that its response is not there.
    ready: bool,
    /// An event reported the peer's close or an error. It stays: a read that takes the
    /// last bytes before the close must not wait for an event that came already.
    closed: bool,
    waker: Option<Waker>,
}

struct Inner {
    ring: IoUring,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots with a reader waiting (a waker stored).
    waiting: usize,
    /// Reads that found their socket empty (would block): only after a stale event.
    reads_found_empty: u64,
}

/// The ring, one per shard's HTTP client. Not `Send`: it lives on the shard thread.
pub(crate) struct SocketRing {
    inner: RefCell<Inner>,
}

/// A socket's place in the ring; released (its poll cancelled) on drop.
pub(crate) struct Registration {
    ring: Rc<SocketRing>,
    index: u32,
    generation: u32,
}

fn user_data(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

/// The events a response, a close or an error raise on a socket.
const READ_EVENTS: u32 = (libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;

/// Of those, the ones after which the socket stays readable for good (end of stream or
/// an error to report).
const CLOSE_EVENTS: u32 = (libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP) as u32;

impl SocketRing {
    /// A ring with cooperative completions and the task that wakes the shard for them;
    /// `None` (with the reason logged once per shard) when the kernel cannot give one.
    /// Must be called on the shard's glommio executor.
    pub(crate) fn new() -> Option<Rc<SocketRing>> {
        match Self::build() {
            Ok((ring, eventfd)) => {
                let ring = Rc::new(ring);
                glommio::spawn_local(drive(Rc::downgrade(&ring), eventfd)).detach();
                Some(ring)
            }
            Err(error) => {
                tracing::info!(
                    %error,
                    "no io_uring with COOP_TASKRUN here; connections wait through the \
                     executor's ring"
                );
                None
            }
        }
    }

    fn build() -> io::Result<(SocketRing, glommio::io::BufferedFile)> {
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_cqsize(RING_ENTRIES * 2)
            .build(RING_ENTRIES)?;
        // Blocking on purpose: glommio's read of it must wait, not fail with EAGAIN.
        let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        let file = glommio_file(eventfd);
        Ok((
            SocketRing {
                inner: RefCell::new(Inner {
                    ring,
                    slots: Vec::new(),
                    free: Vec::new(),
                    waiting: 0,
                    reads_found_empty: 0,
                }),
            },
            file,
        ))
    }

    /// Registers `fd` and arms its poll. The socket must outlive the registration.
    pub(crate) fn register(self: &Rc<Self>, fd: RawFd) -> io::Result<Registration> {
        let mut inner = self.inner.borrow_mut();
        let index = match inner.free.pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(inner.slots.len())
                    .map_err(|_| io::Error::other("socket ring: too many sockets"))?;
                inner.slots.push(Slot {
                    generation: 0,
                    fd,
                    in_use: false,
                    armed: false,
                    ready: true,
                    closed: false,
                    waker: None,
                });
                index
            }
        };
        let slot = &mut inner.slots[index as usize];
        slot.fd = fd;
        slot.in_use = true;
        slot.armed = false;
        slot.ready = true;
        slot.closed = false;
        slot.waker = None;
        let generation = slot.generation;
        let registration = Registration {
            ring: Rc::clone(self),
            index,
            generation,
        };
        if let Err(error) = inner.arm(index) {
            drop(inner);
            drop(registration);
            return Err(error);
        }
        Ok(registration)
    }

    /// Takes every completion and wakes the readers they concern; returns how many.
    fn drain(&self) -> usize {
        let mut inner = self.inner.borrow_mut();
        let mut wake: Vec<Waker> = Vec::new();
        let mut taken = 0;
        let Inner {
            ring,
            slots,
            waiting,
            ..
        } = &mut *inner;
        for entry in ring.completion() {
            taken += 1;
            let data = entry.user_data();
            if data == CANCEL_USER_DATA {
                continue;
            }
            let index = (data & u64::from(u32::MAX)) as usize;
            let generation = (data >> 32) as u32;
            let Some(slot) = slots.get_mut(index) else {
                continue;
            };
            if !slot.in_use || slot.generation != generation {
                continue;
            }
            if !cqueue::more(entry.flags()) {
                // The kernel ended this poll (an error, or an overflowed queue): the
                // reader tries its socket again and arms a new one if it must wait.
                slot.armed = false;
            }
            slot.ready = true;
            // A poll's result is its event mask (or an error, after which the socket is
            // read to learn what happened).
            if u32::try_from(entry.result()).map_or(true, |mask| mask & CLOSE_EVENTS != 0) {
                slot.closed = true;
            }
            if let Some(waker) = slot.waker.take() {
                *waiting -= 1;
                wake.push(waker);
            }
        }
        drop(inner);
        for waker in wake {
            waker.wake();
        }
        taken
    }

    /// Flushes completions the kernel kept aside when the queue was full.
    fn flush_overflow(&self) {
        let mut inner = self.inner.borrow_mut();
        if inner.ring.submission().cq_overflow() {
            // Errors here resurface on the next submission; nothing is lost by waiting.
            let _ = inner.ring.submit();
        }
    }

    /// Reads of the ring's sockets that found nothing to take, so far.
    pub(crate) fn reads_found_empty(&self) -> u64 {
        self.inner.borrow().reads_found_empty
    }

    /// Whether a reader waits for one of the ring's sockets.
    fn awaited(&self) -> bool {
        self.inner.borrow().waiting > 0
    }

    /// Enters the kernel for the ring, so that completions it has not posted yet are.
    fn kick(&self) {
        let inner = self.inner.borrow();
        // Errors here resurface on the next submission; the next look comes anyway.
        let _ = inner.ring.submitter().submit_and_wait(0);
    }
}

impl Inner {
    fn arm(&mut self, index: u32) -> io::Result<()> {
        let slot = &self.slots[index as usize];
        let entry = opcode::PollAdd::new(types::Fd(slot.fd), READ_EVENTS)
            .multi(true)
            .build()
            .user_data(user_data(index, slot.generation));
        self.push(&entry)?;
        self.ring.submit()?;
        self.slots[index as usize].armed = true;
        Ok(())
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: the entries pushed here (a poll, a cancellation) point at no memory of
        // ours: a poll names a file descriptor (kept open by the kernel's own reference
        // while the poll is in), a cancellation a `user_data` value.
        #[allow(unsafe_code)]
        let pushed = unsafe { self.ring.submission().push(entry) };
        if pushed.is_err() {
            // Full: hand what is queued to the kernel and try once more.
            self.ring.submit()?;
            #[allow(unsafe_code)]
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| io::Error::other("socket ring: submission queue full"))?;
        }
        Ok(())
    }
}

impl Registration {
    /// Ready while the socket may have something to read (see `Slot::ready`);
    /// otherwise remembers the task to wake, arming the socket's poll if the kernel ended
    /// it. The reader calls [`Registration::drained`] when a read finds nothing more.
    pub(crate) fn poll_readable(&self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.ring.inner.borrow_mut();
        let slot = &mut inner.slots[self.index as usize];
        debug_assert!(slot.in_use && slot.generation == self.generation);
        if slot.ready || slot.closed {
            return Poll::Ready(Ok(()));
        }
        let armed = slot.armed;
        match slot.waker.replace(cx.waker().clone()) {
            Some(_) => {}
            None => inner.waiting += 1,
        }
        if !armed {
            inner.arm(self.index)?;
        }
        Poll::Pending
    }

    /// What the ring knows of an idle socket, after taking the completions already
    /// posted: `Some(true)` if it reported a close or an error, `Some(false)` if nothing
    /// came since a read drained it, `None` if something came (bytes or a close: only a
    /// look at the socket tells). An event the kernel has not posted yet (the shard has
    /// not entered the kernel since it arrived: microseconds while it works) is missed,
    /// which only widens by that much the race a look leaves anyway.
    pub(crate) fn idle_report(&self) -> Option<bool> {
        self.ring.drain();
        let inner = self.ring.inner.borrow();
        let slot = &inner.slots[self.index as usize];
        if slot.closed {
            Some(true)
        } else if slot.ready {
            None
        } else {
            Some(false)
        }
    }

    /// A read found the socket drained: it would block, or it returned less than it could
    /// take. Bytes that arrive from now on raise an event (the multishot poll posts one
    /// for every arrival it finds readable; an arrival before this read was taken by it),
    /// so readiness is only believed again when one comes. At worst a stale event costs
    /// one read that finds nothing.
    pub(crate) fn drained(&self, would_block: bool) {
        let mut inner = self.ring.inner.borrow_mut();
        inner.slots[self.index as usize].ready = false;
        if would_block {
            inner.reads_found_empty += 1;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.ring.inner.borrow_mut();
        let armed = {
            let slot = &mut inner.slots[self.index as usize];
            slot.in_use = false;
            let had_waker = slot.waker.take().is_some();
            slot.generation = slot.generation.wrapping_add(1);
            let armed = std::mem::replace(&mut slot.armed, false);
            if had_waker {
                inner.waiting -= 1;
            }
            armed
        };
        if armed {
            // The poll holds a reference on the socket: until it is cancelled, closing
            // the descriptor would not close the connection.
            let cancel = opcode::AsyncCancel::new(user_data(self.index, self.generation))
                .build()
                .user_data(CANCEL_USER_DATA);
            if let Err(error) = inner
                .push(&cancel)
                .and_then(|()| inner.ring.submit().map(|_| ()))
            {
                tracing::warn!(%error, "socket ring: cancelling a closed connection's poll");
            }
        }
        inner.free.push(self.index);
    }
}

/// `fd` (an eventfd) as a file of the current glommio executor, which closes it on drop:
/// read 8 bytes at offset 0 for the count added since the last read.
pub(crate) fn glommio_file(fd: std::os::fd::OwnedFd) -> glommio::io::BufferedFile {
    let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
    // SAFETY: `raw` comes from `into_raw_fd` of a descriptor we own, so it is open and
    // nothing else closes it; ownership passes to the glommio file, which closes it.
    #[allow(unsafe_code)]
    unsafe {
        glommio::io::BufferedFile::from_raw_fd(raw)
    }
}

/// How often the ring is looked at while a reader waits on it, signal or not. Under full
/// load a shard was seen asleep for seconds (until its idle timer) with responses waiting
/// on the ring, cause unknown; if a completion is left unposted, a look this often bounds
/// the wait. Nothing is looked at while no reader waits.
const LOOK_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// The shard's task for the ring: waits (through glommio, so a sleeping shard wakes) for
/// the eventfd the ring signals, then takes the completions; while a reader waits, also
/// every [`LOOK_EVERY`]. Ends with the ring.
async fn drive(ring: Weak<SocketRing>, eventfd: glommio::io::BufferedFile) {
    let mut read = Some(Box::pin(eventfd.read_at(0, 8)));
    loop {
        let awaited = match ring.upgrade() {
            Some(ring) => {
                ring.drain();
                ring.flush_overflow();
                ring.awaited()
            }
            None => break,
        };
        let look = async {
            glommio::timer::sleep(LOOK_EVERY).await;
            None
        };
        let signalled = match read.as_mut() {
            Some(read) if awaited => {
                futures_lite::future::or(async { Some(read.as_mut().await) }, look).await
            }
            Some(read) => Some(read.as_mut().await),
            // The eventfd failed: looking every LOOK_EVERY is all that is left.
            None => look.await,
        };
        match signalled {
            Some(Ok(_)) => read = Some(Box::pin(eventfd.read_at(0, 8))),
            Some(Err(error)) => {
                // Never expected of an eventfd; readers must not hang on it.
                tracing::error!(
                    %error,
                    "socket ring: reading its eventfd failed; looking at the ring every \
                     {LOOK_EVERY:?} from now on"
                );
                read = None;
            }
            None => {
                if let Some(ring) = ring.upgrade() {
                    ring.kick();
                }
            }
        }
    }
}

impl std::fmt::Debug for SocketRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.borrow();
        f.debug_struct("SocketRing")
            .field("sockets", &(inner.slots.len() - inner.free.len()))
            .finish()
    }
}
