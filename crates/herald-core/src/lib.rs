//! Per-shard webhook dispatch state machine: registry, matcher, retry policy, timing
//! wheel, endpoint health.
//!
//! This crate is pure: no sockets, no clock, no files, no threads. Bytes and `now_ms`
//! (Unix milliseconds) go in; commands come out. The same inputs always give the same
//! outputs (no hash-map iteration order and no randomness reach the outputs; jitter is a
//! seeded hash), which is what makes the simulator (`herald-sim`) possible.
//!
//! # Pieces
//!
//! * Ids: [`TenantId`], [`WebhookId`], [`EventId`], [`EventType`], [`LocationId`],
//!   [`DeliveryId`] — parsed once, valid by construction.
//! * Registry: [`WebhookSpec`] (url, [`EventFilter`]s, scheme and secrets with rotation,
//!   custom headers, status, [`RetrySchedule`] override, [`EndpointLimits`]); the
//!   [`Matcher`] index.
//! * Envelope: [`NewEvent`] → [`encode_envelope`]; the bytes signed are the bytes sent.
//! * Policy: [`classify`], [`retry_delay_ms`], [`jitter_ms`]; [`Health`] per endpoint.
//! * Journal records: [`Record`] (rkyv), kinds in [`record::kind`].
//! * The state machine: [`Dispatcher`]; the driver-side bookkeeping around it (journal
//!   sequence numbers, replies held until durable, recovery): [`session::Session`].
//!
//! # Driving a [`Dispatcher`]
//!
//! One dispatcher per shard, owned by one thread. The driver loop:
//!
//! 1. **Feed inputs** as they arrive, each with the current time:
//!    [`Dispatcher::upsert_webhook`], [`Dispatcher::delete_webhook`],
//!    [`Dispatcher::accept_event`], [`Dispatcher::attempt_finished`],
//!    [`Dispatcher::records_durable`], and the manual operations
//!    ([`Dispatcher::retry_delivery`], [`Dispatcher::resend_failed`],
//!    [`Dispatcher::send_test_event`]).
//! 2. **Call [`Dispatcher::tick`]`(now_ms)`** after a batch of inputs and whenever
//!    [`Dispatcher::next_deadline_ms`] has passed. Sends are only produced by `tick`, so
//!    that a whole batch is signed at once ([`herald_sign::BatchSigner`], signing
//!    timestamp = `now_ms / 1000`).
//! 3. **Poll commands** with [`Dispatcher::pop_command`] (or
//!    [`Dispatcher::drain_commands`]) until empty, and handle them **in order**:
//!    * [`Command::Append`]: append the record to the journal
//!      (`journal.append(kind, version, payload)` with [`Record::encode`]). Records must
//!      reach the journal in the order polled. The outcomes reported between two polls
//!      share one record ([`Record::AttemptsFinished`], at most
//!      [`record::OUTCOMES_RECORD_BYTES_MAX`] estimated bytes, then a new one) and its
//!      [`AppendId`]: report outcomes as they arrive and poll once per turn, and a busy
//!      turn's outcomes cost one journal frame.
//!    * [`Command::Send`]: start the HTTP request at once: it waits for no record. When
//!      it ends, report [`Dispatcher::attempt_finished`] with the same delivery id and
//!      attempt number. Starting an attempt writes no record: its outcome's
//!      `AttemptFinished` record carries the attempt (its start is the outcome's time
//!      less its latency). An attempt in flight is the one piece of live state the
//!      journal does not hold, so a crash before its outcome is durable leaves the
//!      delivery due with the same attempt number, which is sent again (at-least-once).
//!
//!    A driver whose journal keeps records readable in place may report where each
//!    event's envelope went ([`Dispatcher::body_stored`]) and then tick with
//!    [`Dispatcher::tick_with`] and checkpoint with [`Dispatcher::checkpoint_parts_with`]:
//!    pending deliveries then hold the position instead of a copy ([`body`]).
//! 4. **Sleep until** [`Dispatcher::next_deadline_ms`] or the next input.
//!
//! ```
//! use herald_core::*;
//!
//! let now_ms = 1_700_000_000_000;
//! let mut d = Dispatcher::new(DispatcherConfig::default(), now_ms);
//! let tenant = TenantId::parse("acme").unwrap();
//! let spec = WebhookSpec::new(
//!     herald_http::Url::parse("https://receiver.example/hooks").unwrap(),
//!     vec![EventFilter::parse("order.*").unwrap()],
//!     herald_sign::Scheme::Standard,
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
//! );
//! d.upsert_webhook(now_ms, tenant.clone(), WebhookId::parse("wh_1").unwrap(), spec).unwrap();
//! let event = NewEvent {
//!     id: EventId::parse("evt_1").unwrap(),
//!     event_type: EventType::parse("order.created").unwrap(),
//!     api_version: API_VERSION_DEFAULT.to_string(),
//!     created_at_ms: now_ms,
//!     location_id: None,
//!     data: br#"{"order_id":"o_1"}"#.to_vec(),
//!     idempotency: None,
//! };
//! let accepted = d.accept_event(now_ms, &tenant, event).unwrap();
//! assert_eq!(accepted.deliveries, 1);
//!
//! let mut sends = Vec::new();
//! for _turn in 0..2 {
//!     d.tick(now_ms);
//!     while let Some(command) = d.pop_command() {
//!         match command {
//!             // A real driver appends `record.encode()` to the journal and reports
//!             // durability later; here every record is durable at once.
//!             Command::Append { id, record: _ } => d.records_durable(id),
//!             Command::Send(request) => sends.push(request),
//!         }
//!     }
//! }
//! assert_eq!(sends.len(), 1);
//! let request = &sends[0];
//! assert!(request.headers.iter().any(|(name, _)| name == "webhook-signature"));
//! d.attempt_finished(now_ms + 40, Outcome {
//!     delivery: request.delivery,
//!     attempt: request.attempt,
//!     result: AttemptResult::Response { status: 200, retry_after: None },
//!     latency_ms: 40,
//!     response_body: b"ok".to_vec(),
//!     response_headers: ResponseHeaders::bounded([("Content-Type", "text/plain")]),
//! });
//! let record = d.delivery(&tenant, request.delivery).unwrap();
//! assert_eq!(record.status, DeliveryStatus::Success);
//! ```
//!
//! # Durability gate
//!
//! Every `Append` carries an [`AppendId`] (1, 2, 3, … in output order). When the journal
//! reports records durable, map its sequence numbers back to the highest `AppendId`
//! written and call [`Dispatcher::records_durable`]`(id)`. The dispatcher holds an
//! event's deliveries until its `EventAccepted` record is durable, so nothing is sent for
//! an event that a crash could forget. [`Accepted::append`] (from `accept_event`) is the
//! id to wait for before acknowledging the publisher; the `AppendId` returned by
//! webhook changes can be awaited the same way. A driver without a journal (tests) calls
//! `records_durable` with the id of every `Append` as it polls it.
//!
//! # Recovery
//!
//! After a restart, build a fresh dispatcher, decode each journal frame from the last
//! checkpoint on with [`Record::decode`] (checkpoint frames written by
//! `Journal::checkpoint`: [`Record::decode_checkpoint`]) and pass it to
//! [`Dispatcher::replay`] in order,
//! then call [`Dispatcher::replay_finished`]`(now_ms)`. Replay rebuilds the registry,
//! pending deliveries, the delivery log and the timing wheel; attempts that were in
//! flight at the crash have no outcome in the journal and are retried with the same
//! attempt number. `AttemptStarted` records, written by older builds, still replay. To write a checkpoint,
//! first drain and append every queued command, then write each part of
//! [`Dispatcher::checkpoint_parts`]`(now_ms, part_bytes_target)`, each encoded with
//! [`CheckpointParts::next_into`], as one part
//! of `Journal::begin_checkpoint`, and finish it; replay hands the parts back one frame
//! each, and each is decoded with [`Record::decode_checkpoint`] and replayed in order.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod body;
mod convert;
mod dispatcher;
mod envelope;
mod headers;
mod health;
mod ids;
mod json_check;
mod log;
mod matcher;
mod metrics;
pub mod record;
mod retry;
pub mod session;
mod webhook;
pub mod wheel;

pub use body::{BodyPos, BodyStore, Bytes, PayloadAt};
pub use dispatcher::{
    AcceptError, Accepted, AppendId, BodyMoves, Checkpoint, CheckpointParts, Command, Dispatcher,
    DispatcherConfig, OpError, Outcome, RegistryError, ReplayError, Resent, SendRequest, ShardFull,
    Stats, TenantFull, TenantPurge, WebhookView, ATTEMPT_HISTORY_MAX, IDEMPOTENCY_KEYS_MAX,
    IDEMPOTENCY_KEYS_PER_TENANT_MAX_DEFAULT, IDEMPOTENCY_WINDOW_MS_DEFAULT,
    LOG_FINISHED_MAX_DEFAULT, PENDING_DELIVERIES_MAX_DEFAULT,
    PENDING_DELIVERIES_PER_TENANT_MAX_DEFAULT, PURGE_DELIVERIES_PER_STEP, PURGE_KEYS_PER_STEP,
    QUERY_SCAN_MAX, RESEND_MAX, RESPONSE_BODY_BYTES_MAX, RESPONSE_HEADERS_MAX,
    RESPONSE_HEADER_BYTES_MAX, SENDS_PER_TICK_MAX_DEFAULT, TEST_EVENT_DATA, TIMERS_PER_TICK_MAX,
    USER_AGENT, WEBHOOKS_PER_TENANT_MAX_DEFAULT, WEBHOOK_DISABLED_EVENT,
};
pub use envelope::{
    encode_envelope, envelope_location_id, rfc3339_ms, EnvelopeError, Idempotency, NewEvent,
    API_VERSION_BYTES_MAX, API_VERSION_DEFAULT, BODY_BYTES_MAX, DATA_DEPTH_MAX,
    IDEMPOTENCY_KEY_BYTES_MAX,
};
pub use headers::ResponseHeaders;
pub use health::{
    Admit, Breaker, Health, HealthPolicy, Signal, BREAKER_FAILURES_DEFAULT,
    BREAKER_OPEN_MS_DEFAULT, BREAKER_OPEN_MS_MAX_DEFAULT, DISABLE_AFTER_FAILING_MS_DEFAULT,
};
pub use ids::{
    DeliveryId, EventId, EventType, IdError, LocationId, TenantId, WebhookId, EVENT_ID_BYTES_MAX,
    EVENT_TYPE_BYTES_MAX, EVENT_TYPE_SEGMENTS_MAX, ID_BYTES_MAX,
};
pub use log::{
    AttemptSummary, DeliveryError, DeliveryQuery, DeliveryRecord, DeliveryStatus, Page,
    PAGE_ITEMS_MAX,
};
pub use matcher::{EventFilter, Matcher};

/// A map looked up per event or per delivery (tenants, event types, origins): SipHash,
/// the standard map's hasher, was ~1.5 % of a shard's time in a closed loop. foldhash
/// seeds each map from a random per-process seed, so keys chosen in advance (tenant
/// names, hosts of webhook URLs) still cannot be made to collide.
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub use metrics::{Counters, Histogram, ATTEMPT_LATENCY_BOUNDS_MS, HISTOGRAM_BUCKETS};
pub use record::{DecodeError, EncodeError, Record, RecordBuffer, RECORD_VERSION};
pub use retry::{
    classify, jitter_ms, no_connection_retry_ms, retry_delay_ms, AttemptResult, OutcomeClass,
    RetrySchedule, ScheduleError, TransportError, JITTER_PERCENT_MAX, NO_CONNECTION_RETRY_MAX_MS,
    NO_CONNECTION_RETRY_MS, RETRIES_MAX, RETRY_AFTER_MS_MAX, RETRY_DELAY_MS_MAX,
};
pub use webhook::{
    DisableReason, EndpointLimits, RateLimit, SecretSpec, SpecError, WebhookSpec, WebhookStatus,
    CONNECT_TIMEOUT_MS_DEFAULT, CONNECT_TIMEOUT_MS_MAX, DESCRIPTION_BYTES_MAX,
    FILTERS_PER_WEBHOOK_MAX, HEADERS_PER_WEBHOOK_MAX, HEADER_NAME_BYTES_MAX,
    HEADER_VALUE_BYTES_MAX, IN_FLIGHT_DEFAULT, IN_FLIGHT_MAX, RATE_BURST_MAX, RATE_PER_S_MAX,
    REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MAX,
};
