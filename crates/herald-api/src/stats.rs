//! The engine's figures for `/readyz` and `/metrics`, which anyone may ask for: taken
//! from the shards at most once per [`STATS_INTERVAL`], however many ask.
//!
//! A query of the figures goes through every shard's intake and costs each shard a pass
//! over its tenants; one per request would let a flood of unauthenticated scrapes keep
//! every shard busy answering them. Callers still never get figures older than their
//! own request: a caller waits for a query that started after it arrived (sharing it
//! with everyone else waiting), and such queries start no sooner than
//! [`STATS_INTERVAL`] after the one before.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Least time between the starts of two queries of the shards' figures: a scrape waits
/// at most this long for one, and a flood of them costs the shards ten queries a second.
pub(crate) const STATS_INTERVAL: Duration = Duration::from_millis(100);

/// Most time `/readyz` and `/metrics` wait for the shards' figures, the wait for an
/// earlier caller's query included. A probe must get an answer, and a shard that cannot
/// answer in this time (a stalled disk under its journal, an intake full for that
/// long) is not ready; scrapes must not pile up behind it either.
pub(crate) const FIGURES_WAIT: Duration = Duration::from_secs(2);

/// Why [`SharedStats::fresh_within`] has no figures.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unanswered<E> {
    /// The query failed.
    Failed(E),
    /// No figures within the wait (the query, or the one before it, still under way).
    TimedOut,
}

/// The latest figures taken, shared by the callers that arrived before they were.
#[derive(Debug)]
pub(crate) struct SharedStats<T> {
    last: Mutex<Option<Taken<T>>>,
}

#[derive(Debug)]
struct Taken<T> {
    /// When the query that took them started.
    started: Instant,
    figures: Arc<T>,
}

impl<T> Default for SharedStats<T> {
    fn default() -> Self {
        SharedStats {
            last: Mutex::new(None),
        }
    }
}

impl<T> SharedStats<T> {
    /// Figures taken by a query that started after this call did: the one under way if
    /// it did, else a new one (`query`), no sooner than [`STATS_INTERVAL`] after the
    /// last one started. A failed query is not kept: the next caller tries again.
    pub(crate) async fn fresh<F, Fut, E>(&self, query: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = Instant::now();
        // Callers wait here in arrival order while a query is under way.
        let mut last = self.last.lock().await;
        if let Some(taken) = last.as_ref() {
            if taken.started >= arrived {
                return Ok(Arc::clone(&taken.figures));
            }
            tokio::time::sleep_until(taken.started + STATS_INTERVAL).await;
        }
        let started = Instant::now();
        let figures = Arc::new(query().await?);
        *last = Some(Taken {
            started,
            figures: Arc::clone(&figures),
        });
        Ok(figures)
    }

    /// [`SharedStats::fresh`] within `wait`: a query that has not answered by then is
    /// dropped (a later caller starts another) and the caller told so.
    pub(crate) async fn fresh_within<F, Fut, E>(
        &self,
        wait: Duration,
        query: F,
    ) -> Result<Arc<T>, Unanswered<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match tokio::time::timeout(wait, self.fresh(query)).await {
            Ok(Ok(figures)) => Ok(figures),
            Ok(Err(error)) => Err(Unanswered::Failed(error)),
            Err(_) => Err(Unanswered::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A hundred callers at once share a query or two, and each gets figures taken by a
    /// query that started after it called; a later caller gets newer ones.
    #[test]
    fn callers_at_once_share_a_query_and_none_gets_figures_older_than_its_call() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let shared = Arc::new(SharedStats::<Instant>::default());
            let queries = Arc::new(AtomicUsize::new(0));
            let ask = |shared: Arc<SharedStats<Instant>>, queries: Arc<AtomicUsize>| async move {
                let called = Instant::now();
                let taken = shared
                    .fresh(|| async {
                        queries.fetch_add(1, Ordering::SeqCst);
                        let started = Instant::now();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok::<_, ()>(started)
                    })
                    .await
                    .unwrap();
                (called, *taken)
            };
            // Released together, so that they call at once however slowly they were
            // spawned.
            let start = Arc::new(tokio::sync::Barrier::new(100));
            let callers: Vec<_> = (0..100)
                .map(|_| {
                    let start = Arc::clone(&start);
                    let ask = ask(Arc::clone(&shared), Arc::clone(&queries));
                    tokio::spawn(async move {
                        start.wait().await;
                        ask.await
                    })
                })
                .collect();
            for caller in callers {
                let (called, taken) = caller.await.unwrap();
                assert!(
                    taken >= called,
                    "figures from a query started before the call"
                );
            }
            // A query or two; a few more where a loaded machine held some callers back
            // for a query's length (10 ms), and a hundred without the sharing.
            let at_once = queries.load(Ordering::SeqCst);
            assert!(
                (1..=10).contains(&at_once),
                "{at_once} queries for a hundred callers at once"
            );
            // A caller after them gets a query of its own, started after it called.
            let (called, taken) = ask(Arc::clone(&shared), Arc::clone(&queries)).await;
            assert!(taken >= called);
            assert_eq!(queries.load(Ordering::SeqCst), at_once + 1);
            // A failed query is not kept.
            let failed = shared
                .fresh(|| async { Err::<Instant, _>("shard gone") })
                .await;
            assert_eq!(failed.unwrap_err(), "shard gone");
            let (called, taken) = ask(Arc::clone(&shared), Arc::clone(&queries)).await;
            assert!(taken >= called);
        });
    }

    /// A query that never answers (a stalled shard) times its caller out, and callers
    /// behind it too; one after it starts a query of its own.
    #[test]
    fn a_query_that_never_answers_times_out_and_does_not_hold_the_next() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        // Shorter than the routes' wait: the test waits it out twice.
        const WAIT: Duration = Duration::from_millis(200);
        runtime.block_on(async {
            let shared = Arc::new(SharedStats::<u32>::default());
            let stalled = {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    shared
                        .fresh_within(WAIT, std::future::pending::<Result<u32, ()>>)
                        .await
                })
            };
            tokio::task::yield_now().await;
            let behind = shared
                .fresh_within(WAIT, || async { Ok::<u32, ()>(1) })
                .await;
            assert_eq!(behind, Err(Unanswered::TimedOut));
            assert_eq!(stalled.await.unwrap(), Err(Unanswered::TimedOut));
            let after = shared
                .fresh_within(WAIT, || async { Ok::<u32, ()>(2) })
                .await;
            assert_eq!(after.map(|figures| *figures), Ok(2));
            let failed = shared
                .fresh_within(WAIT, || async { Err::<u32, _>("gone") })
                .await;
            assert_eq!(failed, Err(Unanswered::Failed("gone")));
        });
    }
}
