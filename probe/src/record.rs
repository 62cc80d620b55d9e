//! Building the worker record from a sample, and deciding when a change is worth publishing.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gpumesh_dht::record::{LoadInfo, WorkerRecord, WorkerState};

use crate::sampler::Sample;

/// Milliseconds since the Unix epoch; a seam so tests can fix time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// What the agent knows about itself apart from the sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// libp2p peer id (or the coordinator-mode worker id).
    pub peer_id: String,
    /// Services offered.
    pub services: Vec<String>,
    /// Capability tags.
    pub capabilities: Vec<String>,
}

/// Issues records with a monotonic `seq` and an expiry of `ttl` after issue.
pub struct RecordBuilder {
    identity: Identity,
    ttl: Duration,
    clock: Clock,
    started_at_ms: u64,
    last_seq: u64,
}

impl std::fmt::Debug for RecordBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBuilder")
            .field("identity", &self.identity)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl RecordBuilder {
    /// A builder; `ttl` is normally twice the refresh interval, so one lost refresh is harmless.
    pub fn new(identity: Identity, ttl: Duration, clock: Clock) -> Self {
        let started_at_ms = clock();
        Self {
            identity,
            ttl,
            clock,
            started_at_ms,
            last_seq: 0,
        }
    }

    /// The identity records are issued under.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Issues the next record. `seq` is the issue time in ms, bumped if the clock stood still
    /// or went back, so it stays monotonic across restarts too.
    pub fn build(
        &mut self,
        state: WorkerState,
        tunnel_url: &str,
        sample: &Sample,
        load: LoadInfo,
    ) -> WorkerRecord {
        let now = (self.clock)();
        self.last_seq = now.max(self.last_seq + 1);
        WorkerRecord {
            peer_id: self.identity.peer_id.clone(),
            seq: self.last_seq,
            issued_at_ms: now,
            expires_at_ms: now + self.ttl.as_millis() as u64,
            state,
            services: self.identity.services.clone(),
            capabilities: self.identity.capabilities.clone(),
            tunnel_url: tunnel_url.to_owned(),
            gpus: sample.gpus.clone(),
            host: sample.host.clone(),
            load,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at_ms: self.started_at_ms,
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

/// Whether `next` differs from the published `prev` enough to refresh the DHT record now rather
/// than at the next heartbeat: state, services, URL, the set of GPUs, or a GPU's free VRAM
/// moving by at least `vram_step_mib`. Utilisation and load are not material: they travel in
/// load heartbeats.
pub fn is_material_change(prev: &WorkerRecord, next: &WorkerRecord, vram_step_mib: u64) -> bool {
    prev.state != next.state
        || prev.services != next.services
        || prev.tunnel_url != next.tunnel_url
        || prev.load.max_concurrency != next.load.max_concurrency
        || prev.gpus.len() != next.gpus.len()
        || prev.gpus.iter().zip(&next.gpus).any(|(a, b)| {
            a.uuid != b.uuid || a.vram_free_mib.abs_diff(b.vram_free_mib) >= vram_step_mib
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpumesh_dht::record::{GpuInfo, HostInfo};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn sample(free: u64) -> Sample {
        Sample {
            gpus: vec![GpuInfo::new("m", "u", 10_000, free)],
            host: HostInfo::default(),
            gpu_error: None,
            took: Duration::ZERO,
        }
    }

    fn builder(now: Arc<AtomicU64>) -> RecordBuilder {
        let id = Identity {
            peer_id: "p".into(),
            services: vec!["ocr".into()],
            capabilities: vec![],
        };
        RecordBuilder::new(
            id,
            Duration::from_secs(60),
            Arc::new(move || now.load(Ordering::SeqCst)),
        )
    }

    #[test]
    fn seq_is_monotonic_even_when_the_clock_stalls_or_goes_back() {
        let now = Arc::new(AtomicU64::new(1_000));
        let mut b = builder(now.clone());
        let r1 = b.build(
            WorkerState::Online,
            "https://x",
            &sample(1),
            LoadInfo::default(),
        );
        let r2 = b.build(
            WorkerState::Online,
            "https://x",
            &sample(1),
            LoadInfo::default(),
        );
        now.store(500, Ordering::SeqCst);
        let r3 = b.build(
            WorkerState::Online,
            "https://x",
            &sample(1),
            LoadInfo::default(),
        );
        assert!(r1.seq < r2.seq && r2.seq < r3.seq);
        assert_eq!(r1.expires_at_ms, 61_000);
        assert_eq!(r1.started_at_ms, 1_000);
    }

    #[test]
    fn material_changes() {
        let now = Arc::new(AtomicU64::new(1_000));
        let mut b = builder(now);
        let load = LoadInfo::default();
        let base = b.build(WorkerState::Online, "https://x", &sample(5_000), load);
        let small = b.build(WorkerState::Online, "https://x", &sample(4_500), load);
        assert!(!is_material_change(&base, &small, 1024));
        let big = b.build(WorkerState::Online, "https://x", &sample(3_000), load);
        assert!(is_material_change(&base, &big, 1024));
        let drain = b.build(WorkerState::Draining, "https://x", &sample(5_000), load);
        assert!(is_material_change(&base, &drain, 1024));
        let busy = LoadInfo {
            in_flight: 9,
            ..load
        };
        let busier = b.build(WorkerState::Online, "https://x", &sample(5_000), busy);
        assert!(
            !is_material_change(&base, &busier, 1024),
            "load travels in heartbeats"
        );
    }
}
