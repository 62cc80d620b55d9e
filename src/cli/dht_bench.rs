//! `gpumesh dht-bench`.

use std::process::ExitCode;

/// Flags of `gpumesh dht-bench`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `gpumesh dht-bench`.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    Err(super::Unavailable("dht-bench").into())
}
