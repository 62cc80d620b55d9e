//! `gpumesh demo`: one process with a gateway (also the DHT seed) and a fleet of simulated
//! GPU workers, all on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use gpumesh_dht::Timings;
use gpumesh_gateway::Gateway;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::error::LoadtestError;
use crate::fleet::{Fleet, FleetConfig};
use crate::harness::{gateway_config, run_token};
use crate::observe::wait_for_bootstrap;

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
        crate::observe::wait_for_workers(&self.url(), n, limit)
            .await
            .map(|_| ())
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
