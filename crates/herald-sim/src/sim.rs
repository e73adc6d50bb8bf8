//! The driver: virtual clock, agenda, journal with a durability model, crashes.
//!
//! The bookkeeping between dispatcher and journal (sequence numbers, durability,
//! publishes answered once durable, outcomes of a dispatcher replaced since, recovery) is
//! herald-core's [`Session`] and [`recover`], the same code the runtime's shard loop
//! runs; this driver supplies only what the runtime would do with real IO.

use std::collections::BTreeMap;

use herald_core::record::Record;
use herald_core::session::{recover, JournalFrame, Session};
use herald_core::{
    AppendId, BodyPos, BodyStore, Checkpoint, Command, DeliveryQuery, DeliveryRecord,
    DeliveryStatus, DisableReason, Dispatcher, DispatcherConfig, EndpointLimits, EventFilter,
    EventId, EventType, NewEvent, Outcome, PayloadAt, SendRequest, TenantId, WebhookId,
    WebhookSpec, WebhookStatus, API_VERSION_DEFAULT, ATTEMPT_HISTORY_MAX, PAGE_ITEMS_MAX,
};
use herald_http::Url;
use herald_sign::{generate_secret, public_key, Scheme, Verifier};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checker::{Checker, ManualOp};
use crate::endpoint::Answer;
use crate::scenario::{random_filter, Scenario, WebhookPlan, EVENT_TYPES};
use crate::{InjectedBug, Invariant, SimConfig, Stats, Violation};

const DAY_MS: u64 = 24 * 3_600_000;

/// Something scheduled on the virtual clock.
#[derive(Clone, Debug)]
enum Action {
    /// Publish event `index` of the scenario.
    Publish(usize),
    /// The journal's group commit: everything appended so far becomes durable.
    Sync,
    /// An attempt's outcome comes back to the process that sent it.
    Outcome {
        /// The session generation (one per process life) that sent it.
        generation: u64,
        webhook: String,
        delivery: u64,
        attempt: u32,
        answer: Answer,
    },
    /// The process dies.
    Crash,
    /// The driver begins a checkpoint, whose other parts it writes on later steps (or,
    /// one in every few, writes one whole); recovery starts from the last complete
    /// durable one.
    Checkpoint,
    /// The driver writes the next few parts of the checkpoint it is writing, and its end
    /// once it has every part.
    CheckpointStep,
    /// A management operation: webhook change or manual re-delivery.
    Manage,
}

/// One journal frame as the simulated disk holds it: encoded, as the real journal would,
/// 16-byte aligned like the journal's payloads.
struct Frame {
    kind: u16,
    version: u16,
    payload: rkyv::util::AlignedVec,
    /// For a checkpoint frame (`Journal::checkpoint_part` and its end marker), not an
    /// `Append` of the dispatcher: its place in its checkpoint.
    checkpoint: Option<Part>,
}

/// A checkpoint frame's place in its checkpoint, as the journal's part header holds it.
/// A checkpoint's frames need not be consecutive: records are appended between its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    /// The checkpoint it belongs to: the index of its first part's frame (the journal
    /// names it by that frame's sequence number).
    first: usize,
    /// The part's index; the end marker's is the number of parts before it.
    index: u32,
    /// The end marker (no payload): the checkpoint counts once it is on disk after
    /// every part.
    end: bool,
    /// The journal's length when the checkpoint began: it covers the frames before this
    /// index (sequence numbers up to it), and none appended after, between its parts
    /// included.
    covers: usize,
}

/// A complete checkpoint in the simulated journal.
#[derive(Debug)]
struct CompleteCheckpoint {
    /// The indexes of its part frames, in part order (the end marker excluded).
    parts: Vec<usize>,
    /// See [`Part::covers`].
    covers: usize,
    /// The index of its first part.
    first: usize,
}

impl CompleteCheckpoint {
    /// Frames before this index are what the journal may delete once the checkpoint is
    /// durable: frames it covers that also lie before its first part.
    fn compacts_before(&self) -> usize {
        self.covers.min(self.first)
    }
}

/// The latest complete checkpoint (the last end marker on disk whose every part lies
/// before it, whatever frames came between them), if there is one: a checkpoint a crash
/// cut short counts as never written, as in the real journal.
fn last_complete_checkpoint(journal: &[Frame]) -> Option<CompleteCheckpoint> {
    journal.iter().enumerate().rev().find_map(|(at, frame)| {
        let end = frame.checkpoint.filter(|p| p.end)?;
        let parts: Vec<usize> = (end.first..at)
            .filter(|&k| {
                journal[k]
                    .checkpoint
                    .is_some_and(|p| p.first == end.first && !p.end)
            })
            .collect();
        let in_order = parts.len() == end.index as usize
            && parts.iter().enumerate().all(|(n, &k)| {
                journal[k]
                    .checkpoint
                    .is_some_and(|p| p.index as usize == n && p.covers == end.covers)
            });
        in_order.then_some(CompleteCheckpoint {
            parts,
            covers: end.covers,
            first: end.first,
        })
    })
}

/// Where the simulated journal holds a frame's payload: the frame's sequence number
/// stands for the segment, and the payload starts it.
fn frame_at(seq: u64) -> PayloadAt {
    PayloadAt {
        segment: seq,
        offset: 0,
    }
}

/// Event bodies read back from the simulated journal, as a shard reads them through its
/// mapping. Frames the latest durable complete checkpoint covers and that lie before its
/// first part count as compacted away (the real journal deletes their segments), so a
/// body the dispatcher still points at there is missing, as it would be on disk, and
/// stops the run.
struct Bodies<'a> {
    journal: &'a [Frame],
    compacted_before: usize,
}

impl BodyStore for Bodies<'_> {
    fn body(&self, at: BodyPos) -> Option<&[u8]> {
        let index = usize::try_from(at.segment).ok()?.checked_sub(1)?;
        if index < self.compacted_before {
            return None;
        }
        let payload = &self.journal.get(index)?.payload;
        let start = at.offset as usize;
        payload.get(start..start.checked_add(at.len as usize)?)
    }
}

/// A checkpoint the driver is writing a part at a time, between other input.
struct Underway {
    checkpoint: Checkpoint,
    /// The index of its first part's frame, once written.
    first: Option<usize>,
    /// See [`Part::covers`].
    covers: usize,
}

/// Per-webhook signing setup, so that the receiver can verify what it gets.
struct Receiver {
    verifier: Verifier,
    requests: u32,
}

struct Sim<'a> {
    config: &'a SimConfig,
    rng: ChaCha8Rng,
    /// The seed's second stream, for where checkpoints begin and how their parts are
    /// paced, so that these choices do not move what the rest of a run draws.
    checkpoint_rng: ChaCha8Rng,
    scenario: Scenario,
    checker: Checker,
    dispatcher_config: DispatcherConfig,
    /// The shard's dispatcher with the shipped driver bookkeeping; a held reply is the
    /// index of a publish waiting for its `EventAccepted` to be durable.
    session: Session<usize>,
    now_ms: u64,
    agenda: BTreeMap<(u64, u64), Action>,
    agenda_seq: u64,
    journal: Vec<Frame>,
    durable_len: usize,
    /// Frames before this index are compacted away (see [`Bodies`]).
    compacted_before: usize,
    /// The checkpoint being written a part at a time, if one is.
    underway: Option<Underway>,
    /// Checkpoints begun (whole ones included): picks each one's layout.
    checkpoints_begun: u64,
    sync_scheduled: bool,
    receivers: BTreeMap<String, Receiver>,
    plans: BTreeMap<String, WebhookPlan>,
    /// The spec each webhook was last given, for updates.
    specs: BTreeMap<String, (TenantId, WebhookId, WebhookSpec)>,
    /// Tenants whose last webhook was deleted, to purge (a step per management turn,
    /// until done: refused while the deleted webhooks' deliveries are still ending).
    purges: Vec<TenantId>,
    stats: Stats,
    trace: Fnv,
}

/// FNV-1a, for a digest of everything the dispatcher emitted (determinism checks).
struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }
}

fn parse<T, E: std::fmt::Display>(value: Result<T, E>, what: &str) -> Result<T, String> {
    value.map_err(|e| format!("{what}: {e}"))
}

impl<'a> Sim<'a> {
    fn new(seed: u64, config: &'a SimConfig) -> Result<Sim<'a>, Violation> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let scenario = Scenario::random(&mut rng, &config.limits);
        let jitter_percent = if rng.random_bool(0.3) { 10 } else { 0 };
        let dispatcher_config = DispatcherConfig {
            jitter_percent,
            jitter_seed: seed,
            // Small batches exercise the leftover path of a tick.
            sends_per_tick_max: [1, 3, 64][rng.random_range(0..3)],
            // Endings spread over ticks meet everything else a shard does meanwhile
            // (taken from the seed, so that the scenario's draws stay as they were).
            endings_per_tick_max: [1, 3, 4096][(seed % 3) as usize],
            ..DispatcherConfig::default()
        };
        let checker = Checker::new(seed, &scenario, jitter_percent);
        let start_ms = scenario.start_ms;
        let mut checkpoint_rng = ChaCha8Rng::seed_from_u64(seed);
        checkpoint_rng.set_stream(1);
        let mut sim = Sim {
            config,
            rng,
            checkpoint_rng,
            checker,
            session: Session::new(reporting(Dispatcher::new(
                dispatcher_config.clone(),
                start_ms,
            ))),
            dispatcher_config,
            now_ms: start_ms,
            agenda: BTreeMap::new(),
            agenda_seq: 0,
            journal: Vec::new(),
            durable_len: 0,
            compacted_before: 0,
            underway: None,
            checkpoints_begun: 0,
            sync_scheduled: false,
            receivers: BTreeMap::new(),
            plans: BTreeMap::new(),
            specs: BTreeMap::new(),
            purges: Vec::new(),
            stats: Stats {
                seed,
                ..Stats::default()
            },
            trace: Fnv(0xcbf2_9ce4_8422_2325),
            scenario,
        };
        sim.checker.manual(ManualOp::Setup);
        sim.create_webhooks()
            .map_err(|detail| sim.violation(Invariant::Setup, detail))?;
        // Creating a webhook returns once its record is durable, like a publish.
        sim.pump()?;
        sim.sync();
        sim.checker.manual_done();
        for index in 0..sim.scenario.events.len() {
            let at = sim.scenario.events[index].at_ms;
            sim.schedule(at, Action::Publish(index));
        }
        for _ in 0..sim.rng.random_range(0..=config.checkpoints_max) {
            let anywhere = start_ms
                + sim
                    .rng
                    .random_range(0..config.limits.publish_window_ms + DAY_MS);
            // Half of them amid a burst of publishes (their parts then go out between
            // the burst's records, and deliveries change before their part is written);
            // the others anywhere, quiet times included.
            let events = &sim.scenario.events;
            let at = if sim.checkpoint_rng.random_bool(0.5) {
                let near = events[sim.checkpoint_rng.random_range(0..events.len())].at_ms;
                near + sim.checkpoint_rng.random_range(0..5_000)
            } else {
                anywhere
            };
            sim.schedule(at, Action::Checkpoint);
        }
        for _ in 0..sim.rng.random_range(0..=config.manual_ops_max) {
            let at = start_ms
                + sim
                    .rng
                    .random_range(0..config.limits.publish_window_ms + DAY_MS);
            sim.schedule(at, Action::Manage);
        }
        let crashes = sim.rng.random_range(0..=config.crashes_max);
        for _ in 0..crashes {
            let at = start_ms
                + sim
                    .rng
                    .random_range(0..config.limits.publish_window_ms + 2 * DAY_MS);
            sim.schedule(at, Action::Crash);
        }
        Ok(sim)
    }

    fn violation(&self, invariant: Invariant, detail: String) -> Violation {
        Violation {
            seed: self.stats.seed,
            at_ms: self.now_ms,
            invariant,
            detail,
        }
    }

    fn schedule(&mut self, at_ms: u64, action: Action) {
        self.agenda_seq += 1;
        self.agenda.insert((at_ms, self.agenda_seq), action);
    }

    fn create_webhooks(&mut self) -> Result<(), String> {
        let plans = self.scenario.webhooks.clone();
        for plan in plans {
            let scheme = match self.rng.random_range(0..4) {
                0 => Scheme::Standard,
                1 => Scheme::Ed25519,
                2 => Scheme::stripe(),
                _ => Scheme::Olo,
            };
            let random: [u8; 32] = self.rng.random();
            let secret = generate_secret(&scheme, &random);
            let verify_key = match scheme {
                Scheme::Ed25519 => parse(public_key(&secret), "public key")?,
                _ => secret.clone(),
            };
            let verifier = parse(Verifier::new(scheme.clone(), &[&verify_key]), "verifier")?;
            let url = parse(Url::parse(&plan.url), "url")?;
            let filters = plan
                .filters
                .iter()
                .map(|f| parse(EventFilter::parse(f), "filter"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut spec = WebhookSpec::new(url, filters, scheme, secret);
            spec.retry_schedule = match &plan.retry_delays_ms {
                Some(delays) => Some(parse(
                    herald_core::RetrySchedule::new(delays.clone()),
                    "schedule",
                )?),
                None => None,
            };
            spec.limits = EndpointLimits {
                in_flight_max: plan.in_flight_max,
                request_timeout_ms: plan.request_timeout_ms,
                rate: plan.rate.map(|(per_s, burst)| {
                    if self.config.bug == Some(InjectedBug::LooseRateLimit) {
                        herald_core::RateLimit {
                            per_s: per_s * 4,
                            burst: burst + 1,
                        }
                    } else {
                        herald_core::RateLimit { per_s, burst }
                    }
                }),
                ..EndpointLimits::default()
            };
            let tenant = parse(
                TenantId::parse(&self.scenario.tenants[plan.tenant]),
                "tenant",
            )?;
            let id = parse(WebhookId::parse(&plan.id), "webhook id")?;
            parse(
                self.session.dispatcher_mut().upsert_webhook(
                    self.now_ms,
                    tenant.clone(),
                    id.clone(),
                    spec.clone(),
                ),
                "upsert",
            )?;
            self.specs.insert(plan.id.clone(), (tenant, id, spec));
            self.receivers.insert(
                plan.id.clone(),
                Receiver {
                    verifier,
                    requests: 0,
                },
            );
            self.plans.insert(plan.id.clone(), plan);
        }
        Ok(())
    }

    fn run(mut self) -> Result<Stats, Violation> {
        let last_publish = self.scenario.events.last().map_or(self.now_ms, |e| e.at_ms);
        let end_ms = last_publish + self.config.drain_ms;
        self.pump()?;
        loop {
            self.stats.steps += 1;
            if self.stats.steps > self.config.steps_max {
                return Err(self.violation(
                    Invariant::Progress,
                    format!(
                        "no end after {} steps (stats {:?})",
                        self.config.steps_max,
                        self.session.dispatcher().stats()
                    ),
                ));
            }
            let agenda_next = self.agenda.keys().next().map(|&(at, _)| at);
            let wake = self.session.dispatcher().next_deadline_ms();
            let next = match (agenda_next, wake) {
                (Some(a), Some(w)) => a.min(w),
                (Some(a), None) => a,
                (None, Some(w)) if w <= end_ms => w,
                _ => break,
            };
            if next > end_ms && agenda_next.is_none_or(|a| a > end_ms) {
                break;
            }
            self.now_ms = self.now_ms.max(next);
            if agenda_next.is_some_and(|a| a <= self.now_ms) {
                if let Some((_, action)) = self.agenda.pop_first() {
                    let outcome = matches!(action, Action::Outcome { .. });
                    self.act(action)?;
                    // As a driver's turn does, report every outcome that has arrived by
                    // now before draining the commands: the dispatcher journals them
                    // as one record.
                    if outcome {
                        self.report_arrived_outcomes()?;
                    }
                }
            }
            let bodies = Bodies {
                journal: &self.journal,
                compacted_before: self.compacted_before,
            };
            self.session
                .dispatcher_mut()
                .tick_with(self.now_ms, &bodies);
            self.pump()?;
            self.check_step()?;
            if self.stats.crashes < u64::from(self.config.crashes_max)
                && self.rng.random_bool(self.config.crash_per_step_p)
            {
                self.crash()?;
            }
        }
        // Let everything in flight come back and everything left be synced before the
        // final check.
        self.stats.virtual_ms = self.now_ms - self.scenario.start_ms;
        self.finish_underway_at_once()?;
        self.sync();
        self.check_history()?;
        self.check_replay()?;
        self.checker.finish(self.now_ms)?;
        self.stats.trace_hash = self.trace.0;
        self.stats.sends = self.checker.sends;
        self.stats.tally = self.checker.tally();
        Ok(self.stats)
    }

    /// Acts on every outcome due by now at the head of the agenda.
    fn report_arrived_outcomes(&mut self) -> Result<(), Violation> {
        loop {
            let due = self
                .agenda
                .first_key_value()
                .is_some_and(|(&(at, _), action)| {
                    at <= self.now_ms && matches!(action, Action::Outcome { .. })
                });
            if !due {
                return Ok(());
            }
            if let Some((_, action)) = self.agenda.pop_first() {
                self.act(action)?;
            }
        }
    }

    fn act(&mut self, action: Action) -> Result<(), Violation> {
        if self.config.trace {
            eprintln!("{} act {action:?}", self.now_ms);
        }
        match action {
            Action::Publish(index) => self.publish(index),
            Action::Sync => {
                self.sync_scheduled = false;
                self.sync();
                Ok(())
            }
            Action::Outcome {
                generation,
                webhook,
                delivery,
                attempt,
                answer,
            } => {
                if !self.session.is_current(generation) {
                    // Sent by a process that has died since: nobody hears the answer.
                    return Ok(());
                }
                self.checker.outcome_reported(&webhook, delivery);
                if self.config.bug == Some(InjectedBug::LoseOutcomes) && delivery % 5 == 0 {
                    return Ok(());
                }
                let outcome = Outcome {
                    delivery: herald_core::DeliveryId(delivery),
                    attempt,
                    result: answer.result.clone(),
                    latency_ms: answer.after_ms,
                    response_body: Vec::new(),
                    response_headers: herald_core::ResponseHeaders::new(),
                };
                // The record the dispatcher emits is checked when polled, after this.
                let Some(taken) = self
                    .session
                    .attempt_finished(self.now_ms, generation, outcome)
                else {
                    return Err(self.violation(
                        Invariant::Setup,
                        format!("the session dropped a current outcome of delivery {delivery}"),
                    ));
                };
                if !taken {
                    self.stats.stale_outcomes += 1;
                }
                self.checker.outcome_taken(
                    &webhook,
                    delivery,
                    attempt,
                    self.now_ms,
                    answer.result,
                    taken,
                );
                self.stats.outcomes += 1;
                Ok(())
            }
            Action::Crash => self.crash(),
            Action::Checkpoint => self.checkpoint(),
            Action::CheckpointStep => self.checkpoint_step(),
            Action::Manage => self.manage(),
        }
    }

    fn publish(&mut self, index: usize) -> Result<(), Violation> {
        let plan = self.scenario.events[index].clone();
        let event = (|| -> Result<(TenantId, NewEvent), String> {
            let tenant = parse(
                TenantId::parse(&self.scenario.tenants[plan.tenant]),
                "tenant",
            )?;
            // A publisher retrying after a crash sends the same event again.
            let data = format!("{{\"n\":{index},\"amount\":{}}}", index * 7_919 % 100_000);
            Ok((
                tenant,
                NewEvent {
                    id: parse(EventId::parse(&plan.id), "event id")?,
                    event_type: parse(EventType::parse(&plan.event_type), "event type")?,
                    api_version: API_VERSION_DEFAULT.to_string(),
                    created_at_ms: plan.at_ms,
                    location_id: None,
                    data: data.into_bytes(),
                    idempotency: None,
                },
            ))
        })()
        .map_err(|detail| self.violation(Invariant::Setup, detail))?;
        let (tenant, event) = event;
        match self
            .session
            .dispatcher_mut()
            .accept_event(self.now_ms, &tenant, event)
        {
            Ok(accepted) => {
                self.stats.publishes += 1;
                if let Some(index) = self.session.hold(accepted.append, index) {
                    // A repeat of an event already durable: answered at once.
                    self.ack(index);
                }
                Ok(())
            }
            Err(e) => {
                Err(self.violation(Invariant::Setup, format!("event {} refused: {e}", plan.id)))
            }
        }
    }

    /// Drains the dispatcher's commands: appends go to the journal, sends to endpoints.
    fn pump(&mut self) -> Result<(), Violation> {
        while let Some(command) = self.session.pop_command() {
            match command {
                Command::Append { id, record } => self.append(id, record)?,
                Command::Send(request) => {
                    self.send(&request)?;
                    if self.config.bug == Some(InjectedBug::DuplicateSends)
                        && request.delivery.0 % 3 == 0
                    {
                        self.send(&request)?;
                    }
                }
            }
        }
        if self.journal.len() > self.durable_len && !self.sync_scheduled {
            // Group commit: a sync a few milliseconds later covers everything appended
            // until then (checkpoint frames written since the last step too).
            let at = self.now_ms + self.rng.random_range(0..=5);
            self.schedule(at, Action::Sync);
            self.sync_scheduled = true;
        }
        Ok(())
    }

    fn append(&mut self, id: AppendId, record: Record) -> Result<(), Violation> {
        let (kind, version, payload) = record
            .encode()
            .map_err(|e| self.violation(Invariant::Records, format!("encode: {e}")))?;
        self.trace.write_u64(u64::from(kind));
        self.trace.write(&payload);
        if self.config.trace {
            eprintln!("{} append #{} {record:?}", self.now_ms, id.0);
        }
        self.checker.record(self.now_ms, &record, true)?;
        self.stats.records += 1;
        // The event's deliveries keep where the journal holds its envelope, as a shard's
        // do (herald_core::body).
        let body = match &record {
            Record::EventAccepted(e) if !e.deliveries.is_empty() => {
                herald_core::record::body_spans(&payload)
                    .map_err(|e| self.violation(Invariant::Records, format!("body spans: {e}")))?
                    .first()
                    .copied()
                    .flatten()
            }
            _ => None,
        };
        self.journal.push(Frame {
            kind,
            version,
            payload,
            checkpoint: None,
        });
        if self.underway.is_some() {
            self.stats.records_amid_checkpoints += 1;
        }
        // A frame's journal sequence number is its position (from 1), as the real
        // journal's numbering continues after a torn tail was cut.
        let seq = self.journal.len() as u64;
        self.session.appended(id, seq);
        let dispatcher = self.session.dispatcher_mut();
        match (&record, body.and_then(|span| frame_at(seq).body(span))) {
            (_, Some(at)) => dispatcher.body_stored(id, at),
            (Record::EventAccepted(e), None) => dispatcher.body_kept(id, &e.body),
            _ => {}
        }
        Ok(())
    }

    fn send(&mut self, request: &SendRequest) -> Result<(), Violation> {
        self.trace.write_u64(request.delivery.0);
        self.trace.write_u64(u64::from(request.attempt));
        self.trace.write_u64(self.now_ms);
        for (name, value) in request.headers.iter() {
            if name == "user-agent" {
                // It carries the crate's version: pinned traces must not move with a
                // release.
                continue;
            }
            self.trace.write(name.as_bytes());
            self.trace.write(value.as_bytes());
        }
        let mut request = request.clone();
        if self.config.bug == Some(InjectedBug::CrossTenant) {
            // A broken connection pool: requests for one tenant's webhook go out on a
            // connection to another tenant's endpoint.
            let other = self
                .plans
                .values()
                .find(|p| self.scenario.tenants[p.tenant] != request.tenant.as_str());
            if let Some(other) = other {
                if let Ok(url) = Url::parse(&other.url) {
                    request.url = std::sync::Arc::new(url);
                }
            }
        }
        if self.config.trace {
            eprintln!(
                "{} send delivery {} attempt {} to {}",
                self.now_ms, request.delivery, request.attempt, request.webhook
            );
        }
        let webhook = self.checker.send(self.now_ms, &request)?;
        // The checker only returns webhooks of the scenario, all of which have a plan.
        let plan = &self.plans[&webhook];
        let receiver = self.receivers.get_mut(&webhook).ok_or_else(|| Violation {
            seed: self.stats.seed,
            at_ms: self.now_ms,
            invariant: Invariant::Setup,
            detail: format!("no receiver for {webhook}"),
        })?;
        let nth = receiver.requests;
        receiver.requests += 1;
        let answer = plan.behaviour.answer(
            &mut self.rng,
            nth,
            self.now_ms,
            request.connect_timeout_ms,
            request.request_timeout_ms,
        );
        if answer.received {
            let now_s = (self.now_ms / 1000) as i64;
            let url = request.url.to_string();
            let headers: Vec<(&str, &str)> = request.headers.iter().collect();
            if let Err(e) = receiver
                .verifier
                .verify(&headers, &url, &request.body, now_s)
            {
                return Err(self.violation(
                    Invariant::Signature,
                    format!(
                        "{webhook} cannot verify delivery {} attempt {}: {e}",
                        request.delivery, request.attempt
                    ),
                ));
            }
        }
        let at = self.now_ms + answer.after_ms;
        self.schedule(
            at,
            Action::Outcome {
                generation: self.session.generation(),
                webhook,
                delivery: request.delivery.0,
                attempt: request.attempt,
                answer,
            },
        );
        Ok(())
    }

    /// Group commit: every frame appended so far is durable.
    fn sync(&mut self) {
        self.durable_len = self.journal.len();
        // The journal deletes the segments its latest durable checkpoint covers, up to
        // its first part.
        if let Some(checkpoint) = last_complete_checkpoint(&self.journal) {
            self.compacted_before = self.compacted_before.max(checkpoint.compacts_before());
        }
        let released: Vec<usize> = self.session.durable(self.journal.len() as u64).collect();
        for index in released {
            self.ack(index);
        }
    }

    /// A publish is answered: its event is durable.
    fn ack(&mut self, index: usize) {
        let id = self.scenario.events[index].id.clone();
        self.checker.acked(&id);
        self.stats.acked += 1;
    }

    /// The process dies: memory is gone, the journal keeps its durable frames and perhaps
    /// part of what was written after them (a torn group commit). A fresh dispatcher
    /// replays the survivors.
    fn crash(&mut self) -> Result<(), Violation> {
        if self.config.trace {
            eprintln!("{} crash", self.now_ms);
        }
        self.stats.crashes += 1;
        if self.underway.take().is_some() {
            // The new process knows nothing of it; the parts already written stay in the
            // journal as a checkpoint without an end, which recovery skips.
            self.stats.checkpoints_cut += 1;
        }
        let unsynced = self.journal.len() - self.durable_len;
        let mut keep = self.durable_len + self.rng.random_range(0..=unsynced);
        if self.config.bug == Some(InjectedBug::ForgetDurable) {
            keep = keep.saturating_sub(3);
        }
        self.journal.truncate(keep);
        self.durable_len = keep;
        self.sync_scheduled = false;
        self.agenda
            .retain(|_, action| !matches!(action, Action::Sync | Action::CheckpointStep));
        let mut survivors = Vec::with_capacity(self.journal.len());
        for frame in &self.journal {
            let payload = aligned(&frame.payload);
            let record = match frame.checkpoint {
                Some(part) if part.end => continue,
                Some(_) => Record::decode_checkpoint(&payload),
                None => Record::decode(frame.kind, frame.version, &payload),
            }
            .map_err(|e| self.violation(Invariant::Records, format!("decode: {e}")))?;
            survivors.push(record);
        }
        // The checker reads the whole history; the dispatcher, like a real shard, only
        // the last checkpoint and what follows it. A checkpoint that summarises the
        // history wrongly shows up as a dispatcher that disagrees with the checker.
        self.checker.crashed(self.now_ms, &survivors)?;
        // A disk that lost durable frames (an injected defect) may have lost the
        // checkpoint compaction relied on; the frames the one replay starts from needs
        // are still there, as a real journal keeps them.
        let compacts_before =
            last_complete_checkpoint(&self.journal).map_or(0, |c| c.compacts_before());
        self.compacted_before = self.compacted_before.min(compacts_before);
        let dispatcher = self.replay_journal()?;
        // Publishers whose events were not acknowledged try again; the new process
        // counts its records from 1 and does not hear the old one's outcomes.
        let retry: Vec<usize> = self.session.abandon().collect();
        self.session.replace(dispatcher);
        for index in retry {
            let at = self.now_ms + self.rng.random_range(1..1_000);
            self.schedule(at, Action::Publish(index));
        }
        self.pump()
    }

    /// A dispatcher rebuilt from the journal as a restarted shard rebuilds it.
    fn replay_journal(&self) -> Result<Dispatcher, Violation> {
        let aligned: Vec<_> = self
            .journal
            .iter()
            .map(|frame| aligned(&frame.payload))
            .collect();
        let frame = |k: usize| {
            let seq = k as u64 + 1;
            JournalFrame {
                seq,
                kind: self.journal[k].kind,
                version: self.journal[k].version,
                checkpoint: self.journal[k].checkpoint.is_some(),
                payload: &aligned[k],
                at: Some(frame_at(seq)),
            }
        };
        // Replay reads the latest complete checkpoint's parts in order, then every record
        // it does not cover, wherever it lies (between its parts too); every other
        // checkpoint frame (earlier ones, and any a crash cut short or the driver
        // abandoned) is skipped, as the journal skips them.
        let (parts, covers) = last_complete_checkpoint(&self.journal)
            .map_or((Vec::new(), 0), |c| (c.parts, c.covers));
        let records =
            (covers..self.journal.len()).filter(|&k| self.journal[k].checkpoint.is_none());
        let unread = parts.into_iter().chain(records).map(|k| Ok(frame(k)));
        recover::<std::convert::Infallible>(self.dispatcher_config.clone(), self.now_ms, unread)
            .map(reporting)
            .map_err(|e| self.violation(Invariant::Records, format!("replay: {e}")))
    }

    /// Performs a random management operation, acknowledged once its records are durable.
    /// First a step of each purge wanted (drawing nothing from the seed's stream).
    fn manage(&mut self) -> Result<(), Violation> {
        self.purge_step()?;
        let live: Vec<String> = self
            .specs
            .keys()
            .filter(|w| !self.checker.is_deleted(w))
            .cloned()
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let webhook = live[self.rng.random_range(0..live.len())].clone();
        let disabled = self.checker.is_disabled(&webhook);
        let op = match self.rng.random_range(0..12) {
            0..=1 if !disabled => ManualOp::Disable(webhook),
            0..=3 if disabled => ManualOp::Enable(webhook),
            2..=3 => ManualOp::Update {
                webhook,
                filters: (0..self.rng.random_range(1..=3))
                    .map(|_| random_filter(&mut self.rng))
                    .collect(),
            },
            4 => ManualOp::Delete(webhook),
            5..=7 => {
                let candidates: Vec<u64> = self
                    .checker
                    .deliveries()
                    // Succeeded deliveries cannot be retried; try the others.
                    .filter(|(_, w, status)| *w == webhook && *status != Some("success"))
                    .map(|(id, _, _)| id)
                    .collect();
                if candidates.is_empty() {
                    return Ok(());
                }
                ManualOp::Retry(candidates[self.rng.random_range(0..candidates.len())])
            }
            8..=9 => ManualOp::Resend {
                webhook,
                since_ms: self.scenario.start_ms
                    + self
                        .rng
                        .random_range(0..=self.now_ms - self.scenario.start_ms),
            },
            _ => ManualOp::TestEvent {
                webhook,
                event_type: EVENT_TYPES[self.rng.random_range(0..EVENT_TYPES.len())].to_string(),
            },
        };
        if self.config.trace {
            eprintln!("{} manage {op:?}", self.now_ms);
        }
        self.checker.manual(op.clone());
        let now = self.now_ms;
        let refused = match &op {
            ManualOp::Disable(w) | ManualOp::Enable(w) | ManualOp::Update { webhook: w, .. } => {
                let Some((tenant, id, spec)) = self.specs.get_mut(w) else {
                    return Ok(());
                };
                match &op {
                    ManualOp::Disable(_) => {
                        spec.status = WebhookStatus::Disabled {
                            reason: DisableReason::Manual,
                            at_ms: now,
                        }
                    }
                    ManualOp::Enable(_) => spec.status = WebhookStatus::Active,
                    ManualOp::Update { filters, .. } => {
                        spec.filters = filters
                            .iter()
                            .filter_map(|f| EventFilter::parse(f).ok())
                            .collect();
                        spec.status = if disabled {
                            WebhookStatus::Disabled {
                                reason: DisableReason::Manual,
                                at_ms: now,
                            }
                        } else {
                            WebhookStatus::Active
                        };
                    }
                    _ => {}
                }
                // The runtime's update: a webhook deleted meanwhile is not brought back.
                let result = self.session.dispatcher_mut().update_webhook(
                    now,
                    tenant.clone(),
                    id.clone(),
                    spec.clone(),
                );
                result.map(|_| ()).map_err(|e| e.to_string()).err()
            }
            ManualOp::Delete(w) => {
                let Some((tenant, id, _)) = self.specs.get(w) else {
                    return Ok(());
                };
                let result = self
                    .session
                    .dispatcher_mut()
                    .delete_webhook(now, tenant, id);
                // Its tenant's last webhook: the tenant is deleted too, and purged.
                let last = self.specs.iter().all(|(other, (t, _, _))| {
                    t != tenant || other == w || self.checker.is_deleted(other)
                });
                if result.is_ok() && last && !self.purges.contains(tenant) {
                    self.purges.push(tenant.clone());
                }
                result.map(|_| ()).map_err(|e| e.to_string()).err()
            }
            ManualOp::Retry(delivery) => {
                let tenant = self
                    .specs
                    .get(&webhook_of(&self.checker, *delivery))
                    .map(|s| s.0.clone());
                match tenant {
                    Some(tenant) => {
                        // Refusals (in progress, succeeded, disabled) are answers, not faults.
                        let _ = self.session.dispatcher_mut().retry_delivery(
                            now,
                            &tenant,
                            herald_core::DeliveryId(*delivery),
                        );
                    }
                    None => return Ok(()),
                }
                None
            }
            ManualOp::Setup => None,
            ManualOp::Resend { webhook, since_ms } => {
                if let Some((tenant, id, _)) = self.specs.get(webhook) {
                    let _ = self
                        .session
                        .dispatcher_mut()
                        .resend_failed(now, tenant, id, *since_ms);
                }
                None
            }
            ManualOp::TestEvent {
                webhook,
                event_type,
            } => {
                if let (Some((tenant, id, _)), Ok(event_type)) =
                    (self.specs.get(webhook), EventType::parse(event_type))
                {
                    let _ = self
                        .session
                        .dispatcher_mut()
                        .send_test_event(now, tenant, id, event_type);
                }
                None
            }
        };
        if let Some(error) = refused {
            return Err(self.violation(Invariant::Setup, format!("{op:?} refused: {error}")));
        }
        self.stats.manual_ops += 1;
        self.pump()?;
        self.sync();
        self.checker.manual_done();
        Ok(())
    }

    /// One step of each tenant purge wanted: a refusal while its deleted webhooks'
    /// deliveries are still ending is an answer (tried again next time), any other a
    /// fault; a purge done is dropped from the list.
    fn purge_step(&mut self) -> Result<(), Violation> {
        let now = self.now_ms;
        let mut left = Vec::new();
        for tenant in std::mem::take(&mut self.purges) {
            match self.session.dispatcher_mut().purge_tenant(now, &tenant) {
                Ok(step) => {
                    self.stats.purge_steps += 1;
                    if !step.done {
                        left.push(tenant);
                    }
                }
                Err(herald_core::OpError::TenantBusy { .. }) => left.push(tenant),
                Err(error) => {
                    return Err(self.violation(
                        Invariant::Setup,
                        format!("purge of {tenant} refused: {error}"),
                    ))
                }
            }
        }
        self.purges = left;
        self.pump()
    }

    /// Begins a checkpoint, written a part at a time over later steps
    /// ([`Action::CheckpointStep`]) while the other actions go on between its parts; one
    /// in every few is written whole, as a driver does on a clean stop and at the
    /// journal's segment limit. One that is still being written is first finished at
    /// once or abandoned (one is written at a time).
    fn checkpoint(&mut self) -> Result<(), Violation> {
        // Every queued command is journaled first: the checkpoint covers every record
        // so far and none after.
        self.pump()?;
        if self.underway.is_some() && self.checkpoint_rng.random_bool(0.5) {
            self.abandon_underway();
        }
        self.finish_underway_at_once()?;
        // One part, parts of a few KiB, or a part per item (an event's deliveries then
        // continue over parts), written whole or between other input: every layout the
        // shard's writer can produce, in turn, without drawing from the seed's random
        // stream.
        let nth = self.checkpoints_begun;
        self.checkpoints_begun += 1;
        let target = [usize::MAX, 4096, 1][(nth % 3) as usize];
        if nth % 4 == 3 {
            return self.checkpoint_whole(target);
        }
        let checkpoint = self
            .session
            .dispatcher_mut()
            .begin_checkpoint(self.now_ms, target);
        let mut underway = Underway {
            checkpoint,
            first: None,
            covers: self.journal.len(),
        };
        // The webhooks and keys go out before any other input (the core asserts it):
        // in this step. The rest, and the end (even of a checkpoint whose one part is
        // written), on later steps.
        while !underway.checkpoint.registry_written() {
            self.write_checkpoint_part(&mut underway)?;
        }
        self.underway = Some(underway);
        self.schedule_checkpoint_step();
        Ok(())
    }

    /// Schedules the next step of the checkpoint underway: soon, or after a while in
    /// which anything else may happen (publishes, outcomes, retries, management
    /// operations, crashes), as a driver writes a part on a turn between its other work.
    fn schedule_checkpoint_step(&mut self) {
        let within_ms = [1_000, 60_000, 600_000, 3_600_000][self.checkpoint_rng.random_range(0..4)];
        let at = self.now_ms + self.checkpoint_rng.random_range(0..=within_ms);
        self.schedule(at, Action::CheckpointStep);
    }

    /// A few more parts of the checkpoint underway (how many is drawn from the seed's
    /// stream); once it has every part, its end, and it is finished (a checkpoint of
    /// one part still ends a step after it began). Else the next step is scheduled.
    fn checkpoint_step(&mut self) -> Result<(), Violation> {
        let Some(mut underway) = self.underway.take() else {
            return Ok(());
        };
        let parts_max = self.checkpoint_rng.random_range(1..=3);
        for _ in 0..parts_max {
            if underway.checkpoint.is_done() {
                break;
            }
            self.write_checkpoint_part(&mut underway)?;
        }
        if underway.checkpoint.is_done() {
            return self.finish_checkpoint(underway);
        }
        self.underway = Some(underway);
        self.schedule_checkpoint_step();
        Ok(())
    }

    /// Writes every part left of the checkpoint underway, if there is one, and its end.
    fn finish_underway_at_once(&mut self) -> Result<(), Violation> {
        let Some(mut underway) = self.underway.take() else {
            return Ok(());
        };
        self.agenda
            .retain(|_, action| !matches!(action, Action::CheckpointStep));
        while !underway.checkpoint.is_done() {
            self.write_checkpoint_part(&mut underway)?;
        }
        self.finish_checkpoint(underway)
    }

    /// Drops the checkpoint underway unfinished, as when the journal abandons it: its
    /// frames stay in the journal without an end, which recovery skips.
    fn abandon_underway(&mut self) {
        let Some(underway) = self.underway.take() else {
            return;
        };
        self.agenda
            .retain(|_, action| !matches!(action, Action::CheckpointStep));
        self.session
            .dispatcher_mut()
            .abandon_checkpoint(underway.checkpoint);
        self.stats.checkpoints_abandoned += 1;
    }

    /// Appends the next part of `underway`, reading the bodies it copies through the
    /// journal (frames compacted away stay unreadable).
    fn write_checkpoint_part(&mut self, underway: &mut Underway) -> Result<(), Violation> {
        let copies = self.session.dispatcher().checkpoint_copies() as u64;
        self.stats.checkpoint_copies_peak = self.stats.checkpoint_copies_peak.max(copies);
        // Where its bodies go: the frame this part is about to be appended as.
        let at = frame_at(self.journal.len() as u64 + 1);
        let bodies = Bodies {
            journal: &self.journal,
            compacted_before: self.compacted_before,
        };
        let mut payload = herald_core::RecordBuffer::new();
        let encoded = self.session.dispatcher_mut().checkpoint_part_into(
            &mut underway.checkpoint,
            &bodies,
            &mut payload,
        );
        match encoded {
            Ok(true) => {}
            Ok(false) => {
                return Err(self.violation(
                    Invariant::Records,
                    "a checkpoint not done has no next part".to_string(),
                ))
            }
            Err(e) => return Err(self.violation(Invariant::Records, format!("encode: {e}"))),
        }
        let kind = herald_core::record::kind::CHECKPOINT;
        underway
            .checkpoint
            .stored(&payload, at)
            .map_err(|e| self.violation(Invariant::Records, format!("locating bodies: {e}")))?;
        let first = *underway.first.get_or_insert(self.journal.len());
        let index = underway.checkpoint.parts() - 1;
        self.push_part(kind, payload, first, index, underway.covers);
        Ok(())
    }

    /// Appends the end of `underway`, which has every part, and finishes it.
    fn finish_checkpoint(&mut self, underway: Underway) -> Result<(), Violation> {
        let Some(first) = underway.first else {
            return Err(self.violation(
                Invariant::Records,
                "a checkpoint done without a part".to_string(),
            ));
        };
        self.push_end(first, underway.checkpoint.parts(), underway.covers);
        // Before it can be durable (and the frames it covers compacted away), with no
        // other input in between.
        self.session
            .dispatcher_mut()
            .finish_checkpoint(underway.checkpoint);
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Writes a whole checkpoint in this step (`Dispatcher::checkpoint_parts_with`).
    fn checkpoint_whole(&mut self, target: usize) -> Result<(), Violation> {
        let bodies = Bodies {
            journal: &self.journal,
            compacted_before: self.compacted_before,
        };
        let covers = self.journal.len();
        let mut parts =
            self.session
                .dispatcher()
                .checkpoint_parts_with(self.now_ms, target, &bodies);
        let mut encoded = Vec::new();
        let mut failed = None;
        loop {
            // Where its bodies go: the frame this part is about to be appended as.
            let at = frame_at((covers + encoded.len()) as u64 + 1);
            let mut payload = herald_core::RecordBuffer::new();
            match parts.next_into(&mut payload) {
                Ok(true) => {
                    if let Err(e) = parts.stored(&payload, at) {
                        failed = Some(format!("locating bodies: {e}"));
                        break;
                    }
                    encoded.push((herald_core::record::kind::CHECKPOINT, payload));
                }
                Ok(false) => break,
                Err(e) => {
                    failed = Some(format!("encode: {e}"));
                    break;
                }
            }
        }
        let moves = parts.into_moves();
        if let Some(reason) = failed {
            return Err(self.violation(Invariant::Records, reason));
        }
        let count = encoded.len() as u32;
        for (index, (kind, payload)) in encoded.into_iter().enumerate() {
            self.push_part(kind, payload, covers, index as u32, covers);
        }
        self.push_end(covers, count, covers);
        // Before it can be durable (and the frames before it compacted away).
        self.session.dispatcher_mut().checkpoint_stored(moves);
        self.stats.checkpoints += 1;
        Ok(())
    }

    /// Appends part `index` of the checkpoint whose first part is frame `first`.
    fn push_part(
        &mut self,
        kind: u16,
        payload: rkyv::util::AlignedVec,
        first: usize,
        index: u32,
        covers: usize,
    ) {
        self.stats.checkpoint_parts += 1;
        self.journal.push(Frame {
            kind,
            // The journal numbers its checkpoint frames with its own version.
            version: herald_core::session::CHECKPOINT_FRAME_VERSION,
            payload,
            checkpoint: Some(Part {
                first,
                index,
                end: false,
                covers,
            }),
        });
    }

    /// Appends the end marker of the checkpoint whose first part is frame `first`, after
    /// its `parts` parts: it is complete once this is on disk.
    fn push_end(&mut self, first: usize, parts: u32, covers: usize) {
        self.journal.push(Frame {
            kind: herald_core::record::kind::CHECKPOINT,
            version: herald_core::session::CHECKPOINT_FRAME_VERSION,
            payload: rkyv::util::AlignedVec::new(),
            checkpoint: Some(Part {
                first,
                index: parts,
                end: true,
                covers,
            }),
        });
    }

    /// Cheap cross-checks after every step.
    /// Every delivery still in the log has a history that agrees with it (after however
    /// many crashes, replays and checkpoints the run had).
    fn check_history(&self) -> Result<(), Violation> {
        for tenant in &self.scenario.tenants {
            for record in self.delivery_log(self.session.dispatcher(), tenant)? {
                if let Some(problem) = history_problem(&record) {
                    return Err(self.violation(
                        Invariant::History,
                        format!("delivery {}: {problem}: {:?}", record.id, record.attempts),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The journal as it stands at the end replays to the state that ran: a dispatcher
    /// rebuilt from it (the latest complete checkpoint, then every record it does not
    /// cover) shows every tenant the same delivery log.
    fn check_replay(&self) -> Result<(), Violation> {
        let replayed = self.replay_journal()?;
        for tenant in &self.scenario.tenants {
            let live = self.delivery_log(self.session.dispatcher(), tenant)?;
            let rebuilt = self.delivery_log(&replayed, tenant)?;
            if let Some((a, b)) = live.iter().zip(&rebuilt).find(|(a, b)| a != b) {
                return Err(self.violation(
                    Invariant::Records,
                    format!(
                        "the journal replays delivery {} as {b:?}; it ran as {a:?}",
                        a.id
                    ),
                ));
            }
            if live.len() != rebuilt.len() {
                return Err(self.violation(
                    Invariant::Records,
                    format!(
                        "the journal replays {} deliveries of {tenant}; {} ran",
                        rebuilt.len(),
                        live.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every delivery of `tenant` in `dispatcher`'s log, page by page.
    fn delivery_log(
        &self,
        dispatcher: &Dispatcher,
        tenant: &str,
    ) -> Result<Vec<DeliveryRecord>, Violation> {
        let tenant = TenantId::parse(tenant)
            .map_err(|e| self.violation(Invariant::Setup, format!("tenant: {e}")))?;
        let mut log = Vec::new();
        let mut after = None;
        loop {
            let page = dispatcher.deliveries(&DeliveryQuery {
                after,
                limit: PAGE_ITEMS_MAX,
                ..DeliveryQuery::tenant(tenant.clone())
            });
            log.extend(page.items);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(log),
            }
        }
    }

    fn check_step(&self) -> Result<(), Violation> {
        let stats = self.session.dispatcher().stats();
        let in_flight = self.checker.in_flight_total() as usize;
        // The dispatcher may count fewer (outcomes of deliveries ended meanwhile are
        // dropped early), never more than the requests really out.
        if stats.in_flight > in_flight {
            return Err(self.violation(
                Invariant::InFlightCap,
                format!(
                    "dispatcher counts {} requests in flight; {in_flight} are out",
                    stats.in_flight
                ),
            ));
        }
        Ok(())
    }
}

/// The webhook of a delivery the checker knows (empty if unknown).
fn webhook_of(checker: &Checker, delivery: u64) -> String {
    checker
        .deliveries()
        .find(|(id, _, _)| *id == delivery)
        .map(|(_, w, _)| w.to_string())
        .unwrap_or_default()
}

/// rkyv needs aligned payloads; the journal guarantees 16-byte alignment, so do the same.
fn aligned(payload: &[u8]) -> rkyv::util::AlignedVec {
    let mut out = rkyv::util::AlignedVec::with_capacity(payload.len());
    out.extend_from_slice(payload);
    out
}

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> Result<Stats, Violation> {
    Sim::new(seed, config)?.run()
}

/// What is wrong with a delivery's attempt history, if anything.
fn history_problem(record: &DeliveryRecord) -> Option<String> {
    let attempts = &record.attempts;
    if attempts.len() > ATTEMPT_HISTORY_MAX {
        return Some(format!("{} attempts kept", attempts.len()));
    }
    if attempts
        .windows(2)
        .any(|pair| pair[0].attempt >= pair[1].attempt)
    {
        return Some("attempt numbers do not increase".to_string());
    }
    if let Some(a) = attempts
        .iter()
        .find(|a| a.finished_at_ms.is_some_and(|f| f < a.started_at_ms))
    {
        return Some(format!("attempt {} finished before it started", a.attempt));
    }
    if let Some(last) = attempts.last() {
        // The latest is the delivery's attempt, or the next one when an attempt in flight
        // at a crash was put back and the delivery ended before it was sent again.
        let repeated = last.attempt == record.attempt + 1 && last.finished_at_ms.is_none();
        if last.attempt != record.attempt && !repeated {
            return Some(format!(
                "latest attempt is not the delivery's {}",
                record.attempt
            ));
        }
    }
    if record.status == DeliveryStatus::Success {
        let ok = attempts.last().is_some_and(|a| {
            a.finished_at_ms.is_some() && a.response_status.is_some_and(|s| (200..300).contains(&s))
        });
        if !ok {
            return Some("a success whose latest attempt is not a 2xx".to_string());
        }
    }
    if record.finished_at_ms.is_some() != record.status.is_final() {
        return Some(format!(
            "status {} with end time {:?}",
            record.status.name(),
            record.finished_at_ms
        ));
    }
    None
}

/// A dispatcher told that every event's envelope is reported once appended (the sim's
/// `append` reports each, as a shard's does), so live events hold no copy until then.
fn reporting(mut dispatcher: Dispatcher) -> Dispatcher {
    dispatcher.report_envelopes();
    dispatcher
}
