//! Receiver behaviour models: what a simulated endpoint answers, and after how long.

use herald_core::{AttemptResult, TransportError};
use herald_http::RetryAfter;
use rand::Rng;

const SECOND_MS: u64 = 1_000;
const HOUR_MS: u64 = 3_600 * SECOND_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How one endpoint behaves for the whole run.
#[derive(Clone, Debug, PartialEq)]
pub enum Behaviour {
    /// Answers 2xx quickly.
    Healthy,
    /// Answers 2xx, slowly; sometimes slower than the request timeout.
    Slow {
        /// Longest answer time.
        latency_ms_max: u64,
    },
    /// Fails with a retryable error (5xx or a transport error, or no connection for the
    /// driver to send on: `pool_full`, which never reaches it) with probability `p_fail`.
    Flaky {
        /// Probability of failure per request.
        p_fail: f64,
    },
    /// Answers 429 with `Retry-After` with probability `p_limited`.
    RateLimited {
        /// Probability of a 429 per request.
        p_limited: f64,
        /// The `Retry-After` it asks for.
        retry_after_s: u64,
    },
    /// Answers 410 Gone from its `after`-th request on (earlier ones succeed).
    GoneAfter {
        /// Requests answered normally before the first 410.
        after: u32,
    },
    /// Answers a non-retryable 4xx or 3xx with probability `p_reject`.
    Rejecting {
        /// Probability of a final failure per request.
        p_reject: f64,
    },
    /// Never answers within the timeout with probability `p_timeout`.
    TimingOut {
        /// Probability of a timeout per request.
        p_timeout: f64,
    },
    /// Refuses connections between `from_ms` and `until_ms` (outages of hours to days),
    /// healthy otherwise.
    Down {
        /// Start of the outage (virtual Unix ms).
        from_ms: u64,
        /// End of the outage.
        until_ms: u64,
    },
}

/// What the endpoint did with one request: when the driver learns the outcome, and the
/// outcome. `received` tells whether the receiver saw the request at all (a refused
/// connection never reaches it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Milliseconds from sending to the outcome.
    pub after_ms: u64,
    /// The outcome as the driver reports it.
    pub result: AttemptResult,
    /// Whether the receiver got the request.
    pub received: bool,
}

impl Behaviour {
    /// A random behaviour for an endpoint of a run starting at `start_ms`.
    pub fn random(rng: &mut impl Rng, start_ms: u64) -> Behaviour {
        match rng.random_range(0..100) {
            0..=34 => Behaviour::Healthy,
            35..=44 => Behaviour::Slow {
                latency_ms_max: rng.random_range(1..=60) * SECOND_MS,
            },
            45..=59 => Behaviour::Flaky {
                p_fail: rng.random_range(0.1..0.9),
            },
            60..=67 => Behaviour::RateLimited {
                p_limited: rng.random_range(0.2..0.8),
                retry_after_s: rng.random_range(0..=7_200),
            },
            68..=73 => Behaviour::GoneAfter {
                after: rng.random_range(0..6),
            },
            74..=81 => Behaviour::Rejecting {
                p_reject: rng.random_range(0.05..0.5),
            },
            82..=89 => Behaviour::TimingOut {
                p_timeout: rng.random_range(0.2..0.9),
            },
            _ => {
                let from_ms = start_ms + rng.random_range(0..2 * DAY_MS);
                let days = rng.random_range(0.1..8.0);
                Behaviour::Down {
                    from_ms,
                    until_ms: from_ms + (days * DAY_MS as f64) as u64,
                }
            }
        }
    }

    /// The answer to the `nth` request (0-based) sent at `now_ms`, given the webhook's
    /// connect and request timeouts.
    pub fn answer(
        &self,
        rng: &mut impl Rng,
        nth: u32,
        now_ms: u64,
        connect_timeout_ms: u64,
        request_timeout_ms: u64,
    ) -> Answer {
        let ok = |rng: &mut dyn rand::RngCore| Answer {
            after_ms: rng.random_range(1..200),
            result: AttemptResult::Response {
                status: [200, 201, 202, 204][rng.random_range(0..4)],
                retry_after: None,
            },
            received: true,
        };
        let status = |after_ms: u64, status: u16, retry_after: Option<RetryAfter>| Answer {
            after_ms,
            result: AttemptResult::Response {
                status,
                retry_after,
            },
            received: true,
        };
        let transport = |after_ms: u64, error: TransportError, received: bool| Answer {
            after_ms,
            result: AttemptResult::Transport(error),
            received,
        };
        match *self {
            Behaviour::Healthy => ok(rng),
            Behaviour::Slow { latency_ms_max } => {
                let latency_ms = rng.random_range(1..=latency_ms_max);
                if latency_ms > request_timeout_ms {
                    transport(request_timeout_ms, TransportError::RequestTimeout, true)
                } else {
                    status(latency_ms, 200, None)
                }
            }
            Behaviour::Flaky { p_fail } => {
                if !rng.random_bool(p_fail) {
                    return ok(rng);
                }
                match rng.random_range(0..7) {
                    0 => status(rng.random_range(1..500), 500, None),
                    1 => status(rng.random_range(1..500), 502, None),
                    2 => status(
                        rng.random_range(1..500),
                        503,
                        rng.random_bool(0.5)
                            .then(|| RetryAfter::DelaySeconds(rng.random_range(0..600))),
                    ),
                    3 => transport(rng.random_range(1..50), TransportError::Connect, false),
                    4 => transport(connect_timeout_ms, TransportError::ConnectTimeout, false),
                    // The driver had no connection to send on: nothing reached the
                    // receiver, and the attempt is given back.
                    5 => transport(1, TransportError::PoolFull, false),
                    _ => transport(rng.random_range(1..500), TransportError::Protocol, true),
                }
            }
            Behaviour::RateLimited {
                p_limited,
                retry_after_s,
            } => {
                if rng.random_bool(p_limited) {
                    let retry_after = if rng.random_bool(0.5) {
                        RetryAfter::DelaySeconds(retry_after_s)
                    } else {
                        let at_s = (now_ms / SECOND_MS) as i64 + retry_after_s as i64;
                        RetryAfter::AtUnixSeconds(at_s)
                    };
                    status(rng.random_range(1..100), 429, Some(retry_after))
                } else {
                    ok(rng)
                }
            }
            Behaviour::GoneAfter { after } => {
                if nth >= after {
                    status(rng.random_range(1..100), 410, None)
                } else {
                    ok(rng)
                }
            }
            Behaviour::Rejecting { p_reject } => {
                if rng.random_bool(p_reject) {
                    let code = [400, 401, 403, 404, 422, 301, 302][rng.random_range(0..7)];
                    status(rng.random_range(1..100), code, None)
                } else {
                    ok(rng)
                }
            }
            Behaviour::TimingOut { p_timeout } => {
                if rng.random_bool(p_timeout) {
                    transport(request_timeout_ms, TransportError::RequestTimeout, true)
                } else {
                    ok(rng)
                }
            }
            Behaviour::Down { from_ms, until_ms } => {
                if (from_ms..until_ms).contains(&now_ms) {
                    transport(rng.random_range(1..50), TransportError::Connect, false)
                } else {
                    ok(rng)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const NOW_MS: u64 = 1_780_000_000_000;

    fn status_of(answer: &Answer) -> Option<u16> {
        match answer.result {
            AttemptResult::Response { status, .. } => Some(status),
            AttemptResult::Transport(_) => None,
        }
    }

    #[test]
    fn behaviours_answer_as_described() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // (behaviour, nth request, now, expected status or None for a transport error)
        let cases = [
            (Behaviour::Healthy, 0, NOW_MS, Some(true)),
            (Behaviour::GoneAfter { after: 2 }, 1, NOW_MS, Some(true)),
            (Behaviour::GoneAfter { after: 2 }, 2, NOW_MS, Some(false)),
            (
                Behaviour::Down {
                    from_ms: NOW_MS,
                    until_ms: NOW_MS + DAY_MS,
                },
                0,
                NOW_MS + HOUR_MS,
                None,
            ),
            (
                Behaviour::Down {
                    from_ms: NOW_MS,
                    until_ms: NOW_MS + DAY_MS,
                },
                0,
                NOW_MS + DAY_MS,
                Some(true),
            ),
            (Behaviour::Flaky { p_fail: 0.0 }, 0, NOW_MS, Some(true)),
            (Behaviour::TimingOut { p_timeout: 1.0 }, 0, NOW_MS, None),
        ];
        for (behaviour, nth, now_ms, expected) in cases {
            let answer = behaviour.answer(&mut rng, nth, now_ms, 5_000, 30_000);
            match expected {
                Some(true) => assert!(
                    status_of(&answer).is_some_and(|s| (200..300).contains(&s)),
                    "{behaviour:?} #{nth}: {answer:?}"
                ),
                Some(false) => assert_eq!(status_of(&answer), Some(410), "{behaviour:?}"),
                None => assert_eq!(status_of(&answer), None, "{behaviour:?}: {answer:?}"),
            }
        }
    }

    #[test]
    fn slow_answers_beyond_the_request_timeout_become_timeouts() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let slow = Behaviour::Slow {
            latency_ms_max: 60_000,
        };
        for _ in 0..200 {
            let answer = slow.answer(&mut rng, 0, NOW_MS, 5_000, 10_000);
            assert!(answer.after_ms <= 10_000, "{answer:?}");
            if answer.after_ms == 10_000 {
                assert_eq!(
                    answer.result,
                    AttemptResult::Transport(TransportError::RequestTimeout)
                );
            }
        }
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let limited = Behaviour::RateLimited {
            p_limited: 1.0,
            retry_after_s: 120,
        };
        for _ in 0..50 {
            let answer = limited.answer(&mut rng, 0, NOW_MS, 5_000, 30_000);
            let AttemptResult::Response {
                status: 429,
                retry_after: Some(retry_after),
            } = answer.result
            else {
                panic!("{answer:?}");
            };
            assert_eq!(retry_after.delay_ms(NOW_MS), 120_000);
        }
    }
}
