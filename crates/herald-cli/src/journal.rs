//! `herald journal check` and `herald bench journal`.
use std::process::ExitCode;

/// Journal subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
    /// Validate a journal directory.
    Check {},
}

/// Arguments of `herald bench journal`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_command: JournalCommand) -> ExitCode {
    eprintln!("herald journal: not available in this build");
    ExitCode::FAILURE
}

pub fn bench(_args: BenchArgs) -> ExitCode {
    eprintln!("herald bench journal: not available in this build");
    ExitCode::FAILURE
}
