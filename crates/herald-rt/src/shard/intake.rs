//! Bounded hand-off from foreign threads into one shard.
//!
//! The queue is a bounded crossbeam channel; after every successful hand-off the shard
//! is woken through [`Wake`]. Three ways to hand in, matching the caller's choice:
//! * [`IntakeSender::try_send`] — never waits; a full queue gives the item back.
//! * [`IntakeSender::send_blocking`] — parks the calling thread until there is room.
//! * [`IntakeSender::send_async`] — a `Send` future that waits for room without
//!   blocking the caller's executor; the shard wakes such waiters after each drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::wake::Wake;

/// Why a hand-off did not happen; the item is always given back.
#[derive(Debug)]
pub enum SendError<T> {
    /// The shard's queue is full (only from non-waiting forms).
    Full(T),
    /// The shard no longer takes work (shutting down or stopped).
    Closed(T),
}

impl<T> SendError<T> {
    /// The item that was not handed over.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(item) | SendError::Closed(item) => item,
        }
    }
}

/// Futures waiting for room in a full queue.
#[derive(Debug, Default)]
struct SpaceWaiters {
    /// Registered wakers; read by the shard without taking the lock.
    count: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl SpaceWaiters {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        self.count.store(wakers.len(), Ordering::SeqCst);
    }

    fn wake_all(&self) {
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let wakers = {
            let mut wakers = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
            self.count.store(0, Ordering::SeqCst);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The foreign-thread end of one shard's queue. Cheap to clone.
pub(crate) struct IntakeSender<T> {
    tx: Sender<T>,
    wake: Arc<Wake>,
    space: Arc<SpaceWaiters>,
}

/// The shard's end of its queue.
pub(crate) struct IntakeReceiver<T> {
    rx: Receiver<T>,
    space: Arc<SpaceWaiters>,
}

/// A bounded queue of `capacity` items (at least 1) that wakes the shard via `wake`.
pub(crate) fn intake<T>(capacity: usize, wake: Arc<Wake>) -> (IntakeSender<T>, IntakeReceiver<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let space = Arc::new(SpaceWaiters::default());
    (
        IntakeSender {
            tx,
            wake,
            space: space.clone(),
        },
        IntakeReceiver { rx, space },
    )
}

impl<T> Clone for IntakeSender<T> {
    fn clone(&self) -> Self {
        IntakeSender {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
            space: self.space.clone(),
        }
    }
}

impl<T> IntakeSender<T> {
    /// Hands `item` over if there is room right now.
    pub(crate) fn try_send(&self, item: T) -> Result<(), SendError<T>> {
        match self.tx.try_send(item) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(TrySendError::Full(item)) => Err(SendError::Full(item)),
            Err(TrySendError::Disconnected(item)) => Err(SendError::Closed(item)),
        }
    }

    /// Hands `item` over, parking the calling thread while the queue is full.
    pub(crate) fn send_blocking(&self, item: T) -> Result<(), SendError<T>> {
        match self.tx.send(item) {
            Ok(()) => {
                self.wake.notify();
                Ok(())
            }
            Err(error) => Err(SendError::Closed(error.into_inner())),
        }
    }

    /// Hands `item` over, waiting asynchronously while the queue is full.
    pub(crate) fn send_async(&self, item: T) -> SendAsync<'_, T> {
        SendAsync {
            sender: self,
            item: Some(item),
        }
    }

    /// Wakes the shard without handing anything over (e.g. after closing).
    pub(crate) fn wake(&self) {
        self.wake.notify();
    }
}

/// Future returned by [`IntakeSender::send_async`].
pub(crate) struct SendAsync<'a, T> {
    sender: &'a IntakeSender<T>,
    item: Option<T>,
}

impl<T> Unpin for SendAsync<'_, T> {}

impl<T> Future for SendAsync<'_, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(item) = self.item.take() else {
            // Polled again after completion: the item is gone already.
            return Poll::Pending;
        };
        let item = match self.sender.try_send(item) {
            Err(SendError::Full(item)) => item,
            done => return Poll::Ready(done),
        };
        // Register before retrying so a drain between the two attempts is not missed.
        self.sender.space.register(cx.waker());
        match self.sender.try_send(item) {
            Err(SendError::Full(item)) => {
                self.item = Some(item);
                Poll::Pending
            }
            done => Poll::Ready(done),
        }
    }
}

impl<T> IntakeReceiver<T> {
    /// Moves up to `max` queued items into `out`; returns how many. Wakes callers that
    /// wait for room when it made some.
    pub(crate) fn drain_into(&self, max: usize, out: &mut Vec<T>) -> usize {
        let mut taken = 0;
        while taken < max {
            match self.rx.try_recv() {
                Ok(item) => {
                    out.push(item);
                    taken += 1;
                }
                Err(_) => break,
            }
        }
        if taken > 0 {
            self.space.wake_all();
        }
        taken
    }

    /// Takes the next queued item, if any. Call [`made_room`](Self::made_room) after a
    /// run of takes, so that callers waiting for room hear of it.
    pub(crate) fn try_take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Wakes the callers waiting for room (after items were taken with
    /// [`try_take`](Self::try_take)).
    pub(crate) fn made_room(&self) {
        self.space.wake_all();
    }

    /// Whether anything is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl<T> std::fmt::Debug for IntakeSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeSender")
            .field("queued", &self.tx.len())
            .field("capacity", &self.tx.capacity())
            .finish()
    }
}

impl<T> std::fmt::Debug for IntakeReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntakeReceiver")
            .field("queued", &self.rx.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::super::wake::wake_pair;
    use super::*;
    use std::time::Duration;

    #[test]
    fn full_queue_gives_the_item_back() {
        let (wake, _receiver) = wake_pair().unwrap();
        let (tx, rx) = intake::<u32>(2, wake);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        match tx.try_send(3) {
            Err(SendError::Full(item)) => assert_eq!(item, 3),
            other => panic!("expected Full(3), got {other:?}"),
        }
        let mut out = Vec::new();
        assert_eq!(rx.drain_into(10, &mut out), 2);
        assert_eq!(out, vec![1, 2]);
    }

    #[test]
    fn closed_queue_gives_the_item_back() {
        let (wake, _receiver) = wake_pair().unwrap();
        let (tx, rx) = intake::<&str>(2, wake);
        drop(rx);
        assert!(matches!(tx.try_send("a"), Err(SendError::Closed("a"))));
        assert!(matches!(tx.send_blocking("b"), Err(SendError::Closed("b"))));
        let result = futures_lite::future::block_on(tx.send_async("c"));
        assert!(matches!(result, Err(SendError::Closed("c"))));
    }

    #[test]
    fn drain_respects_its_batch_limit() {
        let (wake, _receiver) = wake_pair().unwrap();
        let (tx, rx) = intake::<u32>(8, wake);
        for i in 0..8 {
            tx.try_send(i).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(rx.drain_into(3, &mut out), 3);
        assert_eq!(rx.drain_into(100, &mut out), 5);
        assert_eq!(out, (0..8).collect::<Vec<_>>());
        assert!(rx.is_empty());
    }

    /// A sender waiting for room in a queue of one hands over 50 items while `take`
    /// (which returns whether it took one) empties the queue.
    fn a_waiting_sender_gets_through(
        mut take: impl FnMut(&IntakeReceiver<u32>, &mut Vec<u32>) -> bool,
    ) {
        let (wake, _receiver) = wake_pair().unwrap();
        let (tx, rx) = intake::<u32>(1, wake);
        tx.try_send(0).unwrap();
        let sender = std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                for i in 1..=50 {
                    tx.send_async(i).await.unwrap();
                }
            });
        });
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.len() < 51 {
            assert!(std::time::Instant::now() < deadline, "got {out:?}");
            if !take(&rx, &mut out) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sender.join().unwrap();
        assert_eq!(out, (0..=50).collect::<Vec<_>>());
        assert!(rx.is_empty());
    }

    #[test]
    fn async_sender_waits_for_room_and_is_woken_by_drain() {
        a_waiting_sender_gets_through(|rx, out| rx.drain_into(1, out) > 0);
    }

    #[test]
    fn items_taken_one_at_a_time_make_room_for_a_waiting_sender() {
        a_waiting_sender_gets_through(|rx, out| match rx.try_take() {
            Some(item) => {
                out.push(item);
                rx.made_room();
                true
            }
            None => false,
        });
    }
}
