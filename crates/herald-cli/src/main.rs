//! The `herald` command: the dispatcher (`serve`), signing tools, journal tools and
//! benchmarks.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod journal;
mod serve;
mod sign;
mod sink;

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
    /// Journal append and group-commit throughput on this disk.
    Journal(journal::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sign(args) => sign::sign(args),
        Command::Verify(args) => sign::verify(args),
        Command::Journal(command) => journal::run(command),
        Command::Sink(args) => sink::run(args),
        Command::Bench(BenchCommand::Journal(args)) => journal::bench(args),
    }
}
