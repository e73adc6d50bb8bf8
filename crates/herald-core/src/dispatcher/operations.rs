//! Manual operations: retries, re-sends and test events asked for by an operator.

use super::*;

impl Dispatcher {
    /// Retries one delivery now: a pending delivery waiting for a retry is moved to now;
    /// a failed or exhausted one gets one more attempt.
    pub fn retry_delivery(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        delivery: DeliveryId,
    ) -> Result<AppendId, OpError> {
        let now = self.advance_clock(now_ms);
        let d = self
            .deliveries
            .get(&delivery)
            .filter(|d| *d.event.tenant == *tenant)
            .ok_or(OpError::DeliveryNotFound(delivery))?;
        let webhook = WebhookId::clone(&d.webhook);
        let active = webhook_state(&self.tenants, tenant, &webhook)
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
                    return Err(OpError::Full(ShardFull {
                        pending: self.pending_count,
                        needed: 1,
                        max: self.config.pending_deliveries_max,
                    }));
                }
                self.tenant_room(tenant, 1).map_err(OpError::TenantFull)?;
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
    /// Returns how many were re-queued. Looks at the whole of the tenant's log in one
    /// call; a driver that must not hold its thread that long takes
    /// [`Dispatcher::resend_failed_step`]s instead.
    pub fn resend_failed(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
    ) -> Result<usize, OpError> {
        let mut requeued = 0;
        let mut after = None;
        loop {
            let step = self.resend_failed_step(
                now_ms,
                tenant,
                webhook,
                since_ms,
                after,
                RESEND_MAX - requeued,
                QUERY_SCAN_MAX,
            )?;
            requeued += step.requeued;
            match step.next_after {
                Some(next) if requeued < RESEND_MAX => after = Some(next),
                _ => return Ok(requeued),
            }
        }
    }

    /// One bounded step of [`Dispatcher::resend_failed`]: looks at no more than
    /// `scan_max` of the tenant's deliveries in the log after `after` (from its first
    /// when `None`), re-queueing those of `webhook` that failed or were exhausted and
    /// whose event was accepted at or after `since_ms`: at most `most` of them, and no
    /// more than [`RESEND_MAX`] and the tenant's and the shard's pending room allow.
    /// [`Resent::next_after`] says where the next step goes on, when the scan stopped at
    /// `scan_max`; `None` when it looked at every delivery or the room ran out.
    #[allow(clippy::too_many_arguments)]
    pub fn resend_failed_step(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        since_ms: u64,
        after: Option<DeliveryId>,
        most: usize,
        scan_max: usize,
    ) -> Result<Resent, OpError> {
        let now = self.advance_clock(now_ms);
        self.require_active_webhook(tenant, webhook)?;
        let tenant_pending = self.pending_by_tenant.get(tenant).copied().unwrap_or(0);
        let room = self
            .config
            .pending_deliveries_max
            .saturating_sub(self.pending_count)
            .min(
                self.config
                    .pending_deliveries_per_tenant_max
                    .saturating_sub(tenant_pending),
            )
            .min(RESEND_MAX)
            .min(most);
        let start = DeliveryId(after.map_or(0, |a| a.0.saturating_add(1)));
        let mut picked: Vec<(DeliveryId, u32)> = Vec::new();
        let mut next_after = None;
        let ids = self
            .by_tenant
            .get(tenant)
            .into_iter()
            .flat_map(|set| set.range_from(start));
        for (scanned, id) in ids.enumerate() {
            if picked.len() == room {
                break;
            }
            if scanned == scan_max.max(1) {
                next_after = Some(DeliveryId(id.0.saturating_sub(1)));
                break;
            }
            let Some(d) = self.deliveries.get(&id) else {
                continue;
            };
            if *d.webhook == *webhook
                && matches!(d.status, DeliveryStatus::Failed | DeliveryStatus::Exhausted)
                && d.event.accepted_at_ms >= since_ms
            {
                picked.push((id, d.attempt + 1));
            }
        }
        for &(delivery, attempts_max) in &picked {
            self.emit(Record::DeliveryRequeued(record::DeliveryRequeued {
                at_ms: now,
                delivery: delivery.0,
                due_ms: now,
                attempts_max,
            }));
        }
        Ok(Resent {
            requeued: picked.len(),
            next_after,
        })
    }

    /// One step of purging what this shard retained of `tenant`, the last step of
    /// deleting it: up to [`PURGE_DELIVERIES_PER_STEP`] of its finished deliveries leave
    /// the log and up to [`PURGE_KEYS_PER_STEP`] of its remembered idempotency keys are
    /// forgotten (a driver's event stream drops the tenant's events on the same record).
    /// Call again until [`TenantPurge::done`]: each step is bounded so that the shard
    /// goes on serving between them. Refused while the tenant has a webhook
    /// ([`OpError::TenantHasWebhooks`]) or a pending delivery ([`OpError::TenantBusy`]: a
    /// deleted webhook's deliveries end a bounded number per tick, so ask again shortly),
    /// so that nothing pending is ever dropped unseen. Events accepted after it start the
    /// tenant afresh.
    pub fn purge_tenant(&mut self, now_ms: u64, tenant: &TenantId) -> Result<TenantPurge, OpError> {
        let now = self.advance_clock(now_ms);
        let webhooks = self.tenants.get(tenant).map_or(0, |t| t.webhooks.len());
        if webhooks > 0 {
            return Err(OpError::TenantHasWebhooks {
                tenant: tenant.clone(),
                webhooks,
            });
        }
        let pending = self.pending_by_tenant.get(tenant).copied().unwrap_or(0);
        if pending > 0 {
            return Err(OpError::TenantBusy {
                tenant: tenant.clone(),
                pending,
            });
        }
        let finished = self.finished_by_tenant.get(tenant).map_or(0, |f| f.count);
        let keys = self.keys.by_tenant.get(tenant).map_or(0, |k| k.keys.len());
        let deliveries = finished.min(PURGE_DELIVERIES_PER_STEP);
        let idempotency_keys = keys.min(PURGE_KEYS_PER_STEP);
        let append = self.emit(Record::TenantPurged(record::TenantPurged {
            at_ms: now,
            tenant: tenant.as_str().to_string(),
            // Both bounded by the constants above, far below `u32::MAX`.
            deliveries: deliveries as u32,
            keys: idempotency_keys as u32,
        }));
        Ok(TenantPurge {
            append,
            deliveries,
            idempotency_keys,
            done: deliveries == finished && idempotency_keys == keys,
        })
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
        .map_err(|error| match error {
            // The event was made here, not handed in: nothing to give back.
            OpError::Accept(AcceptError::Full { full, .. }) => OpError::Full(full),
            OpError::Accept(AcceptError::TenantFull { full, .. }) => OpError::TenantFull(full),
            other => other,
        })
    }

    /// Sends `event` (the caller's type, data, id and so on) to one webhook only,
    /// whatever its filters, as a test. [`Accepted::first_delivery`] is the delivery
    /// created (always `Some` on success). A full shard gives the event back
    /// (`OpError::Accept(AcceptError::Full { event, .. })`).
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
    pub(super) fn send_test(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        make: impl FnOnce(&mut Self, u64) -> NewEvent,
    ) -> Result<Accepted, OpError> {
        let now = self.advance_clock(now_ms);
        self.require_active_webhook(tenant, webhook)?;
        let ids_before = self.next_delivery;
        let event = make(self, now);
        // Refused before any record (or delivery id): a generated event id goes back,
        // as a dispatcher rebuilt from the journal would not have taken it.
        self.accept_with_targets(
            now,
            tenant,
            event,
            std::slice::from_ref(webhook),
            KeyUse::Ignore,
        )
        .map_err(|error| {
            self.next_delivery = ids_before;
            OpError::from(error)
        })
    }

    /// Puts a delivery back on the schedule (from any state but in flight).
    pub(super) fn requeue(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        due_ms: u64,
        attempts_max: u32,
    ) {
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
            let (tenant, webhook) = (
                TenantId::clone(&d.event.tenant),
                WebhookId::clone(&d.webhook),
            );
            self.finished_down(&tenant);
            self.tenant_pending_up(&tenant);
            if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &webhook) {
                w.pending += 1;
            }
        }
        self.schedule(delivery, due_ms);
    }
}
