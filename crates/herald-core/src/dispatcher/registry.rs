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
        let pending = self.pending_of(tenant, id);
        let append = self.emit(Record::WebhookDeleted(record::WebhookDeleted {
            at_ms: now,
            tenant: tenant.as_str().to_string(),
            webhook: id.as_str().to_string(),
        }));
        // The journal says why they end: the deletion comes first.
        self.fail_deliveries(now, pending, DeliveryError::WebhookDeleted);
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

    /// Live: ends every pending delivery of a webhook (disabled or deleted) as failed.
    pub(super) fn end_webhook_deliveries(
        &mut self,
        now: u64,
        tenant: &TenantId,
        id: &WebhookId,
        error: DeliveryError,
    ) {
        let pending = self.pending_of(tenant, id);
        self.fail_deliveries(now, pending, error);
    }

    /// A webhook's pending deliveries, in id order: its tenant's deliveries that are
    /// pending and its. Up to O(the tenant's held deliveries), on the rare paths that end
    /// a webhook (disabled or deleted), so that no webhook keeps a set of ids. The scan
    /// stops once it found as many as the webhook counts, and a webhook with none (an idle
    /// one deleted from a tenant holding a large log) costs nothing: a count below the
    /// truth would surface where the uncounted ones end (`count_down`), one above it
    /// here.
    pub(super) fn pending_of(&self, tenant: &TenantId, id: &WebhookId) -> Vec<DeliveryId> {
        let Some(w) = webhook_state(&self.tenants, tenant, id) else {
            return Vec::new();
        };
        if w.pending == 0 {
            return Vec::new();
        }
        let pending: Vec<DeliveryId> = self
            .by_tenant
            .get(tenant)
            .into_iter()
            .flat_map(IdSet::iter)
            .filter(|delivery| {
                self.deliveries
                    .get(delivery)
                    .is_some_and(|d| *d.webhook == *id && !d.status.is_final())
            })
            .take(w.pending)
            .collect();
        assert_eq!(
            pending.len(),
            w.pending,
            "bug: webhook {id}'s count of pending deliveries differs from its deliveries"
        );
        pending
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
