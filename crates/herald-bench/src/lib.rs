//! Herald's capacity-planning harness, shared by `herald bench run|raw|sweep`.
//!
//! * [`run::run`] starts a [`herald_sink::Sink`] (on several ports: each is an origin to
//!   the engine's pools, which cap connections per origin) and either an embedded engine
//!   or, with a [`scenario::Target`], drives a running `herald serve` over its REST API
//!   (http or https) and reads its `GET /metrics` before and after ([`metrics`]) for the
//!   server's own CPU, memory, disk, journal and retry figures; publishes
//!   closed-loop (a bounded window of unanswered publishes) or open-loop at a fixed rate
//!   (latency counted from each event's scheduled send time, so a stall cannot hide:
//!   coordinated omission); waits for the deliveries; and returns a [`Report`] with every
//!   figure (throughput, latency percentiles, CPU, memory, journal and disk bytes per
//!   delivery, retries by class, a timeline).
//! * [`raw::measure`] is the ceiling: the same sink, ports, connections and body size
//!   with requests signed before the run and no engine.
//! * [`pending::run_pending`] holds a backlog of pending retries (a receiver that
//!   refuses connections) and reports the memory per pending delivery, the checkpoint
//!   of that state and the time to restart with it.
//! * [`sweep::sweep`] steps the open-loop rate until p99 breaks an SLO and sizes, at 1
//!   shard and at every core embedded, or at a remote server's own shards.
//!
//! Latency is measured at the sink: every event's data starts with
//! `"sent_unix_ns": <Unix ns>` ([`LATENCY_FIELD`]) and the sink records arrival minus
//! that. Benchmarks report; nothing here asserts a timing.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod metrics;
pub mod pending;
pub mod progress;
pub mod raw;
mod receiver;
pub mod remote;
pub mod report;
pub mod run;
pub mod scenario;
pub mod svg;
pub mod sweep;
pub mod sysstat;

pub use progress::Progress;
pub use report::{RawReport, Report, REPORT_KEYS};
pub use scenario::{Knobs, Plan};
pub use sweep::{SweepPlan, SweepReport};

/// Body member carrying each event's send time (Unix ns): scheduled (open loop) or
/// actual (closed loop).
pub const LATENCY_FIELD: &str = "sent_unix_ns";

/// Name prefix of herald-sink's event-loop threads (their CPU is the sink's share).
pub const SINK_THREAD_PREFIX: &str = "herald-sink";

/// Why a benchmark could not run. Whose fault: `Config` the caller's, `Engine`/`Remote`
/// the system under test's (or its setup), `Sink` the receiver's, `Io` the machine's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A knob is wrong; the message names it.
    #[error("{0}")]
    Config(String),
    /// The embedded engine refused to start or to publish.
    #[error("engine: {0}")]
    Engine(String),
    /// The remote server refused or failed a call.
    #[error("remote: {0}")]
    Remote(String),
    /// The sink could not start, or the raw load failed.
    #[error("sink: {0}")]
    Sink(String),
    /// A file or directory could not be made or written.
    #[error("{0}")]
    Io(String),
}
