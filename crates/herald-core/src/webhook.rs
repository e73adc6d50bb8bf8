//! Webhook configuration: what a caller submits ([`WebhookSpec`]) and how it is checked.

use std::fmt;

use herald_http::Url;
use herald_sign::{Scheme, SecretError, Signer, SECRETS_MAX};

use crate::matcher::EventFilter;
use crate::retry::RetrySchedule;

/// Most event filters on one webhook.
pub const FILTERS_PER_WEBHOOK_MAX: usize = 32;
/// Most custom headers on one webhook.
pub const HEADERS_PER_WEBHOOK_MAX: usize = 16;
/// Longest custom header name, in bytes.
pub const HEADER_NAME_BYTES_MAX: usize = 64;
/// Longest custom header value, in bytes.
pub const HEADER_VALUE_BYTES_MAX: usize = 1024;
/// Default cap on concurrent requests to one webhook.
pub const IN_FLIGHT_DEFAULT: u32 = 16;
/// Largest configurable in-flight cap: beyond this a single endpoint would monopolise a
/// shard's connection pool.
pub const IN_FLIGHT_MAX: u32 = 256;
/// Default connect timeout.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Default whole-request timeout.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Largest configurable connect timeout.
pub const CONNECT_TIMEOUT_MS_MAX: u64 = 30_000;
/// Largest configurable request timeout: a slow receiver holds an in-flight slot this long.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 120_000;
/// Highest configurable rate limit, requests per second.
pub const RATE_PER_S_MAX: u32 = 100_000;
/// Largest configurable burst of a rate limit.
pub const RATE_BURST_MAX: u32 = 100_000;

/// Headers a webhook may not set: the transport's own, and every signature scheme's.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-olympus-signature",
    "x-olo-message-id",
    "x-olo-timestamp",
    "x-olo-signature",
];

/// One signing secret. While several are live (rotation), every request carries a
/// signature for each. A secret with `expires_at_ms` stops being used at that time: that
/// is the old secret's grace period.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The secret in its scheme's format (`whsec_…`, `whsk_…`, or any string).
    pub value: String,
    /// End of the grace period (Unix ms), `None` for a current secret.
    pub expires_at_ms: Option<u64>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("value", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// A token-bucket rate limit: `per_s` requests per second on average, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Sustained requests per second (1..=[`RATE_PER_S_MAX`]).
    pub per_s: u32,
    /// Bucket size (1..=[`RATE_BURST_MAX`]).
    pub burst: u32,
}

/// Per-webhook limits on traffic to its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointLimits {
    /// Most concurrent requests (1..=[`IN_FLIGHT_MAX`]; default [`IN_FLIGHT_DEFAULT`]).
    pub in_flight_max: u32,
    /// Optional rate limit.
    pub rate: Option<RateLimit>,
    /// Connect timeout (1..=[`CONNECT_TIMEOUT_MS_MAX`]; default 5 s).
    pub connect_timeout_ms: u64,
    /// Whole-request timeout (1..=[`REQUEST_TIMEOUT_MS_MAX`]; default 30 s).
    pub request_timeout_ms: u64,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            in_flight_max: IN_FLIGHT_DEFAULT,
            rate: None,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// Why a webhook is disabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DisableReason {
    /// By its owner (through the API).
    Manual,
    /// The endpoint answered 410 Gone.
    Gone,
    /// Every attempt failed for longer than the auto-disable period.
    FailingTooLong,
}

impl DisableReason {
    /// Stable lower-case name (used in records and in the `webhook.disabled` event).
    pub fn name(self) -> &'static str {
        match self {
            DisableReason::Manual => "manual",
            DisableReason::Gone => "gone",
            DisableReason::FailingTooLong => "failing_too_long",
        }
    }
}

/// Whether a webhook receives deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WebhookStatus {
    /// Receives deliveries.
    #[default]
    Active,
    /// Receives nothing; its pending deliveries were ended as failed.
    Disabled {
        /// Why.
        reason: DisableReason,
        /// When (Unix ms).
        at_ms: u64,
    },
}

impl WebhookStatus {
    /// Whether the webhook receives deliveries.
    pub fn is_active(&self) -> bool {
        matches!(self, WebhookStatus::Active)
    }
}

/// A webhook's full configuration, as submitted on create or update (an update replaces
/// the whole spec).
///
/// `Debug` prints neither secrets nor custom header values (which often carry
/// credentials such as `Authorization`).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Endpoint.
    pub url: Url,
    /// Event filters (1..=[`FILTERS_PER_WEBHOOK_MAX`]).
    pub filters: Vec<EventFilter>,
    /// Signature scheme.
    pub scheme: Scheme,
    /// Signing secrets (1..=[`SECRETS_MAX`]); see [`SecretSpec`] for rotation.
    pub secrets: Vec<SecretSpec>,
    /// Extra headers sent with every request (at most [`HEADERS_PER_WEBHOOK_MAX`]); may not
    /// override transport or signature headers.
    pub headers: Vec<(String, String)>,
    /// Active or disabled. Setting `Active` on a disabled webhook re-enables it with a
    /// clean health record.
    pub status: WebhookStatus,
    /// Retry schedule override; `None` uses the dispatcher's default.
    pub retry_schedule: Option<RetrySchedule>,
    /// Traffic limits.
    pub limits: EndpointLimits,
    /// Free text for people (at most [`DESCRIPTION_BYTES_MAX`] bytes); never sent.
    pub description: Option<String>,
}

/// Longest [`WebhookSpec::description`]: a sentence or two for people reading a list of
/// webhooks; it is journaled with every change of the webhook and held in memory.
pub const DESCRIPTION_BYTES_MAX: usize = 1024;

impl fmt::Debug for WebhookSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("WebhookSpec")
            .field("url", &self.url)
            .field("filters", &self.filters)
            .field("scheme", &self.scheme)
            .field("secrets", &self.secrets)
            .field("header_names", &header_names)
            .field("status", &self.status)
            .field("retry_schedule", &self.retry_schedule)
            .field("limits", &self.limits)
            .field("description", &self.description)
            .finish()
    }
}

impl WebhookSpec {
    /// A spec with defaults for everything but the endpoint, filters and secret.
    pub fn new(url: Url, filters: Vec<EventFilter>, scheme: Scheme, secret: String) -> Self {
        WebhookSpec {
            url,
            filters,
            scheme,
            secrets: vec![SecretSpec {
                value: secret,
                expires_at_ms: None,
            }],
            headers: Vec::new(),
            status: WebhookStatus::Active,
            retry_schedule: None,
            limits: EndpointLimits::default(),
            description: None,
        }
    }

    /// Checks everything the types cannot, and builds the signer for the secrets live at
    /// `now_ms`.
    pub fn validate(&self, now_ms: u64) -> Result<Signer, SpecError> {
        if self.filters.is_empty() {
            return Err(SpecError::NoFilter);
        }
        if self.filters.len() > FILTERS_PER_WEBHOOK_MAX {
            return Err(SpecError::TooManyFilters {
                count: self.filters.len(),
                max: FILTERS_PER_WEBHOOK_MAX,
            });
        }
        if let Some(description) = &self.description {
            if description.len() > DESCRIPTION_BYTES_MAX {
                return Err(SpecError::DescriptionTooLong {
                    bytes: description.len(),
                    max: DESCRIPTION_BYTES_MAX,
                });
            }
        }
        if self.headers.len() > HEADERS_PER_WEBHOOK_MAX {
            return Err(SpecError::TooManyHeaders {
                count: self.headers.len(),
                max: HEADERS_PER_WEBHOOK_MAX,
            });
        }
        for (index, (name, value)) in self.headers.iter().enumerate() {
            check_custom_header(&self.scheme, index, name, value)?;
        }
        let limits = &self.limits;
        let bad_limit = |name: &'static str| Err(SpecError::Limit { name });
        if !(1..=IN_FLIGHT_MAX).contains(&limits.in_flight_max) {
            return bad_limit("in_flight_max");
        }
        if !(1..=CONNECT_TIMEOUT_MS_MAX).contains(&limits.connect_timeout_ms) {
            return bad_limit("connect_timeout_ms");
        }
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&limits.request_timeout_ms) {
            return bad_limit("request_timeout_ms");
        }
        if let Some(rate) = limits.rate {
            if !(1..=RATE_PER_S_MAX).contains(&rate.per_s) {
                return bad_limit("rate.per_s");
            }
            if !(1..=RATE_BURST_MAX).contains(&rate.burst) {
                return bad_limit("rate.burst");
            }
        }
        if self.secrets.len() > SECRETS_MAX {
            return Err(SpecError::Secret(SecretError::TooMany {
                count: self.secrets.len(),
                max: SECRETS_MAX,
            }));
        }
        // Every secret must be usable, even one whose grace period is over, so that an
        // invalid secret is reported at configuration time and never at dispatch time.
        let all: Vec<&str> = self.secrets.iter().map(|s| s.value.as_str()).collect();
        Signer::new(self.scheme.clone(), &all).map_err(SpecError::Secret)?;
        self.signer_at(now_ms)
    }

    /// The signer for the secrets live at `now_ms`, or [`SpecError::NoLiveSecret`].
    pub(crate) fn signer_at(&self, now_ms: u64) -> Result<Signer, SpecError> {
        let live: Vec<&str> = self
            .secrets
            .iter()
            .filter(|s| s.expires_at_ms.is_none_or(|at| at > now_ms))
            .map(|s| s.value.as_str())
            .collect();
        if live.is_empty() {
            return Err(SpecError::NoLiveSecret);
        }
        Signer::new(self.scheme.clone(), &live).map_err(SpecError::Secret)
    }

    /// The earliest grace-period end after `now_ms`, when the signer must be rebuilt.
    pub(crate) fn next_secret_expiry_ms(&self, now_ms: u64) -> Option<u64> {
        self.secrets
            .iter()
            .filter_map(|s| s.expires_at_ms)
            .filter(|&at| at > now_ms)
            .min()
    }

    /// The retry schedule in force, given the dispatcher's default.
    pub fn schedule<'a>(&'a self, default: &'a RetrySchedule) -> &'a RetrySchedule {
        self.retry_schedule.as_ref().unwrap_or(default)
    }
}

fn check_custom_header(
    scheme: &Scheme,
    index: usize,
    name: &str,
    value: &str,
) -> Result<(), SpecError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > HEADER_NAME_BYTES_MAX || !name.bytes().all(token) {
        return Err(SpecError::HeaderName { index });
    }
    let reserved = RESERVED_HEADERS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
        || matches!(scheme, Scheme::Stripe { header } if header.eq_ignore_ascii_case(name));
    if reserved {
        return Err(SpecError::HeaderReserved {
            name: name.to_string(),
        });
    }
    // Visible ASCII, space and tab only: CR/LF would inject header lines.
    let field = |b: u8| b == b'\t' || (0x20..0x7f).contains(&b);
    if value.len() > HEADER_VALUE_BYTES_MAX || !value.bytes().all(field) {
        return Err(SpecError::HeaderValue { index });
    }
    Ok(())
}

/// A webhook spec that cannot be accepted (caller's error).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No event filter.
    #[error("a webhook needs at least one event filter")]
    NoFilter,
    /// A description longer than [`DESCRIPTION_BYTES_MAX`].
    #[error("description is {bytes} bytes long; at most {max} are allowed")]
    DescriptionTooLong {
        /// Its length.
        bytes: usize,
        /// [`DESCRIPTION_BYTES_MAX`].
        max: usize,
    },
    /// More than [`FILTERS_PER_WEBHOOK_MAX`] filters.
    #[error("{count} event filters given; at most {max} are allowed")]
    TooManyFilters {
        /// How many.
        count: usize,
        /// [`FILTERS_PER_WEBHOOK_MAX`].
        max: usize,
    },
    /// More than [`HEADERS_PER_WEBHOOK_MAX`] custom headers.
    #[error("{count} custom headers given; at most {max} are allowed")]
    TooManyHeaders {
        /// How many.
        count: usize,
        /// [`HEADERS_PER_WEBHOOK_MAX`].
        max: usize,
    },
    /// A custom header name that is not an HTTP token of 1..=[`HEADER_NAME_BYTES_MAX`]
    /// bytes.
    #[error("custom header #{index} has an invalid name")]
    HeaderName {
        /// Position in the list.
        index: usize,
    },
    /// A custom header that would override a transport or signature header.
    #[error("custom header {name:?} is set by herald and cannot be overridden")]
    HeaderReserved {
        /// The name given.
        name: String,
    },
    /// A custom header value with CR, LF or other control bytes, non-ASCII, or longer
    /// than [`HEADER_VALUE_BYTES_MAX`].
    #[error("custom header #{index} has an invalid value (control bytes or too long)")]
    HeaderValue {
        /// Position in the list.
        index: usize,
    },
    /// A limit outside its allowed range.
    #[error("limit {name} is out of range")]
    Limit {
        /// Which limit (`in_flight_max`, `rate.per_s`, …).
        name: &'static str,
    },
    /// Every secret's grace period is over.
    #[error("no live secret: every secret's grace period has ended")]
    NoLiveSecret,
    /// A secret rejected by its scheme.
    #[error("secret rejected: {0}")]
    Secret(#[source] SecretError),
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> WebhookSpec {
        WebhookSpec::new(
            Url::parse("https://example.com/hook").unwrap(),
            vec![EventFilter::All],
            Scheme::Standard,
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        )
    }

    #[test]
    fn default_spec_is_valid() {
        assert!(spec().validate(0).is_ok());
        assert_eq!(spec().limits.in_flight_max, 16);
        assert_eq!(spec().limits.connect_timeout_ms, 5_000);
        assert_eq!(spec().limits.request_timeout_ms, 30_000);
    }

    #[test]
    fn spec_limits() {
        type Edit = fn(&mut WebhookSpec);
        let cases: Vec<(&str, Edit, bool)> = vec![
            ("no filter", |s| s.filters.clear(), false),
            (
                "filters at max",
                |s| s.filters = vec![EventFilter::All; FILTERS_PER_WEBHOOK_MAX],
                true,
            ),
            (
                "filters over max",
                |s| s.filters = vec![EventFilter::All; FILTERS_PER_WEBHOOK_MAX + 1],
                false,
            ),
            (
                "headers at max",
                |s| {
                    s.headers = (0..HEADERS_PER_WEBHOOK_MAX)
                        .map(|i| (format!("x-h{i}"), "v".into()))
                        .collect()
                },
                true,
            ),
            (
                "headers over max",
                |s| {
                    s.headers = (0..=HEADERS_PER_WEBHOOK_MAX)
                        .map(|i| (format!("x-h{i}"), "v".into()))
                        .collect()
                },
                false,
            ),
            (
                "header crlf",
                |s| s.headers = vec![("x-a".into(), "a\r\nb: c".into())],
                false,
            ),
            (
                "header lf",
                |s| s.headers = vec![("x-a".into(), "a\nb".into())],
                false,
            ),
            (
                "header nul",
                |s| s.headers = vec![("x-a".into(), "a\0".into())],
                false,
            ),
            (
                "header tab ok",
                |s| s.headers = vec![("x-a".into(), "a\tb".into())],
                true,
            ),
            (
                "header bad name",
                |s| s.headers = vec![("x a".into(), "v".into())],
                false,
            ),
            (
                "header empty name",
                |s| s.headers = vec![("".into(), "v".into())],
                false,
            ),
            (
                "header long name",
                |s| s.headers = vec![("x".repeat(HEADER_NAME_BYTES_MAX + 1), "v".into())],
                false,
            ),
            (
                "header value at max",
                |s| s.headers = vec![("x-a".into(), "v".repeat(HEADER_VALUE_BYTES_MAX))],
                true,
            ),
            (
                "header value over max",
                |s| s.headers = vec![("x-a".into(), "v".repeat(HEADER_VALUE_BYTES_MAX + 1))],
                false,
            ),
            (
                "content-type",
                |s| s.headers = vec![("Content-Type".into(), "x".into())],
                false,
            ),
            (
                "signature",
                |s| s.headers = vec![("WEBHOOK-SIGNATURE".into(), "x".into())],
                false,
            ),
            (
                "host",
                |s| s.headers = vec![("host".into(), "x".into())],
                false,
            ),
            (
                "stripe custom header",
                |s| {
                    s.scheme = Scheme::Stripe {
                        header: "Crumb-Signature".into(),
                    };
                    s.secrets[0].value = "sk".into();
                    s.headers = vec![("crumb-signature".into(), "x".into())];
                },
                false,
            ),
            ("in flight 0", |s| s.limits.in_flight_max = 0, false),
            (
                "in flight max",
                |s| s.limits.in_flight_max = IN_FLIGHT_MAX,
                true,
            ),
            (
                "in flight over",
                |s| s.limits.in_flight_max = IN_FLIGHT_MAX + 1,
                false,
            ),
            ("connect 0", |s| s.limits.connect_timeout_ms = 0, false),
            (
                "connect over",
                |s| s.limits.connect_timeout_ms = CONNECT_TIMEOUT_MS_MAX + 1,
                false,
            ),
            (
                "request over",
                |s| s.limits.request_timeout_ms = REQUEST_TIMEOUT_MS_MAX + 1,
                false,
            ),
            (
                "rate ok",
                |s| {
                    s.limits.rate = Some(RateLimit {
                        per_s: 10,
                        burst: 5,
                    })
                },
                true,
            ),
            (
                "rate 0",
                |s| s.limits.rate = Some(RateLimit { per_s: 0, burst: 5 }),
                false,
            ),
            (
                "burst over",
                |s| {
                    s.limits.rate = Some(RateLimit {
                        per_s: 1,
                        burst: RATE_BURST_MAX + 1,
                    })
                },
                false,
            ),
            ("bad secret", |s| s.secrets[0].value = "nope".into(), false),
            ("no secret", |s| s.secrets.clear(), false),
            (
                "too many secrets",
                |s| s.secrets = vec![s.secrets[0].clone(); SECRETS_MAX + 1],
                false,
            ),
            (
                "only expired secret",
                |s| s.secrets[0].expires_at_ms = Some(0),
                false,
            ),
        ];
        for (name, edit, ok) in cases {
            let mut s = spec();
            edit(&mut s);
            assert_eq!(
                s.validate(1).is_ok(),
                ok,
                "{name}: {:?}",
                s.validate(1).err()
            );
        }
    }

    #[test]
    fn rotation_uses_live_secrets_only() {
        let mut s = spec();
        s.secrets.push(SecretSpec {
            value: "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY".into(),
            expires_at_ms: Some(1_000),
        });
        assert_eq!(s.validate(999).unwrap().secret_count(), 2);
        assert_eq!(s.signer_at(1_000).unwrap().secret_count(), 1);
        assert_eq!(s.next_secret_expiry_ms(999), Some(1_000));
        assert_eq!(s.next_secret_expiry_ms(1_000), None);
    }

    #[test]
    fn debug_redacts_secrets_and_header_values() {
        let mut s = spec();
        s.headers
            .push(("Authorization".into(), "Bearer hunter2".into()));
        let text = format!("{s:?}");
        assert!(!text.contains("whsec_"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("Authorization"), "{text}");
    }
}
