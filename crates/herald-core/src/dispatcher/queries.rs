//! Queries: commands to poll, counters and the delivery log.

use super::*;

impl Dispatcher {
    /// The next command, in the order produced.
    pub fn pop_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Moves every queued command to `out`, in order.
    pub fn drain_commands(&mut self, out: &mut Vec<Command>) {
        out.extend(self.commands.drain(..));
    }

    /// Commands waiting to be polled.
    pub fn commands_len(&self) -> usize {
        self.commands.len()
    }

    /// The commands waiting to be polled, in order.
    pub(crate) fn queued_commands(&self) -> impl Iterator<Item = &Command> {
        self.commands.iter()
    }

    /// The id of the most recent `Append` the dispatcher made (polled or not);
    /// `AppendId(0)` before the first. A call that may emit any number of records
    /// ([`Dispatcher::resend_failed`]) is durable once this id, read right after it, is.
    pub fn last_append(&self) -> AppendId {
        AppendId(self.next_append - 1)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            webhooks: self.tenants.values().map(|t| t.webhooks.len()).sum(),
            pending_deliveries: self.pending_count,
            in_flight: self.in_flight_count,
            deliveries_retained: self.deliveries.len(),
            timers: self.wheel.len(),
            awaiting_durable: self.awaiting_count,
            idempotency_keys: self.keys.count,
            retries_pending: self
                .pending_count
                .saturating_sub(self.in_flight_count)
                .saturating_sub(self.fresh_pending),
        }
    }

    /// Monotonic counters of live work (replay counts nothing).
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// When each pending delivery that is not in flight is (or was) due, as the wheel
    /// rounds it: from its timer while it waits in the wheel, from its due time once
    /// fired into its webhook's queue.
    #[cfg(test)]
    pub(crate) fn wheel_view(&self) -> BTreeMap<DeliveryId, Option<u64>> {
        self.deliveries
            .iter()
            .filter(|(_, d)| !d.status.is_final() && d.stage != Stage::InFlight)
            .map(|(id, d)| {
                let due = match d.stage {
                    Stage::Scheduled(key) => self.wheel.due_ms_of(key),
                    _ => d.due_ms().and_then(|due| self.wheel.due_ms(due)),
                };
                (*id, due)
            })
            .collect()
    }

    /// The attempts in flight: (delivery, attempt, when it started). The journal does
    /// not hold them (`mark_in_flight`); a replayed dispatcher given these marks is the
    /// live one.
    #[cfg(test)]
    pub(crate) fn in_flight_marks(&self) -> Vec<(DeliveryId, u32, u64)> {
        self.deliveries
            .iter()
            .filter(|(_, d)| d.stage == Stage::InFlight)
            .map(|(id, d)| {
                let started = d.attempts().last().map_or(0, |a| a.started_at_ms);
                (*id, d.attempt, started)
            })
            .collect()
    }

    /// [`Stats::retries_pending`] counted the slow way, to check the fast one.
    #[cfg(test)]
    pub(crate) fn retries_pending_scan(&self) -> usize {
        self.deliveries
            .values()
            .filter(|d| !d.status.is_final() && d.attempt > 0 && d.stage != Stage::InFlight)
            .count()
    }

    pub(super) fn view(&self, id: DeliveryId, d: &Delivery) -> DeliveryRecord {
        DeliveryRecord {
            id,
            tenant: TenantId::clone(&d.event.tenant),
            event_id: d.event.id.clone(),
            event_type: EventType::clone(&d.event.event_type),
            webhook: WebhookId::clone(&d.webhook),
            attempt: d.attempt,
            status: d.status,
            response_status: d.last_status(),
            response_time_ms: d.last_latency_ms().map(u64::from),
            error: d.last_error(),
            next_retry_at_ms: if d.status.is_final() {
                None
            } else {
                d.due_ms()
            },
            response_body: Arc::from(d.last_body()),
            response_headers: d
                .last_headers()
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
            accepted_at_ms: d.event.accepted_at_ms,
            updated_at_ms: d.updated_at_ms,
            finished_at_ms: d.status.is_final().then_some(d.updated_at_ms),
            attempts: d.attempts().iter().map(Attempt::summary).collect(),
        }
    }

    /// The ids a log line about delivery `id` names: tenant, webhook, event. Borrowed,
    /// so a driver can log an attempt's outcome without copying them.
    pub fn delivery_ids(&self, id: DeliveryId) -> Option<(&TenantId, &WebhookId, &EventId)> {
        self.deliveries
            .get(&id)
            .map(|d| (&*d.event.tenant, &*d.webhook, &d.event.id))
    }

    /// One delivery of `tenant`, if it is pending or still in the log.
    pub fn delivery(&self, tenant: &TenantId, id: DeliveryId) -> Option<DeliveryRecord> {
        self.deliveries
            .get(&id)
            .filter(|d| *d.event.tenant == *tenant)
            .map(|d| self.view(id, d))
    }

    /// Queries the delivery log (see [`DeliveryQuery`]).
    pub fn deliveries(&self, query: &DeliveryQuery) -> Page<DeliveryRecord> {
        let limit = query.limit.clamp(1, PAGE_ITEMS_MAX);
        let start = DeliveryId(query.after.map_or(0, |a| a.0.saturating_add(1)));
        let mut items = Vec::new();
        let mut next_after = None;
        let range = self
            .by_tenant
            .get(&query.tenant)
            .into_iter()
            .flat_map(|set| set.range_from(start));
        for (scanned, id) in range.enumerate() {
            if scanned == QUERY_SCAN_MAX {
                // A narrow filter over a long log: hand back what was found and where to
                // continue, rather than stall the shard.
                next_after = Some(DeliveryId(id.0.saturating_sub(1)));
                break;
            }
            let Some(d) = self.deliveries.get(&id) else {
                continue;
            };
            if query.webhook.as_ref().is_some_and(|w| *w != *d.webhook)
                || query.event.as_ref().is_some_and(|e| e != &d.event.id)
                || query.status.is_some_and(|s| s != d.status)
            {
                continue;
            }
            if items.len() == limit {
                next_after = items.last().map(|r: &DeliveryRecord| r.id);
                break;
            }
            items.push(self.view(id, d));
        }
        Page { items, next_after }
    }
}
