//! One load-test run: gateway, fleet, discovery, goose traffic, the scenario's events, and the
//! figures for the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpumesh_dht::{DhtHandle, Timings};
use gpumesh_gateway::directory::Directory;
use gpumesh_gateway::{Config, Gateway, RunError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::chaos::ChaosReport;
use crate::demo::{gateway_config, run_token, worker_count};
use crate::error::LoadtestError;
use crate::fleet::{Fleet, FleetConfig, unique_temp_dir};
use crate::report::{ProfileShare, Report};
use crate::scenario::{LoadtestConfig, Scenario};
use crate::soak::{Sample, SoakReport};
use crate::traffic::{Recorder, TrafficConfig, drive};

/// DHT timings for big loopback fleets: the fast test timings, stretched so that hundreds of
/// nodes on two cores are not all refreshing every two seconds.
pub fn fleet_timings() -> Timings {
    Timings {
        record_ttl: Duration::from_secs(60),
        refresh_interval: Duration::from_secs(20),
        heartbeat_interval: Duration::from_secs(10),
        liveness_timeout: Duration::from_secs(35),
        load_stale_after: Duration::from_secs(25),
        query_timeout: Duration::from_secs(20),
        gossip_heartbeat: Duration::from_secs(1),
        ..Timings::fast()
    }
}

/// Fleet workers started per second. Volunteers' machines do not all start in the same
/// second; when 2000 agents did, on two cores, 65 of them found no DHT within their 10 s join
/// timeout and registered through the fallback registry first (correct behaviour, but it is
/// the start-up storm being measured, not the steady state). 200/s still starts 2000 workers
/// in 10 s.
pub const FLEET_START_RATE: f64 = 200.0;

/// Idle gateway connections kept per fleet worker. Both ends of every loopback connection
/// are in this one process, so the production default (8) would cost up to 16 open files per
/// worker; with thousands of workers and tens of users a worker rarely has two requests at
/// once, so one idle connection serves nearly every request.
pub const FLEET_IDLE_PER_WORKER: usize = 1;

/// Open files one in-process worker holds besides the gateway's pool, measured (pairing the
/// process's own sockets in `/proc/PID/net/tcp`) in a 2000-worker run: 2 listening sockets
/// (mock service, the agent's load-report endpoint), the agent's DHT connection to the gateway
/// and the mock's keep-alive connection reporting load to its agent (both ends of each are in
/// this process).
const FDS_PER_WORKER: u64 = 6;

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits` (`None` where it cannot be read).
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Refuses a run that would run out of file descriptors mid-way (the failure otherwise shows
/// up as transport errors in the middle of the run). Each worker: [`FDS_PER_WORKER`] plus
/// both ends of `idle_per_worker` pooled connections; each user: its connection to the
/// gateway and one request in flight to a worker (both ends of each).
fn check_fd_budget(
    workers: usize,
    users: usize,
    idle_per_worker: usize,
    limit: Option<u64>,
) -> Result<(), LoadtestError> {
    let Some(limit) = limit else { return Ok(()) };
    let per_worker = FDS_PER_WORKER + 2 * idle_per_worker as u64;
    let need = workers as u64 * per_worker + users as u64 * 4 + 512;
    if need > limit {
        return Err(LoadtestError::Usage(format!(
            "{workers} in-process workers need about {need} open files, but the limit is {limit} \
             (`ulimit -n`); raise it or run fewer workers"
        )));
    }
    Ok(())
}

/// A tokio runtime of its own for one part of the run, shut down without blocking when
/// dropped (a runtime must not be dropped inside another one's async context).
///
/// Why: on one machine everything shares two cores, and within one runtime the gateway's
/// swarm task is one task among the fleet's tens of thousands, so it gets a sliver of the CPU
/// while 2000 agents handshake with it at once: its DHT then answers too late and agents time
/// out. In production the gateway and the clients have machines of their own; separate
/// runtimes (their own OS threads) give each part its share of the cores from the OS
/// scheduler, which is the nearest a single process gets to that.
pub struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    /// A multi-threaded runtime with `threads` workers named `name`.
    ///
    /// # Errors
    /// The OS refused the threads.
    pub fn new(name: &str, threads: usize) -> std::io::Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|rt| Self(Some(rt)))
    }

    /// Spawns `future` on this runtime.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(future),
            // Only `drop` takes the runtime out.
            None => unreachable!("runtime used after shutdown"),
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for OwnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnRuntime")
    }
}

/// Worker threads of the gateway's runtime and of the load generator's.
const GATEWAY_THREADS: usize = 2;
const CLIENT_THREADS: usize = 2;

/// A gateway that can be stopped and started again on the same HTTP and DHT addresses with
/// the same DHT identity (so the workers' cached seed stays valid). It runs on its own
/// runtime ([`OwnRuntime`]).
struct GatewayProc {
    config: Config,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
    /// The gateway's view (read in-process for the attempt logs of departed workers).
    directory: Arc<Directory>,
    /// Its DHT node (store and routing-table sizes for `soak`).
    dht: Option<DhtHandle>,
    /// Declared last: dropped after the task handle.
    _runtime: OwnRuntime,
}

type Started = (SocketAddr, Arc<Directory>, Option<DhtHandle>);

impl GatewayProc {
    async fn start(config: Config) -> Result<(Self, SocketAddr), LoadtestError> {
        let runtime = OwnRuntime::new("gateway", GATEWAY_THREADS)?;
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Started, LoadtestError>>();
        // Bound and served inside the gateway's runtime, so that its sockets and its DHT
        // node's swarm task belong to that runtime.
        let task = runtime.spawn({
            let (config, stop) = (config.clone(), stop.clone());
            async move {
                let bound = async {
                    let gw = Gateway::bind(config).await?;
                    let addr = gw.local_addr()?;
                    Ok::<_, LoadtestError>((gw, addr))
                }
                .await;
                match bound {
                    Ok((gw, addr)) => {
                        let started = (addr, Arc::clone(&gw.state().directory), gw.dht().cloned());
                        let _ = tx.send(Ok(started));
                        gw.serve(stop).await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                }
            }
        });
        let (addr, directory, dht) = rx.await.map_err(|_| {
            LoadtestError::Http("the gateway task ended before it started".into())
        })??;
        let mut config = config;
        config.listen = addr;
        Ok((
            Self {
                config,
                stop,
                task,
                directory,
                dht,
                _runtime: runtime,
            },
            addr,
        ))
    }

    async fn stop(self) -> Config {
        self.stop.cancel();
        match self.task.await {
            Ok(Err(e)) => warn!(error = %e, "gateway stopped with an error"),
            Err(e) => warn!(error = %e, "gateway task failed"),
            Ok(Ok(())) => {}
        }
        self.config
    }
}

/// Sums every sample of the families whose name starts with `prefix` in Prometheus text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(http: &reqwest::Client, url: &str) -> Option<String> {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Bootstrap and registry calls (the central endpoints) and DHT messages, from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct Central {
    calls: f64,
    dht_messages: f64,
}

/// The central-call counters; `NaN` when `/metrics` could not be read in five tries (a busy
/// gateway can miss the 5 s client timeout), so that a failed read shows as `null` in the
/// report instead of a zero that would make the difference negative.
async fn central(http: &reqwest::Client, url: &str) -> Central {
    let mut text = None;
    for _ in 0..5 {
        text = scrape(http, url).await;
        if text.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let Some(text) = text else {
        warn!("gateway /metrics unreadable; central-call figures unknown");
        return Central {
            calls: f64::NAN,
            dht_messages: f64::NAN,
        };
    };
    Central {
        calls: metric_sum(&text, "gpumesh_gateway_bootstrap_requests_total")
            + metric_sum(&text, "gpumesh_gateway_registry_requests_total"),
        dht_messages: metric_sum(&text, "gpumesh_dht_messages_total"),
    }
}

async fn online_ids(http: &reqwest::Client, url: &str) -> Option<Vec<String>> {
    let r = http.get(format!("{url}/api/workers")).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some(
        v.get("workers")?
            .as_array()?
            .iter()
            .filter(|w| w.get("state").and_then(|s| s.as_str()) == Some("online"))
            .filter_map(|w| w.get("id")?.as_str().map(str::to_owned))
            .collect(),
    )
}

/// A deterministic pick of `k` of `0..n` (xorshift; the run is reproducible).
fn pick(n: usize, k: usize, mut seed: u64) -> Vec<usize> {
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
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LoadtestError::Http(e.to_string()))?;
    let token = run_token();
    let root = unique_temp_dir("gpumesh-loadtest");
    std::fs::create_dir_all(&root)?;
    let dht = config.scenario != Scenario::CoordinatorOnly;
    let timings = fleet_timings();
    let mut gw_config = gateway_config(SocketAddr::from(([127, 0, 0, 1], 0)), timings, &token);
    gw_config.dht_enabled = dht;
    let dht_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    gw_config.dht_listen = SocketAddr::from(([127, 0, 0, 1], dht_port));
    gw_config.dht_identity_file = Some(root.join("gateway.key"));
    if config.view_file {
        gw_config.dht_view_file = Some(root.join("gateway-view.bin"));
    }
    // Production registry TTL: the coordinator-only figure is then comparable.
    gw_config.registry_ttl = Duration::from_secs(90);
    gw_config.upstream_idle_per_host = FLEET_IDLE_PER_WORKER;
    let (mut gateway, addr) = GatewayProc::start(gw_config).await?;
    let url = format!("http://{addr}");
    if dht {
        crate::demo::wait_for_bootstrap(&url, Duration::from_secs(20)).await?;
    }

    let mut fleet_cfg = FleetConfig::new(config.workers, &url, &token);
    fleet_cfg.dht_enabled = dht;
    fleet_cfg.timings = timings;
    fleet_cfg.refresh_every = timings.refresh_interval;
    fleet_cfg.load_every = Duration::from_secs(5);
    fleet_cfg.state_root = root.join("workers");
    fleet_cfg.start_rate = Some(FLEET_START_RATE);
    let started = Instant::now();
    let mut fleet = Fleet::start(fleet_cfg).await?;

    // Workers discovered over time (and the process's peak RSS), sampled every second.
    let discovered = Arc::new(Mutex::new(Vec::<(f64, usize)>::new()));
    let peak_rss = Arc::new(Mutex::new(0.0f64));
    let sampler_stop = CancellationToken::new();
    let sampler = {
        let (http, url, d, stop, peak) = (
            http.clone(),
            url.clone(),
            Arc::clone(&discovered),
            sampler_stop.clone(),
            Arc::clone(&peak_rss),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let n = worker_count(&http, &url).await.unwrap_or(0);
                        d.lock().unwrap_or_else(|e| e.into_inner())
                            .push((started.elapsed().as_secs_f64(), n));
                        let rss = crate::soak::rss_mib();
                        let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                        *p = p.max(rss);
                    }
                }
            }
        })
    };
    // Timed from the fleet's start (`wait_for_workers` times only its own wait).
    let discovery_s =
        match crate::demo::wait_for_workers(&url, config.workers, config.discovery_limit).await {
            Ok(_) => started.elapsed().as_secs_f64(),
            Err(e) => {
                sampler_stop.cancel();
                fleet.shutdown().await;
                gateway.stop().await;
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
    info!(
        workers = config.workers,
        discovery_s, "fleet discovered; traffic starts"
    );
    let workers_discovered = worker_count(&http, &url).await.unwrap_or(0);

    let window_start = Instant::now();
    let c0 = central(&http, &url).await;
    let rec = Recorder::new();
    let traffic_cfg = TrafficConfig {
        url: url.clone(),
        users: config.users,
        duration: config.duration,
        think: config.think,
    };
    // The load generator, like the gateway, on its own runtime: its timings then measure
    // the gateway and the workers, not the fleet's queue of tasks on the same threads.
    let clients = OwnRuntime::new("clients", CLIENT_THREADS)?;
    let mut traffic = {
        let rec = Arc::clone(&rec);
        clients.spawn(async move { drive(&traffic_cfg, rec).await })
    };

    // The scenario's event, a third of the way in (soak: churn all along).
    if config.scenario != Scenario::Soak {
        tokio::time::sleep(config.duration / 3).await;
    }
    let mut view_recovery_s = None;
    let mut chaos = None;
    let mut soak = None;
    let mut traffic_result = None;
    let mut pre_restart = Central::default();
    match config.scenario {
        Scenario::Steady | Scenario::CoordinatorOnly => {}
        Scenario::Soak => {
            let (report, result) =
                soak_loop(&config, &mut fleet, &gateway, &http, &url, &mut traffic).await;
            soak = Some(report);
            traffic_result = Some(result);
        }
        Scenario::Chaos => {
            let n = config.workers;
            let victims = pick(n, (n / 5).max(1), 0x9E37_79B9_7F4A_7C15);
            let ids: Vec<String> = victims
                .iter()
                .map(|&i| fleet.workers()[i].id.clone())
                .collect();
            let killed_at = Instant::now();
            let killed_at_ms = gpumesh_dht::rules::unix_ms();
            for &i in &victims {
                fleet.kill(i).await;
            }
            for k in 0..victims.len() {
                fleet.add_worker(n + k)?;
            }
            // Killed workers are out of the routable view (no longer online).
            let mut out_of_online_view_s = None;
            let deadline = killed_at + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Some(online) = online_ids(&http, &url).await
                    && !online.iter().any(|id| ids.contains(id))
                {
                    out_of_online_view_s = Some(killed_at.elapsed().as_secs_f64());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The issue's figure needs the whole run: a killed worker "stops receiving
            // traffic" only if nothing reaches it until the end.
            traffic_result = Some(join_traffic(&mut traffic).await);
            let logs: Vec<_> = ids
                .iter()
                .map(|id| gateway.directory.attempt_log(id))
                .collect();
            chaos = Some(ChaosReport {
                out_of_online_view_s,
                ..crate::chaos::summarize(killed_at_ms, &logs)
            });
        }
        Scenario::SlowWorker => {
            let n = config.workers;
            let slow = pick(n, (n / 10).max(1), 0x5151_0BAD_F00D_0001);
            for &i in &slow {
                let _ = fleet.set_fault(i, r#"{"mode":"slow","factor":10}"#).await;
            }
            tokio::time::sleep(config.duration / 3).await;
            for &i in &slow {
                let _ = fleet.set_fault(i, r#"{"mode":"none"}"#).await;
            }
        }
        Scenario::GatewayRestart => {
            pre_restart = central(&http, &url).await;
            let cfg = gateway.stop().await;
            let restarted = Instant::now();
            let (g, _) = GatewayProc::start(cfg).await?;
            gateway = g;
            if let Ok(d) =
                crate::demo::wait_for_workers(&url, config.workers, Duration::from_secs(60)).await
            {
                view_recovery_s = Some(d.as_secs_f64().max(restarted.elapsed().as_secs_f64()));
            }
        }
    }

    let goose = match traffic_result {
        Some(r) => r,
        None => join_traffic(&mut traffic).await,
    };
    let window_s = window_start.elapsed().as_secs_f64();
    let c1 = central(&http, &url).await;
    let (calls, messages) = if config.scenario == Scenario::GatewayRestart {
        (
            (pre_restart.calls - c0.calls) + c1.calls,
            (pre_restart.dht_messages - c0.dht_messages) + c1.dht_messages,
        )
    } else {
        (c1.calls - c0.calls, c1.dht_messages - c0.dht_messages)
    };
    let shares = shares(&http, &fleet).await;
    sampler_stop.cancel();
    let _ = sampler.await;
    let reports = fleet.shutdown().await;
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&root);
    goose?;
    let startup_calls: u64 = reports.iter().map(|r| r.bootstrap_calls).sum();

    let summary = rec.summary();
    let success_ratio = if summary.requests == 0 {
        0.0
    } else {
        summary.ok as f64 / summary.requests as f64
    };
    let discovered_over_time = discovered.lock().unwrap_or_else(|e| e.into_inner()).clone();
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
        success_ratio,
        latency_ms: summary.latency_ms,
        errors: summary.errors,
        central_calls_in_window: calls,
        central_calls_per_worker_day: calls / config.workers as f64 / window_s * 86_400.0,
        agent_starts: reports.len(),
        // Per start, not per configured worker: a soak or chaos run starts more agents than
        // `--workers` (a 60-minute soak: 300 + 540), and each calls bootstrap once.
        bootstrap_calls_per_agent_start: startup_calls as f64 / reports.len().max(1) as f64,
        dht_messages_per_s: messages / window_s,
        view_recovery_s,
        failed_worker_traffic_stop_s: chaos.as_ref().and_then(|c| c.traffic_stop_max_s),
        chaos,
        failures_without_error_body: summary.failures_without_error_body,
        view_file: (config.scenario == Scenario::GatewayRestart).then_some(config.view_file),
        peak_rss_mib: *peak_rss.lock().unwrap_or_else(|e| e.into_inner()),
        soak,
        traffic_by_profile: shares,
        discovered_over_time,
        timeline: rec.timeline(),
        machine: crate::report::machine(),
    })
}

async fn join_traffic(
    traffic: &mut JoinHandle<Result<(), LoadtestError>>,
) -> Result<(), LoadtestError> {
    match traffic.await {
        Ok(r) => r,
        Err(e) => Err(LoadtestError::Goose(e.to_string())),
    }
}

/// `soak`: until the traffic ends, replaces a share of the live workers every
/// `churn_every` (crash + new agent) and samples the resource series every `sample_every`.
async fn soak_loop(
    config: &LoadtestConfig,
    fleet: &mut Fleet,
    gateway: &GatewayProc,
    http: &reqwest::Client,
    url: &str,
    traffic: &mut JoinHandle<Result<(), LoadtestError>>,
) -> (SoakReport, Result<(), LoadtestError>) {
    let start = Instant::now();
    let mut alive: Vec<usize> = (0..fleet.workers().len()).collect();
    let mut next_index = fleet.workers().len();
    let per_round = ((config.workers as f64 * config.churn_share).ceil() as usize).max(1);
    let mut churn = tokio::time::interval(config.churn_every);
    let mut sample = tokio::time::interval(config.sample_every);
    churn.reset();
    let mut seed = 0xC0FF_EE00_D15E_A5E5u64;
    let (mut samples, mut churned, mut rounds) = (Vec::new(), 0, 0);
    let result = loop {
        tokio::select! {
            r = &mut *traffic => {
                break r.unwrap_or_else(|e| Err(LoadtestError::Goose(e.to_string())));
            }
            _ = sample.tick() => {
                samples.push(take_sample(start, gateway, http, url).await);
            }
            _ = churn.tick() => {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let victims = pick(alive.len(), per_round.min(alive.len()), seed);
                let mut positions: Vec<usize> = victims.iter().map(|&v| alive[v]).collect();
                positions.sort_unstable();
                for &p in &positions {
                    fleet.kill(p).await;
                }
                alive.retain(|p| !positions.contains(p));
                for _ in &positions {
                    if let Err(e) = fleet.add_worker(next_index) {
                        warn!(error = %e, "soak: replacement worker not started");
                        continue;
                    }
                    alive.push(fleet.workers().len() - 1);
                    next_index += 1;
                }
                churned += positions.len();
                rounds += 1;
                info!(round = rounds, replaced = positions.len(), "soak churn");
            }
        }
    };
    samples.push(take_sample(start, gateway, http, url).await);
    let trends = crate::soak::trends(&samples);
    let report = SoakReport {
        churned,
        rounds,
        sample_every_s: config.sample_every.as_secs_f64(),
        samples,
        trends,
    };
    (report, result)
}

async fn take_sample(
    start: Instant,
    gateway: &GatewayProc,
    http: &reqwest::Client,
    url: &str,
) -> Sample {
    let topo = match &gateway.dht {
        Some(h) => h.topology().await.ok(),
        None => None,
    };
    let view = worker_count(http, url).await;
    let (heap_allocated_mib, heap_resident_mib) = crate::soak::allocator_mib();
    let status = crate::soak::proc_status();
    Sample {
        t_s: start.elapsed().as_secs_f64(),
        rss_mib: status.rss_mib,
        rss_anon_mib: status.rss_anon_mib,
        heap_allocated_mib,
        heap_resident_mib,
        open_fds: crate::soak::open_fds(),
        threads: status.threads,
        // NaN (reported as null) when the gateway did not answer: not a view of 0.
        view_workers: view.map_or(f64::NAN, |v| v as f64),
        dht_records: topo.as_ref().map_or(0.0, |t| t.records_stored as f64),
        dht_providers: topo.as_ref().map_or(0.0, |t| t.providers_stored as f64),
        routing_table: topo.as_ref().map_or(0.0, |t| t.routing_table.len() as f64),
        dht_connections: topo.as_ref().map_or(0.0, |t| t.connections as f64),
    }
}

/// Requests served per GPU profile (from each mock service) against capacity shares.
async fn shares(http: &reqwest::Client, fleet: &Fleet) -> Vec<ProfileShare> {
    let mut by: BTreeMap<&'static str, (usize, f64, u64)> = BTreeMap::new();
    for w in fleet.workers() {
        let served = async {
            let r = http
                .get(format!("{}/admin/state", w.url))
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v.get("served")?.as_u64()
        }
        .await
        .unwrap_or(0);
        let e = by.entry(w.profile).or_default();
        e.0 += 1;
        e.1 += w.speed;
        e.2 += served;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_distinct_indices_and_sums_metrics() {
        let p = pick(100, 20, 7);
        let mut q = p.clone();
        q.sort_unstable();
        q.dedup();
        assert_eq!(q.len(), 20);
        assert!(p.iter().all(|&i| i < 100));
        let text =
            "# HELP x\ngpumesh_x_total{a=\"1\"} 3\ngpumesh_x_total{a=\"2\"} 4.5\ngpumesh_y 9\n";
        assert_eq!(metric_sum(text, "gpumesh_x_total"), 7.5);
    }

    #[test]
    fn refuses_a_fleet_beyond_the_open_files_limit() {
        assert!(check_fd_budget(500, 50, 1, Some(20_000)).is_ok());
        // 2000 workers fit in 20 000 with one idle connection each, not with eight.
        assert!(check_fd_budget(2000, 50, 1, Some(20_000)).is_ok());
        let err = check_fd_budget(2000, 50, 8, Some(20_000)).unwrap_err();
        assert!(err.to_string().contains("open files"), "{err}");
        assert!(check_fd_budget(4000, 50, 1, Some(20_000)).is_err());
        assert!(check_fd_budget(2000, 50, 8, None).is_ok());
        assert!(check_fd_budget(2000, 50, 8, Some(1 << 20)).is_ok());
    }
}
