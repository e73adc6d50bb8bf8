//! `herald-sim`: runs seeded simulations of the dispatch core and reports the first
//! violated invariant with the seed that reproduces it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use herald_sim::{run_seed_with, SimConfig};

/// Seeded deterministic simulation of the Herald dispatch core.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Number of seeds to run (seeds `start`, `start + 1`, …).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run only this seed (overrides --seeds and --start).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one line per seed.
    #[arg(long)]
    verbose: bool,
    /// Most crashes per run.
    #[arg(long)]
    crashes_max: Option<u32>,
    /// Chance of a crash after each step.
    #[arg(long)]
    crash_p: Option<f64>,
    /// Most checkpoints per run.
    #[arg(long)]
    checkpoints_max: Option<u32>,
    /// Most events per run.
    #[arg(long)]
    events_max: Option<u32>,
    /// Most management operations per run.
    #[arg(long)]
    manual_ops_max: Option<u32>,
    /// Print every action, record and request of the run to stderr.
    #[arg(long)]
    trace: bool,
}

/// The options that shape a run, as command-line flags (for the reproduce line).
fn config_flags(args: &Args) -> String {
    let mut flags = String::new();
    if let Some(n) = args.crashes_max {
        flags += &format!(" --crashes-max {n}");
    }
    if let Some(p) = args.crash_p {
        flags += &format!(" --crash-p {p}");
    }
    if let Some(n) = args.checkpoints_max {
        flags += &format!(" --checkpoints-max {n}");
    }
    if let Some(n) = args.events_max {
        flags += &format!(" --events-max {n}");
    }
    if let Some(n) = args.manual_ops_max {
        flags += &format!(" --manual-ops-max {n}");
    }
    flags
}

/// Reports the first failing seed, how to reproduce it, and how many seeds ran.
fn failed(what: &dyn std::fmt::Display, seed: u64, ran: u64, args: &Args) -> ExitCode {
    println!("FAILED {what}");
    println!(
        "reproduce: cargo run -p herald-sim --release -- --seed {seed}{}",
        config_flags(args)
    );
    println!("seeds={ran} violations=1");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.start, args.seeds),
    };
    let mut config = SimConfig::default();
    if let Some(n) = args.crashes_max {
        config.crashes_max = n;
    }
    if let Some(p) = args.crash_p {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("--crash-p must be within 0..=1");
            return ExitCode::from(2);
        }
        config.crash_per_step_p = p;
    }
    if let Some(n) = args.checkpoints_max {
        config.checkpoints_max = n;
    }
    config.trace = args.trace;
    if let Some(n) = args.manual_ops_max {
        config.manual_ops_max = n;
    }
    if let Some(n) = args.events_max {
        config.limits.events_max = n.max(1);
    }
    let progress_every = (count / 10).max(1);
    let mut total = herald_sim::checker::Tally::default();
    let (mut sends, mut crashes, mut checkpoints, mut manual_ops) = (0, 0, 0, 0);
    let mut purge_steps = 0;
    let (mut parts, mut cut, mut abandoned, mut amid, mut copies_peak) = (0, 0, 0, 0, 0);
    for (done, seed) in (first..first.saturating_add(count)).enumerate() {
        // A broken promise the core asserts (a body the journal no longer holds, a record
        // applied in the middle of a checkpoint's first parts) panics: name the seed.
        let Ok(run) = std::panic::catch_unwind(|| run_seed_with(seed, &config)) else {
            let what = format!("seed={seed}: the run panicked (its message is above)");
            return failed(&what, seed, done as u64 + 1, &args);
        };
        match run {
            Ok(stats) => {
                sends += stats.sends;
                crashes += stats.crashes;
                checkpoints += stats.checkpoints;
                parts += stats.checkpoint_parts;
                cut += stats.checkpoints_cut;
                abandoned += stats.checkpoints_abandoned;
                amid += stats.records_amid_checkpoints;
                copies_peak = stats.checkpoint_copies_peak.max(copies_peak);
                manual_ops += stats.manual_ops;
                purge_steps += stats.purge_steps;
                let t = &stats.tally;
                total.success += t.success;
                total.failed += t.failed;
                total.exhausted += t.exhausted;
                total.disabled_gone += t.disabled_gone;
                total.disabled_failing += t.disabled_failing;
                total.disabled_manual += t.disabled_manual;
                total.repeats += t.repeats;
                total.breaker_openings += t.breaker_openings;
                total.attempts_given_back += t.attempts_given_back;
                if args.verbose {
                    println!(
                        "seed={seed} ok steps={} publishes={} acked={} sends={} crashes={} checkpoints={} cut={} amid={} copies_peak={} virtual_h={} trace={:016x}",
                        stats.steps,
                        stats.publishes,
                        stats.acked,
                        stats.sends,
                        stats.crashes,
                        stats.checkpoints,
                        stats.checkpoints_cut,
                        stats.records_amid_checkpoints,
                        stats.checkpoint_copies_peak,
                        stats.virtual_ms / 3_600_000,
                        stats.trace_hash
                    );
                } else if (done as u64 + 1).is_multiple_of(progress_every) {
                    println!("{}/{count} seeds ok", done + 1);
                }
            }
            Err(violation) => return failed(&violation, seed, done as u64 + 1, &args),
        }
    }
    println!(
        "requests={sends} crashes={crashes} checkpoints={checkpoints} manual_ops={manual_ops} purge_steps={purge_steps} repeats_after_crash={} breaker_openings={} attempts_given_back={} deliveries: success={} failed={} exhausted={}; webhooks disabled at the end: gone={} failing_too_long={} manual={}",
        total.repeats,
        total.breaker_openings,
        total.attempts_given_back,
        total.success,
        total.failed,
        total.exhausted,
        total.disabled_gone,
        total.disabled_failing,
        total.disabled_manual
    );
    println!(
        "checkpoints: parts={parts} cut_by_a_crash={cut} abandoned={abandoned} records_between_parts={amid} copies_peak={copies_peak}"
    );
    println!("seeds={count} violations=0");
    ExitCode::SUCCESS
}
