//! The JSON shapes of the gateway's HTTP API.
//!
//! Plain serde structs, kept simple and stable: the agent (probe crate) and frontends read them.
//! Field names are snake_case; times are milliseconds (`_ms`) or seconds (`_secs`).

use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerState};
pub use gpumesh_dht::wire::{BootstrapResponse, HeartbeatRequest, RegisterResponse, Seed};
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
    /// When this gateway last routed a request to the worker (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_ms: Option<u64>,
    /// When a request to the worker first failed (ms since the Unix epoch), if one did.
    /// With `last_attempt_ms` it shows how quickly a failing worker stopped getting traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure_ms: Option<u64>,
    /// Failed requests to the worker through this gateway.
    #[serde(default)]
    pub failures: u64,
    /// Seconds until this gateway's ejection of the worker ends (consecutive failures or a
    /// refused connection), while it is ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejected_for_s: Option<f64>,
    /// How far this gateway trusts the worker's answers, and what that makes of its traffic.
    #[serde(default)]
    pub trust: TrustView,
}

/// A worker's trust as `GET /api/workers` shows it (docs/trust.md explains the numbers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrustView {
    /// 0 (no trust) to 1 (full trust); scales the worker's share of traffic.
    pub score: f64,
    /// Checks passed (canaries and cross-checks).
    pub verified: u32,
    /// Checks failed (wrong answers, disagreements, missed deadlines).
    pub failed: u32,
    /// Below the trust floor: no real traffic until a canary passes.
    pub distrusted: bool,
    /// The last reason the gateway gave its trust (`canary failed: …`), if any.
    pub reason: Option<String>,
    /// The weight it is sampled with now (learned capacity × trust × slow start).
    pub weight: f64,
    /// Concurrent requests the gateway has seen it serve (not what its record claims).
    pub slots_learned: u32,
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
    /// For workers: the gateway's trust in its answers, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<f64>,
    /// For workers: below the trust floor (no real traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distrusted: Option<bool>,
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
