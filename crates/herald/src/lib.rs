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
//!   a blocking form, and publishing also an async ([`Herald::publish_async`]) and a
//!   non-waiting ([`Herald::try_publish`]) form, and batches of one tenant's events go
//!   in one hand-off ([`Herald::publish_batch`]). No runtime types leak into the API.
//! * **Bounded**: each shard has a bounded intake queue ([`Builder::intake_capacity`]).
//!   `try_*` calls fail at once with [`Error::Backpressure`] when it is full and give the
//!   item back; the other forms wait for room. A slow disk shows up the same way
//!   ([`Builder::awaiting_durable_max`]).
//! * **Errors say whose fault** ([`Error::fault`]): the caller's (invalid input, unknown
//!   webhook), capacity, shutdown, storage, or a bug; a failed hand-off gives the item
//!   back ([`Unsent`]).
//! * **Stopping**: [`Herald::shutdown`] (or dropping the last handle) refuses new work,
//!   journals what was accepted, waits a grace period for requests in flight (anything
//!   unfinished is retried after the next start) and joins the shard threads.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use herald_rt::shard::{
    reply_channel, Engine, Failure, ReplyReceiver, Request, SendError, ShardExit,
};

pub use builder::{Builder, INTAKE_CAPACITY_DEFAULT, IO_MEMORY_BYTES_DEFAULT};
pub use error::{Error, Fault, StartError, Unsent};
pub use event::Event;

pub use herald_core::{
    Breaker, DeliveryError, DeliveryId, DeliveryQuery, DeliveryRecord, DeliveryStatus,
    DisableReason, DispatcherConfig, EndpointLimits, EventFilter, EventId, EventType, Health,
    HealthPolicy, IdError, LocationId, Page, RateLimit, RetrySchedule, SecretSpec, TenantId,
    WebhookId, WebhookSpec, WebhookStatus,
};
pub use herald_http::Url;
pub use herald_rt::shard::{shard_of, ShardStats, WebhookInfo as Webhook, PUBLISH_BATCH_MAX};
pub use herald_sign::Scheme;

/// A handle to a running engine. Cheap to clone; share it between threads and async
/// tasks. The engine stops when [`Herald::shutdown`] is called or the last handle is
/// dropped (pending [`PublishReceipt`]s and publish futures count as handles).
#[derive(Clone)]
pub struct Herald {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
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
    receiver: ReplyReceiver<Result<EventId, Failure>>,
}

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

    /// Blocks until the event is durable (or refused).
    pub fn wait(self) -> Result<EventId, Error> {
        let result = self.receiver.wait();
        self.engine.answer(self.shard, &self.tenant, result)
    }
}

impl Future for PublishReceipt {
    type Output = Result<EventId, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(self.engine.answer(self.shard, &self.tenant, result))
    }
}

impl Inner {
    /// Turns a shard's answer (or its silence) into the caller's result.
    fn answer<T>(
        &self,
        shard: usize,
        tenant: &TenantId,
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
            Some(ShardExit::Storage(message)) => Error::Storage { shard, message },
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
    fn call<T>(
        &self,
        shard: usize,
        tenant: &TenantId,
        request: Request,
        receiver: ReplyReceiver<Result<T, Failure>>,
    ) -> Result<T, Error> {
        self.engine
            .submit_blocking(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        self.answer(shard, tenant, receiver.wait())
    }

    /// Hands a batch over (blocking while the queue is full) and waits for its answers.
    fn call_batch(
        &self,
        shard: usize,
        request: Request,
        receiver: BatchReceiver,
    ) -> Result<Vec<Result<EventId, Failure>>, Error> {
        self.engine
            .submit_blocking(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        receiver
            .wait()
            .map_err(|_| self.stopped(shard, Unsent::Request))
    }

    /// Like [`call`](Self::call) for queries, whose answers have no error form.
    fn query<T>(
        &self,
        shard: usize,
        request: Request,
        receiver: ReplyReceiver<T>,
    ) -> Result<T, Error> {
        self.engine
            .submit_blocking(shard, request)
            .map_err(|error| self.not_taken(shard, error))?;
        receiver
            .wait()
            .map_err(|_| self.stopped(shard, Unsent::Request))
    }
}

/// Where a shard answers a batch: one result per event.
type BatchReceiver = ReplyReceiver<Vec<Result<EventId, Failure>>>;

fn batch_results(
    shard: usize,
    tenant: &TenantId,
    results: Vec<Result<EventId, Failure>>,
) -> Vec<Result<EventId, Error>> {
    results
        .into_iter()
        .map(|result| result.map_err(|failure| failure_to_error(shard, tenant, failure)))
        .collect()
}

fn failure_to_error(shard: usize, tenant: &TenantId, failure: Failure) -> Error {
    use herald_core::{AcceptError, OpError, RegistryError};
    match failure {
        Failure::Registry(RegistryError::NotFound { tenant, webhook })
        | Failure::Op(OpError::WebhookNotFound { tenant, webhook }) => {
            Error::UnknownWebhook { tenant, webhook }
        }
        Failure::Registry(error) => Error::invalid(error.to_string()),
        Failure::Accept(AcceptError::Full { .. })
        | Failure::Op(OpError::Accept(AcceptError::Full { .. })) => Error::Backpressure {
            shard,
            unsent: Unsent::Request,
        },
        Failure::Accept(error) => Error::invalid(error.to_string()),
        Failure::Op(OpError::DeliveryNotFound(delivery)) => Error::UnknownDelivery {
            tenant: tenant.clone(),
            delivery,
        },
        Failure::Op(error) => Error::invalid(error.to_string()),
        Failure::Storage(message) => Error::Storage { shard, message },
        Failure::ShuttingDown => Error::ShuttingDown {
            unsent: Unsent::Request,
        },
    }
}

impl Herald {
    /// Starts configuring an engine.
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub(crate) fn from_engine(engine: Engine) -> Herald {
        Herald {
            inner: Arc::new(Inner { engine }),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.engine.shards()
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

    /// Creates webhook `id`, or replaces its whole configuration if it exists. Durable
    /// when this returns.
    pub fn put_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<(), Error> {
        self.upsert(tenant, id, spec, false)
    }

    /// Replaces the configuration of an existing webhook ([`Error::UnknownWebhook`] if
    /// there is none). Its pending deliveries and health are kept; setting
    /// [`WebhookStatus::Disabled`] ends its pending deliveries as failed.
    pub fn update_webhook(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
    ) -> Result<(), Error> {
        self.upsert(tenant, id, spec, true)
    }

    fn upsert(
        &self,
        tenant: &TenantId,
        id: &WebhookId,
        spec: WebhookSpec,
        must_exist: bool,
    ) -> Result<(), Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::UpsertWebhook {
            tenant: tenant.clone(),
            id: id.clone(),
            spec: Box::new(spec),
            must_exist,
            reply,
        };
        self.inner.call(shard, tenant, request, receiver)
    }

    /// Deletes a webhook; its pending deliveries end as failed. Durable when this
    /// returns.
    pub fn delete_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<(), Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::DeleteWebhook {
            tenant: tenant.clone(),
            id: id.clone(),
            reply,
        };
        self.inner.call(shard, tenant, request, receiver)
    }

    /// One webhook, or `None`.
    pub fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<Option<Webhook>, Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::GetWebhook {
            tenant: tenant.clone(),
            id: id.clone(),
            reply,
        };
        self.inner.query(shard, request, receiver)
    }

    /// All of a tenant's webhooks, in id order (at most the per-tenant limit, 10,000
    /// by default).
    pub fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<Webhook>, Error> {
        self.list_webhooks_page(tenant, None, usize::MAX)
    }

    /// A page of a tenant's webhooks in id order: at most `limit` after `after`.
    pub fn list_webhooks_page(
        &self,
        tenant: &TenantId,
        after: Option<&WebhookId>,
        limit: usize,
    ) -> Result<Vec<Webhook>, Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::ListWebhooks {
            tenant: tenant.clone(),
            after: after.cloned(),
            limit,
            reply,
        };
        self.inner.query(shard, request, receiver)
    }

    // ------------------------------------------------------------------ publishing

    fn publish_request(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> (
        usize,
        EventId,
        Request,
        ReplyReceiver<Result<EventId, Failure>>,
    ) {
        let shard = self.shard_of(tenant);
        let event = event.into_new_event(now_ms());
        let event_id = event.id.clone();
        let (reply, receiver) = reply_channel();
        let request = Request::Publish {
            tenant: tenant.clone(),
            event,
            reply,
        };
        (shard, event_id, request, receiver)
    }

    /// Publishes an event for `tenant`, blocking while the shard's queue is full, and
    /// returns its id once the event is durable. Delivery to every matching webhook
    /// happens in the background.
    pub fn publish(&self, tenant: &TenantId, event: Event) -> Result<EventId, Error> {
        let (shard, _, request, receiver) = self.publish_request(tenant, event);
        self.inner.call(shard, tenant, request, receiver)
    }

    /// [`publish`](Self::publish) as a `Send` future: waits for queue room and for
    /// durability without blocking the caller's executor (works on any runtime).
    pub fn publish_async(
        &self,
        tenant: &TenantId,
        event: Event,
    ) -> impl Future<Output = Result<EventId, Error>> + Send + 'static {
        let (shard, _, request, receiver) = self.publish_request(tenant, event);
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        async move {
            inner
                .engine
                .submit_async(shard, request)
                .await
                .map_err(|error| inner.not_taken(shard, error))?;
            let result = receiver.await;
            inner.answer(shard, &tenant, result)
        }
    }

    /// Hands an event to its shard without waiting for queue room: fails at once with
    /// [`Error::Backpressure`] (giving the event back, with its id filled in) when the
    /// queue is full. On success, the returned receipt resolves once the event is
    /// durable.
    pub fn try_publish(&self, tenant: &TenantId, event: Event) -> Result<PublishReceipt, Error> {
        let (shard, event_id, request, receiver) = self.publish_request(tenant, event);
        self.inner
            .engine
            .try_submit(shard, request)
            .map_err(|error| self.inner.not_taken(shard, error))?;
        Ok(PublishReceipt {
            shard,
            tenant: tenant.clone(),
            event_id,
            engine: self.inner.clone(),
            receiver,
        })
    }

    fn batch_request(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> Result<(usize, Request, BatchReceiver), Error> {
        if events.len() > PUBLISH_BATCH_MAX {
            return Err(Error::invalid(format!(
                "a batch holds at most {PUBLISH_BATCH_MAX} events, got {}",
                events.len()
            )));
        }
        let shard = self.shard_of(tenant);
        let now = now_ms();
        let events = events.into_iter().map(|e| e.into_new_event(now)).collect();
        let (reply, receiver) = reply_channel();
        let request = Request::PublishBatch {
            tenant: tenant.clone(),
            events,
            reply,
        };
        Ok((shard, request, receiver))
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
        let (shard, request, receiver) = self.batch_request(tenant, events)?;
        let results = self.inner.call_batch(shard, request, receiver)?;
        Ok(batch_results(shard, tenant, results))
    }

    /// [`publish_batch`](Self::publish_batch) as a `Send` future.
    pub fn publish_batch_async(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Result<EventId, Error>>, Error>> + Send + 'static {
        let prepared = self.batch_request(tenant, events);
        let inner = self.inner.clone();
        let tenant = tenant.clone();
        async move {
            let (shard, request, receiver) = prepared?;
            inner
                .engine
                .submit_async(shard, request)
                .await
                .map_err(|error| inner.not_taken(shard, error))?;
            let results = receiver
                .await
                .map_err(|_| inner.stopped(shard, Unsent::Request))?;
            Ok(batch_results(shard, &tenant, results))
        }
    }

    // ------------------------------------------------------------------ deliveries

    /// A page of the delivery log of `query.tenant`, in delivery id order.
    pub fn deliveries(&self, query: DeliveryQuery) -> Result<Page<DeliveryRecord>, Error> {
        let shard = self.shard_of(&query.tenant);
        let (reply, receiver) = reply_channel();
        self.inner
            .query(shard, Request::Deliveries { query, reply }, receiver)
    }

    /// One delivery, if it is pending or still in the log.
    pub fn delivery(
        &self,
        tenant: &TenantId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryRecord>, Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::Delivery {
            tenant: tenant.clone(),
            id,
            reply,
        };
        self.inner.query(shard, request, receiver)
    }

    /// Retries one delivery now (a pending one is moved up; a finished one gets one
    /// more attempt). Durable when this returns.
    pub fn retry_delivery(&self, tenant: &TenantId, id: DeliveryId) -> Result<(), Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::RetryDelivery {
            tenant: tenant.clone(),
            id,
            reply,
        };
        self.inner.call(shard, tenant, request, receiver)
    }

    /// Re-sends every failed or exhausted delivery of `webhook` whose event was
    /// accepted at or after `since_ms` (Unix ms); returns how many were re-queued.
    pub fn resend_failed(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> Result<usize, Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::ResendFailed {
            tenant: tenant.clone(),
            webhook: webhook.clone(),
            since_ms,
            reply,
        };
        self.inner.call(shard, tenant, request, receiver)
    }

    /// Sends a test event of `event_type` (data `{"test":true}`) to one webhook,
    /// whatever its filters; returns the test event's id.
    pub fn send_test_event(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        event_type: EventType,
    ) -> Result<EventId, Error> {
        let shard = self.shard_of(tenant);
        let (reply, receiver) = reply_channel();
        let request = Request::SendTestEvent {
            tenant: tenant.clone(),
            webhook: webhook.clone(),
            event_type,
            reply,
        };
        self.inner.call(shard, tenant, request, receiver)
    }

    /// Counters of every shard, in shard order.
    pub fn stats(&self) -> Result<Vec<ShardStats>, Error> {
        (0..self.shards())
            .map(|shard| {
                let (reply, receiver) = reply_channel();
                self.inner.query(shard, Request::Stats { reply }, receiver)
            })
            .collect()
    }

    // ------------------------------------------------------------------ lifecycle

    /// Stops the engine: refuses new work, journals what was accepted, waits (within the
    /// grace period) for requests in flight — anything unfinished stays pending in the
    /// journal and is retried after the next start — and joins the shard threads.
    /// Idempotent; other handles then fail with [`Error::ShuttingDown`]. Reports a
    /// shard whose journal failed as [`Error::Storage`].
    ///
    /// This blocks the calling thread for up to the grace period
    /// ([`Builder::shutdown_grace_ms`]); from an async runtime, call it where blocking
    /// is allowed (e.g. tokio's `spawn_blocking`). Dropping the last handle does the same.
    pub fn shutdown(&self) -> Result<(), Error> {
        let mut first_error = None;
        for (shard, result) in self.inner.engine.shutdown() {
            let error = match result {
                Ok(ShardExit::Clean) => continue,
                Ok(ShardExit::Storage(message)) => Error::Storage { shard, message },
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
