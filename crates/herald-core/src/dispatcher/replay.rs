//! Replay: the one `apply` of a record (live and recovered), recovery's end, and
//! checkpoints.

use super::*;

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

impl Dispatcher {
    /// Applies one journal record during recovery, in journal order, before any other
    /// input. Emits nothing. Call [`Dispatcher::replay_finished`] after the last record.
    ///
    /// Live handling changes state through the same function (it applies each record
    /// it emits), so a replayed journal rebuilds what the live dispatcher held.
    pub fn replay(&mut self, record: &Record) -> Result<(), ReplayError> {
        self.replaying = true;
        // Replayed records are durable: nothing waits for them.
        self.apply(record, AppendId(0))?;
        self.assert_counts();
        Ok(())
    }

    /// The one place state changes by a record, live (`append` is the id just assigned:
    /// an event's deliveries wait until it is durable) and in replay (`AppendId(0)`:
    /// already durable).
    pub(super) fn apply(&mut self, record: &Record, append: AppendId) -> Result<(), ReplayError> {
        let kind = record.kind();
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
                self.skip_past_generated_event_id(&r.event_id);
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
                    if r.attempt < d.attempt.max(1) {
                        return Err(invalid(format!(
                            "delivery {delivery} starts attempt {} after attempt {}",
                            r.attempt, d.attempt
                        )));
                    }
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
                    if let Some(w) =
                        webhook_state_mut(&mut self.tenants, &d.event.tenant, &d.webhook)
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
                self.finish(r.at_ms, DeliveryId(r.delivery), status, error)
                    .map_err(invalid)?;
            }
            Record::DeliveryRequeued(r) => {
                self.requeue(r.at_ms, DeliveryId(r.delivery), r.due_ms, r.attempts_max);
            }
            Record::Checkpoint(c) => self.load_checkpoint(c).map_err(invalid)?,
        }
        Ok(())
    }

    /// Ends recovery: attempts that were in flight when the journal ended are due again
    /// now (with the same attempt number: they are repeated, not counted twice);
    /// deliveries of webhooks that are gone or disabled are ended (journaled); endpoint
    /// in-flight counts start from zero. Inputs may follow.
    pub fn replay_finished(&mut self, now_ms: u64) {
        self.replaying = false;
        let now = self.advance_clock(now_ms);
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
            let active =
                webhook_state(&self.tenants, &tenant, &webhook).map(|w| w.spec.status.is_active());
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
                    count_down(&mut self.in_flight_count, "in-flight deliveries");
                    self.schedule(delivery, now);
                }
                Some(true) => {}
            }
        }
        #[cfg(debug_assertions)]
        self.recount();
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

    pub(super) fn load_checkpoint(&mut self, c: &record::Checkpoint) -> Result<(), String> {
        let config = self.config.clone();
        let now = self.now_ms;
        *self = Dispatcher::new(config, now);
        self.replaying = true;
        self.next_delivery = c.next_delivery;
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
                self.finish(s.updated_at_ms, delivery, status, None)?;
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
