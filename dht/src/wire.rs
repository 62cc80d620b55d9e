//! The HTTP wire shapes that agents and gateways share: the bootstrap seed list and the
//! coordinator fallback registry.
//!
//! They live here, the one crate both sides depend on, so that the gateway (which serves them)
//! and the agent (which calls them) cannot drift apart. Field names are snake_case; times are
//! milliseconds (`_ms`) or seconds (`_secs`).

use serde::{Deserialize, Serialize};

use crate::record::{GpuInfo, LoadInfo, WorkerState};

/// One DHT seed in `GET /api/dht/bootstrap`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    /// libp2p peer id (base58).
    pub peer_id: String,
    /// Dialable multiaddrs, each ending in `/p2p/<peer_id>`.
    pub multiaddrs: Vec<String>,
    /// `gateway` (the serving gateway's own node) or `seed` (a configured stable node).
    #[serde(default)]
    pub role: String,
}

/// `GET /api/dht/bootstrap` → 200, sent with `Cache-Control: public, max-age=<ttl_secs>`.
///
/// ```json
/// {"seeds":[{"peer_id":"12D3Koo…","multiaddrs":["/ip4/203.0.113.7/tcp/4001/p2p/12D3Koo…"],
///   "role":"gateway"}],"ttl_secs":3600,"count":1}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResponse {
    /// Seeds to dial; may be empty when the gateway runs without a DHT.
    pub seeds: Vec<Seed>,
    /// How long a client may cache this list, in seconds (agents keep using a cached list past
    /// that while its seeds still answer: a seed that answers is a good seed).
    #[serde(default)]
    pub ttl_secs: u64,
    /// `seeds.len()`.
    #[serde(default)]
    pub count: usize,
}

/// `POST /api/workers/register` takes a [`crate::WorkerRecord`] as its JSON body
/// (`Authorization: Bearer <token>`); register and heartbeat answer 200 with this.
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
/// An empty body is a plain keep-alive. 404 `unknown_worker` means the entry expired: register
/// again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// New lifecycle state (e.g. `draining`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<WorkerState>,
    /// Fresh service load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadInfo>,
    /// Fresh GPU figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Vec<GpuInfo>>,
}
