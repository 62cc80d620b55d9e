//! One load-test run, the same for every scenario: gateway, fleet, discovery, goose traffic
//! with the scenario's event ([`crate::scenarios`]), and the figures for the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpumesh_dht::Timings;
use gpumesh_gateway::Config;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::LoadtestError;
use crate::fleet::{Fleet, FleetConfig, unique_temp_dir};
use crate::harness::{
    CLIENT_THREADS, FLEET_IDLE_PER_WORKER, FLEET_START_RATE, GatewayProc, OwnRuntime,
    check_fd_budget, fleet_timings, gateway_config, open_files_limit, run_token,
};
use crate::observe::{central, client, wait_for_bootstrap, wait_for_workers, worker_count};
use crate::report::{ProfileShare, Report};
use crate::scenario::{LoadtestConfig, Scenario};
use crate::scenarios::{self, Ctx, Outcome, join_traffic};
use crate::traffic::{Recorder, TrafficConfig, drive};

/// Runs one load test and returns its report.
///
/// # Errors
/// Bad options, a gateway that cannot start, or a fleet that is not discovered in time.
pub async fn run(config: LoadtestConfig) -> Result<Report, LoadtestError> {
    config.validate()?;
    check_fd_budget(
        config.workers,
        config.users,
        FLEET_IDLE_PER_WORKER,
        open_files_limit(),
    )?;
    let root = unique_temp_dir("gpumesh-loadtest");
    std::fs::create_dir_all(&root)?;
    let result = run_in(&config, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

/// The gateway of a run: on loopback, its DHT identity and view file under `root` so that a
/// restart keeps both, production's registry lease (so the coordinator-only figure compares),
/// and one idle connection per worker ([`FLEET_IDLE_PER_WORKER`]).
fn gateway_for(
    config: &LoadtestConfig,
    root: &Path,
    timings: Timings,
    token: &str,
) -> Result<Config, LoadtestError> {
    let mut gw = gateway_config(SocketAddr::from(([127, 0, 0, 1], 0)), timings, token);
    gw.dht_enabled = config.scenario != Scenario::CoordinatorOnly;
    // A fixed port, so that the workers' cached seed survives a gateway restart.
    let dht_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    gw.dht_listen = SocketAddr::from(([127, 0, 0, 1], dht_port));
    gw.dht_identity_file = Some(root.join("gateway.key"));
    if config.view_file {
        gw.dht_view_file = Some(root.join("gateway-view.bin"));
    }
    gw.registry_ttl = Duration::from_secs(90);
    gw.upstream_idle_per_host = FLEET_IDLE_PER_WORKER;
    if config.scenario == Scenario::Liars {
        checks_for_liars(&mut gw, root)?;
    }
    Ok(gw)
}

/// The `liars` run's gateway checks answers: a canary file for every service, and deadlines
/// that end a tarpit's answer.
fn checks_for_liars(gw: &mut Config, root: &Path) -> Result<(), LoadtestError> {
    let path = root.join("canaries.toml");
    crate::liars::canary_file(&path)?;
    let plan = gpumesh_gateway::checks::CheckPlan::load(&path)
        .map_err(|e| LoadtestError::Usage(format!("the run's canary file: {e}")))?;
    gw.checks = std::sync::Arc::new(plan);
    // A mock answers in well under a second even when queued: deadlines far above that still
    // end a tarpit's answer within the run.
    gw.ttfb_timeout = Duration::from_secs(5);
    gw.response_deadline = Duration::from_secs(10);
    Ok(())
}

/// The workers that start with the fleet: all of them, except in `liars`, whose liars join
/// later.
fn honest_workers(config: &LoadtestConfig) -> usize {
    match config.scenario {
        Scenario::Liars => config.workers - crate::liars::liar_count(config.workers),
        _ => config.workers,
    }
}

/// The fleet of a run: fleet timings, a load period of 5 s, started at [`FLEET_START_RATE`].
fn fleet_for(
    config: &LoadtestConfig,
    gw: &Config,
    url: &str,
    token: &str,
    root: &Path,
) -> FleetConfig {
    let timings = gw.dht_timings.unwrap_or_else(fleet_timings);
    let mut fleet = FleetConfig::new(honest_workers(config), url, token);
    fleet.dht_enabled = gw.dht_enabled;
    fleet.timings = timings;
    fleet.refresh_every = timings.refresh_interval;
    fleet.load_every = Duration::from_secs(5);
    fleet.state_root = root.join("workers");
    fleet.start_rate = Some(FLEET_START_RATE);
    fleet
}

async fn run_in(config: &LoadtestConfig, root: &Path) -> Result<Report, LoadtestError> {
    let http = client()?;
    let token = run_token();
    let gw_config = gateway_for(config, root, fleet_timings(), &token)?;
    let fleet_config = |url: &str| fleet_for(config, &gw_config, url, &token, root);
    let (mut gateway, addr) = GatewayProc::start(gw_config.clone()).await?;
    let url = format!("http://{addr}");
    if gw_config.dht_enabled {
        wait_for_bootstrap(&url, Duration::from_secs(20)).await?;
    }
    let started = Instant::now();
    let mut fleet = Fleet::start(fleet_config(&url)).await?;
    let monitor = Monitor::start(http.clone(), url.clone(), started);
    // Timed from the fleet's start (`wait_for_workers` times only its own wait).
    let discovery_s =
        match wait_for_workers(&url, honest_workers(config), config.discovery_limit).await {
            Ok(_) => started.elapsed().as_secs_f64(),
            Err(e) => {
                monitor.stop().await;
                fleet.shutdown().await;
                gateway.stop().await;
                return Err(e);
            }
        };
    info!(discovery_s, "fleet discovered; traffic starts");
    let workers_discovered = worker_count(&http, &url).await.unwrap_or(0);
    let window = traffic_window(config, &mut fleet, &mut gateway, &http, &url).await?;
    let traffic_by_profile = shares(&fleet);
    let (discovered_over_time, peak_rss_mib) = monitor.stop().await;
    let reports = fleet.shutdown().await;
    gateway.stop().await;
    window.goose?;
    let startup_calls: u64 = reports.iter().map(|r| r.bootstrap_calls).sum();
    let summary = window.recorder.summary();
    let Outcome {
        view_recovery_s,
        chaos,
        soak,
        liars,
        ..
    } = window.outcome;
    Ok(Report {
        scenario: config.scenario.name().to_owned(),
        workers: config.workers,
        users: config.users,
        duration_s: config.duration.as_secs_f64(),
        workers_discovered,
        discovery_s,
        requests: summary.requests,
        ok: summary.ok,
        failed: summary.failed,
        success_ratio: summary.ok as f64 / summary.requests.max(1) as f64,
        latency_ms: summary.latency_ms,
        errors: summary.errors,
        central_calls_in_window: window.calls,
        central_calls_per_worker_day: window.calls / config.workers as f64 / window.seconds
            * 86_400.0,
        agent_starts: reports.len(),
        // Per start, not per configured worker: a soak or chaos run starts more agents than
        // `--workers` (a 60-minute soak: 300 + 540), and each calls bootstrap once.
        bootstrap_calls_per_agent_start: startup_calls as f64 / reports.len().max(1) as f64,
        dht_messages_per_s: window.messages / window.seconds,
        view_recovery_s,
        failed_worker_traffic_stop_s: chaos.as_ref().and_then(|c| c.traffic_stop_max_s),
        chaos,
        failures_without_error_body: summary.failures_without_error_body,
        answers_delivered: summary.answers_delivered,
        garbage_answers_delivered: summary.garbage_answers_delivered,
        liars: liars.map(|l| l.with_success(summary.ok, summary.requests)),
        view_file: (config.scenario == Scenario::GatewayRestart).then_some(config.view_file),
        peak_rss_mib,
        soak,
        traffic_by_profile,
        discovered_over_time,
        timeline: window.recorder.timeline(),
        machine: crate::report::machine(),
    })
}

/// The traffic window's figures.
struct Window {
    outcome: Outcome,
    goose: Result<(), LoadtestError>,
    recorder: Arc<Recorder>,
    /// Central calls (bootstrap + registry) during the window.
    calls: f64,
    /// DHT messages of the gateway's node during the window.
    messages: f64,
    /// The window's length.
    seconds: f64,
}

/// Drives the traffic on a runtime of its own and runs the scenario's event meanwhile.
async fn traffic_window(
    config: &LoadtestConfig,
    fleet: &mut Fleet,
    gateway: &mut GatewayProc,
    http: &reqwest::Client,
    url: &str,
) -> Result<Window, LoadtestError> {
    let start = Instant::now();
    let c0 = central(http, url).await;
    let recorder = Recorder::new();
    let traffic_cfg = TrafficConfig {
        url: url.to_owned(),
        users: config.users,
        duration: config.duration,
        think: config.think,
    };
    // The load generator, like the gateway, on its own runtime: its timings then measure
    // the gateway and the workers, not the fleet's queue of tasks on the same threads.
    let clients = OwnRuntime::new("clients", CLIENT_THREADS)?;
    let mut traffic = {
        let rec = Arc::clone(&recorder);
        clients.spawn(async move { drive(&traffic_cfg, rec).await })
    };
    let mut ctx = Ctx {
        config,
        fleet,
        gateway,
        http,
        url,
        traffic: &mut traffic,
    };
    let mut outcome = scenarios::during(&mut ctx).await?;
    let goose = match outcome.traffic.take() {
        Some(r) => r,
        None => join_traffic(&mut traffic).await,
    };
    let seconds = start.elapsed().as_secs_f64();
    let c1 = central(http, url).await;
    // A restarted gateway counts from zero: add what the first one counted.
    let (calls, messages) = match outcome.central_before_restart {
        Some(pre) => (
            (pre.calls - c0.calls) + c1.calls,
            (pre.dht_messages - c0.dht_messages) + c1.dht_messages,
        ),
        None => (c1.calls - c0.calls, c1.dht_messages - c0.dht_messages),
    };
    Ok(Window {
        outcome,
        goose,
        recorder,
        calls,
        messages,
        seconds,
    })
}

/// Workers discovered over time and the process's peak RSS, sampled every second.
struct Monitor {
    discovered: Arc<Mutex<Vec<(f64, usize)>>>,
    peak_rss: Arc<Mutex<f64>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Monitor {
    fn start(http: reqwest::Client, url: String, started: Instant) -> Self {
        let discovered = Arc::new(Mutex::new(Vec::new()));
        let peak_rss = Arc::new(Mutex::new(0.0f64));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (d, peak, stop) = (Arc::clone(&discovered), Arc::clone(&peak_rss), stop.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {
                            let n = worker_count(&http, &url).await.unwrap_or(0);
                            lock(&d).push((started.elapsed().as_secs_f64(), n));
                            let rss = crate::soak::rss_mib();
                            let mut p = lock(&peak);
                            *p = p.max(rss);
                        }
                    }
                }
            }
        });
        Self {
            discovered,
            peak_rss,
            stop,
            task,
        }
    }

    /// Stops sampling; the discovery series and the peak RSS (MiB).
    async fn stop(self) -> (Vec<(f64, usize)>, f64) {
        self.stop.cancel();
        let _ = self.task.await;
        let series = lock(&self.discovered).clone();
        let peak = *lock(&self.peak_rss);
        (series, peak)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Requests served per GPU profile (from each worker's service) against capacity shares.
fn shares(fleet: &Fleet) -> Vec<ProfileShare> {
    let mut by: BTreeMap<&'static str, (usize, f64, u64)> = BTreeMap::new();
    for (i, w) in fleet.workers().iter().enumerate() {
        let e = by.entry(w.profile).or_default();
        e.0 += 1;
        e.1 += w.speed;
        e.2 += fleet.served(i);
    }
    let cap: f64 = by.values().map(|v| v.1).sum();
    let served: u64 = by.values().map(|v| v.2).sum();
    by.into_iter()
        .map(|(profile, (workers, speed, s))| ProfileShare {
            profile: profile.to_owned(),
            workers,
            capacity_share: if cap > 0.0 { speed / cap } else { 0.0 },
            traffic_share: if served > 0 {
                s as f64 / served as f64
            } else {
                0.0
            },
            served: s,
        })
        .collect()
}
