//! What sources tell the directory: one update type, tagged with its provenance.
//!
//! Sources ([`crate::sources`]) only add, refresh and remove; the directory alone decides what
//! the table holds (linkerd's pool updates, iroh's discovery items with provenance).

use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerRecord, WorkerState};

/// Where a worker's record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A signed record from the DHT.
    Dht,
    /// The HTTP fallback registry (`POST /api/workers/register`).
    Registry,
}

impl Source {
    /// `dht` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dht => "dht",
            Source::Registry => "registry",
        }
    }
}

/// Fresh figures for a worker a source already holds (a gossip load heartbeat, a registry
/// heartbeat). `None` leaves a field as it was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Refresh {
    /// Published load.
    pub load: Option<LoadInfo>,
    /// Lifecycle state.
    pub state: Option<WorkerState>,
    /// GPUs (registry heartbeats may carry them).
    pub gpus: Option<Vec<GpuInfo>>,
    /// When the worker measured these figures, ms since the Unix epoch.
    pub at_ms: u64,
    /// A new lease end, ms since the Unix epoch (registry heartbeats).
    pub lease_until_ms: Option<u64>,
}

/// One update from a source.
#[derive(Debug, Clone)]
pub enum Change {
    /// A worker joined or published a newer record. `lease_until_ms` (ms since the Unix
    /// epoch) bounds the entry's life when the source grants a lease (the registry); `None`:
    /// the entry lives until the source removes it (the DHT view expires its own records).
    Upsert {
        /// The record.
        record: Box<WorkerRecord>,
        /// Its provenance.
        source: Source,
        /// The lease end, if the source grants one.
        lease_until_ms: Option<u64>,
    },
    /// Fresh figures for a worker this source owns.
    Refresh {
        /// Worker id.
        id: String,
        /// Its provenance.
        source: Source,
        /// The figures.
        refresh: Refresh,
    },
    /// A worker left this source (withdrew, expired, or went silent).
    Remove {
        /// Worker id.
        id: String,
        /// Its provenance.
        source: Source,
    },
}
