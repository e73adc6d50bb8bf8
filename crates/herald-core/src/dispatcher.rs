//! The per-shard dispatch state machine.
//!
//! See the crate documentation for the driver protocol (input, polling order,
//! durability, replay).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use herald_http::Url;
use herald_sign::{BatchSigner, Message, SignedHeaders, Signer};

use crate::convert::{webhook_from_rec, webhook_to_rec};
use crate::envelope::{encode_envelope, EnvelopeError, Idempotency, NewEvent, API_VERSION_DEFAULT};
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
    JITTER_PERCENT_MAX,
};
use crate::webhook::{DisableReason, SpecError, WebhookSpec, WebhookStatus};
use crate::wheel::{TimerKey, TimingWheel};

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
/// Default number of finished deliveries kept in the log; the oldest are evicted. Each
/// holds its latest response body (at most [`RESPONSE_BODY_BYTES_MAX`]) and headers (at
/// most [`RESPONSE_HEADER_BYTES_MAX`] plus [`RESPONSE_HEADERS_MAX`] string headers) and
/// shares its event's body with the event's other deliveries, so the log's memory is at
/// most about `log_finished_max * (RESPONSE_BODY_BYTES_MAX + RESPONSE_HEADER_BYTES_MAX +
/// 1000)` bytes plus the retained events.
pub const LOG_FINISHED_MAX_DEFAULT: usize = 100_000;
/// Default cap on requests started by one [`Dispatcher::tick`]: bounds the latency of a
/// tick and the size of a signing batch. Leftover work keeps
/// [`Dispatcher::next_deadline_ms`] at "now".
pub const SENDS_PER_TICK_MAX_DEFAULT: usize = 4096;
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
/// Default of [`DispatcherConfig::idempotency_window_ms`]: 24 hours, long enough for a
/// publisher's retries across its own restarts and outages.
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Most attempts a delivery's history keeps ([`DeliveryRecord::attempts`]); older ones are
/// dropped first. A schedule allows at most [`crate::RETRIES_MAX`] + 1 = 25 attempts, so
/// the history holds a whole schedule plus a few manual retries, while a delivery retried
/// by hand without end still costs bounded memory (~50 bytes per attempt) in the log and
/// in checkpoints.
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
    /// Most finished deliveries kept in the log.
    pub log_finished_max: usize,
    /// Most requests started per tick.
    pub sends_per_tick_max: usize,
    /// How long an idempotency key is remembered after its event was accepted.
    pub idempotency_window_ms: u64,
    /// Most idempotency keys remembered (1..=[`IDEMPOTENCY_KEYS_MAX`]); the oldest is
    /// forgotten first.
    pub idempotency_keys_max: usize,
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
            log_finished_max: LOG_FINISHED_MAX_DEFAULT,
            sends_per_tick_max: SENDS_PER_TICK_MAX_DEFAULT,
            idempotency_window_ms: IDEMPOTENCY_WINDOW_MS_DEFAULT,
            idempotency_keys_max: IDEMPOTENCY_KEYS_MAX,
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
    /// the webhook's custom headers. Names and values are valid header text.
    pub headers: Vec<(String, String)>,
    /// The envelope: exactly the signed bytes, shared by every delivery of the event.
    pub body: Arc<[u8]>,
    /// Connect timeout.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout.
    pub request_timeout_ms: u64,
}

impl std::fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
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
    /// Captured response headers, in arrival order; bounded here with
    /// [`bound_response_headers`] (a driver may bound them first with it too).
    pub response_headers: Vec<(String, String)>,
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

/// A webhook create/update/delete that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The spec is invalid (caller's error).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The tenant already has the most webhooks allowed (caller's error).
    #[error("tenant already has {max} webhooks, the most allowed")]
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

/// An event that was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The event is invalid (caller's error).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The shard holds the most pending deliveries allowed: back-pressure, retry later.
    #[error("shard is full: {pending} pending deliveries, {needed} more needed, at most {max}")]
    Full {
        /// Pending deliveries now.
        pending: usize,
        /// Deliveries the event needs.
        needed: usize,
        /// The limit.
        max: usize,
    },
    /// The idempotency key is not 1..=[`crate::IDEMPOTENCY_KEY_BYTES_MAX`] bytes of
    /// printable ASCII (caller's error).
    #[error("idempotency key must be 1..={max} bytes of printable ASCII")]
    IdempotencyKey {
        /// [`crate::IDEMPOTENCY_KEY_BYTES_MAX`].
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
    /// Back-pressure, as [`AcceptError::Full`].
    #[error(transparent)]
    Accept(#[from] AcceptError),
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

struct EventData {
    tenant: TenantId,
    id: EventId,
    event_type: EventType,
    body: Arc<[u8]>,
    accepted_at_ms: u64,
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

struct Delivery {
    event: Arc<EventData>,
    webhook: WebhookId,
    attempt: u32,
    attempts_max: u32,
    status: DeliveryStatus,
    stage: Stage,
    due_ms: Option<u64>,
    last_status: Option<u16>,
    last_latency_ms: Option<u64>,
    last_error: Option<DeliveryError>,
    last_body: Arc<[u8]>,
    last_headers: Arc<[(String, String)]>,
    updated_at_ms: u64,
    finish_seq: u64,
    /// The latest attempts, oldest first, at most [`ATTEMPT_HISTORY_MAX`].
    attempts: VecDeque<AttemptSummary>,
}

/// Sets a delivery's attempt number, keeping `fresh_pending` (pending deliveries that
/// never made an attempt) in step.
fn set_attempt(fresh_pending: &mut usize, d: &mut Delivery, attempt: u32) {
    if !d.status.is_final() {
        match (d.attempt == 0, attempt == 0) {
            (true, false) => *fresh_pending = fresh_pending.saturating_sub(1),
            (false, true) => *fresh_pending += 1,
            _ => {}
        }
    }
    d.attempt = attempt;
}

impl Delivery {
    /// Attempt `attempt` was started. An attempt repeated with the same number (it was
    /// in flight at a restart) replaces its unfinished entry.
    fn attempt_started(&mut self, attempt: u32, now: u64) {
        if let Some(last) = self.attempts.back_mut() {
            if last.attempt == attempt && last.finished_at_ms.is_none() {
                last.started_at_ms = now;
                return;
            }
        }
        if self.attempts.len() >= ATTEMPT_HISTORY_MAX {
            self.attempts.pop_front();
        }
        self.attempts.push_back(AttemptSummary {
            attempt,
            started_at_ms: now,
            finished_at_ms: None,
            response_status: None,
            response_time_ms: None,
            error: None,
        });
    }

    /// Attempt `attempt` ended with `status` (if there was a response) and `error`.
    fn attempt_ended(
        &mut self,
        attempt: u32,
        now: u64,
        status: Option<u16>,
        latency_ms: u64,
        error: Option<DeliveryError>,
    ) {
        if let Some(entry) = self
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt && a.finished_at_ms.is_none())
        {
            entry.finished_at_ms = Some(now);
            entry.response_status = status;
            entry.response_time_ms = Some(latency_ms);
            entry.error = error;
        }
    }
}

struct WebhookState {
    spec: WebhookSpec,
    url: Arc<Url>,
    url_text: Arc<str>,
    signer: Option<Signer>,
    signer_until_ms: Option<u64>,
    health: Health,
    queue: VecDeque<DeliveryId>,
    pending: BTreeSet<DeliveryId>,
    wake: Option<(TimerKey, u64)>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

#[derive(Default)]
struct TenantState {
    webhooks: BTreeMap<WebhookId, WebhookState>,
    matcher: Matcher,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Delivery(DeliveryId),
    Webhook(TenantId, WebhookId),
}

struct Plan {
    delivery: DeliveryId,
    attempt: u32,
    tenant: TenantId,
    webhook: WebhookId,
    event_id: EventId,
    signer: Signer,
    url: Arc<Url>,
    url_text: Arc<str>,
    body: Arc<[u8]>,
    custom_headers: Vec<(String, String)>,
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
}

/// What a remembered idempotency key answers.
struct KeyEntry {
    fingerprint: [u8; 16],
    event_id: EventId,
    created_at_ms: u64,
    accepted_at_ms: u64,
    /// The `EventAccepted` record (`AppendId(0)` when replayed: durable).
    append: AppendId,
}

/// Remembered idempotency keys of one shard, by tenant, with their acceptance order.
#[derive(Default)]
struct Keys {
    by_tenant: HashMap<TenantId, HashMap<Arc<str>, KeyEntry>>,
    /// (accepted_at_ms, tenant, key), oldest first: dispatcher time never runs
    /// backwards, so this is also expiry order. Entries whose key was replaced are
    /// skipped when popped.
    order: VecDeque<(u64, TenantId, Arc<str>)>,
    count: usize,
}

impl Keys {
    fn get(&self, tenant: &TenantId, key: &str) -> Option<&KeyEntry> {
        self.by_tenant.get(tenant)?.get(key)
    }

    /// Forgets the oldest key (if the order's front is still current).
    fn pop_oldest(&mut self) {
        let Some((accepted_at_ms, tenant, key)) = self.order.pop_front() else {
            return;
        };
        let Some(keys) = self.by_tenant.get_mut(&tenant) else {
            return;
        };
        if keys
            .get(&key)
            .is_some_and(|entry| entry.accepted_at_ms == accepted_at_ms)
        {
            keys.remove(&key);
            self.count -= 1;
            if keys.is_empty() {
                self.by_tenant.remove(&tenant);
            }
        }
    }

    /// Forgets every key accepted `window_ms` or longer before `now`.
    fn forget_expired(&mut self, now: u64, window_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(at, _, _)| at.saturating_add(window_ms) <= now)
        {
            self.pop_oldest();
        }
    }

    /// Remembers `key`, forgetting the oldest keys beyond `max`.
    fn insert(&mut self, tenant: &TenantId, key: &str, entry: KeyEntry, max: usize) {
        let key: Arc<str> = Arc::from(key);
        let accepted_at_ms = entry.accepted_at_ms;
        let keys = self.by_tenant.entry(tenant.clone()).or_default();
        if keys.insert(Arc::clone(&key), entry).is_none() {
            self.count += 1;
        }
        self.order.push_back((accepted_at_ms, tenant.clone(), key));
        while self.count > max {
            self.pop_oldest();
        }
        // Replaced keys leave stale order entries; they cannot outnumber live ones by
        // much unless the window grew across a restart, so compact rarely.
        if self.order.len() > 2 * max + 64 {
            let by_tenant = &self.by_tenant;
            self.order.retain(|(at, tenant, key)| {
                by_tenant
                    .get(tenant)
                    .and_then(|keys| keys.get(key))
                    .is_some_and(|entry| entry.accepted_at_ms == *at)
            });
        }
    }
}

/// Prefixes of the ids of events the dispatcher originates itself: operational
/// `webhook.disabled` events and test events.
const GENERATED_EVENT_ID_PREFIXES: [&str; 2] = ["evt_webhook_disabled_", "evt_test_"];

/// The per-shard dispatch state machine. See the crate documentation for how to drive it.
pub struct Dispatcher {
    config: DispatcherConfig,
    now_ms: u64,
    tenants: BTreeMap<TenantId, TenantState>,
    deliveries: BTreeMap<DeliveryId, Delivery>,
    /// Each tenant's retained deliveries, for queries. Probed by tenant, never iterated
    /// across tenants.
    by_tenant: HashMap<TenantId, BTreeSet<DeliveryId>>,
    pending_count: usize,
    in_flight_count: usize,
    finished: VecDeque<(DeliveryId, u64)>,
    finished_count: usize,
    finish_seq: u64,
    next_delivery: u64,
    wheel: TimingWheel<Timer>,
    awaiting: VecDeque<(AppendId, Vec<DeliveryId>)>,
    awaiting_count: usize,
    dirty: BTreeSet<(TenantId, WebhookId)>,
    resume_from: Option<(TenantId, WebhookId)>,
    commands: VecDeque<Command>,
    next_append: u64,
    replaying: bool,
    batch_signer: BatchSigner,
    signed: Vec<SignedHeaders>,
    keys: Keys,
    /// Pending deliveries that never made an attempt (for [`Stats::retries_pending`]).
    fresh_pending: usize,
    counters: Counters,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("now_ms", &self.now_ms)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn record_time_ms(record: &Record) -> u64 {
    match record {
        Record::WebhookUpserted(r) => r.at_ms,
        Record::WebhookDeleted(r) => r.at_ms,
        Record::EventAccepted(r) => r.at_ms,
        Record::AttemptStarted(r) => r.at_ms,
        Record::AttemptFinished(r) => r.at_ms,
        Record::DeliveryFinished(r) => r.at_ms,
        Record::DeliveryRequeued(r) => r.at_ms,
        Record::Checkpoint(r) => r.at_ms,
    }
}

/// The response headers an attempt keeps: in arrival order, names lower-cased, values
/// as text (invalid UTF-8 replaced), at most [`RESPONSE_HEADERS_MAX`] of them and at most
/// [`RESPONSE_HEADER_BYTES_MAX`] bytes of names plus values; a header that would cross
/// the byte limit is left out. Applying it to its own result changes nothing.
pub fn bound_response_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    let mut bytes = 0usize;
    for (name, value) in headers {
        if kept.len() == RESPONSE_HEADERS_MAX {
            break;
        }
        let value = String::from_utf8_lossy(value);
        let size = name.len() + value.len();
        if bytes + size > RESPONSE_HEADER_BYTES_MAX {
            continue;
        }
        bytes += size;
        kept.push((name.to_ascii_lowercase(), value.into_owned()));
    }
    kept
}

fn headers_to_rec(headers: &[(String, String)]) -> Vec<record::HeaderRec> {
    headers
        .iter()
        .map(|(name, value)| record::HeaderRec {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn headers_from_rec(headers: &[record::HeaderRec]) -> Arc<[(String, String)]> {
    headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect()
}

impl Dispatcher {
    /// An empty dispatcher whose clock starts at `now_ms`.
    pub fn new(config: DispatcherConfig, now_ms: u64) -> Dispatcher {
        let mut config = config;
        config.jitter_percent = config.jitter_percent.min(JITTER_PERCENT_MAX);
        config.sends_per_tick_max = config.sends_per_tick_max.max(1);
        config.idempotency_keys_max = config.idempotency_keys_max.clamp(1, IDEMPOTENCY_KEYS_MAX);
        Dispatcher {
            config,
            now_ms,
            tenants: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            by_tenant: HashMap::new(),
            pending_count: 0,
            in_flight_count: 0,
            finished: VecDeque::new(),
            finished_count: 0,
            finish_seq: 0,
            next_delivery: 1,
            wheel: TimingWheel::new(now_ms),
            awaiting: VecDeque::new(),
            awaiting_count: 0,
            dirty: BTreeSet::new(),
            resume_from: None,
            commands: VecDeque::new(),
            next_append: 1,
            replaying: false,
            batch_signer: BatchSigner::new(),
            signed: Vec::new(),
            keys: Keys::default(),
            fresh_pending: 0,
            counters: Counters::default(),
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

    fn observe(&mut self, now_ms: u64) -> u64 {
        self.now_ms = self.now_ms.max(now_ms);
        self.now_ms
    }

    /// Live handling's one way to change state: applies `record` (what was decided) and
    /// queues it for the journal. Replay applies the same records with
    /// [`Dispatcher::replay`], so live and recovered state cannot drift apart.
    fn emit(&mut self, record: Record) -> AppendId {
        let id = AppendId(self.next_append);
        self.next_append += 1;
        if let Err(error) = self.apply(&record, id) {
            // The record was just built from validated values; one that does not apply
            // would not replay either, so stop before it reaches the journal.
            panic!("bug: the dispatcher built a record it cannot apply: {error}");
        }
        self.commands.push_back(Command::Append { id, record });
        id
    }

    // ---------------------------------------------------------------- registry

    /// Creates or replaces webhook `id` of `tenant`. Returns the `WebhookUpserted` record's
    /// id (acknowledge the caller once durable).
    ///
    /// Replacing keeps the webhook's pending deliveries and health; setting it disabled
    /// ends its pending deliveries as failed; re-enabling starts with a clean health
    /// record.
    pub fn upsert_webhook(
        &mut self,
        now_ms: u64,
        tenant: TenantId,
        id: WebhookId,
        spec: WebhookSpec,
    ) -> Result<AppendId, RegistryError> {
        let now = self.observe(now_ms);
        spec.validate(now)?;
        let exists = self
            .tenants
            .get(&tenant)
            .is_some_and(|t| t.webhooks.contains_key(&id));
        let count = self.tenants.get(&tenant).map_or(0, |t| t.webhooks.len());
        if !exists && count >= self.config.webhooks_per_tenant_max {
            return Err(RegistryError::TooManyWebhooks {
                max: self.config.webhooks_per_tenant_max,
            });
        }
        let active = spec.status.is_active();
        let append = self.emit(Record::WebhookUpserted(record::WebhookUpserted {
            at_ms: now,
            webhook: webhook_to_rec(&tenant, &id, &spec),
        }));
        if !active {
            self.end_webhook_deliveries(now, &tenant, &id, DeliveryError::WebhookDisabled);
        }
        Ok(append)
    }

    /// Deletes webhook `id` of `tenant`, ending its pending deliveries as failed.
    pub fn delete_webhook(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> Result<AppendId, RegistryError> {
        let now = self.observe(now_ms);
        if !self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.webhooks.contains_key(id))
        {
            return Err(RegistryError::NotFound {
                tenant: tenant.clone(),
                webhook: id.clone(),
            });
        }
        let pending = self.pending_of(tenant, id);
        let append = self.emit(Record::WebhookDeleted(record::WebhookDeleted {
            at_ms: now,
            tenant: tenant.as_str().to_string(),
            webhook: id.as_str().to_string(),
        }));
        // The journal says why they end: the deletion comes first.
        for delivery in pending {
            self.end_delivery(
                now,
                delivery,
                DeliveryStatus::Failed,
                Some(DeliveryError::WebhookDeleted),
            );
        }
        Ok(append)
    }

    /// One webhook.
    pub fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> Option<WebhookView<'_>> {
        let (tenant, t) = self.tenants.get_key_value(tenant)?;
        let (id, w) = t.webhooks.get_key_value(id)?;
        Some(WebhookView {
            tenant,
            id,
            spec: &w.spec,
            health: &w.health,
            pending: w.pending.len(),
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        })
    }

    /// A tenant's webhooks, in id order.
    pub fn webhooks<'a>(&'a self, tenant: &TenantId) -> impl Iterator<Item = WebhookView<'a>> {
        self.tenants
            .get_key_value(tenant)
            .into_iter()
            .flat_map(|(tenant, t)| {
                t.webhooks.iter().map(move |(id, w)| WebhookView {
                    tenant,
                    id,
                    spec: &w.spec,
                    health: &w.health,
                    pending: w.pending.len(),
                    created_at_ms: w.created_at_ms,
                    updated_at_ms: w.updated_at_ms,
                })
            })
    }

    /// Applies a `WebhookUpserted`: the registry only. A disabled webhook's queue and wake
    /// timer go; its pending deliveries end by their own `DeliveryFinished` records (live
    /// handling emits them right after; recovery ends those a torn journal left).
    fn apply_upsert(&mut self, now: u64, tenant: TenantId, id: WebhookId, spec: WebhookSpec) {
        let signer = spec.signer_at(now).ok();
        let signer_until_ms = spec.next_secret_expiry_ms(now);
        let t = self.tenants.entry(tenant.clone()).or_default();
        let url = Arc::new(spec.url.clone());
        let url_text: Arc<str> = Arc::from(spec.url.to_string());
        let active = spec.status.is_active();
        match t.webhooks.get_mut(&id) {
            Some(w) => {
                if w.spec.status.is_active() {
                    t.matcher.remove(&id, &w.spec.filters);
                } else if active {
                    w.health = Health::new(now, &spec.limits);
                }
                w.spec = spec;
                w.url = url;
                w.url_text = url_text;
                w.signer = signer;
                w.signer_until_ms = signer_until_ms;
                w.updated_at_ms = now;
            }
            None => {
                t.webhooks.insert(
                    id.clone(),
                    WebhookState {
                        health: Health::new(now, &spec.limits),
                        spec,
                        url,
                        url_text,
                        signer,
                        signer_until_ms,
                        queue: VecDeque::new(),
                        pending: BTreeSet::new(),
                        wake: None,
                        created_at_ms: now,
                        updated_at_ms: now,
                    },
                );
            }
        }
        if active {
            if let Some(w) = t.webhooks.get(&id) {
                t.matcher.insert(&id, &w.spec.filters);
            }
            self.dirty.insert((tenant, id));
        } else if let Some(w) = t.webhooks.get_mut(&id) {
            w.queue.clear();
            if let Some((key, _)) = w.wake.take() {
                self.wheel.cancel(key);
            }
        }
    }

    /// Applies a `WebhookDeleted`: the registry only. Its pending deliveries end by the
    /// `DeliveryFinished` records live handling emits right after (recovery ends those a
    /// torn journal left).
    fn apply_delete(&mut self, tenant: &TenantId, id: &WebhookId) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            if let Some(w) = t.webhooks.remove(id) {
                if w.spec.status.is_active() {
                    t.matcher.remove(id, &w.spec.filters);
                }
                if let Some((key, _)) = w.wake {
                    self.wheel.cancel(key);
                }
            }
            if t.webhooks.is_empty() {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Live: ends every pending delivery of a webhook (disabled or deleted) as failed.
    fn end_webhook_deliveries(
        &mut self,
        now: u64,
        tenant: &TenantId,
        id: &WebhookId,
        error: DeliveryError,
    ) {
        for delivery in self.pending_of(tenant, id) {
            self.end_delivery(now, delivery, DeliveryStatus::Failed, Some(error));
        }
    }

    /// A webhook's pending deliveries, in id order.
    fn pending_of(&self, tenant: &TenantId, id: &WebhookId) -> Vec<DeliveryId> {
        self.tenants
            .get(tenant)
            .and_then(|t| t.webhooks.get(id))
            .map(|w| w.pending.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Live: decides that a pending delivery ends, without an attempt outcome that says
    /// so.
    fn end_delivery(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    ) {
        let pending = self
            .deliveries
            .get(&delivery)
            .is_some_and(|d| !d.status.is_final());
        if pending {
            self.emit(Record::DeliveryFinished(record::DeliveryFinished {
                at_ms: now,
                delivery: delivery.0,
                status: status.name().to_string(),
                reason: error.map(DeliveryError::name),
            }));
        }
    }

    // ---------------------------------------------------------------- events

    /// Accepts an event for `tenant`: encodes its envelope, matches it against the
    /// tenant's active webhooks and creates one pending delivery per match. The
    /// deliveries are held until the returned `EventAccepted` record is reported durable
    /// ([`Dispatcher::records_durable`]).
    pub fn accept_event(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        event: NewEvent,
    ) -> Result<Accepted, AcceptError> {
        let now = self.observe(now_ms);
        if let Some(idempotency) = &event.idempotency {
            if let Some(answer) = self.check_key(now, tenant, idempotency)? {
                self.counters.events_duplicate += 1;
                return Ok(answer);
            }
        }
        let body = encode_envelope(tenant, &event)?;
        let mut targets = Vec::new();
        if let Some(t) = self.tenants.get(tenant) {
            t.matcher.matches(&event.event_type, &mut targets);
        }
        let created_at_ms = event.created_at_ms;
        self.accept_with_targets(
            now,
            tenant,
            event.id,
            event.event_type,
            body,
            targets,
            created_at_ms,
            event.idempotency,
        )
    }

    /// An event with an idempotency key: `Some` answer when the key is live (the first
    /// event again, or a conflict), `None` when the event is new. Changes nothing, so a
    /// duplicate leaves no trace for replay to reproduce.
    fn check_key(
        &self,
        now: u64,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> Result<Option<Accepted>, AcceptError> {
        if !Idempotency::key_is_valid(&idempotency.key) {
            return Err(AcceptError::IdempotencyKey {
                max: crate::envelope::IDEMPOTENCY_KEY_BYTES_MAX,
            });
        }
        let live = self.keys.get(tenant, &idempotency.key).filter(|entry| {
            entry
                .accepted_at_ms
                .saturating_add(self.config.idempotency_window_ms)
                > now
        });
        match live {
            None => Ok(None),
            Some(entry) if entry.fingerprint == idempotency.fingerprint => Ok(Some(Accepted {
                event_id: entry.event_id.clone(),
                append: entry.append,
                deliveries: 0,
                first_delivery: None,
                created_at_ms: entry.created_at_ms,
                duplicate: true,
            })),
            Some(_) => Err(AcceptError::IdempotencyConflict {
                key: idempotency.key.clone(),
            }),
        }
    }

    /// Every accepted event (live or replayed, so both forget alike) ages the remembered
    /// keys; one with a key is then remembered.
    fn remember_key(
        &mut self,
        now: u64,
        tenant: &TenantId,
        idempotency: Option<&Idempotency>,
        event_id: &EventId,
        created_at_ms: u64,
        append: AppendId,
    ) {
        self.keys
            .forget_expired(now, self.config.idempotency_window_ms);
        if let Some(idempotency) = idempotency {
            let entry = KeyEntry {
                fingerprint: idempotency.fingerprint,
                event_id: event_id.clone(),
                created_at_ms,
                accepted_at_ms: now,
                append,
            };
            self.keys.insert(
                tenant,
                &idempotency.key,
                entry,
                self.config.idempotency_keys_max,
            );
        }
    }

    #[allow(clippy::too_many_arguments)] // reason: the parts of one event, moved in
    fn accept_with_targets(
        &mut self,
        now: u64,
        tenant: &TenantId,
        event_id: EventId,
        event_type: EventType,
        body: Vec<u8>,
        targets: Vec<WebhookId>,
        created_at_ms: u64,
        idempotency: Option<Idempotency>,
    ) -> Result<Accepted, AcceptError> {
        let max = self.config.pending_deliveries_max;
        if self.pending_count + targets.len() > max {
            return Err(AcceptError::Full {
                pending: self.pending_count,
                needed: targets.len(),
                max,
            });
        }
        let mut refs = Vec::with_capacity(targets.len());
        for webhook in &targets {
            let attempts_max = self.attempts_max_of(tenant, webhook);
            let delivery = DeliveryId(self.next_delivery);
            self.next_delivery += 1;
            refs.push(record::DeliveryRef {
                delivery: delivery.0,
                webhook: webhook.as_str().to_string(),
                attempts_max,
            });
        }
        let count = refs.len();
        let first_delivery = refs.first().map(|r| DeliveryId(r.delivery));
        let append = self.emit(Record::EventAccepted(record::EventAccepted {
            at_ms: now,
            tenant: tenant.as_str().to_string(),
            event_id: event_id.as_str().to_string(),
            event_type: event_type.as_str().to_string(),
            // Kept even without deliveries: the event stream's replay window is rebuilt
            // from these records after a restart.
            body,
            deliveries: refs,
            created_at_ms,
            idempotency: idempotency.as_ref().map(|i| record::IdempotencyRec {
                key: i.key.clone(),
                fingerprint: i.fingerprint,
            }),
        }));
        self.counters.events_accepted += 1;
        self.counters.deliveries_created += count as u64;
        Ok(Accepted {
            event_id,
            append,
            deliveries: count,
            first_delivery,
            created_at_ms,
            duplicate: false,
        })
    }

    fn attempts_max_of(&self, tenant: &TenantId, webhook: &WebhookId) -> u32 {
        self.tenants
            .get(tenant)
            .and_then(|t| t.webhooks.get(webhook))
            .map_or(self.config.retry_schedule.attempts_max(), |w| {
                w.spec.schedule(&self.config.retry_schedule).attempts_max()
            })
    }

    /// Inserts a pending delivery in stage `AwaitingDurable`.
    fn insert_pending(
        &mut self,
        delivery: DeliveryId,
        event: &Arc<EventData>,
        webhook: WebhookId,
        attempts_max: u32,
        now: u64,
    ) {
        if let Some(w) = self
            .tenants
            .get_mut(&event.tenant)
            .and_then(|t| t.webhooks.get_mut(&webhook))
        {
            w.pending.insert(delivery);
        }
        match self.by_tenant.get_mut(&event.tenant) {
            Some(set) => {
                set.insert(delivery);
            }
            None => {
                self.by_tenant
                    .insert(event.tenant.clone(), BTreeSet::from([delivery]));
            }
        }
        self.pending_count += 1;
        self.fresh_pending += 1;
        self.next_delivery = self.next_delivery.max(delivery.0.saturating_add(1));
        self.deliveries.insert(
            delivery,
            Delivery {
                event: Arc::clone(event),
                webhook,
                attempt: 0,
                attempts_max,
                status: DeliveryStatus::Pending,
                stage: Stage::AwaitingDurable,
                due_ms: Some(event.accepted_at_ms),
                last_status: None,
                last_latency_ms: None,
                last_error: None,
                last_body: Arc::from(&[][..]),
                last_headers: Arc::from(Vec::new()),
                updated_at_ms: now,
                finish_seq: 0,
                attempts: VecDeque::new(),
            },
        );
    }

    /// Reports that every record up to and including `through` is durable. Deliveries
    /// of events accepted by those records become due.
    pub fn records_durable(&mut self, through: AppendId) {
        while self.awaiting.front().is_some_and(|(id, _)| *id <= through) {
            let Some((_, deliveries)) = self.awaiting.pop_front() else {
                break;
            };
            self.awaiting_count -= deliveries.len();
            for delivery in deliveries {
                if self
                    .deliveries
                    .get(&delivery)
                    .is_some_and(|d| d.stage == Stage::AwaitingDurable)
                {
                    self.make_due_or_end(delivery);
                }
            }
        }
    }

    /// Live: moves a pending delivery into its webhook's queue, or ends it when the
    /// webhook is gone.
    fn make_due_or_end(&mut self, delivery: DeliveryId) {
        if !self.make_due(delivery) {
            let now = self.now_ms;
            self.end_delivery(
                now,
                delivery,
                DeliveryStatus::Failed,
                Some(DeliveryError::WebhookDeleted),
            );
        }
    }

    /// Moves a pending delivery into its webhook's queue. `false` when the webhook is
    /// gone (the delivery is then left for the caller to end).
    fn make_due(&mut self, delivery: DeliveryId) -> bool {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return true;
        };
        if let Stage::Scheduled(key) = d.stage {
            self.wheel.cancel(key);
        }
        d.stage = Stage::Waiting;
        let Some(w) = self
            .tenants
            .get_mut(&d.event.tenant)
            .and_then(|t| t.webhooks.get_mut(&d.webhook))
        else {
            return false;
        };
        w.queue.push_back(delivery);
        self.dirty
            .insert((d.event.tenant.clone(), d.webhook.clone()));
        true
    }

    fn schedule(&mut self, delivery: DeliveryId, due_ms: u64) {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        if let Stage::Scheduled(key) = d.stage {
            self.wheel.cancel(key);
        }
        let key = self.wheel.insert(due_ms, Timer::Delivery(delivery));
        d.stage = Stage::Scheduled(key);
        d.due_ms = Some(due_ms);
    }

    /// Ends a pending delivery (applying a `DeliveryFinished`, or an `AttemptFinished`
    /// that carries a final status).
    fn finish(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    ) {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        if d.status.is_final() {
            return;
        }
        match d.stage {
            Stage::Scheduled(key) => {
                self.wheel.cancel(key);
            }
            Stage::InFlight => self.in_flight_count -= 1,
            _ => {}
        }
        if d.attempt == 0 {
            self.fresh_pending = self.fresh_pending.saturating_sub(1);
        }
        d.stage = Stage::Finished;
        d.status = status;
        d.due_ms = None;
        if error.is_some() {
            d.last_error = error;
        }
        if !self.replaying {
            let c = &mut self.counters;
            match (status, error) {
                (DeliveryStatus::Success, _) => c.deliveries_succeeded += 1,
                (DeliveryStatus::Exhausted, _) => c.deliveries_exhausted += 1,
                (_, Some(DeliveryError::WebhookDisabled)) => c.deliveries_webhook_disabled += 1,
                (_, Some(DeliveryError::WebhookDeleted)) => c.deliveries_webhook_deleted += 1,
                (_, Some(DeliveryError::NoLiveSecret)) => c.deliveries_no_live_secret += 1,
                _ => c.deliveries_failed += 1,
            }
        }
        d.updated_at_ms = now;
        self.finish_seq += 1;
        d.finish_seq = self.finish_seq;
        let (tenant, webhook) = (d.event.tenant.clone(), d.webhook.clone());
        if let Some(w) = self
            .tenants
            .get_mut(&tenant)
            .and_then(|t| t.webhooks.get_mut(&webhook))
        {
            w.pending.remove(&delivery);
        }
        self.pending_count -= 1;
        self.finished_count += 1;
        self.finished.push_back((delivery, self.finish_seq));
        self.evict();
    }

    /// Drops the oldest finished deliveries beyond the log limit.
    fn evict(&mut self) {
        while self.finished_count > self.config.log_finished_max {
            let Some((delivery, seq)) = self.finished.pop_front() else {
                break;
            };
            let current = self
                .deliveries
                .get(&delivery)
                .is_some_and(|d| d.status.is_final() && d.finish_seq == seq);
            if current {
                if let Some(d) = self.deliveries.remove(&delivery) {
                    if let Some(set) = self.by_tenant.get_mut(&d.event.tenant) {
                        set.remove(&delivery);
                        if set.is_empty() {
                            self.by_tenant.remove(&d.event.tenant);
                        }
                    }
                }
                self.finished_count -= 1;
            }
        }
        // Re-queued deliveries leave stale entries behind; compact before they pile up.
        if self.finished.len() > 2 * self.config.log_finished_max + 64 {
            let deliveries = &self.deliveries;
            self.finished.retain(|(delivery, seq)| {
                deliveries
                    .get(delivery)
                    .is_some_and(|d| d.status.is_final() && d.finish_seq == *seq)
            });
        }
    }

    // ---------------------------------------------------------------- outcomes

    /// Reports the outcome of an attempt. Returns `false` when the outcome is stale and
    /// was ignored (the delivery ended meanwhile, e.g. its webhook was deleted, or the
    /// attempt number does not match).
    pub fn attempt_finished(&mut self, now_ms: u64, outcome: Outcome) -> bool {
        let now = self.observe(now_ms);
        let Some(d) = self.deliveries.get(&outcome.delivery) else {
            return false;
        };
        if d.stage != Stage::InFlight || d.attempt != outcome.attempt {
            return false;
        }
        let (tenant, webhook) = (d.event.tenant.clone(), d.webhook.clone());
        let (attempt, attempts_max) = (d.attempt, d.attempts_max);
        let class = classify(&outcome.result);
        let counters = &mut self.counters;
        match class {
            OutcomeClass::Success => counters.attempts_succeeded += 1,
            OutcomeClass::Retry => counters.attempts_retryable += 1,
            OutcomeClass::Final | OutcomeClass::Gone => counters.attempts_final += 1,
        }
        counters.attempt_latency_ms.observe(outcome.latency_ms);
        let Some(w) = self
            .tenants
            .get(&tenant)
            .and_then(|t| t.webhooks.get(&webhook))
        else {
            // Unreachable by construction (deleting a webhook ends its deliveries), but a
            // delivery must never be left in limbo.
            self.end_delivery(
                now,
                outcome.delivery,
                DeliveryStatus::Failed,
                Some(DeliveryError::WebhookDeleted),
            );
            return true;
        };
        let next_at = match class {
            OutcomeClass::Retry if attempt < attempts_max => {
                let schedule = w.spec.schedule(&self.config.retry_schedule);
                let scheduled = schedule
                    .delay_before_ms(attempt + 1)
                    .or_else(|| schedule.retry_delays_ms().last().copied())
                    .unwrap_or(0);
                let jittered = jitter_ms(
                    scheduled,
                    self.config.jitter_percent,
                    self.config.jitter_seed,
                    outcome.delivery.0,
                    attempt + 1,
                );
                Some(now.saturating_add(retry_delay_ms(jittered, &outcome.result, now)))
            }
            _ => None,
        };
        let final_status = match (class, next_at) {
            (_, Some(_)) => None,
            (OutcomeClass::Success, None) => Some(DeliveryStatus::Success),
            (OutcomeClass::Retry, None) => Some(DeliveryStatus::Exhausted),
            (OutcomeClass::Final | OutcomeClass::Gone, None) => Some(DeliveryStatus::Failed),
        };
        let headers = bound_response_headers(
            outcome
                .response_headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        );
        let body = &outcome.response_body;
        self.emit(Record::AttemptFinished(record::AttemptFinished {
            at_ms: now,
            delivery: outcome.delivery.0,
            attempt,
            status: match outcome.result {
                AttemptResult::Response { status, .. } => status,
                AttemptResult::Transport(_) => 0,
            },
            transport_error: match outcome.result {
                AttemptResult::Transport(t) => Some(t.name().to_string()),
                AttemptResult::Response { .. } => None,
            },
            latency_ms: outcome.latency_ms,
            response_body: body[..body.len().min(RESPONSE_BODY_BYTES_MAX)].to_vec(),
            response_headers: headers
                .into_iter()
                .map(|(name, value)| record::HeaderRec { name, value })
                .collect(),
            next_attempt_at_ms: next_at,
            final_status: final_status.map(|s| s.name().to_string()),
        }));
        // Applying the outcome updated the endpoint's health; it decides the rest.
        let should_disable = class == OutcomeClass::Retry
            && self
                .tenants
                .get(&tenant)
                .and_then(|t| t.webhooks.get(&webhook))
                .is_some_and(|w| w.health.should_disable(now, &self.config.health));
        if class == OutcomeClass::Gone {
            self.disable(now, &tenant, &webhook, DisableReason::Gone);
        } else if should_disable {
            self.disable(now, &tenant, &webhook, DisableReason::FailingTooLong);
        }
        true
    }

    /// Disables a webhook automatically and publishes `webhook.disabled` to the tenant.
    fn disable(&mut self, now: u64, tenant: &TenantId, webhook: &WebhookId, reason: DisableReason) {
        let Some(w) = self
            .tenants
            .get(tenant)
            .and_then(|t| t.webhooks.get(webhook))
        else {
            return;
        };
        if !w.spec.status.is_active() {
            return;
        }
        let mut spec = w.spec.clone();
        let url = w.url_text.clone();
        spec.status = WebhookStatus::Disabled { reason, at_ms: now };
        self.emit(Record::WebhookUpserted(record::WebhookUpserted {
            at_ms: now,
            webhook: webhook_to_rec(tenant, webhook, &spec),
        }));
        self.end_webhook_deliveries(now, tenant, webhook, DeliveryError::WebhookDisabled);
        let data = serde_json::json!({
            "webhook_id": webhook.as_str(),
            "url": &*url,
            "reason": reason.name(),
            "disabled_at": crate::envelope::rfc3339_ms(now),
        });
        let event = NewEvent {
            id: self.generated_event_id(GENERATED_EVENT_ID_PREFIXES[0]),
            // The constant is a valid event type; checked by a test.
            event_type: EventType::parse(WEBHOOK_DISABLED_EVENT)
                .expect("WEBHOOK_DISABLED_EVENT is a valid event type"),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: now,
            location_id: None,
            data: data.to_string().into_bytes(),
            idempotency: None,
        };
        // A full shard drops the operational event rather than the disable itself: the
        // webhook's status is the source of truth, the event a courtesy.
        let _ = self.accept_event(now, tenant, event);
    }

    /// A deterministic event id for events the dispatcher originates: unique per shard
    /// because it embeds a number taken from the delivery id counter, which only grows
    /// (the number is consumed here, so an event that creates no deliveries cannot lend
    /// its id to the next one; replay restores the counter past it,
    /// [`Self::observe_generated_event_id`]).
    fn generated_event_id(&mut self, prefix: &str) -> EventId {
        let text = format!("{prefix}{:016x}", self.next_delivery);
        self.next_delivery += 1;
        // Prefix and hex digits are within the event id charset and length.
        EventId::parse(&text).expect("generated event ids are valid")
    }

    /// Replay: keeps the counter behind generated event ids past every id already used.
    fn observe_generated_event_id(&mut self, event_id: &str) {
        for prefix in GENERATED_EVENT_ID_PREFIXES {
            if let Some(hex) = event_id.strip_prefix(prefix) {
                if let Ok(number) = u64::from_str_radix(hex, 16) {
                    self.next_delivery = self.next_delivery.max(number.saturating_add(1));
                }
            }
        }
    }

    // ---------------------------------------------------------------- manual operations

    /// Retries one delivery now: a pending delivery waiting for a retry is moved to now;
    /// a failed or exhausted one gets one more attempt.
    pub fn retry_delivery(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        delivery: DeliveryId,
    ) -> Result<AppendId, OpError> {
        let now = self.observe(now_ms);
        let d = self
            .deliveries
            .get(&delivery)
            .filter(|d| &d.event.tenant == tenant)
            .ok_or(OpError::DeliveryNotFound(delivery))?;
        let webhook = d.webhook.clone();
        let active = self
            .tenants
            .get(tenant)
            .and_then(|t| t.webhooks.get(&webhook))
            .map(|w| w.spec.status.is_active())
            .ok_or_else(|| OpError::WebhookNotFound {
                tenant: tenant.clone(),
                webhook: webhook.clone(),
            })?;
        if !active {
            return Err(OpError::WebhookDisabled(webhook));
        }
        let attempts_max = match d.stage {
            Stage::Scheduled(_) => d.attempts_max,
            Stage::Finished => {
                if d.status == DeliveryStatus::Success {
                    return Err(OpError::AlreadySucceeded(delivery));
                }
                if self.pending_count >= self.config.pending_deliveries_max {
                    return Err(OpError::Accept(AcceptError::Full {
                        pending: self.pending_count,
                        needed: 1,
                        max: self.config.pending_deliveries_max,
                    }));
                }
                d.attempt + 1
            }
            _ => return Err(OpError::InProgress(delivery)),
        };
        Ok(
            self.emit(Record::DeliveryRequeued(record::DeliveryRequeued {
                at_ms: now,
                delivery: delivery.0,
                due_ms: now,
                attempts_max,
            })),
        )
    }

    /// Re-sends every failed or exhausted delivery of `webhook` whose event was accepted
    /// at or after `since_ms` (those still in the log), at most [`RESEND_MAX`] per call.
    /// Returns how many were re-queued.
    pub fn resend_failed(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> Result<usize, OpError> {
        let now = self.observe(now_ms);
        self.require_active_webhook(tenant, webhook)?;
        let room = self
            .config
            .pending_deliveries_max
            .saturating_sub(self.pending_count)
            .min(RESEND_MAX);
        let picked: Vec<(DeliveryId, u32)> = self
            .by_tenant
            .get(tenant)
            .into_iter()
            .flatten()
            .filter_map(|id| self.deliveries.get(id).map(|d| (*id, d)))
            .filter(|(_, d)| {
                &d.webhook == webhook
                    && matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Exhausted)
                    && d.event.accepted_at_ms >= since_ms
            })
            .map(|(id, d)| (id, d.attempt + 1))
            .take(room)
            .collect();
        for &(delivery, attempts_max) in &picked {
            self.emit(Record::DeliveryRequeued(record::DeliveryRequeued {
                at_ms: now,
                delivery: delivery.0,
                due_ms: now,
                attempts_max,
            }));
        }
        Ok(picked.len())
    }

    /// Manual operations act on existing, active webhooks only.
    fn require_active_webhook(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> Result<(), OpError> {
        let active = self
            .tenants
            .get(tenant)
            .and_then(|t| t.webhooks.get(webhook))
            .map(|w| w.spec.status.is_active())
            .ok_or_else(|| OpError::WebhookNotFound {
                tenant: tenant.clone(),
                webhook: webhook.clone(),
            })?;
        if active {
            Ok(())
        } else {
            Err(OpError::WebhookDisabled(webhook.clone()))
        }
    }

    /// Sends a test event of `event_type` (data [`TEST_EVENT_DATA`]) to one webhook,
    /// whatever its filters.
    pub fn send_test_event(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> Result<Accepted, OpError> {
        self.send_test(now_ms, tenant, webhook, |d, now| NewEvent {
            id: d.generated_event_id(GENERATED_EVENT_ID_PREFIXES[1]),
            event_type,
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: now,
            location_id: None,
            data: TEST_EVENT_DATA.to_vec(),
            idempotency: None,
        })
    }

    /// Sends `event` (the caller's type, data, id and so on) to one webhook only,
    /// whatever its filters, as a test. [`Accepted::first_delivery`] is the delivery
    /// created (always `Some` on success).
    pub fn send_test_event_with(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        event: NewEvent,
    ) -> Result<Accepted, OpError> {
        self.send_test(now_ms, tenant, webhook, |_, _| event)
    }

    /// The common part of the test sends: `make` builds the event once the webhook is
    /// known to be active (so a refused call consumes no generated id).
    fn send_test(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        make: impl FnOnce(&mut Self, u64) -> NewEvent,
    ) -> Result<Accepted, OpError> {
        let now = self.observe(now_ms);
        self.require_active_webhook(tenant, webhook)?;
        let event = make(self, now);
        let body = encode_envelope(tenant, &event).map_err(AcceptError::from)?;
        // A test send is never a duplicate: its key (if any) is not consulted or kept.
        Ok(self.accept_with_targets(
            now,
            tenant,
            event.id,
            event.event_type,
            body,
            vec![webhook.clone()],
            event.created_at_ms,
            None,
        )?)
    }

    /// Puts a delivery back on the schedule (from any state but in flight).
    fn requeue(&mut self, now: u64, delivery: DeliveryId, due_ms: u64, attempts_max: u32) {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        if d.stage == Stage::InFlight {
            return;
        }
        d.attempts_max = attempts_max;
        d.updated_at_ms = now;
        if d.status.is_final() {
            d.status = DeliveryStatus::Pending;
            d.stage = Stage::AwaitingDurable;
            self.pending_count += 1;
            if d.attempt == 0 {
                self.fresh_pending += 1;
            }
            self.finished_count -= 1;
            let (tenant, webhook) = (d.event.tenant.clone(), d.webhook.clone());
            if let Some(w) = self
                .tenants
                .get_mut(&tenant)
                .and_then(|t| t.webhooks.get_mut(&webhook))
            {
                w.pending.insert(delivery);
            }
        }
        self.schedule(delivery, due_ms);
    }

    // ---------------------------------------------------------------- time

    /// Advances time: fires due timers, admits due deliveries within each endpoint's
    /// limits, signs them in one batch (timestamp = `now_ms`) and queues their
    /// `AttemptStarted` records and `Send` commands. Call it after every batch of inputs
    /// and whenever [`Dispatcher::next_deadline_ms`] has passed.
    pub fn tick(&mut self, now_ms: u64) {
        let now = self.observe(now_ms);
        let mut fired = Vec::new();
        self.wheel
            .expire_bounded(now, &mut fired, TIMERS_PER_TICK_MAX);
        // The wheel's expiry order is its own business; outputs follow id order.
        fired.sort_unstable();
        for timer in fired {
            match timer {
                Timer::Delivery(delivery) => {
                    let scheduled = self
                        .deliveries
                        .get_mut(&delivery)
                        .filter(|d| matches!(d.stage, Stage::Scheduled(_)));
                    if let Some(d) = scheduled {
                        // The key just fired; forget it so make_due does not cancel it.
                        d.stage = Stage::AwaitingDurable;
                        self.make_due_or_end(delivery);
                    }
                }
                Timer::Webhook(tenant, webhook) => {
                    if let Some(w) = self
                        .tenants
                        .get_mut(&tenant)
                        .and_then(|t| t.webhooks.get_mut(&webhook))
                    {
                        w.wake = None;
                        self.dirty.insert((tenant, webhook));
                    }
                }
            }
        }
        self.flush(now);
    }

    fn flush(&mut self, now: u64) {
        let budget = self.config.sends_per_tick_max;
        let mut plans: Vec<Plan> = Vec::new();
        let mut no_secret: Vec<DeliveryId> = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        // Round-robin: when the last tick ran out of budget, start at the first webhook it
        // did not serve, so that busy webhooks early in id order cannot starve later ones.
        let order: Vec<(TenantId, WebhookId)> = match self.resume_from.take() {
            Some(cursor) => {
                let after = dirty.split_off(&cursor);
                after.into_iter().chain(dirty).collect()
            }
            None => dirty.into_iter().collect(),
        };
        let mut leftover = BTreeSet::new();
        for key in order {
            if plans.len() >= budget {
                if self.resume_from.is_none() {
                    self.resume_from = Some(key.clone());
                }
                leftover.insert(key);
                continue;
            }
            let (tenant, webhook) = &key;
            let Some(w) = self
                .tenants
                .get_mut(tenant)
                .and_then(|t| t.webhooks.get_mut(webhook))
            else {
                continue;
            };
            if !w.spec.status.is_active() {
                w.queue.clear();
                continue;
            }
            if w.signer_until_ms.is_some_and(|until| now >= until) {
                w.signer = w.spec.signer_at(now).ok();
                w.signer_until_ms = w.spec.next_secret_expiry_ms(now);
            }
            // Looked up again after each start: applying its record needs `self`.
            while let Some(w) = self
                .tenants
                .get_mut(tenant)
                .and_then(|t| t.webhooks.get_mut(webhook))
            {
                let Some(&delivery) = w.queue.front() else {
                    break;
                };
                let Some(d) = self
                    .deliveries
                    .get(&delivery)
                    .filter(|d| d.stage == Stage::Waiting && &d.webhook == webhook)
                else {
                    w.queue.pop_front();
                    continue;
                };
                let Some(signer) = &w.signer else {
                    w.queue.pop_front();
                    no_secret.push(delivery);
                    continue;
                };
                if plans.len() >= budget {
                    leftover.insert(key.clone());
                    break;
                }
                match w.health.admit(now, &w.spec.limits) {
                    crate::health::Admit::Now => {
                        w.health.start(now, &w.spec.limits);
                        let attempt = d.attempt + 1;
                        plans.push(Plan {
                            delivery,
                            attempt,
                            tenant: tenant.clone(),
                            webhook: webhook.clone(),
                            event_id: d.event.id.clone(),
                            signer: signer.clone(),
                            url: Arc::clone(&w.url),
                            url_text: Arc::clone(&w.url_text),
                            body: Arc::clone(&d.event.body),
                            custom_headers: w.spec.headers.clone(),
                            connect_timeout_ms: w.spec.limits.connect_timeout_ms,
                            request_timeout_ms: w.spec.limits.request_timeout_ms,
                        });
                        // Applying it takes the delivery off the queue.
                        self.emit(Record::AttemptStarted(record::AttemptStarted {
                            at_ms: now,
                            delivery: delivery.0,
                            attempt,
                        }));
                    }
                    crate::health::Admit::At(at) => {
                        if w.wake.is_none_or(|(_, due)| due > at) {
                            if let Some((old, _)) = w.wake.take() {
                                self.wheel.cancel(old);
                            }
                            let timer = self
                                .wheel
                                .insert(at, Timer::Webhook(key.0.clone(), key.1.clone()));
                            w.wake = Some((timer, at));
                        }
                        break;
                    }
                    crate::health::Admit::AfterOutcome => break,
                }
            }
        }
        self.dirty.extend(leftover);
        for delivery in no_secret {
            self.end_delivery(
                now,
                delivery,
                DeliveryStatus::Failed,
                Some(DeliveryError::NoLiveSecret),
            );
        }
        if plans.is_empty() {
            return;
        }
        let timestamp_s = i64::try_from(now / 1000).unwrap_or(i64::MAX);
        if self.signed.len() < plans.len() {
            self.signed.resize_with(plans.len(), SignedHeaders::new);
        }
        {
            let jobs: Vec<(&Signer, Message<'_>)> = plans
                .iter()
                .map(|p| {
                    (
                        &p.signer,
                        Message {
                            id: p.event_id.as_str(),
                            timestamp_s,
                            url: &p.url_text,
                            body: &p.body,
                        },
                    )
                })
                .collect();
            self.batch_signer
                .sign_batch(&jobs, &mut self.signed[..plans.len()]);
        }
        for (index, plan) in plans.into_iter().enumerate() {
            let signed = &self.signed[index];
            let mut headers = Vec::with_capacity(2 + signed.len() + plan.custom_headers.len());
            headers.push(("content-type".to_string(), "application/json".to_string()));
            headers.push(("user-agent".to_string(), USER_AGENT.to_string()));
            headers.extend(signed.iter().map(|(n, v)| (n.to_string(), v.to_string())));
            headers.extend(plan.custom_headers);
            self.commands.push_back(Command::Send(SendRequest {
                delivery: plan.delivery,
                attempt: plan.attempt,
                tenant: plan.tenant,
                webhook: plan.webhook,
                event_id: plan.event_id,
                url: plan.url,
                headers,
                body: plan.body,
                connect_timeout_ms: plan.connect_timeout_ms,
                request_timeout_ms: plan.request_timeout_ms,
            }));
        }
    }

    /// When [`Dispatcher::tick`] should next be called: the earliest timer, or the
    /// current time when work is ready (left over from a tick that hit
    /// [`DispatcherConfig::sends_per_tick_max`], or made ready by an input since the last
    /// tick). `None` when nothing is scheduled.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.dirty.is_empty() {
            return Some(self.now_ms);
        }
        self.wheel.next_deadline_ms()
    }

    // ---------------------------------------------------------------- output

    /// The next command, in the order produced.
    pub fn pop_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Moves every queued command to `out`, in order.
    pub fn drain_commands(&mut self, out: &mut Vec<Command>) {
        out.extend(self.commands.drain(..));
    }

    /// Commands waiting to be polled.
    pub fn commands_len(&self) -> usize {
        self.commands.len()
    }

    // ---------------------------------------------------------------- queries

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            webhooks: self.tenants.values().map(|t| t.webhooks.len()).sum(),
            pending_deliveries: self.pending_count,
            in_flight: self.in_flight_count,
            deliveries_retained: self.deliveries.len(),
            timers: self.wheel.len(),
            awaiting_durable: self.awaiting_count,
            idempotency_keys: self.keys.count,
            retries_pending: self
                .pending_count
                .saturating_sub(self.in_flight_count)
                .saturating_sub(self.fresh_pending),
        }
    }

    /// Monotonic counters of live work (replay counts nothing).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// When each pending delivery that is not in flight is (or was) due, as the wheel
    /// rounds it: from its timer while it waits in the wheel, from its due time once
    /// fired into its webhook's queue.
    #[cfg(test)]
    pub(crate) fn wheel_view(&self) -> BTreeMap<DeliveryId, Option<u64>> {
        self.deliveries
            .iter()
            .filter(|(_, d)| !d.status.is_final() && d.stage != Stage::InFlight)
            .map(|(id, d)| {
                let due = match d.stage {
                    Stage::Scheduled(key) => self.wheel.due_ms_of(key),
                    _ => d.due_ms.and_then(|due| self.wheel.due_ms(due)),
                };
                (*id, due)
            })
            .collect()
    }

    /// [`Stats::retries_pending`] counted the slow way, to check the fast one.
    #[cfg(test)]
    pub(crate) fn retries_pending_scan(&self) -> usize {
        self.deliveries
            .values()
            .filter(|d| !d.status.is_final() && d.attempt > 0 && d.stage != Stage::InFlight)
            .count()
    }

    fn view(&self, id: DeliveryId, d: &Delivery) -> DeliveryRecord {
        DeliveryRecord {
            id,
            tenant: d.event.tenant.clone(),
            event_id: d.event.id.clone(),
            event_type: d.event.event_type.clone(),
            webhook: d.webhook.clone(),
            attempt: d.attempt,
            status: d.status,
            response_status: d.last_status,
            response_time_ms: d.last_latency_ms,
            error: d.last_error,
            next_retry_at_ms: if d.status.is_final() { None } else { d.due_ms },
            response_body: Arc::clone(&d.last_body),
            response_headers: Arc::clone(&d.last_headers),
            accepted_at_ms: d.event.accepted_at_ms,
            updated_at_ms: d.updated_at_ms,
            finished_at_ms: d.status.is_final().then_some(d.updated_at_ms),
            attempts: d.attempts.iter().cloned().collect(),
        }
    }

    /// The ids a log line about delivery `id` names: tenant, webhook, event. Borrowed,
    /// so a driver can log an attempt's outcome without copying them.
    pub fn delivery_ids(&self, id: DeliveryId) -> Option<(&TenantId, &WebhookId, &EventId)> {
        self.deliveries
            .get(&id)
            .map(|d| (&d.event.tenant, &d.webhook, &d.event.id))
    }

    /// One delivery of `tenant`, if it is pending or still in the log.
    pub fn delivery(&self, tenant: &TenantId, id: DeliveryId) -> Option<DeliveryRecord> {
        self.deliveries
            .get(&id)
            .filter(|d| &d.event.tenant == tenant)
            .map(|d| self.view(id, d))
    }

    /// Queries the delivery log (see [`DeliveryQuery`]).
    pub fn deliveries(&self, query: &DeliveryQuery) -> Page<DeliveryRecord> {
        let limit = query.limit.clamp(1, PAGE_ITEMS_MAX);
        let start = DeliveryId(query.after.map_or(0, |a| a.0.saturating_add(1)));
        let mut items = Vec::new();
        let mut next_after = None;
        let range = self
            .by_tenant
            .get(&query.tenant)
            .into_iter()
            .flat_map(|set| set.range(start..));
        for (scanned, id) in range.enumerate() {
            if scanned == QUERY_SCAN_MAX {
                // A narrow filter over a long log: hand back what was found and where to
                // continue, rather than stall the shard.
                next_after = Some(DeliveryId(id.0.saturating_sub(1)));
                break;
            }
            let Some(d) = self.deliveries.get(id) else {
                continue;
            };
            if query.webhook.as_ref().is_some_and(|w| w != &d.webhook)
                || query.event.as_ref().is_some_and(|e| e != &d.event.id)
                || query.status.is_some_and(|s| s != d.status)
            {
                continue;
            }
            if items.len() == limit {
                next_after = items.last().map(|r: &DeliveryRecord| r.id);
                break;
            }
            items.push(self.view(*id, d));
        }
        Page { items, next_after }
    }

    // ---------------------------------------------------------------- replay

    /// Applies one journal record during recovery, in journal order, before any other
    /// input. Emits nothing. Call [`Dispatcher::replay_finished`] after the last record.
    ///
    /// Live handling changes state through the same function (it applies each record
    /// it emits), so a replayed journal rebuilds what the live dispatcher held.
    pub fn replay(&mut self, record: &Record) -> Result<(), ReplayError> {
        self.replaying = true;
        // Replayed records are durable: nothing waits for them.
        self.apply(record, AppendId(0))
    }

    /// The one place state changes by a record, live (`append` is the id just assigned:
    /// an event's deliveries wait until it is durable) and in replay (`AppendId(0)`:
    /// already durable).
    fn apply(&mut self, record: &Record, append: AppendId) -> Result<(), ReplayError> {
        let kind = record.kind();
        self.observe(record_time_ms(record));
        let invalid = |reason: String| ReplayError::Invalid { kind, reason };
        match record {
            Record::WebhookUpserted(r) => {
                let (tenant, id, spec) = webhook_from_rec(&r.webhook).map_err(invalid)?;
                self.apply_upsert(r.at_ms, tenant, id, spec);
            }
            Record::WebhookDeleted(r) => {
                let tenant = TenantId::parse(&r.tenant).map_err(|e| invalid(e.to_string()))?;
                let id = WebhookId::parse(&r.webhook).map_err(|e| invalid(e.to_string()))?;
                self.apply_delete(&tenant, &id);
            }
            Record::EventAccepted(r) => {
                self.observe_generated_event_id(&r.event_id);
                let tenant = TenantId::parse(&r.tenant).map_err(|e| invalid(e.to_string()))?;
                let event_id = EventId::parse(&r.event_id).map_err(|e| invalid(e.to_string()))?;
                let idempotency = r.idempotency.as_ref().map(|i| Idempotency {
                    key: i.key.clone(),
                    fingerprint: i.fingerprint,
                });
                self.remember_key(
                    r.at_ms,
                    &tenant,
                    idempotency.as_ref(),
                    &event_id,
                    r.created_at_ms,
                    append,
                );
                let event = Arc::new(EventData {
                    tenant,
                    id: event_id,
                    event_type: EventType::parse(&r.event_type)
                        .map_err(|e| invalid(e.to_string()))?,
                    body: Arc::from(&r.body[..]),
                    accepted_at_ms: r.at_ms,
                });
                let mut created = Vec::with_capacity(r.deliveries.len());
                for d in &r.deliveries {
                    let webhook =
                        WebhookId::parse(&d.webhook).map_err(|e| invalid(e.to_string()))?;
                    let delivery = DeliveryId(d.delivery);
                    if self.deliveries.contains_key(&delivery) {
                        return Err(invalid(format!("duplicate delivery {delivery}")));
                    }
                    self.insert_pending(delivery, &event, webhook, d.attempts_max, r.at_ms);
                    created.push(delivery);
                }
                if append == AppendId(0) {
                    for delivery in created {
                        // A webhook gone here is a torn journal: recovery ends the delivery.
                        self.make_due(delivery);
                    }
                } else if !created.is_empty() {
                    self.awaiting_count += created.len();
                    self.awaiting.push_back((append, created));
                }
            }
            Record::AttemptStarted(r) => {
                let delivery = DeliveryId(r.delivery);
                if let Some(d) = self
                    .deliveries
                    .get_mut(&delivery)
                    .filter(|d| !d.status.is_final())
                {
                    if let Stage::Scheduled(key) = d.stage {
                        self.wheel.cancel(key);
                    }
                    if d.stage != Stage::InFlight {
                        self.in_flight_count += 1;
                    }
                    d.stage = Stage::InFlight;
                    set_attempt(&mut self.fresh_pending, d, r.attempt);
                    d.due_ms = None;
                    d.updated_at_ms = r.at_ms;
                    d.attempt_started(r.attempt, r.at_ms);
                    // Live, the delivery is at the head of its queue; replayed, the queue
                    // may hold it further back, where admission skips it as stale.
                    if let Some(w) = self
                        .tenants
                        .get_mut(&d.event.tenant)
                        .and_then(|t| t.webhooks.get_mut(&d.webhook))
                    {
                        if w.queue.front() == Some(&delivery) {
                            w.queue.pop_front();
                        }
                    }
                }
            }
            Record::AttemptFinished(r) => self.apply_attempt_finished(r).map_err(invalid)?,
            Record::DeliveryFinished(r) => {
                let status = DeliveryStatus::from_name(&r.status)
                    .filter(|s| s.is_final())
                    .ok_or_else(|| invalid(format!("status {:?}", r.status)))?;
                let error = r.reason.as_deref().and_then(DeliveryError::from_name);
                self.finish(r.at_ms, DeliveryId(r.delivery), status, error);
            }
            Record::DeliveryRequeued(r) => {
                self.requeue(r.at_ms, DeliveryId(r.delivery), r.due_ms, r.attempts_max);
            }
            Record::Checkpoint(c) => self.load_checkpoint(c).map_err(invalid)?,
        }
        Ok(())
    }

    fn apply_attempt_finished(&mut self, r: &record::AttemptFinished) -> Result<(), String> {
        let delivery = DeliveryId(r.delivery);
        let Some(d) = self
            .deliveries
            .get_mut(&delivery)
            .filter(|d| !d.status.is_final())
        else {
            return Ok(());
        };
        let result = match &r.transport_error {
            Some(name) => match DeliveryError::from_name(name) {
                Some(DeliveryError::Transport(t)) => AttemptResult::Transport(t),
                _ => return Err(format!("transport error {name:?}")),
            },
            None => AttemptResult::Response {
                status: r.status,
                retry_after: None,
            },
        };
        let class = classify(&result);
        set_attempt(&mut self.fresh_pending, d, r.attempt);
        d.last_status = (r.status != 0).then_some(r.status);
        d.last_latency_ms = Some(r.latency_ms);
        d.last_error = match result {
            AttemptResult::Transport(t) => Some(DeliveryError::Transport(t)),
            AttemptResult::Response { status, .. } => {
                (class != OutcomeClass::Success).then_some(DeliveryError::Status(status))
            }
        };
        d.last_body = Arc::from(&r.response_body[..]);
        d.last_headers = headers_from_rec(&r.response_headers);
        d.updated_at_ms = r.at_ms;
        d.attempt_ended(
            r.attempt,
            r.at_ms,
            d.last_status,
            r.latency_ms,
            d.last_error,
        );
        if d.stage == Stage::InFlight {
            self.in_flight_count -= 1;
            d.stage = Stage::Waiting; // settled below
        }
        let (tenant, webhook) = (d.event.tenant.clone(), d.webhook.clone());
        if let Some(w) = self
            .tenants
            .get_mut(&tenant)
            .and_then(|t| t.webhooks.get_mut(&webhook))
        {
            let signal = match class {
                OutcomeClass::Success => Signal::Success,
                OutcomeClass::Retry => Signal::Failure,
                OutcomeClass::Final | OutcomeClass::Gone => Signal::Responsive,
            };
            w.health.finish(r.at_ms, signal, &self.config.health);
            // The endpoint has room again.
            self.dirty.insert((tenant, webhook));
        }
        match (r.next_attempt_at_ms, &r.final_status) {
            (Some(at), _) => self.schedule(delivery, at),
            (None, Some(status)) => {
                let status = DeliveryStatus::from_name(status)
                    .filter(|s| s.is_final())
                    .ok_or_else(|| format!("final status {status:?}"))?;
                self.finish(r.at_ms, delivery, status, None);
            }
            (None, None) => {
                return Err("attempt outcome with neither next attempt nor final status".into())
            }
        }
        Ok(())
    }

    /// Ends recovery: attempts that were in flight when the journal ended are due again
    /// now (with the same attempt number: they are repeated, not counted twice);
    /// deliveries of webhooks that are gone or disabled are ended (journaled); endpoint
    /// in-flight counts start from zero. Inputs may follow.
    pub fn replay_finished(&mut self, now_ms: u64) {
        self.replaying = false;
        let now = self.observe(now_ms);
        for t in self.tenants.values_mut() {
            for w in t.webhooks.values_mut() {
                w.health.reset_in_flight();
            }
        }
        let pending: Vec<(DeliveryId, Stage, TenantId, WebhookId)> = self
            .deliveries
            .iter()
            .filter(|(_, d)| !d.status.is_final())
            .map(|(id, d)| (*id, d.stage, d.event.tenant.clone(), d.webhook.clone()))
            .collect();
        for (delivery, stage, tenant, webhook) in pending {
            let active = self
                .tenants
                .get(&tenant)
                .and_then(|t| t.webhooks.get(&webhook))
                .map(|w| w.spec.status.is_active());
            match active {
                None => self.end_delivery(
                    now,
                    delivery,
                    DeliveryStatus::Failed,
                    Some(DeliveryError::WebhookDeleted),
                ),
                Some(false) => self.end_delivery(
                    now,
                    delivery,
                    DeliveryStatus::Failed,
                    Some(DeliveryError::WebhookDisabled),
                ),
                Some(true) if stage == Stage::InFlight => {
                    if let Some(d) = self.deliveries.get_mut(&delivery) {
                        set_attempt(&mut self.fresh_pending, d, d.attempt.saturating_sub(1));
                        d.stage = Stage::Waiting;
                    }
                    self.in_flight_count -= 1;
                    self.schedule(delivery, now);
                }
                Some(true) => {}
            }
        }
    }

    /// A snapshot of the live state, for `Journal::checkpoint`. Take it after draining
    /// every queued command into the journal, so that the checkpoint follows every record
    /// it summarises.
    ///
    /// It holds every webhook, every delivery (pending, or finished and still in the log)
    /// and the event bodies of those not successful. Its size is therefore about the
    /// distinct event bodies of pending and failed deliveries plus ~100 bytes per
    /// delivery; successful deliveries cannot be retried ([`OpError::AlreadySucceeded`]).
    pub fn checkpoint(&self, now_ms: u64) -> Record {
        let mut webhooks = Vec::new();
        for (tenant, t) in &self.tenants {
            for (id, w) in &t.webhooks {
                webhooks.push(record::WebhookSnap {
                    webhook: webhook_to_rec(tenant, id, &w.spec),
                    health: record::HealthRec {
                        consecutive_failures: w.health.consecutive_failures,
                        failing_since_ms: w.health.failing_since_ms,
                    },
                    created_at_ms: w.created_at_ms,
                    updated_at_ms: w.updated_at_ms,
                });
            }
        }
        // Bodies are kept only for events with a delivery that may still be sent (pending,
        // failed or exhausted: retry and re-send need them); successful deliveries stay in
        // the log as metadata. Keyed by address; never iterated.
        let needed: HashSet<*const EventData> = self
            .deliveries
            .values()
            .filter(|d| d.status != DeliveryStatus::Success)
            .map(|d| Arc::as_ptr(&d.event))
            .collect();
        let mut events = Vec::new();
        let mut event_index: HashMap<*const EventData, u32> = HashMap::new();
        let mut deliveries = Vec::with_capacity(self.deliveries.len());
        for (id, d) in &self.deliveries {
            let index = *event_index.entry(Arc::as_ptr(&d.event)).or_insert_with(|| {
                events.push(record::EventSnap {
                    tenant: d.event.tenant.as_str().to_string(),
                    event_id: d.event.id.as_str().to_string(),
                    event_type: d.event.event_type.as_str().to_string(),
                    accepted_at_ms: d.event.accepted_at_ms,
                    body: if needed.contains(&Arc::as_ptr(&d.event)) {
                        d.event.body.to_vec()
                    } else {
                        Vec::new()
                    },
                });
                // Events are bounded by deliveries, which are bounded far below u32::MAX.
                (events.len() - 1) as u32
            });
            deliveries.push(record::DeliverySnap {
                delivery: id.0,
                event: index,
                webhook: d.webhook.as_str().to_string(),
                attempt: d.attempt,
                attempts_max: d.attempts_max,
                status: d.status.name().to_string(),
                next_attempt_at_ms: if d.status.is_final() { None } else { d.due_ms },
                in_flight: d.stage == Stage::InFlight,
                last_status: d.last_status.unwrap_or(0),
                last_error: d.last_error.map(DeliveryError::name),
                last_latency_ms: d.last_latency_ms.unwrap_or(u64::MAX),
                last_response_body: d.last_body.to_vec(),
                last_response_headers: headers_to_rec(&d.last_headers),
                updated_at_ms: d.updated_at_ms,
                attempts: d
                    .attempts
                    .iter()
                    .map(|a| record::AttemptRec {
                        attempt: a.attempt,
                        started_at_ms: a.started_at_ms,
                        finished_at_ms: a.finished_at_ms,
                        status: a.response_status.unwrap_or(0),
                        latency_ms: a.response_time_ms,
                        error: a.error.map(DeliveryError::name),
                    })
                    .collect(),
            });
        }
        // Every remembered key, oldest first (expired ones too: live and replayed
        // dispatchers forget them at the same accepted event).
        let idempotency = self
            .keys
            .order
            .iter()
            .filter_map(|(at, tenant, key)| {
                let entry = self.keys.get(tenant, key)?;
                (entry.accepted_at_ms == *at).then(|| record::IdempotencySnap {
                    tenant: tenant.as_str().to_string(),
                    idempotency: record::IdempotencyRec {
                        key: key.to_string(),
                        fingerprint: entry.fingerprint,
                    },
                    event_id: entry.event_id.as_str().to_string(),
                    created_at_ms: entry.created_at_ms,
                    accepted_at_ms: entry.accepted_at_ms,
                })
            })
            .collect();
        Record::Checkpoint(record::Checkpoint {
            at_ms: now_ms.max(self.now_ms),
            next_delivery: self.next_delivery,
            webhooks,
            events,
            deliveries,
            idempotency,
        })
    }

    fn load_checkpoint(&mut self, c: &record::Checkpoint) -> Result<(), String> {
        let config = self.config.clone();
        let now = self.now_ms;
        *self = Dispatcher::new(config, now);
        self.replaying = true;
        self.next_delivery = c.next_delivery;
        for snap in &c.webhooks {
            let (tenant, id, spec) = webhook_from_rec(&snap.webhook)?;
            self.apply_upsert(c.at_ms, tenant.clone(), id.clone(), spec);
            if let Some(w) = self
                .tenants
                .get_mut(&tenant)
                .and_then(|t| t.webhooks.get_mut(&id))
            {
                w.health.consecutive_failures = snap.health.consecutive_failures;
                w.health.failing_since_ms = snap.health.failing_since_ms;
                w.created_at_ms = snap.created_at_ms;
                w.updated_at_ms = snap.updated_at_ms;
            }
        }
        for k in &c.idempotency {
            let tenant = TenantId::parse(&k.tenant).map_err(|e| e.to_string())?;
            let entry = KeyEntry {
                fingerprint: k.idempotency.fingerprint,
                event_id: EventId::parse(&k.event_id).map_err(|e| e.to_string())?,
                created_at_ms: k.created_at_ms,
                accepted_at_ms: k.accepted_at_ms,
                append: AppendId(0),
            };
            self.keys.insert(
                &tenant,
                &k.idempotency.key,
                entry,
                self.config.idempotency_keys_max,
            );
        }
        let mut events = Vec::with_capacity(c.events.len());
        for e in &c.events {
            events.push(Arc::new(EventData {
                tenant: TenantId::parse(&e.tenant).map_err(|e| e.to_string())?,
                id: EventId::parse(&e.event_id).map_err(|e| e.to_string())?,
                event_type: EventType::parse(&e.event_type).map_err(|e| e.to_string())?,
                body: Arc::from(&e.body[..]),
                accepted_at_ms: e.accepted_at_ms,
            }));
        }
        for s in &c.deliveries {
            let event = events
                .get(s.event as usize)
                .ok_or_else(|| format!("delivery {} names event #{}", s.delivery, s.event))?;
            let webhook = WebhookId::parse(&s.webhook).map_err(|e| e.to_string())?;
            let status = DeliveryStatus::from_name(&s.status)
                .ok_or_else(|| format!("status {:?}", s.status))?;
            let delivery = DeliveryId(s.delivery);
            self.insert_pending(delivery, event, webhook, s.attempts_max, s.updated_at_ms);
            if let Some(d) = self.deliveries.get_mut(&delivery) {
                set_attempt(&mut self.fresh_pending, d, s.attempt);
                d.last_status = (s.last_status != 0).then_some(s.last_status);
                d.last_error = s.last_error.as_deref().and_then(DeliveryError::from_name);
                d.last_latency_ms = (s.last_latency_ms != u64::MAX).then_some(s.last_latency_ms);
                d.last_body = Arc::from(&s.last_response_body[..]);
                d.last_headers = headers_from_rec(&s.last_response_headers);
                d.attempts = s
                    .attempts
                    .iter()
                    .rev()
                    .take(ATTEMPT_HISTORY_MAX)
                    .rev()
                    .map(|a| AttemptSummary {
                        attempt: a.attempt,
                        started_at_ms: a.started_at_ms,
                        finished_at_ms: a.finished_at_ms,
                        response_status: (a.status != 0).then_some(a.status),
                        response_time_ms: a.latency_ms,
                        error: a.error.as_deref().and_then(DeliveryError::from_name),
                    })
                    .collect();
            }
            if status.is_final() {
                self.finish(s.updated_at_ms, delivery, status, None);
            } else if s.in_flight {
                if let Some(d) = self.deliveries.get_mut(&delivery) {
                    d.stage = Stage::InFlight;
                    d.due_ms = None;
                }
                self.in_flight_count += 1;
            } else {
                let due = s.next_attempt_at_ms.unwrap_or(c.at_ms);
                self.schedule(delivery, due);
            }
            if let Some(d) = self.deliveries.get_mut(&delivery) {
                d.updated_at_ms = s.updated_at_ms;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
