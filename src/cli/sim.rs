//! `gpumesh sim`.

use std::process::ExitCode;

/// Flags of `gpumesh sim`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh sim`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("sim").into())
}
