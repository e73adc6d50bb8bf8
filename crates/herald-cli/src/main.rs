//! The `herald` command: the dispatcher (`serve`), signing tools, journal tools and
//! benchmarks.
// Denied, not forbidden: one call into the allocator below is allowed, with its SAFETY
// argument.
#![deny(unsafe_code)]
// The doc comments of the command-line types are their `--help` text, where `<name>`
// stands for a value to give, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod journal;
mod serve;
mod sign;
mod sink;

/// mimalloc rather than glibc's malloc. Profiles of `herald bench run` showed a quarter
/// of the shard threads' time in glibc: a thread's arena grows one `mprotect` at a time
/// (tens of thousands of calls per run), and a shard freeing an event that a publisher
/// thread allocated takes that arena's lock. mimalloc keeps per-thread heaps with
/// lock-free frees from other threads. Embedders choose their own allocator; this is the
/// binary's choice only.
///
/// Built without transparent huge pages (`no_thp`): with them, mimalloc's arenas fault in
/// 2 MiB at a time, and the kernel zeroing those pages was 13 % of all samples of a
/// `herald bench run` (a page freed back and touched again is zeroed again, on the shard
/// thread that touched it); without, 0.5 %, peak RSS 10 % lower, CPU per delivery a few
/// per cent lower (`benches/README.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gives mimalloc's freed pages back to the system (`mi_collect(true)`): the engine's
/// shards call it on their own threads when they have just freed much at once (a
/// checkpoint ended, replay done, the shard stopped); see `herald::set_memory_release`.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers; it collects the calling thread's heap of the
    // allocator this binary uses for everything (above), which any thread may do at any
    // time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Herald: outbound webhook dispatch engine.
#[derive(Debug, Parser)]
#[command(name = "herald", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the dispatcher and its management REST API.
    ///
    /// Exit status: 0 after a clean stop (SIGTERM or SIGINT), 2 for a bad
    /// configuration, 3 when a shard's journal cannot be opened (a damaged journal:
    /// check it with `herald journal check` before starting again; a data directory the
    /// file system refuses: the error says what to look at), 1 for any other failure.
    Serve(serve::ServeArgs),
    /// Sign a body read from stdin and print the headers to send.
    Sign(sign::SignArgs),
    /// Verify a signed body read from stdin against its headers.
    Verify(sign::VerifyArgs),
    /// Inspect a journal directory.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
    /// Run a webhook receiver on loopback and print its request rate every second.
    Sink(sink::SinkArgs),
    /// Measure this machine for capacity planning.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Deliveries/s, latency and cost per delivery of an engine (embedded, or a running
    /// `herald serve` with --target) against a loopback sink.
    Run(Box<herald_bench::cli::RunArgs>),
    /// The ceiling: the same sink driven with requests signed in advance, no engine.
    Raw(herald_bench::cli::RawArgs),
    /// Open-loop rates stepped until p99 breaks --slo-p99-ms; the knee and a sizing line.
    Sweep(Box<herald_bench::cli::SweepArgs>),
    /// Journal append and group-commit throughput on this disk.
    Journal(journal::BenchArgs),
    /// Memory per pending retry, checkpoint size and restart time with a backlog of
    /// deliveries to a receiver that refuses connections.
    Pending(herald_bench::cli::PendingArgs),
}

/// Exit status of a benchmark that could not run or did not finish (a bad knob, an
/// engine that refused, deliveries that never arrived).
const EXIT_BENCH_FAILED: u8 = 1;
/// Exit status of a bad knob.
const EXIT_USAGE: u8 = 2;

fn bench(result: Result<(), herald_bench::BenchError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("herald bench: {error}");
            match error {
                herald_bench::BenchError::Config(_) => ExitCode::from(EXIT_USAGE),
                _ => ExitCode::from(EXIT_BENCH_FAILED),
            }
        }
    }
}

/// Writes `line` and a newline to standard output; `false` when it could not (closed,
/// e.g. by `| head -1` that has exited). Never panics, as `println!` does then.
pub(crate) fn say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

fn main() -> ExitCode {
    // The first registration in the process; nothing registered one before `main`.
    let _ = herald::set_memory_release(release_freed_memory);
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sign(args) => sign::sign(args),
        Command::Verify(args) => sign::verify(args),
        Command::Journal(command) => journal::run(command),
        Command::Sink(args) => sink::run(args),
        Command::Bench(BenchCommand::Run(args)) => bench(herald_bench::cli::run_command(*args)),
        Command::Bench(BenchCommand::Raw(args)) => bench(herald_bench::cli::raw_command(args)),
        Command::Bench(BenchCommand::Sweep(args)) => bench(herald_bench::cli::sweep_command(*args)),
        Command::Bench(BenchCommand::Journal(args)) => journal::bench(args),
        Command::Bench(BenchCommand::Pending(args)) => {
            bench(herald_bench::cli::pending_command(args))
        }
    }
}
