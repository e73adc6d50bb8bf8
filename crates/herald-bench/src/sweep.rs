//! `herald bench sweep`: open-loop runs at rising rates until p99 breaks the SLO, at one
//! shard and at all shards (embedded) or at the remote server's own shard count
//! (`--target`), and the sizing line that follows from the knee.

use std::time::Duration;

use serde::Serialize;

use crate::progress::Progress;
use crate::report::Report;
use crate::run::run;
use crate::scenario::{Amount, Load, Plan, DURATION_MAX, RATE_MAX};
use crate::{sysstat, BenchError};

/// Most steps of one series.
pub const STEPS_MAX: usize = 100;
/// A step also fails when fewer than this share of the offered deliveries arrived in
/// it: the engine is not keeping up, whatever the percentiles say so far.
const KEEP_UP_SHARE: f64 = 0.9;

/// Settings of a sweep.
#[derive(Clone, Debug)]
pub struct SweepPlan {
    /// Everything but the load model and amount (taken from here).
    pub base: Plan,
    /// The SLO.
    pub slo_p99_ms: f64,
    /// Length of each step.
    pub step_duration: Duration,
    /// First rate, events/s [default: a tenth of the closed-loop probe].
    pub start_rate: Option<f64>,
    /// Rate increment [default: a tenth of the closed-loop probe].
    pub step_rate: Option<f64>,
    /// Most steps per series.
    pub steps_max: usize,
    /// Shard counts to sweep [default: 1 and all cores]; ignored remotely (one series
    /// at the server's shards).
    pub shards: Vec<usize>,
    /// The rate to size for, events/s [default: the knee at the most shards].
    pub need_rate: Option<f64>,
}

/// One open-loop step.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Offered events/s.
    pub rate: f64,
    /// Events acknowledged per second.
    pub accepted_per_s: f64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// p50, µs.
    pub p50_us: u64,
    /// p99, µs.
    pub p99_us: u64,
    /// Largest, µs.
    pub max_us: u64,
    /// Engine CPU per delivery, µs.
    pub engine_cpu_us_per_delivery: Option<f64>,
    /// Process cores busy.
    pub cores_busy: Option<f64>,
    /// Within the SLO and keeping up.
    pub pass: bool,
}

/// One shard count's sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// Shards (remote: the server's `herald_shards`, `null` if it does not say).
    pub shards: Option<usize>,
    /// Closed-loop deliveries/s ÷ fan-out: the events/s that set the default steps.
    pub probe_events_per_s: f64,
    /// The steps, in order.
    pub steps: Vec<Step>,
    /// The highest rate that passed, events/s.
    pub knee_rate: Option<f64>,
    /// A step broke the SLO (false: the steps ran out first, and the knee is higher).
    pub slo_broken: bool,
    /// Deliveries/s at the knee.
    pub knee_deliveries_per_s: Option<f64>,
    /// Deliveries/s per core the engine kept busy at the knee (its CPU per delivery;
    /// remote: the server process's, from its `/metrics`).
    pub deliveries_per_s_per_core: Option<f64>,
    /// Deliveries/s per shard at the knee.
    pub deliveries_per_s_per_shard: Option<f64>,
}

/// What a sweep measured.
#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    /// The SLO.
    pub slo_p99_ms: f64,
    /// Deliveries per event.
    pub fanout: u64,
    /// Tenants.
    pub tenants: usize,
    /// Online CPUs of this machine (remote: the harness's, not the server's).
    pub cores: usize,
    /// `embedded` or `remote`.
    pub mode: String,
    /// One series per shard count.
    pub series: Vec<Series>,
    /// Rate sized for.
    pub need_rate: Option<f64>,
    /// Cores like this machine's for it: a shard per core, each at the rate per shard of
    /// the knee of the series with the most shards.
    pub cores_needed: Option<u64>,
    /// What the engine's CPU per delivery at that knee alone says: cores kept fully busy
    /// (lower, since the knee was reached with cores to spare).
    pub cores_needed_by_cpu: Option<u64>,
    /// "R events/s at fan-out F, p99 ≤ X ms: C cores like this one" (remote: "like the
    /// server's": the per-core figure is the server process's CPU).
    pub sizing: String,
}

fn step_of(rate: f64, report: &Report, slo_p99_ms: f64) -> Step {
    let offered_deliveries = rate * report.fanout as f64;
    let keeps_up = report.deliveries_per_s >= KEEP_UP_SHARE * offered_deliveries;
    Step {
        rate,
        accepted_per_s: report.accepted_per_s,
        deliveries_per_s: report.deliveries_per_s,
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        max_us: report.max_us,
        engine_cpu_us_per_delivery: report.engine_cpu_us_per_delivery,
        cores_busy: report.cores_busy,
        pass: keeps_up
            && !report.drain_timed_out
            && report.latency_samples > 0
            && (report.p99_us as f64) <= slo_p99_ms * 1000.0,
    }
}

/// Runs the sweep. Each step's progress goes to `progress`; a line per step is noted.
pub fn sweep(plan: &SweepPlan, progress: &mut Progress) -> Result<SweepReport, BenchError> {
    if !(plan.slo_p99_ms.is_finite() && plan.slo_p99_ms > 0.0) {
        return Err(BenchError::Config("slo_p99_ms must be above 0".into()));
    }
    if plan.steps_max == 0 || plan.steps_max > STEPS_MAX {
        return Err(BenchError::Config(format!(
            "steps_max must be 1..={STEPS_MAX}"
        )));
    }
    // Checked before the closed-loop probe, not found out after it: each would make a
    // sweep that measures nothing (no time per step, no shards) or a rate no run takes.
    if plan.step_duration.is_zero() || plan.step_duration > DURATION_MAX {
        return Err(BenchError::Config(format!(
            "step_duration = {:?} must be above 0 and at most {DURATION_MAX:?}",
            plan.step_duration
        )));
    }
    for (name, rate) in [
        ("start_rate", plan.start_rate),
        ("step_rate", plan.step_rate),
        ("need_rate", plan.need_rate),
    ] {
        if let Some(rate) = rate.filter(|r| !(r.is_finite() && *r > 0.0 && *r <= RATE_MAX)) {
            return Err(BenchError::Config(format!(
                "{name} = {rate} is outside (0, {RATE_MAX}] events/s"
            )));
        }
    }
    if let Some(n) = plan
        .shards
        .iter()
        .find(|&&n| !(1..=herald::SHARDS_MAX).contains(&n))
    {
        return Err(BenchError::Config(format!(
            "sweep_shards holds {n}; each must be 1..={}",
            herald::SHARDS_MAX
        )));
    }
    let remote = plan.base.target.is_some();
    // Remotely the server has its own shard count: one series at it.
    let counts: Vec<Option<usize>> = if remote {
        vec![None]
    } else {
        plan.shards.iter().copied().map(Some).collect()
    };
    let mut series = Vec::new();
    for shards in counts {
        let mut base = plan.base.clone();
        base.shards = shards;
        let label = shards.map_or_else(|| "the server's".to_owned(), |s| s.to_string());
        base.compare_raw = false;
        base.amount = Amount::Duration(plan.step_duration);
        base.load = Load::Closed;
        progress.note(&format!("sweep, {label} shard(s): closed-loop probe"));
        let probe = run(&base, progress)?;
        let shards = shards.or(probe.shards);
        // What the engine delivered flat out, in events/s: publishing alone runs far
        // ahead of delivery in a closed loop.
        let probe_rate = (probe.deliveries_per_s / probe.fanout.max(1) as f64).max(1.0);
        let start = plan.start_rate.unwrap_or(probe_rate / 10.0).max(1.0);
        let step = plan.step_rate.unwrap_or(probe_rate / 10.0).max(1.0);
        let mut steps = Vec::new();
        let mut knee: Option<(f64, Step)> = None;
        for k in 0..plan.steps_max {
            let rate = start + step * k as f64;
            let mut open = base.clone();
            open.load = Load::Open { rate };
            let report = run(&open, progress)?;
            let mut s = step_of(rate, &report, plan.slo_p99_ms);
            if !s.pass {
                // One noisy step (another process taking the cores for a moment) must not
                // end the sweep: a step that fails is run again, and the second word is
                // the one kept.
                progress.note(&format!(
                    "  {label} shard(s) at {rate:.0} events/s: p99 {:.2} ms; confirming",
                    s.p99_us as f64 / 1000.0
                ));
                s = step_of(rate, &run(&open, progress)?, plan.slo_p99_ms);
            }
            progress.note(&format!(
                "  {label} shard(s) at {rate:.0} events/s: {:.0} deliveries/s, p99 {:.2} ms — {}",
                s.deliveries_per_s,
                s.p99_us as f64 / 1000.0,
                if s.pass {
                    "within the SLO"
                } else {
                    "breaks the SLO"
                }
            ));
            let pass = s.pass;
            steps.push(s.clone());
            if !pass {
                break;
            }
            knee = Some((rate, s));
        }
        let knee_deliveries = knee.as_ref().map(|(_, s)| s.deliveries_per_s);
        let slo_broken = steps.last().is_some_and(|s: &Step| !s.pass);
        series.push(Series {
            shards,
            probe_events_per_s: probe_rate,
            steps,
            knee_rate: knee.as_ref().map(|(r, _)| *r),
            slo_broken,
            knee_deliveries_per_s: knee_deliveries,
            deliveries_per_s_per_core: knee
                .as_ref()
                .and_then(|(_, s)| s.engine_cpu_us_per_delivery)
                .filter(|us| *us > 0.0)
                .map(|us| 1e6 / us),
            deliveries_per_s_per_shard: knee_deliveries
                .zip(shards)
                .map(|(d, s)| d / s.max(1) as f64),
        });
    }
    let fanout = plan.base.fanout();
    // Size from the series with the most shards that found a knee.
    let best = series
        .iter()
        .filter(|s| s.knee_rate.is_some())
        .max_by_key(|s| s.shards);
    let need_rate = plan.need_rate.or(best.and_then(|s| s.knee_rate));
    // Cores as shards (one per core) at the knee's rate per shard: what was measured to
    // keep the objective. The engine's CPU at the knee alone would size for cores kept
    // fully busy, which the knee's latency did not allow (it was reached with cores to
    // spare): it answers lower, and is reported beside it.
    let cores_needed_by_cpu = match (best, need_rate) {
        (Some(s), Some(rate)) => s
            .deliveries_per_s_per_core
            .map(|per_core| ((rate * fanout as f64) / per_core).ceil().max(1.0) as u64),
        _ => None,
    };
    let cores_needed = match (best, need_rate) {
        (Some(s), Some(rate)) => s
            .knee_rate
            .zip(s.shards)
            .map(|(knee, shards)| knee / shards.max(1) as f64)
            .filter(|per_shard| *per_shard > 0.0)
            .map(|per_shard| (rate / per_shard).ceil().max(1.0) as u64)
            .or(cores_needed_by_cpu),
        _ => None,
    };
    let (like, machine) = if remote {
        ("the server's", "on the server")
    } else {
        ("this one", "on this machine")
    };
    let sizing = match (need_rate, cores_needed) {
        (Some(rate), Some(cores)) => format!(
            "{rate:.0} events/s at fan-out {fanout}, p99 ≤ {} ms: {cores} cores like {like}{}",
            plan.slo_p99_ms,
            match cores_needed_by_cpu {
                Some(by_cpu) if by_cpu != cores => format!(
                    " (a shard per core at the knee's rate per shard; the engine's CPU at the knee, \
                     cores kept fully busy, would say {by_cpu})"
                ),
                _ => String::new(),
            }
        ),
        _ => format!(
            "no rate kept p99 ≤ {} ms at fan-out {fanout} {machine} (try a lower --start-rate)",
            plan.slo_p99_ms
        ),
    };
    Ok(SweepReport {
        slo_p99_ms: plan.slo_p99_ms,
        fanout,
        tenants: plan.base.tenants,
        cores: sysstat::cores(),
        mode: if remote { "remote" } else { "embedded" }.to_owned(),
        series,
        need_rate,
        cores_needed,
        cores_needed_by_cpu,
        sizing,
    })
}

impl SweepReport {
    /// The end-of-sweep table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for s in &self.series {
            out.push_str(&format!(
                "  {} shard(s){}: probe {:.0} events/s closed loop\n",
                s.shards.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                if self.mode == "remote" {
                    " on the server"
                } else {
                    ""
                },
                s.probe_events_per_s
            ));
            out.push_str("    rate/s   deliveries/s   p50 ms   p99 ms   engine µs/delivery\n");
            for st in &s.steps {
                out.push_str(&format!(
                    "    {:>7.0}  {:>13.0}  {:>7.2}  {:>7.2}  {:>8}  {}\n",
                    st.rate,
                    st.deliveries_per_s,
                    st.p50_us as f64 / 1000.0,
                    st.p99_us as f64 / 1000.0,
                    st.engine_cpu_us_per_delivery
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
                    if st.pass { "ok" } else { "over" }
                ));
            }
            match (s.knee_rate, s.knee_deliveries_per_s) {
                (Some(rate), Some(d)) => out.push_str(&format!(
                    "    knee: {}{rate:.0} events/s ({d:.0} deliveries/s); {} deliveries/s per engine core, {:.0} per shard\n",
                    if s.slo_broken { "" } else { "at least " },
                    s.deliveries_per_s_per_core
                        .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
                    s.deliveries_per_s_per_shard.unwrap_or(0.0)
                )),
                _ => out.push_str("    knee: none (the first step broke the SLO)\n"),
            }
        }
        out.push_str(&self.sizing);
        out.push('\n');
        out
    }
}
