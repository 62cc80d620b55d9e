//! `gpumesh loadtest`.

use std::process::ExitCode;

/// Flags of `gpumesh loadtest`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh loadtest`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("loadtest").into())
}
