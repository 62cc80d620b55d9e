//! The DHT source: the gateway's DHT node, its view turned into [`Change`]s for the directory,
//! the view saved and reloaded across restarts ([`view_file`]), and the status snapshot
//! handlers read (identity, addresses, connections, warmth).
//!
//! The node (gpumesh-dht) verifies every record it accepts: signature, signer equal to the
//! record's peer id, size, times, schema. Only those verified records reach the gateway, as
//! [`RegistryEvent`]s; the directory then applies the upstream policy on top. A subscriber that
//! lags re-reads the whole view, so no change is lost for good.
//!
//! The node's view owns each DHT worker's lease: it extends it when a gossip heartbeat vouches
//! for a record with the same content, and emits `Left` when it ends. The directory therefore
//! keeps no expiry of its own for DHT workers (a gateway that hears a worker only by gossip
//! would otherwise drop it once its last stored record's `expires_at_ms` passed).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use gpumesh_dht::registry::WorkerEntry;
use gpumesh_dht::{DhtHandle, NodeConfig, RegistryEvent, Role};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Change, Refresh, Source};
use crate::config::Config;
use crate::directory::Directory;
use crate::error::RunError;

pub mod view_file;

/// A snapshot of the DHT node, as handlers need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhtSnapshot {
    /// This node's peer id, once the node runs.
    pub peer_id: Option<String>,
    /// Addresses it listens on (multiaddrs, without `/p2p/`).
    pub listen_addrs: Vec<String>,
    /// Peers it is connected to now.
    pub connected: Vec<String>,
    /// Whether the node has joined the network (or is the first seed and listens).
    pub warm: bool,
}

/// Shared, read-mostly DHT status.
#[derive(Debug, Default)]
pub struct DhtStatus {
    enabled: bool,
    snapshot: RwLock<DhtSnapshot>,
}

impl DhtStatus {
    /// Status of a gateway with (`enabled`) or without a DHT node.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            snapshot: RwLock::default(),
        }
    }

    /// Whether a DHT node runs in this gateway.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> DhtSnapshot {
        self.snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the snapshot.
    pub fn set(&self, snapshot: DhtSnapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

/// The DHT node configuration for a gateway.
///
/// # Errors
/// [`RunError::Dht`] for an unparsable address (normally caught by `Config::validate`).
pub fn node_config(config: &Config) -> Result<NodeConfig, RunError> {
    let mut nc = NodeConfig::new(Role::Gateway);
    let ip = match config.dht_listen.ip() {
        std::net::IpAddr::V4(v4) => Protocol::Ip4(v4),
        std::net::IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    nc.listen = vec![
        Multiaddr::empty()
            .with(ip)
            .with(Protocol::Tcp(config.dht_listen.port())),
    ];
    let parse = |s: &String| {
        s.parse::<Multiaddr>()
            .map_err(|e| RunError::Dht(format!("`{s}`: {e}")))
    };
    nc.seeds = config.seeds.iter().map(parse).collect::<Result<_, _>>()?;
    nc.external = config
        .dht_external_addrs
        .iter()
        .map(parse)
        .collect::<Result<_, _>>()?;
    if let Some(path) = &config.dht_identity_file {
        nc.identity = gpumesh_dht::config::Identity::File(path.clone());
    }
    if let Some(path) = &config.dht_network_key_file {
        nc.network_key = Some(
            gpumesh_dht::identity::load_network_key(path)
                .map_err(|e| RunError::Dht(e.to_string()))?,
        );
    }
    nc.admission
        .trusted
        .clone_from(&config.dht_admission_operators);
    if let Some(sizing) = config.dht_sizing {
        nc.sizing = sizing;
    }
    if let Some(timings) = config.dht_timings {
        nc.timings = timings;
    }
    Ok(nc)
}

/// Starts the node, registering its metrics into `registry` (one `/metrics` for both). With
/// `config.dht_view_file`, the saved view is reloaded (verified again) before this returns,
/// so that the gateway serves with it from its first request; the trust states saved with it
/// are returned for the directory. The gateway keeps the file saved with [`view_file::keep`].
///
/// # Errors
/// [`RunError::Dht`] when the node cannot start (bad key file, port taken).
pub async fn start(
    config: &Config,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<(DhtHandle, view_file::SavedTrust), RunError> {
    let nc = node_config(config)?;
    nc.metrics.register(registry);
    let handle = gpumesh_dht::spawn(nc, shutdown).map_err(|e| RunError::Dht(e.to_string()))?;
    let mut trust = Vec::new();
    if let Some(path) = &config.dht_view_file {
        match view_file::load(&handle, path).await {
            Ok(saved) => trust = saved,
            Err(e) => warn!(error = %e, "saved worker view ignored"),
        }
    }
    Ok((handle, trust))
}

fn upsert(entry: WorkerEntry) -> Change {
    Change::Upsert {
        record: Box::new(entry.record),
        source: Source::Dht,
        lease_until_ms: None,
    }
}

/// Loads the node's whole view into the directory and drops DHT entries it no longer has.
pub(crate) fn resync(handle: &DhtHandle, directory: &Directory) {
    let now = Instant::now();
    let workers = handle.registry().workers();
    let present: HashSet<String> = workers.iter().map(|w| w.record.peer_id.clone()).collect();
    for w in workers {
        let _ = directory.apply(upsert(w), now);
    }
    for id in directory.ids_from(Source::Dht) {
        if !present.contains(&id) {
            let _ = directory.apply(
                Change::Remove {
                    id,
                    source: Source::Dht,
                },
                now,
            );
        }
    }
}

fn apply(directory: &Directory, event: RegistryEvent) {
    let now = Instant::now();
    let event = match event {
        RegistryEvent::Joined(entry) | RegistryEvent::Updated(entry) => upsert(entry),
        RegistryEvent::Load { peer_id, heartbeat } => Change::Refresh {
            id: peer_id.to_base58(),
            source: Source::Dht,
            refresh: Refresh {
                load: Some(heartbeat.load),
                state: Some(heartbeat.state),
                at_ms: heartbeat.at_ms,
                ..Refresh::default()
            },
        },
        RegistryEvent::Left { peer_id, reason } => {
            debug!(worker = %peer_id, ?reason, "worker left the DHT view");
            Change::Remove {
                id: peer_id.to_base58(),
                source: Source::Dht,
            }
        }
    };
    // Refusals are counted and logged by the directory; a heartbeat for a worker the table
    // does not hold (its record was refused) is ignored.
    let _ = directory.apply(event, now);
}

/// Feeds the node's registry view into the directory and refreshes `status`, until shutdown.
pub async fn feed(
    handle: DhtHandle,
    directory: Arc<Directory>,
    status: Arc<DhtStatus>,
    has_seeds: bool,
    shutdown: CancellationToken,
) {
    let mut events = handle.subscribe();
    resync(&handle, &directory);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Ok(event) => apply(&directory, event),
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "DHT registry events lagged; re-reading the view");
                    resync(&handle, &directory);
                }
                Err(RecvError::Closed) => {
                    info!("DHT node stopped");
                    return;
                }
            },
            _ = tick.tick() => refresh_status(&handle, &status, has_seeds).await,
        }
    }
}

async fn refresh_status(handle: &DhtHandle, status: &DhtStatus, has_seeds: bool) {
    match handle.topology().await {
        Ok(topo) => {
            let listening = !topo.listen_addrs.is_empty();
            // The first seed of a network is warm once it listens; others once they have peers.
            let warm = listening && (!has_seeds || !topo.routing_table.is_empty());
            status.set(DhtSnapshot {
                peer_id: Some(topo.peer_id.to_base58()),
                listen_addrs: topo.listen_addrs.iter().map(ToString::to_string).collect(),
                connected: topo.connected_peers.iter().map(|p| p.to_base58()).collect(),
                warm,
            });
        }
        Err(e) => debug!(error = %e, "DHT topology unavailable"),
    }
}
