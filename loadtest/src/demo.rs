//! `gpumesh demo`: one process with a gateway (also the DHT seed) and a fleet of simulated
//! GPU workers, all on loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gpumesh_dht::Timings;
use gpumesh_gateway::{Config, Gateway};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::LoadtestError;
use crate::fleet::{Fleet, FleetConfig};

/// Options of a demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The gateway's HTTP address (loopback; port 0 picks one).
    pub listen: SocketAddr,
    /// Number of simulated workers.
    pub workers: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 8,
        }
    }
}

/// Largest fleet a demo starts.
pub const MAX_DEMO_WORKERS: usize = 2000;

impl DemoConfig {
    /// Checks the options (before any socket opens).
    ///
    /// # Errors
    /// [`LoadtestError::Usage`] naming the bad option.
    pub fn validate(&self) -> Result<(), LoadtestError> {
        if !self.listen.ip().is_loopback() {
            return Err(LoadtestError::Usage(format!(
                "--listen {}: the demo listens on loopback only",
                self.listen
            )));
        }
        if self.workers == 0 || self.workers > MAX_DEMO_WORKERS {
            return Err(LoadtestError::Usage(format!(
                "--workers must be 1 to {MAX_DEMO_WORKERS}"
            )));
        }
        Ok(())
    }
}

/// A gateway configuration for an in-process loopback fleet: DHT seed on loopback with
/// `timings`, private (loopback) upstreams allowed, the registry open to `token`, and rate
/// limits high enough for hundreds of agents sharing one client IP.
pub fn gateway_config(listen: SocketAddr, timings: Timings, token: &str) -> Config {
    Config {
        listen,
        dht_enabled: true,
        dht_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dht_timings: Some(timings),
        registry_token: Some(token.to_owned()),
        registry_ttl: Duration::from_secs(10),
        allow_private_upstreams: true,
        connect_timeout: Duration::from_secs(1),
        upstream_timeout: Duration::from_secs(30),
        bootstrap_rate_per_min: 1_000_000,
        registry_rate_per_min: 1_000_000,
        bootstrap_ttl: Duration::from_secs(300),
        ..Config::default()
    }
}

/// A per-run registry token (loopback only; not a secret worth more than that).
pub fn run_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("demo-{}-{nanos:x}", std::process::id())
}

/// A running demo.
#[derive(Debug)]
pub struct Demo {
    addr: SocketAddr,
    stop_gateway: CancellationToken,
    gateway: JoinHandle<Result<(), gpumesh_gateway::RunError>>,
    fleet: Fleet,
}

impl Demo {
    /// Starts the gateway, waits until its DHT node listens, then starts the workers.
    ///
    /// # Errors
    /// Bad options, a port in use, or a gateway whose DHT node does not come up.
    pub async fn start(config: DemoConfig) -> Result<Self, LoadtestError> {
        config.validate()?;
        let token = run_token();
        let gw = Gateway::bind(gateway_config(config.listen, Timings::fast(), &token)).await?;
        let addr = gw.local_addr()?;
        let stop_gateway = CancellationToken::new();
        let gateway = tokio::spawn(gw.serve(stop_gateway.clone()));
        let url = format!("http://{addr}");
        wait_for_bootstrap(&url, Duration::from_secs(20)).await?;
        let fleet = Fleet::start(FleetConfig::new(config.workers, &url, &token)).await?;
        info!(%addr, workers = config.workers, "demo started");
        Ok(Self {
            addr,
            stop_gateway,
            gateway,
            fleet,
        })
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The gateway's base URL (the topology page is at `/`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.fleet
    }

    /// Waits until the gateway lists at least `n` workers, or `limit` passes.
    ///
    /// # Errors
    /// [`LoadtestError::Timeout`] with the count reached.
    pub async fn wait_for_workers(&self, n: usize, limit: Duration) -> Result<(), LoadtestError> {
        wait_for_workers(&self.url(), n, limit).await.map(|_| ())
    }

    /// Drains the workers, then stops the gateway.
    ///
    /// # Errors
    /// The gateway failed while serving.
    pub async fn shutdown(self) -> Result<(), LoadtestError> {
        self.fleet.shutdown().await;
        self.stop_gateway.cancel();
        match self.gateway.await {
            Ok(r) => r.map_err(LoadtestError::from),
            Err(e) => Err(LoadtestError::Io(std::io::Error::other(e))),
        }
    }
}

/// The sample `curl` the demo prints.
pub fn sample_curl(url: &str) -> String {
    format!(
        "curl -s -X POST {url}/api/service/ocr/run -H 'content-type: application/json' -d '{{\"image\":\"hello\"}}'"
    )
}

fn client() -> Result<reqwest::Client, LoadtestError> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LoadtestError::Http(e.to_string()))
}

/// Waits until `GET /api/dht/bootstrap` lists at least one seed.
///
/// # Errors
/// [`LoadtestError::Timeout`] when the gateway cannot be reached or lists no seed.
pub async fn wait_for_bootstrap(url: &str, limit: Duration) -> Result<(), LoadtestError> {
    let http = client()?;
    let deadline = Instant::now() + limit;
    loop {
        let count = async {
            let r = http
                .get(format!("{url}/api/dht/bootstrap"))
                .send()
                .await
                .ok()?;
            let v: serde_json::Value = r.json().await.ok()?;
            v.get("count")?.as_u64()
        }
        .await;
        if count.is_some_and(|c| c > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadtestError::Timeout(format!(
                "{url}/api/dht/bootstrap listed no seed within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many workers the gateway's view holds (`GET /healthz`'s `workers`, the count
/// `/api/workers` lists, without serialising every worker: at 2000 workers that listing is
/// megabytes per poll), `None` when the gateway cannot be reached.
pub async fn worker_count(http: &reqwest::Client, url: &str) -> Option<usize> {
    let r = http.get(format!("{url}/healthz")).send().await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v.get("workers")?.as_u64().map(|c| c as usize)
}

/// Waits until the gateway lists at least `n` workers; returns how long it took.
///
/// # Errors
/// [`LoadtestError::Timeout`] with the count reached.
pub async fn wait_for_workers(
    url: &str,
    n: usize,
    limit: Duration,
) -> Result<Duration, LoadtestError> {
    let http = client()?;
    let start = Instant::now();
    let mut seen = 0;
    loop {
        seen = worker_count(&http, url).await.unwrap_or(seen);
        if seen >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(LoadtestError::Timeout(format!(
                "{seen} of {n} workers visible at {url} after {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
