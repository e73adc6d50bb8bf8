//! The invariant checker.
//!
//! It keeps two layers of knowledge:
//!
//! * **Ground truth**, which only the simulator knows: which events were acknowledged to
//!   their publisher, which requests reached which endpoint and when, and which outcomes
//!   the driver reported. Crashes do not erase it.
//! * **The dispatcher's claims**, read from the records it emitted (the view): which
//!   deliveries exist, which attempts finished, which deliveries ended and which webhooks
//!   are disabled. After a crash the view is rebuilt from the surviving journal only, the
//!   same way the dispatcher rebuilds itself.
//!
//! Every request and every record is checked against both when it appears; the end of a
//! run checks that every acknowledged event reached every matching webhook or ended by
//! the rules.

use std::collections::{BTreeMap, BTreeSet};

use herald_core::record::{self, Record};
use herald_core::{classify, AttemptResult, OutcomeClass, SendRequest, WEBHOOK_DISABLED_EVENT};

use crate::scenario::{filter_matches, Scenario};
use crate::{Invariant, Violation};

// The endpoint-protection policy the simulated dispatcher runs with (its defaults), as the
// delivery contract states it. Written out here rather than imported from herald-core, so
// that the checker is an independent oracle: a default that drifts in the core is a
// violation here, not a silently shared mistake.

/// Consecutive retryable failures that open an endpoint's circuit breaker.
const BREAKER_FAILURES: u32 = 5;
/// How long a breaker stays open the first time: nothing starts meanwhile.
const BREAKER_OPEN_MS: u64 = 1_000;
/// An endpoint failing continuously for this long (5 days) is disabled.
const DISABLE_AFTER_FAILING_MS: u64 = 5 * 24 * 3_600_000;
/// The longest delay a receiver's `Retry-After` can ask for (24 hours).
const RETRY_AFTER_MS_MAX: u64 = 24 * 3_600_000;

/// The default schedule's retry delays (the platform's published policy), which the
/// checker knows independently of the core.
pub const DEFAULT_RETRY_DELAYS_MS: [u64; 6] = [
    60_000,
    5 * 60_000,
    30 * 60_000,
    2 * 3_600_000,
    8 * 3_600_000,
    24 * 3_600_000,
];

#[derive(Clone, Debug)]
struct WebhookTruth {
    tenant: String,
    filters: Vec<String>,
    retry_delays_ms: Vec<u64>,
    in_flight_max: u32,
    /// (requests per second, burst).
    rate: Option<(u32, u32)>,
}

impl WebhookTruth {
    fn attempts_max(&self) -> u32 {
        self.retry_delays_ms.len() as u32 + 1
    }
}

#[derive(Clone, Debug)]
struct EventTruth {
    tenant: String,
    event_type: String,
    /// Acknowledged to the publisher (its `EventAccepted` record was durable).
    acked: bool,
    /// The envelope of its first acceptance with deliveries: an event id always stands
    /// for the same bytes (re-publishing sends the same event).
    body: Option<Vec<u8>>,
}

/// The dispatcher's claims about one delivery, from its records.
#[derive(Clone, Debug)]
struct DeliveryView {
    event_id: String,
    webhook: String,
    attempts_max: u32,
    accepted_at_ms: u64,
    /// Highest attempt whose outcome was recorded, and when.
    finished: Option<(u32, u64)>,
    /// Final status and reason once ended.
    ended: Option<(String, Option<String>)>,
    /// Highest attempt the records know was made: one with a recorded outcome (an
    /// attempt's start has no record of its own; journals of older builds have
    /// `AttemptStarted` records, which count too). An attempt abandoned in flight, or
    /// lost in a crash, does not count.
    started: u32,
    /// The number the next attempt must carry.
    next_attempt: u32,
    /// Due time set by a manual re-queue, until the next outcome.
    requeued_due_ms: Option<u64>,
    /// Attempts whose recorded outcome gave the attempt back (no connection to send on).
    given_back: BTreeSet<u32>,
}

impl DeliveryView {
    /// The place in its schedule that attempt `attempt` (just ended, and sent) takes:
    /// the attempts sent up to it, its number less the attempts before it that gave
    /// their attempt back. (The dispatcher counts the attempts its history keeps, which
    /// drops refused ones first: the same while at most
    /// [`herald_core::ATTEMPT_HISTORY_MAX`] were sent, and past the longest schedule's
    /// end, where every place waits the last delay, beyond.)
    fn schedule_place(&self, attempt: u32) -> u32 {
        attempt - self.given_back.range(..attempt).count() as u32
    }

    /// The refusals recorded in a row that end with attempt `last` (0 when `last` was
    /// not refused): what a refusal after them waits, as the dispatcher reads them from
    /// its history (a row longer than that holds is past where the wait stops growing).
    fn refusals_ending_at(&self, last: u32) -> u32 {
        (1..=last)
            .rev()
            .take_while(|n| self.given_back.contains(n))
            .count() as u32
    }
}

/// A management operation the simulator performs; records it causes are justified by it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManualOp {
    /// The initial configuration: every webhook of the scenario is created.
    Setup,
    /// Disable a webhook by hand.
    Disable(String),
    /// Re-enable a webhook (disabled by hand or automatically).
    Enable(String),
    /// Replace a webhook's filters.
    Update {
        /// Webhook.
        webhook: String,
        /// New filters.
        filters: Vec<String>,
    },
    /// Delete a webhook.
    Delete(String),
    /// Retry one delivery now.
    Retry(u64),
    /// Re-send the failed deliveries of a webhook accepted since a time.
    Resend {
        /// Webhook.
        webhook: String,
        /// Acceptance time lower bound.
        since_ms: u64,
    },
    /// Send a test event of a type to one webhook.
    TestEvent {
        /// Webhook.
        webhook: String,
        /// Event type.
        event_type: String,
    },
}

/// The dispatcher's claims, as its records state them.
#[derive(Clone, Debug, Default)]
struct View {
    deliveries: BTreeMap<u64, DeliveryView>,
    /// Webhook → disable reason.
    disabled: BTreeMap<String, String>,
    /// Deleted webhooks.
    deleted: BTreeSet<String>,
    /// Per webhook: a 410 was recorded since it was (re-)enabled.
    gone_seen: BTreeSet<String>,
    /// Per webhook: the last recorded success, or when it was created or re-enabled —
    /// the start of its failing run as far as the records tell.
    healthy_at_ms: BTreeMap<String, u64>,
    /// Event ids with an `EventAccepted` record.
    accepted_events: BTreeSet<String>,
}

/// One outcome the driver reported and the dispatcher took.
#[derive(Clone, Debug)]
struct OutcomeTruth {
    at_ms: u64,
    result: AttemptResult,
}

/// The checker.
#[derive(Debug)]
pub struct Checker {
    seed: u64,
    jitter_percent: u8,
    webhooks: BTreeMap<String, WebhookTruth>,
    url_to_webhook: BTreeMap<String, String>,
    events: BTreeMap<String, EventTruth>,
    view: View,
    /// Requests in flight in the current incarnation, per webhook.
    in_flight: BTreeMap<String, u32>,
    /// Deliveries with an attempt in flight in the current incarnation.
    delivery_in_flight: BTreeMap<u64, u32>,
    /// (delivery, attempt) → outcomes taken by the dispatcher (several after crashes).
    outcomes: BTreeMap<(u64, u32), Vec<OutcomeTruth>>,
    /// Deliveries with a 2xx outcome taken.
    succeeded: BTreeSet<u64>,
    /// Requests seen, for statistics.
    pub sends: u64,
    /// Highest attempt sent per delivery, to count crash repeats.
    attempt_sent_max: BTreeMap<u64, u32>,
    /// Attempts repeated after a crash.
    pub repeats: u64,
    /// The management operation in progress, if any.
    op: Option<ManualOp>,
    /// Consecutive retryable failures per webhook since a known-closed breaker (`None`:
    /// not modelled right now).
    breakers: BTreeMap<String, Option<u32>>,
    /// Per webhook: the breaker is open until then.
    breaker_quiet_until_ms: BTreeMap<String, u64>,
    /// Breaker openings modelled.
    breaker_openings: u64,
    /// Outcomes taken that gave their attempt back (no connection to send on).
    attempts_given_back: u64,
    /// Token buckets of rate-limited webhooks: (thousandths of a token, as of when). A
    /// webhook without an entry has a full bucket (created, re-enabled or restarted).
    buckets: BTreeMap<String, (u64, u64)>,
}

/// How the deliveries of a run ended, and what the run exercised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Deliveries that ended with a 2xx.
    pub success: u64,
    /// Deliveries that ended failed (final answer or disabled webhook).
    pub failed: u64,
    /// Deliveries whose every attempt failed.
    pub exhausted: u64,
    /// Webhooks disabled: 410.
    pub disabled_gone: u64,
    /// Webhooks disabled: failing too long.
    pub disabled_failing: u64,
    /// Webhooks disabled by hand (still disabled at the end).
    pub disabled_manual: u64,
    /// Attempts repeated after a crash.
    pub repeats: u64,
    /// Breaker openings (checked: nothing starts while open).
    pub breaker_openings: u64,
    /// Attempts the driver had no connection for (checked: given back, never the one
    /// that exhausts a delivery, and never counted against the endpoint's breaker).
    pub attempts_given_back: u64,
}

impl Checker {
    /// A checker for `scenario`; `jitter_percent` is the dispatcher's configured jitter.
    pub fn new(seed: u64, scenario: &Scenario, jitter_percent: u8) -> Checker {
        let mut webhooks = BTreeMap::new();
        let mut url_to_webhook = BTreeMap::new();
        for w in &scenario.webhooks {
            webhooks.insert(
                w.id.clone(),
                WebhookTruth {
                    tenant: scenario.tenants[w.tenant].clone(),
                    filters: w.filters.clone(),
                    retry_delays_ms: w
                        .retry_delays_ms
                        .clone()
                        .unwrap_or_else(|| DEFAULT_RETRY_DELAYS_MS.to_vec()),
                    in_flight_max: w.in_flight_max,
                    rate: w.rate,
                },
            );
            url_to_webhook.insert(w.url.clone(), w.id.clone());
        }
        let events = scenario
            .events
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    EventTruth {
                        tenant: scenario.tenants[e.tenant].clone(),
                        event_type: e.event_type.clone(),
                        acked: false,
                        body: None,
                    },
                )
            })
            .collect();
        Checker {
            seed,
            jitter_percent,
            webhooks,
            url_to_webhook,
            events,
            view: View::default(),
            in_flight: BTreeMap::new(),
            delivery_in_flight: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            succeeded: BTreeSet::new(),
            sends: 0,
            attempt_sent_max: BTreeMap::new(),
            repeats: 0,
            op: None,
            breakers: scenario
                .webhooks
                .iter()
                .map(|w| (w.id.clone(), Some(0)))
                .collect(),
            breaker_quiet_until_ms: BTreeMap::new(),
            breaker_openings: 0,
            attempts_given_back: 0,
            buckets: BTreeMap::new(),
        }
    }

    fn violation(&self, now_ms: u64, invariant: Invariant, detail: String) -> Violation {
        Violation {
            seed: self.seed,
            at_ms: now_ms,
            invariant,
            detail,
        }
    }

    /// The publisher of `event_id` got its acknowledgement.
    pub fn acked(&mut self, event_id: &str) {
        if let Some(e) = self.events.get_mut(event_id) {
            e.acked = true;
        }
    }

    /// Whether `webhook` is disabled according to the dispatcher's records.
    pub fn is_disabled(&self, webhook: &str) -> bool {
        self.view.disabled.contains_key(webhook)
    }

    /// A record the dispatcher emitted (in the current incarnation) or that survived a
    /// crash (during [`Checker::crashed`]).
    pub fn record(&mut self, now_ms: u64, record: &Record, live: bool) -> Result<(), Violation> {
        match record {
            Record::EventAccepted(r) => self.event_accepted(now_ms, r, live),
            // Only in journals of older builds.
            Record::AttemptStarted(r) => {
                if let Some(d) = self.view.deliveries.get_mut(&r.delivery) {
                    d.started = d.started.max(r.attempt);
                }
                Ok(())
            }
            Record::AttemptFinished(r) => self.attempt_finished(now_ms, r),
            Record::AttemptsFinished(outcomes) => outcomes
                .iter()
                .try_for_each(|r| self.attempt_finished(now_ms, r)),
            Record::DeliveryFinished(r) => self.delivery_finished(now_ms, r),
            Record::WebhookUpserted(r) => self.webhook_upserted(now_ms, r, live),
            Record::WebhookDeleted(r) => self.webhook_deleted(now_ms, r, live),
            Record::DeliveryRequeued(r) => self.delivery_requeued(now_ms, r, live),
            Record::Checkpoint(_) => Ok(()),
            // Drops finished deliveries from the log only (a purge is refused while the
            // tenant has a pending one), which no invariant here follows.
            Record::TenantPurged(_) => Ok(()),
        }
    }

    fn event_accepted(
        &mut self,
        now_ms: u64,
        r: &record::EventAccepted,
        live: bool,
    ) -> Result<(), Violation> {
        let Some(truth) = self.event_truth(&r.tenant, r.event_id.as_str(), &r.event_type) else {
            let earlier = self
                .events
                .get(r.event_id.as_str())
                .map(|e| (&e.tenant, &e.event_type));
            let invariant = if *r.event_type == *WEBHOOK_DISABLED_EVENT {
                // The dispatcher made the id up: two of its own events share an id.
                Invariant::Records
            } else {
                Invariant::TenantIsolation
            };
            return Err(self.violation(
                now_ms,
                invariant,
                format!(
                    "event {} accepted for tenant {} as {}; that id belongs to {earlier:?}",
                    r.event_id, r.tenant, r.event_type
                ),
            ));
        };
        let (tenant, event_type) = (truth.tenant.clone(), truth.event_type.clone());
        let mismatch = match self.events.get_mut(r.event_id.as_str()) {
            Some(e) if !r.body.is_empty() => match &e.body {
                Some(earlier) if *earlier != r.body => Some(format!(
                    "event id {} accepted twice with different envelopes:\n  {}\n  {}",
                    r.event_id,
                    String::from_utf8_lossy(earlier),
                    String::from_utf8_lossy(&r.body)
                )),
                Some(_) => None,
                None => {
                    e.body = Some(r.body.clone());
                    None
                }
            },
            _ => None,
        };
        if let Some(detail) = mismatch {
            return Err(self.violation(now_ms, Invariant::Records, detail));
        }
        // Routing: exactly the tenant's active webhooks whose filters match. Only checked
        // when the record is fresh: on replay the registry of that moment is gone.
        let got: BTreeSet<&str> = r.deliveries.iter().map(|d| &*d.webhook).collect();
        if live {
            let test_target = match &self.op {
                Some(ManualOp::TestEvent { webhook, .. })
                    if r.event_id.as_str().starts_with("evt_test_") =>
                {
                    Some(webhook.as_str())
                }
                _ => None,
            };
            let expected: BTreeSet<&str> = match test_target {
                Some(webhook) => [webhook].into_iter().collect(),
                None => self
                    .webhooks
                    .iter()
                    .filter(|(id, w)| {
                        w.tenant == tenant
                            && !self.view.disabled.contains_key(*id)
                            && !self.view.deleted.contains(*id)
                            && w.filters.iter().any(|f| filter_matches(f, &event_type))
                    })
                    .map(|(id, _)| id.as_str())
                    .collect(),
            };
            if got != expected {
                return Err(self.violation(
                    now_ms,
                    Invariant::Routing,
                    format!(
                        "event {} ({event_type}) of {tenant} fanned out to {got:?}; matching active webhooks are {expected:?}",
                        r.event_id
                    ),
                ));
            }
        }
        for d in &r.deliveries {
            let Some(w) = self.webhooks.get(&*d.webhook) else {
                return Err(self.violation(
                    now_ms,
                    Invariant::TenantIsolation,
                    format!("delivery {} to unknown webhook {}", d.delivery, d.webhook),
                ));
            };
            if w.tenant != tenant {
                return Err(self.violation(
                    now_ms,
                    Invariant::TenantIsolation,
                    format!(
                        "event {} of {tenant} routed to webhook {} of {}",
                        r.event_id, d.webhook, w.tenant
                    ),
                ));
            }
            if d.attempts_max != w.attempts_max() {
                return Err(self.violation(
                    now_ms,
                    Invariant::AttemptBudget,
                    format!(
                        "delivery {} allows {} attempts; the schedule of {} allows {}",
                        d.delivery,
                        d.attempts_max,
                        d.webhook,
                        w.attempts_max()
                    ),
                ));
            }
            if self.view.deliveries.contains_key(&d.delivery) {
                return Err(self.violation(
                    now_ms,
                    Invariant::Records,
                    format!("delivery id {} created twice", d.delivery),
                ));
            }
            self.view.deliveries.insert(
                d.delivery,
                DeliveryView {
                    event_id: r.event_id.to_string(),
                    webhook: d.webhook.to_string(),
                    attempts_max: d.attempts_max,
                    accepted_at_ms: r.at_ms,
                    finished: None,
                    ended: None,
                    started: 0,
                    next_attempt: 1,
                    requeued_due_ms: None,
                    given_back: BTreeSet::new(),
                },
            );
        }
        self.view.accepted_events.insert(r.event_id.to_string());
        Ok(())
    }

    /// The truth about an event the dispatcher accepted: a published one, or an
    /// operational `webhook.disabled` event of a tenant that exists.
    fn event_truth(
        &mut self,
        tenant: &str,
        event_id: &str,
        event_type: &str,
    ) -> Option<&EventTruth> {
        let test_event = matches!(
            &self.op,
            Some(ManualOp::TestEvent { webhook, event_type: t })
                if t == event_type
                    && event_id.starts_with("evt_test_")
                    && self.webhooks.get(webhook).is_some_and(|w| w.tenant == tenant)
        );
        let generated = event_type == WEBHOOK_DISABLED_EVENT || test_event;
        if generated && !self.events.contains_key(event_id) {
            let known_tenant = self.webhooks.values().any(|w| w.tenant == tenant);
            if !known_tenant {
                return None;
            }
            self.events.insert(
                event_id.to_string(),
                EventTruth {
                    tenant: tenant.to_string(),
                    event_type: event_type.to_string(),
                    // Nobody waits for an acknowledgement of an operational event.
                    acked: false,
                    body: None,
                },
            );
        }
        self.events
            .get(event_id)
            .filter(|e| e.tenant == tenant && e.event_type == event_type)
    }

    fn attempt_finished(
        &mut self,
        now_ms: u64,
        r: &record::AttemptFinished,
    ) -> Result<(), Violation> {
        let Some(d) = self.view.deliveries.get(&r.delivery) else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("outcome of unknown delivery {}", r.delivery),
            ));
        };
        let webhook = d.webhook.clone();
        let attempts_max = d.attempts_max;
        // The record must describe an outcome the driver really reported.
        let truth = self
            .outcomes
            .get(&(r.delivery, r.attempt))
            .and_then(|v| v.iter().find(|o| o.at_ms == r.at_ms))
            .cloned();
        let Some(truth) = truth else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!(
                    "outcome of delivery {} attempt {} at {} was never reported",
                    r.delivery, r.attempt, r.at_ms
                ),
            ));
        };
        let class = classify(&truth.result);
        let expected_final = match class {
            OutcomeClass::Success => Some("success"),
            OutcomeClass::Final | OutcomeClass::Gone => Some("failed"),
            // An attempt that sent nothing never uses up the allowance (it grows by one).
            OutcomeClass::Retry if truth.result.gives_attempt_back() => None,
            OutcomeClass::Retry if r.attempt >= attempts_max => Some("exhausted"),
            OutcomeClass::Retry => None,
        };
        if r.final_status.as_deref() != expected_final {
            return Err(self.violation(
                now_ms,
                Invariant::Outcome,
                format!(
                    "delivery {} attempt {}/{attempts_max} got {:?}; recorded final status {:?}, expected {:?}",
                    r.delivery, r.attempt, truth.result, r.final_status, expected_final
                ),
            ));
        }
        match (expected_final, r.next_attempt_at_ms) {
            (None, Some(next)) => {
                let place = d.schedule_place(r.attempt);
                // This refusal is not recorded in the view yet: it extends the row.
                let in_a_row = d.refusals_ending_at(r.attempt - 1) + 1;
                let due = self.retry_due_min_ms(&webhook, place, in_a_row, &truth);
                if next < due {
                    return Err(self.violation(
                        now_ms,
                        Invariant::EarlyAttempt,
                        format!(
                            "delivery {} attempt {} scheduled at {next}, before its due time {due}",
                            r.delivery,
                            r.attempt + 1
                        ),
                    ));
                }
            }
            (None, None) | (Some(_), Some(_)) => {
                return Err(self.violation(
                    now_ms,
                    Invariant::Outcome,
                    format!(
                        "delivery {} attempt {}: next attempt {:?} with final status {:?}",
                        r.delivery, r.attempt, r.next_attempt_at_ms, r.final_status
                    ),
                ));
            }
            (Some(_), None) => {}
        }
        let Some(d) = self.view.deliveries.get_mut(&r.delivery) else {
            return Ok(());
        };
        d.finished = Some((r.attempt, r.at_ms));
        d.started = d.started.max(r.attempt);
        d.next_attempt = r.attempt + 1;
        if truth.result.gives_attempt_back() {
            d.attempts_max = d.attempts_max.saturating_add(1);
            d.given_back.insert(r.attempt);
        }
        d.requeued_due_ms = None;
        if let Some(status) = &r.final_status {
            d.ended = Some((status.to_string(), None));
        }
        // The records are what the dispatcher's health is rebuilt from after a crash, so
        // auto-disable is judged by them (each checked above against a real outcome).
        match class {
            OutcomeClass::Success => {
                self.succeeded.insert(r.delivery);
                self.view.healthy_at_ms.insert(webhook, r.at_ms);
            }
            OutcomeClass::Gone => {
                self.view.gone_seen.insert(webhook);
            }
            OutcomeClass::Retry | OutcomeClass::Final => {}
        }
        Ok(())
    }

    fn delivery_finished(
        &mut self,
        now_ms: u64,
        r: &record::DeliveryFinished,
    ) -> Result<(), Violation> {
        let Some(d) = self.view.deliveries.get(&r.delivery) else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("unknown delivery {} finished", r.delivery),
            ));
        };
        if let Some((status, reason)) = d.ended.as_ref().filter(|(s, _)| s != "failed") {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!(
                    "delivery {} ended {status} ({reason:?}) and then {} ({:?})",
                    r.delivery, r.status, r.reason
                ),
            ));
        }
        // Ending a delivery without an outcome is only allowed when its webhook is
        // disabled (410 or failing too long).
        let justified = r.status == "failed"
            && match r.reason.as_deref() {
                Some("webhook_disabled") => self.view.disabled.contains_key(&d.webhook),
                Some("webhook_deleted") => self.view.deleted.contains(&d.webhook),
                _ => false,
            };
        if !justified {
            return Err(self.violation(
                now_ms,
                Invariant::Delivered,
                format!(
                    "delivery {} (event {} to {}) ended {} ({:?}) without cause",
                    r.delivery, d.event_id, d.webhook, r.status, r.reason
                ),
            ));
        }
        if let Some(d) = self.view.deliveries.get_mut(&r.delivery) {
            d.ended = Some((r.status.clone(), r.reason.clone()));
        }
        Ok(())
    }

    fn webhook_upserted(
        &mut self,
        now_ms: u64,
        r: &record::WebhookUpserted,
        live: bool,
    ) -> Result<(), Violation> {
        let id = r.webhook.webhook.clone();
        let Some(truth) = self.webhooks.get(&id) else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("record of unknown webhook {id}"),
            ));
        };
        if truth.tenant != r.webhook.tenant {
            return Err(self.violation(
                now_ms,
                Invariant::TenantIsolation,
                format!("webhook {id} recorded under tenant {}", r.webhook.tenant),
            ));
        }
        let requested = self.op.as_ref().is_some_and(|op| match op {
            ManualOp::Disable(w) | ManualOp::Enable(w) | ManualOp::Delete(w) => *w == id,
            ManualOp::Update { webhook, .. } => *webhook == id,
            ManualOp::Setup => true,
            _ => false,
        });
        if live && requested && r.webhook.filters != truth.filters {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!(
                    "webhook {id} recorded with filters {:?}; it was given {:?}",
                    r.webhook.filters, truth.filters
                ),
            ));
        }
        let enabling = r.webhook.disabled_reason.is_none()
            && (self.view.disabled.contains_key(&id) || !self.view.healthy_at_ms.contains_key(&id));
        if enabling {
            // Created or re-enabled: a clean health record.
            if live {
                self.buckets.remove(&id);
                self.breakers.insert(id.clone(), Some(0));
                self.breaker_quiet_until_ms.remove(&id);
            }
            self.view.gone_seen.remove(&id);
            self.view.healthy_at_ms.insert(id.clone(), r.at_ms);
        }
        if self.view.deleted.contains(&id) {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("webhook {id} changed after it was deleted"),
            ));
        }
        match r.webhook.disabled_reason.as_deref() {
            None => {
                if live && !requested {
                    return Err(self.violation(
                        now_ms,
                        Invariant::Records,
                        format!("webhook {id} changed without a request"),
                    ));
                }
                self.view.disabled.remove(&id);
            }
            Some(reason) => {
                if live && !self.view.disabled.contains_key(&id) {
                    let justified = match reason {
                        "gone" => self.view.gone_seen.contains(&id),
                        "failing_too_long" => {
                            let since = self.view.healthy_at_ms.get(&id).copied().unwrap_or(0);
                            r.at_ms.saturating_sub(since) >= DISABLE_AFTER_FAILING_MS
                        }
                        "manual" => self.op == Some(ManualOp::Disable(id.clone())),
                        _ => false,
                    };
                    if !justified {
                        return Err(self.violation(
                            now_ms,
                            Invariant::Delivered,
                            format!("webhook {id} disabled ({reason}) without cause"),
                        ));
                    }
                }
                // Disabling ends the webhook's pending deliveries as failed. Live, the
                // dispatcher also records each; on replay it derives them from this record
                // (a torn write may have kept this record but not those).
                for d in self.view.deliveries.values_mut() {
                    if d.webhook == id && d.ended.is_none() {
                        d.ended =
                            Some(("failed".to_string(), Some("webhook_disabled".to_string())));
                    }
                }
                self.view.disabled.insert(id, reason.to_string());
            }
        }
        Ok(())
    }

    fn webhook_deleted(
        &mut self,
        now_ms: u64,
        r: &record::WebhookDeleted,
        live: bool,
    ) -> Result<(), Violation> {
        if live && self.op != Some(ManualOp::Delete(r.webhook.clone())) {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("webhook {} deleted without a request", r.webhook),
            ));
        }
        for d in self.view.deliveries.values_mut() {
            if d.webhook == r.webhook && d.ended.is_none() {
                d.ended = Some(("failed".to_string(), Some("webhook_deleted".to_string())));
            }
        }
        self.view.disabled.remove(&r.webhook);
        self.view.deleted.insert(r.webhook.clone());
        Ok(())
    }

    fn delivery_requeued(
        &mut self,
        now_ms: u64,
        r: &record::DeliveryRequeued,
        live: bool,
    ) -> Result<(), Violation> {
        let Some(d) = self.view.deliveries.get(&r.delivery) else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("unknown delivery {} requeued", r.delivery),
            ));
        };
        let ended = d.ended.as_ref().map(|(status, _)| status.as_str());
        if live {
            let requested = match &self.op {
                Some(ManualOp::Retry(delivery)) => *delivery == r.delivery,
                Some(ManualOp::Resend { webhook, since_ms }) => {
                    *webhook == d.webhook
                        && d.accepted_at_ms >= *since_ms
                        && matches!(ended, Some("failed" | "exhausted"))
                }
                _ => false,
            };
            if !requested || ended == Some("success") || r.due_ms > now_ms {
                return Err(self.violation(
                    now_ms,
                    Invariant::Records,
                    format!(
                        "delivery {} ({ended:?}) requeued for {} without a matching request ({:?})",
                        r.delivery, r.due_ms, self.op
                    ),
                ));
            }
        }
        // A pending delivery keeps its budget; an ended one gets exactly one more attempt,
        // numbered after every attempt with a recorded outcome (one abandoned in flight
        // when the delivery ended had none, and its number is made again).
        let budget_ok = match ended {
            None => r.attempts_max == d.attempts_max,
            Some(_) => r.attempts_max == d.started + 1 && r.attempts_max >= d.next_attempt,
        };
        if !budget_ok {
            return Err(self.violation(
                now_ms,
                Invariant::AttemptBudget,
                format!(
                    "delivery {} ({ended:?}, {} started, budget {}) requeued with budget {}",
                    r.delivery, d.started, d.attempts_max, r.attempts_max
                ),
            ));
        }
        if let Some(d) = self.view.deliveries.get_mut(&r.delivery) {
            if d.ended.take().is_some() {
                d.next_attempt = r.attempts_max;
            }
            d.attempts_max = r.attempts_max;
            d.requeued_due_ms = Some(r.due_ms);
        }
        Ok(())
    }

    /// The simulator is about to perform `op`; records it causes are justified by it.
    pub fn manual(&mut self, op: ManualOp) {
        if let ManualOp::Update { webhook, filters } = &op {
            if let Some(w) = self.webhooks.get_mut(webhook) {
                w.filters = filters.clone();
            }
        }
        self.op = Some(op);
    }

    /// The operation's records have all been seen.
    pub fn manual_done(&mut self) {
        self.op = None;
    }

    /// Deliveries the dispatcher has created, with their webhook and final status (if
    /// they ended).
    pub fn deliveries(&self) -> impl Iterator<Item = (u64, &str, Option<&str>)> + '_ {
        self.view.deliveries.iter().map(|(id, d)| {
            let status = d.ended.as_ref().map(|(status, _)| status.as_str());
            (*id, d.webhook.as_str(), status)
        })
    }

    /// Whether `webhook` was deleted.
    pub fn is_deleted(&self, webhook: &str) -> bool {
        self.view.deleted.contains(webhook)
    }

    /// Earliest time the attempt after `previous` may start, `previous` being the
    /// attempt at place `place` (1-based) in its schedule
    /// ([`DeliveryView::schedule_place`]) or, refused a connection, the last of
    /// `refused_in_a_row` refusals in a row ([`DeliveryView::refusals_ending_at`]).
    fn retry_due_min_ms(
        &self,
        webhook: &str,
        place: u32,
        refused_in_a_row: u32,
        previous: &OutcomeTruth,
    ) -> u64 {
        let delays = self
            .webhooks
            .get(webhook)
            .map(|w| w.retry_delays_ms.as_slice())
            .unwrap_or(&[]);
        // An attempt that sent nothing is tried again after a minute doubled for each
        // refusal before it in the row, wherever the delivery stands in its schedule; one
        // that was sent waits the delay before the next place (past the schedule's end,
        // its last delay).
        let scheduled = if previous.result.gives_attempt_back() {
            herald_core::no_connection_retry_ms(refused_in_a_row)
        } else {
            delays
                .get(place as usize - 1)
                .or(delays.last())
                .copied()
                .unwrap_or_default()
        };
        // Jitter may shorten a delay by up to `jitter_percent`.
        let spread = scheduled / 100 * u64::from(self.jitter_percent)
            + scheduled % 100 * u64::from(self.jitter_percent) / 100;
        let mut due = previous.at_ms + scheduled - spread;
        if let AttemptResult::Response {
            status: 429 | 503,
            retry_after: Some(retry_after),
        } = &previous.result
        {
            let asked = retry_after.delay_ms(previous.at_ms).min(RETRY_AFTER_MS_MAX);
            due = due.max(previous.at_ms + asked);
        }
        due
    }

    /// A request the dispatcher asked to send at `now_ms`. Returns the webhook it goes to.
    pub fn send(&mut self, now_ms: u64, req: &SendRequest) -> Result<String, Violation> {
        self.sends += 1;
        let url = req.url.to_string();
        let Some(webhook) = self.url_to_webhook.get(&url).cloned() else {
            return Err(self.violation(
                now_ms,
                Invariant::TenantIsolation,
                format!("request to unknown URL {url}"),
            ));
        };
        // `url_to_webhook` and `webhooks` are built from the same scenario webhooks.
        let truth = self.webhooks[&webhook].clone();
        if webhook != req.webhook.as_str() || truth.tenant != req.tenant.as_str() {
            return Err(self.violation(
                now_ms,
                Invariant::TenantIsolation,
                format!(
                    "request for webhook {} of {} goes to {url}, the endpoint of {webhook} of {}",
                    req.webhook, req.tenant, truth.tenant
                ),
            ));
        }
        // What the receiver sees: the envelope's tenant and event must be the webhook's.
        let envelope: serde_json::Value = serde_json::from_slice(&req.body).map_err(|e| {
            self.violation(
                now_ms,
                Invariant::Envelope,
                format!("body of delivery {} is not JSON: {e}", req.delivery),
            )
        })?;
        let body_tenant = envelope.get("tenant_id").and_then(|v| v.as_str());
        let body_id = envelope.get("id").and_then(|v| v.as_str());
        let body_type = envelope.get("type").and_then(|v| v.as_str());
        if body_tenant != Some(truth.tenant.as_str()) || body_id != Some(req.event_id.as_str()) {
            return Err(self.violation(
                now_ms,
                Invariant::TenantIsolation,
                format!(
                    "{webhook} of {} received event {body_id:?} of tenant {body_tenant:?}",
                    truth.tenant
                ),
            ));
        }
        let event = self.events.get(req.event_id.as_str()).cloned();
        let Some(event) = event.filter(|e| e.tenant == truth.tenant) else {
            return Err(self.violation(
                now_ms,
                Invariant::TenantIsolation,
                format!(
                    "{webhook} of {} received event {} that its tenant never published",
                    truth.tenant, req.event_id
                ),
            ));
        };
        // Filters were checked when the event fanned out (they may change since).
        if body_type != Some(event.event_type.as_str()) {
            return Err(self.violation(
                now_ms,
                Invariant::Routing,
                format!(
                    "{webhook} received event {} as type {body_type:?}; it is {}",
                    req.event_id, event.event_type
                ),
            ));
        }
        if self.view.disabled.contains_key(&webhook) || self.view.deleted.contains(&webhook) {
            return Err(self.violation(
                now_ms,
                Invariant::Routing,
                format!("request to disabled or deleted webhook {webhook}"),
            ));
        }
        let delivery = req.delivery.0;
        let Some(d) = self.view.deliveries.get(&delivery).cloned() else {
            return Err(self.violation(
                now_ms,
                Invariant::Records,
                format!("request for delivery {delivery} that no record created"),
            ));
        };
        if d.webhook != webhook || d.event_id != req.event_id.as_str() {
            return Err(self.violation(
                now_ms,
                Invariant::Routing,
                format!(
                    "delivery {delivery} is event {} to {}, but the request is event {} to {webhook}",
                    d.event_id, d.webhook, req.event_id
                ),
            ));
        }
        if let Some((status, reason)) = &d.ended {
            return Err(self.violation(
                now_ms,
                Invariant::AttemptBudget,
                format!(
                    "attempt {} of delivery {delivery} after it ended {status} ({reason:?})",
                    req.attempt
                ),
            ));
        }
        if let Some(attempt) = self.delivery_in_flight.get(&delivery) {
            return Err(self.violation(
                now_ms,
                Invariant::AttemptBudget,
                format!(
                    "attempt {} of delivery {delivery} while attempt {attempt} is in flight",
                    req.attempt
                ),
            ));
        }
        // Attempts follow each other; after a crash the attempt in flight (per the
        // surviving records) is repeated with the same number.
        if req.attempt != d.next_attempt {
            return Err(self.violation(
                now_ms,
                Invariant::AttemptBudget,
                format!(
                    "delivery {delivery} sends attempt {}; attempt {} was expected (last outcome {:?})",
                    req.attempt, d.next_attempt, d.finished
                ),
            ));
        }
        // The schedule's budget, or the one a manual retry granted.
        if req.attempt > d.attempts_max {
            return Err(self.violation(
                now_ms,
                Invariant::AttemptBudget,
                format!(
                    "delivery {delivery} sends attempt {}; its budget is {} (schedule: {})",
                    req.attempt,
                    d.attempts_max,
                    truth.attempts_max()
                ),
            ));
        }
        let due = match (d.requeued_due_ms, d.finished) {
            (Some(due), _) => due,
            (None, None) => d.accepted_at_ms,
            (None, Some((attempt, at_ms))) => {
                let previous = self
                    .outcomes
                    .get(&(delivery, attempt))
                    .and_then(|v| v.iter().find(|o| o.at_ms == at_ms))
                    .cloned();
                match previous {
                    Some(previous) => {
                        let in_a_row = d.refusals_ending_at(attempt);
                        self.retry_due_min_ms(
                            &webhook,
                            d.schedule_place(attempt),
                            in_a_row,
                            &previous,
                        )
                    }
                    None => {
                        return Err(self.violation(
                            now_ms,
                            Invariant::Records,
                            format!(
                                "delivery {delivery}: recorded outcome {attempt} never reported"
                            ),
                        ))
                    }
                }
            }
        };
        if now_ms < due {
            return Err(self.violation(
                now_ms,
                Invariant::EarlyAttempt,
                format!(
                    "delivery {delivery} attempt {} sent at {now_ms}, {} ms before its due time {due}",
                    req.attempt,
                    due - now_ms
                ),
            ));
        }
        let in_flight = self.in_flight.entry(webhook.clone()).or_default();
        *in_flight += 1;
        if *in_flight > truth.in_flight_max {
            let count = *in_flight;
            return Err(self.violation(
                now_ms,
                Invariant::InFlightCap,
                format!(
                    "{count} requests in flight to {webhook}; its cap is {}",
                    truth.in_flight_max
                ),
            ));
        }
        if let Some(&until) = self.breaker_quiet_until_ms.get(&webhook) {
            if now_ms < until {
                return Err(self.violation(
                    now_ms,
                    Invariant::Breaker,
                    format!(
                        "request to {webhook} while its breaker is open ({} ms left)",
                        until - now_ms
                    ),
                ));
            }
        }
        if let Some((per_s, burst)) = truth.rate {
            // The rate limit, modelled independently: a bucket of `burst` tokens refilled
            // at `per_s` per second; each request takes one.
            let cap = u64::from(burst) * 1000;
            let (tokens, at_ms) = self.buckets.get(&webhook).copied().unwrap_or((cap, now_ms));
            let tokens = (tokens + now_ms.saturating_sub(at_ms) * u64::from(per_s)).min(cap);
            if tokens < 1000 {
                return Err(self.violation(
                    now_ms,
                    Invariant::RateLimit,
                    format!(
                        "request to {webhook} exceeds its rate limit ({per_s}/s, burst {burst}): {tokens}/1000 of a token left"
                    ),
                ));
            }
            self.buckets
                .insert(webhook.clone(), (tokens - 1000, now_ms));
        }
        self.delivery_in_flight.insert(delivery, req.attempt);
        let sent_max = self.attempt_sent_max.entry(delivery).or_default();
        if req.attempt <= *sent_max {
            self.repeats += 1;
        }
        *sent_max = (*sent_max).max(req.attempt);
        Ok(webhook)
    }

    /// The driver is about to report an outcome (of the current incarnation).
    pub fn outcome_reported(&mut self, webhook: &str, delivery: u64) {
        if let Some(n) = self.in_flight.get_mut(webhook) {
            *n = n.saturating_sub(1);
        }
        self.delivery_in_flight.remove(&delivery);
    }

    /// The dispatcher took an outcome (`attempt_finished` returned true).
    pub fn outcome_taken(
        &mut self,
        webhook: &str,
        delivery: u64,
        attempt: u32,
        at_ms: u64,
        result: AttemptResult,
        taken: bool,
    ) {
        if !taken {
            return;
        }
        if result.gives_attempt_back() {
            self.attempts_given_back += 1;
        }
        // The breaker, modelled up to its first opening after a known-closed state:
        // `breaker_failures` consecutive retryable failures open it for at least
        // `breaker_open_ms`, during which nothing may start.
        let class = classify(&result);
        // An attempt refused before anything was sent says nothing of the endpoint.
        let breaker = self
            .breakers
            .get_mut(webhook)
            .filter(|_| result.reached_receiver());
        if let Some(count) = breaker {
            match (class, *count) {
                (OutcomeClass::Retry, Some(n)) => {
                    *count = Some(n + 1);
                    if n + 1 >= BREAKER_FAILURES {
                        self.breaker_quiet_until_ms
                            .insert(webhook.to_string(), at_ms + BREAKER_OPEN_MS);
                        self.breaker_openings += 1;
                        // What follows depends on probes and doubling; stop modelling
                        // until the endpoint answers properly again.
                        *count = None;
                    }
                }
                (OutcomeClass::Retry, None) => {}
                (_, _) => {
                    // Any proper answer (success, or a final 3xx/4xx) closes the breaker.
                    *count = Some(0);
                    self.breaker_quiet_until_ms.remove(webhook);
                }
            }
        }
        self.outcomes
            .entry((delivery, attempt))
            .or_default()
            .push(OutcomeTruth { at_ms, result });
    }

    /// Requests in flight in the current incarnation.
    pub fn in_flight_total(&self) -> u32 {
        self.in_flight.values().sum()
    }

    /// The process crashed; `survivors` are the records left in the journal. Requests in
    /// flight are lost with it.
    pub fn crashed(&mut self, now_ms: u64, survivors: &[Record]) -> Result<(), Violation> {
        self.in_flight.clear();
        self.delivery_in_flight.clear();
        // A restarted dispatcher starts with full buckets; its breakers are whatever the
        // surviving records make of them.
        self.buckets.clear();
        self.breaker_quiet_until_ms.clear();
        for count in self.breakers.values_mut() {
            *count = None;
        }
        self.view = View::default();
        for record in survivors {
            self.record(now_ms, record, false)?;
        }
        // An operational event that did not survive never existed: nobody saw it (its
        // deliveries waited for durability), and the dispatcher may reuse its id.
        let accepted = &self.view.accepted_events;
        self.events.retain(|id, e| {
            let generated = e.event_type == WEBHOOK_DISABLED_EVENT || id.starts_with("evt_test_");
            !generated || accepted.contains(id)
        });
        // Durability: every acknowledged event survives.
        let lost: Vec<&String> = self
            .events
            .iter()
            .filter(|(id, e)| e.acked && !self.view.accepted_events.contains(*id))
            .map(|(id, _)| id)
            .collect();
        if let Some(id) = lost.first() {
            return Err(self.violation(
                now_ms,
                Invariant::Durability,
                format!("acknowledged event {id} is not in the journal after a crash"),
            ));
        }
        Ok(())
    }

    /// How the run's deliveries ended (per the final records).
    pub fn tally(&self) -> Tally {
        let mut tally = Tally {
            repeats: self.repeats,
            breaker_openings: self.breaker_openings,
            attempts_given_back: self.attempts_given_back,
            ..Tally::default()
        };
        for d in self.view.deliveries.values() {
            match d.ended.as_ref().map(|(status, _)| status.as_str()) {
                Some("success") => tally.success += 1,
                Some("failed") => tally.failed += 1,
                Some("exhausted") => tally.exhausted += 1,
                _ => {}
            }
        }
        for reason in self.view.disabled.values() {
            match reason.as_str() {
                "gone" => tally.disabled_gone += 1,
                "manual" => tally.disabled_manual += 1,
                _ => tally.disabled_failing += 1,
            }
        }
        tally
    }

    /// End of the run: every acknowledged event reached every matching webhook, or its
    /// delivery ended by the rules.
    pub fn finish(&self, now_ms: u64) -> Result<(), Violation> {
        for (id, e) in &self.events {
            if e.acked && !self.view.accepted_events.contains(id) {
                return Err(self.violation(
                    now_ms,
                    Invariant::Durability,
                    format!("acknowledged event {id} was never accepted"),
                ));
            }
        }
        for (delivery, d) in &self.view.deliveries {
            // Acknowledged or not (a torn write may keep an unacknowledged event), a
            // delivery the dispatcher knows of must end.
            let Some((status, reason)) = &d.ended else {
                return Err(self.violation(
                    now_ms,
                    Invariant::Delivered,
                    format!(
                        "delivery {delivery} (event {} to {}) never ended; last finished attempt {:?} of {}",
                        d.event_id, d.webhook, d.finished, d.attempts_max
                    ),
                ));
            };
            if status == "success" && !self.succeeded.contains(delivery) {
                return Err(self.violation(
                    now_ms,
                    Invariant::Delivered,
                    format!("delivery {delivery} claims success without a 2xx ({reason:?})"),
                ));
            }
        }
        Ok(())
    }
}
