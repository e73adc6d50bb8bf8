//! The registry: webhooks by tenant, their matcher index and status changes.

use super::*;

impl<'a> WebhookView<'a> {
    fn of(tenant: &'a TenantId, id: &'a WebhookId, w: &'a WebhookState) -> WebhookView<'a> {
        WebhookView {
            tenant,
            id,
            spec: &w.spec,
            health: &w.health,
            pending: w.pending,
            created_at_ms: w.created_at_ms,
            updated_at_ms: w.updated_at_ms,
        }
    }
}

impl Dispatcher {
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
        let now = self.advance_clock(now_ms);
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
        // Made anew under the same id, or enabled again: the webhook must not take over
        // the deliveries of the one that ended. A change that leaves it disabled lets
        // the ending go on at its pace.
        if active || !exists {
            self.finish_endings_of(now, &tenant, &id);
        }
        let append = self.emit(Record::WebhookUpserted(record::WebhookUpserted {
            at_ms: now,
            webhook: webhook_to_rec(&tenant, &id, &spec),
        }));
        if !active {
            self.end_webhook_deliveries(now, &tenant, &id, DeliveryError::WebhookDisabled);
        }
        Ok(append)
    }

    /// Replaces webhook `id` of `tenant` like [`Dispatcher::upsert_webhook`], but refuses
    /// ([`RegistryError::NotFound`]) a webhook that does not exist instead of creating it:
    /// an update must not bring back a webhook deleted meanwhile.
    pub fn update_webhook(
        &mut self,
        now_ms: u64,
        tenant: TenantId,
        id: WebhookId,
        spec: WebhookSpec,
    ) -> Result<AppendId, RegistryError> {
        if webhook_state(&self.tenants, &tenant, &id).is_none() {
            return Err(RegistryError::NotFound {
                tenant,
                webhook: id,
            });
        }
        self.upsert_webhook(now_ms, tenant, id, spec)
    }

    /// Replaces webhook `id`'s settings like [`Dispatcher::update_webhook`], keeping its
    /// status as it is now (`spec`'s is ignored): for a change read from the webhook
    /// earlier, which must not undo a status changed since, such as the dispatcher's own
    /// auto-disable (a `410`, failing too long).
    pub fn update_webhook_settings(
        &mut self,
        now_ms: u64,
        tenant: TenantId,
        id: WebhookId,
        mut spec: WebhookSpec,
    ) -> Result<AppendId, RegistryError> {
        let Some(current) = webhook_state(&self.tenants, &tenant, &id) else {
            return Err(RegistryError::NotFound {
                tenant,
                webhook: id,
            });
        };
        spec.status = current.spec.status;
        self.upsert_webhook(now_ms, tenant, id, spec)
    }

    /// Deletes webhook `id` of `tenant`, ending its pending deliveries as failed.
    pub fn delete_webhook(
        &mut self,
        now_ms: u64,
        tenant: &TenantId,
        id: &WebhookId,
    ) -> Result<AppendId, RegistryError> {
        let now = self.advance_clock(now_ms);
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
        let pending = webhook_state(&self.tenants, tenant, id).map_or(0, |w| w.pending);
        let append = self.emit(Record::WebhookDeleted(record::WebhookDeleted {
            at_ms: now,
            tenant: tenant.as_str().to_string(),
            webhook: id.as_str().to_string(),
        }));
        // The journal says why they end: the deletion comes first.
        self.start_ending(now, tenant, id, pending, DeliveryError::WebhookDeleted);
        Ok(append)
    }

    /// One webhook.
    pub fn webhook(&self, tenant: &TenantId, id: &WebhookId) -> Option<WebhookView<'_>> {
        let (tenant, t) = self.tenants.get_key_value(tenant)?;
        let (id, w) = t.webhooks.get_key_value(id)?;
        Some(WebhookView::of(tenant, id, w))
    }

    /// A tenant's webhooks, in id order.
    pub fn webhooks<'a>(&'a self, tenant: &TenantId) -> impl Iterator<Item = WebhookView<'a>> {
        self.tenants
            .get_key_value(tenant)
            .into_iter()
            .flat_map(|(tenant, t)| {
                t.webhooks
                    .iter()
                    .map(move |(id, w)| WebhookView::of(tenant, id, w))
            })
    }

    /// Applies a `WebhookUpserted`: the registry only. A disabled webhook's queue and wake
    /// timer go; its pending deliveries end by their own `DeliveryFinished` records (live
    /// handling emits them right after; recovery ends those a torn journal left).
    pub(super) fn apply_upsert(
        &mut self,
        now: u64,
        tenant: TenantId,
        id: WebhookId,
        spec: WebhookSpec,
    ) {
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
                        shared_id: Arc::new(id.clone()),
                        health: Health::new(now, &spec.limits),
                        spec,
                        url,
                        url_text,
                        signer,
                        signer_until_ms,
                        queue: VecDeque::new(),
                        pending: 0,
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
            self.ready_webhooks.insert((tenant, id));
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
    pub(super) fn apply_delete(&mut self, tenant: &TenantId, id: &WebhookId) {
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

    /// Live: ends every pending delivery of a webhook (disabled or deleted) as failed:
    /// at once as far as this tick's share allows, the rest over the following ticks
    /// ([`Dispatcher::advance_endings`]).
    pub(super) fn end_webhook_deliveries(
        &mut self,
        now: u64,
        tenant: &TenantId,
        id: &WebhookId,
        error: DeliveryError,
    ) {
        let pending = webhook_state(&self.tenants, tenant, id).map_or(0, |w| w.pending);
        self.start_ending(now, tenant, id, pending, error);
    }

    /// Queues the end of a webhook's `pending` deliveries (its count before it was
    /// disabled or deleted) and goes on with the endings as far as this tick allows.
    fn start_ending(
        &mut self,
        now: u64,
        tenant: &TenantId,
        id: &WebhookId,
        pending: usize,
        error: DeliveryError,
    ) {
        // A webhook with none (an idle one deleted from a tenant holding a large log)
        // costs nothing.
        if pending == 0 {
            return;
        }
        // Disabled, its ending under way, and now deleted (or disabled again): that
        // ending already covers every pending delivery it has (a disabled webhook gets
        // no new ones); they end for the latest reason.
        if let Some(ending) = self
            .endings
            .iter_mut()
            .find(|e| e.tenant == *tenant && e.webhook == *id)
        {
            ending.error = error;
            return;
        }
        self.queue_ending(tenant, id, pending, error);
        self.advance_endings(now);
    }

    /// Queues the end of `pending` deliveries of webhook `id` of `tenant`, without
    /// ending any yet.
    pub(super) fn queue_ending(
        &mut self,
        tenant: &TenantId,
        id: &WebhookId,
        pending: usize,
        error: DeliveryError,
    ) {
        self.endings.push_back(Ending {
            tenant: tenant.clone(),
            webhook: id.clone(),
            error,
            next: DeliveryId(0),
            below: DeliveryId(self.next_delivery),
            remaining: pending,
        });
    }

    /// A delivery of webhook `id` of `tenant` ended by another path than its ending (an
    /// answer that arrived first, a timer of a deleted webhook's delivery): one fewer for
    /// that ending to find, so that it stops as soon as none is left.
    pub(super) fn ending_met_one(&mut self, tenant: &TenantId, id: &WebhookId) {
        if let Some(ending) = self
            .endings
            .iter_mut()
            .find(|e| e.tenant == *tenant && e.webhook == *id)
        {
            ending.remaining = ending.remaining.saturating_sub(1);
        }
    }

    /// Ends pending deliveries of the queued [`Ending`]s, oldest first, looking at no
    /// more of their tenants' held deliveries than this tick's allowance (at most
    /// [`DispatcherConfig::endings_per_tick_max`] per tick, see
    /// [`ENDINGS_PER_TICK_MAX_DEFAULT`] for why). The scan goes in id order from where
    /// the last one stopped, so deliveries evicted from the log meanwhile are simply not
    /// met; it stops at the first id handed out after the webhook ended, and once it
    /// ended as many as the webhook had pending.
    pub(super) fn advance_endings(&mut self, now: u64) {
        while self.ending_allowance > 0 && !self.endings.is_empty() {
            let looked = self.advance_first_ending(now, self.ending_allowance);
            self.ending_allowance = self.ending_allowance.saturating_sub(looked);
        }
    }

    /// Goes on with the oldest [`Ending`], looking at no more than `allowance` held
    /// deliveries, and drops it once it is done. Returns how many it looked at.
    fn advance_first_ending(&mut self, now: u64, allowance: usize) -> usize {
        let Some(ending) = self.endings.front_mut() else {
            return 0;
        };
        let mut ends = Vec::new();
        let mut looked = 0;
        let mut done = true;
        if let Some(held) = self.by_tenant.get(&ending.tenant) {
            let mut ids = held
                .range_from(ending.next)
                .take_while(|id| *id < ending.below);
            loop {
                if ends.len() >= ending.remaining {
                    break;
                }
                if looked >= allowance {
                    done = false;
                    break;
                }
                let Some(id) = ids.next() else {
                    break;
                };
                looked += 1;
                ending.next = DeliveryId(id.0 + 1);
                let its = self
                    .deliveries
                    .get(&id)
                    .is_some_and(|d| *d.webhook == ending.webhook && !d.status.is_final());
                if its {
                    ends.push(id);
                }
            }
        }
        ending.remaining -= ends.len();
        let error = ending.error;
        if done {
            self.endings.pop_front();
        }
        for delivery in ends {
            self.end_delivery(now, delivery, DeliveryStatus::Failed, Some(error));
        }
        looked
    }

    /// Ends at once whatever is left of the ending of webhook `id` of `tenant`, before it
    /// is made anew under the same id or enabled again: it must not take over the
    /// deliveries of the one that ended. Only that ending: the others keep to the
    /// per-tick allowance.
    pub(super) fn finish_endings_of(&mut self, now: u64, tenant: &TenantId, id: &WebhookId) {
        while let Some(at) = self
            .endings
            .iter()
            .position(|e| e.tenant == *tenant && e.webhook == *id)
        {
            // Brought to the front and looked through to its end: the scan stops at its
            // `below` or once it ended them all, so one call finishes it.
            if let Some(ending) = self.endings.remove(at) {
                self.endings.push_front(ending);
            }
            self.advance_first_ending(now, usize::MAX);
        }
    }

    /// Webhooks whose pending deliveries are still being ended (see
    /// `Dispatcher::advance_endings`).
    pub fn endings_underway(&self) -> usize {
        self.endings.len()
    }

    pub(super) fn attempts_max_of(&self, tenant: &TenantId, webhook: &WebhookId) -> u32 {
        webhook_state(&self.tenants, tenant, webhook)
            .map_or(self.config.retry_schedule.attempts_max(), |w| {
                w.spec.schedule(&self.config.retry_schedule).attempts_max()
            })
    }

    /// Manual operations act on existing, active webhooks only.
    pub(super) fn require_active_webhook(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> Result<(), OpError> {
        let active = webhook_state(&self.tenants, tenant, webhook)
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
}
