//! `gpumesh`: the command-line entry point.
//!
//! A thin binary: it parses flags (every flag also reads a `GPUMESH_*` environment variable),
//! sets up tracing, and hands a validated configuration to a library `run` function. Each
//! subcommand lives in its own module under `cli/`.
//!
//! Exit codes: 0 success, 64 bad flags or configuration (`EX_USAGE`), 1 any other failure.
//!
//! Feature `loadtest` (on by default) adds the harness commands `demo`, `sim`, `dht-bench`
//! and `loadtest`, and the agent's `--mock-service`/`--mock-only`; without it the binary has
//! only what an operator runs (`agent`, `gateway`, `keygen`, `admit`) and carries no load
//! generator, simulator or mock service.

mod cli;

use std::process::ExitCode;

/// With feature `mimalloc`, mimalloc is the process allocator. A forwarded request makes a few
/// dozen short-lived allocations inside hyper, axum and tokio; the gateway profile
/// (docs/benchmarks/gateway.md) put glibc's malloc/free at about an eighth of its CPU, and mimalloc's
/// thread-local free lists cut the allocator's instructions per request from about 10 k to
/// 3.3 k. It is off by default because one binary runs every command and mimalloc doubled the
/// agent's RSS (19.4 → 38.0 MB; anonymous 3.2 → 20.0 MB, measured 2026-11-24) against a 15 MB
/// budget. It lives here, not in a library, because a global allocator belongs to the binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc is the process allocator by default (feature `jemalloc`). glibc's malloc kept freed
/// memory in its arenas: in a 30-minute, 300-worker soak its live heap was flat while RSS grew
/// about 55–83 MiB/h; jemalloc returns freed pages after its decay time and reports its own
/// figures, which the soak samples (docs/benchmarks/soak.md). It costs the agent
/// about 2.4 MB of RSS (20.7 → 23.1 MB). `--no-default-features` builds with glibc's malloc.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    cli::main()
}
