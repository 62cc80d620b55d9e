//! `gpumesh loadtest`.

use std::path::PathBuf;
use std::process::ExitCode;

use gpumesh_loadtest::scenario::parse_duration;
use gpumesh_loadtest::{LoadtestConfig, LoadtestError, Scenario};

/// Flags of `gpumesh loadtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Workers in the fleet (real agents with fake GPUs, in this process).
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Concurrent goose users.
    #[arg(long, default_value_t = 50)]
    users: usize,
    /// Traffic time after every worker is discovered (`30s`, `2m`).
    #[arg(long, default_value = "30s")]
    duration: String,
    /// steady, chaos, slow-worker, gateway-restart, coordinator-only, soak or liars.
    #[arg(long, default_value = "steady")]
    scenario: String,
    /// gateway-restart: restart without the saved view file (measures a blind restart).
    #[arg(long)]
    no_view_file: bool,
    /// soak: share of the workers killed and replaced each churn round (0 < share ≤ 0.5).
    #[arg(long, default_value_t = 0.03)]
    churn_share: f64,
    /// soak: time between churn rounds (`60s`, `2m`).
    #[arg(long, default_value = "60s")]
    churn_every: String,
    /// Write the JSON report here (plus `.md` and `.svg` beside it).
    #[arg(long)]
    report: Option<PathBuf>,
}

fn usage(e: LoadtestError) -> anyhow::Error {
    super::UsageError(e.to_string()).into()
}

/// Runs `gpumesh loadtest`: it stops by itself and targets loopback only.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario: Scenario = args.scenario.parse().map_err(usage)?;
    let mut config = LoadtestConfig::new(scenario, args.workers);
    config.users = args.users;
    config.duration = parse_duration(&args.duration).map_err(usage)?;
    config.view_file = !args.no_view_file;
    config.churn_share = args.churn_share;
    config.churn_every = parse_duration(&args.churn_every).map_err(usage)?;
    config.validate().map_err(usage)?;
    let report = super::runtime()?
        .block_on(gpumesh_loadtest::run::run(config))
        .map_err(|e| match e {
            // A run this machine cannot carry (e.g. the open-files limit) is a usage error.
            gpumesh_loadtest::LoadtestError::Usage(m) => super::UsageError(m).into(),
            other => anyhow::Error::from(other),
        })?;
    print!("{}", report.markdown());
    if let Some(path) = &args.report {
        for p in report.write(path)? {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
