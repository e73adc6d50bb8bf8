//! `herald sign` and `herald verify`.
use std::process::ExitCode;

/// Arguments of `herald sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {}

/// Arguments of `herald verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {}

pub fn sign(_args: SignArgs) -> ExitCode {
    eprintln!("herald sign: not available in this build");
    ExitCode::FAILURE
}

pub fn verify(_args: VerifyArgs) -> ExitCode {
    eprintln!("herald verify: not available in this build");
    ExitCode::FAILURE
}
