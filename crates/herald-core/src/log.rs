//! Delivery log types: what a query returns about each delivery.

use std::borrow::Cow;
use std::sync::Arc;

use crate::ids::{DeliveryId, EventId, EventType, TenantId, WebhookId};
use crate::retry::TransportError;

/// Most items one [`DeliveryQuery`] page returns.
pub const PAGE_ITEMS_MAX: usize = 1000;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryStatus {
    /// Waiting for an attempt, or an attempt is in flight.
    Pending,
    /// An attempt got a 2xx.
    Success,
    /// Ended without success before the schedule ran out (final 3xx/4xx, 410, webhook
    /// disabled or deleted).
    Failed,
    /// Every attempt of the schedule failed with a retryable error.
    Exhausted,
}

impl DeliveryStatus {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Success => "success",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Exhausted => "exhausted",
        }
    }

    /// Parses [`DeliveryStatus::name`].
    pub fn from_name(name: &str) -> Option<DeliveryStatus> {
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Success,
            DeliveryStatus::Failed,
            DeliveryStatus::Exhausted,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Whether the delivery has ended.
    pub fn is_final(self) -> bool {
        self != DeliveryStatus::Pending
    }
}

/// Why the last attempt failed, or why the delivery ended without an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryError {
    /// The receiver answered with a non-2xx status.
    Status(u16),
    /// No HTTP response.
    Transport(TransportError),
    /// The webhook was disabled while the delivery was pending.
    WebhookDisabled,
    /// The webhook was deleted while the delivery was pending.
    WebhookDeleted,
    /// Every signing secret's grace period had ended.
    NoLiveSecret,
}

impl DeliveryError {
    /// Stable name: `status_503`, `request_timeout`, `webhook_disabled`, …
    pub fn name(self) -> String {
        self.name_cow().into_owned()
    }

    /// [`DeliveryError::name`], allocating only for a status.
    pub(crate) fn name_cow(self) -> Cow<'static, str> {
        match self {
            DeliveryError::Status(code) => Cow::Owned(format!("status_{code}")),
            DeliveryError::Transport(t) => Cow::Borrowed(t.name()),
            DeliveryError::WebhookDisabled => Cow::Borrowed("webhook_disabled"),
            DeliveryError::WebhookDeleted => Cow::Borrowed("webhook_deleted"),
            DeliveryError::NoLiveSecret => Cow::Borrowed("no_live_secret"),
        }
    }

    /// Parses [`DeliveryError::name`].
    pub fn from_name(name: &str) -> Option<DeliveryError> {
        if let Some(code) = name.strip_prefix("status_") {
            return code.parse().ok().map(DeliveryError::Status);
        }
        use TransportError::*;
        let transport = [
            Dns,
            ConnectTimeout,
            Connect,
            Tls,
            RequestTimeout,
            Protocol,
            EgressDenied,
            InvalidRequest,
            PoolFull,
        ];
        if let Some(t) = transport.into_iter().find(|t| t.name() == name) {
            return Some(DeliveryError::Transport(t));
        }
        match name {
            "webhook_disabled" => Some(DeliveryError::WebhookDisabled),
            "webhook_deleted" => Some(DeliveryError::WebhookDeleted),
            "no_live_secret" => Some(DeliveryError::NoLiveSecret),
            _ => None,
        }
    }
}

/// One attempt of a delivery, as the log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptSummary {
    /// Attempt number (1-based; an attempt repeated after a restart keeps its number).
    pub attempt: u32,
    /// When it was started (Unix ms).
    pub started_at_ms: u64,
    /// When its outcome was processed; `None` while in flight, or when the delivery
    /// ended (webhook deleted or disabled) before the outcome arrived.
    pub finished_at_ms: Option<u64>,
    /// HTTP status, when there was a response.
    pub response_status: Option<u16>,
    /// Time from send to outcome.
    pub response_time_ms: Option<u64>,
    /// Why it failed (`None` on success and while in flight).
    pub error: Option<DeliveryError>,
}

/// One delivery as the log shows it: its latest attempt and where it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// Delivery id.
    pub id: DeliveryId,
    /// The tenant that published the event (and owns the webhook).
    pub tenant: TenantId,
    /// Event id.
    pub event_id: EventId,
    /// Event type.
    pub event_type: EventType,
    /// Webhook.
    pub webhook: WebhookId,
    /// Attempts started so far (the latest attempt's number).
    pub attempt: u32,
    /// Status.
    pub status: DeliveryStatus,
    /// HTTP status of the latest attempt that got a response.
    pub response_status: Option<u16>,
    /// Latency of the latest finished attempt.
    pub response_time_ms: Option<u64>,
    /// Why the latest attempt failed, or why the delivery ended.
    pub error: Option<DeliveryError>,
    /// When the next attempt is due (pending deliveries only).
    pub next_retry_at_ms: Option<u64>,
    /// Up to [`crate::RESPONSE_BODY_BYTES_MAX`] bytes of the latest response body.
    pub response_body: Arc<[u8]>,
    /// The latest response's headers in arrival order, names lower-cased (at most
    /// [`crate::RESPONSE_HEADERS_MAX`] of them, [`crate::RESPONSE_HEADER_BYTES_MAX`] bytes).
    pub response_headers: Arc<[(String, String)]>,
    /// When the event was accepted.
    pub accepted_at_ms: u64,
    /// When the delivery last changed.
    pub updated_at_ms: u64,
    /// When the delivery ended (succeeded, failed or exhausted); `None` while pending.
    pub finished_at_ms: Option<u64>,
    /// The latest attempts, oldest first (at most [`crate::ATTEMPT_HISTORY_MAX`]).
    pub attempts: Vec<AttemptSummary>,
}

/// A delivery log query: one tenant's deliveries, optionally narrowed, in id order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Tenant (required: deliveries are never listed across tenants).
    pub tenant: TenantId,
    /// Only this webhook's deliveries.
    pub webhook: Option<WebhookId>,
    /// Only this event's deliveries.
    pub event: Option<EventId>,
    /// Only deliveries with this status.
    pub status: Option<DeliveryStatus>,
    /// Start after this delivery (the previous page's [`Page::next_after`]).
    pub after: Option<DeliveryId>,
    /// Most items to return (clamped to 1..=[`PAGE_ITEMS_MAX`]).
    pub limit: usize,
}

impl DeliveryQuery {
    /// The first page (100 items) of all of `tenant`'s deliveries.
    pub fn tenant(tenant: TenantId) -> DeliveryQuery {
        DeliveryQuery {
            tenant,
            webhook: None,
            event: None,
            status: None,
            after: None,
            limit: 100,
        }
    }
}

/// One page of query results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in delivery id order.
    pub items: Vec<T>,
    /// Pass as [`DeliveryQuery::after`] to get the next page; `None` on the last page. A
    /// page may hold fewer items than asked (even none) and still have a next page when
    /// the query examined [`crate::QUERY_SCAN_MAX`] entries.
    pub next_after: Option<DeliveryId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Success,
            DeliveryStatus::Failed,
            DeliveryStatus::Exhausted,
        ] {
            assert_eq!(DeliveryStatus::from_name(s.name()), Some(s));
        }
        let errors = [
            DeliveryError::Status(503),
            DeliveryError::Transport(TransportError::Tls),
            DeliveryError::Transport(TransportError::EgressDenied),
            DeliveryError::Transport(TransportError::InvalidRequest),
            DeliveryError::Transport(TransportError::PoolFull),
            DeliveryError::WebhookDisabled,
            DeliveryError::WebhookDeleted,
            DeliveryError::NoLiveSecret,
        ];
        for e in errors {
            assert_eq!(DeliveryError::from_name(&e.name()), Some(e));
        }
        assert_eq!(DeliveryError::from_name("nope"), None);
        assert_eq!(DeliveryError::from_name("status_x"), None);
    }
}
