//! Request deadlines on one coarse clock per client.
//!
//! Every request races its deadline, and almost none loses. A glommio `Timer` per
//! request cost an insertion into the reactor's timer tree when first polled and a
//! removal when dropped, plus a clock reading each time the request was polled: ~2 % of
//! a shard's samples at full load. Deadlines are kept in a slab instead, and one task per
//! client sleeps until the earliest pending one, then wakes those that passed. A
//! request polls its deadline without reading the clock, and registering one costs a
//! comparison (the task is nudged only by a deadline earlier than its next look).
//!
//! Deadlines closer together than a [`TICK`] fire in one look, so one may fire up to a
//! tick late (never early): nothing against request timeouts of seconds, and the
//! `RequestTimeout` error still names the budget. While no deadline is pending the task
//! waits without a timer.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The shortest sleep between two looks, and so how late a deadline may fire.
pub(crate) const TICK: Duration = Duration::from_millis(5);

struct Slot {
    at: Instant,
    /// Bumped when the slot is released, so a released deadline's handle is inert.
    generation: u32,
    in_use: bool,
    fired: bool,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Slots in use and not fired.
    pending: usize,
    /// When the sweeping task looks next; `None` while it waits for a registration.
    next_look: Option<Instant>,
    /// A deadline earlier than `next_look` was registered: look again now.
    nudged: bool,
    /// The sweeping task, while it waits.
    sweeper: Option<Waker>,
    sweeper_started: bool,
}

/// The deadlines of one client. Not `Send`: it lives on the shard thread.
#[derive(Default)]
pub(crate) struct Deadlines {
    inner: RefCell<Inner>,
}

impl Deadlines {
    /// A future that completes once `at` has passed (up to a [`TICK`] later). Must be
    /// polled on the glommio executor the client runs on.
    pub(crate) fn until(self: &Rc<Self>, at: Instant) -> Deadline {
        Deadline {
            deadlines: Rc::clone(self),
            at,
            slot: None,
        }
    }

    /// Fires every pending deadline at or before `now`; returns the earliest of those
    /// still pending.
    fn fire_due(&self, now: Instant) -> Option<Instant> {
        let mut wake = Vec::new();
        let mut earliest: Option<Instant> = None;
        let mut inner = self.inner.borrow_mut();
        let Inner { slots, pending, .. } = &mut *inner;
        for slot in slots.iter_mut().filter(|slot| slot.in_use && !slot.fired) {
            if slot.at <= now {
                slot.fired = true;
                *pending -= 1;
                wake.extend(slot.waker.take());
            } else {
                earliest = Some(earliest.map_or(slot.at, |e| e.min(slot.at)));
            }
        }
        drop(inner);
        for waker in wake {
            waker.wake();
        }
        earliest
    }

    fn release(&self, index: u32, generation: u32) {
        let mut inner = self.inner.borrow_mut();
        let slot = &mut inner.slots[index as usize];
        if !slot.in_use || slot.generation != generation {
            return;
        }
        slot.in_use = false;
        slot.waker = None;
        slot.generation = slot.generation.wrapping_add(1);
        let was_pending = !slot.fired;
        if was_pending {
            inner.pending -= 1;
        }
        inner.free.push(index);
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        // The sweeper holds only a weak reference: woken, it finds the client gone and
        // ends.
        if let Some(waker) = self.inner.get_mut().sweeper.take() {
            waker.wake();
        }
    }
}

/// One request's deadline; releases its slot when dropped.
pub(crate) struct Deadline {
    deadlines: Rc<Deadlines>,
    at: Instant,
    /// (index, generation) once registered.
    slot: Option<(u32, u32)>,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut inner = this.deadlines.inner.borrow_mut();
        if let Some((index, generation)) = this.slot {
            let slot = &mut inner.slots[index as usize];
            debug_assert!(slot.in_use && slot.generation == generation);
            if slot.fired {
                return Poll::Ready(());
            }
            match &mut slot.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        // First poll: take a slot.
        let slot = Slot {
            at: this.at,
            generation: 0,
            in_use: true,
            fired: false,
            waker: Some(cx.waker().clone()),
        };
        let index = match inner.free.pop() {
            Some(index) => {
                let old = &mut inner.slots[index as usize];
                let generation = old.generation;
                *old = Slot { generation, ..slot };
                index
            }
            None => {
                inner.slots.push(slot);
                u32::try_from(inner.slots.len() - 1).expect("fewer than 2^32 requests at once")
            }
        };
        this.slot = Some((index, inner.slots[index as usize].generation));
        inner.pending += 1;
        let start_sweeper = !std::mem::replace(&mut inner.sweeper_started, true);
        let mut sweeper = None;
        if inner.next_look.is_none_or(|look| this.at < look) {
            inner.nudged = true;
            sweeper = inner.sweeper.take();
        }
        // Released first: glommio runs a spawned task at once, and it borrows these.
        drop(inner);
        if start_sweeper {
            glommio::spawn_local(sweep(Rc::downgrade(&this.deadlines))).detach();
        } else if let Some(waker) = sweeper {
            waker.wake();
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some((index, generation)) = self.slot.take() {
            self.deadlines.release(index, generation);
        }
    }
}

/// The client's sweeping task: fires the deadlines that passed, then sleeps until the
/// earliest pending one (at least a [`TICK`]), or until nudged by an earlier one; with
/// none pending, waits for a registration. Ends with the client.
async fn sweep(deadlines: Weak<Deadlines>) {
    loop {
        let Some(strong) = deadlines.upgrade() else {
            return;
        };
        let now = Instant::now();
        let next_look = strong.fire_due(now).map(|at| at.max(now + TICK));
        {
            let mut inner = strong.inner.borrow_mut();
            inner.next_look = next_look;
            inner.nudged = false;
        }
        drop(strong);
        let sleep = async {
            match next_look {
                Some(at) => {
                    glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await
                }
                None => std::future::pending::<()>().await,
            }
        };
        let nudge = std::future::poll_fn(|cx| {
            let Some(strong) = deadlines.upgrade() else {
                return Poll::Ready(());
            };
            let mut inner = strong.inner.borrow_mut();
            if inner.nudged {
                return Poll::Ready(());
            }
            inner.sweeper = Some(cx.waker().clone());
            Poll::Pending
        });
        futures_lite::future::or(sleep, nudge).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `test` on a glommio executor of its own and returns what it returns.
    fn on_executor<T, F>(test: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(test)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn deadlines_fire_after_their_time_and_not_before() {
        let fired = on_executor(|| async {
            let deadlines = Rc::new(Deadlines::default());
            let start = Instant::now();
            let short = deadlines.until(start + Duration::from_millis(20));
            let long = deadlines.until(start + Duration::from_millis(60));
            short.await;
            let after_short = start.elapsed();
            long.await;
            let after_long = start.elapsed();
            // One that passed already completes too.
            deadlines.until(start).await;
            let pending = deadlines.inner.borrow().pending;
            (after_short, after_long, pending)
        });
        let (after_short, after_long, pending) = fired;
        assert!(after_short >= Duration::from_millis(20), "{after_short:?}");
        assert!(after_long >= Duration::from_millis(60), "{after_long:?}");
        assert_eq!(pending, 0, "fired and dropped deadlines hold nothing");
    }

    #[test]
    fn dropped_deadlines_free_their_slots_and_never_fire() {
        let (slots, pending) = on_executor(|| async {
            let deadlines = Rc::new(Deadlines::default());
            for _ in 0..100 {
                // Registered (polled once), then dropped: a request that finished.
                let deadline = deadlines.until(Instant::now() + Duration::from_secs(60));
                futures_lite::future::or(deadline, async {}).await;
            }
            let inner = deadlines.inner.borrow();
            (inner.slots.len(), inner.pending)
        });
        assert_eq!(slots, 1, "one slot, reused");
        assert_eq!(pending, 0);
    }

    #[test]
    fn an_earlier_deadline_is_not_kept_waiting_behind_a_later_one() {
        let (fired, pending) = on_executor(|| async {
            let deadlines = Rc::new(Deadlines::default());
            let start = Instant::now();
            // Registered (polled once) and kept: the sweeper plans its next look for
            // a minute from now…
            let mut held = Box::pin(deadlines.until(start + Duration::from_secs(60)));
            futures_lite::future::or(held.as_mut(), async {}).await;
            // …then a request with a short budget comes.
            let short = deadlines.until(start + Duration::from_millis(20));
            let give_up = async {
                glommio::timer::sleep(Duration::from_secs(30)).await;
                false
            };
            let fired = futures_lite::future::or(
                async {
                    short.await;
                    true
                },
                give_up,
            )
            .await;
            let pending = deadlines.inner.borrow().pending;
            (fired, pending)
        });
        assert!(
            fired,
            "the short deadline fired before the long one was due"
        );
        assert_eq!(pending, 1, "the long one still waits");
    }
}
