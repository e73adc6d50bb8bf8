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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (first, count) = match args.seed {
        Some(seed) => (seed, 1),
        None => (args.start, args.seeds),
    };
    let config = SimConfig::default();
    let progress_every = (count / 10).max(1);
    for (done, seed) in (first..first.saturating_add(count)).enumerate() {
        match run_seed_with(seed, &config) {
            Ok(stats) => {
                if args.verbose {
                    println!(
                        "seed={seed} ok steps={} publishes={} acked={} sends={} crashes={} virtual_h={} trace={:016x}",
                        stats.steps,
                        stats.publishes,
                        stats.acked,
                        stats.sends,
                        stats.crashes,
                        stats.virtual_ms / 3_600_000,
                        stats.trace_hash
                    );
                } else if (done as u64 + 1) % progress_every == 0 {
                    println!("{}/{count} seeds ok", done + 1);
                }
            }
            Err(violation) => {
                println!("FAILED {violation}");
                println!("reproduce: cargo run -p herald-sim --release -- --seed {seed}");
                println!("seeds={} violations=1", done + 1);
                return ExitCode::FAILURE;
            }
        }
    }
    println!("seeds={count} violations=0");
    ExitCode::SUCCESS
}
