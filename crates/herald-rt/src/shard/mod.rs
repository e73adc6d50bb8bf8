//! Shards: one glommio executor thread per shard, each owning its tenants' journal,
//! dispatcher state and HTTP client, fed from foreign threads through bounded queues.
//!
//! # Shape
//!
//! ```text
//! foreign threads ── Request ──► bounded intake (crossbeam) ──► shard i (glommio thread)
//!        ▲                         + eventfd wake when parked       ├─ Journal (data_dir/shard-i)
//!        └──── Reply (oneshot) ◄── after the record is durable ─────├─ Dispatcher (herald-core)
//!                                                                   └─ HttpClient (sends as tasks)
//! ```
//!
//! Tenants are routed by [`shard_of`]; a tenant's webhooks, deliveries and journal
//! records live on its shard only.
//!
//! # The shard loop (one turn)
//!
//! 1. take at most [`ShardConfig::intake_batch_max`] requests from the intake queue and
//!    feed them to the dispatcher;
//! 2. feed finished attempts ([`herald_core::Dispatcher::attempt_finished`]);
//! 3. drain the dispatcher's commands in order: `Append` → journal, `Send` → a spawned
//!    local task on the shard's [`HttpClient`](crate::HttpClient);
//! 4. tell the shard's [`herald_core::session::Session`] the journal's durable sequence
//!    number: it maps it back to the dispatcher's `AppendId`, reports it
//!    ([`herald_core::Dispatcher::records_durable`]) and releases every reply whose
//!    records are now durable (group commit: one sync answers many publishes). The
//!    session is the same bookkeeping the simulator (`herald-sim`) drives;
//! 5. `tick` when the dispatcher's deadline has passed (this produces the sends) and
//!    drain again; begin a checkpoint when due, or write the next parts of the one
//!    underway (a few parts per turn, within a quarter of the shard's time: records go
//!    on being journaled between its parts);
//! 6. park until the next deadline, a wake-up from a foreign thread (intake, or the
//!    journal's sync thread), a finished send, or the time a checkpoint underway may go
//!    on. An idle shard makes no system calls apart from a periodic idle-connection
//!    sweep.

#![deny(missing_docs)]

mod engine;
mod fds;
mod intake;
mod memory;
mod notify;
mod oneshot;
mod route;
mod run;
mod sched;
mod status;
pub mod stream;
mod wake;

use herald_core::{
    DeliveryId, DeliveryQuery, DeliveryRecord, DispatcherConfig, EventId, EventType, Health,
    NewEvent, Page, TenantId, WebhookId, WebhookSpec,
};

pub(crate) use engine::panic_text;
pub use engine::{
    Engine, EngineConfig, Pinning, INTAKE_CAPACITY_MAX, IO_MEMORY_BYTES_MAX, SHARDS_MAX,
};
pub use intake::SendError;
pub use memory::set_memory_release;
pub use oneshot::{reply_channel, Canceled, Reply, ReplyReceiver, WaitTimeoutError, Wakeups};
pub use route::{fnv1a_64, shard_of};
pub use status::{ShardExit, StartError, StorageError};

use crate::ClientConfig;

// Recovery reads the journal's checkpoint frames as parts in this build's record layout:
// the two crates must agree on which frame version that is.
const _: () = assert!(
    herald_core::session::CHECKPOINT_FRAME_VERSION == herald_journal::CHECKPOINT_VERSION,
    "herald-core reads checkpoint parts of another journal checkpoint version"
);

/// Most requests a shard takes from its intake queue per turn: bounds the time between
/// two looks at the network and the journal.
pub const INTAKE_BATCH_MAX_DEFAULT: usize = 1024;
/// Default time a shutting-down shard waits for sends in flight before leaving them to
/// be retried after restart.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 5_000;
/// Default: write a checkpoint after this many journal records (once the journal also
/// grew by as many bytes as the previous checkpoint took, so that checkpoints of a large
/// state stay at most about half of the journal's writes)…
pub const CHECKPOINT_RECORDS_DEFAULT: u64 = 200_000;
/// …or this long after the previous one if anything was written since.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 5 * 60 * 1000;
/// Default cap on answers waiting for the journal to become durable, per shard. Each
/// request adds at most one, and requests stay in the intake queue while this many wait,
/// so a stalled disk turns into back-pressure on callers rather than memory growth.
pub const AWAITING_DURABLE_MAX_DEFAULT: usize = 65_536;
/// Most events in one [`Request::PublishBatch`]: bounds the work one request adds to a
/// shard turn.
pub const PUBLISH_BATCH_MAX: usize = 1024;
/// Longest a parked shard sleeps without a deadline, so that idle keep-alive
/// connections are closed and checkpoints are taken on a quiet shard.
pub const IDLE_WAKE_MS: u64 = 5_000;

/// Everything one shard needs besides its index and directory.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Dispatcher policy (default retry schedule, limits, health).
    pub dispatcher: DispatcherConfig,
    /// Outbound HTTP client (trust anchors, egress policy, pools).
    pub client: ClientConfig,
    /// Journal segment size (see `herald_journal::JournalConfig`).
    pub journal_segment_bytes: u64,
    /// Journal group commit: sync after this many records…
    pub journal_group_records_max: usize,
    /// …or after the oldest unsynced record waited this long.
    pub journal_group_delay_us: u64,
    /// …but a turn's records that nobody waits for (its attempt outcomes, while no
    /// reply and no delivery waits for a record) only after this long (never less than
    /// the group delay; see `herald_journal::JournalConfig::lazy_delay_us`).
    pub journal_lazy_delay_us: u64,
    /// Most journal segment files (bounds disk use).
    pub journal_segments_max: usize,
    /// Requests taken from the intake queue per turn.
    pub intake_batch_max: usize,
    /// How long shutdown waits for sends in flight.
    pub shutdown_grace_ms: u64,
    /// Checkpoint after this many records…
    pub checkpoint_records: u64,
    /// …or after this long with any record written.
    pub checkpoint_interval_ms: u64,
    /// Most answers waiting for durability (at least 1); see
    /// [`AWAITING_DURABLE_MAX_DEFAULT`].
    pub awaiting_durable_max: usize,
    /// The event stream's replay window ([`stream`]).
    pub stream: stream::StreamConfig,
}

impl ShardConfig {
    /// Defaults around a client configuration: the dispatcher's and journal's defaults,
    /// batches of [`INTAKE_BATCH_MAX_DEFAULT`], [`SHUTDOWN_GRACE_MS_DEFAULT`].
    pub fn new(client: ClientConfig) -> ShardConfig {
        let journal = herald_journal::JournalConfig::new("");
        ShardConfig {
            dispatcher: DispatcherConfig::default(),
            client,
            journal_segment_bytes: journal.segment_bytes,
            journal_group_records_max: journal.group_records_max,
            journal_group_delay_us: journal.group_delay_us,
            journal_lazy_delay_us: journal.lazy_delay_us,
            journal_segments_max: journal.segments_max,
            intake_batch_max: INTAKE_BATCH_MAX_DEFAULT,
            shutdown_grace_ms: SHUTDOWN_GRACE_MS_DEFAULT,
            checkpoint_records: CHECKPOINT_RECORDS_DEFAULT,
            checkpoint_interval_ms: CHECKPOINT_INTERVAL_MS_DEFAULT,
            stream: stream::StreamConfig::default(),
            awaiting_durable_max: AWAITING_DURABLE_MAX_DEFAULT,
        }
    }
}

/// Why a shard refused or could not complete a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A webhook change was refused (invalid spec, too many webhooks, unknown webhook).
    Registry(herald_core::RegistryError),
    /// An event was refused (invalid envelope, or the shard's pending-delivery limit).
    Accept(herald_core::AcceptError),
    /// A manual operation was refused.
    Op(herald_core::OpError),
    /// The journal could not take the change, so it was not carried out. While the
    /// cause can pass (a full disk) the shard refuses changes and probes the journal,
    /// taking changes again once it can write; after a failed sync it stops. The
    /// journal's error is the [`StorageError`]'s source.
    Storage(StorageError),
    /// The shard is stopping; the change was not made.
    ShuttingDown,
}

/// A webhook as the registry holds it (an owned snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookInfo {
    /// The tenant that owns the webhook.
    pub tenant: TenantId,
    /// The webhook's id, unique within its tenant.
    pub id: WebhookId,
    /// Configuration, including status.
    pub spec: WebhookSpec,
    /// Endpoint health (in-flight, failures, breaker).
    pub health: Health,
    /// Pending deliveries.
    pub pending: usize,
    /// When it was created (Unix ms; journaled, so it survives restarts).
    pub created_at_ms: u64,
    /// When its configuration or status last changed (Unix ms), by the owner or
    /// automatically (disabled after 410 Gone or failing too long).
    pub updated_at_ms: u64,
}

/// Bucket bounds of the journal's sync latency (one `fdatasync` of a group commit),
/// microseconds: from a fast NVMe flush to a disk stalled for a second.
pub const JOURNAL_SYNC_BOUNDS_US: [u64; herald_core::HISTOGRAM_BUCKETS] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Figures of one shard: gauges of its state and counters since it started (sum shards
/// for engine totals; counters restart from zero with the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    /// The dispatcher's state: webhooks, pending deliveries (and of those, waiting for a
    /// retry), deliveries in flight, awaiting durability, remembered idempotency keys.
    pub dispatcher: herald_core::Stats,
    /// The dispatcher's counters: events accepted and repeated, deliveries ended by
    /// outcome, attempts by outcome class, attempt latency histogram.
    pub counters: herald_core::Counters,
    /// Highest journal sequence number appended.
    pub journal_last_seq: u64,
    /// Highest journal sequence number durable.
    pub journal_durable_seq: u64,
    /// Bytes appended to the journal since start (frames with their headers and padding,
    /// checkpoints included).
    pub journal_bytes_appended: u64,
    /// Turns whose records the shard committed to be synced within the group delay (a
    /// reply or a delivery waited for a record) since start.
    pub journal_commits_urgent: u64,
    /// Turns whose records it committed lazily (attempt outcomes while nothing waited:
    /// synced within the journal's lazy delay) since start.
    pub journal_commits_lazy: u64,
    /// Latency of the journal's syncs since start, microseconds
    /// ([`JOURNAL_SYNC_BOUNDS_US`]); `count` is the number of syncs.
    pub journal_sync_us: herald_core::Histogram,
    /// Sends spawned and not finished (requests in flight).
    pub sends_in_flight: usize,
    /// Outbound connections open or being opened (idle ones included).
    pub connections_open: usize,
    /// The HTTP client's counters.
    pub client: crate::ClientStats,
    /// Checkpoints written since start.
    pub checkpoints_written: u64,
    /// Whether a checkpoint is being written between turns now.
    pub checkpoint_underway: bool,
    /// Deliveries the checkpoint underway keeps a copy of (changed or removed since it
    /// began, not yet written): its memory beyond the live state.
    pub checkpoint_copies: u64,
    /// Journal sequence number of the latest checkpoint written since start (its last
    /// frame; 0 when none).
    pub checkpoint_seq_last: u64,
    /// Bytes of the latest checkpoint written since start (all its frames).
    pub checkpoint_bytes_last: u64,
    /// Time the latest checkpoint took to build, encode and append on the shard's thread,
    /// summed over the turns it was written in, microseconds.
    pub checkpoint_us_last: u64,
    /// CPU time the shard's thread spent writing checkpoints since start (building,
    /// encoding and appending their parts; abandoned ones included), microseconds: with
    /// a large backlog each checkpoint copies every pending event's body, so this is
    /// where a backlog's cost shows. (`checkpoint_us_last` is the time the latest took
    /// on the thread, waits for a core included.)
    pub checkpoint_cpu_us_total: u64,
    /// Journal bytes of every checkpoint written since start (abandoned ones included).
    pub checkpoint_bytes_total: u64,
    /// Webhooks disabled or deleted whose pending deliveries are still being ended, a
    /// bounded number per turn ([`herald_core::Dispatcher::endings_underway`]).
    pub endings_underway: u64,
    /// Journal frames replayed at start (a checkpoint's frames and the records after it).
    pub replayed_frames: u64,
    /// Journal bytes replayed at start.
    pub replayed_bytes: u64,
}

impl Default for ShardStats {
    fn default() -> ShardStats {
        ShardStats {
            dispatcher: herald_core::Stats::default(),
            counters: herald_core::Counters::default(),
            journal_last_seq: 0,
            journal_durable_seq: 0,
            journal_bytes_appended: 0,
            journal_commits_urgent: 0,
            journal_commits_lazy: 0,
            journal_sync_us: herald_core::Histogram::new(&JOURNAL_SYNC_BOUNDS_US),
            sends_in_flight: 0,
            connections_open: 0,
            client: crate::ClientStats::default(),
            checkpoints_written: 0,
            checkpoint_underway: false,
            endings_underway: 0,
            checkpoint_copies: 0,
            checkpoint_seq_last: 0,
            checkpoint_bytes_last: 0,
            checkpoint_us_last: 0,
            checkpoint_cpu_us_total: 0,
            checkpoint_bytes_total: 0,
            replayed_frames: 0,
            replayed_bytes: 0,
        }
    }
}

/// An accepted publish ([`Request::Publish`], [`Request::PublishBatch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id; for a duplicate, the first event's.
    pub event_id: EventId,
    /// The event's creation time; for a duplicate, the first event's.
    pub created_at_ms: u64,
    /// The idempotency key was live with the same fingerprint: nothing new was recorded
    /// or sent.
    pub duplicate: bool,
}

impl Published {
    pub(crate) fn of(accepted: herald_core::Accepted) -> Published {
        Published {
            event_id: accepted.event_id,
            created_at_ms: accepted.created_at_ms,
            duplicate: accepted.duplicate,
        }
    }
}

/// A test event that was sent ([`Request::SendTestEventWith`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSent {
    /// The event's id.
    pub event_id: EventId,
    /// The delivery created for the webhook.
    pub delivery: DeliveryId,
}

/// How a [`Request::UpsertWebhook`] treats the webhook it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WebhookWrite {
    /// Create it, or replace its whole configuration.
    Put,
    /// Replace the whole configuration of one that exists (an unknown id is refused).
    Update,
    /// Like `Update`, but keep the status it has when the change is applied: for a
    /// change read from the webhook earlier, which must not undo a status changed since
    /// (an auto-disable).
    Settings,
}

/// Work handed to a shard. Each carries the reply half of a oneshot; the shard answers
/// exactly once (mutations only after their journal records are durable), or drops the
/// reply when it stops, which the waiter sees as [`Canceled`].
#[derive(Debug)]
pub enum Request {
    /// Create or replace a webhook, as `write` says.
    UpsertWebhook {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        id: WebhookId,
        /// Full configuration.
        spec: Box<WebhookSpec>,
        /// Whether an unknown id is created, and whether the status is written.
        write: WebhookWrite,
        /// Answered once the change is durable.
        reply: Reply<Result<(), Failure>>,
    },
    /// Delete a webhook.
    DeleteWebhook {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        id: WebhookId,
        /// Answered once the deletion is durable.
        reply: Reply<Result<(), Failure>>,
    },
    /// One webhook.
    GetWebhook {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        id: WebhookId,
        /// Answered at once.
        reply: Reply<Option<WebhookInfo>>,
    },
    /// A tenant's webhooks in id order, at most `limit` of them after `after`.
    ListWebhooks {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Start after this id.
        after: Option<WebhookId>,
        /// Most to return.
        limit: usize,
        /// Answered at once.
        reply: Reply<Vec<WebhookInfo>>,
    },
    /// Accept an event.
    Publish {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// The event.
        event: NewEvent,
        /// Answered once the event's record is durable (for a duplicate, once the first
        /// event's record is).
        reply: Reply<Result<Published, Failure>>,
    },
    /// Accept several events of one tenant in one hand-off (at most
    /// [`PUBLISH_BATCH_MAX`]). Answered once every accepted event is durable, with one
    /// result per event in order.
    PublishBatch {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// The events.
        events: Vec<NewEvent>,
        /// Answered once the accepted events are durable.
        reply: Reply<Vec<Result<Published, Failure>>>,
    },
    /// Query the delivery log.
    Deliveries {
        /// The query (names its tenant).
        query: DeliveryQuery,
        /// Answered at once.
        reply: Reply<Page<DeliveryRecord>>,
    },
    /// One delivery.
    Delivery {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Delivery id.
        id: DeliveryId,
        /// Answered at once.
        reply: Reply<Option<DeliveryRecord>>,
    },
    /// Retry one delivery now.
    RetryDelivery {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Delivery id.
        id: DeliveryId,
        /// Answered once durable.
        reply: Reply<Result<(), Failure>>,
    },
    /// One bounded step of re-sending a webhook's failed deliveries accepted since
    /// `since_ms` (`herald_core::Dispatcher::resend_failed_step`, looking at no more
    /// than `herald_core::QUERY_SCAN_MAX` of the tenant's deliveries).
    ResendFailed {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        webhook: WebhookId,
        /// Unix ms.
        since_ms: u64,
        /// Where the step starts: after this delivery (from the tenant's first: `None`).
        after: Option<DeliveryId>,
        /// Most deliveries it re-queues.
        most: usize,
        /// Answered with what the step re-queued and where the next goes on, once
        /// durable.
        reply: Reply<Result<herald_core::Resent, Failure>>,
    },
    /// One bounded step of purging what the shard retained of a tenant that has no
    /// webhook and no pending delivery left: its finished deliveries, idempotency keys
    /// and streamed events (`herald_core::Dispatcher::purge_tenant`).
    PurgeTenant {
        /// The tenant purged; it also routes the request to the tenant's shard.
        tenant: TenantId,
        /// Answered with what the step dropped and whether more is left, once durable.
        reply: Reply<Result<herald_core::TenantPurge, Failure>>,
    },
    /// Send a test event to one webhook.
    SendTestEvent {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        webhook: WebhookId,
        /// Event type of the test event.
        event_type: EventType,
        /// Answered with the test event's id, once durable.
        reply: Reply<Result<EventId, Failure>>,
    },
    /// Send a caller-chosen event to one webhook as a test.
    SendTestEventWith {
        /// The tenant that owns what the request names; it also routes the request
        /// to the tenant's shard.
        tenant: TenantId,
        /// Webhook id.
        webhook: WebhookId,
        /// The event (id filled in by the caller).
        event: NewEvent,
        /// Answered with the event id and the one delivery created, once durable.
        reply: Reply<Result<TestSent, Failure>>,
    },
    /// Apply the egress guard to a URL as a delivery would (lookup included), without
    /// connecting. Any shard can answer; route by host to share its resolver cache.
    CheckUrl {
        /// The destination.
        url: herald_http::Url,
        /// Answered once the check is done (within [`crate::CHECK_URL_TIMEOUT_MS`]).
        reply: Reply<Result<(), crate::UrlRefusal>>,
    },
    /// Counters.
    Stats {
        /// Answered at once.
        reply: Reply<ShardStats>,
    },
}
