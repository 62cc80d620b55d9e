//! `gpumesh agent`.

use std::process::ExitCode;

/// Flags of `gpumesh agent`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh agent`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("agent").into())
}
