//! `gpumesh keygen`.

use std::process::ExitCode;

/// Flags of `gpumesh keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh keygen`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("keygen").into())
}
