//! The command-line forms of `herald bench run|raw|sweep` (flattened into the `herald`
//! binary's `bench` subcommand): arguments, the run, the table on stdout, and the
//! `--json` / `--svg` files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::progress::Progress;
use crate::raw::{run_raw, RawPlan};
use crate::scenario::{Knobs, Plan};
use crate::sweep::{sweep, SweepPlan};
use crate::{svg, sysstat, BenchError};

/// Bytes the engine's envelope adds around an event's data (id, type, timestamps,
/// tenant): what `bench raw --payload-bytes` adds to match `bench run`'s request bodies.
pub const ENVELOPE_BYTES: usize = 200;

/// Arguments of `herald bench run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario's knobs (flags, or a `--scenario` file).
    #[command(flatten)]
    pub knobs: Knobs,
    /// Write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency spectrum and throughput over time to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `herald bench raw`.
#[derive(Debug, clap::Args)]
pub struct RawArgs {
    /// Keep-alive connections (spread over the load client's event loops).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Requests in total (with --duration: per round).
    #[arg(long, default_value_t = 200_000)]
    pub requests: u64,
    /// Send rounds of --requests until this long has passed.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// Bytes of event data, as `bench run --payload-bytes`; the request body is this
    /// plus the envelope's ~200 bytes.
    #[arg(long, default_value_t = 256)]
    pub payload_bytes: usize,
    /// Over TLS (the sink's generated CA).
    #[arg(long)]
    pub tls: bool,
    /// Signature headers of this scheme's size: standard, ed25519, stripe or olo.
    #[arg(long, default_value = "standard")]
    pub scheme: herald::Scheme,
    /// Event-loop threads of the sink.
    #[arg(long, default_value_t = herald_sink::THREADS_DEFAULT)]
    pub sink_threads: usize,
    /// Sink listeners (origins) the connections are spread over, as `bench run
    /// --origins` (match its figure for a fair ceiling).
    #[arg(long, default_value_t = 1)]
    pub origins: usize,
    /// Write the figures to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Arguments of `herald bench pending`.
#[derive(Debug, clap::Args)]
pub struct PendingArgs {
    /// Events to publish, one delivery each, all left pending (the receiver refuses
    /// connections).
    #[arg(long, default_value_t = 1_000_000)]
    pub deliveries: u64,
    /// Bytes of each event's data.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Engine shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Publish receipts waited for at once.
    #[arg(long, default_value_t = crate::pending::WINDOW_DEFAULT)]
    pub window: usize,
    /// Keep the journal in this directory (default: a temporary one, removed after).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Write the figures to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `herald bench sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The latency objective: the sweep stops at the first rate whose p99 exceeds it.
    #[arg(long, value_name = "MS")]
    pub slo_p99_ms: f64,
    /// Length of each step.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s", value_name = "DURATION")]
    pub step_duration: Duration,
    /// First rate, events/s [default: a tenth of a closed-loop probe].
    #[arg(long, value_name = "EVENTS_PER_S")]
    pub start_rate: Option<f64>,
    /// Rate increment, events/s [default: a tenth of a closed-loop probe].
    #[arg(long, value_name = "EVENTS_PER_S")]
    pub step_rate: Option<f64>,
    /// Most steps per shard count.
    #[arg(long, default_value_t = 20)]
    pub steps_max: usize,
    /// Shard counts to sweep [default: 1 and every core; remote: the server's own].
    #[arg(long, value_delimiter = ',', value_name = "N,…")]
    pub sweep_shards: Vec<usize>,
    /// Size for this rate, events/s [default: the knee at the most shards].
    #[arg(long, value_name = "EVENTS_PER_S")]
    pub need_rate: Option<f64>,
    /// The scenario's knobs (flags, or a `--scenario` file).
    #[command(flatten)]
    pub knobs: Knobs,
    /// Write every figure to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw p99 against the offered rate to this SVG file.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

fn write_file(path: &Path, contents: &str) -> Result<(), BenchError> {
    std::fs::write(path, contents)
        .map_err(|e| BenchError::Io(format!("writing {}: {e}", path.display())))
}

fn json_text(value: &impl serde::Serialize) -> Result<String, BenchError> {
    serde_json::to_string_pretty(value).map_err(|e| BenchError::Io(format!("JSON: {e}")))
}

/// `herald bench run`.
pub fn run_command(args: RunArgs) -> Result<(), BenchError> {
    let knobs = args.knobs.with_scenario_file()?;
    let plan = Plan::resolve(&knobs)?;
    let mut progress = if args.quiet {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let report = crate::run::run(&plan, &mut progress)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_file(path, &json_text(&report)?)?;
    }
    if let Some(path) = &args.svg {
        write_file(path, &svg::run_svg(&report)?)?;
    }
    if report.drain_timed_out {
        return Err(BenchError::Engine(format!(
            "not every delivery settled within the drain timeout ({} of {} delivered)",
            report.delivered, report.deliveries_expected
        )));
    }
    Ok(())
}

/// `herald bench raw`.
pub fn raw_command(args: RawArgs) -> Result<(), BenchError> {
    if !(1..=herald_sink::LOAD_CONNECTIONS_MAX).contains(&args.connections) {
        return Err(BenchError::Config(format!(
            "connections must be 1..={}",
            herald_sink::LOAD_CONNECTIONS_MAX
        )));
    }
    if !(1..=crate::scenario::ORIGINS_MAX).contains(&args.origins) {
        return Err(BenchError::Config(format!(
            "origins must be 1..={}",
            crate::scenario::ORIGINS_MAX
        )));
    }
    if args.requests == 0 {
        return Err(BenchError::Config("requests must be at least 1".into()));
    }
    if args.payload_bytes > crate::scenario::PAYLOAD_BYTES_MAX {
        return Err(BenchError::Config(format!(
            "payload_bytes is at most {}",
            crate::scenario::PAYLOAD_BYTES_MAX
        )));
    }
    let plan = RawPlan {
        connections: args.connections,
        requests: args.requests,
        duration: args.duration,
        body_bytes: args.payload_bytes + ENVELOPE_BYTES,
        tls: args.tls,
        scheme: args.scheme,
        sink_threads: args.sink_threads,
        origins: args.origins,
    };
    let report = run_raw(&plan)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_file(path, &json_text(&report)?)?;
    }
    Ok(())
}

/// `herald bench sweep`.
pub fn sweep_command(args: SweepArgs) -> Result<(), BenchError> {
    let knobs = args.knobs.with_scenario_file()?;
    for (set, name) in [
        (knobs.rate.is_some(), "rate"),
        (knobs.events.is_some(), "events"),
        (knobs.duration.is_some(), "duration"),
        (knobs.shards.is_some(), "shards (use --sweep-shards)"),
        (knobs.compare_raw == Some(true), "compare_raw"),
    ] {
        if set {
            return Err(BenchError::Config(format!(
                "{name} is set by the sweep itself"
            )));
        }
    }
    if knobs.target.is_some() && !args.sweep_shards.is_empty() {
        return Err(BenchError::Config(
            "sweep_shards sets the embedded engine's shards; a remote server sweeps at its own"
                .into(),
        ));
    }
    let base = Plan::resolve(&knobs)?;
    let shards = if args.sweep_shards.is_empty() {
        let mut s = vec![1, sysstat::cores()];
        s.dedup();
        s
    } else {
        args.sweep_shards.clone()
    };
    let plan = SweepPlan {
        base,
        slo_p99_ms: args.slo_p99_ms,
        step_duration: args.step_duration,
        start_rate: args.start_rate,
        step_rate: args.step_rate,
        steps_max: args.steps_max,
        shards,
        need_rate: args.need_rate,
    };
    let mut progress = if args.quiet {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let report = sweep(&plan, &mut progress)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_file(path, &json_text(&report)?)?;
    }
    if let Some(path) = &args.svg {
        write_file(path, &svg::sweep_svg(&report)?)?;
    }
    Ok(())
}

/// `herald bench pending`.
pub fn pending_command(args: PendingArgs) -> Result<(), BenchError> {
    let plan = crate::pending::PendingPlan {
        deliveries: args.deliveries,
        payload_bytes: args.payload_bytes,
        shards: args.shards,
        window: args.window,
        data_dir: args.data_dir,
    };
    let mut progress = if args.quiet {
        Progress::quiet()
    } else {
        Progress::stderr()
    };
    let report = crate::pending::run_pending(&plan, &mut progress)?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_file(path, &json_text(&report)?)?;
    }
    Ok(())
}
