//! The cloneable handle through which everyone else drives a node.
//!
//! Commands go over a bounded channel to the task that owns the Swarm and come back on oneshot
//! channels; every call has a deadline, so a wedged node surfaces as [`DhtError::Timeout`].

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    DhtError,
    metrics::DhtMetrics,
    record::{LoadInfo, WorkerRecord, WorkerState},
    registry::{RegistryEvent, RegistryView, WorkerEntry},
    signed::SignedRecord,
};

/// Load figures for a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadSample {
    /// Service load.
    pub load: LoadInfo,
    /// Mean GPU utilisation, percent.
    pub gpu_util_pct: Option<u8>,
    /// Free VRAM over all GPUs, MiB.
    pub vram_free_mib: Option<u64>,
    /// New lifecycle state, if it changed (also re-publishes the record).
    pub state: Option<WorkerState>,
}

/// What the node is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// This node.
    pub peer_id: PeerId,
    /// True when kad runs in server mode.
    pub server: bool,
    /// Addresses listened on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub connected_peers: Vec<PeerId>,
    /// Open connections.
    pub connections: usize,
    /// Peers in the routing table.
    pub routing_table: Vec<PeerId>,
    /// Records in the local store.
    pub records_stored: usize,
    /// Provider records in the local store (service index entries held for others).
    pub providers_stored: usize,
    /// Peers subscribed to the load topic that we know of.
    pub gossip_peers: usize,
    /// Workers in the registry view.
    pub registry_workers: usize,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, DhtError>>;

/// Commands to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    PublishRecord(WorkerRecord, Reply<u64>),
    Withdraw(Reply<()>),
    Provide(String, Reply<()>),
    Unprovide(String, Reply<()>),
    FindWorkers(String, Reply<Vec<WorkerEntry>>),
    GetRecord(PeerId, Reply<Option<SignedRecord>>),
    PublishLoad(LoadSample, Reply<()>),
    Topology(Reply<Topology>),
    Dial(Multiaddr, Reply<()>),
    Disconnect(PeerId, Reply<()>),
    PutRaw(libp2p::kad::RecordKey, Vec<u8>, Reply<()>),
    ImportRecords(Vec<Vec<u8>>, Reply<ImportSummary>),
}

/// What [`DhtHandle::import_records`] did with the envelopes it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Verified and new (or newer than the view's copy): now in the registry view.
    pub imported: usize,
    /// Verified but not newer than what the view holds.
    pub unchanged: usize,
    /// Refused: bad signature, malformed, oversized, expired, schema.
    pub rejected: usize,
}

/// A cheap, cloneable handle to a running node.
#[derive(Debug, Clone)]
pub struct DhtHandle {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) peer_id: PeerId,
    pub(crate) registry: RegistryView,
    pub(crate) metrics: DhtMetrics,
    pub(crate) cancel: CancellationToken,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) deadline: Duration,
}

impl DhtHandle {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| DhtError::Stopped)?;
        match tokio::time::timeout(self.deadline, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(DhtError::Stopped),
            Err(_) => Err(DhtError::Timeout),
        }
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The registry view (read it freely; it never waits on the network).
    pub fn registry(&self) -> &RegistryView {
        &self.registry
    }

    /// Registry changes from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RegistryEvent> {
        self.registry.subscribe()
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &DhtMetrics {
        &self.metrics
    }

    /// Signs and publishes this worker's record (the node sets `peer_id`, `seq`, `issued_at_ms`,
    /// `expires_at_ms`), provides its services, announces it over gossip, and keeps refreshing
    /// it every `refresh_interval` until [`withdraw`](Self::withdraw). Returns the `seq` once a
    /// DHT server acknowledged the put.
    pub async fn publish_record(&self, record: WorkerRecord) -> Result<u64, DhtError> {
        self.call(|r| Command::PublishRecord(record, r)).await
    }

    /// Stops refreshing and providing, removes the local copy and gossips a leave notice.
    /// Remote DHT copies expire within the record TTL.
    pub async fn withdraw(&self) -> Result<(), DhtError> {
        self.call(Command::Withdraw).await
    }

    /// Announces this node as a provider of `service` (its shard of the service index).
    pub async fn provide(&self, service: &str) -> Result<(), DhtError> {
        self.call(|r| Command::Provide(service.to_owned(), r)).await
    }

    /// Stops announcing `service` (remote provider records expire within the TTL).
    pub async fn unprovide(&self, service: &str) -> Result<(), DhtError> {
        self.call(|r| Command::Unprovide(service.to_owned(), r))
            .await
    }

    /// Enumerates every shard of `service`'s index, fetches records of providers not yet known,
    /// and returns the registry's workers for `service`.
    pub async fn find_workers(&self, service: &str) -> Result<Vec<WorkerEntry>, DhtError> {
        self.call(|r| Command::FindWorkers(service.to_owned(), r))
            .await
    }

    /// Looks up a worker's record in the DHT (the newest valid one found before the deadline).
    pub async fn get_record(&self, peer: PeerId) -> Result<Option<SignedRecord>, DhtError> {
        self.call(|r| Command::GetRecord(peer, r)).await
    }

    /// Sends a load heartbeat now (the node also repeats the last one every heartbeat interval).
    pub async fn publish_load(&self, sample: LoadSample) -> Result<(), DhtError> {
        self.call(|r| Command::PublishLoad(sample, r)).await
    }

    /// Peers, connections, routing table and store sizes.
    pub async fn topology(&self) -> Result<Topology, DhtError> {
        self.call(Command::Topology).await
    }

    /// Dials an address (e.g. a seed learned later).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), DhtError> {
        self.call(|r| Command::Dial(addr, r)).await
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), DhtError> {
        self.call(|r| Command::Disconnect(peer, r)).await
    }

    /// Puts `value` under `key` as-is, unsigned and unchecked: for tests and tools that probe how
    /// other nodes validate what they receive. Never used by the node itself.
    pub async fn put_raw_record(
        &self,
        key: libp2p::kad::RecordKey,
        value: Vec<u8>,
    ) -> Result<(), DhtError> {
        self.call(|r| Command::PutRaw(key, value, r)).await
    }

    /// Verifies signed record envelopes (e.g. a gateway's saved view) exactly as records from
    /// the network are verified (signature, signer = record peer id, size, times, schema) and
    /// merges the valid ones into the registry view (newest `seq` wins). A stale or tampered
    /// file therefore cannot inject anything: expired records are refused, and a forged one
    /// fails its signature.
    pub async fn import_records(&self, envelopes: Vec<Vec<u8>>) -> Result<ImportSummary, DhtError> {
        self.call(|r| Command::ImportRecords(envelopes, r)).await
    }

    /// Stops the node and waits until its task has ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let mut stopped = self.stopped.clone();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// True once the node's task has ended.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }
}
