//! Building the worker record from a sample.
//!
//! The records built here are not stamped (`seq`, issue and expiry times are 0): whoever signs
//! one stamps it with the rulebook's [`gpumesh_dht::rules::Stamper`] (the DHT node, or the
//! registry link), and [`gpumesh_dht::rules::is_material_change`] decides when one is worth
//! publishing.

use std::sync::Arc;

use gpumesh_dht::record::{LoadInfo, WorkerRecord, WorkerState};
use gpumesh_dht::rules::{ServiceName, unix_ms};

use crate::sampler::Sample;

/// Milliseconds since the Unix epoch; a seam so tests can fix time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock: the rulebook's [`unix_ms`].
pub fn system_clock() -> Clock {
    Arc::new(unix_ms)
}

/// What the agent knows about itself apart from the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// libp2p peer id (or the coordinator-mode worker id).
    pub peer_id: String,
    /// Services offered.
    pub services: Vec<ServiceName>,
    /// Capability tags.
    pub capabilities: Vec<String>,
}

/// Builds this worker's records from its identity and each sample.
#[derive(Debug)]
pub struct RecordBuilder {
    identity: Identity,
    started_at_ms: u64,
}

impl RecordBuilder {
    /// A builder; `clock` tells the agent's start time, which every record carries.
    pub fn new(identity: Identity, clock: &Clock) -> Self {
        Self {
            identity,
            started_at_ms: clock(),
        }
    }

    /// The identity records are built under.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The record for this state, URL, sample and load, not yet stamped.
    pub fn build(
        &self,
        state: WorkerState,
        tunnel_url: &str,
        sample: &Sample,
        load: LoadInfo,
    ) -> WorkerRecord {
        WorkerRecord {
            peer_id: self.identity.peer_id.clone(),
            state,
            capabilities: self.identity.capabilities.clone(),
            gpus: sample.gpus.clone(),
            host: sample.host.clone(),
            load,
            started_at_ms: self.started_at_ms,
            ..WorkerRecord::new(self.identity.services.clone(), tunnel_url)
        }
    }
}

/// The state a worker can stand behind: `online` only with a usable URL, a healthy local
/// service and a working GPU probe; `draining` once shutdown has begun; `joining` otherwise.
pub fn worker_state(
    draining: bool,
    url_ready: bool,
    service_up: bool,
    gpu_ok: bool,
) -> WorkerState {
    if draining {
        WorkerState::Draining
    } else if url_ready && service_up && gpu_ok {
        WorkerState::Online
    } else {
        WorkerState::Joining
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpumesh_dht::record::{GpuInfo, HostInfo};
    use std::time::Duration;

    fn sample(free: u64) -> Sample {
        Sample {
            gpus: vec![GpuInfo::new("m", "u", 10_000, free)],
            host: HostInfo::default(),
            gpu_error: None,
            took: Duration::ZERO,
        }
    }

    #[test]
    fn records_carry_the_identity_and_start_time_and_are_left_unstamped() {
        let id = Identity {
            peer_id: "p".into(),
            services: vec!["ocr".parse().unwrap()],
            capabilities: vec!["fp8".into()],
        };
        let clock: Clock = Arc::new(|| 1_000);
        let b = RecordBuilder::new(id, &clock);
        let load = LoadInfo {
            max_concurrency: 3,
            ..LoadInfo::default()
        };
        let r = b.build(WorkerState::Online, "https://x", &sample(7), load);
        assert_eq!(r.peer_id, "p");
        assert_eq!(r.services, ["ocr"]);
        assert_eq!(r.capabilities, ["fp8"]);
        assert_eq!(r.tunnel_url, "https://x");
        assert_eq!(r.gpus[0].vram_free_mib, 7);
        assert_eq!(r.load.max_concurrency, 3);
        assert_eq!(r.started_at_ms, 1_000);
        assert_eq!((r.seq, r.issued_at_ms, r.expires_at_ms), (0, 0, 0));
    }

    #[test]
    fn online_needs_a_url_a_live_service_and_a_working_probe() {
        assert_eq!(worker_state(false, true, true, true), WorkerState::Online);
        assert_eq!(worker_state(false, false, true, true), WorkerState::Joining);
        assert_eq!(worker_state(false, true, false, true), WorkerState::Joining);
        assert_eq!(worker_state(false, true, true, false), WorkerState::Joining);
        assert_eq!(worker_state(true, true, true, true), WorkerState::Draining);
    }
}
