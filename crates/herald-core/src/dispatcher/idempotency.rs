//! Idempotency keys: which repeats of a publish are answered with the first event.

use super::*;

/// What a remembered idempotency key answers.
pub(super) struct KeyEntry {
    pub(super) fingerprint: [u8; 16],
    pub(super) event_id: EventId,
    pub(super) created_at_ms: u64,
    pub(super) accepted_at_ms: u64,
    /// The `EventAccepted` record (`AppendId(0)` when replayed: durable).
    pub(super) append: AppendId,
    /// When it was remembered, in the order of remembering ([`Keys::insert`] sets it):
    /// tells an order entry of this very entry from a stale one of the same key. (Its
    /// time cannot: a key forgotten and remembered again within one millisecond would
    /// match its stale entry and be forgotten early, live only, as a dispatcher rebuilt
    /// from a checkpoint has no stale entries.)
    pub(super) seq: u64,
}

/// One tenant's remembered keys, with their acceptance order.
#[derive(Default)]
pub(super) struct TenantKeys {
    pub(super) keys: FastHashMap<Arc<str>, KeyEntry>,
    /// (seq, key), oldest first, for forgetting the tenant's oldest when it is at its
    /// limit. Entries whose key was replaced or forgotten since are skipped.
    order: VecDeque<(u64, Arc<str>)>,
}

impl TenantKeys {
    /// Forgets the oldest of these keys; `false` when none is left.
    fn pop_oldest(&mut self) -> bool {
        while let Some((seq, key)) = self.order.pop_front() {
            if self.keys.get(&key).is_some_and(|entry| entry.seq == seq) {
                self.keys.remove(&key);
                return true;
            }
        }
        false
    }
}

/// Remembered idempotency keys of one shard, by tenant, with their acceptance order.
#[derive(Default)]
pub(super) struct Keys {
    pub(super) by_tenant: FastHashMap<TenantId, TenantKeys>,
    /// (accepted_at_ms, seq, tenant, key), oldest first: dispatcher time never runs
    /// backwards, so this is also expiry order. Entries whose key was replaced or
    /// forgotten since are skipped when popped.
    pub(super) order: VecDeque<(u64, u64, TenantId, Arc<str>)>,
    pub(super) count: usize,
    /// The next entry's [`KeyEntry::seq`].
    next_seq: u64,
}

impl Keys {
    pub(super) fn get(&self, tenant: &TenantId, key: &str) -> Option<&KeyEntry> {
        self.by_tenant.get(tenant)?.keys.get(key)
    }

    /// Forgets the oldest key (if the order's front is still current).
    pub(super) fn pop_oldest(&mut self) {
        let Some((_, seq, tenant, key)) = self.order.pop_front() else {
            return;
        };
        let Some(keys) = self.by_tenant.get_mut(&tenant) else {
            return;
        };
        if keys.keys.get(&key).is_some_and(|entry| entry.seq == seq) {
            keys.keys.remove(&key);
            self.count -= 1;
            if keys.keys.is_empty() {
                self.by_tenant.remove(&tenant);
            }
        }
    }

    /// Forgets the `n` oldest keys of `tenant` (a step of its purge); how many it forgot.
    /// Their entries in the shard's order are skipped when they reach its front, as a
    /// replaced key's are.
    pub(super) fn forget_oldest_of(&mut self, tenant: &TenantId, n: usize) -> usize {
        let Some(keys) = self.by_tenant.get_mut(tenant) else {
            return 0;
        };
        let mut forgotten = 0;
        while forgotten < n && keys.pop_oldest() {
            forgotten += 1;
        }
        self.count -= forgotten;
        if keys.keys.is_empty() {
            self.by_tenant.remove(tenant);
        }
        forgotten
    }

    /// Forgets every key accepted `window_ms` or longer before `now`.
    pub(super) fn forget_expired(&mut self, now: u64, window_ms: u64) {
        while self
            .order
            .front()
            .is_some_and(|(at, _, _, _)| at.saturating_add(window_ms) <= now)
        {
            self.pop_oldest();
        }
    }

    /// Remembers `key`, forgetting the tenant's own oldest keys beyond
    /// `per_tenant_max` (at least 1), then the shard's oldest beyond `max`: a tenant
    /// publishing a flood of keys shortens how long its own keys are remembered, and
    /// no more than its share of everyone else's.
    pub(super) fn insert(
        &mut self,
        tenant: &TenantId,
        key: &str,
        mut entry: KeyEntry,
        max: usize,
        per_tenant_max: usize,
    ) {
        let key: Arc<str> = Arc::from(key);
        let accepted_at_ms = entry.accepted_at_ms;
        let seq = self.next_seq;
        self.next_seq += 1;
        entry.seq = seq;
        let keys = self.by_tenant.entry(tenant.clone()).or_default();
        if keys.keys.insert(Arc::clone(&key), entry).is_none() {
            self.count += 1;
        }
        keys.order.push_back((seq, Arc::clone(&key)));
        // The key just remembered is the newest: at least one is kept.
        while keys.keys.len() > per_tenant_max.max(1) && keys.pop_oldest() {
            self.count -= 1;
        }
        // Entries of keys forgotten by the shard's bound or replaced stay behind until
        // they reach the front; compact before they outnumber the live ones.
        if keys.order.len() > 2 * keys.keys.len() + 64 {
            let live = &keys.keys;
            keys.order
                .retain(|(seq, key)| live.get(key).is_some_and(|entry| entry.seq == *seq));
        }
        self.order
            .push_back((accepted_at_ms, seq, tenant.clone(), key));
        while self.count > max {
            self.pop_oldest();
        }
        // Keys replaced or forgotten by their tenant's bound leave stale order entries;
        // compact before they outnumber the live ones by much.
        if self.order.len() > 2 * max + 64 {
            let by_tenant = &self.by_tenant;
            self.order.retain(|(_, seq, tenant, key)| {
                by_tenant
                    .get(tenant)
                    .and_then(|keys| keys.keys.get(key))
                    .is_some_and(|entry| entry.seq == *seq)
            });
        }
    }
}

impl Dispatcher {
    /// An event with an idempotency key: `Some` answer when the key is live (the first
    /// event again, or a conflict), `None` when the event is new. Changes nothing, so a
    /// duplicate leaves no trace for replay to reproduce.
    pub(super) fn check_key(
        &self,
        now: u64,
        tenant: &TenantId,
        idempotency: &Idempotency,
    ) -> Result<Option<Accepted>, AcceptError> {
        if !Idempotency::key_is_valid(&idempotency.key) {
            return Err(AcceptError::IdempotencyKey {
                max: crate::envelope::IDEMPOTENCY_KEY_BYTES_MAX,
            });
        }
        let live = self.keys.get(tenant, &idempotency.key).filter(|entry| {
            entry
                .accepted_at_ms
                .saturating_add(self.config.idempotency_window_ms)
                > now
        });
        match live {
            None => Ok(None),
            Some(entry) if entry.fingerprint == idempotency.fingerprint => Ok(Some(Accepted {
                event_id: entry.event_id.clone(),
                append: entry.append,
                deliveries: 0,
                first_delivery: None,
                created_at_ms: entry.created_at_ms,
                duplicate: true,
            })),
            Some(_) => Err(AcceptError::IdempotencyConflict {
                key: idempotency.key.clone(),
            }),
        }
    }

    /// Every accepted event (live or replayed, so both forget alike) ages the remembered
    /// keys; one with a key is then remembered.
    pub(super) fn remember_key(
        &mut self,
        now: u64,
        tenant: &TenantId,
        idempotency: Option<&Idempotency>,
        event_id: &EventId,
        created_at_ms: u64,
        append: AppendId,
    ) {
        self.keys
            .forget_expired(now, self.config.idempotency_window_ms);
        if let Some(idempotency) = idempotency {
            let entry = KeyEntry {
                fingerprint: idempotency.fingerprint,
                event_id: event_id.clone(),
                created_at_ms,
                accepted_at_ms: now,
                append,
                seq: 0,
            };
            self.keys.insert(
                tenant,
                &idempotency.key,
                entry,
                self.config.idempotency_keys_max,
                self.config.idempotency_keys_per_tenant_max,
            );
        }
    }
}
