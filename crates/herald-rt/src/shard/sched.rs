//! The scheduling policy of a shard thread.
//!
//! A shard is woken many times per millisecond: by a response on one of its
//! connections (an io_uring completion), by a hand-off from a publishing thread, by the
//! journal's sync thread reporting durability. Under Linux's default policy
//! (`SCHED_OTHER`) a thread that wakes may preempt the thread running on its core at
//! once. With a receiver, publishers or the journal's sync thread on the same cores,
//! that switches the shard in for a single completion and out again for the next
//! wake-up elsewhere: each switch costs a few microseconds and leaves the shard a batch
//! of one.
//!
//! `SCHED_BATCH` keeps the shard's share of the CPU (the same weight, the same nice
//! value) but tells the scheduler it is throughput-bound: a waking shard does not
//! preempt the running thread and runs at the next scheduling point instead, by which
//! time more completions are waiting for it. Measured with `herald bench run --events
//! 200000 --tenants 16 --payload-bytes 1024` on a 2-core machine, deliveries/s rose by
//! 13–16 % (TLS 15–24 %) and the engine's CPU per delivery fell by 11–18 %; at half the
//! maximum rate, open loop, latency percentiles were the same within the noise
//! (`benches/README.md`). Switching to `SCHED_BATCH` needs no privilege; a deployment
//! that prefers the default turns it off (`EngineConfig::batch_scheduling`).

use std::io;

/// Puts the calling thread under `SCHED_BATCH` (Linux), at priority 0 as the policy
/// requires.
pub(crate) fn use_batch_policy() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads the `sched_param` behind the pointer, which is
    // a live, initialised local for the whole call; pid 0 is the calling thread. It
    // changes only that thread's scheduling policy and touches no memory of ours.
    #[allow(unsafe_code)]
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy (`SCHED_*`).
#[cfg(test)]
fn current_policy() -> i32 {
    // SAFETY: no arguments but the pid; 0 is the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        libc::sched_getscheduler(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_switched_to_batch_reports_batch_and_others_keep_theirs() {
        let parent = current_policy();
        let after = std::thread::spawn(|| {
            use_batch_policy().expect("SCHED_BATCH needs no privilege");
            current_policy()
        })
        .join()
        .unwrap();
        assert_eq!(after, libc::SCHED_BATCH);
        // The policy is the thread's own: a sibling started afterwards inherits the
        // parent's, which the switch did not touch.
        assert_eq!(current_policy(), parent);
        assert_eq!(std::thread::spawn(current_policy).join().unwrap(), parent);
    }
}
