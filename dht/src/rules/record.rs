//! The worker record: what a worker publishes about itself into the DHT.
//!
//! These are the plain data types: the wire schema, part of the rulebook. Signing and encoding
//! live in [`crate::signed`]; the probe fills records in, the gateway reads them.

use serde::{Deserialize, Serialize};

use super::ServiceName;

/// Lifecycle state a worker announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Started, not yet taking traffic (e.g. the tunnel is not ready).
    Joining,
    /// Taking traffic.
    Online,
    /// Finishing in-flight work; takes no new requests.
    Draining,
}

/// One GPU as the probe measured it. Fields a card does not support are `None` ("unknown").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Marketing name, e.g. "NVIDIA H100 80GB HBM3".
    pub model: String,
    /// NVML uuid, e.g. "GPU-…".
    pub uuid: String,
    /// Total VRAM in MiB.
    pub vram_total_mib: u64,
    /// Free VRAM in MiB.
    pub vram_free_mib: u64,
    /// GPU utilisation, percent.
    pub util_pct: Option<u8>,
    /// Memory-controller utilisation, percent.
    pub mem_util_pct: Option<u8>,
    /// Core temperature, °C.
    pub temperature_c: Option<u16>,
    /// Power draw, watts.
    pub power_w: Option<f32>,
    /// Enforced power limit, watts.
    pub power_limit_w: Option<f32>,
}

impl GpuInfo {
    /// A GPU with its name, uuid and VRAM; every optional figure unknown (`None`).
    pub fn new(
        model: impl Into<String>,
        uuid: impl Into<String>,
        vram_total_mib: u64,
        vram_free_mib: u64,
    ) -> Self {
        Self {
            model: model.into(),
            uuid: uuid.into(),
            vram_total_mib,
            vram_free_mib,
            util_pct: None,
            mem_util_pct: None,
            temperature_c: None,
            power_w: None,
            power_limit_w: None,
        }
    }
}

/// Host figures (cgroup-aware where the platform allows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// CPU utilisation across all cores, percent.
    pub cpu_util_pct: f32,
    /// Logical CPUs available to the agent.
    pub cpus: u32,
    /// Memory limit (host total or cgroup limit), MiB.
    pub mem_total_mib: u64,
    /// Memory available, MiB.
    pub mem_available_mib: u64,
    /// One-minute load average, if the platform has one.
    pub load_avg_1m: Option<f32>,
}

/// Load as the worker's own service reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadInfo {
    /// Requests being processed now.
    pub in_flight: u32,
    /// Requests waiting for a slot.
    pub queue_depth: u32,
    /// Concurrency slots (batch size) the service runs at once.
    pub max_concurrency: u32,
}

/// The DHT value under `/gpumesh/v1/worker/<peer_id>`, before signing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// The worker's libp2p peer id (base58); must equal the envelope's signer.
    pub peer_id: String,
    /// Monotonic sequence number: the newest wins.
    pub seq: u64,
    /// When the worker signed this record, milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// After this instant the record must not be used, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Services offered, e.g. `["ocr", "embed"]` (each name valid by construction).
    pub services: Vec<ServiceName>,
    /// Optional capability tags, e.g. `["fp8", "llama-3-8b"]`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Public URL the gateway forwards to (normally the worker's tunnel URL).
    pub tunnel_url: String,
    /// Every GPU on the machine; empty for a CPU-only worker.
    pub gpus: Vec<GpuInfo>,
    /// Host figures.
    pub host: HostInfo,
    /// Service load when the record was issued.
    pub load: LoadInfo,
    /// `gpumesh` version of the agent.
    pub agent_version: String,
    /// When the agent started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl WorkerRecord {
    /// A record with the given services and URL, state `Online`, no GPUs, zero load. Whoever
    /// signs it fills in `peer_id` and stamps `seq`, `issued_at_ms` and `expires_at_ms`
    /// ([`crate::rules::Stamper`]): the DHT node when it publishes, the agent's registry link
    /// when it registers.
    pub fn new(services: Vec<ServiceName>, tunnel_url: impl Into<String>) -> Self {
        Self {
            peer_id: String::new(),
            seq: 0,
            issued_at_ms: 0,
            expires_at_ms: 0,
            state: WorkerState::Online,
            services,
            capabilities: Vec::new(),
            tunnel_url: tunnel_url.into(),
            gpus: Vec::new(),
            host: HostInfo::default(),
            load: LoadInfo::default(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: 0,
        }
    }
}
