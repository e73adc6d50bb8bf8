//! A wake-up signal between tasks of one shard (same thread, no atomics needed).
//!
//! The shard loop parks on it; tasks that finish a send, and the task that reads the
//! cross-thread wake eventfd, raise it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Single-waiter, level-triggered notification: a `notify` before `wait` is not lost.
#[derive(Debug, Default)]
pub(crate) struct LocalNotify {
    raised: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl LocalNotify {
    /// Raises the signal and wakes the waiter, if any.
    pub(crate) fn notify(&self) {
        self.raised.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Lowers the signal; returns whether it was raised.
    pub(crate) fn take(&self) -> bool {
        self.raised.replace(false)
    }

    /// Resolves once the signal is raised (lowering it).
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait { notify: self }
    }
}

/// Future returned by [`LocalNotify::wait`].
#[derive(Debug)]
pub(crate) struct Wait<'a> {
    notify: &'a LocalNotify,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.take() {
            return Poll::Ready(());
        }
        *self.notify.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn notify_before_wait_is_kept() {
        let notify = LocalNotify::default();
        notify.notify();
        futures_lite::future::block_on(notify.wait());
        assert!(!notify.take(), "waiting lowers the signal");
    }

    #[test]
    fn task_wakes_the_waiter_on_glommio() {
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(|| async {
                let notify = Rc::new(LocalNotify::default());
                let raiser = notify.clone();
                let task = glommio::spawn_local(async move {
                    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
                    raiser.notify();
                });
                notify.wait().await;
                task.await;
                true
            })
            .unwrap();
        assert!(handle.join().unwrap());
    }
}
