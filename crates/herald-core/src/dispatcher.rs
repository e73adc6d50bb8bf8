//! The per-shard dispatch state machine.
//!
//! See the crate documentation for the driver protocol (input, polling order,
//! durability, replay).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::FastHashMap;
use std::sync::Arc;

use herald_http::{HeaderFields, Url};
use herald_sign::{BatchSigner, Message, SignedHeaders, Signer};
use smallvec::SmallVec;
use thin_vec::ThinVec;

use crate::body::{BodyPos, BodyStore, Bytes, Held, PayloadAt};
use crate::convert::{webhook_from_rec, webhook_to_rec};
use crate::envelope::{encode_envelope, EnvelopeError, Idempotency, NewEvent, API_VERSION_DEFAULT};
use crate::headers::ResponseHeaders;
use crate::health::{Health, HealthPolicy, Signal};
use crate::ids::{DeliveryId, EventId, EventType, IdError, TenantId, WebhookId};
use crate::log::{
    AttemptSummary, DeliveryError, DeliveryQuery, DeliveryRecord, DeliveryStatus, Page,
    PAGE_ITEMS_MAX,
};
use crate::matcher::Matcher;
use crate::metrics::Counters;
use crate::record::{self, Record};
use crate::retry::{
    classify, jitter_ms, retry_delay_ms, AttemptResult, OutcomeClass, RetrySchedule,
    TransportError, JITTER_PERCENT_MAX,
};
use crate::webhook::{DisableReason, SpecError, WebhookSpec, WebhookStatus};
use crate::wheel::{TimerKey, TimingWheel};

mod admission;
mod deliveries;
mod idempotency;
mod operations;
mod outcome;
mod queries;
mod registry;
mod replay;
mod signing;
mod table;

use admission::KeyUse;
use deliveries::Deliveries;
use idempotency::{KeyEntry, Keys};
use outcome::{headers_of_rec, GENERATED_EVENT_ID_PREFIXES};
pub use replay::{BodyMoves, Checkpoint, CheckpointParts};
use signing::Plan;
use table::{IdSet, DELIVERY_ID_END};

/// Most bytes of a response body kept per attempt (log and journal).
pub const RESPONSE_BODY_BYTES_MAX: usize = 4096;
/// Most response headers kept per attempt (log and journal): enough for what an operator
/// reads when debugging a receiver (content type, request ids, rate-limit and retry
/// hints) while a receiver answering with hundreds of headers cannot grow every
/// delivery's record. Headers beyond it are left out, in arrival order.
pub const RESPONSE_HEADERS_MAX: usize = 16;
/// Most bytes of response headers (names plus values) kept per attempt: bounds the log's
/// and the journal's cost per attempt like [`RESPONSE_BODY_BYTES_MAX`], at half its size
/// because headers are metadata. A header that would cross it is left out.
pub const RESPONSE_HEADER_BYTES_MAX: usize = 2048;
/// Default cap on pending deliveries per shard; beyond it new events are refused with
/// [`AcceptError::Full`] (back-pressure) rather than growing memory without bound.
pub const PENDING_DELIVERIES_MAX_DEFAULT: usize = 1_000_000;
/// Default cap on one tenant's pending deliveries in its shard; beyond it the tenant's
/// new events are refused with [`AcceptError::TenantFull`]. Half the shard's default:
/// a tenant whose receivers are down (its backlog grows by every event it publishes)
/// cannot take its shard's whole room, so the shard's other tenants keep at least half.
pub const PENDING_DELIVERIES_PER_TENANT_MAX_DEFAULT: usize = PENDING_DELIVERIES_MAX_DEFAULT / 2;
/// Default number of finished deliveries kept in the log; the oldest are evicted. Each
/// holds its latest response body (at most [`RESPONSE_BODY_BYTES_MAX`]) and headers (at
/// most [`RESPONSE_HEADER_BYTES_MAX`] plus [`RESPONSE_HEADERS_MAX`] string headers) and
/// shares its event's body with the event's other deliveries, so the log's memory is at
/// most about `log_finished_max * (RESPONSE_BODY_BYTES_MAX + RESPONSE_HEADER_BYTES_MAX +
/// 1000)` bytes plus the retained events.
pub const LOG_FINISHED_MAX_DEFAULT: usize = 100_000;
/// Default of [`DispatcherConfig::log_finished_per_tenant_max`]: half the shard's, so
/// that one tenant publishing a flood (each delivery ends in the log) shortens its own
/// history and leaves the shard's other tenants at least half of the log: their
/// deliveries stay queryable, retryable and recoverable.
pub const LOG_FINISHED_PER_TENANT_MAX_DEFAULT: usize = LOG_FINISHED_MAX_DEFAULT / 2;
/// Default cap on requests started by one [`Dispatcher::tick`]: bounds the latency of a
/// tick and the size of a signing batch. Leftover work keeps
/// [`Dispatcher::next_deadline_ms`] at "now".
pub const SENDS_PER_TICK_MAX_DEFAULT: usize = 4096;
/// Default cap on the held deliveries one tick looks at to end those of a webhook that
/// was disabled or deleted ([`DispatcherConfig::endings_per_tick_max`]). Ending a
/// delivery writes its record: a million at once held a shard ~0.9 s and 92 MiB of
/// journal in one turn (`herald bench pending`), so a large backlog ends over
/// successive ticks, about 1–4 ms each, while the shard serves everything else.
pub const ENDINGS_PER_TICK_MAX_DEFAULT: usize = 4096;
/// Most timers one [`Dispatcher::tick`] fires: after a long pause (or a restart with a
/// backlog) the due work is spread over several ticks instead of one unbounded one;
/// [`Dispatcher::next_deadline_ms`] stays at "now" until it is done.
pub const TIMERS_PER_TICK_MAX: usize = 65_536;
/// Default cap on webhooks per tenant.
pub const WEBHOOKS_PER_TENANT_MAX_DEFAULT: usize = 10_000;
/// Most log entries one [`Dispatcher::deliveries`] query examines: a query with narrow
/// filters over a long log returns a short (even empty) page with
/// [`Page::next_after`] set, so that one query never stalls the shard.
pub const QUERY_SCAN_MAX: usize = 50_000;
/// Most deliveries one [`Dispatcher::resend_failed`] call re-queues.
pub const RESEND_MAX: usize = 10_000;
/// Type of the operational event published when a webhook is disabled automatically.
pub const WEBHOOK_DISABLED_EVENT: &str = "webhook.disabled";
/// `data` of a test event ([`Dispatcher::send_test_event`]).
pub const TEST_EVENT_DATA: &[u8] = b"{\"test\":true}";
/// Most idempotency keys a shard remembers (and the default of
/// [`DispatcherConfig::idempotency_keys_max`]); beyond it the oldest is forgotten first,
/// so a flood of keys costs bounded memory (about the key's length plus ~120 bytes each)
/// and only shortens how long the oldest keys protect against duplicates.
pub const IDEMPOTENCY_KEYS_MAX: usize = 1_000_000;
/// Default of [`DispatcherConfig::idempotency_keys_per_tenant_max`]: half the shard's
/// bound, so that one tenant publishing a flood of keys (which, at 40,000 events a
/// second, fill a million in 25 s) shortens how long its own keys are remembered, and
/// leaves the shard's other tenants at least half of the room.
pub const IDEMPOTENCY_KEYS_PER_TENANT_MAX_DEFAULT: usize = IDEMPOTENCY_KEYS_MAX / 2;
/// Default of [`DispatcherConfig::idempotency_window_ms`]: 24 hours, long enough for a
/// publisher's retries across its own restarts and outages.
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Most attempts a delivery's history keeps ([`DeliveryRecord::attempts`]): past it, the
/// oldest attempt that found no connection to send on (`pool_full`) is dropped first,
/// else the oldest. A schedule allows at most [`crate::RETRIES_MAX`] + 1 = 25 attempts,
/// so the history holds every attempt a whole schedule sends plus a few manual retries
/// however many were refused a connection meanwhile (where the delivery stands in its
/// schedule is counted from it), while a delivery retried by hand without end still
/// costs bounded memory (~50 bytes per attempt) in the log and in checkpoints.
pub const ATTEMPT_HISTORY_MAX: usize = 32;
/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Shard-wide configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Retry schedule of webhooks without an override.
    pub retry_schedule: RetrySchedule,
    /// Jitter applied to retry delays, percent either way (0 = none; at most
    /// [`JITTER_PERCENT_MAX`]).
    pub jitter_percent: u8,
    /// Seed of the deterministic jitter.
    pub jitter_seed: u64,
    /// Circuit breaker and auto-disable policy.
    pub health: HealthPolicy,
    /// Most webhooks per tenant.
    pub webhooks_per_tenant_max: usize,
    /// Most pending deliveries in the shard.
    pub pending_deliveries_max: usize,
    /// Most pending deliveries of one tenant in the shard (at least 1; the shard's
    /// limit still applies). Deliveries of a deleted webhook count until they have
    /// ended.
    pub pending_deliveries_per_tenant_max: usize,
    /// Most finished deliveries kept in the log; the oldest are evicted.
    pub log_finished_max: usize,
    /// Most finished deliveries of one tenant kept in the log (at least 1); beyond it
    /// the tenant's own oldest is evicted first. The shard's limit still applies.
    pub log_finished_per_tenant_max: usize,
    /// Most requests started per tick.
    pub sends_per_tick_max: usize,
    /// Most held deliveries one tick looks at to end the pending deliveries of a
    /// webhook that was disabled or deleted; a larger backlog ends over several ticks
    /// (`ENDINGS_PER_TICK_MAX_DEFAULT`).
    pub endings_per_tick_max: usize,
    /// How long an idempotency key is remembered after its event was accepted.
    pub idempotency_window_ms: u64,
    /// Most idempotency keys remembered (1..=[`IDEMPOTENCY_KEYS_MAX`]); the oldest is
    /// forgotten first.
    pub idempotency_keys_max: usize,
    /// Most idempotency keys remembered for one tenant (at least 1); beyond it the
    /// tenant's own oldest key is forgotten first.
    pub idempotency_keys_per_tenant_max: usize,
    /// Largest record the driver's journal takes, less room for a checkpoint's part to
    /// hold the record's event with one delivery's state. An event whose record could
    /// be larger ([`crate::record::event_record_bytes_estimate`]) is refused with
    /// [`AcceptError::TooLarge`], the caller's error, instead of a record the journal
    /// would refuse. Default: no bound (the runtime sets its journal's).
    pub record_bytes_max: usize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            retry_schedule: RetrySchedule::default(),
            jitter_percent: 0,
            jitter_seed: 0,
            health: HealthPolicy::default(),
            webhooks_per_tenant_max: WEBHOOKS_PER_TENANT_MAX_DEFAULT,
            pending_deliveries_max: PENDING_DELIVERIES_MAX_DEFAULT,
            pending_deliveries_per_tenant_max: PENDING_DELIVERIES_PER_TENANT_MAX_DEFAULT,
            log_finished_max: LOG_FINISHED_MAX_DEFAULT,
            log_finished_per_tenant_max: LOG_FINISHED_PER_TENANT_MAX_DEFAULT,
            sends_per_tick_max: SENDS_PER_TICK_MAX_DEFAULT,
            endings_per_tick_max: ENDINGS_PER_TICK_MAX_DEFAULT,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
            idempotency_keys_max: IDEMPOTENCY_KEYS_MAX,
            idempotency_keys_per_tenant_max: IDEMPOTENCY_KEYS_PER_TENANT_MAX_DEFAULT,
            record_bytes_max: usize::MAX,
        }
    }
}

/// Sequence number of an [`Command::Append`], assigned by the dispatcher in output order
/// (1, 2, 3, … for the life of one `Dispatcher`). The driver reports durability with it
/// ([`Dispatcher::records_durable`]). `AppendId(0)` means "nothing to wait for".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppendId(pub u64);

/// One request to send. Everything the transport needs; the driver adds only `Host` and
/// `Content-Length` (from `url` and `body`).
///
/// `Debug` prints header names only (custom header values may be credentials) and the
/// body's length.
#[derive(Clone)]
pub struct SendRequest {
    /// Delivery this attempt belongs to; report the outcome with it.
    pub delivery: DeliveryId,
    /// Attempt number (1-based); report the outcome with it.
    pub attempt: u32,
    /// Tenant.
    pub tenant: TenantId,
    /// Webhook.
    pub webhook: WebhookId,
    /// Event id (also in the signature headers).
    pub event_id: EventId,
    /// Endpoint.
    pub url: Arc<Url>,
    /// Headers in send order: `content-type`, `user-agent`, the signature headers, then
    /// the webhook's custom headers. Names and values are valid header text. One buffer
    /// for all of them (static names are not copied): two allocations per request.
    pub headers: HeaderFields,
    /// The envelope: exactly the signed bytes, shared by every delivery of the event in
    /// one tick, and read from the driver's [`BodyStore::shared`] (a stored body is not
    /// copied when the store can hold its bytes).
    pub body: Bytes,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout.
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.names().collect();
        f.debug_struct("SendRequest")
            .field("delivery", &self.delivery)
            .field("attempt", &self.attempt)
            .field("tenant", &self.tenant)
            .field("webhook", &self.webhook)
            .field("event_id", &self.event_id)
            .field("url", &self.url.to_string())
            .field("header_names", &header_names)
            .field("body_bytes", &self.body.len())
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .finish()
    }
}

/// Output of the dispatcher, polled with [`Dispatcher::pop_command`].
#[derive(Clone, Debug)]
pub enum Command {
    /// Append this record to the journal (in the order polled), then report durability
    /// with [`Dispatcher::records_durable`]`(id)`.
    Append {
        /// Sequence number to report.
        id: AppendId,
        /// The record ([`Record::encode`] gives kind, version and payload).
        record: Record,
    },
    /// Send this request and report its outcome with [`Dispatcher::attempt_finished`].
    Send(SendRequest),
}

/// What happened to one attempt, reported by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// [`SendRequest::delivery`].
    pub delivery: DeliveryId,
    /// [`SendRequest::attempt`].
    pub attempt: u32,
    /// The response status (and `Retry-After`), or the transport error.
    pub result: AttemptResult,
    /// Time from send to outcome.
    pub latency_ms: u64,
    /// Captured response body; truncated to [`RESPONSE_BODY_BYTES_MAX`] here.
    pub response_body: Vec<u8>,
    /// Captured response headers, in arrival order, as the limits keep them
    /// ([`ResponseHeaders::bounded`]); moved into the outcome record, not copied.
    pub response_headers: ResponseHeaders,
}

/// An accepted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The event id (for a duplicate, the first event's).
    pub event_id: EventId,
    /// The `EventAccepted` record; acknowledge the publisher once it is durable. For a
    /// duplicate, the first event's record (already durable: `AppendId(0)` or lower
    /// than any id still waiting).
    pub append: AppendId,
    /// Deliveries created (one per matching active webhook).
    pub deliveries: usize,
    /// Id of the first delivery created; the event's deliveries are numbered
    /// consecutively from it. `None` when no webhook matched, and for a duplicate.
    pub first_delivery: Option<DeliveryId>,
    /// The event's creation time (for a duplicate, the first event's).
    pub created_at_ms: u64,
    /// The event's idempotency key was live and its fingerprint matched: nothing was
    /// recorded or fanned out, and the fields above describe the first event.
    pub duplicate: bool,
}

/// What one step of [`Dispatcher::resend_failed_step`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resent {
    /// Deliveries re-queued.
    pub requeued: usize,
    /// Where the next step goes on (pass it as its `after`): `Some` when this one
    /// stopped at its scan bound with deliveries left to look at.
    pub next_after: Option<DeliveryId>,
}

/// What one step of [`Dispatcher::purge_tenant`] dropped of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantPurge {
    /// The `TenantPurged` record; the step stands once it is durable.
    pub append: AppendId,
    /// Finished deliveries dropped from the log (at most [`PURGE_DELIVERIES_PER_STEP`]).
    pub deliveries: usize,
    /// Remembered idempotency keys forgotten (at most [`PURGE_KEYS_PER_STEP`]).
    pub idempotency_keys: usize,
    /// Nothing of the tenant is left: no further step is needed.
    pub done: bool,
}

/// Most finished deliveries one step of a tenant's purge drops from the log: each costs
/// look-ups in the table of deliveries, the tenant's index and the log's order, ~600 ns
/// with the tables out of the cache, so a step holds the shard for well under a
/// millisecond, where a tenant's whole share of the log (50,000 by default) took ~30 ms
/// in one turn.
pub const PURGE_DELIVERIES_PER_STEP: usize = 1024;

/// Most idempotency keys one step of a tenant's purge forgets: ~125 ns each (a removal
/// from a table that is not in the cache), so about a millisecond, where a tenant's
/// whole share (500,000 by default) took ~60 ms.
pub const PURGE_KEYS_PER_STEP: usize = 8192;

/// A webhook create/update/delete that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The spec is invalid (caller's error).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The tenant already has the most webhooks allowed (caller's error).
    #[error("tenant already has {max} webhooks, the most allowed; delete one first")]
    TooManyWebhooks {
        /// The limit.
        max: usize,
    },
    /// No such webhook (caller's error).
    #[error("no webhook {webhook} for tenant {tenant}")]
    NotFound {
        /// Tenant.
        tenant: TenantId,
        /// Webhook.
        webhook: WebhookId,
    },
}

/// The shard holds the most pending deliveries allowed
/// ([`DispatcherConfig::pending_deliveries_max`]): back-pressure, retry later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("shard is full: {pending} pending deliveries, {needed} more needed, at most {max}")]
pub struct ShardFull {
    /// Pending deliveries now.
    pub pending: usize,
    /// Deliveries the refused work needs.
    pub needed: usize,
    /// The limit.
    pub max: usize,
}

/// The tenant holds the most pending deliveries allowed in its shard
/// ([`DispatcherConfig::pending_deliveries_per_tenant_max`]): its receivers are failing
/// or slow, and must catch up (or its webhooks be fixed or disabled) before more of its
/// events are accepted. The shard's other tenants are not held back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the tenant has {pending} pending deliveries, {needed} more needed, at most {max}; \
     its receivers must catch up before more of its events are accepted"
)]
pub struct TenantFull {
    /// The tenant's pending deliveries now.
    pub pending: usize,
    /// Deliveries the refused work needs.
    pub needed: usize,
    /// The limit.
    pub max: usize,
}

/// An event that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The event is invalid (caller's error).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The shard holds the most pending deliveries allowed: back-pressure, retry later.
    /// The event comes back unchanged ([`AcceptError::into_event`]), so the caller can
    /// publish it again without having kept a copy.
    #[error("{full}")]
    Full {
        /// The limit, and what the event needed.
        full: ShardFull,
        /// The refused event, unchanged.
        event: Box<NewEvent>,
    },
    /// The tenant holds the most pending deliveries allowed in its shard: back-pressure
    /// on this tenant only. The event comes back unchanged, as with
    /// [`AcceptError::Full`].
    #[error("{full}")]
    TenantFull {
        /// The limit, and what the event needed.
        full: TenantFull,
        /// The refused event, unchanged.
        event: Box<NewEvent>,
    },
    /// The idempotency key is not 1..=[`crate::IDEMPOTENCY_KEY_BYTES_MAX`] bytes of
    /// printable ASCII (caller's error).
    #[error("idempotency key must be 1..={max} bytes of printable ASCII")]
    IdempotencyKey {
        /// [`crate::IDEMPOTENCY_KEY_BYTES_MAX`].
        max: usize,
    },
    /// The event's record, with one delivery reference per webhook it matched, could be
    /// larger than the journal takes ([`DispatcherConfig::record_bytes_max`]): the
    /// caller's error (send less data, or fewer webhooks match), or a journal whose
    /// segments are too small for the server's body limit.
    #[error(
        "the event's record (up to {bytes} bytes with its {deliveries} deliveries) is larger \
         than this server's journal takes ({max} bytes); send less data"
    )]
    TooLarge {
        /// The record's estimated size.
        bytes: usize,
        /// Deliveries it would create.
        deliveries: usize,
        /// [`DispatcherConfig::record_bytes_max`].
        max: usize,
    },
    /// The idempotency key was used, within the window, for an event with a different
    /// fingerprint (caller's error).
    #[error("idempotency key {key:?} was used for a different event; use a new key")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
}

impl AcceptError {
    /// The refused event, when the refusal was back-pressure ([`AcceptError::Full`],
    /// [`AcceptError::TenantFull`]): publishing it again later can succeed. `None` for
    /// the caller's errors, which publishing the same event again would only repeat.
    pub fn into_event(self) -> Option<NewEvent> {
        match self {
            AcceptError::Full { event, .. } | AcceptError::TenantFull { event, .. } => Some(*event),
            _ => None,
        }
    }
}

/// A manual operation that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// No such delivery for this tenant (or it was evicted from the log).
    #[error("no delivery {0} for this tenant")]
    DeliveryNotFound(DeliveryId),
    /// No such webhook.
    #[error("no webhook {webhook} for tenant {tenant}")]
    WebhookNotFound {
        /// Tenant.
        tenant: TenantId,
        /// Webhook.
        webhook: WebhookId,
    },
    /// The webhook is disabled; enable it first.
    #[error("webhook {0} is disabled")]
    WebhookDisabled(WebhookId),
    /// The delivery is already due or in flight.
    #[error("delivery {0} is already due or in flight")]
    InProgress(DeliveryId),
    /// The delivery succeeded; only pending, failed and exhausted deliveries can be
    /// retried (checkpoints do not keep the bodies of successful deliveries).
    #[error("delivery {0} already succeeded")]
    AlreadySucceeded(DeliveryId),
    /// Invalid event type for a test event.
    #[error(transparent)]
    EventType(#[from] IdError),
    /// A test event was refused: invalid, or back-pressure ([`AcceptError::Full`], the
    /// caller's event given back).
    #[error(transparent)]
    Accept(#[from] AcceptError),
    /// The shard holds the most pending deliveries allowed, so a retry or a test event
    /// the dispatcher made up cannot be queued: back-pressure, retry later.
    #[error(transparent)]
    Full(ShardFull),
    /// The tenant holds the most pending deliveries allowed in its shard, so a retry
    /// cannot be queued: back-pressure on this tenant, retry once its receivers caught up.
    #[error(transparent)]
    TenantFull(TenantFull),
    /// A purge was refused: the tenant still has webhooks (caller's error).
    #[error("tenant {tenant} still has {webhooks} webhook(s); delete them before purging it")]
    TenantHasWebhooks {
        /// Tenant.
        tenant: TenantId,
        /// Its webhooks in this shard.
        webhooks: usize,
    },
    /// A purge was refused: the tenant still has pending deliveries (a deleted webhook's
    /// end a bounded number per tick). Ask again in a moment.
    #[error(
        "tenant {tenant} still has {pending} pending deliveries (a deleted webhook's are \
         being ended); purge it again in a moment"
    )]
    TenantBusy {
        /// Tenant.
        tenant: TenantId,
        /// Its pending deliveries in this shard.
        pending: usize,
    },
}

/// A record that cannot be replayed (storage's fault: corruption or an incompatible
/// writer).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A field of the record is invalid.
    #[error("record kind {kind:#06x}: invalid {reason}")]
    Invalid {
        /// Record kind.
        kind: u16,
        /// What is wrong.
        reason: String,
    },
}

/// A webhook as held by the registry.
#[derive(Clone, Copy, Debug)]
pub struct WebhookView<'a> {
    /// Tenant.
    pub tenant: &'a TenantId,
    /// Id.
    pub id: &'a WebhookId,
    /// Configuration (including status).
    pub spec: &'a WebhookSpec,
    /// Endpoint health.
    pub health: &'a Health,
    /// Pending deliveries.
    pub pending: usize,
    /// When it was created (Unix ms).
    pub created_at_ms: u64,
    /// When its configuration or status last changed (Unix ms).
    pub updated_at_ms: u64,
}

/// Counters for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Webhooks, all tenants.
    pub webhooks: usize,
    /// Pending deliveries.
    pub pending_deliveries: usize,
    /// Deliveries with an attempt in flight.
    pub in_flight: usize,
    /// Deliveries held (pending plus finished ones kept for the log).
    pub deliveries_retained: usize,
    /// Timers in the wheel.
    pub timers: usize,
    /// Deliveries whose event is not yet reported durable.
    pub awaiting_durable: usize,
    /// Idempotency keys remembered (some may have outlived the window and wait to be
    /// forgotten at the next accepted event).
    pub idempotency_keys: usize,
    /// Pending deliveries that made at least one attempt and have none in flight: due
    /// for, or waiting for, a retry.
    pub retries_pending: usize,
}

/// What a pending delivery needs of its event, shared by the event's deliveries.
struct EventData {
    /// The registry's copy, shared by the tenant's events (a thin pointer: 8 bytes).
    tenant: Arc<TenantId>,
    id: EventId,
    /// One copy per type, shared (a thin pointer; see `shared_event_type`).
    event_type: Arc<EventType>,
    body: EventBody,
    accepted_at_ms: u64,
}

// With the `Arc`'s two counts, at most 96 bytes: the allocator's size class below 112,
// one per pending event (the id inline, the body 16 bytes, tenant and type behind thin
// pointers).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<EventData>() <= 80);

impl EventData {
    /// The same event with its body kept as `body` instead.
    fn with_body(&self, body: EventBody) -> EventData {
        EventData {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            body,
            accepted_at_ms: self.accepted_at_ms,
        }
    }
}

/// An event's envelope: in memory until the driver reports where the journal holds it
/// (see [`crate::body`]). An empty held body is "not kept" (a checkpoint leaves out the
/// bodies of events whose deliveries all succeeded).
///
/// 16 bytes, so that an event's state (with its id inline) fits the allocator's 96-byte
/// size class: the held bytes sit behind a thin pointer, and a stored position's length
/// is never zero, which leaves a niche for the tag.
#[derive(Clone, Debug)]
enum EventBody {
    /// The bytes (a thin pointer to the shared envelope). Held only until the driver
    /// reports the event's position, or for a driver that reports none.
    Held(Arc<Arc<[u8]>>),
    /// Where the driver stored the bytes; or, at [`StoredAt::AWAITING`], that it is about
    /// to say where (a live event of a driver that reports every envelope,
    /// [`Dispatcher::report_envelopes`]).
    Stored(StoredAt),
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<EventBody>() <= 16);

/// A [`BodyPos`] of at least one byte. `repr(C)` keeps the length (the niche) after the
/// first eight bytes, where [`EventBody::Held`]'s pointer goes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct StoredAt {
    segment: u64,
    offset: u32,
    len: std::num::NonZeroU32,
}

impl StoredAt {
    /// The segment of no position: the body of a live event whose position the driver
    /// is about to report ([`EventBody::awaiting`]). No journal numbers a segment so.
    const AWAITING: u64 = u64::MAX;

    /// The position as the driver reported it.
    fn pos(self) -> BodyPos {
        BodyPos {
            segment: self.segment,
            offset: self.offset,
            len: self.len.get(),
        }
    }
}

impl EventBody {
    /// `bytes` kept in memory.
    fn held(bytes: Arc<[u8]>) -> EventBody {
        EventBody::Held(Arc::new(bytes))
    }

    /// The body the driver stored at `at` (an empty one needs no position).
    fn stored(at: BodyPos) -> EventBody {
        match std::num::NonZeroU32::new(at.len) {
            Some(len) => EventBody::Stored(StoredAt {
                segment: at.segment,
                offset: at.offset,
                len,
            }),
            None => EventBody::held(Arc::from(&[][..])),
        }
    }

    /// The body of a live event, `len` bytes, whose position the driver reports right
    /// after it appends the event's record ([`Dispatcher::report_envelopes`]): nothing
    /// is copied in between. Empty bodies are held as ever.
    fn awaiting(len: usize) -> EventBody {
        match u32::try_from(len).ok().and_then(std::num::NonZeroU32::new) {
            Some(len) => EventBody::Stored(StoredAt {
                segment: StoredAt::AWAITING,
                offset: 0,
                len,
            }),
            None => EventBody::held(Arc::from(&[][..])),
        }
    }

    /// Whether the driver has yet to report where it stored the body.
    fn is_awaiting(&self) -> bool {
        matches!(self, EventBody::Stored(at) if at.segment == StoredAt::AWAITING)
    }

    /// The driver reported every envelope it was to report: a body still awaiting its
    /// position is a broken promise (the dispatcher cannot sign or checkpoint bytes it
    /// does not have), so stop.
    fn assert_not_awaiting(&self) {
        assert!(
            !self.is_awaiting(),
            "bug: the driver promised to report where it stored an event's envelope and \
             did not (Dispatcher::report_envelopes)"
        );
    }

    fn len(&self) -> usize {
        match self {
            EventBody::Held(bytes) => bytes.len(),
            EventBody::Stored(at) => at.len.get() as usize,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as a request carries them: a held body shares its allocation, a stored
    /// one comes from [`BodyStore::shared`] (the same promise as [`EventBody::bytes`]).
    fn shared(&self, store: &dyn BodyStore) -> Bytes {
        self.assert_not_awaiting();
        match self {
            EventBody::Held(bytes) => Bytes::from_owner(Arc::clone(&**bytes)),
            EventBody::Stored(at) => match store.shared(at.pos()) {
                Some(bytes) if bytes.len() == at.len.get() as usize => bytes,
                _ => panic!(
                    "bug: the event body the driver stored at {at:?} is not in its body store"
                ),
            },
        }
    }

    /// The bytes, from memory or from `store`. A stored body the store does not hold is
    /// a broken promise of the driver's (it said the journal keeps the bytes there):
    /// stop rather than sign and send something else.
    fn bytes<'a>(&'a self, store: &'a dyn BodyStore) -> &'a [u8] {
        self.assert_not_awaiting();
        match self {
            EventBody::Held(bytes) => bytes,
            EventBody::Stored(at) => match store.body(at.pos()) {
                Some(bytes) if bytes.len() == at.len.get() as usize => bytes,
                _ => panic!(
                    "bug: the event body the driver stored at {at:?} is not in its body store"
                ),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Created; its event is not yet reported durable.
    AwaitingDurable,
    /// Waiting in the wheel for its due time.
    Scheduled(TimerKey),
    /// Due; in its webhook's queue waiting for admission.
    Waiting,
    /// An attempt is in flight.
    InFlight,
    /// Ended.
    Finished,
}

#[derive(Clone)]
struct Delivery {
    event: Arc<EventData>,
    /// The registry's copy while the webhook exists (`shared_webhook`).
    webhook: Arc<WebhookId>,
    attempt: u32,
    attempts_max: u32,
    status: DeliveryStatus,
    stage: Stage,
    /// While pending, when it is (or was last) due, [`Delivery::NOT_DUE`] for none;
    /// once ended (when it has no due time), its place in the order deliveries ended
    /// (the dispatcher's `finish_seq` then). One field for two: the delivery is boxed in
    /// the allocator's 64-byte size class, and a pending million of them make that
    /// matter (absent values below are sentinels for the same reason, as in
    /// [`Attempt`]). Read and written through [`Delivery::due_ms`],
    /// [`Delivery::set_due_ms`], [`Delivery::finish_seq`] and [`Delivery::set_finished`].
    due_or_finish: u64,
    updated_at_ms: u64,
    /// What its attempts left (history, last response, status, latency and error);
    /// `None` until its first attempt or an error that ended it.
    outcomes: Option<Box<Outcomes>>,
}

// A pending delivery is boxed; at most 64 bytes keeps it in the allocator's 64-byte
// size class (the next is 80), which a backlog of a million deliveries feels: most of a
// backlog behind an open breaker never made an attempt and has no `Outcomes` box.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Delivery>() <= 64);

/// What a delivery's attempts left, boxed apart from the delivery: a delivery that has
/// made no attempt (a backlog waiting behind an open breaker, or for its event to be
/// durable) needs none of it, and without it the delivery is 64 bytes instead of 128.
/// One that made attempts pays 64 bytes for the box, which holds its first attempt and
/// one pointer to its last response: a delivery that succeeded at once, or a pending
/// one that failed once, costs two allocations here (the box and the response), not
/// six (four for the response and one for the history besides the box).
#[derive(Clone)]
struct Outcomes {
    /// The latest attempts, oldest first, at most [`ATTEMPT_HISTORY_MAX`] (refused ones
    /// dropped first); the first inline (most deliveries make one), more on the heap
    /// (dropping one of 32 moves a few hundred bytes, once per attempt past the 32nd).
    attempts: SmallVec<[Attempt; 1]>,
    /// The latest response's captured body and headers; empty (no allocation) while
    /// both are empty (no response yet, or none captured).
    last_response: LastResponse,
    /// The last response's status; 0 when there was none ([`Delivery::last_status`]).
    last_status_code: u16,
    /// The last attempt's latency in milliseconds, saturating just below
    /// [`Attempt::NO_TIME`] (49 days), which stands for none
    /// ([`Delivery::last_latency_ms`]).
    last_latency: u32,
    last_error: Option<DeliveryError>,
}

// An event's list of deliveries awaiting durability is no larger inline than a `Vec`.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    std::mem::size_of::<SmallVec<[DeliveryId; 2]>>() <= std::mem::size_of::<Vec<DeliveryId>>()
);

// The allocator's 64-byte size class (the next is 80): a million pending deliveries
// that failed once each hold one of these.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Outcomes>() <= 64);

impl Outcomes {
    const NONE: Outcomes = Outcomes {
        attempts: SmallVec::new_const(),
        last_response: LastResponse::NONE,
        last_status_code: 0,
        last_latency: Attempt::NO_TIME,
        last_error: None,
    };

    /// Holds nothing a delivery without the box would not answer the same.
    fn is_none(&self) -> bool {
        self.attempts.is_empty()
            && self.last_response.is_none()
            && self.last_status_code == 0
            && self.last_latency == Attempt::NO_TIME
            && self.last_error.is_none()
    }
}

/// Most deliveries held for which debug builds recount the whole state after a tick: the
/// unit, property and simulation tests stay far below it and are checked on every tick,
/// while load tests run on debug builds (thousands of deliveries, a tick per turn) are
/// not slowed down by a scan of everything per tick.
#[cfg(debug_assertions)]
const RECOUNT_DELIVERIES_MAX: usize = 4096;

/// Lowers a hand-kept count by one. A count about to go below zero has drifted from
/// what it counts: stop (in release builds too) rather than wrap and admit or refuse
/// work by a wrong number.
fn count_down(count: &mut usize, what: &str) {
    assert!(*count > 0, "bug: the count of {what} would go below zero");
    *count -= 1;
}

/// Delivery `id`, to change, if it is held and pending (borrows the deliveries only, so
/// the wheel and the counts stay at hand).
fn pending_mut(deliveries: &mut Deliveries, id: DeliveryId) -> Option<&mut Delivery> {
    deliveries
        .get_mut(&id)
        .filter(|d| !d.status.is_final())
        .map(|d| &mut **d)
}

/// Sets a delivery's attempt number, keeping `fresh_pending` (pending deliveries that
/// never made an attempt) in step.
fn set_attempt(fresh_pending: &mut usize, d: &mut Delivery, attempt: u32) {
    if !d.status.is_final() {
        match (d.attempt == 0, attempt == 0) {
            (true, false) => count_down(fresh_pending, "deliveries without an attempt"),
            (false, true) => *fresh_pending += 1,
            _ => {}
        }
    }
    d.attempt = attempt;
}

/// A response body and headers kept for the delivery log, in one allocation behind one
/// pointer (none while both are empty):
///
/// ```text
/// 0..4          body length, u32 little-endian
/// 4..8          header count n, u32 little-endian
/// 8..8+8n       per header: where its name and its value end in the header text,
///               u32 little-endian each (each starts where the one before ended)
/// 8+8n..        the body, then the header text (names and values, UTF-8)
/// ```
///
/// Written only by [`LastResponse::new`], which a body of at most
/// [`RESPONSE_BODY_BYTES_MAX`] and at most [`RESPONSE_HEADERS_MAX`] headers of at most
/// [`RESPONSE_HEADER_BYTES_MAX`] keep far below `u32::MAX`.
#[derive(Clone)]
struct LastResponse(ThinVec<u8>);

impl LastResponse {
    const NONE: LastResponse = LastResponse(ThinVec::new());
    const FIXED_BYTES: usize = 8;

    fn new<'h>(
        body: &[u8],
        headers: impl ExactSizeIterator<Item = (&'h str, &'h str)> + Clone,
    ) -> LastResponse {
        let count = headers.len();
        if body.is_empty() && count == 0 {
            return LastResponse::NONE;
        }
        let text_bytes: usize = headers.clone().map(|(n, v)| n.len() + v.len()).sum();
        let total = Self::FIXED_BYTES + 8 * count + body.len() + text_bytes;
        let as_u32 = |n: usize| u32::try_from(n).expect("a kept response is far below 4 GiB");
        let mut bytes = ThinVec::with_capacity(total);
        bytes.extend_from_slice(&as_u32(body.len()).to_le_bytes());
        bytes.extend_from_slice(&as_u32(count).to_le_bytes());
        let mut end = 0;
        for (name, value) in headers.clone() {
            end += name.len();
            bytes.extend_from_slice(&as_u32(end).to_le_bytes());
            end += value.len();
            bytes.extend_from_slice(&as_u32(end).to_le_bytes());
        }
        bytes.extend_from_slice(body);
        for (name, value) in headers {
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(value.as_bytes());
        }
        debug_assert_eq!(bytes.len(), total);
        LastResponse(bytes)
    }

    fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    fn word(&self, at: usize) -> usize {
        let mut word = [0u8; 4];
        word.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(word) as usize
    }

    /// Body length and header count; (0, 0) for none.
    fn counts(&self) -> (usize, usize) {
        if self.is_none() {
            return (0, 0);
        }
        (self.word(0), self.word(4))
    }

    fn body(&self) -> &[u8] {
        if self.is_none() {
            return &[];
        }
        let (body_len, count) = self.counts();
        let start = Self::FIXED_BYTES + 8 * count;
        &self.0[start..start + body_len]
    }

    /// The number of headers and the bytes of their names and values.
    fn headers_size(&self) -> (usize, usize) {
        let (body_len, count) = self.counts();
        if self.is_none() {
            return (0, 0);
        }
        let text_at = Self::FIXED_BYTES + 8 * count + body_len;
        (count, self.0.len() - text_at)
    }

    /// The header text and, per header, where its name and value end in it.
    fn header_parts(&self) -> (&str, &[u8]) {
        if self.is_none() {
            return ("", &[]);
        }
        let (body_len, count) = self.counts();
        let text_at = Self::FIXED_BYTES + 8 * count + body_len;
        // Written from `&str`s whole, and every end is at the end of one.
        let text =
            std::str::from_utf8(&self.0[text_at..]).expect("header text is the UTF-8 written");
        (
            text,
            &self.0[Self::FIXED_BYTES..Self::FIXED_BYTES + 8 * count],
        )
    }

    /// The headers as a checkpoint writes them, from these bytes.
    fn headers_out(&self) -> crate::record::out::HeadersOut<'_> {
        let (text, ends) = self.header_parts();
        crate::record::out::HeadersOut::Packed { text, ends }
    }

    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        let (text, ends) = self.header_parts();
        (0..ends.len() / 8).map(move |i| crate::record::out::packed_header(text, ends, i))
    }
}

impl Delivery {
    /// [`Delivery::due_or_finish`] of a pending delivery with no due time.
    const NOT_DUE: u64 = u64::MAX;

    /// When it is (or was last) due; `None` once it ended. A due time of `u64::MAX` ms
    /// (never reached: the wheel cannot fire it with its default tick) is kept as one
    /// millisecond earlier.
    fn due_ms(&self) -> Option<u64> {
        (!self.status.is_final() && self.due_or_finish != Delivery::NOT_DUE)
            .then_some(self.due_or_finish)
    }

    /// Sets when a pending delivery is due.
    fn set_due_ms(&mut self, due_ms: Option<u64>) {
        assert!(
            !self.status.is_final(),
            "bug: a due time set on an ended delivery"
        );
        self.due_or_finish = due_ms.map_or(Delivery::NOT_DUE, |due| due.min(Delivery::NOT_DUE - 1));
    }

    /// Its place in the order deliveries ended, once it ended.
    fn finish_seq(&self) -> Option<u64> {
        self.status.is_final().then_some(self.due_or_finish)
    }

    /// It ended (its status is final), as the `finish_seq`-th delivery to end.
    fn set_finished(&mut self, finish_seq: u64) {
        assert!(
            self.status.is_final(),
            "bug: a pending delivery given a place among the ended ones"
        );
        self.due_or_finish = finish_seq;
    }

    /// What its attempts left ([`Outcomes::NONE`] when it has no box).
    fn outcomes(&self) -> &Outcomes {
        static NONE: Outcomes = Outcomes::NONE;
        self.outcomes.as_deref().unwrap_or(&NONE)
    }

    /// What its attempts left, to change: boxed on first use.
    fn outcomes_mut(&mut self) -> &mut Outcomes {
        self.outcomes
            .get_or_insert_with(|| Box::new(Outcomes::NONE))
    }

    /// Replaces what its attempts left (a restored delivery), without a box when that
    /// is nothing.
    fn set_outcomes(&mut self, outcomes: Outcomes) {
        self.outcomes = (!outcomes.is_none()).then(|| Box::new(outcomes));
    }

    /// The latest attempts, oldest first.
    fn attempts(&self) -> &[Attempt] {
        &self.outcomes().attempts
    }

    /// Its ended attempts that were sent: all but those that found no connection to
    /// send on ([`AttemptResult::gives_attempt_back`]), which the history drops first
    /// when full, so that it holds every attempt sent (a schedule's 25 and a few manual
    /// retries) however many were refused. Where the delivery stands in its schedule.
    fn attempts_sent(&self) -> u32 {
        let sent = self
            .attempts()
            .iter()
            .filter(|a| a.is_finished() && !a.was_refused())
            .count();
        u32::try_from(sent).unwrap_or(u32::MAX)
    }

    /// Its latest ended attempts that were all refused a connection, in a row (its
    /// unfinished attempt, the one in flight, aside): how long its next refusal waits
    /// ([`crate::retry::no_connection_retry_ms`]). The history keeps the latest refusals
    /// when it drops older ones, so a long row reads as long as the history holds, which
    /// is past where the delay stops growing.
    fn refusals_in_a_row(&self) -> u32 {
        let in_a_row = self
            .attempts()
            .iter()
            .rev()
            .skip_while(|a| !a.is_finished())
            .take_while(|a| a.was_refused())
            .count();
        u32::try_from(in_a_row).unwrap_or(u32::MAX)
    }

    /// The last response's status, if there was one.
    fn last_status(&self) -> Option<u16> {
        let code = self.outcomes().last_status_code;
        (code != 0).then_some(code)
    }

    /// The last attempt's latency, if it made one.
    fn last_latency_ms(&self) -> Option<u32> {
        let latency = self.outcomes().last_latency;
        (latency != Attempt::NO_TIME).then_some(latency)
    }

    /// Why its last attempt failed or it ended, if it did.
    fn last_error(&self) -> Option<DeliveryError> {
        self.outcomes().last_error
    }

    /// The latest response's captured body (empty when none).
    fn last_body(&self) -> &[u8] {
        self.outcomes().last_response.body()
    }

    /// How many headers the latest response left and the bytes of their names and
    /// values, without reading them.
    fn last_headers_size(&self) -> (usize, usize) {
        self.outcomes().last_response.headers_size()
    }

    /// The latest response's captured headers (none when none).
    fn last_headers(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.outcomes().last_response.headers()
    }

    /// The attempt in flight ends without an outcome (its delivery ended meanwhile):
    /// forgets its unfinished entry, as a replayed journal never had it.
    fn attempt_abandoned(&mut self) {
        let attempt = self.attempt;
        if let Some(outcomes) = self.outcomes.as_mut() {
            if outcomes
                .attempts
                .last()
                .is_some_and(|a| a.attempt == attempt && !a.is_finished())
            {
                outcomes.attempts.pop();
            }
            if outcomes.is_none() {
                self.outcomes = None;
            }
        }
    }
}

impl Outcomes {
    /// Keeps the last attempt's `latency_ms` (`None`: no attempt).
    fn set_last_latency_ms(&mut self, latency_ms: Option<u64>) {
        self.last_latency = latency_ms.map_or(Attempt::NO_TIME, |ms| {
            u32::try_from(ms)
                .unwrap_or(u32::MAX)
                .min(Attempt::NO_TIME - 1)
        });
    }

    /// Keeps the latest response's captured body and headers (nothing when both are
    /// empty: a pending delivery of a receiver that does not answer costs no allocation
    /// for them).
    fn set_last_response<'h>(
        &mut self,
        body: &[u8],
        headers: impl ExactSizeIterator<Item = (&'h str, &'h str)> + Clone,
    ) {
        self.last_response = LastResponse::new(body, headers);
    }

    /// Attempt `attempt` was started. An attempt repeated with the same number (it was
    /// in flight at a restart) replaces its unfinished entry.
    fn attempt_started(&mut self, attempt: u32, now: u64) {
        if let Some(last) = self.attempts.last_mut() {
            if last.attempt == attempt && !last.is_finished() {
                last.started_at_ms = now;
                return;
            }
        }
        if self.attempts.len() >= ATTEMPT_HISTORY_MAX {
            // The oldest refused attempt goes first: the attempts that were sent are
            // where the delivery stands in its schedule.
            let dropped = self
                .attempts
                .iter()
                .position(|a| a.is_finished() && a.was_refused())
                .unwrap_or(0);
            self.attempts.remove(dropped);
        } else if self.attempts.len() == self.attempts.capacity() {
            // Grown one entry at a time past the inline one: most deliveries make one or
            // two attempts, and a doubling growth would hold four entries (128 bytes)
            // for each of them.
            self.attempts.reserve_exact(1);
        }
        self.attempts.push(Attempt::started(attempt, now));
    }

    /// Attempt `attempt` ended at `now` with `status` (if there was a response) and
    /// `error`, `latency_ms` after it started. Its start is the outcome's time less its
    /// latency, live and on replay alike (the outcome record is the attempt's only
    /// record); a replayed outcome whose start was never marked adds its entry here.
    fn attempt_ended(
        &mut self,
        attempt: u32,
        now: u64,
        status: Option<u16>,
        latency_ms: u64,
        error: Option<DeliveryError>,
    ) {
        let marked = self
            .attempts
            .last()
            .is_some_and(|a| a.attempt == attempt && !a.is_finished());
        let started_at_ms = now.saturating_sub(latency_ms);
        if !marked {
            self.attempt_started(attempt, started_at_ms);
        }
        if let Some(entry) = self.attempts.last_mut() {
            entry.started_at_ms = started_at_ms;
            entry.finish(now, status, latency_ms, error);
        }
    }
}

/// An attempt as a delivery keeps it: an [`AttemptSummary`] in 32 bytes instead of 56
/// (most pending deliveries hold one), absent values as sentinels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attempt {
    started_at_ms: u64,
    /// [`Attempt::NOT_FINISHED`] while in flight or abandoned.
    finished_at_ms: u64,
    attempt: u32,
    /// [`Attempt::NO_TIME`] when there was none; saturates just below it.
    response_time_ms: u32,
    error: Option<DeliveryError>,
    /// 0 when there was no response.
    response_status: u16,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Attempt>() <= 32);

impl Attempt {
    const NOT_FINISHED: u64 = u64::MAX;
    const NO_TIME: u32 = u32::MAX;

    fn started(attempt: u32, now: u64) -> Attempt {
        Attempt {
            started_at_ms: now,
            finished_at_ms: Attempt::NOT_FINISHED,
            attempt,
            response_time_ms: Attempt::NO_TIME,
            error: None,
            response_status: 0,
        }
    }

    fn is_finished(&self) -> bool {
        self.finished_at_ms != Attempt::NOT_FINISHED
    }

    /// It found no connection to send on (`pool_full`) and sent nothing.
    fn was_refused(&self) -> bool {
        self.error == Some(DeliveryError::Transport(TransportError::PoolFull))
    }

    fn finish(
        &mut self,
        now: u64,
        status: Option<u16>,
        latency_ms: u64,
        error: Option<DeliveryError>,
    ) {
        self.finished_at_ms = now.min(Attempt::NOT_FINISHED - 1);
        self.response_status = status.unwrap_or(0);
        self.response_time_ms = u32::try_from(latency_ms)
            .unwrap_or(u32::MAX)
            .min(Attempt::NO_TIME - 1);
        self.error = error;
    }

    fn summary(&self) -> AttemptSummary {
        AttemptSummary {
            attempt: self.attempt,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.is_finished().then_some(self.finished_at_ms),
            response_status: (self.response_status != 0).then_some(self.response_status),
            response_time_ms: (self.response_time_ms != Attempt::NO_TIME)
                .then_some(u64::from(self.response_time_ms)),
            error: self.error,
        }
    }

    fn from_summary(a: &AttemptSummary) -> Attempt {
        let mut attempt = Attempt::started(a.attempt, a.started_at_ms);
        if let Some(finished) = a.finished_at_ms {
            attempt.finish(finished, a.response_status, 0, a.error);
        }
        attempt.response_status = a.response_status.unwrap_or(0);
        attempt.error = a.error;
        attempt.response_time_ms = a.response_time_ms.map_or(Attempt::NO_TIME, |ms| {
            u32::try_from(ms)
                .unwrap_or(u32::MAX)
                .min(Attempt::NO_TIME - 1)
        });
        attempt
    }
}

struct WebhookState {
    /// Its id as its deliveries share it (a thin pointer: 8 bytes in each delivery).
    shared_id: Arc<WebhookId>,
    spec: WebhookSpec,
    url: Arc<Url>,
    url_text: Arc<str>,
    signer: Option<Signer>,
    signer_until_ms: Option<u64>,
    health: Health,
    queue: VecDeque<DeliveryId>,
    /// Its pending deliveries: a count, not a set of ids, which took ~20 bytes per
    /// pending delivery. Which they are is found through the tenant's index
    /// ([`Dispatcher::pending_of`]) when the webhook is disabled or deleted.
    pending: usize,
    wake: Option<(TimerKey, u64)>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

/// The state of webhook `id` of `tenant`.
fn webhook_state<'a>(
    tenants: &'a BTreeMap<TenantId, TenantState>,
    tenant: &TenantId,
    id: &WebhookId,
) -> Option<&'a WebhookState> {
    tenants.get(tenant)?.webhooks.get(id)
}

/// The state of webhook `id` of `tenant`, to change (borrows the registry only, so the
/// wheel and the deliveries stay at hand).
fn webhook_state_mut<'a>(
    tenants: &'a mut BTreeMap<TenantId, TenantState>,
    tenant: &TenantId,
    id: &WebhookId,
) -> Option<&'a mut WebhookState> {
    tenants.get_mut(tenant)?.webhooks.get_mut(id)
}

#[derive(Default)]
struct TenantState {
    /// The tenant's id as its events share it (see `shared_tenant`), made by the first
    /// event that needs it.
    shared_id: Option<Arc<TenantId>>,
    webhooks: BTreeMap<WebhookId, WebhookState>,
    matcher: Matcher,
}

/// What a wheel entry wakes. A webhook's wake-up is rare (one per webhook held back by
/// its rate limit or breaker) and boxed, so that every pending delivery's timer takes 16
/// bytes instead of two ids' 32.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Delivery(DeliveryId),
    Webhook(Box<(TenantId, WebhookId)>),
}

/// The per-shard dispatch state machine. See the crate documentation for how to drive it.
pub struct Dispatcher {
    config: DispatcherConfig,
    now_ms: u64,
    tenants: BTreeMap<TenantId, TenantState>,
    /// Boxed, in a table sorted by id (`dispatcher/table.rs`): 16 bytes per delivery
    /// beside the box, where a B-tree filled in id order took ~35.
    deliveries: Deliveries,
    /// Each tenant's retained deliveries, for queries. Probed by tenant, never iterated
    /// across tenants.
    /// In sets of 8 bytes per delivery (`dispatcher/table.rs`).
    by_tenant: FastHashMap<TenantId, IdSet>,
    pending_count: usize,
    /// Pending deliveries per tenant (tenants with none have no entry): the sum is
    /// `pending_count`.
    pending_by_tenant: FastHashMap<TenantId, usize>,
    in_flight_count: usize,
    /// Finished deliveries in the order the log evicts them (`outcome::Ended`: by when
    /// they ended, then by id); entries whose delivery was re-queued or evicted since
    /// are skipped.
    finished: VecDeque<outcome::Ended>,
    /// `finished` and the tenants' orders hold deliveries loaded from a checkpoint in
    /// the order it listed them (`Dispatcher::order_finished` sorts them).
    finished_unordered: bool,
    finished_count: usize,
    /// Entries of `finished` marked as evicted by their tenant's share
    /// (`outcome::EVICTED`), not dropped yet.
    finished_evicted: usize,
    /// Where in `finished` the last entry was marked evicted: where the next search
    /// for one starts (a hint; `outcome`'s `mark_evicted`).
    finished_marked_at: usize,
    /// The same per tenant (tenants with none have no entry): the counts sum to
    /// `finished_count`.
    finished_by_tenant: FastHashMap<TenantId, outcome::TenantFinished>,
    finish_seq: u64,
    next_delivery: u64,
    wheel: TimingWheel<Timer>,
    /// Events' deliveries waiting for their records to be durable, by record; an
    /// event's list inline up to two deliveries (the size of a `Vec`'s own fields, so
    /// most events list theirs without an allocation).
    awaiting: VecDeque<(AppendId, SmallVec<[DeliveryId; 2]>)>,
    awaiting_count: usize,
    /// Webhooks whose queue may hold deliveries to admit at the next tick (new due work,
    /// a freed in-flight slot, a fired wake-up, or budget left over).
    ready_webhooks: BTreeSet<(TenantId, WebhookId)>,
    resume_from: Option<(TenantId, WebhookId)>,
    commands: VecDeque<Command>,
    /// Estimated bytes of the outcomes in the last queued command, when that is an
    /// outcome record not yet polled ([`record::outcome_bytes_estimate`]).
    outcome_batch_bytes: usize,
    next_append: u64,
    replaying: bool,
    /// The driver reports where the journal holds every live event's envelope
    /// ([`Dispatcher::report_envelopes`]).
    envelopes_reported: bool,
    batch_signer: BatchSigner,
    signed: Vec<SignedHeaders>,
    /// The attempts a tick admits, kept empty between ticks so that its capacity (up to
    /// [`DispatcherConfig::sends_per_tick_max`] plans) is not grown again on every tick.
    plans: Vec<Plan>,
    /// The webhooks an event being accepted matched, kept empty between events so that
    /// matching allocates nothing once it has seen the largest fan-out.
    targets: Vec<WebhookId>,
    keys: Keys,
    /// Pending deliveries that never made an attempt (for [`Stats::retries_pending`]).
    fresh_pending: usize,
    counters: Counters,
    /// One copy of each event type events carry (see `shared_event_type`).
    event_types: FastHashMap<EventType, Arc<EventType>>,
    /// Records applied so far (live and replayed): a checkpoint being built checks
    /// that none came between its first parts.
    applied: u64,
    /// Webhooks disabled or deleted whose pending deliveries are still being ended,
    /// oldest first (`dispatcher/registry.rs`). Live state only: a restart ends what is
    /// left of them (recovery ends every pending delivery of a webhook that is disabled
    /// or gone).
    endings: VecDeque<Ending>,
    /// Held deliveries the endings may still look at in this tick.
    ending_allowance: usize,
}

/// The pending deliveries of a webhook that was disabled or deleted, ended a bounded
/// number per tick ([`DispatcherConfig::endings_per_tick_max`]).
#[derive(Debug)]
struct Ending {
    tenant: TenantId,
    webhook: WebhookId,
    error: DeliveryError,
    /// The tenant's held deliveries from this id on are still to be looked at.
    next: DeliveryId,
    /// The first delivery id not handed out when the webhook ended: this one and later
    /// ones belong to a webhook of the same id made since, not to the one that ended.
    below: DeliveryId,
    /// Deliveries it still has to end (the webhook's pending count when it ended): it
    /// stops looking once it ended them all.
    remaining: usize,
}

/// Most distinct event types whose text events share (see
/// `Dispatcher::shared_event_type`): publishers use a few dozen, and a bound keeps a
/// publisher that invents a type per event from growing the set without end.
const EVENT_TYPES_SHARED_MAX: usize = 4096;

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("now_ms", &self.now_ms)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// An empty dispatcher whose clock starts at `now_ms`.
    pub fn new(config: DispatcherConfig, now_ms: u64) -> Dispatcher {
        let mut config = config;
        config.jitter_percent = config.jitter_percent.min(JITTER_PERCENT_MAX);
        config.sends_per_tick_max = config.sends_per_tick_max.max(1);
        config.endings_per_tick_max = config.endings_per_tick_max.max(1);
        config.pending_deliveries_per_tenant_max = config.pending_deliveries_per_tenant_max.max(1);
        config.idempotency_keys_per_tenant_max = config.idempotency_keys_per_tenant_max.max(1);
        config.log_finished_per_tenant_max = config.log_finished_per_tenant_max.max(1);
        let ending_allowance = config.endings_per_tick_max;
        config.idempotency_keys_max = config.idempotency_keys_max.clamp(1, IDEMPOTENCY_KEYS_MAX);
        Dispatcher {
            config,
            now_ms,
            tenants: BTreeMap::new(),
            deliveries: Deliveries::default(),
            by_tenant: FastHashMap::default(),
            pending_count: 0,
            pending_by_tenant: FastHashMap::default(),
            in_flight_count: 0,
            finished: VecDeque::new(),
            finished_unordered: false,
            finished_count: 0,
            finished_evicted: 0,
            finished_marked_at: 0,
            finished_by_tenant: FastHashMap::default(),
            finish_seq: 0,
            next_delivery: 1,
            wheel: TimingWheel::new(now_ms),
            awaiting: VecDeque::new(),
            awaiting_count: 0,
            ready_webhooks: BTreeSet::new(),
            resume_from: None,
            commands: VecDeque::new(),
            outcome_batch_bytes: 0,
            next_append: 1,
            replaying: false,
            envelopes_reported: false,
            batch_signer: BatchSigner::new(),
            signed: Vec::new(),
            plans: Vec::new(),
            targets: Vec::new(),
            keys: Keys::default(),
            fresh_pending: 0,
            counters: Counters::default(),
            event_types: FastHashMap::default(),
            applied: 0,
            endings: VecDeque::new(),
            ending_allowance,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    /// The latest time seen (time never runs backwards inside the dispatcher).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Moves the clock to `now_ms` unless that is in the past; returns the clock.
    fn advance_clock(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Live handling's one way to change state: applies `record` (what was decided) and
    /// queues it for the journal. Replay applies the same records with
    /// [`Dispatcher::replay`], so live and recovered state cannot drift apart.
    ///
    /// An attempt's outcome joins the last queued command when that holds outcomes and
    /// was not polled yet, within [`record::OUTCOMES_RECORD_BYTES_MAX`]: the outcomes a
    /// driver reports in one batch become one [`Record::AttemptsFinished`] and share its
    /// `AppendId`. Each is still applied at once and in order, as replay applies them,
    /// and nothing is emitted between them (only the last command is joined), so the
    /// journal's order is the order of application.
    fn emit(&mut self, record: Record) -> AppendId {
        if let Record::AttemptFinished(outcome) = &record {
            let bytes = record::outcome_bytes_estimate(outcome);
            match self.open_outcome_batch(bytes) {
                Some(id) => {
                    self.join_outcome(id, bytes, record);
                    self.assert_counts();
                    return id;
                }
                None => self.outcome_batch_bytes = bytes,
            }
        }
        let id = AppendId(self.next_append);
        self.next_append += 1;
        self.apply_emitted(&record, id);
        self.commands.push_back(Command::Append { id, record });
        self.assert_counts();
        id
    }

    /// The id of the last queued command when it holds outcomes, was not polled yet and
    /// has room for `bytes` more.
    fn open_outcome_batch(&self, bytes: usize) -> Option<AppendId> {
        match self.commands.back() {
            Some(Command::Append {
                id,
                record: Record::AttemptFinished(_) | Record::AttemptsFinished(_),
            }) if self.outcome_batch_bytes + bytes <= record::OUTCOMES_RECORD_BYTES_MAX => {
                Some(*id)
            }
            _ => None,
        }
    }

    /// Applies `outcome` (an `AttemptFinished`, `bytes` estimated) as `id` and adds it to
    /// the last queued command, which [`Dispatcher::open_outcome_batch`] found open.
    fn join_outcome(&mut self, id: AppendId, bytes: usize, outcome: Record) {
        self.apply_emitted(&outcome, id);
        let Record::AttemptFinished(outcome) = outcome else {
            unreachable!("only outcomes join a batch")
        };
        if let Some(Command::Append { record, .. }) = self.commands.back_mut() {
            let outcomes = match std::mem::replace(record, Record::AttemptsFinished(Vec::new())) {
                Record::AttemptFinished(first) => vec![first, outcome],
                Record::AttemptsFinished(mut outcomes) => {
                    outcomes.push(outcome);
                    outcomes
                }
                // `open_outcome_batch` found the last command holding outcomes.
                other => unreachable!("joined an outcome to {other:?}"),
            };
            *record = Record::AttemptsFinished(outcomes);
        }
        self.outcome_batch_bytes += bytes;
    }

    /// Applies a record live, as `id`.
    fn apply_emitted(&mut self, record: &Record, id: AppendId) {
        if let Err(error) = self.apply(record, id, &[]) {
            // The record was just built from validated values; one that does not apply
            // would not replay either, so stop before it reaches the journal.
            panic!("bug: the dispatcher built a record it cannot apply: {error}");
        }
    }

    /// Cheap checks, on in release builds, that the hand-kept counts agree with the sets
    /// they count. A count that drifted would refuse work that fits or take work past a
    /// limit; a lost or duplicated delivery shows here first.
    fn assert_counts(&self) {
        assert_eq!(
            self.pending_count + self.finished_count,
            self.deliveries.len(),
            "bug: pending plus finished deliveries must be the deliveries held"
        );
        assert!(
            self.in_flight_count <= self.pending_count && self.fresh_pending <= self.pending_count,
            "bug: more deliveries in flight ({}) or without an attempt ({}) than pending ({})",
            self.in_flight_count,
            self.fresh_pending,
            self.pending_count
        );
        assert!(
            self.keys.count <= self.config.idempotency_keys_max,
            "bug: more idempotency keys than the most allowed"
        );
    }

    /// Debug builds: recounts everything the dispatcher keeps by hand from the deliveries
    /// themselves, and checks that each delivery is where its stage says (its webhook's
    /// pending set, the wheel, its tenant's log index). O(deliveries): run after a tick
    /// and at the end of recovery, not per record, and only while at most
    /// [`RECOUNT_DELIVERIES_MAX`] deliveries are held.
    #[cfg(debug_assertions)]
    fn recount(&self) {
        if self.deliveries.len() > RECOUNT_DELIVERIES_MAX {
            return;
        }
        let (mut pending, mut in_flight, mut fresh) = (0, 0, 0);
        let mut by_webhook: FastHashMap<(TenantId, WebhookId), usize> = FastHashMap::default();
        for (id, d) in self.deliveries.iter() {
            assert!(
                self.by_tenant
                    .get(&*d.event.tenant)
                    .is_some_and(|ids| ids.contains(id)),
                "delivery {id} is missing from its tenant's index"
            );
            if d.status.is_final() {
                assert_eq!(d.stage, Stage::Finished, "ended delivery {id}");
                continue;
            }
            pending += 1;
            in_flight += usize::from(d.stage == Stage::InFlight);
            fresh += usize::from(d.attempt == 0);
            assert!(
                d.attempt <= d.attempts_max,
                "delivery {id} is past its attempts"
            );
            if let Stage::Scheduled(key) = d.stage {
                assert_eq!(
                    self.wheel.get(key),
                    Some(&Timer::Delivery(*id)),
                    "delivery {id}'s timer"
                );
            }
            if webhook_state(&self.tenants, &d.event.tenant, &d.webhook).is_some() {
                *by_webhook
                    .entry((
                        TenantId::clone(&d.event.tenant),
                        WebhookId::clone(&d.webhook),
                    ))
                    .or_insert(0usize) += 1;
            }
        }
        for (tenant, t) in &self.tenants {
            for (webhook, w) in &t.webhooks {
                let counted = by_webhook
                    .get(&(tenant.clone(), webhook.clone()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(w.pending, counted, "webhook {webhook}'s pending deliveries");
            }
        }
        let indexed: usize = self.by_tenant.values().map(IdSet::len).sum();
        let awaiting: usize = self.awaiting.iter().map(|(_, ids)| ids.len()).sum();
        assert_eq!(pending, self.pending_count, "pending deliveries");
        let mut by_tenant: FastHashMap<TenantId, usize> = FastHashMap::default();
        for d in self.deliveries.values().filter(|d| !d.status.is_final()) {
            *by_tenant
                .entry(TenantId::clone(&d.event.tenant))
                .or_insert(0) += 1;
        }
        assert_eq!(
            by_tenant, self.pending_by_tenant,
            "pending deliveries per tenant"
        );
        let mut finished_by_tenant: FastHashMap<TenantId, usize> = FastHashMap::default();
        for d in self.deliveries.values().filter(|d| d.status.is_final()) {
            *finished_by_tenant
                .entry(TenantId::clone(&d.event.tenant))
                .or_insert(0) += 1;
        }
        let counted: FastHashMap<TenantId, usize> = self
            .finished_by_tenant
            .iter()
            .map(|(tenant, t)| (tenant.clone(), t.count))
            .collect();
        assert_eq!(
            finished_by_tenant, counted,
            "finished deliveries per tenant"
        );
        assert!(
            counted
                .values()
                .all(|&n| n <= self.config.log_finished_per_tenant_max),
            "a tenant's finished deliveries"
        );
        let keys: usize = self.keys.by_tenant.values().map(|t| t.keys.len()).sum();
        assert_eq!(keys, self.keys.count, "idempotency keys");
        assert!(
            self.keys
                .by_tenant
                .values()
                .all(|t| t.keys.len() <= self.config.idempotency_keys_per_tenant_max),
            "a tenant's idempotency keys"
        );
        assert_eq!(in_flight, self.in_flight_count, "deliveries in flight");
        assert_eq!(fresh, self.fresh_pending, "deliveries without an attempt");
        assert_eq!(
            self.deliveries.len() - pending,
            self.finished_count,
            "finished deliveries"
        );
        assert_eq!(
            indexed,
            self.deliveries.len(),
            "deliveries in the tenant index"
        );
        assert_eq!(
            awaiting, self.awaiting_count,
            "deliveries awaiting durability"
        );
        self.assert_counts();
    }
}

#[cfg(test)]
mod tests;
