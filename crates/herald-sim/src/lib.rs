//! Seeded deterministic simulation of the Herald dispatch core.
//!
//! [`run_seed`] builds a random scenario from a seed — tenants, webhooks with filters and
//! retry schedules, endpoints that are healthy, slow, flaky, rate-limited with
//! `Retry-After`, gone (410), timing out or down for days, and a stream of events — and
//! drives a [`herald_core::Dispatcher`] through it on a virtual clock. The journal is
//! simulated with a durability model (group commit; a crash keeps the durable frames and
//! perhaps a torn part of the rest), and at random moments the process "crashes": the
//! dispatcher is dropped and a fresh one is rebuilt by replaying the surviving frames.
//!
//! Checkpoints are written as `Dispatcher::begin_checkpoint` asks of a driver. Most begin
//! once every queued command is journaled, write the parts holding the webhooks and keys
//! at once, and then a few parts at a time on later steps while publishes, outcomes, retries and management operations append records
//! between them; the end marker and `Dispatcher::finish_checkpoint` follow the last part.
//! One in every few is written whole in one step. Part sizes rotate between one part,
//! parts of a few KiB and a part per item. Each checkpoint frame carries what the
//! journal's part header does: its checkpoint (the index of its first part), its part
//! index, whether it is the end marker, and what it covers (the journal's length when it
//! began). A checkpoint counts once its end is on disk after every part; recovery loads
//! the latest such one's parts, then replays every record after what it covers, those
//! between its parts included, and skips every other checkpoint frame. Once it is
//! durable, the frames it covers that lie before its first part count as deleted: a body
//! the dispatcher still points at there stops the run. A crash part way through one
//! leaves its frames in the journal without an end, and the new process knows nothing of
//! it; so does one the driver abandons (`Dispatcher::abandon_checkpoint`) when the next
//! begins before it is done, as the journal does. Where checkpoints begin and how their
//! parts are paced come from a second stream of the seed's generator, so that they do not
//! move what the rest of a run draws.
//!
//! Every request and record is checked as it appears, cheap cross-checks run after every
//! step, and the end of the run checks delivery, and that a dispatcher rebuilt from the
//! journal shows the delivery log the one that ran shows (see [`Invariant`]). The same
//! seed gives the same run, byte for byte: all randomness comes from one seeded generator
//! (ChaCha8, whose stream its crate keeps fixed across releases, sampled through `rand`,
//! whose integer ranges sample the same on 32- and 64-bit targets, so a seed reproduces
//! on any machine and build of one `rand` major version; `tests/seeds.rs` pins a few
//! seeds to their trace hashes) and all collections iterate in a fixed order. The checker
//! states the delivery policy (retry schedule, breaker, auto-disable, `Retry-After`
//! bound) itself instead of importing the core's constants, so it is an independent
//! oracle.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod endpoint;
pub mod scenario;
mod sim;

use std::fmt;

pub use scenario::ScenarioLimits;

/// The properties the simulator checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Invariant {
    /// The scenario could not be set up (a bug in the simulator or a refused input).
    Setup,
    /// An event fanned out to exactly the tenant's active webhooks whose filters match,
    /// and requests carry the event their delivery belongs to.
    Routing,
    /// A tenant's webhooks never see another tenant's events.
    TenantIsolation,
    /// The body is the event envelope.
    Envelope,
    /// The receiver can verify the signature with the webhook's secret.
    Signature,
    /// No attempt starts (or is scheduled) before its due time.
    EarlyAttempt,
    /// Never more attempts than the schedule allows, one at a time, none after the
    /// delivery ended; crash replays repeat only the attempt that was in flight.
    AttemptBudget,
    /// Never more requests in flight to a webhook than its cap.
    InFlightCap,
    /// Never more requests to a webhook than its rate limit's token bucket allows.
    RateLimit,
    /// No request starts while the webhook's circuit breaker is open.
    Breaker,
    /// Every acknowledged event reaches every matching active webhook, or the delivery
    /// ends exhausted, failed by a final answer, or by the webhook being disabled — and
    /// nothing ends without such a cause.
    Delivered,
    /// An acknowledged event survives every crash.
    Durability,
    /// An attempt's recorded outcome follows the rules (status class, next attempt).
    Outcome,
    /// Records are well-formed and consistent with what happened; at the end, the
    /// journal (its latest checkpoint and the records it does not cover) replays to the
    /// delivery log that ran.
    Records,
    /// The run ends: no busy loop, no endless retry.
    Progress,
    /// Each delivery's attempt history is well-formed and agrees with the delivery:
    /// attempt numbers increase, the latest is the delivery's own, a success ends with a
    /// 2xx, and a delivery has an end time exactly when it ended.
    History,
}

impl Invariant {
    /// Stable name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::Setup => "setup",
            Invariant::Routing => "routing",
            Invariant::TenantIsolation => "tenant-isolation",
            Invariant::Envelope => "envelope",
            Invariant::Signature => "signature",
            Invariant::EarlyAttempt => "no-early-attempt",
            Invariant::AttemptBudget => "attempt-budget",
            Invariant::InFlightCap => "in-flight-cap",
            Invariant::RateLimit => "rate-limit",
            Invariant::Breaker => "breaker",
            Invariant::Delivered => "delivered-or-ended-by-rules",
            Invariant::Durability => "durability",
            Invariant::Outcome => "outcome-rules",
            Invariant::Records => "records",
            Invariant::Progress => "progress",
            Invariant::History => "attempt-history",
        }
    }
}

/// A violated invariant: the seed that reproduces it, when (virtual time) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The seed of the run.
    pub seed: u64,
    /// Virtual time of the violation (Unix ms).
    pub at_ms: u64,
    /// Which invariant.
    pub invariant: Invariant,
    /// What exactly.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed={} invariant={} at_ms={}: {}",
            self.seed,
            self.invariant.name(),
            self.at_ms,
            self.detail
        )
    }
}

impl std::error::Error for Violation {}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The seed.
    pub seed: u64,
    /// Steps of the driver loop.
    pub steps: u64,
    /// Events accepted (re-publishes after a crash included).
    pub publishes: u64,
    /// Events acknowledged to their publisher.
    pub acked: u64,
    /// Records appended.
    pub records: u64,
    /// Requests sent.
    pub sends: u64,
    /// Outcomes reported to the dispatcher.
    pub outcomes: u64,
    /// Outcomes the dispatcher ignored as stale.
    pub stale_outcomes: u64,
    /// Crashes.
    pub crashes: u64,
    /// Checkpoints written complete (with their end).
    pub checkpoints: u64,
    /// Checkpoint parts written (complete checkpoints or not).
    pub checkpoint_parts: u64,
    /// Checkpoints a crash cut short while they were being written.
    pub checkpoints_cut: u64,
    /// Checkpoints abandoned while they were being written (the next one began).
    pub checkpoints_abandoned: u64,
    /// Records appended between the parts of a checkpoint being written.
    pub records_amid_checkpoints: u64,
    /// Most deliveries a checkpoint being written kept a copy of at once (changed or
    /// removed after it began, before their part was written).
    pub checkpoint_copies_peak: u64,
    /// Management operations performed.
    pub manual_ops: u64,
    /// Steps of tenant purges taken (a tenant is purged once its last webhook is
    /// deleted).
    pub purge_steps: u64,
    /// Virtual time covered.
    pub virtual_ms: u64,
    /// Digest of every record and request the dispatcher emitted.
    pub trace_hash: u64,
    /// How deliveries ended and what was exercised.
    pub tally: checker::Tally,
}

/// A deliberate defect in the simulated driver or storage, to show that the checker
/// catches what it claims to catch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedBug {
    /// Some outcomes are never reported to the dispatcher.
    LoseOutcomes,
    /// Some requests are sent twice.
    DuplicateSends,
    /// Requests go out to another tenant's endpoint.
    CrossTenant,
    /// A crash loses the last durable frames.
    ForgetDurable,
    /// The dispatcher is configured with a looser rate limit than the webhook's.
    LooseRateLimit,
}

/// Knobs of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Scenario size.
    pub limits: ScenarioLimits,
    /// Most crashes per run.
    pub crashes_max: u32,
    /// Most checkpoints per run.
    pub checkpoints_max: u32,
    /// Most management operations per run (webhook changes, manual re-delivery).
    pub manual_ops_max: u32,
    /// Chance of a crash after any step (until `crashes_max` is reached).
    pub crash_per_step_p: f64,
    /// Virtual time after the last publish during which retries play out.
    pub drain_ms: u64,
    /// Driver steps after which the run counts as not making progress.
    pub steps_max: u64,
    /// A defect to inject, for testing the checker.
    pub bug: Option<InjectedBug>,
    /// Print every action, record and request to stderr (for reproducing a seed).
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            limits: ScenarioLimits::default(),
            crashes_max: 3,
            checkpoints_max: 3,
            manual_ops_max: 6,
            crash_per_step_p: 0.002,
            // Longest default path: six retries each pushed to 24 h by Retry-After, plus
            // outages of up to eight days and the five-day auto-disable.
            drain_ms: 16 * 24 * 3_600_000,
            steps_max: 1_000_000,
            bug: None,
            trace: false,
        }
    }
}

/// Runs one seed with the default configuration.
pub fn run_seed(seed: u64) -> Result<Stats, Violation> {
    run_seed_with(seed, &SimConfig::default())
}

/// Runs one seed with `config`.
pub fn run_seed_with(seed: u64, config: &SimConfig) -> Result<Stats, Violation> {
    sim::run(seed, config)
}
