//! `gpumesh sim`: the scheduler's discrete-event policy comparison.

use std::process::ExitCode;

use anyhow::Context as _;
use gpumesh_scheduler::PolicyKind;
use gpumesh_scheduler::sim::{self, Scenario, ServiceDist, SimConfig};

use super::UsageError;

/// Flags of `gpumesh sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario: homogeneous-exp, hetero, slow-worker, fast-fail, join, stale, or all.
    #[arg(long, env = "GPUMESH_SIM_SCENARIO", default_value = "all")]
    scenario: String,
    /// Offered load ρ as a share of total capacity (0 < ρ ≤ 2).
    #[arg(long, env = "GPUMESH_SIM_LOAD", default_value = "0.9")]
    load: String,
    /// Workers (default: per scenario — 100, 32, 8, 16, 16, 32).
    #[arg(long, env = "GPUMESH_SIM_WORKERS")]
    workers: Option<String>,
    /// Requests per run (1000 ..= 50000000).
    #[arg(long, env = "GPUMESH_SIM_REQUESTS", default_value = "100000")]
    requests: String,
    /// Seed; with --seeds N, seeds seed..seed+N run and figures are medians.
    #[arg(long, env = "GPUMESH_SIM_SEED", default_value = "1")]
    seed: String,
    /// Seeds to run per cell (1 ..= 100).
    #[arg(long, env = "GPUMESH_SIM_SEEDS", default_value = "1")]
    seeds: String,
    /// Comma-separated policies (default: all).
    #[arg(long, env = "GPUMESH_SIM_POLICY")]
    policy: Option<String>,
    /// Service times: exp, lognormal (σ = 1), bimodal (10% × 20), or the scenario's default.
    #[arg(long, env = "GPUMESH_SIM_SERVICE")]
    service: Option<String>,
    /// One JSON object per scenario (one line each) instead of markdown.
    #[arg(long, env = "GPUMESH_SIM_JSON")]
    json: bool,
}

fn usage(msg: String) -> anyhow::Error {
    UsageError(msg).into()
}

fn parse_num<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| usage(format!("--{flag}: `{value}` is not a valid number")))
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    v: T,
    lo: T,
    hi: T,
) -> anyhow::Result<T> {
    if v < lo || v > hi {
        return Err(usage(format!(
            "--{flag} must be between {lo} and {hi} (got {v})"
        )));
    }
    Ok(v)
}

/// Validated settings: the scenarios to run and the shared configuration.
fn validate(args: &Args) -> anyhow::Result<(Vec<Scenario>, SimConfig)> {
    let scenarios = if args.scenario == "all" {
        Scenario::ALL.to_vec()
    } else {
        let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
        vec![Scenario::from_name(&args.scenario).ok_or_else(|| {
            usage(format!(
                "--scenario: unknown `{}` (expected one of: {}, all)",
                args.scenario,
                names.join(", ")
            ))
        })?]
    };
    let load: f64 = parse_num("load", &args.load)?;
    if !load.is_finite() || load <= 0.0 || load > 2.0 {
        return Err(usage(format!(
            "--load must be a number in (0, 2] (got {})",
            args.load
        )));
    }
    let workers = match &args.workers {
        Some(w) => Some(in_range(
            "workers",
            parse_num("workers", w)?,
            2usize,
            100_000,
        )?),
        None => None,
    };
    let requests = in_range(
        "requests",
        parse_num("requests", &args.requests)?,
        1000usize,
        50_000_000,
    )?;
    let seed: u64 = parse_num("seed", &args.seed)?;
    let seeds = in_range("seeds", parse_num("seeds", &args.seeds)?, 1u64, 100)?;
    let policies = match &args.policy {
        None => PolicyKind::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                PolicyKind::from_name(name.trim()).ok_or_else(|| {
                    let known: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.name()).collect();
                    usage(format!(
                        "--policy: unknown `{}` (expected: {})",
                        name.trim(),
                        known.join(", ")
                    ))
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    };
    let service = match args.service.as_deref() {
        None => None,
        Some("exp") => Some(ServiceDist::Exponential),
        Some("lognormal") => Some(ServiceDist::LogNormal { sigma: 1.0 }),
        Some("bimodal") => Some(ServiceDist::Bimodal {
            p_long: 0.1,
            ratio: 20.0,
        }),
        Some(other) => {
            return Err(usage(format!(
                "--service: unknown `{other}` (expected exp, lognormal or bimodal)"
            )));
        }
    };
    let cfg = SimConfig {
        scenario: scenarios[0],
        load,
        workers,
        requests,
        seed,
        seeds,
        policies,
        service,
    };
    Ok((scenarios, cfg))
}

/// Runs `gpumesh sim`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (scenarios, base) = validate(&args)?;
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
            let line = report.to_json().context("encoding JSON")?;
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push_str(&report.to_markdown());
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}
