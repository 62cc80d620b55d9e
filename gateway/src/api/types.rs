//! The JSON shapes of the gateway's HTTP API.
//!
//! Plain serde structs, kept simple and stable: the agent (probe crate) and frontends read them.
//! Field names are snake_case; times are milliseconds (`_ms`) or seconds (`_secs`).

use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerState};
use serde::{Deserialize, Serialize};

/// Every error response: `{"code": "...", "message": "...", "fault": "client|worker|gateway"}`
/// plus context fields when they apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `no_eligible_worker`.
    pub code: String,
    /// A sentence for a person.
    pub message: String,
    /// Whose fault: `client`, `worker` or `gateway`.
    pub fault: String,
    /// The service concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The worker concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why no worker was eligible (from the scheduler's filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One DHT seed in `GET /api/dht/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Dialable multiaddrs, each ending in `/p2p/<peer_id>`.
    pub multiaddrs: Vec<String>,
    /// `gateway` (this gateway's own node) or `seed` (a configured stable node).
    pub role: String,
}

/// `GET /api/dht/bootstrap` → 200. Also sent with `Cache-Control: public, max-age=<ttl_secs>`.
///
/// ```json
/// {"seeds":[{"peer_id":"12D3Koo…","multiaddrs":["/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo…"],
///   "role":"gateway"}],"ttl_secs":3600,"count":1}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResponse {
    /// Seeds to dial; may be empty when the gateway runs without a DHT.
    pub seeds: Vec<Seed>,
    /// How long a client may cache this list, in seconds.
    pub ttl_secs: u64,
    /// `seeds.len()`.
    pub count: usize,
}

/// `POST /api/workers/register` takes a [`gpumesh_dht::record::WorkerRecord`] as its JSON body
/// (`Authorization: Bearer <token>`), and answers 200 with this.
///
/// ```json
/// {"worker_id":"12D3Koo…","ttl_secs":90,"heartbeat_interval_secs":30,"expires_at_ms":1764000000000}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The id the worker is known by (its record's `peer_id`).
    pub worker_id: String,
    /// How long the entry lives without a heartbeat, in seconds.
    pub ttl_secs: u64,
    /// The suggested heartbeat period (a third of the TTL), in seconds.
    pub heartbeat_interval_secs: u64,
    /// When the entry expires unless refreshed, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// Optional JSON body of `POST /api/workers/{id}/heartbeat`; absent fields keep their values.
/// An empty body is a plain keep-alive. Answers 200 with a [`RegisterResponse`], or 404
/// `unknown_worker` when the entry has expired (register again).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// New lifecycle state (e.g. `draining`).
    #[serde(default)]
    pub state: Option<WorkerState>,
    /// Fresh service load.
    #[serde(default)]
    pub load: Option<LoadInfo>,
    /// Fresh GPU figures.
    #[serde(default)]
    pub gpus: Option<Vec<GpuInfo>>,
}

/// One GPU as shown by `GET /api/route/{service}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuSummary {
    /// Marketing name.
    pub model: String,
    /// Total VRAM in MiB.
    pub vram_total_mib: u64,
    /// Free VRAM in MiB.
    pub vram_free_mib: u64,
}

/// `GET /api/route/{service}` → 200: the worker a request would go to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResponse {
    /// The worker's id (libp2p peer id).
    pub worker_id: String,
    /// Its tunnel URL: call `{url}/{path}` directly.
    pub url: String,
    /// `dht` or `registry`.
    pub source: String,
    /// Its GPUs.
    pub gpus: Vec<GpuSummary>,
}

/// One worker in `GET /api/workers` and `GET /api/workers/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    /// The worker's id (libp2p peer id).
    pub id: String,
    /// `dht` or `registry`.
    pub source: String,
    /// Announced lifecycle state.
    pub state: WorkerState,
    /// Services offered.
    pub services: Vec<String>,
    /// Tunnel URL.
    pub tunnel_url: String,
    /// Record sequence number.
    pub seq: u64,
    /// Milliseconds since the gateway last received this worker's record or heartbeat.
    pub record_age_ms: u64,
    /// Requests this gateway has in flight to the worker.
    pub in_flight: u32,
    /// GPUs as published.
    pub gpus: Vec<GpuInfo>,
    /// Load as published.
    pub load: LoadInfo,
    /// Agent version.
    pub agent_version: String,
}

/// `GET /api/workers` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkersResponse {
    /// Workers, sorted by id.
    pub workers: Vec<WorkerView>,
    /// `workers.len()`.
    pub count: usize,
}

/// A node of `GET /api/dht/topology`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyNode {
    /// Peer id.
    pub id: String,
    /// `gateway`, `seed` or `worker`.
    pub role: String,
    /// For workers: `joining`, `online`, `draining`; for others `online`.
    pub state: String,
    /// For workers: `dht` or `registry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// For workers: the first GPU's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// For workers: published in-flight plus queue over max concurrency (0 when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
}

/// An edge of `GET /api/dht/topology`: a DHT connection between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyEdge {
    /// One end (peer id).
    pub from: String,
    /// The other end (peer id).
    pub to: String,
}

/// `GET /api/dht/topology` → 200.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyResponse {
    /// Gateways, seeds and workers.
    pub nodes: Vec<TopologyNode>,
    /// Known DHT connections.
    pub edges: Vec<TopologyEdge>,
}

/// `GET /healthz` and `GET /readyz` → 200 (or 503 `not_ready` for `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `ok` or `ready`.
    pub status: String,
    /// Workers in the view.
    pub workers: usize,
    /// Whether a DHT node runs in this gateway.
    pub dht_enabled: bool,
}
