//! A fleet of real agents in one process: fake GPUs of mixed classes, mock GPU services, real
//! DHT nodes, all on loopback.
//!
//! Each worker is a mock GPU service with a real agent next to it, as a volunteer runs the
//! agent beside an inference server: the agent health-checks the mock, and the mock posts its
//! load to the agent's load endpoint. Both ports are picked before the agent starts (the agent
//! needs its public URL in its configuration, the mock its agent's report URL). Chaos is
//! applied by switching the mock's [`Fault`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use gpumesh_dht::Timings;
use gpumesh_probe::agent::AgentReport;
use gpumesh_probe::gpu::{GpuChoice, profile_speed};
use gpumesh_probe::tunnel::{Secret, TunnelConfig};
use gpumesh_probe::{AgentConfig, AgentError};
use gpumesh_testkit::{Fault, MockService, MockServiceConfig};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::LoadtestError;
use crate::liars::{CLAIMED_PROFILE, CLAIMED_SLOTS, LiarGroup, TRUE_PROFILE};

/// GPU classes handed out round-robin.
pub const PROFILES: [&str; 4] = ["h100x2", "a100", "rtx3090", "t4"];

/// Services every fleet worker offers (`llm` only on every other worker).
pub const SERVICES: [&str; 3] = ["ocr", "embed", "llm"];

/// How to build a fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Number of workers.
    pub workers: usize,
    /// The gateway's base URL (`http://127.0.0.1:P`).
    pub gateway_url: String,
    /// Whether agents use the DHT; `false` is coordinator-only (registry heartbeats).
    pub dht_enabled: bool,
    /// The gateway's registry token (fallback, or the only path when the DHT is off).
    pub registry_token: String,
    /// DHT timings of every agent.
    pub timings: Timings,
    /// Record refresh period.
    pub refresh_every: Duration,
    /// Load heartbeat and probe period.
    pub load_every: Duration,
    /// Mock service time of an empty request on an A100, ms.
    pub base_ms: f64,
    /// Mock concurrency slots per worker.
    pub slots: u32,
    /// How long a worker drains at shutdown.
    pub drain_grace: Duration,
    /// Where worker state directories go (removed by [`Fleet::shutdown`]).
    pub state_root: PathBuf,
    /// Workers started per second by [`Fleet::start`]; `None`: all at once.
    pub start_rate: Option<f64>,
}

impl FleetConfig {
    /// How long a stopped agent gets to drain and exit before it is given up on.
    fn stop_limit(&self) -> Duration {
        self.drain_grace + Duration::from_secs(10)
    }

    /// Demo-speed defaults for `workers` agents of the gateway at `gateway_url`.
    pub fn new(workers: usize, gateway_url: &str, registry_token: &str) -> Self {
        Self {
            workers,
            gateway_url: gateway_url.trim_end_matches('/').to_owned(),
            dht_enabled: true,
            registry_token: registry_token.to_owned(),
            timings: Timings::fast(),
            refresh_every: Duration::from_secs(2),
            load_every: Duration::from_millis(500),
            base_ms: 20.0,
            slots: 4,
            drain_grace: Duration::from_secs(2),
            state_root: unique_temp_dir("gpumesh-fleet"),
            start_rate: None,
        }
    }
}

/// A fresh directory name under the system temp dir.
pub fn unique_temp_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()))
}

/// One running worker.
#[derive(Debug)]
pub struct FleetWorker {
    /// Position in the fleet.
    pub index: usize,
    /// Worker id (base58 peer id).
    pub id: String,
    /// GPU profile.
    pub profile: &'static str,
    /// Capacity relative to one A100 (speed × slots share).
    pub speed: f64,
    /// The mock service's URL (also the worker's public URL).
    pub url: String,
    /// `liars`: the group of a lying worker; `None` for an honest one.
    pub liar: Option<LiarGroup>,
    /// The worker's service; `None` once the worker is killed.
    service: Option<MockService>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<AgentReport, AgentError>>>,
}

/// A fleet of running agents.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    workers: Vec<FleetWorker>,
    /// Killed workers' agents, being reaped in the background (see [`Fleet::kill`]).
    reapers: JoinSet<Option<AgentReport>>,
    /// Reports of reaped agents.
    reaped: Vec<AgentReport>,
}

/// Next candidate for a mock service port.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A free loopback port below the Linux ephemeral range (32768+), so that a port picked
/// here is not handed out meanwhile to one of the fleet's many port-0 sockets.
fn free_port() -> Result<u16, LoadtestError> {
    const LOW: u32 = 12_000;
    const SPAN: u32 = 20_000;
    let _ = NEXT_PORT.compare_exchange(
        0,
        (std::process::id() % 97) * 200,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = LOW + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(port).unwrap_or(u16::MAX);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(LoadtestError::Io(std::io::Error::other(
        "no free loopback port",
    )))
}

impl Fleet {
    /// Starts `config.workers` agents (they join in the background), at most
    /// `config.start_rate` per second.
    ///
    /// # Errors
    /// A worker whose configuration is refused, or a local I/O problem.
    pub async fn start(config: FleetConfig) -> Result<Self, LoadtestError> {
        let mut fleet = Self {
            config,
            workers: Vec::new(),
            reapers: JoinSet::new(),
            reaped: Vec::new(),
        };
        let began = tokio::time::Instant::now();
        for i in 0..fleet.config.workers {
            fleet.add_worker(i).await?;
            if (i + 1).is_multiple_of(50) {
                match fleet.config.start_rate.filter(|r| *r > 0.0) {
                    Some(rate) => {
                        let due = began + Duration::from_secs_f64((i + 1) as f64 / rate);
                        tokio::time::sleep_until(due).await;
                    }
                    None => tokio::task::yield_now().await,
                }
            }
        }
        Ok(fleet)
    }

    /// The agent configuration of worker `index` whose mock service listens on `port` and
    /// whose load endpoint listens on `report_port`.
    pub fn agent_config(&self, index: usize, port: u16, report_port: u16) -> AgentConfig {
        let c = &self.config;
        let profile = PROFILES[index % PROFILES.len()];
        let count = if index.is_multiple_of(2) { 3 } else { 2 };
        let services = SERVICES[..count]
            .iter()
            .map(|s| s.parse().expect("SERVICES are valid names"))
            .collect();
        AgentConfig {
            services,
            gpu: GpuChoice::Profile(profile.to_owned()),
            fake_seed: index as u64 + 1,
            tunnel: TunnelConfig::PublicUrl(format!("http://127.0.0.1:{port}")),
            upstream: format!("http://127.0.0.1:{port}"),
            report_listen: std::net::SocketAddr::from(([127, 0, 0, 1], report_port)),
            max_concurrency: c.slots,
            dht_enabled: c.dht_enabled,
            dht_timings: Some(c.timings),
            bootstrap_url: Some(format!("{}/api/dht/bootstrap", c.gateway_url)),
            registry_url: Some(c.gateway_url.clone()),
            registry_token: Some(Secret::new(c.registry_token.clone())),
            state_dir: c.state_root.join(format!("w{index}")),
            refresh_every: c.refresh_every,
            load_every: c.load_every,
            probe_every: c.load_every.max(Duration::from_millis(500)),
            drain_grace: c.drain_grace,
            ..AgentConfig::default()
        }
    }

    /// The mock service of worker `index`, listening on `port` and reporting its load to its
    /// agent at `report_port`.
    fn service_config(&self, index: usize, port: u16, report_port: u16) -> MockServiceConfig {
        let c = &self.config;
        let profile = PROFILES[index % PROFILES.len()];
        MockServiceConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            slots: c.slots,
            speed: profile_speed(profile).unwrap_or(1.0),
            base_ms: c.base_ms,
            per_kib_ms: 0.1,
            max_queue: 256,
            report_url: Some(format!("http://127.0.0.1:{report_port}/load")),
            report_every: c.load_every,
            claim_slots: None,
        }
    }

    /// Starts one more worker with position `index` (its service, then its agent); returns
    /// its id.
    ///
    /// # Errors
    /// An invalid configuration, a port that cannot be bound, or a state directory that
    /// cannot be written.
    pub async fn add_worker(&mut self, index: usize) -> Result<String, LoadtestError> {
        self.add(index, None).await
    }

    /// Starts one lying worker of `group` with position `index`: its agent claims
    /// [`CLAIMED_PROFILE`] and [`CLAIMED_SLOTS`], its service reports those slots and behaves
    /// as the group does (see [`crate::liars`]).
    ///
    /// # Errors
    /// As [`Fleet::add_worker`].
    pub async fn add_liar(
        &mut self,
        index: usize,
        group: LiarGroup,
    ) -> Result<String, LoadtestError> {
        self.add(index, Some(group)).await
    }

    async fn add(
        &mut self,
        index: usize,
        liar: Option<LiarGroup>,
    ) -> Result<String, LoadtestError> {
        let (port, report_port) = (free_port()?, free_port()?);
        let mut cfg = self.agent_config(index, port, report_port);
        let mut service_cfg = self.service_config(index, port, report_port);
        let mut profile = PROFILES[index % PROFILES.len()];
        if liar.is_some() {
            cfg.gpu = GpuChoice::Profile(CLAIMED_PROFILE.to_owned());
            cfg.max_concurrency = CLAIMED_SLOTS;
            service_cfg.claim_slots = Some(CLAIMED_SLOTS);
            service_cfg.speed = profile_speed(TRUE_PROFILE).unwrap_or(1.0);
            profile = TRUE_PROFILE;
        }
        cfg.validate()?;
        let id = gpumesh_probe::agent::worker_id(&cfg.state_dir)?;
        let service = MockService::spawn(service_cfg).await?;
        if let Some(group) = liar {
            service.set_fault(group.fault()).await?;
        }
        let stop = CancellationToken::new();
        let task = tokio::spawn(gpumesh_probe::run(cfg, stop.clone()));
        self.workers.push(FleetWorker {
            index,
            id: id.clone(),
            profile,
            speed: profile_speed(profile).unwrap_or(1.0),
            url: service.url(),
            liar,
            service: Some(service),
            stop,
            task: Some(task),
        });
        Ok(id)
    }

    /// Work requests received so far by worker `index`'s service, answered or not (0 once it
    /// is killed).
    pub fn received(&self, index: usize) -> u64 {
        self.workers[index]
            .service
            .as_ref()
            .map_or(0, |s| s.state().received)
    }

    /// Requests served so far by worker `index`'s service (0 once it is killed).
    pub fn served(&self, index: usize) -> u64 {
        self.workers[index]
            .service
            .as_ref()
            .map_or(0, |s| s.state().served)
    }

    /// The running workers.
    pub fn workers(&self) -> &[FleetWorker] {
        &self.workers
    }

    /// Puts worker `index`'s mock service into a failure mode ([`Fault::Slow`] for a slow
    /// worker, [`Fault::None`] to heal it).
    ///
    /// # Errors
    /// The worker was killed, or its service could not listen again after a crash.
    pub async fn set_fault(&self, index: usize, fault: Fault) -> Result<(), LoadtestError> {
        let w = &self.workers[index];
        let service = w
            .service
            .as_ref()
            .ok_or_else(|| LoadtestError::Usage(format!("worker {index} ({}) was killed", w.id)))?;
        service.set_fault(fault).await?;
        Ok(())
    }

    /// Kills worker `index`: its service crashes at once (the listener closes, in-flight
    /// requests fail, as when a volunteer's machine dies) and its agent is told to stop.
    /// The gateway learns of the death from failed requests first, not from the agent.
    pub async fn kill(&mut self, index: usize) {
        let w = &mut self.workers[index];
        if let Some(service) = w.service.take() {
            if let Err(e) = service.set_fault(Fault::Crash).await {
                warn!(error = %e, "crash fault not applied");
            }
            // Dropping the handle frees the crashed service; a soak kills hundreds.
            drop(service);
        }
        w.stop.cancel();
        // Reap the stopping agent in the background. A finished task keeps its whole cell (the
        // agent's future, about 13 KB) until its JoinHandle is awaited or dropped, and a soak
        // kills hundreds of workers: holding the handles grew the heap ~7 MiB/h. Only the
        // report is kept.
        if let Some(task) = w.task.take() {
            let limit = self.config.stop_limit();
            let id = w.id.clone();
            self.reapers
                .spawn(async move { join(task, limit, &id).await });
        }
        // Collect the reapers that are done, so that they do not pile up either.
        while let Some(done) = self.reapers.try_join_next() {
            self.reaped.extend(done.ok().flatten());
        }
    }

    /// Stops every worker (drains them) and removes their state directories.
    pub async fn shutdown(mut self) -> Vec<AgentReport> {
        for w in &self.workers {
            w.stop.cancel();
        }
        let limit = self.config.stop_limit();
        let mut reports = Vec::new();
        for w in &mut self.workers {
            if let Some(task) = w.task.take()
                && let Some(report) = join(task, limit, &w.id).await
            {
                reports.push(report);
            }
            // The service outlives its agent's drain, as a real one would.
            w.service = None;
        }
        while let Some(done) = self.reapers.join_next().await {
            self.reaped.extend(done.ok().flatten());
        }
        reports.append(&mut self.reaped);
        let _ = std::fs::remove_dir_all(&self.config.state_root);
        reports
    }
}

/// Waits up to `limit` for an agent task; its report, or `None` (logged).
async fn join(
    task: JoinHandle<Result<AgentReport, AgentError>>,
    limit: Duration,
    id: &str,
) -> Option<AgentReport> {
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(Ok(report))) => Some(report),
        Ok(Ok(Err(e))) => {
            warn!(worker = %id, error = %e, "agent failed");
            None
        }
        Ok(Err(e)) => {
            warn!(worker = %id, error = %e, "agent task failed");
            None
        }
        Err(_) => {
            warn!(worker = %id, "agent did not stop in time");
            None
        }
    }
}
