//! `gpumesh demo`.

use std::process::ExitCode;

/// Flags of `gpumesh demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh demo`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("demo").into())
}
