//! The load test's harness: the gateway in a process of its own (its own runtime, restartable),
//! runtimes for each part, fleet timings, and the open-files budget checked before a run.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gpumesh_dht::{DhtHandle, Timings};
use gpumesh_gateway::{AttemptLogs, Config, Gateway, RunError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::LoadtestError;

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
pub(crate) fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Refuses a run that would run out of file descriptors mid-way (the failure otherwise shows
/// up as transport errors in the middle of the run). Each worker: [`FDS_PER_WORKER`] plus
/// both ends of `idle_per_worker` pooled connections; each user: its connection to the
/// gateway and one request in flight to a worker (both ends of each).
pub(crate) fn check_fd_budget(
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
pub(crate) const CLIENT_THREADS: usize = 2;

/// A gateway that can be stopped and started again on the same HTTP and DHT addresses with
/// the same DHT identity (so the workers' cached seed stays valid). It runs on its own
/// runtime ([`OwnRuntime`]).
pub(crate) struct GatewayProc {
    config: Config,
    stop: CancellationToken,
    task: JoinHandle<Result<(), RunError>>,
    /// Its attempt logs (the chaos figures, kept for workers that have left).
    pub(crate) attempt_logs: AttemptLogs,
    /// Its DHT node (store and routing-table sizes for `soak`).
    pub(crate) dht: Option<DhtHandle>,
    /// Declared last: dropped after the task handle.
    _runtime: OwnRuntime,
}

type Started = (SocketAddr, AttemptLogs, Option<DhtHandle>);

impl GatewayProc {
    /// Binds and serves `config` on a runtime of its own; returns it and its HTTP address.
    pub(crate) async fn start(config: Config) -> Result<(Self, SocketAddr), LoadtestError> {
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
                        let _ = tx.send(Ok((addr, gw.attempt_logs(), gw.dht().cloned())));
                        gw.serve(stop).await
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        Ok(())
                    }
                }
            }
        });
        let (addr, attempt_logs, dht) = rx.await.map_err(|_| {
            LoadtestError::Http("the gateway task ended before it started".into())
        })??;
        let mut config = config;
        config.listen = addr;
        let proc = Self {
            config,
            stop,
            task,
            attempt_logs,
            dht,
            _runtime: runtime,
        };
        Ok((proc, addr))
    }

    /// Stops the gateway and waits for it.
    pub(crate) async fn stop(mut self) {
        self.halt().await;
    }

    /// Stops the gateway and starts it again on the same addresses and identity; returns
    /// when the new one began starting (the stop's own time is not the restart's).
    pub(crate) async fn restart(&mut self) -> Result<Instant, LoadtestError> {
        self.halt().await;
        let began = Instant::now();
        // Replacing `self` drops the old runtime (its task is over).
        *self = Self::start(self.config.clone()).await?.0;
        Ok(began)
    }

    async fn halt(&mut self) {
        self.stop.cancel();
        match (&mut self.task).await {
            Ok(Err(e)) => warn!(error = %e, "gateway stopped with an error"),
            Err(e) => warn!(error = %e, "gateway task failed"),
            Ok(Ok(())) => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
