//! Replay: the one `apply` of a record (live and recovered), recovery's end, and
//! checkpoints.

use std::borrow::Cow;

use super::outcome::LogOrder;
use super::*;
use crate::record::{EncodeError, RecordBuffer};

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
        // Each outcome moves the clock on as it is applied, as it did live.
        Record::AttemptsFinished(r) => r.first().map_or(0, |o| o.at_ms),
        Record::TenantPurged(r) => r.at_ms,
    }
}

/// Delivery `id` as a record names it, if it is within the range of ids a dispatcher
/// hands out and holds ([`DELIVERY_ID_END`]); a record past it is refused as invalid
/// rather than held.
fn delivery_id_of_record(id: u64) -> Result<DeliveryId, String> {
    if id >= DELIVERY_ID_END {
        return Err(format!(
            "delivery id {id:#x} is past the end of their range"
        ));
    }
    Ok(DeliveryId(id))
}

/// A replayed event's body: the position the journal holds it at when known (and of
/// the record's length), else a copy of the record's bytes.
fn event_body(bytes: &[u8], at: Option<&Option<BodyPos>>) -> EventBody {
    match at {
        Some(Some(at)) if at.len as usize == bytes.len() && !bytes.is_empty() => {
            EventBody::stored(*at)
        }
        _ => EventBody::held(Arc::from(bytes)),
    }
}

impl Dispatcher {
    /// Applies one journal record during recovery, in journal order, before any other
    /// input. Emits nothing. Call [`Dispatcher::replay_finished`] after the last record.
    ///
    /// Live handling changes state through the same function (it applies each record
    /// it emits), so a replayed journal rebuilds what the live dispatcher held.
    pub fn replay(&mut self, record: &Record) -> Result<(), ReplayError> {
        self.replay_located(record, &[])
    }

    /// [`Dispatcher::replay`] of a record whose envelopes the journal holds at
    /// `bodies` ([`crate::session::recover`] finds them with
    /// [`Record::decode_located`]): for an `EventAccepted` its body, for a checkpoint
    /// part each event's, by index (`None`, or a position of another length, keeps the
    /// record's copy in memory). The events keep the positions instead of copies; see
    /// [`crate::body`].
    pub fn replay_located(
        &mut self,
        record: &Record,
        bodies: &[Option<BodyPos>],
    ) -> Result<(), ReplayError> {
        self.replaying = true;
        // Replayed records are durable: nothing waits for them.
        self.apply(record, AppendId(0), bodies)?;
        self.assert_counts();
        Ok(())
    }

    /// The one place state changes by a record, live (`append` is the id just assigned:
    /// an event's deliveries wait until it is durable) and in replay (`AppendId(0)`:
    /// already durable). `bodies`: where the journal holds the record's envelopes, when
    /// known (see [`Dispatcher::replay_located`]).
    pub(super) fn apply(
        &mut self,
        record: &Record,
        append: AppendId,
        bodies: &[Option<BodyPos>],
    ) -> Result<(), ReplayError> {
        let kind = record.kind();
        self.applied += 1;
        self.advance_clock(record_time_ms(record));
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
                self.skip_past_generated_event_id(r.event_id.as_str());
                let tenant = self
                    .tenant_of_record(&r.tenant)
                    .map_err(|e| invalid(e.to_string()))?;
                let event_id = r.event_id.clone();
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
                    event_type: self
                        .event_type_of_record(&r.event_type)
                        .map_err(|e| invalid(e.to_string()))?,
                    body: if append != AppendId(0) && self.envelopes_reported {
                        EventBody::awaiting(r.body.len())
                    } else {
                        event_body(&r.body, bodies.first())
                    },
                    accepted_at_ms: r.at_ms,
                });
                let mut created = SmallVec::<[DeliveryId; 2]>::with_capacity(r.deliveries.len());
                for d in &r.deliveries {
                    let webhook = self
                        .webhook_of_record(&event.tenant, &d.webhook)
                        .map_err(|e| invalid(e.to_string()))?;
                    let delivery = delivery_id_of_record(d.delivery).map_err(invalid)?;
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
            // Written by older builds only: a start is now implied by its outcome.
            Record::AttemptStarted(r) => self
                .mark_in_flight(DeliveryId(r.delivery), r.attempt, r.at_ms)
                .map_err(invalid)?,
            Record::AttemptFinished(r) => self.apply_attempt_finished(r).map_err(invalid)?,
            Record::AttemptsFinished(outcomes) => {
                for outcome in outcomes {
                    self.apply_outcome(outcome).map_err(invalid)?;
                }
            }
            Record::DeliveryFinished(r) => {
                let status = DeliveryStatus::from_name(&r.status)
                    .filter(|s| s.is_final())
                    .ok_or_else(|| invalid(format!("status {:?}", r.status)))?;
                let error = r.reason.as_deref().and_then(DeliveryError::from_name);
                self.finish(r.at_ms, DeliveryId(r.delivery), status, error)
                    .map_err(invalid)?;
            }
            Record::DeliveryRequeued(r) => {
                self.requeue(r.at_ms, DeliveryId(r.delivery), r.due_ms, r.attempts_max);
            }
            Record::Checkpoint(c) => self.load_checkpoint(c, bodies).map_err(invalid)?,
            Record::TenantPurged(r) => {
                let tenant = TenantId::parse(&r.tenant).map_err(|e| invalid(e.to_string()))?;
                self.apply_purge(&tenant, r.deliveries as usize, r.keys as usize);
            }
        }
        Ok(())
    }

    /// Applies one outcome of a [`Record::AttemptsFinished`] (live as it joins one, and
    /// replayed), moving the clock to its time first as a record of its own would.
    pub(super) fn apply_outcome(
        &mut self,
        outcome: &record::AttemptFinished,
    ) -> Result<(), String> {
        self.advance_clock(outcome.at_ms);
        self.apply_attempt_finished(outcome)
    }

    /// Ends recovery: attempts that were in flight when the journal ended are due again
    /// now (with the same attempt number: they are repeated, not counted twice);
    /// deliveries of webhooks that are gone or disabled are ended (journaled); endpoint
    /// in-flight counts start from zero, and an endpoint that was failing is probed first
    /// ([`crate::health::Health::restarted`]). Inputs may follow.
    pub fn replay_finished(&mut self, now_ms: u64) {
        self.order_finished();
        self.replaying = false;
        let now = self.advance_clock(now_ms);
        for t in self.tenants.values_mut() {
            for w in t.webhooks.values_mut() {
                w.health.restarted(&self.config.health);
            }
        }
        let pending: Vec<(DeliveryId, Stage, TenantId, WebhookId)> = self
            .deliveries
            .iter()
            .filter(|(_, d)| !d.status.is_final())
            .map(|(id, d)| {
                (
                    *id,
                    d.stage,
                    TenantId::clone(&d.event.tenant),
                    WebhookId::clone(&d.webhook),
                )
            })
            .collect();
        // Deliveries of webhooks that are gone or disabled end as a live ending would end
        // them, a bounded number per tick from the first one on: none is ended here, so
        // recovery queues no records (a journal at its segment limit can then take the
        // checkpoint that frees it) and a large backlog does not hold the start.
        let mut orphans: BTreeMap<(TenantId, WebhookId), (usize, DeliveryError)> = BTreeMap::new();
        for (delivery, stage, tenant, webhook) in pending {
            let active =
                webhook_state(&self.tenants, &tenant, &webhook).map(|w| w.spec.status.is_active());
            match active {
                None | Some(false) => {
                    let error = if active.is_none() {
                        DeliveryError::WebhookDeleted
                    } else {
                        DeliveryError::WebhookDisabled
                    };
                    orphans.entry((tenant, webhook)).or_insert((0, error)).0 += 1;
                }
                Some(true) if stage == Stage::InFlight => {
                    if let Some(d) = self.deliveries.get_mut(&delivery) {
                        set_attempt(&mut self.fresh_pending, d, d.attempt.saturating_sub(1));
                        d.stage = Stage::Waiting;
                    }
                    count_down(&mut self.in_flight_count, "in-flight deliveries");
                    self.schedule(delivery, now);
                }
                Some(true) => {}
            }
        }
        for ((tenant, webhook), (pending, error)) in orphans {
            self.queue_ending(&tenant, &webhook, pending, error);
        }
        #[cfg(debug_assertions)]
        self.recount();
    }

    /// A snapshot of the live state in one record, for `Journal::checkpoint`: the
    /// single part of [`Dispatcher::checkpoint_parts`] with no size limit. Fine for
    /// small states of a driver that keeps bodies in memory (tests); a shard writes
    /// parts with [`Dispatcher::checkpoint_parts_with`].
    pub fn checkpoint(&self, now_ms: u64) -> Record {
        let mut parts = self.checkpoint_parts(now_ms, usize::MAX);
        let part = parts.next();
        // Invariant: without a size limit every item fits the first part.
        debug_assert!(
            parts.next().is_none(),
            "an unlimited checkpoint is one part"
        );
        part.expect("a checkpoint has at least one part")
    }

    /// A snapshot of the live state as [`Record::Checkpoint`] parts of about
    /// `part_bytes_target` encoded bytes each (an item larger than that gets a part of
    /// its own), for `Journal::begin_checkpoint`: each part one checkpoint frame, in
    /// order. The first part resets the state on replay and every later one adds to it,
    /// so replay reads one part at a time and a checkpoint of any size fits frames of
    /// bounded size. Take it after draining every queued command into the journal, so
    /// that the checkpoint follows every record it summarises.
    ///
    /// It holds every webhook, every remembered idempotency key, every delivery
    /// (pending, or finished and still in the log) and the event bodies of those not
    /// successful (successful deliveries cannot be retried:
    /// [`OpError::AlreadySucceeded`]). An event's body is written once per part that
    /// holds one of its deliveries: an event's deliveries have consecutive ids and
    /// stay in one part, so once, unless they alone pass twice the target (an event
    /// fanned out to thousands of webhooks with large responses kept): then they
    /// continue in the next part, which repeats the event, and replay shares the first
    /// copy. So no part grows without bound, whatever one event's fan-out.
    ///
    /// For a driver that keeps every body in memory; otherwise
    /// [`Dispatcher::checkpoint_parts_with`] (copying a body held only by its position
    /// without a store is a bug and panics).
    pub fn checkpoint_parts(&self, now_ms: u64, part_bytes_target: usize) -> CheckpointParts<'_> {
        self.checkpoint_parts_with(now_ms, part_bytes_target, &Held)
    }

    /// [`Dispatcher::checkpoint_parts`], reading the bodies the driver stored
    /// ([`Dispatcher::body_stored`]) from `bodies`. After writing each part, tell the
    /// parts where it went ([`CheckpointParts::stored`]); once the checkpoint is complete,
    /// hand [`CheckpointParts::into_moves`] to [`Dispatcher::checkpoint_stored`], so that
    /// the events keep the checkpoint's copies of their bodies, which outlive the
    /// segments the checkpoint lets the journal delete.
    pub fn checkpoint_parts_with<'a>(
        &'a self,
        now_ms: u64,
        part_bytes_target: usize,
        bodies: &'a dyn BodyStore,
    ) -> CheckpointParts<'a> {
        assert!(
            !self.deliveries.is_frozen(),
            "bug: a checkpoint taken whole while another is being built"
        );
        CheckpointParts {
            dispatcher: self,
            bodies,
            cursor: self.checkpoint_cursor(now_ms, part_bytes_target),
        }
    }

    /// Begins a checkpoint of the state as it is now, to be written a part at a time
    /// ([`Dispatcher::checkpoint_part`]) while other input goes on between parts, so
    /// that no single turn pays for the whole state. Replay loads it and then every
    /// record journaled after the moment it began, so journal it as a checkpoint that
    /// covers the records journaled so far (take it after draining every queued
    /// command into the journal, as [`Dispatcher::checkpoint_parts`]).
    ///
    /// Its first parts hold the webhooks and the idempotency keys: write them before
    /// any other input ([`Checkpoint::registry_written`]; a record applied before that
    /// is a bug and panics). The deliveries follow, as they were when it began: a
    /// delivery changed or removed before its part is written is written from a copy
    /// taken at its first change ([`Dispatcher::checkpoint_copies`] counts them). End it with
    /// [`Dispatcher::finish_checkpoint`] once the journal holds every part, or
    /// [`Dispatcher::abandon_checkpoint`]. One at a time.
    pub fn begin_checkpoint(&mut self, now_ms: u64, part_bytes_target: usize) -> Checkpoint {
        let cursor = self.checkpoint_cursor(now_ms, part_bytes_target);
        self.deliveries.freeze(cursor.upper);
        Checkpoint { cursor }
    }

    /// The next part of `checkpoint` ([`Dispatcher::begin_checkpoint`]), reading the
    /// bodies the driver stored from `bodies`; `None` once every part was returned.
    /// After writing it, tell the checkpoint where it went ([`Checkpoint::stored`]).
    ///
    /// Each part is built and encoded ([`Dispatcher::checkpoint_part_into`]), then
    /// decoded: for inspection and tests. A driver writes the encoded part.
    pub fn checkpoint_part(
        &mut self,
        checkpoint: &mut Checkpoint,
        bodies: &dyn BodyStore,
    ) -> Option<Record> {
        read_back(|buffer| self.checkpoint_part_into(checkpoint, bodies, buffer))
    }

    /// The next part of `checkpoint`, encoded into `buffer` (cleared first) as the
    /// payload of a [`Record::Checkpoint`], straight from the dispatcher's own ids,
    /// responses and bodies (no owned record is built first); `Ok(false)` once every
    /// part was returned. After writing it, tell the checkpoint where it went
    /// ([`Checkpoint::stored`]). An error leaves the checkpoint to be abandoned.
    pub fn checkpoint_part_into(
        &mut self,
        checkpoint: &mut Checkpoint,
        bodies: &dyn BodyStore,
        buffer: &mut RecordBuffer,
    ) -> Result<bool, EncodeError> {
        let cursor = &mut checkpoint.cursor;
        if !cursor.registry_written() {
            // Webhooks and keys are read as they are now, not from copies.
            assert_eq!(
                self.applied, cursor.applied_at_begin,
                "bug: a record was applied before a checkpoint's webhooks and keys were written"
            );
        }
        let encoded = self.encode_next_part(cursor, bodies, buffer);
        if let Some(after) = cursor.after_delivery {
            self.deliveries.written_through(after);
        }
        encoded
    }

    /// Ends `checkpoint` once the journal holds all its parts and its end (before it can
    /// be durable, with no other input in between): the events it copied keep the
    /// checkpoint's copies of their bodies ([`Dispatcher::checkpoint_stored`]).
    pub fn finish_checkpoint(&mut self, checkpoint: Checkpoint) {
        assert!(
            checkpoint.cursor.done,
            "bug: a checkpoint finished before its last part"
        );
        self.deliveries.thaw();
        self.checkpoint_stored(checkpoint.cursor.moves);
    }

    /// Drops `checkpoint` unfinished (the journal abandoned it): the copies it kept go.
    pub fn abandon_checkpoint(&mut self, checkpoint: Checkpoint) {
        drop(checkpoint);
        self.deliveries.thaw();
    }

    /// Deliveries the checkpoint being built keeps a copy of (changed or removed since
    /// it began, and not yet written): what it costs in memory beyond the live state.
    pub fn checkpoint_copies(&self) -> usize {
        self.deliveries.saved_len()
    }

    fn checkpoint_cursor(&self, now_ms: u64, part_bytes_target: usize) -> CheckpointCursor {
        let webhooks = self
            .tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.webhooks
                    .keys()
                    .map(move |id| (tenant.clone(), id.clone()))
            })
            .collect();
        CheckpointCursor {
            at_ms: now_ms.max(self.now_ms),
            next_delivery: self.next_delivery,
            upper: DeliveryId(self.next_delivery),
            keys_len: self.keys.order.len(),
            applied_at_begin: self.applied,
            part_bytes_target: part_bytes_target.max(1),
            part: 0,
            webhooks,
            next_webhook: 0,
            next_key: 0,
            after_delivery: None,
            done: false,
            runs: Vec::new(),
            part_has_bodies: false,
            moves: BodyMoves::default(),
        }
    }

    /// The checkpoint whose parts gave `moves` is complete: the events it copied keep
    /// the checkpoint's copies of their bodies (see
    /// [`Dispatcher::checkpoint_parts_with`]). Call it before the journal may delete the
    /// segments the checkpoint replaces (before the checkpoint can be durable), with no
    /// other input in between. An event the checkpoint left the body out of (every
    /// delivery succeeded: nothing will send or copy it again) keeps what it had.
    pub fn checkpoint_stored(&mut self, moves: BodyMoves) {
        for m in moves.moves {
            let at = m.at;
            // A delivery of the run still held (the others may have left the log since
            // the part was written). Ids are never reused, so every delivery in the
            // run's range is one of the event's; they share one copy of it, and those
            // still held are neighbours.
            let Some(anchor) = self
                .deliveries
                .range(m.first..=m.last)
                .next()
                .map(|(id, _)| *id)
            else {
                continue;
            };
            let check_len = |event: &EventData| {
                assert_eq!(
                    event.body.len(),
                    at.len as usize,
                    "bug: a checkpoint moved event {}'s body to a copy of another length",
                    event.id
                );
            };
            if let Some(event) = self
                .deliveries
                .get_mut(&anchor)
                .and_then(|d| Arc::get_mut(&mut d.event))
            {
                // The event's only holder: its body moves in place, without a second
                // event allocated beside the first and the first freed (a checkpoint of
                // a backlog moves hundreds of thousands).
                check_len(event);
                event.body = EventBody::stored(at);
                continue;
            }
            let Some(old) = self.deliveries.get(&anchor).map(|d| Arc::clone(&d.event)) else {
                continue;
            };
            check_len(&old);
            let moved = Arc::new(old.with_body(EventBody::stored(at)));
            let later = self.deliveries.range_mut_from(anchor);
            for (_, d) in later.take_while(|(_, d)| Arc::ptr_eq(&d.event, &old)) {
                d.event = Arc::clone(&moved);
            }
            let earlier = self.deliveries.range_mut_to(anchor).rev();
            for (_, d) in earlier.take_while(|(_, d)| Arc::ptr_eq(&d.event, &old)) {
                d.event = Arc::clone(&moved);
            }
        }
    }

    /// `tenant`, sharing the registry's copy of the id when the tenant has webhooks: an
    /// event holds its tenant's id, and a backlog of a million events would otherwise
    /// hold a million copies of it.
    fn shared_tenant(&mut self, tenant: TenantId) -> Arc<TenantId> {
        match self.tenants.get_mut(&tenant) {
            Some(t) => Arc::clone(t.shared_id.get_or_insert_with(|| Arc::new(tenant))),
            None => Arc::new(tenant),
        }
    }

    /// The tenant named `text` as a record holds it, shared as
    /// [`Dispatcher::shared_tenant`] shares it: a tenant in the registry is not parsed
    /// again (its id was checked when it was), any other is parsed and checked now.
    /// Replay and live handling read one per event, almost always a known one.
    fn tenant_of_record(&mut self, text: &str) -> Result<Arc<TenantId>, IdError> {
        if let Some(shared) = self.tenants.get(text).and_then(|t| t.shared_id.as_ref()) {
            return Ok(Arc::clone(shared));
        }
        let tenant = match self.tenants.get_key_value(text) {
            Some((known, _)) => known.clone(),
            None => TenantId::parse(text)?,
        };
        Ok(self.shared_tenant(tenant))
    }

    /// The event type named `text`, shared as [`Dispatcher::shared_event_type`] shares
    /// it; parsed and checked only when it is not among the shared ones.
    fn event_type_of_record(&mut self, text: &str) -> Result<Arc<EventType>, IdError> {
        if let Some(shared) = self.event_types.get(text) {
            return Ok(Arc::clone(shared));
        }
        Ok(self.shared_event_type(EventType::parse(text)?))
    }

    /// Webhook `text` of `tenant`: the registry's shared copy of the id when the webhook
    /// is there (each pending delivery names its webhook, and a million of them would
    /// otherwise hold a million copies of the id), else parsed and checked now.
    fn webhook_of_record(&self, tenant: &TenantId, text: &str) -> Result<Arc<WebhookId>, IdError> {
        match self.tenants.get(tenant).and_then(|t| t.webhooks.get(text)) {
            Some(w) => Ok(Arc::clone(&w.shared_id)),
            None => Ok(Arc::new(WebhookId::parse(text)?)),
        }
    }

    /// `event_type`, sharing one copy of each type among the events that carry it (a
    /// backlog of a million events has a handful of types), up to
    /// [`EVENT_TYPES_SHARED_MAX`] distinct types; types beyond that keep their own copy.
    fn shared_event_type(&mut self, event_type: EventType) -> Arc<EventType> {
        if let Some(shared) = self.event_types.get(&event_type) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(event_type.clone());
        if self.event_types.len() < EVENT_TYPES_SHARED_MAX {
            self.event_types.insert(event_type, Arc::clone(&shared));
        }
        shared
    }

    /// Applies one checkpoint part: the first ([`record::Checkpoint::part`] 0) replaces
    /// the whole state, later ones add their webhooks, keys and deliveries.
    pub(super) fn load_checkpoint(
        &mut self,
        c: &record::Checkpoint,
        bodies: &[Option<BodyPos>],
    ) -> Result<(), String> {
        if c.part == 0 {
            let config = self.config.clone();
            let now = self.now_ms;
            *self = Dispatcher::new(config, now);
        }
        self.replaying = true;
        if c.next_delivery > DELIVERY_ID_END {
            return Err(format!(
                "the next delivery id {:#x} is past the end of their range",
                c.next_delivery
            ));
        }
        self.next_delivery = self.next_delivery.max(c.next_delivery);
        for snap in &c.webhooks {
            let (tenant, id, spec) = webhook_from_rec(&snap.webhook)?;
            self.apply_upsert(c.at_ms, tenant.clone(), id.clone(), spec);
            if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &id) {
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
                seq: 0,
            };
            self.keys.insert(
                &tenant,
                &k.idempotency.key,
                entry,
                self.config.idempotency_keys_max,
                self.config.idempotency_keys_per_tenant_max,
            );
        }
        // An event whose deliveries did not fit one part continues at the start of the
        // next: share the copy the previous part made (the delivery loaded last), as
        // the live state shares one event among its deliveries.
        let continued = if c.part > 0 {
            self.deliveries
                .values()
                .next_back()
                .map(|d| Arc::clone(&d.event))
        } else {
            None
        };
        let mut events = Vec::with_capacity(c.events.len());
        for (index, e) in c.events.iter().enumerate() {
            let body = || event_body(&e.body, bodies.get(index));
            if let Some(previous) = continued.as_ref().filter(|p| {
                events.is_empty()
                    && p.id.as_str() == e.event_id
                    && p.tenant.as_str() == e.tenant
                    && p.accepted_at_ms == e.accepted_at_ms
                    && p.event_type.as_str() == e.event_type
                    && (p.body.is_empty() || e.body.is_empty() || p.body.len() == e.body.len())
            }) {
                if e.body.is_empty() || !previous.body.is_empty() {
                    events.push(Arc::clone(previous));
                    continue;
                }
                // The previous part held only deliveries that no longer need the body
                // (successful ones) and left it out; this part carries it. Give the
                // event with its body to the earlier deliveries too (consecutive ids,
                // the last ones loaded).
                let with_body = Arc::new(previous.with_body(body()));
                for d in self.deliveries.values_mut().rev() {
                    if !Arc::ptr_eq(&d.event, previous) {
                        break;
                    }
                    d.event = Arc::clone(&with_body);
                }
                events.push(with_body);
                continue;
            }
            events.push(Arc::new(EventData {
                tenant: self
                    .tenant_of_record(&e.tenant)
                    .map_err(|e| e.to_string())?,
                id: EventId::parse(&e.event_id).map_err(|e| e.to_string())?,
                event_type: self
                    .event_type_of_record(&e.event_type)
                    .map_err(|e| e.to_string())?,
                body: body(),
                accepted_at_ms: e.accepted_at_ms,
            }));
        }
        for s in &c.deliveries {
            let event = events
                .get(s.event as usize)
                .ok_or_else(|| format!("delivery {} names event #{}", s.delivery, s.event))?;
            let webhook = self
                .webhook_of_record(&event.tenant, &s.webhook)
                .map_err(|e| e.to_string())?;
            let status = DeliveryStatus::from_name(&s.status)
                .ok_or_else(|| format!("status {:?}", s.status))?;
            let delivery = delivery_id_of_record(s.delivery)?;
            self.insert_pending(delivery, event, webhook, s.attempts_max, s.updated_at_ms);
            if let Some(d) = self.deliveries.get_mut(&delivery) {
                set_attempt(&mut self.fresh_pending, d, s.attempt);
                let mut outcomes = Outcomes::NONE;
                outcomes.last_status_code = s.last_status;
                outcomes.last_error = s.last_error.as_deref().and_then(DeliveryError::from_name);
                outcomes.set_last_latency_ms(
                    (s.last_latency_ms != u64::MAX).then_some(s.last_latency_ms),
                );
                outcomes.set_last_response(
                    &s.last_response_body,
                    headers_of_rec(&s.last_response_headers),
                );
                outcomes.attempts = s
                    .attempts
                    .iter()
                    .rev()
                    .take(ATTEMPT_HISTORY_MAX)
                    .rev()
                    .map(|a| {
                        Attempt::from_summary(&AttemptSummary {
                            attempt: a.attempt,
                            started_at_ms: a.started_at_ms,
                            finished_at_ms: a.finished_at_ms,
                            response_status: (a.status != 0).then_some(a.status),
                            response_time_ms: a.latency_ms,
                            error: a.error.as_deref().and_then(DeliveryError::from_name),
                        })
                    })
                    .collect();
                // Collecting rounds the heap's room up to a power of two.
                outcomes.attempts.shrink_to_fit();
                d.set_outcomes(outcomes);
            }
            if status.is_final() {
                self.finish_as(s.updated_at_ms, delivery, status, None, LogOrder::Loaded)?;
            } else if s.in_flight {
                if let Some(d) = self.deliveries.get_mut(&delivery) {
                    d.stage = Stage::InFlight;
                    d.set_due_ms(None);
                }
                self.in_flight_count += 1;
            } else {
                let due = s.next_attempt_at_ms.unwrap_or(c.at_ms);
                if due > c.at_ms || !self.make_due_at(delivery, due) {
                    self.schedule(delivery, due);
                }
            }
            if let Some(d) = self.deliveries.get_mut(&delivery) {
                d.updated_at_ms = s.updated_at_ms;
            }
        }
        Ok(())
    }
}

/// Estimated encoded bytes of items in a checkpoint part: rkyv's fixed layout of each
/// item plus its variable bytes, rounded up so that a part stays near its target.
mod estimate {
    use super::*;

    pub(super) fn webhook(rec: &record::WebhookRec) -> usize {
        let strings = rec.tenant.len()
            + rec.webhook.len()
            + rec.url.len()
            + rec.scheme.len()
            + rec.stripe_header.as_ref().map_or(0, String::len)
            + rec.disabled_reason.as_ref().map_or(0, String::len)
            + rec.description.as_ref().map_or(0, String::len);
        let filters: usize = rec.filters.iter().map(|f| f.len() + 16).sum();
        let secrets: usize = rec.secrets.iter().map(|s| s.value.len() + 32).sum();
        let headers: usize = rec
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 32)
            .sum();
        let delays = rec.retry_delays_ms.as_ref().map_or(0, |d| d.len() * 8);
        256 + strings + filters + secrets + headers + delays
    }

    pub(super) fn key(tenant: &TenantId, key: &str, entry: &KeyEntry) -> usize {
        128 + tenant.as_str().len() + key.len() + entry.event_id.as_str().len()
    }

    pub(super) fn event(e: &EventData, with_body: bool) -> usize {
        128 + e.tenant.as_str().len()
            + e.id.as_str().len()
            + e.event_type.as_str().len()
            + if with_body { e.body.len() } else { 0 }
    }

    pub(super) fn delivery(webhook: &WebhookId, d: &Delivery) -> usize {
        let (header_count, header_text_bytes) = d.last_headers_size();
        let headers = header_text_bytes + 32 * header_count;
        let attempts: usize = d
            .attempts()
            .iter()
            .map(|a| 64 + a.error.map_or(0, |e| e.name().len()))
            .sum();
        192 + webhook.as_str().len() + d.last_body().len() + headers + attempts
    }
}

/// The parts of a checkpoint, built one at a time; see [`Dispatcher::checkpoint_parts`].
pub struct CheckpointParts<'a> {
    dispatcher: &'a Dispatcher,
    bodies: &'a dyn BodyStore,
    cursor: CheckpointCursor,
}

/// A checkpoint written a part at a time between other input; see
/// [`Dispatcher::begin_checkpoint`].
#[must_use = "a checkpoint keeps copies of what changes until it is finished or abandoned"]
pub struct Checkpoint {
    cursor: CheckpointCursor,
}

/// Where a checkpoint's parts have got to (shared by both ways of writing one).
struct CheckpointCursor {
    at_ms: u64,
    next_delivery: u64,
    /// Deliveries from this id on were created after the checkpoint began.
    upper: DeliveryId,
    /// Keys remembered when it began (later ones are replayed from their records).
    keys_len: usize,
    /// [`Dispatcher::applied`] when it began.
    applied_at_begin: u64,
    part_bytes_target: usize,
    part: u32,
    webhooks: Vec<(TenantId, WebhookId)>,
    next_webhook: usize,
    /// Index into the idempotency keys' order.
    next_key: usize,
    /// The last delivery written.
    after_delivery: Option<DeliveryId>,
    done: bool,
    /// The part returned last: each run of deliveries sharing an event, with the
    /// event's index in the part.
    runs: Vec<Run>,
    /// Whether the part returned last holds any event's body (a part of successful
    /// deliveries holds none, and needs no locating).
    part_has_bodies: bool,
    moves: BodyMoves,
}

/// Consecutive deliveries of one part that share an event.
struct Run {
    first: DeliveryId,
    last: DeliveryId,
    index: u32,
}

/// Where a written checkpoint holds the bodies of the events it copied: built by
/// [`CheckpointParts::stored`], applied by [`Dispatcher::checkpoint_stored`].
#[derive(Default)]
pub struct BodyMoves {
    moves: Vec<Move>,
}

impl std::fmt::Debug for BodyMoves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyMoves")
            .field("events", &self.moves.len())
            .finish()
    }
}

/// An event whose body a checkpoint part holds: the part's deliveries of it (their ids
/// name it, as ids are never reused) and where the body now lies. 32 bytes and no
/// reference to the event: a checkpoint of a million pending events holds a million.
struct Move {
    first: DeliveryId,
    last: DeliveryId,
    at: BodyPos,
}

impl CheckpointCursor {
    /// Whether every webhook and key was written.
    fn registry_written(&self) -> bool {
        self.next_webhook >= self.webhooks.len() && self.next_key >= self.keys_len
    }

    fn stored(&mut self, payload: &[u8], at: PayloadAt) -> Result<(), record::DecodeError> {
        if !self.part_has_bodies {
            // Nothing to locate (the usual part of a delivery log of successes): skip
            // validating the part again.
            self.runs.clear();
            return Ok(());
        }
        let spans = record::body_spans(payload)?;
        let unknown = |reason: String| record::DecodeError::Invalid {
            kind: record::kind::CHECKPOINT,
            reason,
        };
        for run in self.runs.drain(..) {
            let index = run.index;
            // `None`: the part left the body out (every delivery of the event in it
            // succeeded). A body the part holds must get a position: an event left
            // pointing at a segment the checkpoint lets go would lose its body.
            let body = match spans.get(index as usize) {
                Some(Some(span)) => Some(at.body(*span).ok_or_else(|| {
                    unknown(format!(
                        "event #{index}'s body lies past what a position names"
                    ))
                })?),
                Some(None) => None,
                None => return Err(unknown(format!("the part has no event #{index}"))),
            };
            if let Some(at) = body {
                self.moves.moves.push(Move {
                    first: run.first,
                    last: run.last,
                    at,
                });
            }
        }
        Ok(())
    }
}

impl CheckpointParts<'_> {
    /// The part returned last, encoded as `payload` (the bytes of its
    /// [`Record::encode`]), was written with its payload at `at`: note where each event's
    /// body now lies. An error (the payload is not that part) means the positions are
    /// unknown: abandon the checkpoint.
    pub fn stored(&mut self, payload: &[u8], at: PayloadAt) -> Result<(), record::DecodeError> {
        self.cursor.stored(payload, at)
    }

    /// The bodies' new positions, for [`Dispatcher::checkpoint_stored`] once the
    /// checkpoint is complete.
    pub fn into_moves(self) -> BodyMoves {
        self.cursor.moves
    }
}

impl Checkpoint {
    /// See [`CheckpointParts::stored`].
    pub fn stored(&mut self, payload: &[u8], at: PayloadAt) -> Result<(), record::DecodeError> {
        self.cursor.stored(payload, at)
    }

    /// Whether its webhooks and keys were written: other input may come between its
    /// parts from then on.
    pub fn registry_written(&self) -> bool {
        self.cursor.registry_written()
    }

    /// Whether every part was returned.
    pub fn is_done(&self) -> bool {
        self.cursor.done
    }

    /// Parts returned so far.
    pub fn parts(&self) -> u32 {
        self.cursor.part
    }
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("part", &self.cursor.part)
            .field("after_delivery", &self.cursor.after_delivery)
            .field("done", &self.cursor.done)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CheckpointParts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointParts")
            .field("part", &self.cursor.part)
            .field("after_delivery", &self.cursor.after_delivery)
            .finish_non_exhaustive()
    }
}

impl CheckpointParts<'_> {
    /// The next part encoded into `buffer` (cleared first), as a driver writes it (see
    /// [`Dispatcher::checkpoint_part_into`]); `Ok(false)` once every part was returned.
    pub fn next_into(&mut self, buffer: &mut RecordBuffer) -> Result<bool, EncodeError> {
        self.dispatcher
            .encode_next_part(&mut self.cursor, self.bodies, buffer)
    }
}

/// Each part encoded ([`CheckpointParts::next_into`]), then decoded: for inspection and
/// tests.
impl Iterator for CheckpointParts<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        read_back(|buffer| self.next_into(buffer))
    }
}

/// The part `encode` writes into a fresh buffer, read back as its record.
fn read_back(
    encode: impl FnOnce(&mut RecordBuffer) -> Result<bool, EncodeError>,
) -> Option<Record> {
    let mut buffer = RecordBuffer::new();
    let encoded = encode(&mut buffer).expect("bug: a checkpoint part that cannot be encoded");
    encoded.then(|| {
        Record::decode_checkpoint(&buffer).expect("bug: an encoded checkpoint part does not decode")
    })
}

impl Dispatcher {
    /// The next part of the checkpoint `c` walks, encoded into `buffer` (which it
    /// replaces); `Ok(false)` once every part was returned.
    fn encode_next_part(
        &self,
        c: &mut CheckpointCursor,
        bodies: &dyn BodyStore,
        buffer: &mut RecordBuffer,
    ) -> Result<bool, EncodeError> {
        let Some(part) = self.next_checkpoint_part(c, bodies) else {
            return Ok(false);
        };
        let (_, _, bytes) = part.encode_into(std::mem::take(buffer))?;
        *buffer = bytes;
        Ok(true)
    }

    /// The next part of the checkpoint `c` walks (see [`Dispatcher::checkpoint_parts`]),
    /// borrowing its strings and bodies from the dispatcher and `bodies`.
    fn next_checkpoint_part<'a>(
        &'a self,
        c: &mut CheckpointCursor,
        bodies: &'a dyn BodyStore,
    ) -> Option<record::out::CheckpointOut<'a>> {
        if c.done {
            return None;
        }
        let target = c.part_bytes_target;
        let mut bytes = 128;
        let full = |bytes: usize, items: usize| items > 0 && bytes >= target;
        let mut webhooks = Vec::new();
        while let Some((tenant, id)) = c.webhooks.get(c.next_webhook) {
            if full(bytes, webhooks.len()) {
                break;
            }
            c.next_webhook += 1;
            // Every webhook listed is still there: nothing is applied before the
            // webhooks and keys are written.
            let Some(w) = webhook_state(&self.tenants, tenant, id) else {
                continue;
            };
            let rec = webhook_to_rec(tenant, id, &w.spec);
            bytes += estimate::webhook(&rec);
            webhooks.push(record::WebhookSnap {
                webhook: rec,
                health: record::HealthRec {
                    consecutive_failures: w.health.consecutive_failures,
                    failing_since_ms: w.health.failing_since_ms,
                },
                created_at_ms: w.created_at_ms,
                updated_at_ms: w.updated_at_ms,
            });
        }
        let mut items = webhooks.len();
        // Every remembered key, oldest first (expired ones too: live and replayed
        // dispatchers forget them at the same accepted event).
        let mut idempotency = Vec::new();
        while c.next_key < c.keys_len {
            let Some((_, seq, tenant, key)) = self.keys.order.get(c.next_key) else {
                break;
            };
            if full(bytes, items) {
                break;
            }
            c.next_key += 1;
            let Some(entry) = self.keys.get(tenant, key).filter(|e| e.seq == *seq) else {
                continue;
            };
            bytes += estimate::key(tenant, key, entry);
            items += 1;
            idempotency.push(record::out::IdempotencySnapOut {
                tenant: Cow::Borrowed(tenant.as_str()),
                idempotency: record::out::IdempotencyRecOut {
                    key: Cow::Borrowed(key.as_ref()),
                    fingerprint: entry.fingerprint,
                },
                event_id: Cow::Borrowed(entry.event_id.as_str()),
                created_at_ms: entry.created_at_ms,
                accepted_at_ms: entry.accepted_at_ms,
            });
        }
        // Bodies are kept only for events with a delivery that may still be sent
        // (pending, failed or exhausted: retry and re-send need them); successful
        // deliveries stay in the log as metadata.
        let mut events: Vec<record::out::EventSnapOut<'a>> = Vec::new();
        let mut deliveries = Vec::new();
        let mut finished = true;
        let mut last_event: Option<*const EventData> = None;
        c.runs.clear();
        // The deliveries as they were when the checkpoint began.
        let snapshot = self.deliveries.snapshot_after(c.after_delivery, c.upper);
        for (id, delivery) in ReadAhead::new(snapshot) {
            // An event's deliveries (consecutive ids) stay in one part, so that replay
            // shares one copy of the event among them as the live state does.
            let same_event = last_event == Some(Arc::as_ptr(&delivery.event));
            if full(bytes, items) && (!same_event || bytes >= target.saturating_mul(2)) {
                finished = false;
                break;
            }
            last_event = Some(Arc::as_ptr(&delivery.event));
            let needs_body = delivery.status != DeliveryStatus::Success;
            let event: &'a EventData = &delivery.event;
            // An event's deliveries are created together with consecutive ids, so they
            // come one after another here: the event is written once, before its first
            // delivery in the part, and the others refer to it.
            match events.last_mut() {
                Some(snap) if same_event => {
                    if needs_body && snap.body.is_empty() && !event.body.is_empty() {
                        snap.body = Cow::Borrowed(event.body.bytes(bodies));
                        bytes += event.body.len();
                    }
                }
                _ => {
                    bytes += estimate::event(event, needs_body);
                    events.push(record::out::EventSnapOut {
                        tenant: Cow::Borrowed(event.tenant.as_str()),
                        event_id: Cow::Borrowed(event.id.as_str()),
                        event_type: Cow::Borrowed(event.event_type.as_str()),
                        accepted_at_ms: event.accepted_at_ms,
                        body: Cow::Borrowed(if needs_body {
                            event.body.bytes(bodies)
                        } else {
                            &[]
                        }),
                    });
                }
            }
            // Events are bounded by deliveries, which are bounded far below u32::MAX.
            let index = (events.len() - 1) as u32;
            match c.runs.last_mut() {
                Some(run) if same_event => run.last = id,
                _ => c.runs.push(Run {
                    first: id,
                    last: id,
                    index,
                }),
            }
            bytes += estimate::delivery(&delivery.webhook, delivery);
            items += 1;
            c.after_delivery = Some(id);
            deliveries.push(delivery_snap(id, index, delivery));
        }
        c.part_has_bodies = events.iter().any(|e| !e.body.is_empty());
        let part = c.part;
        c.part += 1;
        c.done = finished && c.registry_written();
        Some(record::out::CheckpointOut {
            at_ms: c.at_ms,
            next_delivery: c.next_delivery,
            part,
            webhooks,
            events,
            deliveries,
            idempotency,
        })
    }
}

/// Deliveries a checkpoint part is made of, read a batch ahead of their encoding.
const READ_AHEAD: usize = 16;

/// The deliveries a checkpoint walks, [`READ_AHEAD`] at a time, each batch's memory
/// read in three passes before any is encoded: the deliveries, then their outcomes and
/// events, then their kept responses. Each is a separate allocation (a finished
/// delivery's ~four cache misses, one after the other as the encoding reaches them);
/// a pass's reads do not depend on one another, so the processor has a batch's misses
/// in flight at once, and a delivery costs about a pass's wait per batch instead of
/// each miss in turn.
struct ReadAhead<'a, I: Iterator<Item = (DeliveryId, &'a Delivery)>> {
    inner: I,
    batch: std::collections::VecDeque<(DeliveryId, &'a Delivery)>,
}

impl<'a, I: Iterator<Item = (DeliveryId, &'a Delivery)>> ReadAhead<'a, I> {
    fn new(inner: I) -> Self {
        ReadAhead {
            inner,
            batch: std::collections::VecDeque::with_capacity(READ_AHEAD),
        }
    }
}

impl<'a, I: Iterator<Item = (DeliveryId, &'a Delivery)>> Iterator for ReadAhead<'a, I> {
    type Item = (DeliveryId, &'a Delivery);

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() {
            self.batch.extend(self.inner.by_ref().take(READ_AHEAD));
            // Values folded together and handed to `black_box`, so that the reads stay.
            let mut folded = 0u64;
            for (_, d) in &self.batch {
                folded ^= d.updated_at_ms;
            }
            for (_, d) in &self.batch {
                folded ^= d.event.accepted_at_ms;
                if let Some(outcomes) = &d.outcomes {
                    folded ^= u64::from(outcomes.last_status_code);
                }
            }
            for (_, d) in &self.batch {
                if let Some(outcomes) = &d.outcomes {
                    folded ^= outcomes.last_response.0.len() as u64;
                }
            }
            std::hint::black_box(folded);
        }
        self.batch.pop_front()
    }
}

/// A delivery as a checkpoint holds it.
fn delivery_snap(id: DeliveryId, event: u32, d: &Delivery) -> record::out::DeliverySnapOut<'_> {
    record::out::DeliverySnapOut {
        delivery: id.0,
        event,
        webhook: Cow::Borrowed(d.webhook.as_str()),
        attempt: d.attempt,
        attempts_max: d.attempts_max,
        status: Cow::Borrowed(d.status.name()),
        next_attempt_at_ms: if d.status.is_final() {
            None
        } else {
            d.due_ms()
        },
        in_flight: d.stage == Stage::InFlight,
        last_status: d.last_status().unwrap_or(0),
        last_error: d.last_error().map(DeliveryError::name_cow),
        last_latency_ms: d.last_latency_ms().map_or(u64::MAX, u64::from),
        last_response_body: Cow::Borrowed(d.last_body()),
        last_response_headers: d.outcomes().last_response.headers_out(),
        updated_at_ms: d.updated_at_ms,
        attempts: record::out::AttemptsOut(&d.outcomes().attempts),
    }
}

impl record::out::AttemptList for SmallVec<[Attempt; 1]> {
    fn len(&self) -> usize {
        SmallVec::len(self)
    }

    fn get(&self, i: usize) -> record::out::AttemptRecOut<'_> {
        let a = self[i].summary();
        record::out::AttemptRecOut {
            attempt: a.attempt,
            started_at_ms: a.started_at_ms,
            finished_at_ms: a.finished_at_ms,
            status: a.response_status.unwrap_or(0),
            latency_ms: a.response_time_ms,
            error: a.error.map(DeliveryError::name_cow),
        }
    }
}
