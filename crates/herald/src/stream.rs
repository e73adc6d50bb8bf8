//! The tenant event stream: [`Herald::subscribe`].

use std::sync::Arc;

pub use herald_rt::shard::stream::{
    StreamEnd, StreamEvent, StreamFilter, SubscribeError, Subscription, STREAM_QUEUE_MAX_LIMIT,
    STREAM_WINDOW_BYTES_MAX_DEFAULT, STREAM_WINDOW_EVENTS_MAX_DEFAULT, STREAM_WINDOW_MS_DEFAULT,
};

use crate::{now_ms, Herald, TenantId};

impl Herald {
    /// Subscribes to `tenant`'s events that pass `filter`, in journal order, each as
    /// soon as its record is durable: every event the tenant's journal accepts
    /// (published, batch, inbound, test sends and the engine's own such as
    /// `webhook.disabled`), whether or not a webhook matches it.
    ///
    /// Each [`StreamEvent`] carries a per-tenant `seq` (its record's journal sequence
    /// number: it grows per tenant and survives restarts, with gaps). With `after =
    /// Some(seq)` the subscription first replays the tenant's events after `seq` from
    /// the replay window ([`crate::Builder::stream_window`]), then continues live, with no
    /// gap or repeat; if some may have left the window it is refused with
    /// [`SubscribeError::OutsideWindow`] and the client must resynchronise. The replay is
    /// taken from the window a chunk at a time as the subscription is read; one read so
    /// slowly that the window drops events it has yet to replay ends with
    /// [`StreamEnd::Overflowed`].
    ///
    /// Live events wait in a queue of `queue_max` events (clamped to
    /// 1..=[`STREAM_QUEUE_MAX_LIMIT`]); the shard never waits for a subscriber: when the
    /// queue is full the subscription ends with [`StreamEnd::Overflowed`] (resume with
    /// `after` = the last seq received). Dropping the [`Subscription`] unsubscribes;
    /// [`Herald::shutdown`] ends every subscription with [`StreamEnd::ShuttingDown`].
    pub fn subscribe(
        &self,
        tenant: &TenantId,
        filter: StreamFilter,
        after: Option<u64>,
        queue_max: usize,
    ) -> Result<Subscription, SubscribeError> {
        if self.inner.engine.is_shutting_down() {
            return Err(SubscribeError::ShuttingDown);
        }
        let shard = self.shard_of(tenant);
        let stream = Arc::clone(self.inner.engine.stream(shard));
        stream.subscribe(tenant.as_str(), filter, after, queue_max, now_ms())
    }
}
