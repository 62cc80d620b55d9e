//! `gpumesh`: the command-line entry point.
//!
//! A thin binary: it parses flags (every flag also reads a `GPUMESH_*` environment variable),
//! sets up tracing, and hands a validated configuration to a library `run` function. Each
//! subcommand lives in its own module under `cli/`.
//!
//! Exit codes: 0 success, 64 bad flags or configuration (`EX_USAGE`), 69 a command that is not
//! available yet (`EX_UNAVAILABLE`), 1 any other failure.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
