//! Endpoint health: in-flight cap, token-bucket rate limit, circuit breaker and the
//! failing-since clock behind auto-disable. One [`Health`] per webhook; pure arithmetic on
//! `now_ms`.

use crate::webhook::EndpointLimits;

/// Default consecutive retryable failures that open the breaker.
pub const BREAKER_FAILURES_DEFAULT: u32 = 5;
/// Default first open period of the breaker. Short, because an open breaker holds back
/// every delivery to the endpoint, and most outages are short (a deploy, a restart):
/// each failed probe doubles the period (1, 2, 4, … s up to
/// [`BREAKER_OPEN_MS_MAX_DEFAULT`]), so an endpoint that comes back is probed again
/// within about as long as it was down, while one that stays down costs one probe per
/// period — a few probes in its first minute, then one per 10 minutes. (With a 30 s
/// first period, a 5 s outage held every delivery to the endpoint for 30 s.)
pub const BREAKER_OPEN_MS_DEFAULT: u64 = 1_000;
/// Default longest open period (the period doubles on each failed probe up to this):
/// the most an endpoint that recovered waits for its next probe.
pub const BREAKER_OPEN_MS_MAX_DEFAULT: u64 = 10 * 60_000;
/// Default auto-disable period: failing continuously for 5 days.
pub const DISABLE_AFTER_FAILING_MS_DEFAULT: u64 = 5 * 24 * 3600 * 1000;

/// Shard-wide health policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive retryable failures that open the breaker (at least 1).
    pub breaker_failures: u32,
    /// First open period.
    pub breaker_open_ms: u64,
    /// Longest open period.
    pub breaker_open_ms_max: u64,
    /// Failing (no success) for this long disables the webhook, at a failure that comes
    /// soon enough after the period is up ([`Health::restart_if_unobserved`]); a later
    /// failure starts a new run instead.
    pub disable_after_failing_ms: u64,
}

impl HealthPolicy {
    /// The least time past the end of a run's disable period after which a failure
    /// starts a new run ([`Health::restart_if_unobserved`]): a fifth of
    /// [`HealthPolicy::disable_after_failing_ms`] (a day of the default five).
    pub fn unobserved_restart_ms(&self) -> u64 {
        self.disable_after_failing_ms / 5
    }
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            breaker_failures: BREAKER_FAILURES_DEFAULT,
            breaker_open_ms: BREAKER_OPEN_MS_DEFAULT,
            breaker_open_ms_max: BREAKER_OPEN_MS_MAX_DEFAULT,
            disable_after_failing_ms: DISABLE_AFTER_FAILING_MS_DEFAULT,
        }
    }
}

/// Circuit breaker state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Breaker {
    /// Requests flow (within the other limits).
    Closed,
    /// No request until `until_ms`; then one probe.
    Open {
        /// End of the open period.
        until_ms: u64,
        /// Length of this open period (doubled on the next failed probe).
        open_ms: u64,
    },
    /// One probe is allowed; its outcome closes or re-opens the breaker.
    HalfOpen {
        /// The probe in flight, by its caller's key (no other request may start), or
        /// none yet. Requests started before the breaker opened may still be out: only
        /// the probe's failure re-opens the breaker.
        probe: Option<u64>,
        /// Length of the last open period.
        open_ms: u64,
    },
}

/// Whether a request may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Now,
    /// Not before this time (rate limit or open breaker).
    At(u64),
    /// Not until a request in flight finishes (in-flight cap or half-open probe).
    AfterOutcome,
}

/// What an outcome means for the endpoint's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// 2xx.
    Success,
    /// The endpoint answered, but not with success and not with a retryable failure
    /// (3xx, 4xx): it is up, so the breaker closes, but it is not healthy either.
    Responsive,
    /// A retryable failure: counts toward the breaker and auto-disable.
    Failure,
}

/// Health of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    /// Requests in flight.
    pub in_flight: u32,
    /// Consecutive retryable failures.
    pub consecutive_failures: u32,
    /// Start of the current run of failures without a success.
    pub failing_since_ms: Option<u64>,
    /// Breaker state.
    pub breaker: Breaker,
    /// Token bucket level, in thousandths of a token.
    tokens_milli: u64,
    /// When `tokens_milli` was last brought up to date.
    tokens_at_ms: u64,
}

impl Health {
    /// A healthy endpoint with a full bucket.
    pub fn new(now_ms: u64, limits: &EndpointLimits) -> Health {
        Health {
            in_flight: 0,
            consecutive_failures: 0,
            failing_since_ms: None,
            breaker: Breaker::Closed,
            tokens_milli: limits.rate.map_or(0, |r| u64::from(r.burst) * 1000),
            tokens_at_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: u64, limits: &EndpointLimits) {
        if let Some(rate) = limits.rate {
            let elapsed = now_ms.saturating_sub(self.tokens_at_ms);
            let cap = u64::from(rate.burst) * 1000;
            // per_s tokens per 1000 ms = per_s milli-tokens per ms.
            let add = elapsed.saturating_mul(u64::from(rate.per_s));
            self.tokens_milli = self.tokens_milli.saturating_add(add).min(cap);
            self.tokens_at_ms = self.tokens_at_ms.max(now_ms);
        }
    }

    /// Whether a request may start at `now_ms`. Moves an expired open breaker to
    /// half-open.
    pub fn admit(&mut self, now_ms: u64, limits: &EndpointLimits) -> Admit {
        if let Breaker::Open { until_ms, open_ms } = self.breaker {
            if now_ms < until_ms {
                return Admit::At(until_ms);
            }
            self.breaker = Breaker::HalfOpen {
                probe: None,
                open_ms,
            };
        }
        if let Breaker::HalfOpen { probe: Some(_), .. } = self.breaker {
            return Admit::AfterOutcome;
        }
        if self.in_flight >= limits.in_flight_max {
            return Admit::AfterOutcome;
        }
        if let Some(rate) = limits.rate {
            self.refill(now_ms, limits);
            if self.tokens_milli < 1000 {
                let missing = 1000 - self.tokens_milli;
                let wait_ms = missing.div_ceil(u64::from(rate.per_s));
                return Admit::At(now_ms.saturating_add(wait_ms));
            }
        }
        Admit::Now
    }

    /// Records the start of a request admitted by [`Health::admit`]. `request` is the
    /// caller's key for it, unique among the requests in flight (the dispatcher's
    /// delivery number: a delivery has one attempt out at a time); its
    /// [`Health::finish`] or [`Health::forget`] names it again.
    pub fn start(&mut self, now_ms: u64, limits: &EndpointLimits, request: u64) {
        self.in_flight += 1;
        if limits.rate.is_some() {
            self.refill(now_ms, limits);
            self.tokens_milli = self.tokens_milli.saturating_sub(1000);
        }
        if let Breaker::HalfOpen {
            probe: None,
            open_ms,
        } = self.breaker
        {
            self.breaker = Breaker::HalfOpen {
                probe: Some(request),
                open_ms,
            };
        }
    }

    /// Whether `request` is the half-open breaker's probe.
    fn is_probe(&self, request: u64) -> bool {
        matches!(self.breaker, Breaker::HalfOpen { probe: Some(p), .. } if p == request)
    }

    /// Records the end of the request started as `request`. Any request's success or
    /// answer closes the breaker (the endpoint is up); a failure re-opens a half-open
    /// breaker only if it is the probe's: a request started before the breaker opened
    /// tells nothing of the endpoint since.
    pub fn finish(&mut self, now_ms: u64, request: u64, signal: Signal, policy: &HealthPolicy) {
        let was_probe = self.is_probe(request);
        self.in_flight = self.in_flight.saturating_sub(1);
        match signal {
            Signal::Success => {
                self.consecutive_failures = 0;
                self.failing_since_ms = None;
                self.breaker = Breaker::Closed;
            }
            Signal::Responsive => {
                self.consecutive_failures = 0;
                self.breaker = Breaker::Closed;
            }
            Signal::Failure => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.failing_since_ms.get_or_insert(now_ms);
                match self.breaker {
                    Breaker::HalfOpen { open_ms, .. } if was_probe => {
                        // Not `clamp`: a policy with max < min must not panic; the
                        // first period then simply stays.
                        let open_ms = open_ms
                            .saturating_mul(2)
                            .min(policy.breaker_open_ms_max)
                            .max(policy.breaker_open_ms);
                        self.breaker = Breaker::Open {
                            until_ms: now_ms.saturating_add(open_ms),
                            open_ms,
                        };
                    }
                    Breaker::Closed
                        if self.consecutive_failures >= policy.breaker_failures.max(1) =>
                    {
                        self.breaker = Breaker::Open {
                            until_ms: now_ms.saturating_add(policy.breaker_open_ms),
                            open_ms: policy.breaker_open_ms,
                        };
                    }
                    // Failures of requests started before the breaker opened (or
                    // before its probe) change nothing more.
                    _ => {}
                }
            }
        }
    }

    /// Forgets the request started as `request`, which will never report or whose
    /// report says nothing of the endpoint (its webhook changed, the delivery was
    /// abandoned, no connection was had); if it was the probe, another may start.
    pub fn forget(&mut self, request: u64) {
        if self.is_probe(request) {
            if let Breaker::HalfOpen { open_ms, .. } = self.breaker {
                self.breaker = Breaker::HalfOpen {
                    probe: None,
                    open_ms,
                };
            }
        }
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// After a restart: forgets every request in flight (nothing is any more), and
    /// gives an endpoint that failed the breaker's count of requests in a row, whose
    /// breaker a checkpoint does not keep, one probe before any other request (rather
    /// than as many as its in-flight cap allows, to an endpoint that is likely down).
    pub fn restarted(&mut self, policy: &HealthPolicy) {
        self.in_flight = 0;
        match self.breaker {
            Breaker::HalfOpen { open_ms, .. } => {
                self.breaker = Breaker::HalfOpen {
                    probe: None,
                    open_ms,
                };
            }
            Breaker::Closed if self.consecutive_failures >= policy.breaker_failures.max(1) => {
                self.breaker = Breaker::HalfOpen {
                    probe: None,
                    open_ms: policy.breaker_open_ms,
                };
            }
            Breaker::Closed | Breaker::Open { .. } => {}
        }
    }

    /// Before a failure at `now_ms` is recorded: ends the failing run when the failure
    /// comes too long after the run's disable period was up, so that it starts a new
    /// run rather than disable the webhook. Too long: the later of the policy's
    /// [`HealthPolicy::unobserved_restart_ms`], the breaker's longest open period and
    /// `longest_wait_ms`, the longest the endpoint's own deliveries wait between two
    /// attempts (its retry schedule's longest delay with jitter, a `Retry-After`, the
    /// request timeout). The webhook is still
    /// enabled then, so no failure came in that time (each failure past the period
    /// disables it), and nothing says the endpoint failed while it was quiet: an
    /// endpoint that failed, went quiet (a weekly event, an outage over a long weekend)
    /// and fails once more a week later is not disabled for that one failure, while one
    /// that keeps failing, by its retries or by new events, is disabled a period after
    /// its first failure. A quiet spell shorter than that wait is not told from a
    /// retry's delay: with a schedule of multi-day delays, a failure a few quiet days
    /// after the period was up still disables. Decided from the run's start alone, which
    /// checkpoints keep, and from the webhook's and the dispatcher's configuration, so
    /// replay decides alike while the configuration stays.
    pub fn restart_if_unobserved(
        &mut self,
        now_ms: u64,
        policy: &HealthPolicy,
        longest_wait_ms: u64,
    ) {
        // An open breaker holds the endpoint's attempts back for up to its longest period.
        let gap = policy
            .unobserved_restart_ms()
            .max(longest_wait_ms)
            .max(policy.breaker_open_ms_max);
        let unobserved = self.failing_since_ms.is_some_and(|since| {
            now_ms.saturating_sub(since) >= policy.disable_after_failing_ms.saturating_add(gap)
        });
        if unobserved {
            self.failing_since_ms = None;
        }
    }

    /// Whether the endpoint has been failing for the auto-disable period at `now_ms`.
    pub fn should_disable(&self, now_ms: u64, policy: &HealthPolicy) -> bool {
        self.failing_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) >= policy.disable_after_failing_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::RateLimit;

    fn limits() -> EndpointLimits {
        EndpointLimits {
            in_flight_max: 2,
            ..EndpointLimits::default()
        }
    }

    #[test]
    fn in_flight_cap() {
        let l = limits();
        let mut h = Health::new(0, &l);
        for _ in 0..2 {
            assert_eq!(h.admit(0, &l), Admit::Now);
            h.start(0, &l, 1);
        }
        assert_eq!(h.admit(0, &l), Admit::AfterOutcome);
        h.finish(1, 1, Signal::Success, &HealthPolicy::default());
        assert_eq!(h.admit(1, &l), Admit::Now);
    }

    #[test]
    fn token_bucket() {
        let l = EndpointLimits {
            in_flight_max: 100,
            rate: Some(RateLimit {
                per_s: 10,
                burst: 3,
            }),
            ..EndpointLimits::default()
        };
        let mut h = Health::new(1_000, &l);
        for _ in 0..3 {
            assert_eq!(h.admit(1_000, &l), Admit::Now);
            h.start(1_000, &l, 1);
        }
        // One token per 100 ms.
        assert_eq!(h.admit(1_000, &l), Admit::At(1_100));
        assert_eq!(h.admit(1_050, &l), Admit::At(1_100));
        assert_eq!(h.admit(1_100, &l), Admit::Now);
        h.start(1_100, &l, 1);
        // Long idle refills only up to the burst.
        for _ in 0..3 {
            assert_eq!(h.admit(100_000, &l), Admit::Now);
            h.start(100_000, &l, 1);
        }
        assert!(matches!(h.admit(100_000, &l), Admit::At(_)));
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let l = EndpointLimits::default();
        let p = HealthPolicy {
            breaker_failures: 3,
            breaker_open_ms: 1_000,
            breaker_open_ms_max: 3_000,
            disable_after_failing_ms: 1_000_000,
        };
        let mut h = Health::new(0, &l);
        for t in [0, 1_000, 2_000] {
            assert_eq!(h.admit(t, &l), Admit::Now);
            h.start(t, &l, 1);
            h.finish(t, 1, Signal::Failure, &p);
        }
        assert_eq!(
            h.breaker,
            Breaker::Open {
                until_ms: 3_000,
                open_ms: 1_000
            }
        );
        assert_eq!(h.admit(2_500, &l), Admit::At(3_000));
        // Half-open: one probe only.
        assert_eq!(h.admit(3_000, &l), Admit::Now);
        h.start(3_000, &l, 1);
        assert_eq!(h.admit(3_000, &l), Admit::AfterOutcome);
        // Probe fails: open again, period doubled.
        h.finish(3_010, 1, Signal::Failure, &p);
        assert_eq!(
            h.breaker,
            Breaker::Open {
                until_ms: 5_010,
                open_ms: 2_000
            }
        );
        // Failing again: capped at the max.
        assert_eq!(h.admit(5_010, &l), Admit::Now);
        h.start(5_010, &l, 1);
        h.finish(5_010, 1, Signal::Failure, &p);
        assert_eq!(
            h.breaker,
            Breaker::Open {
                until_ms: 8_010,
                open_ms: 3_000
            }
        );
        // Probe succeeds: closed.
        assert_eq!(h.admit(8_010, &l), Admit::Now);
        h.start(8_010, &l, 1);
        h.finish(8_020, 1, Signal::Success, &p);
        assert_eq!(h.breaker, Breaker::Closed);
        assert_eq!(h.failing_since_ms, None);
        assert_eq!(h.consecutive_failures, 0);
    }

    /// Runs one endpoint under the default policy, down (every request fails) until
    /// `up_at_ms`, each admitted request taking `answer_ms`, one request whenever the
    /// endpoint admits one. Returns when the first success started and how many
    /// requests were sent before it.
    fn outage(up_at_ms: u64, answer_ms: u64) -> (u64, u64) {
        let l = EndpointLimits {
            in_flight_max: 1,
            ..EndpointLimits::default()
        };
        let p = HealthPolicy::default();
        let mut h = Health::new(0, &l);
        let (mut now, mut sent) = (0, 0);
        loop {
            match h.admit(now, &l) {
                Admit::Now => {}
                Admit::At(at) => {
                    now = at;
                    continue;
                }
                Admit::AfterOutcome => unreachable!("one request at a time finishes first"),
            }
            h.start(now, &l, 1);
            sent += 1;
            let started = now;
            now += answer_ms;
            if started >= up_at_ms {
                h.finish(now, 1, Signal::Success, &p);
                return (started, sent);
            }
            h.finish(now, 1, Signal::Failure, &p);
        }
    }

    #[test]
    fn default_breaker_follows_short_outages_and_backs_off_from_long_ones() {
        // A 5 s outage: the breaker opens after 5 failures, and the probes (1, 2, 4 s
        // apart) find the endpoint back at most about the outage's length later.
        let (first_success, sent) = outage(5_000, 10);
        assert!(
            (5_000..=10_000).contains(&first_success),
            "a 5 s outage held the endpoint until {first_success} ms"
        );
        assert!(sent <= 10, "{sent} requests to an endpoint down for 5 s");
        // Shorter than the first open period: back within it.
        let (first_success, _) = outage(500, 10);
        assert!(first_success <= 500 + 1_000 + 50, "{first_success}");
        // A day down: the period grows to the maximum, so probes stay rare.
        let day_ms = 24 * 3_600_000;
        let (first_success, sent) = outage(day_ms, 10);
        let probes_max = day_ms / BREAKER_OPEN_MS_MAX_DEFAULT + 20;
        assert!(
            sent <= probes_max,
            "{sent} requests in a day down (at most {probes_max})"
        );
        assert!(
            first_success <= day_ms + BREAKER_OPEN_MS_MAX_DEFAULT + 100,
            "{first_success}"
        );
    }

    #[test]
    fn responsive_probe_closes_but_keeps_failing_clock() {
        let l = EndpointLimits::default();
        let p = HealthPolicy {
            breaker_failures: 1,
            ..HealthPolicy::default()
        };
        let mut h = Health::new(0, &l);
        h.start(0, &l, 1);
        h.finish(5, 1, Signal::Failure, &p);
        assert!(matches!(h.breaker, Breaker::Open { .. }));
        let until = match h.breaker {
            Breaker::Open { until_ms, .. } => until_ms,
            _ => unreachable!(),
        };
        assert_eq!(h.admit(until, &l), Admit::Now);
        h.start(until, &l, 1);
        h.forget(1);
        // A forgotten probe frees the probe slot.
        assert_eq!(h.admit(until, &l), Admit::Now);
        h.start(until, &l, 1);
        h.finish(until, 1, Signal::Responsive, &p);
        assert_eq!(h.breaker, Breaker::Closed);
        assert_eq!(h.failing_since_ms, Some(5));
    }

    #[test]
    fn only_the_probe_decides_a_half_open_breaker() {
        let l = EndpointLimits {
            in_flight_max: 10,
            ..EndpointLimits::default()
        };
        let p = HealthPolicy {
            breaker_failures: 2,
            breaker_open_ms: 1_000,
            breaker_open_ms_max: 60_000,
            disable_after_failing_ms: 1_000_000,
        };
        let mut h = Health::new(0, &l);
        // Requests 1..=5 out at once; two failures open the breaker, 3..=5 still out.
        for request in 1..=5 {
            assert_eq!(h.admit(0, &l), Admit::Now);
            h.start(0, &l, request);
        }
        h.finish(10, 1, Signal::Failure, &p);
        h.finish(10, 2, Signal::Failure, &p);
        let open = Breaker::Open {
            until_ms: 1_010,
            open_ms: 1_000,
        };
        assert_eq!(h.breaker, open);
        // Half-open: request 6 is the probe.
        assert_eq!(h.admit(1_010, &l), Admit::Now);
        h.start(1_010, &l, 6);
        // An earlier request's failure is not the probe's: the breaker stays half-open
        // and admits no second probe.
        h.finish(1_020, 3, Signal::Failure, &p);
        assert_eq!(
            h.breaker,
            Breaker::HalfOpen {
                probe: Some(6),
                open_ms: 1_000
            }
        );
        assert_eq!(h.admit(1_020, &l), Admit::AfterOutcome);
        // Nor does forgetting an earlier request free the probe's slot.
        h.forget(4);
        assert_eq!(h.admit(1_020, &l), Admit::AfterOutcome);
        // The probe's failure re-opens it, the period doubled.
        h.finish(1_030, 6, Signal::Failure, &p);
        assert_eq!(
            h.breaker,
            Breaker::Open {
                until_ms: 3_030,
                open_ms: 2_000
            }
        );
        // Request 5, out since before the breaker opened, answers: the endpoint is up.
        h.finish(1_040, 5, Signal::Success, &p);
        assert_eq!(h.breaker, Breaker::Closed);
        assert_eq!(h.in_flight, 0);
    }

    #[test]
    fn inverted_open_periods_do_not_panic() {
        let l = EndpointLimits::default();
        let p = HealthPolicy {
            breaker_failures: 1,
            breaker_open_ms: 1_000,
            breaker_open_ms_max: 10,
            ..HealthPolicy::default()
        };
        let mut h = Health::new(0, &l);
        h.start(0, &l, 1);
        h.finish(0, 1, Signal::Failure, &p);
        assert_eq!(h.admit(1_000, &l), Admit::Now);
        h.start(1_000, &l, 1);
        h.finish(1_000, 1, Signal::Failure, &p);
        assert_eq!(
            h.breaker,
            Breaker::Open {
                until_ms: 2_000,
                open_ms: 1_000
            }
        );
    }

    #[test]
    fn auto_disable_clock() {
        let l = EndpointLimits::default();
        let p = HealthPolicy::default();
        let mut h = Health::new(0, &l);
        assert!(!h.should_disable(u64::MAX, &p));
        h.start(10, &l, 1);
        h.finish(10, 1, Signal::Failure, &p);
        assert!(!h.should_disable(10 + p.disable_after_failing_ms - 1, &p));
        assert!(h.should_disable(10 + p.disable_after_failing_ms, &p));
        h.start(20, &l, 1);
        h.finish(20, 1, Signal::Success, &p);
        assert!(!h.should_disable(u64::MAX, &p));
    }

    /// A failure past the disable period by the restart gap starts a new run (the
    /// webhook was not disabled, so no failure came in that gap); one within the gap
    /// leaves the run as it is, and the caller disables the webhook.
    #[test]
    fn a_failure_after_an_unobserved_gap_starts_a_new_run() {
        let l = EndpointLimits::default();
        let p = HealthPolicy::default();
        let period = p.disable_after_failing_ms;
        let gap = p.unobserved_restart_ms();
        assert_eq!(gap, 24 * 3600 * 1000);
        let fail = |h: &mut Health, at: u64, longest_wait_ms: u64| {
            h.start(at, &l, at);
            h.restart_if_unobserved(at, &p, longest_wait_ms);
            h.finish(at, at, Signal::Failure, &p);
        };
        let mut h = Health::new(0, &l);
        fail(&mut h, 10, 0);
        let late = 10 + period + gap;
        fail(&mut h, late, 0);
        assert_eq!(h.failing_since_ms, Some(late));
        assert!(!h.should_disable(late, &p));

        let mut h = Health::new(0, &l);
        fail(&mut h, 10, 0);
        let within = 10 + period + gap - 1;
        fail(&mut h, within, 0);
        assert_eq!(h.failing_since_ms, Some(10));
        assert!(h.should_disable(within, &p));

        // An endpoint whose deliveries wait longer between attempts than the policy's
        // gap: the gap is that wait.
        let wait = 2 * gap;
        let mut h = Health::new(0, &l);
        fail(&mut h, 10, wait);
        fail(&mut h, late, wait);
        assert_eq!(h.failing_since_ms, Some(10));
        assert!(h.should_disable(late, &p));
        fail(&mut h, 10 + period + wait, wait);
        assert_eq!(h.failing_since_ms, Some(10 + period + wait));

        // A breaker that stays open longer than the gap holds the endpoint's attempts
        // back as long: the gap is that period.
        let held = HealthPolicy {
            breaker_open_ms_max: 2 * gap,
            ..p
        };
        let mut h = Health::new(0, &l);
        for at in [10, late] {
            h.start(at, &l, at);
            h.restart_if_unobserved(at, &held, 0);
            h.finish(at, at, Signal::Failure, &held);
        }
        assert_eq!(h.failing_since_ms, Some(10));
        assert!(h.should_disable(late, &held));
    }
}
