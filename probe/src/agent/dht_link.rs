//! The DHT link: seeds (cache first, endpoint only when every cached seed fails), join,
//! publication and load heartbeats.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gpumesh_dht::config::Identity;
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::{DhtError, DhtHandle, LoadSample, NodeConfig, Role, Timings};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::bootstrap::{Bootstrapper, Seed};

/// Seeds fetched less than this long ago are not fetched again, however often they fail: the
/// endpoint is the one central call, and a DHT outage must not turn into a stream of calls.
const MIN_REFETCH: Duration = Duration::from_secs(600);

/// How long a withdrawn node stays up so that its leave gossip goes out.
const LEAVE_FLUSH: Duration = Duration::from_millis(500);

/// How the agent's DHT node is set up.
#[derive(Debug, Clone)]
pub(crate) struct DhtSettings {
    /// The node's identity key file (its peer id is the worker id).
    pub(crate) key_path: PathBuf,
    /// TCP port to listen on (0: dial out only).
    pub(crate) port: u16,
    /// Node timings.
    pub(crate) timings: Timings,
    /// How long a join waits for a seed connection.
    pub(crate) join_timeout: Duration,
    /// Parent of every node's shutdown token.
    pub(crate) shutdown: CancellationToken,
    /// The operator's admission token, carried in the node's records.
    pub(crate) admission: Option<gpumesh_dht::AdmissionToken>,
    /// The network's pre-shared key, when the DHT is private.
    pub(crate) network_key: Option<gpumesh_dht::PreSharedKey>,
}

/// The worker's standing in the DHT.
#[derive(Debug)]
pub(crate) struct DhtLink {
    settings: DhtSettings,
    node: Option<DhtHandle>,
    boot: Bootstrapper,
    seeds: Option<Vec<Seed>>,
    fetched_at: Option<Instant>,
    joined: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl DhtLink {
    pub(crate) fn new(boot: Bootstrapper, settings: DhtSettings) -> Self {
        Self {
            settings,
            node: None,
            boot,
            seeds: None,
            fetched_at: None,
            joined: false,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(300)),
            retry_at: None,
        }
    }

    pub(crate) fn bootstrap_calls(&self) -> u64 {
        self.boot.calls()
    }

    pub(crate) fn is_joined(&self) -> bool {
        self.joined
    }

    /// How long the node's records live (it stamps them with this TTL).
    pub(crate) fn record_ttl(&self) -> Duration {
        self.settings.timings.record_ttl
    }

    /// Joins if not joined and not backing off. Returns whether the node is joined.
    pub(crate) async fn ensure_joined(&mut self) -> bool {
        if self.joined && self.node.as_ref().is_some_and(|n| !n.is_stopped()) {
            return true;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        let cached = self.seeds.clone().or_else(|| self.boot.cached());
        let from_cache = cached.is_some();
        let seeds = match cached {
            Some(s) => s,
            None => match self.fetch().await {
                Some(s) => s,
                None => return self.failed("no seeds"),
            },
        };
        match self.try_join(&seeds).await {
            Ok(()) => return self.joined(seeds),
            Err(e) => warn!(error = %e, seeds = seeds.len(), "every known DHT seed failed"),
        }
        let recently_fetched = self.fetched_at.is_some_and(|t| t.elapsed() < MIN_REFETCH);
        if from_cache
            && !recently_fetched
            && let Some(fresh) = self.fetch().await
        {
            match self.try_join(&fresh).await {
                Ok(()) => return self.joined(fresh),
                Err(e) => warn!(error = %e, "freshly fetched DHT seeds failed too"),
            }
        }
        self.failed("join failed")
    }

    async fn fetch(&mut self) -> Option<Vec<Seed>> {
        match self.boot.fetch().await {
            Ok(s) => {
                self.fetched_at = Some(Instant::now());
                self.seeds = Some(s.clone());
                Some(s)
            }
            Err(e) => {
                warn!(error = %e, calls = self.boot.calls(), "bootstrap fetch failed");
                None
            }
        }
    }

    fn joined(&mut self, seeds: Vec<Seed>) -> bool {
        info!(
            seeds = seeds.len(),
            bootstrap_calls = self.boot.calls(),
            "joined the DHT"
        );
        self.seeds = Some(seeds);
        self.joined = true;
        self.backoff.reset();
        self.retry_at = None;
        true
    }

    fn failed(&mut self, why: &str) -> bool {
        let d = self.backoff.next_delay();
        warn!(why, retry_in = ?d, "DHT not joined");
        self.retry_at = Some(Instant::now() + d);
        false
    }

    /// Starts a node with these seeds and waits until it is connected to one of them.
    async fn try_join(&mut self, seeds: &[Seed]) -> Result<(), String> {
        let addrs: Vec<_> = seeds
            .iter()
            .flat_map(|s| s.multiaddrs.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        if addrs.is_empty() {
            return Err("no seed has a parseable multiaddr".into());
        }
        let mut nc = NodeConfig::new(Role::Worker { reachable: false });
        nc.identity = Identity::File(self.settings.key_path.clone());
        nc.seeds = addrs;
        nc.timings = self.settings.timings;
        nc.admission.token.clone_from(&self.settings.admission);
        nc.network_key = self.settings.network_key;
        if self.settings.port != 0 {
            let listen = format!("/ip4/0.0.0.0/tcp/{}", self.settings.port);
            nc.listen = vec![listen.parse().map_err(|e| format!("{listen}: {e}"))?];
        }
        let node = gpumesh_dht::spawn(nc, self.settings.shutdown.child_token())
            .map_err(|e| e.to_string())?;
        let wanted: HashSet<&str> = seeds.iter().map(|s| s.peer_id.as_str()).collect();
        let deadline = Instant::now() + self.settings.join_timeout;
        loop {
            if let Ok(t) = node.topology().await
                && t.connected_peers
                    .iter()
                    .any(|p| wanted.contains(p.to_base58().as_str()))
            {
                self.node = Some(node);
                return Ok(());
            }
            if Instant::now() >= deadline {
                node.shutdown().await;
                return Err(format!(
                    "no seed answered within {:?}",
                    self.settings.join_timeout
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drops the node after a failure so the next publication rejoins (cached seeds first).
    async fn lost(&mut self, e: &DhtError) {
        warn!(error = %e, "DHT operation failed; leaving the DHT until a rejoin succeeds");
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.joined = false;
    }

    /// Publishes the record (the node stamps and signs it, provides its services and keeps
    /// refreshing it).
    pub(crate) async fn publish(&mut self, record: &WorkerRecord) -> bool {
        let Some(node) = self.node.clone() else {
            self.joined = false;
            return false;
        };
        match node.publish_record(record.clone()).await {
            Ok(seq) => {
                debug!(seq, "record stored in the DHT");
                true
            }
            Err(e) => {
                self.lost(&e).await;
                false
            }
        }
    }

    /// A fast load heartbeat (signed gossip).
    pub(crate) async fn heartbeat(&mut self, record: &WorkerRecord) {
        let Some(node) = self.node.clone() else {
            return;
        };
        let utils: Vec<u32> = record
            .gpus
            .iter()
            .filter_map(|g| g.util_pct.map(u32::from))
            .collect();
        let sample = LoadSample {
            load: record.load,
            gpu_util_pct: (!utils.is_empty())
                .then(|| (utils.iter().sum::<u32>() / utils.len() as u32).min(100) as u8),
            vram_free_mib: (!record.gpus.is_empty())
                .then(|| record.gpus.iter().map(|g| g.vram_free_mib).sum()),
            state: None,
        };
        if let Err(e) = node.publish_load(sample).await {
            debug!(error = %e, "load heartbeat failed");
            if matches!(e, DhtError::Stopped) {
                self.lost(&e).await;
            }
        }
    }

    /// Withdraws the record and stops the node.
    pub(crate) async fn withdraw(&mut self) {
        if let Some(node) = self.node.take() {
            if let Err(e) = node.withdraw().await {
                warn!(error = %e, "DHT withdraw failed; the record will expire");
            }
            // The leave notice is queued gossip: give it a moment on the wire before the node
            // (and its connections) stop, or gateways only learn of the exit at record expiry.
            tokio::time::sleep(LEAVE_FLUSH).await;
            node.shutdown().await;
        }
        self.joined = false;
    }
}
