//! Retry policy: the schedule of attempts, how an attempt's result is classified, and how
//! `Retry-After` and jitter move the next attempt.

use herald_http::RetryAfter;

/// Most retries a schedule may hold (attempts = retries + 1). Bounds the work one event
/// can cause per webhook.
pub const RETRIES_MAX: usize = 24;
/// Longest delay between two attempts in a schedule: 7 days, before jitter (which may
/// add up to [`JITTER_PERCENT_MAX`] of it). Bounds how long a pending delivery waits
/// for its next attempt (the timing wheel itself has no horizon).
pub const RETRY_DELAY_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Longest `Retry-After` honoured: 24 hours. A receiver cannot park a delivery for longer.
pub const RETRY_AFTER_MS_MAX: u64 = 24 * 3600 * 1000;
/// Largest jitter, in percent of a delay.
pub const JITTER_PERCENT_MAX: u8 = 50;

const MINUTE_MS: u64 = 60 * 1000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// Delay before trying again a delivery whose attempt found no connection to send on
/// ([`AttemptResult::gives_attempt_back`]), whatever its schedule says (such an attempt
/// sent nothing, so even a schedule without retries owes the delivery its one attempt):
/// after its first refusal in a row. A minute, the default schedule's first retry: the
/// shard's connections are held by other deliveries, which take about that long to free
/// them at worst (a request timeout). Not the schedule's delays: a delivery refused
/// during a burst would otherwise wait 5 minutes, then 30, then hours, though its
/// endpoint never failed; and not a schedule of immediate retries, which would be
/// refused again and again, a journal record each time, for as long as the connections
/// stay busy (the attempt is given back, so nothing else would end that). Each further
/// refusal in a row doubles it, up to [`NO_CONNECTION_RETRY_MAX_MS`]
/// ([`no_connection_retry_ms`]).
pub const NO_CONNECTION_RETRY_MS: u64 = MINUTE_MS;

/// Longest delay between two attempts of a delivery refused a connection again and
/// again: half an hour. A congestion that lasts (an origin's receiver slow for hours
/// behind a large backlog) then costs each waiting delivery a record every half hour,
/// not every minute, while one that ends within minutes delays its deliveries by
/// minutes, not by the hours a schedule's later delays would.
pub const NO_CONNECTION_RETRY_MAX_MS: u64 = 30 * MINUTE_MS;

/// The delay after the `in_a_row`-th refusal in a row (1-based) of a delivery's
/// attempts: [`NO_CONNECTION_RETRY_MS`] doubled for each refusal before it in the row,
/// at most [`NO_CONNECTION_RETRY_MAX_MS`].
pub fn no_connection_retry_ms(in_a_row: u32) -> u64 {
    let doublings = in_a_row.saturating_sub(1).min(16);
    (NO_CONNECTION_RETRY_MS << doublings).min(NO_CONNECTION_RETRY_MAX_MS)
}

/// Delays before each retry, measured from the failed attempt's outcome. The first attempt
/// is always immediate; attempt `n` (1-based, `n >= 2`) waits `retry_delays_ms[n - 2]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetrySchedule {
    retry_delays_ms: Vec<u64>,
}

impl Default for RetrySchedule {
    /// The platform's published policy: attempts at 0, +1 min, +5 min, +30 min, +2 h,
    /// +8 h, +24 h (7 attempts).
    fn default() -> Self {
        RetrySchedule {
            retry_delays_ms: vec![
                MINUTE_MS,
                5 * MINUTE_MS,
                30 * MINUTE_MS,
                2 * HOUR_MS,
                8 * HOUR_MS,
                24 * HOUR_MS,
            ],
        }
    }
}

/// A retry schedule outside the limits (caller's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// More than [`RETRIES_MAX`] retries.
    #[error("{count} retries given; at most {max} are allowed")]
    TooManyRetries {
        /// How many were given.
        count: usize,
        /// [`RETRIES_MAX`].
        max: usize,
    },
    /// A delay above [`RETRY_DELAY_MS_MAX`].
    #[error("retry #{index} waits {delay_ms} ms; at most {max_ms} ms are allowed")]
    DelayTooLong {
        /// Position in the schedule.
        index: usize,
        /// The delay given.
        delay_ms: u64,
        /// [`RETRY_DELAY_MS_MAX`].
        max_ms: u64,
    },
}

impl RetrySchedule {
    /// A schedule of retry delays (milliseconds after the previous attempt failed). An
    /// empty list means a single attempt.
    pub fn new(retry_delays_ms: Vec<u64>) -> Result<RetrySchedule, ScheduleError> {
        if retry_delays_ms.len() > RETRIES_MAX {
            return Err(ScheduleError::TooManyRetries {
                count: retry_delays_ms.len(),
                max: RETRIES_MAX,
            });
        }
        if let Some((index, &delay_ms)) = retry_delays_ms
            .iter()
            .enumerate()
            .find(|(_, &d)| d > RETRY_DELAY_MS_MAX)
        {
            return Err(ScheduleError::DelayTooLong {
                index,
                delay_ms,
                max_ms: RETRY_DELAY_MS_MAX,
            });
        }
        Ok(RetrySchedule { retry_delays_ms })
    }

    /// The retry delays, in milliseconds.
    pub fn retry_delays_ms(&self) -> &[u64] {
        &self.retry_delays_ms
    }

    /// Total attempts allowed (first attempt plus retries).
    pub fn attempts_max(&self) -> u32 {
        // RETRIES_MAX + 1 fits a u32.
        self.retry_delays_ms.len() as u32 + 1
    }

    /// Delay before attempt `next_attempt` (1-based), or `None` when the schedule allows
    /// no such attempt.
    pub fn delay_before_ms(&self, next_attempt: u32) -> Option<u64> {
        match next_attempt {
            0 => None,
            1 => Some(0),
            n => self.retry_delays_ms.get(n as usize - 2).copied(),
        }
    }
}

/// How an attempt failed below HTTP (or was refused before it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportError {
    /// Name resolution failed.
    Dns,
    /// Connection not established within the connect timeout.
    ConnectTimeout,
    /// Connection refused or reset while connecting.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// No complete response within the request timeout.
    RequestTimeout,
    /// The receiver broke HTTP (malformed response, limits exceeded, early close).
    Protocol,
    /// The egress guard refused the resolved address (private, loopback, metadata…).
    /// Retrying cannot help until the webhook's URL is changed.
    EgressDenied,
    /// The request could not be encoded (a header that would break the framing), so
    /// nothing was sent. It would fail the same way every time: a final failure, fixed
    /// by changing the webhook's custom headers.
    InvalidRequest,
    /// The driver had no connection to send on: its connection budget was spent on
    /// other endpoints, or this endpoint's queue for a connection was full. Nothing was
    /// sent, and the endpoint is not to blame: retried by schedule, without counting
    /// toward the endpoint's breaker or auto-disable. (Counted as the endpoint's
    /// failure, one busy endpoint could open the breakers of the shard's others.)
    PoolFull,
}

impl TransportError {
    /// Stable lower-case name (used in records and the delivery log).
    pub fn name(self) -> &'static str {
        match self {
            TransportError::Dns => "dns",
            TransportError::ConnectTimeout => "connect_timeout",
            TransportError::Connect => "connect",
            TransportError::Tls => "tls",
            TransportError::RequestTimeout => "request_timeout",
            TransportError::Protocol => "protocol",
            TransportError::EgressDenied => "egress_denied",
            TransportError::InvalidRequest => "invalid_request",
            TransportError::PoolFull => "pool_full",
        }
    }
}

/// What came back from one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered with an HTTP status.
    Response {
        /// Status code.
        status: u16,
        /// Parsed `Retry-After`, if the response carried one.
        retry_after: Option<RetryAfter>,
    },
    /// No HTTP response.
    Transport(TransportError),
}

impl AttemptResult {
    /// Whether the attempt reached the receiver. `false` when it was refused before any
    /// connection (the egress guard, a request that cannot be encoded, no connection to
    /// send on): such an attempt fails by our own or the caller's doing and says nothing
    /// about the receiver's health.
    pub fn reached_receiver(&self) -> bool {
        !matches!(
            self,
            AttemptResult::Transport(
                TransportError::EgressDenied
                    | TransportError::InvalidRequest
                    | TransportError::PoolFull
            )
        )
    }

    /// Whether the attempt does not count against the delivery's attempts: it found no
    /// connection to send on (`pool_full`: the shard's connection budget held by other
    /// endpoints, or the queue for this endpoint's connections full). Nothing was sent,
    /// so the receiver has not had the attempt its schedule promises; the delivery's
    /// allowance grows by one and it stays where it stood in its schedule. A burst that
    /// keeps an origin's connections busy for a while delays its deliveries but never
    /// exhausts them. Such outcomes are retried after [`NO_CONNECTION_RETRY_MS`], doubled
    /// for each refusal in a row up to [`NO_CONNECTION_RETRY_MAX_MS`]
    /// ([`no_connection_retry_ms`]; refusals do not move a delivery down its schedule),
    /// and the next failure of an attempt that was sent waits the delay the schedule
    /// gives the attempts that were sent, not one later for every refusal before it.
    pub fn gives_attempt_back(&self) -> bool {
        matches!(self, AttemptResult::Transport(TransportError::PoolFull))
    }
}

/// The class of an attempt's result, which decides what happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutcomeClass {
    /// 2xx: the delivery succeeded.
    Success,
    /// 408, 429, 5xx, timeouts, connect/TLS/protocol/DNS errors: try again per schedule.
    Retry,
    /// 3xx (redirects are never followed), other 4xx, 1xx, egress refusal, a request
    /// that cannot be encoded: give up now.
    Final,
    /// 410 Gone: give up and disable the webhook.
    Gone,
}

/// Classifies an attempt's result.
pub fn classify(result: &AttemptResult) -> OutcomeClass {
    match result {
        AttemptResult::Response { status, .. } => match status {
            200..=299 => OutcomeClass::Success,
            410 => OutcomeClass::Gone,
            408 | 429 | 500..=599 => OutcomeClass::Retry,
            _ => OutcomeClass::Final,
        },
        AttemptResult::Transport(TransportError::EgressDenied | TransportError::InvalidRequest) => {
            OutcomeClass::Final
        }
        AttemptResult::Transport(_) => OutcomeClass::Retry,
    }
}

/// Delay before the next attempt after a retryable failure: the scheduled delay (with
/// jitter), raised to the receiver's `Retry-After` on 429 and 503, and never above
/// [`RETRY_AFTER_MS_MAX`] because of `Retry-After` (a scheduled delay longer than that
/// stays as scheduled).
pub fn retry_delay_ms(scheduled_ms: u64, result: &AttemptResult, now_ms: u64) -> u64 {
    match result {
        AttemptResult::Response {
            status: 429 | 503,
            retry_after: Some(retry_after),
        } => {
            let asked_ms = retry_after.delay_ms(now_ms);
            asked_ms.min(RETRY_AFTER_MS_MAX).max(scheduled_ms)
        }
        _ => scheduled_ms,
    }
}

/// Applies deterministic jitter of up to `percent` % (either way) to `delay_ms`. The
/// offset is a hash of `(seed, delivery, attempt)`: the same inputs always give the same
/// delay, and replaying a journal reproduces it.
pub fn jitter_ms(delay_ms: u64, percent: u8, seed: u64, delivery: u64, attempt: u32) -> u64 {
    let percent = u64::from(percent.min(JITTER_PERCENT_MAX));
    if percent == 0 || delay_ms == 0 {
        return delay_ms;
    }
    let spread = delay_ms / 100 * percent + delay_ms % 100 * percent / 100;
    if spread == 0 {
        return delay_ms;
    }
    let hash = splitmix64(seed ^ splitmix64(delivery ^ splitmix64(u64::from(attempt))));
    // Uniform in [0, 2 * spread]; then shifted to [-spread, +spread].
    let offset = hash % (2 * spread + 1);
    (delay_ms - spread).saturating_add(offset)
}

/// The SplitMix64 finaliser: a fast, well-mixed, seedable hash of a `u64`.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_in_a_row_double_the_wait_up_to_half_an_hour() {
        let waits: Vec<u64> = (1..=8).map(no_connection_retry_ms).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 30, 30, 30].map(|m| m * MINUTE_MS),
            "minutes after the n-th refusal in a row"
        );
        assert_eq!(no_connection_retry_ms(0), NO_CONNECTION_RETRY_MS);
        assert_eq!(no_connection_retry_ms(u32::MAX), NO_CONNECTION_RETRY_MAX_MS);
    }

    fn status(status: u16) -> AttemptResult {
        AttemptResult::Response {
            status,
            retry_after: None,
        }
    }

    #[test]
    fn every_outcome_class() {
        use OutcomeClass::*;
        use TransportError::*;
        let cases: Vec<(AttemptResult, OutcomeClass)> = vec![
            (status(100), Final),
            (status(200), Success),
            (status(201), Success),
            (status(204), Success),
            (status(299), Success),
            (status(301), Final),
            (status(302), Final),
            (status(304), Final),
            (status(307), Final),
            (status(308), Final),
            (status(400), Final),
            (status(401), Final),
            (status(403), Final),
            (status(404), Final),
            (status(408), Retry),
            (status(409), Final),
            (status(410), Gone),
            (status(413), Final),
            (status(422), Final),
            (status(429), Retry),
            (status(499), Final),
            (status(500), Retry),
            (status(502), Retry),
            (status(503), Retry),
            (status(504), Retry),
            (status(599), Retry),
            (AttemptResult::Transport(Dns), Retry),
            (AttemptResult::Transport(ConnectTimeout), Retry),
            (AttemptResult::Transport(Connect), Retry),
            (AttemptResult::Transport(Tls), Retry),
            (AttemptResult::Transport(RequestTimeout), Retry),
            (AttemptResult::Transport(Protocol), Retry),
            (AttemptResult::Transport(EgressDenied), Final),
            (AttemptResult::Transport(InvalidRequest), Final),
            (AttemptResult::Transport(PoolFull), Retry),
        ];
        for (result, want) in cases {
            assert_eq!(classify(&result), want, "{result:?}");
        }
    }

    #[test]
    fn default_schedule() {
        let s = RetrySchedule::default();
        assert_eq!(s.attempts_max(), 7);
        let delays: Vec<Option<u64>> = (0..=8).map(|n| s.delay_before_ms(n)).collect();
        assert_eq!(
            delays,
            [
                None,
                Some(0),
                Some(60_000),
                Some(300_000),
                Some(1_800_000),
                Some(7_200_000),
                Some(28_800_000),
                Some(86_400_000),
                None
            ]
        );
    }

    #[test]
    fn schedule_limits() {
        assert!(RetrySchedule::new(vec![]).is_ok());
        assert_eq!(RetrySchedule::new(vec![]).unwrap().attempts_max(), 1);
        assert!(RetrySchedule::new(vec![1; RETRIES_MAX]).is_ok());
        assert!(matches!(
            RetrySchedule::new(vec![1; RETRIES_MAX + 1]),
            Err(ScheduleError::TooManyRetries { .. })
        ));
        assert!(RetrySchedule::new(vec![RETRY_DELAY_MS_MAX]).is_ok());
        assert!(matches!(
            RetrySchedule::new(vec![10, RETRY_DELAY_MS_MAX + 1]),
            Err(ScheduleError::DelayTooLong { index: 1, .. })
        ));
    }

    #[test]
    fn retry_after_is_clamped() {
        let now_ms = 1_700_000_000_000;
        let with = |status: u16, ra: RetryAfter| AttemptResult::Response {
            status,
            retry_after: Some(ra),
        };
        let hour = 3_600_000;
        let cases: Vec<(u64, AttemptResult, u64)> = vec![
            // Not 429/503: Retry-After ignored.
            (60_000, with(500, RetryAfter::DelaySeconds(600)), 60_000),
            (60_000, with(408, RetryAfter::DelaySeconds(600)), 60_000),
            // Honoured when longer than scheduled.
            (60_000, with(429, RetryAfter::DelaySeconds(600)), 600_000),
            (60_000, with(503, RetryAfter::DelaySeconds(600)), 600_000),
            // Never shorter than scheduled.
            (60_000, with(429, RetryAfter::DelaySeconds(1)), 60_000),
            // Never more than 24 h.
            (
                60_000,
                with(429, RetryAfter::DelaySeconds(u64::MAX)),
                24 * hour,
            ),
            // A long scheduled delay is kept.
            (30 * hour, with(429, RetryAfter::DelaySeconds(1)), 30 * hour),
            // HTTP-date form, relative to now.
            (
                1_000,
                with(503, RetryAfter::AtUnixSeconds((now_ms / 1000 + 120) as i64)),
                120_000,
            ),
            // A date in the past: scheduled.
            (1_000, with(503, RetryAfter::AtUnixSeconds(0)), 1_000),
            // No header: scheduled.
            (1_000, status(429), 1_000),
        ];
        for (scheduled, result, want) in cases {
            assert_eq!(
                retry_delay_ms(scheduled, &result, now_ms),
                want,
                "{result:?}"
            );
        }
    }

    #[test]
    fn jitter_is_bounded_and_deterministic() {
        for delivery in 0..200 {
            for attempt in 1..5 {
                let d = jitter_ms(60_000, 20, 7, delivery, attempt);
                assert!((48_000..=72_000).contains(&d), "{d}");
                assert_eq!(d, jitter_ms(60_000, 20, 7, delivery, attempt));
            }
        }
        assert_eq!(jitter_ms(60_000, 0, 7, 1, 1), 60_000);
        assert_eq!(jitter_ms(0, 50, 7, 1, 1), 0);
        // Above the cap is treated as the cap.
        let d = jitter_ms(1_000, 200, 7, 1, 1);
        assert!((500..=1_500).contains(&d));
        // Different seeds spread differently.
        let a: Vec<u64> = (0..16).map(|i| jitter_ms(60_000, 50, 1, i, 2)).collect();
        let b: Vec<u64> = (0..16).map(|i| jitter_ms(60_000, 50, 2, i, 2)).collect();
        assert_ne!(a, b);
    }
}
