//! A single-value reply channel that works from any thread and any async runtime.
//!
//! The shard answers each request exactly once. The caller either blocks on
//! [`ReplyReceiver::wait`] (plain threads) or awaits the receiver as a `Send` future
//! (tokio, async-std, glommio — it needs no runtime of its own).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

enum State<T> {
    Waiting(Option<Waker>),
    Ready(T),
    /// The value was taken, or the sender went away without answering.
    Done,
}

struct Slot<T> {
    state: State<T>,
    /// A thread is blocked on `ready` (in `wait` or `wait_timeout`). Only then does an
    /// answer signal the condition variable: signalling always costs a `futex` system
    /// call, and most answers find their receiver polled as a future or not waiting yet
    /// (one call per published event showed in profiles of the shard threads).
    sleeping: bool,
}

struct Inner<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock can only come from a waker's `wake`; the
        // state is still consistent then, so poisoning is ignored.
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The answering half: consumed by [`Reply::send`]. Dropping it unanswered wakes the
/// receiver with [`Canceled`].
pub struct Reply<T> {
    inner: Option<Arc<Inner<T>>>,
}

/// The waiting half: block with [`wait`](Self::wait) or `.await` it.
pub struct ReplyReceiver<T> {
    inner: Arc<Inner<T>>,
}

/// The shard dropped the request without answering (it stopped or failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled;

impl std::fmt::Display for Canceled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the shard stopped before answering")
    }
}

impl std::error::Error for Canceled {}

/// Waiting with a deadline failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitTimeoutError {
    /// No answer yet; the receiver is handed back so the caller may keep waiting.
    TimedOut,
    /// The shard dropped the request without answering.
    Canceled,
}

/// A connected reply pair.
pub fn reply_channel<T>() -> (Reply<T>, ReplyReceiver<T>) {
    let inner = Arc::new(Inner {
        slot: Mutex::new(Slot {
            state: State::Waiting(None),
            sleeping: false,
        }),
        ready: Condvar::new(),
    });
    (
        Reply {
            inner: Some(inner.clone()),
        },
        ReplyReceiver { inner },
    )
}

impl<T> Reply<T> {
    /// Answers the request. A receiver that already went away simply never sees it.
    pub fn send(mut self, value: T) {
        if let Some(inner) = self.inner.take() {
            finish(&inner, State::Ready(value));
        }
    }
}

impl<T: Send + 'static> Reply<T> {
    /// Answers the request now and leaves waking its receiver to `wakeups`: a batch of
    /// answers is stored first and its receivers woken after, so that a receiver woken
    /// for one answer finds the others of the batch already there. Answered one by one,
    /// a thread that waits for its answers in order wakes for the first, and, faster than
    /// the loop answering them, finds the next not yet stored and blocks again: a wake-up
    /// (a `futex` call and a context switch on each side) per answer instead of per batch.
    pub fn send_deferred(mut self, value: T, wakeups: &mut Wakeups) {
        if let Some(inner) = self.inner.take() {
            let (waker, sleeping) = store(&inner, State::Ready(value));
            if sleeping {
                wakeups.sleepers.push(inner);
            }
            wakeups.wakers.extend(waker);
        }
    }
}

/// A receiver blocked on its condition variable, type-erased for [`Wakeups`].
trait Sleeper: Send + Sync {
    fn notify(&self);
}

impl<T: Send> Sleeper for Inner<T> {
    fn notify(&self) {
        self.ready.notify_all();
    }
}

/// Receivers to wake once a batch of answers is stored ([`Reply::send_deferred`]).
/// Kept and reused by the answering side (its lists keep their capacity); dropping it
/// wakes what it holds, so no stored answer is left without its wake-up.
#[derive(Default)]
pub struct Wakeups {
    sleepers: Vec<Arc<dyn Sleeper>>,
    wakers: Vec<Waker>,
}

impl Wakeups {
    /// Wakes every receiver whose answer was stored since the last call.
    pub fn wake(&mut self) {
        // Taken one at a time, not drained: should a waker panic, the rest stay listed
        // and the drop during the unwind wakes them.
        while let Some(sleeper) = self.sleepers.pop() {
            sleeper.notify();
        }
        while let Some(waker) = self.wakers.pop() {
            waker.wake();
        }
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        self.wake();
    }
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("sleepers", &self.sleepers.len())
            .field("wakers", &self.wakers.len())
            .finish()
    }
}

fn finish<T>(inner: &Inner<T>, outcome: State<T>) {
    let (waker, sleeping) = store(inner, outcome);
    if sleeping {
        inner.ready.notify_all();
    }
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Stores `outcome` unless the slot was answered already; returns the waker of a
/// receiver polled as a future and whether a receiver is blocked, both to be woken.
fn store<T>(inner: &Inner<T>, outcome: State<T>) -> (Option<Waker>, bool) {
    let mut slot = inner.lock();
    let waker = match std::mem::replace(&mut slot.state, outcome) {
        State::Waiting(waker) => waker,
        // Already answered: keep the first answer.
        previous => {
            slot.state = previous;
            None
        }
    };
    // Read under the lock: a receiver sets `sleeping` under it before it blocks, so
    // either it is set here or the receiver sees the answer before blocking.
    (waker, slot.sleeping)
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            finish(&inner, State::Done);
        }
    }
}

impl<T> ReplyReceiver<T> {
    /// Blocks the calling thread until the answer arrives.
    pub fn wait(self) -> Result<T, Canceled> {
        let mut slot = self.inner.lock();
        loop {
            match std::mem::replace(&mut slot.state, State::Done) {
                State::Ready(value) => return Ok(value),
                State::Done => return Err(Canceled),
                waiting @ State::Waiting(_) => {
                    slot.state = waiting;
                    slot.sleeping = true;
                    slot = self
                        .inner
                        .ready
                        .wait(slot)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    slot.sleeping = false;
                }
            }
        }
    }

    /// Blocks for at most `timeout`. On [`WaitTimeoutError::TimedOut`] the receiver is
    /// returned so the caller can decide to keep waiting.
    pub fn wait_timeout(self, timeout: Duration) -> Result<T, (WaitTimeoutError, Option<Self>)> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.inner.lock();
        loop {
            match std::mem::replace(&mut slot.state, State::Done) {
                State::Ready(value) => return Ok(value),
                State::Done => return Err((WaitTimeoutError::Canceled, None)),
                waiting @ State::Waiting(_) => {
                    slot.state = waiting;
                    let now = Instant::now();
                    if now >= deadline {
                        drop(slot);
                        return Err((WaitTimeoutError::TimedOut, Some(self)));
                    }
                    slot.sleeping = true;
                    slot = self
                        .inner
                        .ready
                        .wait_timeout(slot, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                    slot.sleeping = false;
                }
            }
        }
    }
}

impl<T> Future for ReplyReceiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.inner.lock();
        match std::mem::replace(&mut slot.state, State::Done) {
            State::Ready(value) => Poll::Ready(Ok(value)),
            State::Done => Poll::Ready(Err(Canceled)),
            State::Waiting(_) => {
                slot.state = State::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

impl<T> std::fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply").finish_non_exhaustive()
    }
}

impl<T> std::fmt::Debug for ReplyReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyReceiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_crosses_threads_blocking() {
        let (reply, receiver) = reply_channel();
        let sender = std::thread::spawn(move || reply.send(41 + 1));
        assert_eq!(receiver.wait(), Ok(42));
        sender.join().unwrap();
    }

    #[test]
    fn an_answer_racing_a_blocking_wait_is_never_lost() {
        // The condition variable is signalled only when the receiver is blocked: an
        // answer landing between the receiver's check and its block must still wake it.
        // A lost wake-up would show as a timeout (the bound keeps the test finite).
        for round in 0..2_000u32 {
            let (reply, receiver) = reply_channel();
            let sender = std::thread::spawn(move || reply.send(round));
            let answer = receiver
                .wait_timeout(Duration::from_secs(10))
                .map_err(|(error, _)| error);
            assert_eq!(answer, Ok(round));
            sender.join().unwrap();
        }
        for round in 0..2_000u32 {
            let (reply, receiver) = reply_channel();
            let sender = std::thread::spawn(move || reply.send(round));
            assert_eq!(receiver.wait(), Ok(round));
            sender.join().unwrap();
        }
    }

    #[test]
    fn dropped_reply_cancels_waiter() {
        let (reply, receiver) = reply_channel::<u32>();
        let sender = std::thread::spawn(move || drop(reply));
        assert_eq!(receiver.wait(), Err(Canceled));
        sender.join().unwrap();
    }

    #[test]
    fn wait_timeout_hands_receiver_back_then_succeeds() {
        let (reply, receiver) = reply_channel();
        let (error, receiver) = receiver.wait_timeout(Duration::from_millis(5)).unwrap_err();
        assert_eq!(error, WaitTimeoutError::TimedOut);
        reply.send("late");
        assert_eq!(receiver.unwrap().wait(), Ok("late"));
    }

    #[test]
    fn future_form_resolves_from_another_thread() {
        let (reply, receiver) = reply_channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            reply.send(7u8);
        });
        assert_eq!(futures_lite::future::block_on(receiver), Ok(7));
        sender.join().unwrap();
    }

    #[test]
    fn future_form_sees_cancel() {
        let (reply, receiver) = reply_channel::<u8>();
        drop(reply);
        assert_eq!(futures_lite::future::block_on(receiver), Err(Canceled));
    }

    /// A waker that counts its wake-ups.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn woken(counter: &Counting) -> usize {
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn deferred_answers_are_stored_at_once_and_woken_together() {
        let mut wakeups = Wakeups::default();
        let mut receivers = Vec::new();
        let mut counters = Vec::new();
        let mut replies = Vec::new();
        for i in 0..8u32 {
            let (reply, mut receiver) = reply_channel::<u32>();
            let counter = Arc::new(Counting(Default::default()));
            let waker = Waker::from(counter.clone());
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut receiver).poll(&mut cx).is_pending());
            replies.push((reply, i));
            receivers.push(receiver);
            counters.push(counter);
        }
        for (reply, i) in replies {
            reply.send_deferred(i * 10, &mut wakeups);
        }
        // Every answer is there before any receiver is woken.
        assert!(counters.iter().all(|c| woken(c) == 0));
        wakeups.wake();
        assert!(counters.iter().all(|c| woken(c) == 1));
        for (i, receiver) in receivers.into_iter().enumerate() {
            assert_eq!(futures_lite::future::block_on(receiver), Ok(i as u32 * 10));
        }
        // Woken once: a second call wakes nobody again.
        wakeups.wake();
        assert!(counters.iter().all(|c| woken(c) == 1));
    }

    #[test]
    fn a_blocked_receiver_is_woken_by_the_deferred_wake_or_the_drop() {
        for wake_by_drop in [false, true] {
            let (reply, receiver) = reply_channel::<u32>();
            let (result, results) = std::sync::mpsc::channel();
            // Blocked without a deadline: only a wake-up lets it see the answer. A lost
            // wake-up shows as the bounded wait below running out (the blocked thread
            // is then left behind).
            std::thread::spawn(move || result.send(receiver.wait()));
            // Give the receiver time to block (the test holds either way: an answer
            // stored before it blocks is seen without a wake-up).
            std::thread::sleep(Duration::from_millis(20));
            let mut wakeups = Wakeups::default();
            reply.send_deferred(5, &mut wakeups);
            if wake_by_drop {
                drop(wakeups);
            } else {
                wakeups.wake();
            }
            assert_eq!(
                results.recv_timeout(Duration::from_secs(10)),
                Ok(Ok(5)),
                "woken by drop: {wake_by_drop}"
            );
        }
    }

    /// A waker that panics when woken.
    struct Panicking;

    impl std::task::Wake for Panicking {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics");
        }
    }

    #[test]
    fn a_panicking_waker_leaves_the_other_receivers_woken() {
        let mut wakeups = Wakeups::default();
        let counter = Arc::new(Counting(Default::default()));
        let mut receivers = Vec::new();
        // Woken last to first: the counting receivers on both sides of the panicking one.
        for waker in [
            Waker::from(counter.clone()),
            Waker::from(Arc::new(Panicking)),
            Waker::from(counter.clone()),
        ] {
            let (reply, mut receiver) = reply_channel::<u32>();
            let mut cx = Context::from_waker(&waker);
            assert!(Pin::new(&mut receiver).poll(&mut cx).is_pending());
            reply.send_deferred(1, &mut wakeups);
            receivers.push(receiver);
        }
        let woke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut wakeups = wakeups;
            wakeups.wake();
        }));
        assert!(woke.is_err(), "the waker's panic propagates");
        assert_eq!(woken(&counter), 2, "both other receivers were woken");
    }

    #[test]
    fn receiver_is_send_and_sync_for_send_values() {
        fn assert_send<T: Send>() {}
        assert_send::<ReplyReceiver<String>>();
        assert_send::<Reply<String>>();
    }
}
