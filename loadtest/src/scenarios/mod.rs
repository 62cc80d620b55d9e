//! What each scenario does while the traffic runs, one module per scenario. The run itself
//! (gateway, fleet, discovery, traffic, figures) is the same for all of them: see
//! [`crate::run`].
//!
//! - [`steady`]: nothing happens; the baseline.
//! - [`coordinator_only`]: nothing happens, but the run has no DHT (agents use the registry).
//! - [`chaos`]: a fifth of the workers die at once and as many new ones start.
//! - [`slow_worker`]: a tenth of the workers turn ten times slower for a third of the run.
//! - [`gateway_restart`]: the gateway restarts; time until its view is whole again.
//! - [`soak`]: steady churn all along, sampling resources for leaks.
//! - [`liars`]: 5 % of the fleet joins and lies; where their traffic goes.

mod chaos;
mod coordinator_only;
mod gateway_restart;
mod liars;
mod slow_worker;
mod soak;
mod steady;

use tokio::task::JoinHandle;

use crate::chaos::ChaosReport;
use crate::error::LoadtestError;
use crate::fleet::Fleet;
use crate::harness::GatewayProc;
use crate::liars::LiarsReport;
use crate::observe::Central;
use crate::scenario::{LoadtestConfig, Scenario};
use crate::soak::SoakReport;

/// The load generator's task.
pub(crate) type Traffic = JoinHandle<Result<(), LoadtestError>>;

/// What a scenario's event may touch: the fleet, the gateway, and the traffic's task.
pub(crate) struct Ctx<'a> {
    /// The run's options.
    pub(crate) config: &'a LoadtestConfig,
    /// The workers.
    pub(crate) fleet: &'a mut Fleet,
    /// The gateway.
    pub(crate) gateway: &'a mut GatewayProc,
    /// A client for the gateway's HTTP API.
    pub(crate) http: &'a reqwest::Client,
    /// The gateway's base URL.
    pub(crate) url: &'a str,
    /// The load generator; a scenario that must watch until the end awaits it.
    pub(crate) traffic: &'a mut Traffic,
}

/// What a scenario measured, beyond what every run measures.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// `gateway-restart`: seconds until the restarted gateway's view was whole.
    pub(crate) view_recovery_s: Option<f64>,
    /// `chaos`: the killed workers' traffic-stop figures.
    pub(crate) chaos: Option<ChaosReport>,
    /// `soak`: the resource series and their trends.
    pub(crate) soak: Option<SoakReport>,
    /// The traffic's result, when the scenario waited for it to end.
    pub(crate) traffic: Option<Result<(), LoadtestError>>,
    /// `gateway-restart`: the central counters just before the restart (the restarted
    /// gateway counts from zero).
    pub(crate) central_before_restart: Option<Central>,
    /// `liars`: the groups' figures.
    pub(crate) liars: Option<LiarsReport>,
}

/// Runs the scenario's event while the traffic runs.
///
/// # Errors
/// A scenario step that could not be carried out (a worker or the gateway not starting).
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Result<Outcome, LoadtestError> {
    match ctx.config.scenario {
        Scenario::Steady => Ok(steady::during()),
        Scenario::CoordinatorOnly => Ok(coordinator_only::during()),
        Scenario::Chaos => chaos::during(ctx).await,
        Scenario::SlowWorker => slow_worker::during(ctx).await,
        Scenario::GatewayRestart => gateway_restart::during(ctx).await,
        Scenario::Soak => Ok(soak::during(ctx).await),
        Scenario::Liars => liars::during(ctx).await,
    }
}

/// Waits until a third of the traffic has run: when a one-off event happens, so that the
/// report shows the system before, during and after it.
async fn until_event(config: &LoadtestConfig) {
    tokio::time::sleep(config.duration / 3).await;
}

/// Waits for the load generator to finish.
pub(crate) async fn join_traffic(traffic: &mut Traffic) -> Result<(), LoadtestError> {
    match traffic.await {
        Ok(r) => r,
        Err(e) => Err(LoadtestError::Goose(e.to_string())),
    }
}

/// A deterministic pick of `k` of `0..n` (xorshift; the run is reproducible).
pub(crate) fn pick(n: usize, k: usize, mut seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        all.swap(i, (seed % (i as u64 + 1)) as usize);
    }
    all.truncate(k);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_indices() {
        let p = pick(100, 20, 7);
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 20);
        assert!(p.iter().all(|&i| i < 100));
        assert_eq!(pick(100, 20, 7), p, "the same seed picks the same workers");
    }
}
