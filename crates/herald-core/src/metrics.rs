//! Counters and histograms for monitoring (Prometheus and the like): plain numbers,
//! monotonic since the dispatcher was created, never journaled.

/// Buckets of every [`Histogram`]: a dozen bounds cover three to four decades at the
/// resolution dashboards use, at 8 bytes each per histogram.
pub const HISTOGRAM_BUCKETS: usize = 12;

/// Bucket bounds of attempt latency (time from send to outcome), milliseconds: from a
/// fast local receiver up to the default 30 s request timeout.
pub const ATTEMPT_LATENCY_BOUNDS_MS: [u64; HISTOGRAM_BUCKETS] =
    [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];

/// A histogram with fixed bucket bounds, as Prometheus exposes them: `counts[i]` holds
/// the observations `v` with `bounds[i - 1] < v <= bounds[i]` (not cumulative; see
/// [`Histogram::cumulative`]); observations above the last bound count only in `count`
/// (the `+Inf` bucket is `count`). The unit is the one named by the field holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Inclusive upper bounds, ascending.
    pub bounds: &'static [u64; HISTOGRAM_BUCKETS],
    /// Observations per bucket.
    pub counts: [u64; HISTOGRAM_BUCKETS],
    /// Sum of every observation (saturating).
    pub sum: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these bounds.
    pub const fn new(bounds: &'static [u64; HISTOGRAM_BUCKETS]) -> Histogram {
        Histogram {
            bounds,
            counts: [0; HISTOGRAM_BUCKETS],
            sum: 0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, value: u64) {
        if let Some(bucket) = self.bounds.iter().position(|&bound| value <= bound) {
            self.counts[bucket] += 1;
        }
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
    }

    /// Cumulative counts (`<= bounds[i]`), as Prometheus's `le` buckets.
    pub fn cumulative(&self) -> [u64; HISTOGRAM_BUCKETS] {
        let mut total = 0;
        self.counts.map(|count| {
            total += count;
            total
        })
    }

    /// Adds `other` (same bounds) into this one, e.g. to sum shards.
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(
            self.bounds, other.bounds,
            "merging histograms of other bounds"
        );
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum = self.sum.saturating_add(other.sum);
        self.count += other.count;
    }
}

/// What a dispatcher did since it was created (live work only: replaying the journal
/// counts nothing). Monotonic; sum shards for totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Events accepted (published, test sends and operational events), duplicates not
    /// included.
    pub events_accepted: u64,
    /// Publishes answered as duplicates of an earlier event (idempotency key).
    pub events_duplicate: u64,
    /// Deliveries created.
    pub deliveries_created: u64,
    /// Deliveries ended with a 2xx.
    pub deliveries_succeeded: u64,
    /// Deliveries ended by a final answer (3xx, 4xx other than 408/429, 410).
    pub deliveries_failed: u64,
    /// Deliveries whose every attempt failed with a retryable error.
    pub deliveries_exhausted: u64,
    /// Deliveries ended because their webhook was disabled (by hand or automatically).
    pub deliveries_webhook_disabled: u64,
    /// Deliveries ended because their webhook was deleted.
    pub deliveries_webhook_deleted: u64,
    /// Deliveries ended because every signing secret had expired.
    pub deliveries_no_live_secret: u64,
    /// Attempts answered with a 2xx.
    pub attempts_succeeded: u64,
    /// Attempts that failed retryably (408, 429, 5xx, timeouts, connect/TLS/protocol
    /// errors, egress refusals).
    pub attempts_retryable: u64,
    /// Attempts that failed finally (3xx, other 4xx, 410).
    pub attempts_final: u64,
    /// Finished deliveries dropped from the delivery log for its limits (the oldest
    /// first: `log_finished_max`, a tenant's `log_finished_per_tenant_max`). None until
    /// the log is full: a run too short to fill it has not paid for evictions yet.
    pub deliveries_evicted: u64,
    /// Attempt latency (send to outcome), milliseconds
    /// ([`ATTEMPT_LATENCY_BOUNDS_MS`]).
    pub attempt_latency_ms: Histogram,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            events_accepted: 0,
            events_duplicate: 0,
            deliveries_created: 0,
            deliveries_succeeded: 0,
            deliveries_failed: 0,
            deliveries_exhausted: 0,
            deliveries_webhook_disabled: 0,
            deliveries_webhook_deleted: 0,
            deliveries_no_live_secret: 0,
            attempts_succeeded: 0,
            attempts_retryable: 0,
            attempts_final: 0,
            deliveries_evicted: 0,
            attempt_latency_ms: Histogram::new(&ATTEMPT_LATENCY_BOUNDS_MS),
        }
    }
}

impl Counters {
    /// Adds `other` into these counters, e.g. to sum shards, or to carry the counts of
    /// a dispatcher that was replaced by one rebuilt from the journal.
    pub fn merge(&mut self, other: &Counters) {
        self.events_accepted += other.events_accepted;
        self.events_duplicate += other.events_duplicate;
        self.deliveries_created += other.deliveries_created;
        self.deliveries_succeeded += other.deliveries_succeeded;
        self.deliveries_failed += other.deliveries_failed;
        self.deliveries_exhausted += other.deliveries_exhausted;
        self.deliveries_webhook_disabled += other.deliveries_webhook_disabled;
        self.deliveries_webhook_deleted += other.deliveries_webhook_deleted;
        self.deliveries_no_live_secret += other.deliveries_no_live_secret;
        self.attempts_succeeded += other.attempts_succeeded;
        self.attempts_retryable += other.attempts_retryable;
        self.attempts_final += other.attempts_final;
        self.deliveries_evicted += other.deliveries_evicted;
        self.attempt_latency_ms.merge(&other.attempt_latency_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::new(&ATTEMPT_LATENCY_BOUNDS_MS);
        // (value, bucket it lands in; None: above every bound)
        let cases: [(u64, Option<usize>); 7] = [
            (0, Some(0)),
            (5, Some(0)),
            (6, Some(1)),
            (1000, Some(7)),
            (1001, Some(8)),
            (30000, Some(11)),
            (30001, None),
        ];
        for (value, bucket) in cases {
            let before = h.counts;
            h.observe(value);
            let changed: Vec<usize> = (0..HISTOGRAM_BUCKETS)
                .filter(|&i| h.counts[i] != before[i])
                .collect();
            assert_eq!(changed, bucket.into_iter().collect::<Vec<_>>(), "{value}");
        }
        assert_eq!(h.count, 7);
        assert_eq!(h.sum, 5 + 6 + 1000 + 1001 + 30000 + 30001);
        let cumulative = h.cumulative();
        assert_eq!(cumulative[0], 2);
        assert_eq!(cumulative[HISTOGRAM_BUCKETS - 1], 6);
        assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
        let mut sum = Histogram::new(&ATTEMPT_LATENCY_BOUNDS_MS);
        sum.merge(&h);
        sum.merge(&h);
        assert_eq!((sum.count, sum.counts[0]), (14, 4));
    }

    #[test]
    fn counters_merge_every_field() {
        let mut one = Counters {
            events_accepted: 1,
            events_duplicate: 2,
            deliveries_created: 3,
            deliveries_succeeded: 4,
            deliveries_failed: 5,
            deliveries_exhausted: 6,
            deliveries_webhook_disabled: 7,
            deliveries_webhook_deleted: 8,
            deliveries_no_live_secret: 9,
            attempts_succeeded: 10,
            attempts_retryable: 11,
            attempts_final: 12,
            deliveries_evicted: 13,
            attempt_latency_ms: Histogram::new(&ATTEMPT_LATENCY_BOUNDS_MS),
        };
        one.attempt_latency_ms.observe(7);
        let mut sum = Counters::default();
        sum.merge(&one);
        sum.merge(&one);
        let doubled = Counters {
            events_accepted: 2,
            events_duplicate: 4,
            deliveries_created: 6,
            deliveries_succeeded: 8,
            deliveries_failed: 10,
            deliveries_exhausted: 12,
            deliveries_webhook_disabled: 14,
            deliveries_webhook_deleted: 16,
            deliveries_no_live_secret: 18,
            attempts_succeeded: 20,
            attempts_retryable: 22,
            attempts_final: 24,
            deliveries_evicted: 26,
            attempt_latency_ms: {
                let mut h = Histogram::new(&ATTEMPT_LATENCY_BOUNDS_MS);
                h.observe(7);
                h.observe(7);
                h
            },
        };
        assert_eq!(sum, doubled);
    }
}
