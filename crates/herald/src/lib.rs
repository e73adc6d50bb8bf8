//! Herald: an embeddable, high-throughput outbound webhook dispatch engine.
//!
//! Platform services publish events (`order.created`, `payment.processed`, …) for a
//! tenant; Herald fans each event out to that tenant's subscribed HTTP endpoints, signs
//! every request, retries failures on a durable schedule and keeps a delivery log.
//!
//! * **Durable before acknowledged**: [`Herald::publish`] returns once the event is in
//!   its shard's journal and the journal is synced (many publishes share one sync).
//!   After a crash every acknowledged event is delivered at least once.
//! * **Thread per core**: each shard is a thread with its own journal, dispatcher and
//!   connection pools; a tenant lives on shard [`shard_of`]`(tenant, shards)`.
//! * **Usable from anywhere**: [`Herald`] is `Clone + Send + Sync`; every operation has
//!   a blocking form (`publish`, `create_webhook`, …) and an async form (`publish_async`,
//!   `create_webhook_async`, …) returning a `Send + 'static` future that needs no
//!   particular runtime; every change (and the webhook read and URL check that precede
//!   one) also has a non-waiting form ([`Herald::try_publish`],
//!   `try_publish_detailed_async`, `try_publish_batch_detailed_async`,
//!   `try_create_webhook_async`, `try_update_webhook_async`, …), and batches of one
//!   tenant's events go in one hand-off ([`Herald::publish_batch`]). No runtime types
//!   leak into the API.
//! * **Bounded**: each shard has a bounded intake queue ([`Builder::intake_capacity`]).
//!   `try_*` calls fail at once with [`Error::Backpressure`] when it is full and give the
//!   item back (a server answers "retry later" instead of holding the request); the
//!   other forms wait for room. A slow disk shows up the same way
//!   ([`Builder::awaiting_durable_max`]). A shard holding the most pending deliveries
//!   allowed ([`DispatcherConfig::pending_deliveries_max`]) refuses new events in every
//!   form with [`Error::Backpressure`], giving each event back ([`Error::into_event`]);
//!   a tenant holding the most allowed to one tenant
//!   ([`DispatcherConfig::pending_deliveries_per_tenant_max`], half the shard's by
//!   default) has its new events refused with [`Error::TenantFull`] likewise, while the
//!   shard's other tenants go on.
//! * **Errors say whose fault** ([`Error::fault`]): the caller's (invalid input, unknown
//!   webhook), capacity, shutdown, storage, the host's (environment), or a bug; a failed
//!   hand-off gives the item back ([`Unsent`]). A storage error keeps the journal's error
//!   as its [`source`](std::error::Error::source), so a caller can walk the chain down to
//!   the OS's error.
//! * **Stopping**: [`Herald::shutdown`] (or dropping the last handle) refuses new work,
//!   journals what was accepted, waits a grace period for requests in flight (anything
//!   unfinished is retried after the next start) and joins the shard threads.
//! * **Memory given back**: an allocator that caches freed pages per thread keeps what a
//!   shard frees in bursts (a checkpoint's copies, replay's buffers). Register how to
//!   give it back once per process with [`set_memory_release`] (the `herald` binary
//!   registers mimalloc's `mi_collect`); shards call it on their own threads at those
//!   moments only.
//!
//! # Example
//!
//! ```
//! use herald::{Event, EventFilter, Herald, Scheme, TenantId, Url, WebhookSpec};
//!
//! let dir = tempfile::tempdir()?;
//! let herald = Herald::builder().data_dir(dir.path()).shards(1).start()?;
//!
//! let tenant = TenantId::parse("acme")?;
//! let spec = WebhookSpec::new(
//!     Url::parse("https://hooks.example.invalid/orders")?,
//!     vec![EventFilter::parse("order.*")?],
//!     Scheme::Standard,
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
//! );
//! let webhook = herald.create_webhook(&tenant, spec)?;
//! assert_eq!(herald.list_webhooks(&tenant)?.len(), 1);
//!
//! // Returns once the event is durable; delivery happens in the background.
//! let event = Event::parse("order.created", &serde_json::json!({"order": 42}))?;
//! let event_id = herald.publish(&tenant, event)?;
//! println!("published {event_id} for webhook {webhook}");
//!
//! herald.shutdown()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod builder;
mod error;
mod event;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use herald_rt::shard::{
    reply_channel, Engine, Failure, Reply, ReplyReceiver, Request, SendError, ShardExit, TestSent,
    WebhookWrite,
};

pub use builder::{Builder, INTAKE_CAPACITY_DEFAULT, IO_MEMORY_BYTES_DEFAULT};
pub use error::{Error, Fault, StartError, Unsent};
pub use event::Event;
pub use stream::{
    StreamEnd, StreamEvent, StreamFilter, SubscribeError, Subscription, STREAM_QUEUE_MAX_LIMIT,
    STREAM_WINDOW_BYTES_MAX_DEFAULT, STREAM_WINDOW_EVENTS_MAX_DEFAULT, STREAM_WINDOW_MS_DEFAULT,
};

pub use herald_core::{
    AttemptSummary, Breaker, DeliveryError, DeliveryId, DeliveryQuery, DeliveryRecord,
    DeliveryStatus, DisableReason, DispatcherConfig, EndpointLimits, EventFilter, EventId,
    EventType, Health, HealthPolicy, IdError, LocationId, Page, RateLimit, RetrySchedule,
    SecretSpec, TenantId, WebhookId, WebhookSpec, WebhookStatus, API_VERSION_DEFAULT,
    ATTEMPT_HISTORY_MAX, DESCRIPTION_BYTES_MAX, IDEMPOTENCY_KEY_BYTES_MAX,
    LOG_FINISHED_MAX_DEFAULT, PENDING_DELIVERIES_MAX_DEFAULT,
    PENDING_DELIVERIES_PER_TENANT_MAX_DEFAULT, PURGE_DELIVERIES_PER_STEP, PURGE_KEYS_PER_STEP,
    RESEND_MAX,
};
pub use herald_core::{
    Counters, Histogram, Stats as DispatcherStats, ATTEMPT_LATENCY_BOUNDS_MS, HISTOGRAM_BUCKETS,
};
pub use herald_http::Url;
pub use herald_rt::shard::{
    set_memory_release, shard_of, Pinning, Published, ShardStats, WebhookInfo as Webhook,
    CHECKPOINT_RECORDS_DEFAULT, JOURNAL_SYNC_BOUNDS_US, PUBLISH_BATCH_MAX, SHARDS_MAX,
};
pub use herald_rt::{crypto_provider, CHECK_URL_TIMEOUT_MS};
pub use herald_sign::{HeaderLookup, Scheme, Verifier, VerifyError};

/// A handle to a running engine. Cheap to clone; share it between threads and async
/// tasks. The engine stops when [`Herald::shutdown`] is called or the last handle is
/// dropped (pending [`PublishReceipt`]s and publish futures count as handles).
#[derive(Clone)]
pub struct Herald {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// [`Builder::require_https`]: webhooks and URL checks refuse `http://` urls.
    require_https: bool,
}

impl std::fmt::Debug for Herald {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Herald")
            .field("shards", &self.inner.engine.shards())
            .field("shutting_down", &self.inner.engine.is_shutting_down())
            .finish()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A publish that was handed to its shard and is waiting to become durable. Wait for
/// it with [`PublishReceipt::wait`] or `.await` it.
#[must_use = "the event is only known to be durable once the receipt resolves"]
pub struct PublishReceipt {
    shard: usize,
    tenant: TenantId,
    event_id: EventId,
    engine: Arc<Inner>,
    receiver: PublishAnswer,
}

/// Where a shard's answer to a publish comes.
type PublishAnswer = ReplyReceiver<Result<Published, Failure>>;

impl std::fmt::Debug for PublishReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishReceipt")
            .field("shard", &self.shard)
            .field("event_id", &self.event_id)
            .finish()
    }
}

impl PublishReceipt {
    /// The event's id (known before it is durable).
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// Blocks until the event is durable (or refused). For a duplicate (an idempotency
    /// key already used for the same event), the first event's id.
    pub fn wait(self) -> Result<EventId, Error> {
        let result = self.receiver.wait();
        self.engine
            .answer(self.shard, Some(&self.tenant), result)
            .map(|published| published.event_id)
    }
}

impl Future for PublishReceipt {
    type Output = Result<EventId, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(
            self.engine
                .answer(self.shard, Some(&self.tenant), result)
                .map(|published| published.event_id),
        )
    }
}

impl Inner {
    /// Turns a shard's answer (or its silence) into the caller's result.
    fn answer<T>(
        &self,
        shard: usize,
        tenant: Option<&TenantId>,
        result: Result<Result<T, Failure>, herald_rt::shard::Canceled>,
    ) -> Result<T, Error> {
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(failure)) => Err(failure_to_error(shard, tenant, failure)),
            Err(_) => Err(self.stopped(shard, Unsent::Request)),
        }
    }

    /// The error for a shard that no longer answers.
    fn stopped(&self, shard: usize, unsent: Unsent) -> Error {
        match self.engine.shard_failure(shard) {
            Some(ShardExit::Storage(error)) => Error::storage(shard, error),
            Some(ShardExit::Runtime(message)) => Error::Environment { shard, message },
            Some(ShardExit::Bug(message)) => Error::Bug { message },
            Some(ShardExit::Clean) | None => Error::ShuttingDown { unsent },
        }
    }

    /// The error for a request the shard did not take.
    fn not_taken(&self, shard: usize, error: SendError<Request>) -> Error {
        let (full, request) = match error {
            SendError::Full(request) => (true, request),
            SendError::Closed(request) => (false, request),
        };
        let unsent = match request {
            Request::Publish { tenant, event, .. } => Unsent::Event {
                tenant,
                event: Box::new(Event::from_new_event(event)),
            },
            Request::PublishBatch { tenant, events, .. } => Unsent::Events {
                tenant,
                events: events.into_iter().map(Event::from_new_event).collect(),
            },
            Request::SendTestEventWith { tenant, event, .. } => Unsent::Event {
                tenant,
                event: Box::new(Event::from_new_event(event)),
            },
            Request::UpsertWebhook { tenant, spec, .. } => Unsent::Webhook { tenant, spec },
            _ => Unsent::Request,
        };
        if full {
            Error::Backpressure { shard, unsent }
        } else {
            self.stopped(shard, unsent)
        }
    }

    /// Hands `request` to `shard`, blocking while its queue is full, and waits for the
    /// answer.
    fn call<T>(&self, prepared: Prepared<Result<T, Failure>>) -> Result<T, Error> {
        let Prepared {
            shard,
            tenant,
            request,
            receiver,
        } = prepared;
        self.engine
            .submit_blocking(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        self.answer(shard, tenant.as_ref(), receiver.wait())
    }

    /// [`call`](Self::call) without blocking: waits for queue room and the answer as a
    /// `Send` future that needs no particular runtime.
    async fn call_async<T: Send + 'static>(
        self: Arc<Self>,
        prepared: Prepared<Result<T, Failure>>,
    ) -> Result<T, Error> {
        let Prepared {
            shard,
            tenant,
            request,
            receiver,
        } = prepared;
        self.engine
            .submit_async(shard, request)
            .await
            .map_err(|error| self.not_taken(shard, error))?;
        let result = receiver.await;
        self.answer(shard, tenant.as_ref(), result)
    }

    /// Hands `prepared` to its shard without waiting for queue room: a full queue is
    /// [`Error::Backpressure`] at once (giving the item back); otherwise the returned
    /// `Send` future resolves with the shard's answer.
    fn try_call_async<T: Send + 'static>(
        self: &Arc<Self>,
        prepared: Prepared<Result<T, Failure>>,
    ) -> Result<impl Future<Output = Result<T, Error>> + Send + 'static, Error> {
        let (shard, tenant, receiver) = self.try_hand_off(prepared)?;
        let inner = self.clone();
        Ok(async move { inner.answer(shard, tenant.as_ref(), receiver.await) })
    }

    /// [`try_call_async`](Self::try_call_async) for queries and batches.
    fn try_query_async<T: Send + 'static>(
        self: &Arc<Self>,
        prepared: Prepared<T>,
    ) -> Result<impl Future<Output = Result<T, Error>> + Send + 'static, Error> {
        let (shard, _, receiver) = self.try_hand_off(prepared)?;
        let inner = self.clone();
        Ok(async move {
            receiver
                .await
                .map_err(|_| inner.stopped(shard, Unsent::Request))
        })
    }

    /// Puts `prepared`'s request in its shard's queue if there is room: its shard,
    /// tenant, and where the answer will come.
    fn try_hand_off<T>(
        &self,
        prepared: Prepared<T>,
    ) -> Result<(usize, Option<TenantId>, ReplyReceiver<T>), Error> {
        let Prepared {
            shard,
            tenant,
            request,
            receiver,
        } = prepared;
        self.engine
            .try_submit(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        Ok((shard, tenant, receiver))
    }

    /// Like [`call`](Self::call) for queries and batches, whose answers have no error
    /// form of their own.
    fn query<T>(&self, prepared: Prepared<T>) -> Result<T, Error> {
        let Prepared {
            shard,
            request,
            receiver,
            ..
        } = prepared;
        self.engine
            .submit_blocking(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        receiver
            .wait()
            .map_err(|_| self.stopped(shard, Unsent::Request))
    }

    /// [`query`](Self::query) as a `Send` future.
    async fn query_async<T: Send + 'static>(
        self: Arc<Self>,
        prepared: Prepared<T>,
    ) -> Result<T, Error> {
        let Prepared {
            shard,
            request,
            receiver,
            ..
        } = prepared;
        self.engine
            .submit_async(shard, request)
            .await
            .map_err(|error| self.not_taken(shard, error))?;
        receiver
            .await
            .map_err(|_| self.stopped(shard, Unsent::Request))
    }
}

/// A request ready to hand to its shard, with where its answer arrives.
struct Prepared<T> {
    shard: usize,
    /// The tenant the request concerns (none for URL checks and stats).
    tenant: Option<TenantId>,
    request: Request,
    receiver: ReplyReceiver<T>,
}

/// Builds a request around a fresh reply channel.
fn prepare<T>(
    shard: usize,
    tenant: &TenantId,
    make: impl FnOnce(Reply<T>) -> Request,
) -> Prepared<T> {
    let (reply, receiver) = reply_channel();
    Prepared {
        shard,
        tenant: Some(tenant.clone()),
        request: make(reply),
        receiver,
    }
}

/// Where a shard answers a batch: one result per event.
type BatchAnswer = Vec<Result<Published, Failure>>;

fn batch_results(
    shard: usize,
    tenant: &TenantId,
    results: BatchAnswer,
) -> Vec<Result<Published, Error>> {
    results
        .into_iter()
        .map(|result| result.map_err(|failure| failure_to_error(shard, Some(tenant), failure)))
        .collect()
}

fn batch_ids(results: Vec<Result<Published, Error>>) -> Vec<Result<EventId, Error>> {
    results
        .into_iter()
        .map(|result| result.map(|published| published.event_id))
        .collect()
}

fn failure_message(failure: &Failure) -> String {
    match failure {
        Failure::Registry(error) => error.to_string(),
        Failure::Accept(error) => error.to_string(),
        Failure::Op(error) => error.to_string(),
        Failure::Storage(error) => error.to_string(),
        Failure::ShuttingDown => "the shard is stopping".to_string(),
    }
}

fn failure_to_error(shard: usize, tenant: Option<&TenantId>, failure: Failure) -> Error {
    use herald_core::{AcceptError, OpError, RegistryError};
    match failure {
        Failure::Registry(RegistryError::NotFound { tenant, webhook })
        | Failure::Op(OpError::WebhookNotFound { tenant, webhook }) => {
            Error::UnknownWebhook { tenant, webhook }
        }
        Failure::Registry(RegistryError::Spec(error)) => {
            let field = error::spec_field(&error);
            Error::invalid_because(Some(field), error)
        }
        // A limit reached is the state's doing, not the request's: the same call succeeds
        // once a webhook is deleted.
        Failure::Registry(error @ RegistryError::TooManyWebhooks { .. }) => Error::Conflict {
            message: error.to_string(),
        },
        // The shard's pending deliveries are at their limit: the caller's event comes back.
        Failure::Accept(AcceptError::Full { event, .. })
        | Failure::Op(OpError::Accept(AcceptError::Full { event, .. })) => Error::Backpressure {
            shard,
            unsent: match tenant {
                Some(tenant) => Unsent::Event {
                    tenant: tenant.clone(),
                    event: Box::new(Event::from_new_event(*event)),
                },
                None => Unsent::Request,
            },
        },
        Failure::Op(OpError::Full(_)) => Error::Backpressure {
            shard,
            unsent: Unsent::Request,
        },
        Failure::Accept(AcceptError::TenantFull { full, event })
        | Failure::Op(OpError::Accept(AcceptError::TenantFull { full, event })) => {
            tenant_full(tenant, full, Some(*event))
        }
        Failure::Op(OpError::TenantFull(full)) => tenant_full(tenant, full, None),
        Failure::Accept(AcceptError::Envelope(error))
        | Failure::Op(OpError::Accept(AcceptError::Envelope(error))) => {
            let field = error::envelope_field(&error);
            Error::invalid_because(Some(field), error)
        }
        Failure::Op(OpError::DeliveryNotFound(delivery)) => match tenant {
            Some(tenant) => Error::UnknownDelivery {
                tenant: tenant.clone(),
                delivery,
            },
            None => Error::Bug {
                message: format!("delivery {delivery} not found by a request without a tenant"),
            },
        },
        Failure::Accept(AcceptError::IdempotencyConflict { .. })
        | Failure::Op(OpError::Accept(AcceptError::IdempotencyConflict { .. })) => {
            Error::Conflict {
                message: failure_message(&failure),
            }
        }
        Failure::Accept(error @ AcceptError::TooLarge { .. })
        | Failure::Op(OpError::Accept(error @ AcceptError::TooLarge { .. })) => {
            Error::invalid_because(Some("data"), error)
        }
        Failure::Accept(error @ AcceptError::IdempotencyKey { .. })
        | Failure::Op(OpError::Accept(error @ AcceptError::IdempotencyKey { .. })) => {
            Error::invalid_because(Some("idempotency_key"), error)
        }
        Failure::Op(OpError::EventType(error)) => Error::invalid_because(Some("event_type"), error),
        Failure::Op(
            error @ (OpError::WebhookDisabled(_)
            | OpError::InProgress(_)
            | OpError::AlreadySucceeded(_)
            | OpError::TenantHasWebhooks { .. }
            | OpError::TenantBusy { .. }),
        ) => Error::Conflict {
            message: error.to_string(),
        },
        Failure::Storage(error) => Error::storage(shard, error),
        Failure::ShuttingDown => Error::ShuttingDown {
            unsent: Unsent::Request,
        },
    }
}

/// [`Error::TenantFull`] for `tenant`'s refused work, giving `event` back when there
/// is one.
fn tenant_full(
    tenant: Option<&TenantId>,
    full: herald_core::TenantFull,
    event: Option<herald_core::NewEvent>,
) -> Error {
    let Some(tenant) = tenant else {
        return Error::Bug {
            message: format!("a tenant's limit refused a request without a tenant: {full}"),
        };
    };
    Error::TenantFull {
        tenant: tenant.clone(),
        pending: full.pending,
        max: full.max,
        unsent: match event {
            Some(event) => Unsent::Event {
                tenant: tenant.clone(),
                event: Box::new(Event::from_new_event(event)),
            },
            None => Unsent::Request,
        },
    }
}

/// A test event that was sent ([`Herald::send_test_event_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSend {
    /// The event's id (the one given, or a generated `evt_<uuid>`).
    pub event_id: EventId,
    /// The one delivery created for the webhook; follow it with [`Herald::delivery`].
    pub delivery: DeliveryId,
}

impl TestSend {
    fn from_sent(sent: TestSent) -> TestSend {
        TestSend {
            event_id: sent.event_id,
            delivery: sent.delivery,
        }
    }
}

impl Herald {
    /// Starts configuring an engine.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_engine(engine: Engine, require_https: bool) -> Herald {
        Herald {
            inner: Arc::new(Inner {
                engine,
                require_https,
            }),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.engine.shards()
    }

    /// Whether the shard threads are pinned to CPUs ([`Builder::pinning`]).
    pub fn pinned(&self) -> bool {
        self.inner.engine.pinned()
    }

    /// The shard that owns `tenant`.
    pub fn shard_of(&self, tenant: &TenantId) -> usize {
        shard_of(tenant.as_str(), self.shards())
    }

    // ------------------------------------------------------------------ webhooks

    /// Creates a webhook with a generated id (`wh_<uuid>`), durable when this returns.
    pub fn create_webhook(&self, tenant: &TenantId, spec: WebhookSpec) -> Result<WebhookId, Error> {
        let id = event::generate_webhook_id();
        self.put_webhook(tenant, &id, spec)?;
        Ok(id)
    }

    /// [`create_webhook`](Self::create_webhook) as a `Send` future.
    pub fn create_webhook_async(
        &self,
        tenant: &TenantId,
        spec: WebhookSpec,
    ) -> impl Future<Output = Result<WebhookId, Error>> + Send + 'static {
        let id = event::generate_webhook_id();
        let put = self.put_webhook_async(tenant, &id, spec);
        async move {
            put.await?;
            Ok(id)
        }
    }

    /// Creates webhook `id`, or replaces its whole configuration if it exists. Durable
    /// when this returns. With [`Builder::require_https`], an `http://` url is refused
    /// ([`Error::Invalid`] naming `url`).
    pub fn put_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<(), Error> {
        self.inner
            .call(self.upsert_request(tenant, id, spec, WebhookWrite::Put)?)
    }

    /// [`put_webhook`](Self::put_webhook) as a `Send` future.
    pub fn put_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let prepared = self.upsert_request(tenant, id, spec, WebhookWrite::Put);
        let inner = self.inner.clone();
        async move { inner.call_async(prepared?).await }
    }

    /// Replaces the configuration of an existing webhook ([`Error::UnknownWebhook`] if
    /// there is none). Its pending deliveries and health are kept; setting
    /// [`WebhookStatus::Disabled`] ends its pending deliveries as failed (a large backlog
    /// over the shard's next turns, a bounded number per turn, counted as pending until
    /// then; see [`DispatcherConfig::endings_per_tick_max`]).
    pub fn update_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<(), Error> {
        self.inner
            .call(self.upsert_request(tenant, id, spec, WebhookWrite::Update)?)
    }

    /// [`update_webhook`](Self::update_webhook) as a `Send` future.
    pub fn update_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let prepared = self.upsert_request(tenant, id, spec, WebhookWrite::Update);
        let inner = self.inner.clone();
        async move { inner.call_async(prepared?).await }
    }

    /// [`update_webhook`](Self::update_webhook), except that the webhook keeps the
    /// status it has when the change is applied (`spec`'s is ignored). For a change made
    /// to a configuration read earlier ([`webhook`](Self::webhook)): the engine may have
    /// disabled the webhook since (a `410`, failing too long), and writing back the
    /// status that was read would enable it again.
    pub fn update_webhook_settings(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<(), Error> {
        self.inner
            .call(self.upsert_request(tenant, id, spec, WebhookWrite::Settings)?)
    }

    fn upsert_request(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
        write: WebhookWrite,
    ) -> Result<Prepared<Result<(), Failure>>, Error> {
        if self.inner.require_https && !spec.url.is_tls() {
            return Err(Error::invalid_field("url", error::PLAIN_HTTP_REFUSED));
        }
        Ok(prepare(self.shard_of(tenant), tenant, |reply| {
            Request::UpsertWebhook {
                tenant: tenant.clone(),
                id: id.clone(),
                spec: Box::new(spec),
                write,
                reply,
            }
        }))
    }

    fn delete_request(&self, tenant: &TenantId, id: &WebhookId) -> Prepared<Result<(), Failure>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::DeleteWebhook {
                tenant: tenant.clone(),
                id: id.clone(),
                reply,
            }
        })
    }

    /// Deletes a webhook; its pending deliveries end as failed (a large backlog over the
    /// shard's next turns, a bounded number per turn, counted as pending until then; see
    /// [`DispatcherConfig::endings_per_tick_max`]). Durable when this
    /// returns.
    pub fn delete_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<(), Error> {
        self.inner.call(self.delete_request(tenant, id))
    }

    /// [`delete_webhook`](Self::delete_webhook) as a `Send` future.
    pub fn delete_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.inner
            .clone()
            .call_async(self.delete_request(tenant, id))
    }

    /// [`create_webhook_async`](Self::create_webhook_async) without waiting for queue room:
    /// fails at once with [`Error::Backpressure`] (giving the item back) when the shard's
    /// queue is full.
    /// The future resolves once the webhook is durable.
    pub fn try_create_webhook_async(
        &self,
        tenant: &TenantId,
        spec: WebhookSpec,
    ) -> Result<impl Future<Output = Result<WebhookId, Error>> + Send + 'static, Error> {
        let id = event::generate_webhook_id();
        let put = self.try_put_webhook_async(tenant, &id, spec)?;
        Ok(async move {
            put.await?;
            Ok(id)
        })
    }

    /// [`put_webhook_async`](Self::put_webhook_async) without waiting for queue room: fails
    /// at once with [`Error::Backpressure`] (giving the item back) when the shard's queue
    /// is full.
    pub fn try_put_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        self.inner
            .try_call_async(self.upsert_request(tenant, id, spec, WebhookWrite::Put)?)
    }

    /// [`update_webhook_async`](Self::update_webhook_async) without waiting for queue room:
    /// fails at once with [`Error::Backpressure`] (giving the item back) when the shard's
    /// queue is full.
    pub fn try_update_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        self.inner
            .try_call_async(self.upsert_request(tenant, id, spec, WebhookWrite::Update)?)
    }

    /// [`update_webhook_settings`](Self::update_webhook_settings) as a `Send` future
    /// that fails at once with [`Error::Backpressure`] (giving the item back) when the
    /// shard's queue is full.
    pub fn try_update_webhook_settings_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        self.inner
            .try_call_async(self.upsert_request(tenant, id, spec, WebhookWrite::Settings)?)
    }

    /// [`delete_webhook_async`](Self::delete_webhook_async) without waiting for queue room:
    /// fails at once with [`Error::Backpressure`] (giving the item back) when the shard's
    /// queue is full.
    pub fn try_delete_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        self.inner.try_call_async(self.delete_request(tenant, id))
    }

    fn webhook_request(&self, tenant: &TenantId, id: &WebhookId) -> Prepared<Option<Webhook>> {
        prepare(self.shard_of(tenant), tenant, |reply| Request::GetWebhook {
            tenant: tenant.clone(),
            id: id.clone(),
            reply,
        })
    }

    /// One webhook, or `None`.
    pub fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<Option<Webhook>, Error> {
        self.inner.query(self.webhook_request(tenant, id))
    }

    /// [`webhook`](Self::webhook) as a `Send` future.
    pub fn webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> impl Future<Output = Result<Option<Webhook>, Error>> + Send + 'static {
        self.inner
            .clone()
            .query_async(self.webhook_request(tenant, id))
    }

    /// [`webhook_async`](Self::webhook_async) without waiting for queue room: fails at once
    /// with [`Error::Backpressure`] (giving the item back) when the shard's queue is full:
    /// for a caller that reads a
    /// webhook before changing it and must not wait on a full queue for either.
    pub fn try_webhook_async(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> Result<impl Future<Output = Result<Option<Webhook>, Error>> + Send + 'static, Error> {
        self.inner.try_query_async(self.webhook_request(tenant, id))
    }

    /// All of a tenant's webhooks, in id order (at most the per-tenant limit, 10,000
    /// by default).
    pub fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<Webhook>, Error> {
        self.list_webhooks_page(tenant, None, usize::MAX)
    }

    /// [`list_webhooks`](Self::list_webhooks) as a `Send` future.
    pub fn list_webhooks_async(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<Webhook>, Error>> + Send + 'static {
        self.list_webhooks_page_async(tenant, None, usize::MAX)
    }

    fn list_request(
        &self,
        tenant: &TenantId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Prepared<Vec<Webhook>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::ListWebhooks {
                tenant: tenant.clone(),
                after: after.cloned(),
                limit,
                reply,
            }
        })
    }

    /// A page of a tenant's webhooks in id order: at most `limit` after `after`.
    pub fn list_webhooks_page(
        &self,
        tenant: &TenantId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Result<Vec<Webhook>, Error> {
        self.inner.query(self.list_request(tenant, after, limit))
    }

    /// [`list_webhooks_page`](Self::list_webhooks_page) as a `Send` future.
    pub fn list_webhooks_page_async(
        &self,
        tenant: &TenantId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Webhook>, Error>> + Send + 'static {
        self.inner
            .clone()
            .query_async(self.list_request(tenant, after, limit))
    }

    /// Applies the engine's egress guard to `url` exactly as a delivery would, without
    /// sending anything: with [`Builder::require_https`] an `http://` url is refused; an
    /// IP literal is judged as is; a name is resolved (off the caller's thread, within
    /// [`CHECK_URL_TIMEOUT_MS`]) and refused when none of its addresses is permitted.
    /// Loopback, private, link-local, CGNAT, multicast, metadata and other special
    /// ranges are refused unless a [`Builder::allow_cidr`] entry permits them.
    ///
    /// A refusal is [`Error::Invalid`] with `field: Some("url")` and a message naming the
    /// address and its range. Blocks the calling thread for the lookup.
    pub fn check_url(&self, url: &Url) -> Result<(), Error> {
        let prepared = self.check_url_request(url)?;
        let answer = self.inner.query(prepared)?;
        answer.map_err(error::url_refused)
    }

    /// [`check_url`](Self::check_url) as a `Send` future.
    pub fn check_url_async(
        &self,
        url: &Url,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let prepared = self.check_url_request(url);
        let inner = self.inner.clone();
        async move {
            let answer = inner.query_async(prepared?).await?;
            answer.map_err(error::url_refused)
        }
    }

    /// [`check_url_async`](Self::check_url_async) without waiting for queue room: fails at
    /// once with [`Error::Backpressure`] (giving the item back) when the shard's queue is
    /// full (the url's host picks the
    /// shard that checks it).
    pub fn try_check_url_async(
        &self,
        url: &Url,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        let answer = self.inner.try_query_async(self.check_url_request(url)?)?;
        Ok(async move { answer.await?.map_err(error::url_refused) })
    }

    fn check_url_request(
        &self,
        url: &Url,
    ) -> Result<Prepared<Result<(), herald_rt::UrlRefusal>>, Error> {
        if self.inner.require_https && !url.is_tls() {
            return Err(Error::invalid_field("url", error::PLAIN_HTTP_REFUSED));
        }
        // Any shard can check; routing by host keeps one name's lookups (and cache) on
        // one shard.
        let shard = shard_of(&url.host, self.shards());
        let (reply, receiver) = reply_channel();
        Ok(Prepared {
            shard,
            tenant: None,
            request: Request::CheckUrl {
                url: url.clone(),
                reply,
            },
            receiver,
        })
    }

    // ------------------------------------------------------------------ publishing

    fn publish_request(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> (EventId, Prepared<Result<Published, Failure>>) {
        let event = event.into_new_event(now_ms());
        let event_id = event.id.clone();
        let prepared = prepare(self.shard_of(tenant), tenant, |reply| Request::Publish {
            tenant: tenant.clone(),
            event,
            reply,
        });
        (event_id, prepared)
    }

    /// Publishes an event for `tenant`, blocking while the shard's queue is full, and
    /// returns its id once the event is durable. Delivery to every matching webhook
    /// happens in the background. With an [idempotency key](Event::idempotency_key)
    /// already used for the same event, returns the first event's id and sends nothing
    /// ([`publish_detailed`](Self::publish_detailed) tells the two apart).
    pub fn publish(&self, tenant: &TenantId, event: Event) -> Result<EventId, Error> {
        self.publish_detailed(tenant, event)
            .map(|published| published.event_id)
    }

    /// [`publish`](Self::publish) as a `Send` future: waits for queue room and for
    /// durability without blocking the caller's executor (works on any runtime).
    pub fn publish_async(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> impl Future<Output = Result<EventId, Error>> + Send + 'static {
        let publish = self.publish_detailed_async(tenant, event);
        async move { publish.await.map(|published| published.event_id) }
    }

    /// [`publish`](Self::publish), reporting the event's id and creation time and
    /// whether it was a duplicate of an earlier publish with the same idempotency key
    /// (then both are the first event's, and nothing new was recorded or sent). A key
    /// already used for a different event is [`Error::Conflict`].
    pub fn publish_detailed(&self, tenant: &TenantId, event: Event) -> Result<Published, Error> {
        let (_, prepared) = self.publish_request(tenant, event);
        self.inner.call(prepared)
    }

    /// [`publish_detailed`](Self::publish_detailed) as a `Send` future.
    pub fn publish_detailed_async(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> impl Future<Output = Result<Published, Error>> + Send + 'static {
        let (_, prepared) = self.publish_request(tenant, event);
        self.inner.clone().call_async(prepared)
    }

    /// Hands an event to its shard without waiting for queue room: fails at once with
    /// [`Error::Backpressure`] (giving the event back, with its id filled in) when the
    /// queue is full. On success, the returned receipt resolves once the event is
    /// durable.
    pub fn try_publish(&self, tenant: &TenantId, event: Event) -> Result<PublishReceipt, Error> {
        let (event_id, prepared) = self.publish_request(tenant, event);
        let (shard, prepared_tenant, receiver) = self.inner.try_hand_off(prepared)?;
        Ok(PublishReceipt {
            shard,
            // The request's own copy: another clone would be one more count taken and
            // given back on a line other threads write.
            tenant: prepared_tenant.unwrap_or_else(|| tenant.clone()),
            event_id,
            engine: self.inner.clone(),
            receiver,
        })
    }

    /// [`publish_detailed_async`](Self::publish_detailed_async) without waiting for queue
    /// room: fails at once with [`Error::Backpressure`] when the shard's queue is full, so
    /// that a server under a flood answers "retry later" instead of holding every caller
    /// (and its request) until room frees. The future resolves once the event is durable.
    pub fn try_publish_detailed_async(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> Result<impl Future<Output = Result<Published, Error>> + Send + 'static, Error> {
        let (_, prepared) = self.publish_request(tenant, event);
        self.inner.try_call_async(prepared)
    }

    fn batch_request(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> Result<Prepared<BatchAnswer>, Error> {
        if events.len() > PUBLISH_BATCH_MAX {
            return Err(Error::invalid(format!(
                "a batch holds at most {PUBLISH_BATCH_MAX} events, got {}",
                events.len()
            )));
        }
        let now = now_ms();
        let events = events.into_iter().map(|e| e.into_new_event(now)).collect();
        Ok(prepare(self.shard_of(tenant), tenant, |reply| {
            Request::PublishBatch {
                tenant: tenant.clone(),
                events,
                reply,
            }
        }))
    }

    /// Publishes up to [`PUBLISH_BATCH_MAX`] events of one tenant in one hand-off
    /// (cheaper than one call each), blocking while the shard's queue is full. Returns
    /// once every accepted event is durable, with one result per event in order: an
    /// invalid event fails alone. The outer error is for the batch as a whole (too many
    /// events, or the engine stopping — then the events are given back).
    pub fn publish_batch(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> Result<Vec<Result<EventId, Error>>, Error> {
        self.publish_batch_detailed(tenant, events).map(batch_ids)
    }

    /// [`publish_batch`](Self::publish_batch) as a `Send` future.
    pub fn publish_batch_async(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Result<EventId, Error>>, Error>> + Send + 'static {
        let publish = self.publish_batch_detailed_async(tenant, events);
        async move { publish.await.map(batch_ids) }
    }

    /// [`publish_batch`](Self::publish_batch) with each event's
    /// [`Published`] report (see [`publish_detailed`](Self::publish_detailed)). Two
    /// events of one batch with the same key and content: the second is the duplicate.
    pub fn publish_batch_detailed(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> Result<Vec<Result<Published, Error>>, Error> {
        let prepared = self.batch_request(tenant, events)?;
        let shard = prepared.shard;
        let results = self.inner.query(prepared)?;
        Ok(batch_results(shard, tenant, results))
    }

    /// [`publish_batch_detailed`](Self::publish_batch_detailed) as a `Send` future.
    pub fn publish_batch_detailed_async(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Result<Published, Error>>, Error>> + Send + 'static {
        let prepared = self.batch_request(tenant, events);
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        async move {
            let prepared = prepared?;
            let shard = prepared.shard;
            let results = inner.query_async(prepared).await?;
            Ok(batch_results(shard, &tenant, results))
        }
    }

    /// [`publish_batch_detailed_async`](Self::publish_batch_detailed_async) without waiting
    /// for queue room: fails at once with [`Error::Backpressure`] (giving the item back)
    /// when the shard's queue is full
    /// (then the whole batch is given back: a batch is taken or refused as a unit). The
    /// future resolves once every accepted event is durable.
    pub fn try_publish_batch_detailed_async(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> Result<
        impl Future<Output = Result<Vec<Result<Published, Error>>, Error>> + Send + 'static,
        Error,
    > {
        let prepared = self.batch_request(tenant, events)?;
        let shard = prepared.shard;
        let results = self.inner.try_query_async(prepared)?;
        let tenant = tenant.clone();
        Ok(async move { Ok(batch_results(shard, &tenant, results.await?)) })
    }

    // ------------------------------------------------------------------ deliveries

    fn deliveries_request(&self, query: DeliveryQuery) -> Prepared<Page<DeliveryRecord>> {
        let tenant = query.tenant.clone();
        prepare(self.shard_of(&tenant), &tenant, |reply| {
            Request::Deliveries { query, reply }
        })
    }

    /// A page of the delivery log of `query.tenant`, in delivery id order.
    pub fn deliveries(&self, query: DeliveryQuery) -> Result<Page<DeliveryRecord>, Error> {
        self.inner.query(self.deliveries_request(query))
    }

    /// [`deliveries`](Self::deliveries) as a `Send` future.
    pub fn deliveries_async(
        &self,
        query: DeliveryQuery,
    ) -> impl Future<Output = Result<Page<DeliveryRecord>, Error>> + Send + 'static {
        self.inner
            .clone()
            .query_async(self.deliveries_request(query))
    }

    fn delivery_request(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Prepared<Option<DeliveryRecord>> {
        prepare(self.shard_of(tenant), tenant, |reply| Request::Delivery {
            tenant: tenant.clone(),
            id,
            reply,
        })
    }

    /// One delivery, if it is pending or still in the log.
    pub fn delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRecord>, Error> {
        self.inner.query(self.delivery_request(tenant, id))
    }

    /// [`delivery`](Self::delivery) as a `Send` future.
    pub fn delivery_async(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> impl Future<Output = Result<Option<DeliveryRecord>, Error>> + Send + 'static {
        self.inner
            .clone()
            .query_async(self.delivery_request(tenant, id))
    }

    fn retry_request(&self, tenant: &TenantId, id: DeliveryId) -> Prepared<Result<(), Failure>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::RetryDelivery {
                tenant: tenant.clone(),
                id,
                reply,
            }
        })
    }

    /// Retries one delivery now (a pending one is moved up; a finished one gets one
    /// more attempt). Durable when this returns. A delivery in flight or already
    /// successful, or one of a disabled webhook, is [`Error::Conflict`].
    pub fn retry_delivery(&self, tenant: &TenantId, id: DeliveryId) -> Result<(), Error> {
        self.inner.call(self.retry_request(tenant, id))
    }

    /// [`retry_delivery`](Self::retry_delivery) as a `Send` future.
    pub fn retry_delivery_async(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.inner
            .clone()
            .call_async(self.retry_request(tenant, id))
    }

    /// [`retry_delivery_async`](Self::retry_delivery_async) without waiting for queue room:
    /// fails at once with [`Error::Backpressure`] (giving the item back) when the shard's
    /// queue is full.
    pub fn try_retry_delivery_async(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<impl Future<Output = Result<(), Error>> + Send + 'static, Error> {
        self.inner.try_call_async(self.retry_request(tenant, id))
    }

    fn resend_request(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
        after: Option<DeliveryId>,
        most: usize,
    ) -> Prepared<Result<herald_core::Resent, Failure>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::ResendFailed {
                tenant: tenant.clone(),
                webhook: webhook.clone(),
                since_ms,
                after,
                most,
                reply,
            }
        })
    }

    /// Re-sends the failed or exhausted deliveries of `webhook` whose event was
    /// accepted at or after `since_ms` (Unix ms) and that are still in the delivery
    /// log; returns how many were re-queued. One call re-queues at most [`RESEND_MAX`],
    /// and no more than the tenant's and the shard's pending room: when it returns that
    /// many, call again once they are delivered (the ones re-queued are pending, not
    /// failed, so the next call takes the rest). The shard looks through the tenant's
    /// log in bounded steps ([`herald_core::QUERY_SCAN_MAX`] deliveries each), one
    /// request each, serving other work between them.
    pub fn resend_failed(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> Result<usize, Error> {
        let (mut requeued, mut after) = (0, None);
        loop {
            let step = self.inner.call(self.resend_request(
                tenant,
                webhook,
                since_ms,
                after,
                RESEND_MAX - requeued,
            ))?;
            requeued += step.requeued;
            match step.next_after {
                Some(next) if requeued < RESEND_MAX => after = Some(next),
                _ => return Ok(requeued),
            }
        }
    }

    /// [`resend_failed`](Self::resend_failed) as a `Send` future.
    pub fn resend_failed_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> impl Future<Output = Result<usize, Error>> + Send + 'static {
        let first = self.resend_request(tenant, webhook, since_ms, None, RESEND_MAX);
        let step = self.inner.clone().call_async(first);
        self.resend_rest(step, tenant, webhook, since_ms)
    }

    /// [`resend_failed_async`](Self::resend_failed_async) without waiting for queue room:
    /// fails at once with [`Error::Backpressure`] (giving the item back) when the shard's
    /// queue is full for the first step (later steps, if the tenant's log needs them,
    /// wait for room).
    pub fn try_resend_failed_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> Result<impl Future<Output = Result<usize, Error>> + Send + 'static, Error> {
        let first = self.resend_request(tenant, webhook, since_ms, None, RESEND_MAX);
        let step = self.inner.try_call_async(first)?;
        Ok(self.resend_rest(step, tenant, webhook, since_ms))
    }

    /// The steps of a re-send after its first (`first`, handed over already).
    fn resend_rest(
        &self,
        first: impl Future<Output = Result<herald_core::Resent, Error>> + Send + 'static,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> impl Future<Output = Result<usize, Error>> + Send + 'static {
        let (engine, tenant, webhook) = (self.clone(), tenant.clone(), webhook.clone());
        async move {
            let mut step = first.await?;
            let mut requeued = 0;
            loop {
                requeued += step.requeued;
                let after = match step.next_after {
                    Some(next) if requeued < RESEND_MAX => next,
                    _ => return Ok(requeued),
                };
                let next = engine.resend_request(
                    &tenant,
                    &webhook,
                    since_ms,
                    Some(after),
                    RESEND_MAX - requeued,
                );
                step = engine.inner.clone().call_async(next).await?;
            }
        }
    }

    fn purge_request(
        &self,
        tenant: &TenantId,
    ) -> Prepared<Result<herald_core::TenantPurge, Failure>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::PurgeTenant {
                tenant: tenant.clone(),
                reply,
            }
        })
    }

    /// Purges what Herald retained of `tenant`: its finished deliveries in the log,
    /// its remembered idempotency keys and its events in the stream's replay window,
    /// journaled so that a restart drops them again; returns how many deliveries left
    /// the log. For a tenant being deleted, so that nothing of it is shown again, even
    /// to a tenant later made with the same id. The tenant's shard does it in bounded
    /// steps ([`PURGE_DELIVERIES_PER_STEP`] deliveries and [`PURGE_KEYS_PER_STEP`] keys
    /// each), one request each, serving other
    /// work between them; a failure part way leaves the steps already taken, and
    /// calling again goes on from there.
    ///
    /// Refused with [`Error::Conflict`] while the tenant has a webhook (delete them
    /// first), or a pending delivery: a deleted webhook's pending deliveries end a
    /// bounded number per tick, so call again a moment later. Events published after it
    /// are kept as any tenant's; stop publishing for the tenant first.
    pub fn purge_tenant(&self, tenant: &TenantId) -> Result<usize, Error> {
        let mut deliveries = 0;
        loop {
            let step = self.inner.call(self.purge_request(tenant))?;
            deliveries += step.deliveries;
            if step.done {
                return Ok(deliveries);
            }
        }
    }

    /// [`purge_tenant`](Self::purge_tenant) as a `Send` future.
    pub fn purge_tenant_async(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<usize, Error>> + Send + 'static {
        let (tenant, engine) = (tenant.clone(), self.clone());
        async move {
            let mut deliveries = 0;
            loop {
                let step = engine
                    .inner
                    .clone()
                    .call_async(engine.purge_request(&tenant))
                    .await?;
                deliveries += step.deliveries;
                if step.done {
                    return Ok(deliveries);
                }
            }
        }
    }

    fn test_request(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> Prepared<Result<EventId, Failure>> {
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::SendTestEvent {
                tenant: tenant.clone(),
                webhook: webhook.clone(),
                event_type,
                reply,
            }
        })
    }

    /// Sends a test event of `event_type` (data `{"test":true}`) to one webhook,
    /// whatever its filters; returns the test event's id.
    pub fn send_test_event(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> Result<EventId, Error> {
        self.inner
            .call(self.test_request(tenant, webhook, event_type))
    }

    /// [`send_test_event`](Self::send_test_event) as a `Send` future.
    pub fn send_test_event_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> impl Future<Output = Result<EventId, Error>> + Send + 'static {
        self.inner
            .clone()
            .call_async(self.test_request(tenant, webhook, event_type))
    }

    /// [`send_test_event_async`](Self::send_test_event_async) without waiting for queue
    /// room: fails at once with [`Error::Backpressure`] (giving the item back) when the
    /// shard's queue is full.
    pub fn try_send_test_event_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> Result<impl Future<Output = Result<EventId, Error>> + Send + 'static, Error> {
        self.inner
            .try_call_async(self.test_request(tenant, webhook, event_type))
    }

    fn test_with_request(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event: Event,
    ) -> Prepared<Result<TestSent, Failure>> {
        let event = event.into_new_event(now_ms());
        prepare(self.shard_of(tenant), tenant, |reply| {
            Request::SendTestEventWith {
                tenant: tenant.clone(),
                webhook: webhook.clone(),
                event,
                reply,
            }
        })
    }

    /// Sends `event` (its type, data, id, location, …) to one webhook only, whatever the
    /// webhook's filters, and returns the event id and the delivery created once it is
    /// durable. The webhook must exist and be active ([`Error::UnknownWebhook`],
    /// [`Error::Conflict`] otherwise); invalid data is [`Error::Invalid`].
    pub fn send_test_event_with(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event: Event,
    ) -> Result<TestSend, Error> {
        self.inner
            .call(self.test_with_request(tenant, webhook, event))
            .map(TestSend::from_sent)
    }

    /// [`send_test_event_with`](Self::send_test_event_with) as a `Send` future.
    pub fn send_test_event_with_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event: Event,
    ) -> impl Future<Output = Result<TestSend, Error>> + Send + 'static {
        let call = self
            .inner
            .clone()
            .call_async(self.test_with_request(tenant, webhook, event));
        async move { call.await.map(TestSend::from_sent) }
    }

    /// [`send_test_event_with_async`](Self::send_test_event_with_async) without waiting for
    /// queue room: fails at once with [`Error::Backpressure`] (giving the item back) when
    /// the shard's queue is full.
    pub fn try_send_test_event_with_async(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event: Event,
    ) -> Result<impl Future<Output = Result<TestSend, Error>> + Send + 'static, Error> {
        let call = self
            .inner
            .try_call_async(self.test_with_request(tenant, webhook, event))?;
        Ok(async move { call.await.map(TestSend::from_sent) })
    }

    fn stats_request(&self, shard: usize) -> Prepared<ShardStats> {
        let (reply, receiver) = reply_channel();
        Prepared {
            shard,
            tenant: None,
            request: Request::Stats { reply },
            receiver,
        }
    }

    /// Counters of every shard, in shard order.
    pub fn stats(&self) -> Result<Vec<ShardStats>, Error> {
        (0..self.shards())
            .map(|shard| self.inner.query(self.stats_request(shard)))
            .collect()
    }

    /// [`stats`](Self::stats) as a `Send` future (asks every shard at once).
    pub fn stats_async(
        &self,
    ) -> impl Future<Output = Result<Vec<ShardStats>, Error>> + Send + 'static {
        let asks: Vec<_> = (0..self.shards())
            .map(|shard| self.inner.clone().query_async(self.stats_request(shard)))
            .collect();
        async move {
            let mut stats = Vec::with_capacity(asks.len());
            for ask in asks {
                stats.push(ask.await?);
            }
            Ok(stats)
        }
    }

    // ------------------------------------------------------------------ lifecycle

    /// Stops the engine: refuses new work, journals what was accepted, waits (within the
    /// grace period) for requests in flight — anything unfinished stays pending in the
    /// journal and is retried after the next start — and joins the shard threads.
    /// Idempotent; other handles then fail with [`Error::ShuttingDown`]. Reports a
    /// shard whose journal failed as [`Error::Storage`].
    ///
    /// This blocks the calling thread for up to the grace period
    /// ([`Builder::shutdown_grace`]); from an async runtime, call it where blocking
    /// is allowed (e.g. tokio's `spawn_blocking`). Dropping the last handle does the same.
    pub fn shutdown(&self) -> Result<(), Error> {
        let mut first_error = None;
        for (shard, result) in self.inner.engine.shutdown() {
            let error = match result {
                Ok(ShardExit::Clean) => continue,
                Ok(ShardExit::Storage(error)) => Error::storage(shard, error),
                Ok(ShardExit::Runtime(message)) => Error::Environment { shard, message },
                Ok(ShardExit::Bug(message)) => Error::Bug { message },
                Err(message) => Error::Bug {
                    message: format!("shard {shard} thread failed: {message}"),
                },
            };
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), Err)
    }
}
