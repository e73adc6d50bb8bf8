//! Admission: accepting events, waiting for durability, timers, and starting due
//! attempts within each endpoint's limits.

use super::*;

/// Whether an accepted event's idempotency key is checked and remembered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum KeyUse {
    /// A publish: the key goes into the `EventAccepted` record (and so the window).
    Remember,
    /// A test send: never a duplicate, its key (if any) neither consulted nor kept.
    Ignore,
}

impl Dispatcher {
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
        let now = self.advance_clock(now_ms);
        if let Some(idempotency) = &event.idempotency {
            if let Some(answer) = self.check_key(now, tenant, idempotency)? {
                self.counters.events_duplicate += 1;
                return Ok(answer);
            }
        }
        // The matches go into a list the dispatcher keeps, empty between events.
        let mut targets = std::mem::take(&mut self.targets);
        if let Some(t) = self.tenants.get(tenant) {
            t.matcher.matches(&event.event_type, &mut targets);
        }
        let accepted = self.accept_with_targets(now, tenant, event, &targets, KeyUse::Remember);
        targets.clear();
        self.targets = targets;
        accepted
    }

    /// Accepts `event` for exactly `targets`. An invalid event is refused first (the
    /// caller's error stays the answer however full the shard is); a full shard gives
    /// the event back unchanged.
    pub(super) fn accept_with_targets(
        &mut self,
        now: u64,
        tenant: &TenantId,
        event: NewEvent,
        targets: &[WebhookId],
        key: KeyUse,
    ) -> Result<Accepted, AcceptError> {
        let body = encode_envelope(tenant, &event)?;
        if self.config.record_bytes_max != usize::MAX {
            let key = match key {
                KeyUse::Remember => event.idempotency.as_ref().map(|i| i.key.as_str()),
                KeyUse::Ignore => None,
            };
            let bytes = record::event_record_bytes_estimate(
                [
                    tenant.as_str(),
                    event.id.as_str(),
                    event.event_type.as_str(),
                ]
                .into_iter()
                .chain(key),
                body.len(),
                targets.iter().map(WebhookId::as_str),
            );
            if bytes > self.config.record_bytes_max {
                return Err(AcceptError::TooLarge {
                    bytes,
                    deliveries: targets.len(),
                    max: self.config.record_bytes_max,
                });
            }
        }
        let max = self.config.pending_deliveries_max;
        if self.pending_count + targets.len() > max {
            return Err(AcceptError::Full {
                full: ShardFull {
                    pending: self.pending_count,
                    needed: targets.len(),
                    max,
                },
                event: Box::new(event),
            });
        }
        if let Err(full) = self.tenant_room(tenant, targets.len()) {
            return Err(AcceptError::TenantFull {
                full,
                event: Box::new(event),
            });
        }
        let NewEvent {
            id: event_id,
            event_type,
            created_at_ms,
            idempotency,
            ..
        } = event;
        let idempotency = match key {
            KeyUse::Remember => idempotency,
            KeyUse::Ignore => None,
        };
        let mut refs = SmallVec::<[record::DeliveryRef; 1]>::with_capacity(targets.len());
        for webhook in targets {
            let attempts_max = self.attempts_max_of(tenant, webhook);
            let delivery = DeliveryId(self.next_delivery);
            self.next_delivery += 1;
            refs.push(record::DeliveryRef {
                delivery: delivery.0,
                webhook: webhook.shared_text(),
                attempts_max,
            });
        }
        let count = refs.len();
        let first_delivery = refs.first().map(|r| DeliveryId(r.delivery));
        let append = self.emit(Record::EventAccepted(record::EventAccepted {
            at_ms: now,
            tenant: tenant.shared_text(),
            event_id: event_id.clone(),
            event_type: event_type.shared_text(),
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

    /// Whether `tenant` may have `needed` more pending deliveries
    /// ([`DispatcherConfig::pending_deliveries_per_tenant_max`]); nothing needed always
    /// may (an event no webhook matched still reaches the stream).
    pub(super) fn tenant_room(&self, tenant: &TenantId, needed: usize) -> Result<(), TenantFull> {
        let pending = self.pending_by_tenant.get(tenant).copied().unwrap_or(0);
        let max = self.config.pending_deliveries_per_tenant_max;
        if needed == 0 || pending + needed <= max {
            return Ok(());
        }
        Err(TenantFull {
            pending,
            needed,
            max,
        })
    }

    /// Counts a delivery of `tenant` that became pending.
    pub(super) fn tenant_pending_up(&mut self, tenant: &TenantId) {
        match self.pending_by_tenant.get_mut(tenant) {
            Some(count) => *count += 1,
            None => {
                self.pending_by_tenant.insert(tenant.clone(), 1);
            }
        }
    }

    /// Counts a delivery of `tenant` that ended.
    pub(super) fn tenant_pending_down(&mut self, tenant: &TenantId) {
        let Some(count) = self.pending_by_tenant.get_mut(tenant) else {
            debug_assert!(false, "a delivery of {tenant} ends that was not counted");
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.pending_by_tenant.remove(tenant);
        }
    }

    /// Inserts a pending delivery in stage `AwaitingDurable`.
    pub(super) fn insert_pending(
        &mut self,
        delivery: DeliveryId,
        event: &Arc<EventData>,
        webhook: Arc<WebhookId>,
        attempts_max: u32,
        now: u64,
    ) {
        if let Some(w) = webhook_state_mut(&mut self.tenants, &event.tenant, &webhook) {
            w.pending += 1;
        }
        match self.by_tenant.get_mut(&*event.tenant) {
            Some(set) => {
                set.insert(delivery);
            }
            None => {
                let mut set = IdSet::default();
                set.insert(delivery);
                self.by_tenant.insert(TenantId::clone(&event.tenant), set);
            }
        }
        self.pending_count += 1;
        self.tenant_pending_up(&event.tenant);
        self.fresh_pending += 1;
        self.next_delivery = self.next_delivery.max(delivery.0.saturating_add(1));
        self.deliveries.insert(
            delivery,
            Box::new(Delivery {
                event: Arc::clone(event),
                webhook,
                attempt: 0,
                attempts_max,
                status: DeliveryStatus::Pending,
                stage: Stage::AwaitingDurable,
                due_or_finish: event.accepted_at_ms.min(Delivery::NOT_DUE - 1),
                updated_at_ms: now,
                outcomes: None,
            }),
        );
    }

    /// Whether deliveries wait for a record to become durable before they are sent (the
    /// driver then asks the journal to sync promptly; records nobody waits for, such as
    /// attempt outcomes alone, may share a later sync).
    pub fn awaits_durability(&self) -> bool {
        !self.awaiting.is_empty()
    }

    /// Reports that every record up to and including `through` is durable. Deliveries
    /// of events accepted by those records become due.
    pub fn records_durable(&mut self, through: AppendId) {
        while self.awaiting.front().is_some_and(|(id, _)| *id <= through) {
            let Some((_, deliveries)) = self.awaiting.pop_front() else {
                break;
            };
            assert!(
                self.awaiting_count >= deliveries.len(),
                "bug: fewer deliveries counted awaiting durability than listed"
            );
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

    /// The driver reports where the journal holds every live event's envelope: right
    /// after appending each `EventAccepted` record the dispatcher emits, and before any
    /// other input, it calls [`Dispatcher::body_stored`] with the position, or
    /// [`Dispatcher::body_kept`] with the bytes when it cannot name one. A live event then
    /// keeps no copy of its body while its record waits to be appended (without this,
    /// each event's body is copied into memory and freed again once its position is
    /// reported). Signing or checkpointing a body whose position was never reported is a
    /// bug and panics. Replayed events are unaffected.
    pub fn report_envelopes(&mut self) {
        self.envelopes_reported = true;
    }

    /// The driver journaled record `append`, an event's `EventAccepted`, and its
    /// envelope lies at `at` in the journal: the event's deliveries keep the position
    /// instead of the bytes from now on (see [`crate::body`]). Call it once the record
    /// is appended (before it is durable is fine: sends wait for durability), only for
    /// records the dispatcher emitted in this incarnation. An `append` that is not an
    /// event with deliveries waiting for durability, or a position of another length
    /// than the event's body, is ignored.
    pub fn body_stored(&mut self, append: AppendId, at: BodyPos) {
        self.replace_body(append, at.len as usize, || EventBody::stored(at));
    }

    /// [`Dispatcher::body_stored`] for a driver that reports envelopes
    /// ([`Dispatcher::report_envelopes`]) but could not name where the journal holds
    /// this one: the event's deliveries keep `bytes`, the body of record `append`, in
    /// memory. Ignored like `body_stored`, and for an event whose body is already known.
    pub fn body_kept(&mut self, append: AppendId, bytes: &[u8]) {
        if self
            .awaiting_event(append)
            .is_some_and(|e| e.body.is_awaiting())
        {
            self.replace_body(append, bytes.len(), || EventBody::held(Arc::from(bytes)));
        }
    }

    /// The event of record `append` whose deliveries wait for durability.
    fn awaiting_event(&self, append: AppendId) -> Option<&Arc<EventData>> {
        let index = self
            .awaiting
            .binary_search_by_key(&append, |(id, _)| *id)
            .ok()?;
        let first = self.awaiting[index].1.first()?;
        self.deliveries.get(first).map(|d| &d.event)
    }

    /// Gives the event of record `append` (its deliveries waiting for durability) the
    /// body `body` makes, when its body is held or awaiting its position and is `len`
    /// bytes long.
    fn replace_body(&mut self, append: AppendId, len: usize, body: impl FnOnce() -> EventBody) {
        let Ok(index) = self.awaiting.binary_search_by_key(&append, |(id, _)| *id) else {
            return;
        };
        let deliveries = &self.awaiting[index].1;
        let Some(d) = deliveries
            .first()
            .and_then(|first| self.deliveries.get_mut(first))
        else {
            return;
        };
        let current = &d.event.body;
        let replaceable = matches!(current, EventBody::Held(_)) || current.is_awaiting();
        if !replaceable || current.len() != len {
            return;
        }
        if deliveries.len() == 1 {
            // One delivery, the event's only holder (no attempt starts before the event
            // is durable): the body changes in place, without a second event allocated
            // beside the first and the first freed.
            if let Some(event) = Arc::get_mut(&mut d.event) {
                event.body = body();
                return;
            }
        }
        let held = Arc::clone(&d.event);
        self.replace_shared(index, &held, body());
    }

    /// Gives every delivery of `awaiting[index]` that shares `held` a copy of it with
    /// `body`.
    fn replace_shared(&mut self, index: usize, held: &Arc<EventData>, body: EventBody) {
        let replaced = Arc::new(held.with_body(body));
        for delivery in &self.awaiting[index].1 {
            if let Some(d) = self
                .deliveries
                .get_mut(delivery)
                .filter(|d| Arc::ptr_eq(&d.event, held))
            {
                d.event = Arc::clone(&replaced);
            }
        }
    }

    /// Live: moves a pending delivery into its webhook's queue, or ends it when the
    /// webhook is gone.
    pub(super) fn make_due_or_end(&mut self, delivery: DeliveryId) {
        if !self.make_due(delivery) {
            let now = self.now_ms;
            if let Some(d) = self.deliveries.get(&delivery) {
                let (tenant, webhook) = (
                    TenantId::clone(&d.event.tenant),
                    WebhookId::clone(&d.webhook),
                );
                self.ending_met_one(&tenant, &webhook);
            }
            self.end_delivery(
                now,
                delivery,
                DeliveryStatus::Failed,
                Some(DeliveryError::WebhookDeleted),
            );
        }
    }

    /// A restored delivery that was already due when its checkpoint was written (a
    /// backlog waiting behind an open breaker, or for its endpoint's limits) goes
    /// straight to its webhook's queue, due at `due_ms`, as the wheel would put it on
    /// the first tick: a million of them held in the wheel until then would cost ~46
    /// bytes each (slot entry and slab node, in vectors that keep their size), the
    /// queue 8. `false` when the webhook is gone.
    pub(super) fn make_due_at(&mut self, delivery: DeliveryId, due_ms: u64) -> bool {
        if let Some(d) = self.deliveries.get_mut(&delivery) {
            d.set_due_ms(Some(due_ms));
        }
        self.make_due(delivery)
    }

    /// Moves a pending delivery into its webhook's queue. `false` when the webhook is
    /// gone (the delivery is then left for the caller to end).
    pub(super) fn make_due(&mut self, delivery: DeliveryId) -> bool {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return true;
        };
        if let Stage::Scheduled(key) = d.stage {
            self.wheel.cancel(key);
        }
        d.stage = Stage::Waiting;
        let Some(w) = webhook_state_mut(&mut self.tenants, &d.event.tenant, &d.webhook) else {
            return false;
        };
        w.queue.push_back(delivery);
        self.ready_webhooks.insert((
            TenantId::clone(&d.event.tenant),
            WebhookId::clone(&d.webhook),
        ));
        true
    }

    pub(super) fn schedule(&mut self, delivery: DeliveryId, due_ms: u64) {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return;
        };
        if let Stage::Scheduled(key) = d.stage {
            self.wheel.cancel(key);
        }
        let key = self.wheel.insert(due_ms, Timer::Delivery(delivery));
        d.stage = Stage::Scheduled(key);
        d.set_due_ms(Some(due_ms));
    }

    /// Advances time: fires due timers, admits due deliveries within each endpoint's
    /// limits, signs them in one batch (timestamp = `now_ms`) and queues their `Send`
    /// commands. Call it after every batch of inputs
    /// and whenever [`Dispatcher::next_deadline_ms`] has passed.
    ///
    /// For a driver that keeps every body in memory (it never calls
    /// [`Dispatcher::body_stored`]); otherwise [`Dispatcher::tick_with`]: signing a body
    /// held only by its position without a store is a bug and panics.
    pub fn tick(&mut self, now_ms: u64) {
        self.tick_with(now_ms, &Held);
    }

    /// [`Dispatcher::tick`], reading the bodies of the attempts it signs from `bodies`
    /// where the driver stored them ([`Dispatcher::body_stored`]).
    pub fn tick_with(&mut self, now_ms: u64, bodies: &dyn BodyStore) {
        let now = self.advance_clock(now_ms);
        self.ending_allowance = self.config.endings_per_tick_max;
        self.advance_endings(now);
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
                Timer::Webhook(key) => {
                    let (tenant, webhook) = *key;
                    if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &webhook) {
                        w.wake = None;
                        self.ready_webhooks.insert((tenant, webhook));
                    }
                }
            }
        }
        self.start_due_attempts(now, now_ms, bodies);
        #[cfg(debug_assertions)]
        self.recount();
    }

    /// Admits due deliveries of the ready webhooks within each endpoint's limits and the
    /// tick's budget (marking them in flight), ends those without a live secret, then
    /// signs and sends the admitted ones: due at `now` (the dispatcher's clock), signed
    /// at `wall_ms` (the driver's clock: see `sign_and_send`).
    pub(super) fn start_due_attempts(&mut self, now: u64, wall_ms: u64, bodies: &dyn BodyStore) {
        let budget = self.config.sends_per_tick_max;
        let mut plans = std::mem::take(&mut self.plans);
        debug_assert!(plans.is_empty(), "the last tick sent every plan it made");
        let mut no_secret: Vec<DeliveryId> = Vec::new();
        let mut ready = std::mem::take(&mut self.ready_webhooks);
        // Round-robin: when the last tick ran out of budget, start at the first webhook it
        // did not serve, so that busy webhooks early in id order cannot starve later ones.
        let order: Vec<(TenantId, WebhookId)> = match self.resume_from.take() {
            Some(cursor) => {
                let after = ready.split_off(&cursor);
                after.into_iter().chain(ready).collect()
            }
            None => ready.into_iter().collect(),
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
            // Looked up once per webhook: starting an attempt changes the delivery, the
            // wheel and the counts, which are other fields than the webhook's state.
            let Some(w) = webhook_state_mut(&mut self.tenants, tenant, webhook) else {
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
            while let Some(&delivery) = w.queue.front() {
                let Some(d) = self
                    .deliveries
                    .get(&delivery)
                    .filter(|d| d.stage == Stage::Waiting && *d.webhook == *webhook)
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
                        w.health.start(now, &w.spec.limits, delivery.0);
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
                            body: d.event.body.clone(),
                            custom_headers: w.spec.headers.clone(),
                            connect_timeout_ms: w.spec.limits.connect_timeout_ms,
                            request_timeout_ms: w.spec.limits.request_timeout_ms,
                        });
                        // Takes the delivery off the queue. No record: see
                        // `mark_in_flight`, which this is with the webhook at hand.
                        let Some(d) = pending_mut(&mut self.deliveries, delivery) else {
                            panic!("bug: a waiting delivery {delivery} is not pending");
                        };
                        if let Err(error) = start_attempt(
                            delivery,
                            d,
                            &mut self.wheel,
                            &mut self.in_flight_count,
                            &mut self.fresh_pending,
                            attempt,
                            now,
                        ) {
                            panic!("bug: a due delivery cannot start its next attempt: {error}");
                        }
                        drop_stale(&mut w.queue, &self.deliveries, webhook);
                    }
                    crate::health::Admit::At(at) => {
                        if w.wake.is_none_or(|(_, due)| due > at) {
                            if let Some((old, _)) = w.wake.take() {
                                self.wheel.cancel(old);
                            }
                            let timer =
                                self.wheel.insert(at, Timer::Webhook(Box::new(key.clone())));
                            w.wake = Some((timer, at));
                        }
                        break;
                    }
                    crate::health::Admit::AfterOutcome => break,
                }
            }
        }
        self.ready_webhooks.extend(leftover);
        self.fail_deliveries(now, no_secret, DeliveryError::NoLiveSecret);
        self.sign_and_send(wall_ms, &mut plans, bodies);
        self.plans = plans;
    }

    /// Marks attempt `attempt` of a pending delivery in flight, started at `at_ms`.
    ///
    /// Being in flight is not durable state, so this is the one change live handling
    /// makes without a record (everything else goes through `emit` and `apply`): the
    /// outcome's `AttemptFinished` record carries the attempt and implies its start, and
    /// a journal that ends before the outcome leaves the delivery due, with the same
    /// attempt number to make, exactly as a crash while the request was out would.
    /// The mark is undone the same way when the delivery ends without the outcome
    /// (`finish`), so live state is always the journal's state plus the attempts in
    /// flight. Replay uses it for `AttemptStarted` records of older journals.
    pub(super) fn mark_in_flight(
        &mut self,
        delivery: DeliveryId,
        attempt: u32,
        at_ms: u64,
    ) -> Result<(), String> {
        let Some(d) = pending_mut(&mut self.deliveries, delivery) else {
            return Ok(());
        };
        start_attempt(
            delivery,
            d,
            &mut self.wheel,
            &mut self.in_flight_count,
            &mut self.fresh_pending,
            attempt,
            at_ms,
        )?;
        let (tenant, webhook) = (
            TenantId::clone(&d.event.tenant),
            WebhookId::clone(&d.webhook),
        );
        self.drop_stale_queue_head(&tenant, &webhook);
        Ok(())
    }

    /// Pops the entries at the head of a webhook's queue that are no longer due (started,
    /// rescheduled or ended since they were queued): live, the delivery just started is
    /// at the head; on replay, outcomes of deliveries never marked in flight leave their
    /// entries behind, and this keeps a long replay from piling them up.
    pub(super) fn drop_stale_queue_head(&mut self, tenant: &TenantId, webhook: &WebhookId) {
        if let Some(w) = webhook_state_mut(&mut self.tenants, tenant, webhook) {
            drop_stale(&mut w.queue, &self.deliveries, webhook);
        }
    }

    /// When [`Dispatcher::tick`] should next be called: the earliest timer, or the
    /// current time when work is ready (left over from a tick that hit
    /// [`DispatcherConfig::sends_per_tick_max`], or made ready by an input since the last
    /// tick). `None` when nothing is scheduled.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if !self.ready_webhooks.is_empty() || !self.endings.is_empty() {
            return Some(self.now_ms);
        }
        self.wheel.next_deadline_ms()
    }
}

/// Attempt `attempt` of pending delivery `d` in flight from `at_ms`
/// ([`Dispatcher::mark_in_flight`] without the webhook's queue): off the wheel, counted in
/// flight, its attempt set.
fn start_attempt(
    delivery: DeliveryId,
    d: &mut Delivery,
    wheel: &mut TimingWheel<Timer>,
    in_flight_count: &mut usize,
    fresh_pending: &mut usize,
    attempt: u32,
    at_ms: u64,
) -> Result<(), String> {
    if attempt < d.attempt.max(1) {
        return Err(format!(
            "delivery {delivery} starts attempt {attempt} after attempt {}",
            d.attempt
        ));
    }
    if let Stage::Scheduled(key) = d.stage {
        wheel.cancel(key);
    }
    if d.stage != Stage::InFlight {
        *in_flight_count += 1;
    }
    d.stage = Stage::InFlight;
    set_attempt(fresh_pending, d, attempt);
    d.set_due_ms(None);
    d.outcomes_mut().attempt_started(attempt, at_ms);
    Ok(())
}

/// Pops the entries at the head of `webhook`'s `queue` that are no longer due
/// ([`Dispatcher::drop_stale_queue_head`] with the queue at hand).
fn drop_stale(queue: &mut VecDeque<DeliveryId>, deliveries: &Deliveries, webhook: &WebhookId) {
    while let Some(front) = queue.front() {
        let due = deliveries
            .get(front)
            .is_some_and(|d| d.stage == Stage::Waiting && *d.webhook == *webhook);
        if due {
            break;
        }
        queue.pop_front();
    }
}
