//! `gpumesh gateway`.

use std::process::ExitCode;

/// Flags of `gpumesh gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh gateway`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("gateway").into())
}
