//! `gpumesh sim`: flags → [`SimConfig`] → [`sim::run_scenario`] per scenario.

use std::process::ExitCode;

use anyhow::Context as _;
use gpumesh_scheduler::PolicyKind;
use gpumesh_scheduler::sim::{self, ServiceDist, SimConfig};

use super::UsageError;

/// Flags of `gpumesh sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario: homogeneous-exp, hetero, slow-worker, fast-fail, join, stale, liars, or all.
    #[arg(long, env = "GPUMESH_SIM_SCENARIO", default_value = "all")]
    scenario: String,
    /// Offered load ρ as a share of total capacity (0 < ρ ≤ 2).
    #[arg(long, env = "GPUMESH_SIM_LOAD", default_value_t = 0.9)]
    load: f64,
    /// Workers (default: per scenario — 100, 32, 32, 16, 16, 32, 160).
    #[arg(long, env = "GPUMESH_SIM_WORKERS")]
    workers: Option<usize>,
    /// Requests per run (1000 ..= 50000000).
    #[arg(long, env = "GPUMESH_SIM_REQUESTS", default_value_t = 100_000)]
    requests: usize,
    /// Seed; with --seeds N, seeds seed..seed+N run and figures are medians.
    #[arg(long, env = "GPUMESH_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Seeds to run per cell (1 ..= 100).
    #[arg(long, env = "GPUMESH_SIM_SEEDS", default_value_t = 1)]
    seeds: u64,
    /// Comma-separated policies (default: all).
    #[arg(long, env = "GPUMESH_SIM_POLICY")]
    policy: Option<String>,
    /// Service times: exp, lognormal (σ = 1), bimodal (10% × 20), or the scenario's default.
    #[arg(long, env = "GPUMESH_SIM_SERVICE")]
    service: Option<ServiceDist>,
    /// One JSON object per scenario (one line each) instead of markdown.
    #[arg(long, env = "GPUMESH_SIM_JSON")]
    json: bool,
}

/// Runs `gpumesh sim`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let usage = |e: sim::SimConfigError| UsageError(e.to_string());
    let scenarios = sim::parse_scenarios(&args.scenario).map_err(usage)?;
    let policies = match &args.policy {
        Some(list) => sim::parse_policies(list).map_err(usage)?,
        None => PolicyKind::ALL.to_vec(),
    };
    let base = SimConfig {
        scenario: scenarios[0],
        load: args.load,
        workers: args.workers,
        requests: args.requests,
        seed: args.seed,
        seeds: args.seeds,
        policies,
        service: args.service,
    };
    base.validate().map_err(usage)?;
    let mut out = String::new();
    if !args.json {
        out.push_str(&format!(
            "# gpumesh sim\n\n`gpumesh sim --scenario {} --load {} --requests {} --seed {} --seeds {}`\n\n",
            args.scenario, base.load, base.requests, base.seed, base.seeds
        ));
    }
    for scenario in scenarios {
        let cfg = SimConfig {
            scenario,
            ..base.clone()
        };
        let report = sim::run_scenario(&cfg);
        if args.json {
            out.push_str(&report.to_json().context("encoding JSON")?);
        } else {
            out.push_str(&report.to_markdown());
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
