//! Wake-ups from other threads reach a shard's executor whenever they come, in particular
//! while it is going to sleep; and its timers fire whatever those wake-ups interleave.
//!
//! glommio's reactor announces that it sleeps (a flag), then looks once more at the
//! work other threads handed it, then sleeps; a thread that wakes one of its tasks
//! queues the waker, then writes the executor's eventfd if the flag is set. Herald's
//! copy of glommio orders the two sides with a full fence on each (see
//! `vendor/glommio/HERALD-PATCHES.md`) instead of a process-wide `membarrier`. If either
//! side could miss the other, a wake-up landing in that window would be lost and the
//! executor would sleep through it: here, a round that never finishes. The second test
//! keeps the executor's preemption timer firing while such wake-ups land around the
//! timers it sleeps on: a change to how that timer is armed once left the executor
//! parked with a task ready (patch 3 there), and the test stuck. The third checks that
//! an idle executor is not woken periodically by that timer, which its reactor now keeps
//! armed while pending instead of re-arming on every poll (patch 5), and the fourth that
//! a task woken from a sleep is still preempted. The fifth runs two executors on one
//! thread: each task must keep its own executor's notifier (patch 6).

mod support;

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Rounds of one wake-up each: enough for the foreign thread's wake to land in every
/// phase of the executor's loop (running, polling, announcing sleep, asleep) many times.
const ROUNDS: u32 = 20_000;
/// How long all rounds may take before wake-ups count as lost. The rounds take a few
/// seconds; a lost wake-up leaves its round waiting until something else wakes the
/// executor (its rare timers), which at this many rounds takes far longer.
const ROUNDS_LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Round {
    done: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

#[test]
fn a_wake_up_from_another_thread_is_never_lost_while_the_executor_goes_to_sleep() {
    let (rounds_tx, rounds_rx) = mpsc::channel::<Arc<Round>>();
    let (finished_tx, finished_rx) = mpsc::channel::<u32>();
    // 0 to ~60 µs, so that the wake lands in a different phase each time.
    let waker_thread = wake_each_round(rounds_rx, 0, |draw| {
        let pause = draw % 64;
        if pause < 8 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(u64::from(pause)));
        }
    });
    let executor = std::thread::spawn(move || {
        support::run(move || async move {
            for i in 0..ROUNDS {
                let round = Arc::new(Round::default());
                rounds_tx.send(Arc::clone(&round)).unwrap();
                woken(&round).await;
                finished_tx.send(i).unwrap();
            }
        })
    });
    expect_rounds(
        &finished_rx,
        ROUNDS,
        "wake-ups from another thread are being lost (the executor sleeps through them)",
    );
    executor.join().unwrap();
    waker_thread.join().unwrap();
}

/// Rounds of the timer test: each sleeps on a timer while a wake-up from another thread
/// lands at a random moment around its expiry.
const TIMER_ROUNDS: u32 = 5_000;

/// The executor's preemption period in the timer test: short, so that its preemption
/// timer fires while the executor is awake, in every phase of the rounds.
const PREEMPT_PERIOD: Duration = Duration::from_micros(300);

#[test]
fn timers_fire_while_wake_ups_from_another_thread_land_around_them() {
    let (rounds_tx, rounds_rx) = mpsc::channel::<Arc<Round>>();
    let (finished_tx, finished_rx) = mpsc::channel::<u32>();
    let waker_thread = wake_each_round(rounds_rx, 7, |draw| {
        std::thread::sleep(Duration::from_micros(u64::from(draw % 600)));
    });
    let executor = std::thread::spawn(move || {
        with_preempt_period(PREEMPT_PERIOD, move || async move {
            let mut draw: u32 = 11;
            for i in 0..TIMER_ROUNDS {
                let round = Arc::new(Round::default());
                rounds_tx.send(Arc::clone(&round)).unwrap();
                draw = next_draw(draw);
                let pause = Duration::from_micros(u64::from(50 + (draw >> 16) % 500));
                // Both must finish: the wake-up (any moment) and the timer, which only
                // the executor's own kernel timer can end once the wake-up came.
                futures_lite::future::zip(glommio::timer::sleep(pause), woken(&round)).await;
                finished_tx.send(i).unwrap();
            }
        })
    });
    expect_rounds(
        &finished_rx,
        TIMER_ROUNDS,
        "a timer did not fire, or a woken task did not run (the executor slept with work \
         due)",
    );
    executor.join().unwrap();
    waker_thread.join().unwrap();
}

/// The executor's preemption period in the idle test: short, so that an executor woken
/// by its own preemption timer while idle would wake hundreds of times in [`IDLE_FOR`].
const IDLE_PREEMPT_PERIOD: Duration = Duration::from_millis(1);
/// How long the idle test's executor sleeps on one timer after a burst of work.
const IDLE_FOR: Duration = Duration::from_millis(300);
/// Most times the executor may block during that sleep: the sleep itself, the timer's
/// wake-up and the preemption timer kept from the burst firing once, with room to spare;
/// an executor woken once per preemption period would block ~300 times.
const IDLE_BLOCKS_MAX: u64 = 30;

/// The reactor keeps a pending preemption timer through a sleep instead of cancelling and
/// arming it again (patch 5 there). Such a timer may end a sleep once; it must not be
/// armed again by the poll that follows, or an idle executor would wake once per
/// preemption period for as long as it is idle.
#[test]
fn an_idle_executor_is_not_woken_again_and_again_by_its_preemption_timer() {
    let blocked = std::thread::spawn(|| {
        with_preempt_period(IDLE_PREEMPT_PERIOD, || async {
            // A burst of short sleeps and yields: polls with runnable tasks, which arm
            // (and keep) the preemption timer, and short sleeps with it pending.
            for i in 0..200u64 {
                if i % 4 == 0 {
                    glommio::timer::sleep(Duration::from_micros(50 + i)).await;
                } else {
                    futures_lite::future::yield_now().await;
                }
            }
            let before = voluntary_switches();
            glommio::timer::sleep(IDLE_FOR).await;
            voluntary_switches() - before
        })
    })
    .join()
    .unwrap();
    assert!(
        blocked <= IDLE_BLOCKS_MAX,
        "the executor blocked {blocked} times while idle for {IDLE_FOR:?} (at most \
         {IDLE_BLOCKS_MAX} expected): something wakes it periodically"
    );
}

/// Rounds of the preemption test: each wakes the executor from a sleep at a random
/// moment around its preemption period, then runs a task until it is told to yield.
const PREEMPT_ROUNDS: u32 = 1_000;
/// How long a task in the preemption test may run without being told to yield before
/// the round counts as not preempted: 200 periods of [`IDLE_PREEMPT_PERIOD`].
const UNPREEMPTED_AFTER: Duration = Duration::from_millis(200);

/// A task woken from a sleep is preempted like any other, whatever ended the sleep: the
/// preemption timer kept through a sleep (patch 5 there) may fire just as another
/// thread's wake-up ends it, and the run that follows must still get a timer. A round
/// spins on `need_preempt` until the executor says to yield; one that is never told
/// counts as a failure.
#[test]
fn a_task_woken_from_a_sleep_is_still_preempted() {
    let (rounds_tx, rounds_rx) = mpsc::channel::<Arc<Round>>();
    let waker_thread = wake_each_round(rounds_rx, 3, |draw| {
        std::thread::sleep(Duration::from_micros(u64::from(draw % 3_000)));
    });
    let unpreempted = std::thread::spawn(move || {
        with_preempt_period(IDLE_PREEMPT_PERIOD, move || async move {
            let mut unpreempted = 0u32;
            for _ in 0..PREEMPT_ROUNDS {
                let round = Arc::new(Round::default());
                rounds_tx.send(Arc::clone(&round)).unwrap();
                woken(&round).await;
                let started = Instant::now();
                while !glommio::executor().need_preempt() {
                    if started.elapsed() > UNPREEMPTED_AFTER {
                        unpreempted += 1;
                        break;
                    }
                    std::hint::spin_loop();
                }
                futures_lite::future::yield_now().await;
            }
            unpreempted
        })
    })
    .join()
    .unwrap();
    waker_thread.join().unwrap();
    assert_eq!(
        unpreempted, 0,
        "{unpreempted} of {PREEMPT_ROUNDS} runs after a wake-up were never preempted"
    );
}

/// Rounds per executor in the two-executor test.
const TWO_EXECUTOR_ROUNDS: u32 = 200;

#[test]
fn tasks_of_two_executors_on_one_thread_are_woken_on_their_own() {
    // A task records its executor's notifier when spawned; the thread's latest executor
    // has its notifier at hand (patch 6), so a task of the first, spawned while the
    // second exists, must not be given the second's: its wake-ups from another thread
    // would go to an executor that is not running, and its rounds would never finish.
    let (finished_tx, finished_rx) = mpsc::channel::<u32>();
    let thread = std::thread::spawn(move || {
        let make = || {
            glommio::LocalExecutorBuilder::default()
                .io_memory(128 * 1024)
                .ring_depth(64)
                .make()
                .unwrap()
        };
        let first = make();
        let second = make();
        let rounds = |executor: &glommio::LocalExecutor, seed: u32, finished: mpsc::Sender<u32>| {
            let (rounds_tx, rounds_rx) = mpsc::channel::<Arc<Round>>();
            let waker_thread = wake_each_round(rounds_rx, seed, |draw| {
                std::thread::sleep(Duration::from_micros(u64::from(draw % 32)));
            });
            executor.run(async move {
                for i in 0..TWO_EXECUTOR_ROUNDS {
                    let round = Arc::new(Round::default());
                    let task = glommio::spawn_local({
                        let round = Arc::clone(&round);
                        async move { woken(&round).await }
                    });
                    rounds_tx.send(round).unwrap();
                    task.await;
                    finished.send(i).unwrap();
                }
            });
            waker_thread.join().unwrap();
        };
        rounds(&first, 1, finished_tx.clone());
        rounds(&second, 2, finished_tx.clone());
        drop(second);
        // The thread's executor gone, the first one's spawns still find theirs.
        rounds(&first, 3, finished_tx);
    });
    for pass in [
        "the first executor",
        "the second",
        "the first, the second gone",
    ] {
        expect_rounds(
            &finished_rx,
            TWO_EXECUTOR_ROUNDS,
            &format!("wake-ups of {pass}'s tasks went to another executor"),
        );
    }
    thread.join().unwrap();
}

/// Runs `body` on a small executor of its own with preemption period `period`, and
/// returns its output.
fn with_preempt_period<T, F, Fut>(period: Duration, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(128 * 1024)
        .ring_depth(64)
        .preempt_timer(period)
        .spawn(body)
        .unwrap()
        .join()
        .unwrap()
}

/// Times the calling thread blocked so far (`voluntary_ctxt_switches` of
/// `/proc/thread-self/status`).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/thread-self/status")
}

/// A linear congruential step: draws that vary from round to round, the same every run.
fn next_draw(draw: u32) -> u32 {
    draw.wrapping_mul(1_103_515_245).wrapping_add(12_345)
}

/// The other thread: for each round, waits until the executor's task has left its
/// waker, pauses as `pause` says for this round's draw, then marks the round done and
/// wakes the task.
fn wake_each_round(
    rounds: mpsc::Receiver<Arc<Round>>,
    seed: u32,
    pause: impl Fn(u32) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut draw = seed;
        for round in rounds {
            let waker = loop {
                if let Some(waker) = round.waker.lock().unwrap().take() {
                    break waker;
                }
                // Not a bare spin: on a busy machine the executor may share this core.
                std::thread::yield_now();
            };
            draw = next_draw(draw);
            pause(draw >> 16);
            round.done.store(true, Ordering::Release);
            waker.wake();
        }
    })
}

/// Waits for `rounds` rounds, in order, all within [`ROUNDS_LIMIT`]; else fails with
/// `lost` (what the missing rounds mean).
fn expect_rounds(finished: &mpsc::Receiver<u32>, rounds: u32, lost: &str) {
    let deadline = Instant::now() + ROUNDS_LIMIT;
    for expected in 0..rounds {
        let left = deadline.saturating_duration_since(Instant::now());
        match finished.recv_timeout(left) {
            Ok(i) => assert_eq!(i, expected),
            Err(_) => panic!("{expected} of {rounds} rounds finished in {ROUNDS_LIMIT:?}: {lost}"),
        }
    }
}

/// Resolves once `round` is marked done (by the other thread, which then wakes it).
async fn woken(round: &Round) {
    poll_fn(|cx| {
        if round.done.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        *round.waker.lock().unwrap() = Some(cx.waker().clone());
        // Woken between the check and the store: the wake went to the waker taken
        // before, so look again.
        if round.done.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
