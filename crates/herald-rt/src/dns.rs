//! Name resolution off the executor thread, with a small per-shard cache.
//!
//! `getaddrinfo` blocks for as long as the network's resolvers take; running it on the
//! shard thread would stall every delivery of the shard. Lookups therefore run on
//! glommio's blocking thread pool (`spawn_blocking`), bounded in number per shard by a
//! semaphore. The permit belongs to the lookup, not to the caller: a caller that gives up
//! (its connect timeout) cannot free the slot while `getaddrinfo` still runs, so a
//! resolver that hangs holds at most `lookups_in_flight_max` blocking calls per shard,
//! however many deliveries time out waiting. One lookup runs per name at a time, and
//! every caller that needs the name meanwhile waits for it: a name whose servers do not
//! answer takes one slot, however many deliveries need it, and the shard's other names
//! are looked up beside it. An answer that arrives after its callers gave up is still
//! cached for the next attempt, a failure for at most [`FAILURE_TTL_MS`]. `getaddrinfo`
//! reports no TTL, so answers are cached for a fixed short time; caching never weakens
//! the egress guard because the guard judges the exact addresses that are then
//! connected to.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Most addresses kept from one answer: enough for dual-stack round-robin records,
/// bounded so a hostile zone cannot make us try hundreds of addresses.
pub const ADDRESSES_PER_NAME_MAX: usize = 8;

/// Resolver limits (part of [`ClientConfig`](crate::ClientConfig)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsConfig {
    /// How long an answer is reused. Default 30 s.
    pub cache_ttl_ms: u64,
    /// Most names cached per shard. Default 4096.
    pub cache_entries_max: usize,
    /// Most lookups running at once per shard; further lookups wait. Default 4. The
    /// shard's blocking thread pool has as many threads (`dns::blocking_pool`), so that
    /// many lookups do run at once: one name whose servers do not answer holds one of
    /// them, not every lookup of the shard.
    pub lookups_in_flight_max: u64,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            cache_ttl_ms: 30_000,
            cache_entries_max: 4096,
            lookups_in_flight_max: 4,
        }
    }
}

/// Most threads a shard's blocking pool is given for lookups, whatever
/// `lookups_in_flight_max` says: threads are cheap while idle, but not free.
pub(crate) const LOOKUP_THREADS_MAX: u64 = 64;

/// The blocking thread pool a shard's executor needs for `config`: one thread per lookup
/// allowed in flight (glommio's default is a single thread, which would run the
/// lookups one after the other behind the slowest), placed as glommio places its
/// default one: on the shard's CPU when the shard is pinned to `pinned_cpu`, anywhere
/// otherwise.
pub(crate) fn blocking_pool(
    config: &DnsConfig,
    pinned_cpu: Option<usize>,
) -> glommio::PoolPlacement {
    let threads = config.lookups_in_flight_max.clamp(1, LOOKUP_THREADS_MAX);
    let threads = usize::try_from(threads).unwrap_or(1);
    let cpu_set = pinned_cpu.and_then(|cpu| {
        let set = glommio::CpuSet::online().ok()?.filter(|l| l.cpu == cpu);
        (!set.is_empty()).then_some(set)
    });
    match cpu_set {
        Some(set) => glommio::PoolPlacement::Custom(vec![set; threads]),
        None => glommio::PoolPlacement::Unbound(threads),
    }
}

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The resolver answered with an error (no such name, no addresses, resolver down).
    #[error("cannot resolve {host}: {detail}")]
    Lookup {
        /// The name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
}

/// How long a failed lookup's answer is reused (or `cache_ttl_ms`, if shorter): a name
/// whose servers fail or do not answer is asked again at most this often, however many
/// deliveries need it meanwhile.
pub const FAILURE_TTL_MS: u64 = 5_000;

/// A lookup's answer: the addresses, or what the resolver said.
type Answer = Result<Rc<[IpAddr]>, String>;

struct CacheEntry {
    answer: Answer,
    expires: Instant,
}

/// A lookup under way: every caller that needs the name meanwhile waits for it, so one
/// name takes one of the shard's lookups however many deliveries wait for it.
#[derive(Default)]
struct Flight {
    answer: RefCell<Option<Answer>>,
    waiting: RefCell<Vec<Waker>>,
}

impl Flight {
    fn land(&self, answer: Answer) {
        *self.answer.borrow_mut() = Some(answer);
        for waker in self.waiting.take() {
            waker.wake();
        }
    }
}

/// A caller's wait for a [`Flight`]'s answer.
struct Boarded(Rc<Flight>);

impl std::future::Future for Boarded {
    type Output = Answer;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        if let Some(answer) = &*self.0.answer.borrow() {
            return Poll::Ready(answer.clone());
        }
        let mut waiting = self.0.waiting.borrow_mut();
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The blocking lookup: `getaddrinfo`, or a stand-in in tests.
type LookupFn = fn(&str) -> Result<Vec<IpAddr>, String>;

/// One shard's resolver.
pub(crate) struct Resolver {
    config: DnsConfig,
    /// Shared with lookup tasks that outlive their caller.
    cache: Rc<RefCell<HashMap<String, CacheEntry>>>,
    /// The lookups under way, by name.
    flights: Rc<RefCell<HashMap<String, Rc<Flight>>>>,
    in_flight: Rc<glommio::sync::Semaphore>,
    lookup: LookupFn,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("config", &self.config)
            .field("cached", &self.cache.borrow().len())
            .finish()
    }
}

/// An IP literal host as it appears in a URL (IPv6 possibly in brackets).
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

impl Resolver {
    pub(crate) fn new(config: DnsConfig) -> Resolver {
        Resolver::with_lookup(config, lookup_blocking)
    }

    fn with_lookup(config: DnsConfig, lookup: LookupFn) -> Resolver {
        Resolver {
            config,
            cache: Rc::new(RefCell::new(HashMap::new())),
            flights: Rc::new(RefCell::new(HashMap::new())),
            in_flight: Rc::new(glommio::sync::Semaphore::new(
                config.lookups_in_flight_max.max(1),
            )),
            lookup,
        }
    }

    /// The addresses of `host` (an IP literal is returned as is, without a lookup).
    pub(crate) async fn resolve(&self, host: &str) -> Result<Rc<[IpAddr]>, DnsError> {
        if let Some(ip) = ip_literal(host) {
            return Ok(Rc::from([ip]));
        }
        let key = host.to_ascii_lowercase();
        let cached = self
            .cache
            .borrow()
            .get(&key)
            .filter(|entry| entry.expires > Instant::now())
            .map(|entry| entry.answer.clone());
        let answer = match cached {
            Some(answer) => answer,
            None => Boarded(self.flight(key)).await,
        };
        answer.map_err(|detail| DnsError::Lookup {
            host: host.to_owned(),
            detail,
        })
    }

    /// The lookup of `key` under way, started if there is none.
    fn flight(&self, key: String) -> Rc<Flight> {
        if let Some(flight) = self.flights.borrow().get(&key) {
            return Rc::clone(flight);
        }
        let flight = Rc::new(Flight::default());
        self.flights
            .borrow_mut()
            .insert(key.clone(), Rc::clone(&flight));
        let (config, cache, flights, in_flight, lookup) = (
            self.config,
            Rc::clone(&self.cache),
            Rc::clone(&self.flights),
            Rc::clone(&self.in_flight),
            self.lookup,
        );
        let landing = Rc::clone(&flight);
        // Detached: it runs to the end of the blocking call even when every caller is
        // gone (their timeouts), and only then releases the permit; the answer is cached
        // for the next attempt.
        glommio::spawn_local(async move {
            // The semaphore is never closed, so acquiring only waits.
            let answer = match in_flight.acquire_static_permit(1).await {
                // Everyone who waited for it gave up before it could start: no lookup.
                Ok(_) if Rc::strong_count(&landing) <= 2 => None,
                Ok(permit) => {
                    let name = key.clone();
                    let answer: Answer = glommio::executor()
                        .spawn_blocking(move || lookup(&name))
                        .await
                        .map(Rc::<[IpAddr]>::from);
                    drop(permit);
                    insert(&config, &cache, key.clone(), answer.clone(), Instant::now());
                    Some(answer)
                }
                Err(error) => Some(Err(format!("resolver unavailable: {error}"))),
            };
            flights.borrow_mut().remove(&key);
            landing.land(answer.unwrap_or_else(|| Err("no caller waits".to_owned())));
        })
        .detach();
        flight
    }

    #[cfg(test)]
    fn insert(&self, key: String, addresses: Rc<[IpAddr]>, now: Instant) {
        insert(&self.config, &self.cache, key, Ok(addresses), now);
    }

    #[cfg(test)]
    pub(crate) fn cached_len(&self) -> usize {
        self.cache.borrow().len()
    }
}

fn insert(
    config: &DnsConfig,
    cache: &RefCell<HashMap<String, CacheEntry>>,
    key: String,
    answer: Answer,
    now: Instant,
) {
    let mut cache = cache.borrow_mut();
    if cache.len() >= config.cache_entries_max {
        cache.retain(|_, entry| entry.expires > now);
        if cache.len() >= config.cache_entries_max {
            // Still full of live entries: start over rather than track recency; a
            // miss only costs one lookup.
            cache.clear();
        }
    }
    if config.cache_entries_max > 0 {
        let ttl_ms = match answer {
            Ok(_) => config.cache_ttl_ms,
            Err(_) => config.cache_ttl_ms.min(FAILURE_TTL_MS),
        };
        let expires = now + Duration::from_millis(ttl_ms);
        cache.insert(key, CacheEntry { answer, expires });
    }
}

fn lookup_blocking(name: &str) -> Result<Vec<IpAddr>, String> {
    let answer = (name, 0u16).to_socket_addrs().map_err(|e| e.to_string())?;
    let mut addresses: Vec<IpAddr> = Vec::with_capacity(ADDRESSES_PER_NAME_MAX);
    for addr in answer {
        if addresses.len() == ADDRESSES_PER_NAME_MAX {
            break;
        }
        if !addresses.contains(&addr.ip()) {
            addresses.push(addr.ip());
        }
    }
    if addresses.is_empty() {
        return Err("no addresses".to_owned());
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
        run_with(glommio::PoolPlacement::Unbound(1), f)
    }

    fn run_with<T: Send + 'static>(
        pool: glommio::PoolPlacement,
        f: impl std::future::Future<Output = T> + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::default()
            .io_memory(128 * 1024)
            .ring_depth(64)
            .blocking_thread_pool_placement(pool)
            .make()
            .unwrap()
            .run(f)
    }

    /// Lookups that have started in `meeting_lookup`.
    static MET: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A lookup that answers only once four lookups are running at the same time (or
    /// fails after 5 s alone): run one after the other, none of them would answer.
    fn meeting_lookup(_name: &str) -> Result<Vec<IpAddr>, String> {
        use std::sync::atomic::Ordering;
        MET.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while MET.load(Ordering::SeqCst) < 4 {
            if Instant::now() >= deadline {
                return Err(format!("{} lookups met", MET.load(Ordering::SeqCst)));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(vec![IpAddr::from([192, 0, 2, 1])])
    }

    /// With the shard's blocking pool, as many lookups as `lookups_in_flight_max` run at
    /// once: a name whose servers hang holds one lookup, not the shard's every lookup.
    #[test]
    fn lookups_in_flight_run_at_once() {
        let config = DnsConfig::default();
        assert_eq!(config.lookups_in_flight_max, 4, "meeting_lookup meets four");
        let answers = run_with(blocking_pool(&config, None), async move {
            let resolver = Rc::new(Resolver::with_lookup(config, meeting_lookup));
            let lookups: Vec<_> = (0..4)
                .map(|i| {
                    let resolver = Rc::clone(&resolver);
                    glommio::spawn_local(async move {
                        resolver.resolve(&format!("meet-{i}.test")).await
                    })
                })
                .collect();
            let mut answers = Vec::new();
            for lookup in lookups {
                answers.push(lookup.await.map(|a| a.to_vec()));
            }
            answers
        });
        for answer in answers {
            assert_eq!(answer, Ok(vec![IpAddr::from([192, 0, 2, 1])]));
        }
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("127.0.0.1")),
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("[fe80::1]", Some("fe80::1")),
            ("example.com", None),
            ("[example.com]", None),
            ("127.1", None),
        ];
        for (host, expected) in cases {
            assert_eq!(
                ip_literal(host),
                expected.map(|e| e.parse().unwrap()),
                "{host}"
            );
        }
    }

    /// Blocking calls started and running by `slow_lookup`.
    static SLOW_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static SLOW_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    static SLOW_RELEASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// A resolver that hangs (as one does when its servers do not answer) until the test
    /// releases it, or 30 s pass: however slowly the test's callers run, the lookups are
    /// still hung while they give up.
    fn slow_lookup(_name: &str) -> Result<Vec<IpAddr>, String> {
        use std::sync::atomic::Ordering;
        SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
        SLOW_RUNNING.fetch_add(1, Ordering::SeqCst);
        let hung_since = std::time::Instant::now();
        while !SLOW_RELEASED.load(Ordering::SeqCst)
            && hung_since.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        SLOW_RUNNING.fetch_sub(1, Ordering::SeqCst);
        Ok(vec![IpAddr::from([192, 0, 2, 1])])
    }

    /// Callers that give up (their timeout) do not free the lookup's slot: with a hung
    /// resolver, no more than `lookups_in_flight_max` blocking calls are ever started,
    /// however many callers time out; the late answer is cached.
    #[test]
    fn callers_giving_up_do_not_multiply_blocking_lookups() {
        use std::sync::atomic::Ordering;
        let (started_while_hung, cached) = run(async {
            let resolver = Rc::new(Resolver::with_lookup(
                DnsConfig {
                    lookups_in_flight_max: 2,
                    ..DnsConfig::default()
                },
                slow_lookup,
            ));
            // Twenty callers for ten names, each giving up after 10 ms.
            for round in 0..2 {
                for i in 0..10 {
                    let resolver = Rc::clone(&resolver);
                    let name = format!("hung-{i}.test");
                    let gave_up = futures_lite::future::or(
                        async move { resolver.resolve(&name).await.map(|_| false) },
                        async {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                            Ok(true)
                        },
                    )
                    .await;
                    assert_eq!(gave_up, Ok(true), "round {round}, name {i}");
                }
            }
            let started_while_hung = SLOW_STARTED.load(Ordering::SeqCst);
            SLOW_RELEASED.store(true, Ordering::SeqCst);
            // The two lookups that started finish and are cached.
            for _ in 0..200 {
                if SLOW_RUNNING.load(Ordering::SeqCst) == 0 && resolver.cached_len() == 2 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            (started_while_hung, resolver.cached_len())
        });
        assert!(
            started_while_hung <= 2,
            "{started_while_hung} blocking lookups started while the resolver hung"
        );
        assert_eq!(cached, 2, "the late answers are cached");
        assert_eq!(
            SLOW_STARTED.load(Ordering::SeqCst),
            2,
            "blocking lookups started in all"
        );
    }

    /// Blocking calls started for a `hung-*` name by `hung_or_fast`, and those running.
    static HUNG_STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HUNG_RUNNING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A resolver whose `hung-*` names take 2 s and then fail (servers that do not
    /// answer); every other name answers at once.
    fn hung_or_fast(name: &str) -> Result<Vec<IpAddr>, String> {
        use std::sync::atomic::Ordering;
        if !name.starts_with("hung-") {
            return Ok(vec![IpAddr::from([192, 0, 2, 7])]);
        }
        HUNG_STARTED.fetch_add(1, Ordering::SeqCst);
        HUNG_RUNNING.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(2));
        HUNG_RUNNING.fetch_sub(1, Ordering::SeqCst);
        Err("timed out".to_owned())
    }

    /// Many deliveries to a name whose servers hang share one lookup: the shard's other
    /// lookups go on meanwhile, and the failure is kept for a while, not asked again by
    /// every delivery.
    #[test]
    fn a_hung_name_takes_one_lookup_however_many_wait_for_it() {
        use std::sync::atomic::Ordering;
        let config = DnsConfig {
            lookups_in_flight_max: 2,
            ..DnsConfig::default()
        };
        let (answers, other, hung_running_then, started, again) =
            run_with(blocking_pool(&config, None), async move {
                let resolver = Rc::new(Resolver::with_lookup(config, hung_or_fast));
                let waiting: Vec<_> = (0..10)
                    .map(|_| {
                        let resolver = Rc::clone(&resolver);
                        glommio::spawn_local(async move {
                            resolver.resolve("HUNG-1.test").await.map(|a| a.to_vec())
                        })
                    })
                    .collect();
                while HUNG_RUNNING.load(Ordering::SeqCst) == 0 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                // Another name is answered while the hung one is still being asked.
                let other = resolver.resolve("fast.test").await.map(|a| a.to_vec());
                let hung_running_then = HUNG_RUNNING.load(Ordering::SeqCst);
                let mut answers = Vec::new();
                for wait in waiting {
                    answers.push(wait.await);
                }
                let started = HUNG_STARTED.load(Ordering::SeqCst);
                let again = resolver.resolve("hung-1.test").await.map(|a| a.to_vec());
                (answers, other, hung_running_then, started, again)
            });
        assert_eq!(other, Ok(vec![IpAddr::from([192, 0, 2, 7])]));
        assert_eq!(hung_running_then, 1, "the other name did not wait for it");
        assert_eq!(started, 1, "one blocking lookup for ten callers");
        for answer in answers {
            assert_eq!(
                answer,
                Err(DnsError::Lookup {
                    host: "HUNG-1.test".to_owned(),
                    detail: "timed out".to_owned()
                })
            );
        }
        assert!(again.is_err());
        assert_eq!(
            HUNG_STARTED.load(Ordering::SeqCst),
            1,
            "the failure is kept, not asked again at once"
        );
    }

    #[test]
    fn names_are_resolved_off_thread_and_cached_with_a_bound() {
        let (first, cached_after_one, cached_after_three, error) = run(async {
            let resolver = Resolver::new(DnsConfig {
                cache_entries_max: 2,
                ..DnsConfig::default()
            });
            let first = resolver.resolve("localhost").await.unwrap();
            let cached_after_one = resolver.cached_len();
            // Literals are not cached; case is folded.
            resolver.resolve("127.0.0.1").await.unwrap();
            resolver.resolve("LOCALHOST").await.unwrap();
            let cached_still_one = resolver.cached_len();
            assert_eq!(cached_still_one, 1);
            // Entries beyond cache_entries_max evict (expired first, else everything).
            let now = Instant::now();
            let loopback: Rc<[IpAddr]> = Rc::from([IpAddr::from([127, 0, 0, 1])]);
            resolver.insert("b.test".to_owned(), loopback.clone(), now);
            resolver.insert("c.test".to_owned(), loopback, now);
            let cached_after_three = resolver.cached_len();
            let error = resolver.resolve("no-such-host.invalid").await.unwrap_err();
            (first.to_vec(), cached_after_one, cached_after_three, error)
        });
        assert!(first.iter().all(|ip| ip.is_loopback()), "{first:?}");
        assert!(first.len() <= ADDRESSES_PER_NAME_MAX);
        assert_eq!(cached_after_one, 1);
        assert!(
            cached_after_three <= 2,
            "cache bounded by cache_entries_max"
        );
        assert!(matches!(error, DnsError::Lookup { .. }));
        assert!(
            error.to_string().contains("no-such-host.invalid"),
            "{error}"
        );
    }
}
