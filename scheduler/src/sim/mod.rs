//! Discrete-event simulator comparing the policies (`gpumesh sim`).
//!
//! Each run feeds identical arrivals and work (same seed) to one policy. Workers have batch
//! slots and a FIFO queue; service time = work × [`scenario::BASE_SERVICE_S`] ÷ speed.
//! Gateways each run their own [`crate::Scheduler`] (the production code) and see load only
//! as workers publish it, every Δ seconds or on every change. Oracles see the truth.
//!
//! - [`scenario`]: the named scenarios (fleet, workload, disturbances).
//! - [`dist`]: service-time distributions.
//! - [`engine`]: the event loop.
//! - [`report`]: statistics, markdown and JSON.
//! - [`options`]: parsing names and checking a [`SimConfig`] before a run.

pub mod dist;
pub mod engine;
pub mod options;
pub mod report;
pub mod scenario;

pub use dist::ServiceDist;
pub use options::{SimConfigError, parse_policies, parse_scenarios};
pub use report::{PolicyResult, ScenarioReport};
pub use scenario::{Lie, Scenario};

use crate::policy::PolicyKind;
use engine::RunSpec;

/// Settings of one `gpumesh sim` scenario run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// Offered load ρ as a share of total capacity (Σ slots × speed).
    pub load: f64,
    /// Fleet size (`None`: the scenario's default).
    pub workers: Option<usize>,
    /// Requests per run.
    pub requests: usize,
    /// First seed.
    pub seed: u64,
    /// Seeds to run (`seed..seed + seeds`); figures are medians over them.
    pub seeds: u64,
    /// Policies to compare.
    pub policies: Vec<PolicyKind>,
    /// Service distribution override.
    pub service: Option<ServiceDist>,
}

/// Runs a scenario for every policy (and publication interval), in parallel threads.
pub fn run_scenario(cfg: &SimConfig) -> ScenarioReport {
    let n = cfg.workers.unwrap_or(cfg.scenario.default_workers()).max(2);
    let mut jobs = Vec::new();
    for &interval in cfg.scenario.publish_intervals() {
        for &kind in &cfg.policies {
            jobs.push((interval, kind));
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let mut results: Vec<Option<PolicyResult>> = vec![None; jobs.len()];
    for (chunk_jobs, chunk_out) in jobs.chunks(threads).zip(results.chunks_mut(threads)) {
        std::thread::scope(|s| {
            for (&(interval, kind), out) in chunk_jobs.iter().zip(chunk_out.iter_mut()) {
                s.spawn(move || {
                    let per_seed: Vec<PolicyResult> = (0..cfg.seeds.max(1))
                        .map(|i| {
                            let spec = spec_for(cfg, n, interval, cfg.seed.wrapping_add(i));
                            let output = engine::run(&spec, kind);
                            report::summarise(cfg.scenario, &spec, kind, interval, &output)
                        })
                        .collect();
                    *out = Some(report::median_of(per_seed));
                });
            }
        });
    }
    ScenarioReport {
        scenario: cfg.scenario.name().to_owned(),
        load: cfg.load,
        workers: n,
        seed: cfg.seed,
        seeds: cfg.seeds.max(1),
        requests: cfg.requests,
        service: cfg
            .service
            .unwrap_or(cfg.scenario.default_service())
            .name()
            .to_owned(),
        results: results.into_iter().flatten().collect(),
    }
}

/// The concrete run for one scenario variant and seed.
pub fn spec_for(cfg: &SimConfig, n: usize, publish_every: f64, seed: u64) -> RunSpec {
    let sc = cfg.scenario;
    let fleet = sc.fleet(n);
    let lies = sc.lies(n);
    let (joiners, join_frac) = sc.joiners(n);
    // Load is offered against what the fleet can really serve: a worker that answers wrong,
    // never or too late adds nothing.
    let capacity: f64 = fleet
        .iter()
        .zip(&lies)
        .enumerate()
        .filter(|(i, (_, lie))| !joiners.contains(i) && lie.is_none_or(Lie::serves))
        .map(|(_, (&(_, speed, slots), _))| speed * f64::from(slots))
        .sum::<f64>()
        / scenario::BASE_SERVICE_S;
    let rate = cfg.load * capacity;
    let duration = cfg.requests as f64 / rate;
    let service = cfg.service.unwrap_or(sc.default_service());
    let timeout = match sc {
        Scenario::SlowWorker => Some(5.0 * service.median() * scenario::BASE_SERVICE_S),
        Scenario::Liars => Some(scenario::LIARS_DEADLINE_S),
        _ => None,
    };
    RunSpec {
        fleet,
        joiners,
        join_at: join_frac * duration,
        rate,
        requests: cfg.requests,
        service,
        gateways: sc.gateways(),
        publish_every,
        timeout,
        slow: (sc == Scenario::SlowWorker).then_some((0, 10.0, 0.25 * duration, 0.75 * duration)),
        fail: (sc == Scenario::FastFail).then_some((0, 0.2 * duration)),
        checks: sc == Scenario::Liars,
        lies,
        seed,
    }
}
