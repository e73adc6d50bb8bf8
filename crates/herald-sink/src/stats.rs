//! Counters (lock-free, updated per request) and the latency histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use hdrhistogram::Histogram;

/// Statuses counted one by one: 200..=599 (what [`crate::Action`] may answer).
const STATUS_FIRST: u16 = 200;
const STATUS_COUNT: usize = 400;

/// Highest latency the histograms record, in microseconds (60 s); larger values are
/// clamped to it so a stray clock jump cannot make recording fail.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Lock-free counters shared by all connections.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) body_bytes: AtomicU64,
    pub(crate) verified: AtomicU64,
    pub(crate) verify_failed: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) closed_without_answer: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    pub(crate) tls_errors: AtomicU64,
    pub(crate) idle_timeouts: AtomicU64,
    pub(crate) records_dropped: AtomicU64,
    pub(crate) latency_missing: AtomicU64,
    statuses: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            requests: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            verify_failed: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            closed_without_answer: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            tls_errors: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            records_dropped: AtomicU64::new(0),
            latency_missing: AtomicU64::new(0),
            statuses: (0..STATUS_COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn answered(&self, status: u16) {
        if let Some(slot) = status
            .checked_sub(STATUS_FIRST)
            .and_then(|i| self.statuses.get(usize::from(i)))
        {
            bump(slot);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let statuses = self
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = load(c);
                // i < STATUS_COUNT = 400, so the sum fits in u16.
                (n > 0).then(|| (STATUS_FIRST + i as u16, n))
            })
            .collect();
        Stats {
            requests: load(&self.requests),
            body_bytes: load(&self.body_bytes),
            verified: load(&self.verified),
            verify_failed: load(&self.verify_failed),
            bad_requests: load(&self.bad_requests),
            closed_without_answer: load(&self.closed_without_answer),
            connections_accepted: load(&self.connections_accepted),
            connections_refused: load(&self.connections_refused),
            connections_open: load(&self.connections_open),
            tls_errors: load(&self.tls_errors),
            idle_timeouts: load(&self.idle_timeouts),
            records_dropped: load(&self.records_dropped),
            latency_missing: load(&self.latency_missing),
            statuses,
        }
    }
}

/// A snapshot of the sink's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Complete requests received (answered or not).
    pub requests: u64,
    /// Body bytes received in complete requests.
    pub body_bytes: u64,
    /// Requests whose signature verified (when verification is on).
    pub verified: u64,
    /// Requests whose signature did not verify (when verification is on).
    pub verify_failed: u64,
    /// Connections that sent something that is not HTTP/1.1 within the limits (each got
    /// a 4xx and was closed).
    pub bad_requests: u64,
    /// Requests answered by closing the connection ([`crate::Action::Close`]).
    pub closed_without_answer: u64,
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections closed at once because `connections_max` were open.
    pub connections_refused: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// TLS handshakes or records that failed.
    pub tls_errors: u64,
    /// Connections closed for being idle (or stalled mid-request) too long.
    pub idle_timeouts: u64,
    /// Requests not recorded because `requests_max` were already recorded.
    pub records_dropped: u64,
    /// Requests without a readable latency field (when latency is measured).
    pub latency_missing: u64,
    /// `(status, count)` of every status answered at least once, ascending.
    pub statuses: Vec<(u16, u64)>,
}

impl Stats {
    /// How many requests were answered with `status`.
    pub fn status_count(&self, status: u16) -> u64 {
        self.statuses
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// How many requests were answered with a 2xx status.
    pub fn successes(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (200..300).contains(s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A latency histogram in microseconds, 3 significant digits, up to [`LATENCY_US_MAX`].
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant histogram bounds are valid")
}

/// One histogram per connection (recorded without contention), merged on demand.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    live: Mutex<Vec<Arc<Mutex<Histogram<u64>>>>>,
    retired: Mutex<Option<Histogram<u64>>>,
}

impl Latencies {
    pub(crate) fn register(&self) -> Arc<Mutex<Histogram<u64>>> {
        let histogram = Arc::new(Mutex::new(new_histogram()));
        lock(&self.live).push(histogram.clone());
        histogram
    }

    /// A connection ended: fold its histogram into the retired one so the live list
    /// stays as long as the number of open connections. Both locks are held together
    /// (always live first, then retired) so that a concurrent [`Latencies::merged`]
    /// sees every sample exactly once.
    pub(crate) fn retire(&self, histogram: &Arc<Mutex<Histogram<u64>>>) {
        let mut live = lock(&self.live);
        let mut retired = lock(&self.retired);
        live.retain(|h| !Arc::ptr_eq(h, histogram));
        let done = lock(histogram);
        if done.is_empty() {
            return;
        }
        let merged = retired.get_or_insert_with(new_histogram);
        // Same bounds on both sides: adding cannot fail.
        merged.add(&*done).expect("histograms share bounds");
    }

    pub(crate) fn merged(&self) -> Histogram<u64> {
        let live = lock(&self.live);
        let retired = lock(&self.retired);
        let mut merged = new_histogram();
        if let Some(retired) = &*retired {
            merged.add(retired).expect("histograms share bounds");
        }
        for histogram in live.iter() {
            merged
                .add(&*lock(histogram))
                .expect("histograms share bounds");
        }
        merged
    }

    pub(crate) fn reset(&self) {
        let live = lock(&self.live);
        *lock(&self.retired) = None;
        for histogram in live.iter() {
            lock(histogram).reset();
        }
    }
}

/// Locks, ignoring poisoning: every structure guarded here stays consistent even if a
/// holder panicked (counters and histograms, no multi-step invariants).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Extracts a non-negative integer value of JSON member `"key":` from `body` without
/// parsing the document: the first occurrence wins. Good enough for a marker the
/// publisher controls, cheap enough for every request.
pub fn find_json_integer(body: &[u8], key: &str) -> Option<u64> {
    let mut needle = Vec::with_capacity(key.len() + 2);
    needle.push(b'"');
    needle.extend_from_slice(key.as_bytes());
    needle.push(b'"');
    let start = find(body, &needle)? + needle.len();
    let mut rest = body[start..]
        .iter()
        .copied()
        .skip_while(u8::is_ascii_whitespace);
    if rest.next()? != b':' {
        return None;
    }
    let mut value: u64 = 0;
    let mut digits = 0;
    for b in rest.skip_while(u8::is_ascii_whitespace) {
        if !b.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        digits += 1;
    }
    (digits > 0).then_some(value)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let i = from + haystack[from..].iter().position(|&b| b == first)?;
        if haystack.get(i..i + needle.len())? == needle {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_integer_extraction() {
        let cases: &[(&[u8], &str, Option<u64>)] = &[
            (br#"{"sent_ns":123}"#, "sent_ns", Some(123)),
            (br#"{"a":1, "sent_ns" : 42 ,"b":2}"#, "sent_ns", Some(42)),
            (br#"{"data":{"sent_ns":7}}"#, "sent_ns", Some(7)),
            (br#"{"sent_ns":"7"}"#, "sent_ns", None),
            (br#"{"sent_ns":-7}"#, "sent_ns", None),
            (br#"{"sent":1}"#, "sent_ns", None),
            (br#"{"sent_ns"}"#, "sent_ns", None),
            (br#"{"sent_ns":99999999999999999999999}"#, "sent_ns", None),
            (br#"{"xsent_ns":1,"sent_ns":2}"#, "sent_ns", Some(2)),
            (b"", "k", None),
        ];
        for (body, key, want) in cases {
            assert_eq!(
                find_json_integer(body, key),
                *want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    proptest! {
        #[test]
        fn finds_any_integer_among_noise(prefix in "[a-z ,:{}]{0,40}", value: u64, suffix in "[a-z ,:{}]{0,40}") {
            let body = format!("{prefix}\"marker_ns\":{value}{suffix}");
            prop_assert_eq!(find_json_integer(body.as_bytes(), "marker_ns"), Some(value));
        }

        #[test]
        fn never_panics(body: Vec<u8>) {
            let _ = find_json_integer(&body, "k");
        }
    }

    #[test]
    fn statuses_are_counted_and_out_of_range_ignored() {
        let counters = Counters::default();
        for status in [200, 200, 410, 599, 199, 600] {
            counters.answered(status);
        }
        let stats = counters.snapshot();
        assert_eq!(stats.statuses, [(200, 2), (410, 1), (599, 1)]);
        assert_eq!(stats.status_count(200), 2);
        assert_eq!(stats.status_count(500), 0);
        assert_eq!(stats.successes(), 2);
    }

    #[test]
    fn latencies_merge_live_and_retired() {
        let latencies = Latencies::default();
        let a = latencies.register();
        let b = latencies.register();
        lock(&a).record(10).unwrap();
        lock(&b).record(1000).unwrap();
        latencies.retire(&a);
        let merged = latencies.merged();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.max(), merged.highest_equivalent(1000));
        latencies.reset();
        assert_eq!(latencies.merged().len(), 0);
    }
}
