//! Outcomes: what an attempt's result means for its delivery and its webhook, and how
//! deliveries end.

use super::*;

/// Prefixes of the ids of events the dispatcher originates itself: operational
/// `webhook.disabled` events and test events.
pub(super) const GENERATED_EVENT_ID_PREFIXES: [&str; 2] = ["evt_webhook_disabled_", "evt_test_"];

/// Numbers of generated-looking event ids that replay follows are below this. A
/// publisher may choose an id such as `evt_test_8000000000000000` itself; following it
/// would move the shared id counter (delivery ids come from it too) to the end of the
/// range, and every later delivery id would be out of range, on every restart too. No
/// shard hands out 2^62 ids, so a generated id is always below it.
pub(super) const GENERATED_EVENT_NUMBER_END: u64 = 1 << 62;

/// Whether webhook `w` changed (`WebhookState::updated_at_ms`: its URL, limits or
/// status) while an attempt that ended at `at_ms` after `latency_ms` was out, so that
/// its answer came from the endpoint as configured before. Its start is the outcome's
/// time less its latency, as the delivery's history has it; a change in the very
/// millisecond the outcome is handled cannot be ordered against it and counts as
/// before the attempt (the answer then counts, as it always did). Both live handling
/// and replay decide it from the outcome's record, so they agree.
fn attempt_began_before_change(at_ms: u64, latency_ms: u64, w: &WebhookState) -> bool {
    let started = at_ms.saturating_sub(latency_ms);
    started < w.updated_at_ms && w.updated_at_ms < at_ms
}

/// The longest an endpoint's own deliveries wait between two attempts: its retry
/// schedule's longest delay with the most jitter can add, or a `Retry-After` (honoured up
/// to [`crate::retry::RETRY_AFTER_MS_MAX`]), whichever is longer, plus the request's
/// timeout. A failing run with no failure for longer than this was not being tried (see
/// `Health::restart_if_unobserved`).
fn longest_wait_ms(schedule: &RetrySchedule, jitter_percent: u8, request_timeout_ms: u64) -> u64 {
    let delay = schedule
        .retry_delays_ms()
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    // At least `jitter_ms`'s widest spread.
    let jittered =
        delay.saturating_add(delay / 100 * u64::from(jitter_percent) + u64::from(jitter_percent));
    jittered
        .max(crate::retry::RETRY_AFTER_MS_MAX)
        .saturating_add(request_timeout_ms)
}

/// A tenant's finished deliveries in the log: how many, and in the order they are
/// evicted ([`Ended`]), for evicting its own oldest when it holds its most
/// ([`crate::DispatcherConfig::log_finished_per_tenant_max`]). Entries whose delivery
/// was re-queued or evicted since are skipped.
#[derive(Debug, Default)]
pub(super) struct TenantFinished {
    pub(super) count: usize,
    pub(super) order: VecDeque<Ended>,
}

/// A finished delivery's place in the log's eviction order: by when it ended, then by
/// id. Not the order deliveries ended in: a checkpoint lists them by id and keeps only
/// their end time, so a log restored from one can rebuild this order and no other, and
/// the live log must evict what a replay of its journal would (a retry by hand of a
/// delivery the replay had evicted would be lost). The dispatcher's clock never goes
/// back, so a live delivery's entry goes at the end, behind only those that ended in
/// the same millisecond with a higher id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ended {
    pub(super) at_ms: u64,
    pub(super) delivery: DeliveryId,
    /// Its finish sequence ([`Delivery::finish_seq`]): tells a stale entry (the
    /// delivery was re-queued or evicted since) from the current one.
    pub(super) seq: u64,
}

impl Ended {
    fn key(&self) -> (u64, DeliveryId) {
        (self.at_ms, self.delivery)
    }
}

/// An entry's `seq` once its delivery was evicted by its tenant's share of the log
/// ([`Dispatcher::evict_tenant`]) while the entry stood behind others in the log's own
/// order: marked in place (no delivery ends as this one), so that the log's order drops
/// it without a look-up, at its front or in a compaction that reads only the entries.
pub(super) const EVICTED: u64 = u64::MAX;

/// Whether `entry` is its delivery's current place in the log: the delivery is held and
/// ended as the `seq`-th delivery to end (not re-queued or evicted since the entry was
/// made).
pub(super) fn is_current(deliveries: &Deliveries, entry: &Ended) -> bool {
    deliveries
        .get(&entry.delivery)
        .is_some_and(|d| d.finish_seq() == Some(entry.seq))
}

/// Pops the stale entries ([`is_current`]) at the front of `order`, one look-up each,
/// while it lists more entries than the `held` deliveries it orders (so that a look-up
/// is spent only where a stale entry is known to be, not on the next delivery in line,
/// which is rarely still in the cache).
///
/// A delivery the log evicts is the oldest there is, so it stands at the front of its
/// tenant's order once the stale entries before it are gone: popping them as they
/// appear keeps each order free of them for a look-up per eviction. Left in place, they
/// were cleared by the compaction in [`Dispatcher::evict_tenant`] once a tenant's order
/// held twice its count: every tenant's at about the same moment under an even load,
/// each a look-up per entry (~200,000 in one turn for a log of 100,000 over eight
/// tenants), a shard turn of several milliseconds every few seconds that an open loop
/// saw as its worst quarter-seconds.
fn pop_stale_front(order: &mut VecDeque<Ended>, held: usize, deliveries: &Deliveries) {
    while order.len() > held {
        match order.front() {
            Some(front) if !is_current(deliveries, front) => order.pop_front(),
            _ => break,
        };
    }
}

/// Counts one finished delivery of `tenant` fewer in the log's and its tenant's counts;
/// the tenant's entry, which its caller removes when its count is down to 0 (every entry
/// its order still lists is stale then).
fn count_finished_down<'a>(
    finished_count: &mut usize,
    finished_by_tenant: &'a mut FastHashMap<TenantId, TenantFinished>,
    tenant: &TenantId,
) -> &'a mut TenantFinished {
    count_down(finished_count, "finished deliveries");
    let Some(mine) = finished_by_tenant.get_mut(tenant) else {
        panic!("bug: tenant {tenant} has no finished deliveries to count down");
    };
    count_down(&mut mine.count, "a tenant's finished deliveries");
    mine
}

/// Puts `entry` in its place in `order`, which is in [`Ended`] order.
fn insert_ended(order: &mut VecDeque<Ended>, entry: Ended) {
    let mut at = order.len();
    while at > 0 && order[at - 1].key() > entry.key() {
        at -= 1;
    }
    order.insert(at, entry);
}

/// How [`Dispatcher::finish_as`] places a delivery in the log's eviction order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum LogOrder {
    /// In its place, then evicting what the limits ask.
    Placed,
    /// At the end, loaded from a checkpoint (which lists deliveries by id): the order
    /// and the limits are restored before the log is next used
    /// ([`Dispatcher::order_finished`]).
    Loaded,
}

/// A record's headers as the pairs [`Outcomes`] keeps.
pub(super) fn headers_of_rec(
    headers: &[record::HeaderRec],
) -> impl ExactSizeIterator<Item = (&str, &str)> + Clone {
    headers.iter().map(|h| (h.name.as_str(), h.value.as_str()))
}

impl Dispatcher {
    /// Live: ends `deliveries` (those still pending) as failed, for `error`.
    pub(super) fn fail_deliveries(
        &mut self,
        now: u64,
        deliveries: Vec<DeliveryId>,
        error: DeliveryError,
    ) {
        for delivery in deliveries {
            self.end_delivery(now, delivery, DeliveryStatus::Failed, Some(error));
        }
    }

    /// Live: decides that a pending delivery ends, without an attempt outcome that says
    /// so.
    pub(super) fn end_delivery(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    ) {
        let pending = self
            .deliveries
            .get(&delivery)
            .is_some_and(|d| !d.status.is_final());
        if pending {
            self.emit(Record::DeliveryFinished(record::DeliveryFinished {
                at_ms: now,
                delivery: delivery.0,
                status: status.name().to_string(),
                reason: error.map(DeliveryError::name),
            }));
        }
    }

    /// Ends a pending delivery (applying a `DeliveryFinished`, or an `AttemptFinished`
    /// that carries a final status). A delivery no longer held (evicted from the log)
    /// changes nothing; one that already ended is an error: a delivery ends once
    /// (requeueing makes it pending again first).
    pub(super) fn finish(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
    ) -> Result<(), String> {
        self.finish_as(now, delivery, status, error, LogOrder::Placed)
    }

    /// [`Dispatcher::finish`], placing the delivery in the log as `order` says.
    pub(super) fn finish_as(
        &mut self,
        now: u64,
        delivery: DeliveryId,
        status: DeliveryStatus,
        error: Option<DeliveryError>,
        order: LogOrder,
    ) -> Result<(), String> {
        let Some(d) = self.deliveries.get_mut(&delivery) else {
            return Ok(());
        };
        if d.status.is_final() {
            return Err(format!(
                "delivery {delivery} ends again ({}) after it ended {}",
                status.name(),
                d.status.name()
            ));
        }
        match d.stage {
            Stage::Scheduled(key) => {
                self.wheel.cancel(key);
            }
            Stage::InFlight => {
                // Ended without the outcome of the attempt in flight: undo the mark
                // (`mark_in_flight`), so that the state is the one replay rebuilds.
                count_down(&mut self.in_flight_count, "in-flight deliveries");
                d.attempt_abandoned();
                set_attempt(&mut self.fresh_pending, d, d.attempt.saturating_sub(1));
            }
            _ => {}
        }
        if d.attempt == 0 {
            count_down(&mut self.fresh_pending, "deliveries without an attempt");
        }
        d.stage = Stage::Finished;
        d.status = status;
        if error.is_some() {
            d.outcomes_mut().last_error = error;
        }
        if !self.replaying {
            let c = &mut self.counters;
            match (status, error) {
                (DeliveryStatus::Success, _) => c.deliveries_succeeded += 1,
                (DeliveryStatus::Exhausted, _) => c.deliveries_exhausted += 1,
                (_, Some(DeliveryError::WebhookDisabled)) => c.deliveries_webhook_disabled += 1,
                (_, Some(DeliveryError::WebhookDeleted)) => c.deliveries_webhook_deleted += 1,
                (_, Some(DeliveryError::NoLiveSecret)) => c.deliveries_no_live_secret += 1,
                _ => c.deliveries_failed += 1,
            }
        }
        d.updated_at_ms = now;
        self.finish_seq += 1;
        d.set_finished(self.finish_seq);
        let (tenant, webhook) = (
            TenantId::clone(&d.event.tenant),
            WebhookId::clone(&d.webhook),
        );
        if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &webhook) {
            count_down(&mut w.pending, "a webhook's pending deliveries");
        }
        count_down(&mut self.pending_count, "pending deliveries");
        self.tenant_pending_down(&tenant);
        self.finished_count += 1;
        let entry = Ended {
            at_ms: now,
            delivery,
            seq: self.finish_seq,
        };
        match order {
            LogOrder::Loaded => {
                self.finished.push_back(entry);
                let mine = self.finished_by_tenant.entry(tenant).or_default();
                mine.count += 1;
                mine.order.push_back(entry);
                self.finished_unordered = true;
            }
            LogOrder::Placed => {
                self.order_finished();
                insert_ended(&mut self.finished, entry);
                let mine = self.finished_by_tenant.entry(tenant.clone()).or_default();
                mine.count += 1;
                insert_ended(&mut mine.order, entry);
                self.evict_tenant(&tenant);
                self.evict();
            }
        }
        Ok(())
    }

    /// Puts a log loaded from a checkpoint in eviction order ([`Ended`]) and evicts
    /// what its limits ask (a checkpoint written under larger ones holds more); does
    /// nothing when the log is in order.
    pub(super) fn order_finished(&mut self) {
        if !std::mem::take(&mut self.finished_unordered) {
            return;
        }
        self.finished
            .make_contiguous()
            .sort_unstable_by_key(Ended::key);
        self.finished_marked_at = 0;
        let tenants: Vec<TenantId> = self.finished_by_tenant.keys().cloned().collect();
        for mine in self.finished_by_tenant.values_mut() {
            mine.order
                .make_contiguous()
                .sort_unstable_by_key(Ended::key);
        }
        for tenant in &tenants {
            self.evict_tenant(tenant);
        }
        self.evict();
    }

    /// Counts a delivery the log's limits evicted (live only: a replay evicts again what
    /// was counted when it happened).
    fn count_evicted(&mut self) {
        if !self.replaying {
            self.counters.deliveries_evicted += 1;
        }
    }

    /// Drops the finished delivery `entry` lists from the log and the counts (evicted
    /// for the log's limits, or purged with its tenant), if the entry is still current
    /// ([`is_current`]): whether it dropped one.
    fn drop_finished(&mut self, entry: &Ended) -> bool {
        let current = |d: &Delivery| d.finish_seq() == Some(entry.seq);
        let Some(d) = self.deliveries.remove_if(&entry.delivery, current) else {
            return false;
        };
        let tenant = &*d.event.tenant;
        if let Some(set) = self.by_tenant.get_mut(tenant) {
            set.remove(&entry.delivery);
            if set.is_empty() {
                self.by_tenant.remove(tenant);
            }
        }
        // The stale entries its tenant's order then shows at its front, with the same
        // look-up of the tenant.
        let mine = count_finished_down(
            &mut self.finished_count,
            &mut self.finished_by_tenant,
            tenant,
        );
        if mine.count > 0 {
            pop_stale_front(&mut mine.order, mine.count, &self.deliveries);
        } else {
            self.finished_by_tenant.remove(tenant);
        }
        true
    }

    /// One finished delivery of `tenant` fewer (evicted, or pending again).
    pub(super) fn finished_down(&mut self, tenant: &TenantId) {
        let mine = count_finished_down(
            &mut self.finished_count,
            &mut self.finished_by_tenant,
            tenant,
        );
        if mine.count == 0 {
            self.finished_by_tenant.remove(tenant);
        }
    }

    /// Drops `tenant`'s oldest finished deliveries beyond its share of the log
    /// ([`crate::DispatcherConfig::log_finished_per_tenant_max`]).
    fn evict_tenant(&mut self, tenant: &TenantId) {
        let max = self.config.log_finished_per_tenant_max;
        loop {
            let Some(mine) = self.finished_by_tenant.get_mut(tenant) else {
                return;
            };
            if mine.count <= max {
                // Re-queued deliveries leave stale entries behind.
                if mine.order.len() > 2 * mine.count + 64 {
                    let deliveries = &self.deliveries;
                    mine.order.retain(|e| is_current(deliveries, e));
                }
                return;
            }
            let Some(oldest) = mine.order.pop_front() else {
                panic!("bug: tenant {tenant} counts more finished deliveries than it lists");
            };
            if self.drop_finished(&oldest) {
                self.count_evicted();
                self.mark_evicted(&oldest);
            }
        }
    }

    /// Applies a `TenantPurged`: drops the first `deliveries` finished deliveries of
    /// `tenant` in its eviction order from the log and forgets its `keys` oldest
    /// idempotency keys. Pending deliveries stay (a live purge is refused while there
    /// are any, so a replay finds none either).
    pub(super) fn apply_purge(&mut self, tenant: &TenantId, deliveries: usize, keys: usize) {
        // A log loaded from a checkpoint is sorted first, as a delivery's end sorts it:
        // the order the record counts in is the one the live log had.
        self.order_finished();
        let mut dropped = 0;
        while dropped < deliveries {
            let Some(mine) = self.finished_by_tenant.get_mut(tenant) else {
                break;
            };
            let Some(entry) = mine.order.pop_front() else {
                panic!("bug: tenant {tenant} counts more finished deliveries than it lists");
            };
            // Stale entries (a delivery re-queued since) are skipped, not counted.
            if self.drop_finished(&entry) {
                self.mark_evicted(&entry);
                dropped += 1;
            }
        }
        self.keys.forget_oldest_of(tenant, keys);
        // The log's order lost entries in the middle: compact it before marked ones pile
        // up, as an eviction would.
        self.evict();
    }

    /// Marks `entry`, whose delivery its tenant's share just evicted, in the log's own
    /// order ([`EVICTED`]): found by its key (the order is sorted by it), a search over
    /// entries rather than a look-up of deliveries. Left unmarked, such entries behind
    /// other tenants' older ones (a tenant flooding its share while others keep a few
    /// old deliveries at the log's front) piled up until a compaction looked up every
    /// entry of the log in one turn.
    ///
    /// A tenant's share evicts its entries in the log's order one after another, so the
    /// search starts where the last mark was (`finished_marked_at`, kept through the
    /// front's pops) and gallops forward: a few entries read, not a search of the whole
    /// order each time. The place is only a hint: an entry before it is found by a
    /// search of the whole order.
    fn mark_evicted(&mut self, entry: &Ended) {
        let key = entry.key();
        let order = &self.finished;
        let from = self.finished_marked_at.min(order.len());
        let found = if order.get(from).is_some_and(|e| e.key() <= key) {
            // Past `lo` lies the key; find an end beyond it, doubling the step.
            let (mut lo, mut step) = (from, 1);
            let mut hi = loop {
                let probe = lo + step;
                if probe >= order.len() || order[probe].key() > key {
                    break probe.min(order.len());
                }
                lo = probe;
                step *= 2;
            };
            // Then a binary search of [lo, hi), where order[lo].key() <= key.
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if order[mid].key() <= key {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            (order[lo].key() == key).then_some(lo)
        } else {
            order.binary_search_by_key(&key, Ended::key).ok()
        };
        // The same entry a search of the whole order finds (or one of the same key).
        debug_assert_eq!(
            found.map(|at| order[at].key()),
            order
                .binary_search_by_key(&key, Ended::key)
                .ok()
                .map(|at| order[at].key())
        );
        if let Some(at) = found {
            self.finished_marked_at = at;
            let listed = &mut self.finished[at];
            if listed.seq == entry.seq {
                listed.seq = EVICTED;
                self.finished_evicted += 1;
            }
        }
    }

    /// Drops the oldest finished deliveries beyond the log limit.
    pub(super) fn evict(&mut self) {
        let listed = self.finished.len();
        while self.finished_count > self.config.log_finished_max {
            let Some(oldest) = self.finished.pop_front() else {
                break;
            };
            if oldest.seq == EVICTED {
                self.finished_evicted -= 1;
            } else if self.drop_finished(&oldest) {
                self.count_evicted();
            }
        }
        // The front's stale entries go now: marked ones without a look-up; unmarked ones
        // (a re-queued delivery's) looked for only while the order lists more than its
        // held and marked ones.
        while let Some(front) = self.finished.front() {
            if front.seq == EVICTED {
                self.finished_evicted -= 1;
            } else if self.finished.len() <= self.finished_count + self.finished_evicted
                || is_current(&self.deliveries, front)
            {
                break;
            }
            self.finished.pop_front();
        }
        // Entries leave only from the front here: the last mark's place moves with them.
        let popped = listed - self.finished.len();
        self.finished_marked_at = self.finished_marked_at.saturating_sub(popped);
        if self.finished_evicted > self.finished_count.max(64) {
            // Reads the entries only: ~200,000 for a log of 100,000, a fraction of a
            // millisecond.
            self.finished.retain(|e| e.seq != EVICTED);
            self.finished_evicted = 0;
            self.finished_marked_at = 0;
        }
        // Re-queued deliveries leave stale entries behind; compact before they pile up.
        if self.finished.len() > 2 * self.config.log_finished_max + 64 {
            let deliveries = &self.deliveries;
            self.finished.retain(|e| is_current(deliveries, e));
            self.finished_evicted = 0;
            self.finished_marked_at = 0;
        }
    }

    /// Reports the outcome of an attempt. Returns `false` when the outcome is stale and
    /// was ignored (the delivery ended meanwhile, e.g. its webhook was deleted, or the
    /// attempt number does not match).
    pub fn attempt_finished(&mut self, now_ms: u64, mut outcome: Outcome) -> bool {
        let now = self.advance_clock(now_ms);
        let Some(d) = self.deliveries.get(&outcome.delivery) else {
            return false;
        };
        if d.stage != Stage::InFlight || d.attempt != outcome.attempt {
            return false;
        }
        let (tenant, webhook) = (
            TenantId::clone(&d.event.tenant),
            WebhookId::clone(&d.webhook),
        );
        let (attempt, attempts_max) = (d.attempt, d.attempts_max);
        // Where the delivery stands in its schedule: the attempts it sent, not those
        // that found no connection and sent nothing (this one is not in the count yet:
        // its outcome is applied below). Read only when it may be retried (a 410 is
        // retried when stale, below).
        let sent_before = match classify(&outcome.result) {
            OutcomeClass::Retry | OutcomeClass::Gone => d.attempts_sent(),
            OutcomeClass::Success | OutcomeClass::Final => 0,
        };
        // Refusals in a row before this one (read only for a refusal).
        let refused_before = if outcome.result.gives_attempt_back() {
            d.refusals_in_a_row()
        } else {
            0
        };
        let w = match webhook_state(&self.tenants, &tenant, &webhook) {
            Some(w) if w.spec.status.is_active() => w,
            // Its webhook was disabled or deleted while the attempt was out, and the
            // ending of its pending deliveries (`advance_endings`) has not reached it
            // yet: it ends as that ending would end it, and the answer does not count,
            // as when the ending came first.
            gone_or_disabled => {
                let error = match gone_or_disabled {
                    Some(_) => DeliveryError::WebhookDisabled,
                    None => DeliveryError::WebhookDeleted,
                };
                // The endpoint's slot is free again (its health shows no request that
                // will never report).
                if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &webhook) {
                    w.health.forget(outcome.delivery.0);
                }
                self.ending_met_one(&tenant, &webhook);
                self.end_delivery(now, outcome.delivery, DeliveryStatus::Failed, Some(error));
                return false;
            }
        };
        // An attempt started before the webhook last changed (its URL, say) went to the
        // endpoint as it was: its answer says nothing of the endpoint now (applying it
        // forgets the request, see `apply_attempt_finished`), and a 410 from an address
        // the webhook has left is retried at the new one instead of disabling it.
        let stale = attempt_began_before_change(now, outcome.latency_ms, w);
        let class = match classify(&outcome.result) {
            OutcomeClass::Gone if stale => OutcomeClass::Retry,
            class => class,
        };
        let counters = &mut self.counters;
        match class {
            OutcomeClass::Success => counters.attempts_succeeded += 1,
            OutcomeClass::Retry => counters.attempts_retryable += 1,
            OutcomeClass::Final | OutcomeClass::Gone => counters.attempts_final += 1,
        }
        counters.attempt_latency_ms.observe(outcome.latency_ms);
        // The delay comes from the schedule in force now: past its end, its last delay;
        // a schedule changed to no retries at all ends the delivery (the attempts its
        // old schedule allowed are not made back to back), unless its attempt sent
        // nothing (below).
        let schedule = w.spec.schedule(&self.config.retry_schedule);
        // An attempt that sent nothing gives its attempt back (applying the record
        // raises the delivery's allowance by one, live and replayed alike).
        let gives_back = outcome.result.gives_attempt_back();
        let allowance = if gives_back {
            attempts_max.saturating_add(1)
        } else {
            attempts_max
        };
        let next_at = match class {
            // An attempt that sent nothing leaves the delivery where it stood in its
            // schedule: it owes the same attempt, tried again after a minute, doubled for
            // each refusal in a row up to half an hour (whatever the schedule's delays; a
            // schedule of immediate retries would otherwise be refused again at once, and
            // again, while the connections stay busy). One that was sent waits the delay
            // before the next attempt its schedule counts, so refusals neither push a
            // delivery down its schedule nor make its next failure wait a later delay.
            OutcomeClass::Retry if attempt < allowance => if gives_back {
                Some(crate::retry::no_connection_retry_ms(
                    refused_before.saturating_add(1),
                ))
            } else {
                schedule
                    .delay_before_ms(sent_before.saturating_add(2))
                    .or_else(|| schedule.retry_delays_ms().last().copied())
            }
            .map(|scheduled| {
                let jittered = jitter_ms(
                    scheduled,
                    self.config.jitter_percent,
                    self.config.jitter_seed,
                    outcome.delivery.0,
                    attempt + 1,
                );
                now.saturating_add(retry_delay_ms(jittered, &outcome.result, now))
            }),
            _ => None,
        };
        let final_status = match (class, next_at) {
            (_, Some(_)) => None,
            (OutcomeClass::Success, None) => Some(DeliveryStatus::Success),
            (OutcomeClass::Retry, None) => Some(DeliveryStatus::Exhausted),
            (OutcomeClass::Final | OutcomeClass::Gone, None) => Some(DeliveryStatus::Failed),
        };
        // The driver's headers and body are moved into the record, not copied.
        let headers = std::mem::take(&mut outcome.response_headers);
        let mut body = std::mem::take(&mut outcome.response_body);
        body.truncate(RESPONSE_BODY_BYTES_MAX);
        self.emit(Record::AttemptFinished(record::AttemptFinished {
            at_ms: now,
            delivery: outcome.delivery.0,
            attempt,
            status: match outcome.result {
                AttemptResult::Response { status, .. } => status,
                AttemptResult::Transport(_) => 0,
            },
            transport_error: match outcome.result {
                AttemptResult::Transport(t) => Some(t.name().into()),
                AttemptResult::Response { .. } => None,
            },
            latency_ms: outcome.latency_ms,
            response_body: body,
            response_headers: headers,
            next_attempt_at_ms: next_at,
            final_status: final_status.map(|s| s.name().into()),
        }));
        // Applying the outcome updated the endpoint's health; it decides the rest.
        // Only a failure of the endpoint itself: an attempt refused before it was sent
        // (no connection to send on) says nothing of it, so it decides nothing either.
        let should_disable = class == OutcomeClass::Retry
            && !stale
            && outcome.result.reached_receiver()
            && webhook_state(&self.tenants, &tenant, &webhook)
                .is_some_and(|w| w.health.should_disable(now, &self.config.health));
        if class == OutcomeClass::Gone {
            self.disable(now, &tenant, &webhook, DisableReason::Gone);
        } else if should_disable {
            self.disable(now, &tenant, &webhook, DisableReason::FailingTooLong);
        }
        true
    }

    /// Disables a webhook automatically and publishes `webhook.disabled` to the tenant.
    pub(super) fn disable(
        &mut self,
        now: u64,
        tenant: &TenantId,
        webhook: &WebhookId,
        reason: DisableReason,
    ) {
        let Some(w) = webhook_state(&self.tenants, tenant, webhook) else {
            return;
        };
        if !w.spec.status.is_active() {
            return;
        }
        let mut spec = w.spec.clone();
        let url = w.url_text.clone();
        spec.status = WebhookStatus::Disabled { reason, at_ms: now };
        self.emit(Record::WebhookUpserted(record::WebhookUpserted {
            at_ms: now,
            webhook: webhook_to_rec(tenant, webhook, &spec),
        }));
        self.end_webhook_deliveries(now, tenant, webhook, DeliveryError::WebhookDisabled);
        let data = serde_json::json!({
            "webhook_id": webhook.as_str(),
            "url": &*url,
            "reason": reason.name(),
            "disabled_at": crate::envelope::rfc3339_ms(now),
        });
        let ids_before = self.next_delivery;
        let event = NewEvent {
            id: self.generated_event_id(GENERATED_EVENT_ID_PREFIXES[0]),
            // The constant is a valid event type; checked by a test.
            event_type: EventType::parse(WEBHOOK_DISABLED_EVENT)
                .expect("WEBHOOK_DISABLED_EVENT is a valid event type"),
            api_version: API_VERSION_DEFAULT.to_string(),
            created_at_ms: now,
            location_id: None,
            data: data.to_string().into_bytes(),
            idempotency: None,
        };
        // A full shard (or a tenant at its limit) drops the operational event rather
        // than the disable itself: the webhook's status is the source of truth, the
        // event a courtesy. Its id was never journaled: the number goes back, as a
        // dispatcher rebuilt from the journal would not have taken it.
        if self.accept_event(now, tenant, event).is_err() {
            self.next_delivery = ids_before;
        }
    }

    /// A deterministic event id for events the dispatcher originates: unique per shard
    /// because it embeds a number taken from the delivery id counter, which only grows
    /// (the number is consumed here, so an event that creates no deliveries cannot lend
    /// its id to the next one; replay restores the counter past it,
    /// [`Self::skip_past_generated_event_id`]).
    pub(super) fn generated_event_id(&mut self, prefix: &str) -> EventId {
        let text = format!("{prefix}{:016x}", self.next_delivery);
        self.next_delivery += 1;
        // Prefix and hex digits are within the event id charset and length.
        EventId::parse(&text).expect("generated event ids are valid")
    }

    /// Replay: keeps the counter behind generated event ids past every id already used
    /// (numbers at or past [`GENERATED_EVENT_NUMBER_END`] were never generated here and
    /// are not followed).
    pub(super) fn skip_past_generated_event_id(&mut self, event_id: &str) {
        for prefix in GENERATED_EVENT_ID_PREFIXES {
            if let Some(hex) = event_id.strip_prefix(prefix) {
                match u64::from_str_radix(hex, 16) {
                    Ok(number) if number < GENERATED_EVENT_NUMBER_END => {
                        self.next_delivery = self.next_delivery.max(number + 1);
                    }
                    _ => {}
                }
            }
        }
    }

    pub(super) fn apply_attempt_finished(
        &mut self,
        r: &record::AttemptFinished,
    ) -> Result<(), String> {
        let delivery = DeliveryId(r.delivery);
        let Some(d) = pending_mut(&mut self.deliveries, delivery) else {
            return Ok(());
        };
        let result = match &r.transport_error {
            Some(name) => match DeliveryError::from_name(name) {
                Some(DeliveryError::Transport(t)) => AttemptResult::Transport(t),
                _ => return Err(format!("transport error {name:?}")),
            },
            None => AttemptResult::Response {
                status: r.status,
                retry_after: None,
            },
        };
        let class = classify(&result);
        let reached_receiver = result.reached_receiver();
        if r.attempt < d.attempt.max(1) {
            return Err(format!(
                "delivery {delivery} finishes attempt {} after attempt {}",
                r.attempt, d.attempt
            ));
        }
        set_attempt(&mut self.fresh_pending, d, r.attempt);
        if result.gives_attempt_back() && r.final_status.is_none() {
            // Sent nothing: the attempt does not count (`attempt_finished` scheduled the
            // next one on this allowance).
            d.attempts_max = d.attempts_max.saturating_add(1);
        }
        let last_error = match result {
            AttemptResult::Transport(t) => Some(DeliveryError::Transport(t)),
            AttemptResult::Response { status, .. } => {
                (class != OutcomeClass::Success).then_some(DeliveryError::Status(status))
            }
        };
        let outcomes = d.outcomes_mut();
        outcomes.last_status_code = r.status;
        outcomes.set_last_latency_ms(Some(r.latency_ms));
        outcomes.last_error = last_error;
        outcomes.set_last_response(&r.response_body, r.response_headers.iter());
        let last_status = (r.status != 0).then_some(r.status);
        outcomes.attempt_ended(r.attempt, r.at_ms, last_status, r.latency_ms, last_error);
        d.updated_at_ms = r.at_ms;
        // Live, the attempt was marked in flight; replayed, only its outcome was
        // recorded, and the delivery still waits where it was due (settled below).
        if d.stage == Stage::InFlight {
            count_down(&mut self.in_flight_count, "in-flight deliveries");
            d.stage = Stage::Waiting;
        }
        let (tenant, webhook) = (
            TenantId::clone(&d.event.tenant),
            WebhookId::clone(&d.webhook),
        );
        if let Some(w) = webhook_state_mut(&mut self.tenants, &tenant, &webhook) {
            let signal = match class {
                OutcomeClass::Success => Signal::Success,
                OutcomeClass::Retry => Signal::Failure,
                OutcomeClass::Final | OutcomeClass::Gone => Signal::Responsive,
            };
            if reached_receiver && !attempt_began_before_change(r.at_ms, r.latency_ms, w) {
                if signal == Signal::Failure {
                    let longest_wait_ms = longest_wait_ms(
                        w.spec.schedule(&self.config.retry_schedule),
                        self.config.jitter_percent,
                        w.spec.limits.request_timeout_ms,
                    );
                    w.health
                        .restart_if_unobserved(r.at_ms, &self.config.health, longest_wait_ms);
                }
                w.health
                    .finish(r.at_ms, r.delivery, signal, &self.config.health);
            } else {
                // Refused before anything was sent: not a sign of the endpoint being up
                // (no breaker closes) nor down (no failure counts); its slot is free.
                w.health.forget(r.delivery);
            }
            // The endpoint has room again.
            self.ready_webhooks
                .insert((tenant.clone(), webhook.clone()));
        }
        match (r.next_attempt_at_ms, &r.final_status) {
            (Some(at), _) => self.schedule(delivery, at),
            (None, Some(status)) => {
                let status = DeliveryStatus::from_name(status)
                    .filter(|s| s.is_final())
                    .ok_or_else(|| format!("final status {status:?}"))?;
                self.finish(r.at_ms, delivery, status, None)?;
            }
            (None, None) => {
                return Err("attempt outcome with neither next attempt nor final status".into())
            }
        }
        self.drop_stale_queue_head(&tenant, &webhook);
        Ok(())
    }
}
