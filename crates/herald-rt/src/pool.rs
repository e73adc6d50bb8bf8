//! Per-shard connection pool bookkeeping, keyed by origin (scheme, host, port).
//!
//! The pool is generic over the connection type so that its accounting can be tested
//! without sockets. It is single-threaded (`Rc`/`RefCell`): a shard owns its pool.
//!
//! Accounting: each origin has `open` slots counted against `connections_per_origin_max`;
//! a slot is either a live connection (idle or in use) or a permit to open one. A
//! [`Lease`] owns one slot while a request runs. When a lease ends, its connection goes
//! to the longest waiting request if there is one, else to the idle list (keep-alive),
//! or, if the connection was closed, its slot is handed to a waiter or freed.
//!
//! Invariant: an origin has waiters only while all its slots are taken and none is idle.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use herald_core::FastHashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Connection-pool limits (part of [`ClientConfig`](crate::ClientConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Most connections (idle, in use or being opened) to one origin from one shard.
    /// Default 32: enough to keep a fast receiver busy, small enough that a slow one
    /// cannot absorb a shard's sockets.
    pub connections_per_origin_max: usize,
    /// Most requests queued for a connection to one origin once all connections are busy;
    /// beyond this `send` fails at once with `PoolFull`. Default 1024.
    pub waiters_per_origin_max: usize,
    /// Most connections from one shard to all origins together (file descriptors are
    /// finite). At the limit an idle connection of another origin is closed to make room;
    /// with none idle, `send` fails at once with `PoolFull`. Default 1024. A shard
    /// records such an attempt as `pool_full`: retried a minute later (doubled for each
    /// refusal in a row, up to half an hour), and
    /// not counted against the endpoint's health (the endpoints holding the connections
    /// are the busy ones, not this one) nor against the delivery's attempts (nothing was
    /// sent).
    pub connections_total_max: usize,
    /// An idle connection is closed after this long unused. Default 30 s: below the
    /// keep-alive timeout of common servers (nginx 75 s, Node 5 s is the outlier handled
    /// by the stale-connection retry).
    pub idle_timeout_ms: u64,
    /// Off the socket ring (`ClientConfig::socket_ring`, or a kernel without one), a
    /// connection idle for less than this is reused without first peeking at it for a
    /// close or for bytes nobody asked for. The check only narrows a race that remains
    /// anyway (the receiver may close, or write, after it and before it reads the
    /// request: half a round trip), so skipping it for a connection that was answered a
    /// moment ago widens that window by at most this much while saving one `recv(2)` per
    /// request on a busy origin. On the ring, what arrived while a connection was idle is
    /// known without a system call and asked at every reuse, whatever this says: a
    /// receiver that answered twice cannot have its extra answer taken for the next
    /// request's. Default 1 ms; 0 checks every reuse.
    pub liveness_check_after_idle_us: u64,
}

impl Default for PoolConfig {
    fn default() -> PoolConfig {
        PoolConfig {
            connections_per_origin_max: 32,
            waiters_per_origin_max: 1024,
            connections_total_max: 1024,
            idle_timeout_ms: 30_000,
            liveness_check_after_idle_us: 1_000,
        }
    }
}

/// Where a connection goes: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginKey {
    /// Whether the connection is TLS.
    pub https: bool,
    /// Host as written in the URL (lowercase). Shared: every request and every lease
    /// holds a copy of its key, and cloning must not allocate.
    pub host: Arc<str>,
    /// TCP port.
    pub port: u16,
}

enum Grant<C> {
    /// An idle connection handed over directly, and when it went idle.
    Reuse(C, Instant),
    /// A slot to open a new connection.
    Open,
}

struct Idle<C> {
    conn: C,
    /// When it joined the idle list, which is kept in that order (idle timeout).
    since: Instant,
    /// When the request before it released it (its idle time, for the liveness check):
    /// `since`, or earlier for one handed to a waiter that gave up before running.
    released: Instant,
}

struct WaiterSlot<C> {
    grant: RefCell<Option<Grant<C>>>,
    waker: RefCell<Option<Waker>>,
}

struct Origin<C> {
    idle: VecDeque<Idle<C>>,
    open: usize,
    waiters: VecDeque<Rc<WaiterSlot<C>>>,
}

impl<C> Origin<C> {
    fn new() -> Origin<C> {
        Origin {
            idle: VecDeque::new(),
            open: 0,
            waiters: VecDeque::new(),
        }
    }

    fn unused(&self) -> bool {
        self.open == 0 && self.waiters.is_empty()
    }
}

/// The pool of one shard.
pub(crate) struct Pool<C> {
    config: PoolConfig,
    origins: RefCell<FastHashMap<OriginKey, Origin<C>>>,
    /// Sum of every origin's `open`.
    total_open: Cell<usize>,
}

/// No connection slot and no place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolFull {
    /// The origin has `connections_per_origin_max` connections busy and
    /// `waiters_per_origin_max` requests waiting.
    OriginQueue,
    /// The shard has `connections_total_max` connections, none of them idle.
    ShardConnections,
}

/// One request's hold on a connection slot. Dropping it without
/// [`release`](Lease::release) means the connection was closed.
pub(crate) struct Lease<C> {
    pool: Rc<Pool<C>>,
    key: OriginKey,
    done: bool,
}

/// The outcome of [`Pool::checkout`].
pub(crate) struct Checkout<C> {
    /// The slot.
    pub(crate) lease: Lease<C>,
    /// An idle connection to reuse, or `None`: open one.
    pub(crate) conn: Option<C>,
    /// How long that connection sat idle: since the request before it released it
    /// (zero for a slot to open a connection in).
    pub(crate) idle_for: Duration,
}

impl<C> Pool<C> {
    pub(crate) fn new(config: PoolConfig) -> Pool<C> {
        Pool {
            config,
            origins: RefCell::new(FastHashMap::default()),
            total_open: Cell::new(0),
        }
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.config.idle_timeout_ms)
    }

    /// A connection slot for `key`: an idle connection, a permit to open one, or (when
    /// all of the origin's are busy) a place in its queue.
    pub(crate) async fn checkout(
        self: &Rc<Self>,
        key: &OriginKey,
        now: Instant,
    ) -> Result<Checkout<C>, PoolFull> {
        // Connections closed here are dropped after the borrow ends.
        let mut closed: Vec<C> = Vec::new();
        let slot = {
            let mut origins = self.origins.borrow_mut();
            if !origins.contains_key(key) {
                origins.insert(key.clone(), Origin::new());
            }
            let Some(origin) = origins.get_mut(key) else {
                unreachable!("inserted above");
            };
            // Most recently used first: it is the least likely to have been closed by
            // the peer, and the oldest ones age out.
            if let Some(idle) = origin.idle.pop_back() {
                if now.saturating_duration_since(idle.since) < self.idle_timeout() {
                    return Ok(Checkout {
                        lease: self.lease(key),
                        conn: Some(idle.conn),
                        idle_for: now.saturating_duration_since(idle.released),
                    });
                }
                // Too old, and so is everything older.
                closed.push(idle.conn);
                closed.extend(origin.idle.drain(..).map(|idle| idle.conn));
                origin.open -= closed.len();
                self.total_open.set(self.total_open.get() - closed.len());
            }
            if origin.open < self.config.connections_per_origin_max {
                if self.total_open.get() >= self.config.connections_total_max {
                    // The shard's socket budget is spent: close another origin's idle
                    // connection to make room, or refuse.
                    match evict_one_idle(&mut origins, key) {
                        Some(conn) => {
                            closed.push(conn);
                            self.total_open.set(self.total_open.get() - 1);
                        }
                        None => {
                            if origins.get(key).is_some_and(Origin::unused) {
                                origins.remove(key);
                            }
                            return Err(PoolFull::ShardConnections);
                        }
                    }
                }
                let Some(origin) = origins.get_mut(key) else {
                    unreachable!("inserted above and only other origins are evicted");
                };
                origin.open += 1;
                self.total_open.set(self.total_open.get() + 1);
                return Ok(Checkout {
                    lease: self.lease(key),
                    conn: None,
                    idle_for: Duration::ZERO,
                });
            }
            if origin.waiters.len() >= self.config.waiters_per_origin_max {
                return Err(PoolFull::OriginQueue);
            }
            let slot = Rc::new(WaiterSlot {
                grant: RefCell::new(None),
                waker: RefCell::new(None),
            });
            origin.waiters.push_back(slot.clone());
            slot
        };
        drop(closed);
        let grant = Wait {
            pool: self.clone(),
            key: key.clone(),
            slot,
            done: false,
        }
        .await;
        let (conn, idle_for) = match grant {
            // Idle from its release until this waiter runs, which may be a while after
            // the grant (a long turn of the shard in between).
            Grant::Reuse(conn, since) => {
                (Some(conn), Instant::now().saturating_duration_since(since))
            }
            Grant::Open => (None, Duration::ZERO),
        };
        Ok(Checkout {
            lease: self.lease(key),
            conn,
            idle_for,
        })
    }

    fn lease(self: &Rc<Self>, key: &OriginKey) -> Lease<C> {
        Lease {
            pool: self.clone(),
            key: key.clone(),
            done: false,
        }
    }

    /// A slot's connection is reusable: hand it to a waiter or keep it idle.
    /// `released`: when the request before released it (`now` but for a connection a
    /// waiter gave up).
    fn put_back(&self, key: &OriginKey, conn: C, now: Instant, released: Instant) {
        let mut origins = self.origins.borrow_mut();
        let Some(origin) = origins.get_mut(key) else {
            debug_assert!(false, "a lease outlived its origin");
            return;
        };
        if let Some(waiter) = origin.waiters.pop_front() {
            grant(&waiter, Grant::Reuse(conn, released));
        } else {
            origin.idle.push_back(Idle {
                conn,
                since: now,
                released,
            });
        }
    }

    /// A slot's connection is gone: give the slot to a waiter or free it.
    fn free_slot(&self, key: &OriginKey) {
        let mut origins = self.origins.borrow_mut();
        let Some(origin) = origins.get_mut(key) else {
            debug_assert!(false, "a lease outlived its origin");
            return;
        };
        if let Some(waiter) = origin.waiters.pop_front() {
            grant(&waiter, Grant::Open);
        } else {
            origin.open -= 1;
            self.total_open.set(self.total_open.get() - 1);
            if origin.unused() {
                origins.remove(key);
            }
        }
    }

    /// Closes idle connections unused for `idle_timeout_ms` and forgets origins
    /// without connections. Returns how many connections were closed.
    pub(crate) fn sweep(&self, now: Instant) -> usize {
        let mut closed = Vec::new();
        {
            let mut origins = self.origins.borrow_mut();
            let idle_timeout = self.idle_timeout();
            origins.retain(|_, origin| {
                // Oldest first; stop at the first still-fresh one.
                while let Some(idle) = origin.idle.front() {
                    if now.saturating_duration_since(idle.since) < idle_timeout {
                        break;
                    }
                    if let Some(idle) = origin.idle.pop_front() {
                        closed.push(idle.conn);
                        origin.open -= 1;
                    }
                }
                // An origin with waiters has no idle connections (invariant), so
                // nothing freed here is owed to a waiter.
                !origin.unused()
            });
        }
        self.total_open.set(self.total_open.get() - closed.len());
        // Connections are dropped (closed) outside the borrow.
        closed.len()
    }

    /// Idle connections to `key`.
    pub(crate) fn idle_count(&self, key: &OriginKey) -> usize {
        self.origins.borrow().get(key).map_or(0, |o| o.idle.len())
    }

    /// Slots in use or idle for `key`.
    #[cfg(test)]
    pub(crate) fn open_count(&self, key: &OriginKey) -> usize {
        self.origins.borrow().get(key).map_or(0, |o| o.open)
    }

    /// Requests queued for `key`.
    #[cfg(test)]
    pub(crate) fn waiter_count(&self, key: &OriginKey) -> usize {
        self.origins
            .borrow()
            .get(key)
            .map_or(0, |o| o.waiters.len())
    }

    /// Slots in use or idle, all origins.
    pub(crate) fn total_open(&self) -> usize {
        self.total_open.get()
    }

    /// Origins tracked.
    #[cfg(test)]
    pub(crate) fn origin_count(&self) -> usize {
        self.origins.borrow().len()
    }
}

/// Removes the oldest idle connection of any origin other than `except`.
fn evict_one_idle<C>(
    origins: &mut FastHashMap<OriginKey, Origin<C>>,
    except: &OriginKey,
) -> Option<C> {
    let (victim_key, since) = origins
        .iter()
        .filter(|(k, _)| *k != except)
        .filter_map(|(k, o)| o.idle.front().map(|idle| (k, idle.since)))
        .min_by_key(|(_, since)| *since)?;
    let _ = since;
    let victim_key = victim_key.clone();
    let origin = origins.get_mut(&victim_key)?;
    let idle = origin.idle.pop_front()?;
    origin.open -= 1;
    if origin.unused() {
        origins.remove(&victim_key);
    }
    Some(idle.conn)
}

fn grant<C>(waiter: &WaiterSlot<C>, grant: Grant<C>) {
    *waiter.grant.borrow_mut() = Some(grant);
    if let Some(waker) = waiter.waker.borrow_mut().take() {
        waker.wake();
    }
}

impl<C> Lease<C> {
    /// The request finished and the connection may carry another one.
    pub(crate) fn release(mut self, conn: C, now: Instant) {
        self.done = true;
        self.pool.put_back(&self.key, conn, now, now);
    }
}

impl<C> Drop for Lease<C> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.free_slot(&self.key);
        }
    }
}

struct Wait<C> {
    pool: Rc<Pool<C>>,
    key: OriginKey,
    slot: Rc<WaiterSlot<C>>,
    done: bool,
}

impl<C> Future for Wait<C> {
    type Output = Grant<C>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant<C>> {
        let this = self.get_mut();
        if let Some(grant) = this.slot.grant.borrow_mut().take() {
            this.done = true;
            return Poll::Ready(grant);
        }
        *this.slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<C> Unpin for Wait<C> {}

impl<C> Drop for Wait<C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The request gave up (timeout): leave the queue, and pass on anything granted
        // to us in the meantime so the slot is not lost.
        let granted = self.slot.grant.borrow_mut().take();
        match granted {
            // Back in the idle list from now (it is kept in that order), idle since its
            // release.
            Some(Grant::Reuse(conn, released)) => {
                self.pool
                    .put_back(&self.key, conn, Instant::now(), released)
            }
            Some(Grant::Open) => self.pool.free_slot(&self.key),
            None => {
                let mut origins = self.pool.origins.borrow_mut();
                if let Some(origin) = origins.get_mut(&self.key) {
                    origin.waiters.retain(|w| !Rc::ptr_eq(w, &self.slot));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    fn key(host: &str) -> OriginKey {
        OriginKey {
            https: false,
            host: host.into(),
            port: 80,
        }
    }

    fn pool(cap: usize, waiters: usize, idle_ms: u64) -> Rc<Pool<u32>> {
        Rc::new(Pool::new(PoolConfig {
            connections_per_origin_max: cap,
            waiters_per_origin_max: waiters,
            idle_timeout_ms: idle_ms,
            liveness_check_after_idle_us: 1_000,
            connections_total_max: 1024,
        }))
    }

    #[test]
    fn reuses_idle_connection_most_recent_first() {
        let pool = pool(4, 4, 1000);
        let k = key("a");
        let now = Instant::now();
        future::block_on(async {
            let a = pool.checkout(&k, now).await.unwrap();
            let b = pool.checkout(&k, now).await.unwrap();
            assert!(a.conn.is_none() && b.conn.is_none());
            assert_eq!(pool.open_count(&k), 2);
            a.lease.release(1, now);
            b.lease.release(2, now + Duration::from_millis(1));
            assert_eq!(pool.idle_count(&k), 2);
            let c = pool
                .checkout(&k, now + Duration::from_millis(2))
                .await
                .unwrap();
            assert_eq!(c.conn, Some(2));
            assert_eq!(pool.open_count(&k), 2);
            drop(c.lease); // closed
            assert_eq!(pool.open_count(&k), 1);
        });
    }

    #[test]
    fn expired_idle_connections_are_not_reused() {
        let pool = pool(4, 4, 100);
        let k = key("a");
        let now = Instant::now();
        future::block_on(async {
            let a = pool.checkout(&k, now).await.unwrap();
            a.lease.release(7, now);
            let later = now + Duration::from_millis(100);
            let b = pool.checkout(&k, later).await.unwrap();
            assert_eq!(b.conn, None, "idle for idle_timeout_ms: closed, not reused");
            assert_eq!(pool.open_count(&k), 1);
            assert_eq!(pool.idle_count(&k), 0);
        });
    }

    #[test]
    fn sweep_closes_expired_and_forgets_unused_origins() {
        let pool = pool(4, 4, 100);
        let now = Instant::now();
        future::block_on(async {
            for (host, at) in [("a", 0u64), ("b", 50)] {
                let c = pool.checkout(&key(host), now).await.unwrap();
                c.lease.release(1, now + Duration::from_millis(at));
            }
            assert_eq!(pool.sweep(now + Duration::from_millis(99)), 0);
            assert_eq!(pool.sweep(now + Duration::from_millis(100)), 1);
            assert_eq!(pool.origin_count(), 1);
            assert_eq!(pool.idle_count(&key("b")), 1);
            assert_eq!(pool.sweep(now + Duration::from_millis(150)), 1);
            assert_eq!(pool.origin_count(), 0);
        });
    }

    #[test]
    fn cap_queues_waiters_and_bounds_the_queue() {
        let pool = pool(1, 2, 1000);
        let k = key("a");
        let now = Instant::now();
        future::block_on(async {
            let first = pool.checkout(&k, now).await.unwrap();
            let mut w1 = Box::pin(pool.checkout(&k, now));
            let mut w2 = Box::pin(pool.checkout(&k, now));
            assert!(future::poll_once(&mut w1).await.is_none());
            assert!(future::poll_once(&mut w2).await.is_none());
            assert_eq!(pool.waiter_count(&k), 2);
            // Over the bound: an error at once.
            assert!(matches!(
                pool.checkout(&k, now).await,
                Err(PoolFull::OriginQueue)
            ));
            // A released connection goes straight to the first waiter.
            first.lease.release(9, now);
            let got = future::poll_once(&mut w1).await.unwrap().unwrap();
            assert_eq!(got.conn, Some(9));
            assert_eq!(pool.idle_count(&k), 0);
            // A closed connection's slot goes to the next waiter as a permit to open.
            drop(got.lease);
            let got2 = future::poll_once(&mut w2).await.unwrap().unwrap();
            assert_eq!(got2.conn, None);
            assert_eq!(pool.open_count(&k), 1);
            drop(got2.lease);
            assert_eq!(pool.open_count(&k), 0);
            assert_eq!(pool.origin_count(), 0);
        });
    }

    #[test]
    fn a_connection_counts_as_idle_from_its_release_even_through_a_waiter_that_gave_up() {
        let pool = pool(1, 4, 60_000);
        let k = key("a");
        let released = Instant::now() - Duration::from_millis(50);
        future::block_on(async {
            let first = pool.checkout(&k, released).await.unwrap();
            let mut waiter = Box::pin(pool.checkout(&k, released));
            assert!(future::poll_once(&mut waiter).await.is_none());
            // Handed to the waiter at its release, 50 ms ago; the waiter gives up
            // without running.
            first.lease.release(3, released);
            drop(waiter);
            assert_eq!(pool.idle_count(&k), 1);
            let again = pool.checkout(&k, Instant::now()).await.unwrap();
            assert_eq!(again.conn, Some(3));
            assert!(
                again.idle_for >= Duration::from_millis(50),
                "idle since its release, not since the waiter gave up: {:?}",
                again.idle_for
            );
        });
    }

    #[test]
    fn abandoned_waiter_passes_its_grant_on() {
        let pool = pool(1, 4, 1000);
        let k = key("a");
        let now = Instant::now();
        future::block_on(async {
            let first = pool.checkout(&k, now).await.unwrap();
            let mut w1 = Box::pin(pool.checkout(&k, now));
            let mut w2 = Box::pin(pool.checkout(&k, now));
            assert!(future::poll_once(&mut w1).await.is_none());
            assert!(future::poll_once(&mut w2).await.is_none());
            first.lease.release(5, now); // granted to w1...
            drop(w1); // ...which gave up before running: the connection moves on to w2.
            let got = future::poll_once(&mut w2).await.unwrap().unwrap();
            assert_eq!(got.conn, Some(5));
            // A waiter that gives up before any grant just leaves the queue.
            let mut w3 = Box::pin(pool.checkout(&k, now));
            assert!(future::poll_once(&mut w3).await.is_none());
            drop(w3);
            assert_eq!(pool.waiter_count(&k), 0);
            got.lease.release(5, now);
            assert_eq!(pool.idle_count(&k), 1);
            assert_eq!(pool.open_count(&k), 1);
        });
    }

    #[test]
    fn total_cap_evicts_the_oldest_idle_connection_of_another_origin() {
        let pool = Rc::new(Pool::new(PoolConfig {
            connections_per_origin_max: 4,
            waiters_per_origin_max: 4,
            idle_timeout_ms: 1000,
            liveness_check_after_idle_us: 1_000,
            connections_total_max: 2,
        }));
        let now = Instant::now();
        let later = |ms| now + Duration::from_millis(ms);
        future::block_on(async {
            let a = pool.checkout(&key("a"), now).await.unwrap();
            let b = pool.checkout(&key("b"), now).await.unwrap();
            a.lease.release(1, later(1));
            b.lease.release(2, later(2));
            assert_eq!(pool.total_open(), 2);
            // "c" needs a slot: the oldest idle connection (a's) is closed for it.
            let c = pool.checkout(&key("c"), later(3)).await.unwrap();
            assert_eq!(c.conn, None);
            assert_eq!(pool.total_open(), 2);
            assert_eq!(pool.open_count(&key("a")), 0);
            assert_eq!(pool.idle_count(&key("b")), 1);
            // "b" reuses its own idle connection without touching the budget.
            let b = pool.checkout(&key("b"), later(4)).await.unwrap();
            assert_eq!(b.conn, Some(2));
            // Nothing idle anywhere: refused at once.
            assert!(matches!(
                pool.checkout(&key("d"), later(5)).await,
                Err(PoolFull::ShardConnections)
            ));
            assert_eq!(pool.origin_count(), 2, "the refused origin is not kept");
            drop((b, c));
            assert_eq!(pool.total_open(), 0);
        });
    }

    proptest::proptest! {
        /// Random interleavings of checkouts, releases, closes and sweeps keep the
        /// accounting consistent and within the limits.
        #[test]
        fn accounting_stays_consistent(ops in proptest::collection::vec((0u8..4, 0usize..3, 0u64..200), 1..200)) {
            let pool = Rc::new(Pool::new(PoolConfig {
                connections_per_origin_max: 2,
                waiters_per_origin_max: 2,
                idle_timeout_ms: 100,
                liveness_check_after_idle_us: 1_000,
            connections_total_max: 4,
            }));
            let start = Instant::now();
            let mut held: Vec<Checkout<u32>> = Vec::new();
            let mut clock = 0u64;
            future::block_on(async {
                for (op, origin, step) in ops {
                    clock += step;
                    let now = start + Duration::from_millis(clock);
                    let k = key(["a", "b", "c"][origin]);
                    match op {
                        0 => {
                            // Never block: only take immediately available slots.
                            let mut fut = Box::pin(pool.checkout(&k, now));
                            if let Some(Ok(c)) = future::poll_once(&mut fut).await {
                                held.push(c);
                            }
                        }
                        1 if !held.is_empty() => {
                            let c = held.remove(origin % held.len());
                            c.lease.release(7, now);
                        }
                        2 if !held.is_empty() => {
                            drop(held.remove(origin % held.len()));
                        }
                        _ => {
                            pool.sweep(now);
                        }
                    }
                    let origins = pool.origins.borrow();
                    let sum: usize = origins.values().map(|o| o.open).sum();
                    assert_eq!(sum, pool.total_open.get());
                    assert!(sum <= 4);
                    for o in origins.values() {
                        assert!(o.open <= 2);
                        assert!(o.idle.len() <= o.open);
                        assert!(o.waiters.is_empty());
                    }
                    assert_eq!(sum, held.len() + origins.values().map(|o| o.idle.len()).sum::<usize>());
                }
            });
        }
    }

    #[test]
    fn origins_are_independent() {
        let pool = pool(1, 0, 1000);
        let now = Instant::now();
        future::block_on(async {
            let a = pool.checkout(&key("a"), now).await.unwrap();
            let b = pool.checkout(&key("b"), now).await.unwrap();
            assert!(matches!(
                pool.checkout(&key("a"), now).await,
                Err(PoolFull::OriginQueue)
            ));
            drop((a, b));
            assert_eq!(pool.origin_count(), 0);
        });
    }
}
