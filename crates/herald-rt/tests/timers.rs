//! The executor's timers (glommio's reactor, as Herald's copy of it takes the due ones
//! off its map: `vendor/glommio/HERALD-PATCHES.md`, patch 7): each fires once it is due,
//! in the order they are due, and a timer that is not due is left alone while others
//! fire around it.

mod support;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Short sleeps made one after another while the long timer waits.
const SHORT_SLEEPS: u32 = 40;

/// Counts the polls of the future it wraps.
struct Counted<F> {
    inner: Pin<Box<F>>,
    polls: Rc<Cell<u32>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

#[test]
fn due_timers_fire_in_order_and_a_pending_one_is_left_alone() {
    let (order, long_polls, long_late) = support::run(|| async {
        let order = Rc::new(RefCell::new(Vec::new()));
        let started = Instant::now();
        // Timers due at different times, armed out of order.
        let mut tasks = Vec::new();
        for ms in [30u64, 10, 40, 20] {
            let order = Rc::clone(&order);
            tasks.push(glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(ms)).await;
                assert!(
                    started.elapsed() >= Duration::from_millis(ms),
                    "a {ms} ms timer fired early"
                );
                order.borrow_mut().push(ms);
            }));
        }
        // A long timer, pending while many short ones are armed and fire.
        let polls = Rc::new(Cell::new(0));
        let long = glommio::spawn_local(Counted {
            inner: Box::pin(glommio::timer::sleep(Duration::from_millis(400))),
            polls: Rc::clone(&polls),
        });
        for _ in 0..SHORT_SLEEPS {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        for task in tasks {
            task.await;
        }
        let polls_while_pending = polls.get();
        long.await;
        let order = order.borrow().clone();
        (
            order,
            polls_while_pending,
            started.elapsed() >= Duration::from_millis(400),
        )
    });
    assert_eq!(order, [10, 20, 30, 40]);
    assert!(long_late, "the long timer fired before it was due");
    // Its first poll armed it; the short timers' firings must not have woken it (waking
    // every timer each time would poll it about once per short sleep).
    assert!(
        long_polls <= 3,
        "the pending timer was polled {long_polls} times while {SHORT_SLEEPS} others fired"
    );
}
