//! The worker view the scheduler selects from: what a worker published about itself.
//!
//! The gateway builds a [`WorkerView`] from a worker's DHT record (or its coordinator
//! registration) and hands it to [`crate::Scheduler::upsert_worker`]. Fast-changing load
//! arrives separately through [`crate::Scheduler::update_load`].

use std::time::Duration;

/// Where a worker is in its life cycle, as it published it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Starting up (loading models); not yet given traffic.
    #[default]
    Joining,
    /// Serving.
    Online,
    /// Finishing its in-flight work before leaving; never given new traffic.
    Draining,
}

/// One GPU of a worker.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Gpu {
    /// Marketing name as NVML reports it, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub model: String,
    /// Total memory in MiB.
    pub vram_total_mib: u64,
    /// Free memory in MiB at publication time.
    pub vram_free_mib: u64,
    /// Compute utilisation, 0.0..=1.0.
    pub utilization: f32,
}

/// Load a worker published about itself, with the time it was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PublishedLoad {
    /// Requests being served (occupying a batch slot).
    pub in_flight: u32,
    /// Requests waiting in the worker's queue.
    pub queued: u32,
    /// Batch slots: how many requests it serves at once. 0 is read as 1.
    pub max_concurrency: u32,
    /// When the figures were measured, on the scheduler's clock (see [`crate::Scheduler`]).
    pub published_at: Duration,
}

impl PublishedLoad {
    /// Requests at the worker, serving or waiting.
    pub fn total(&self) -> u32 {
        self.in_flight.saturating_add(self.queued)
    }

    /// Batch slots, at least 1.
    pub fn slots(&self) -> u32 {
        self.max_concurrency.max(1)
    }
}

/// Everything the scheduler knows about a worker from its own publication.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkerView {
    /// Stable identifier; the gateway uses the libp2p peer id string.
    pub id: String,
    /// Services the worker serves, e.g. `"llm"`, `"ocr"`.
    pub services: Vec<String>,
    /// Its GPUs.
    pub gpus: Vec<Gpu>,
    /// Capability tags, e.g. `"fp8"`, `"llama-3-70b"`.
    pub tags: Vec<String>,
    /// Published load.
    pub load: PublishedLoad,
    /// Life-cycle state.
    pub state: WorkerState,
    /// `false` when the gateway's health checks or the worker itself say it cannot serve.
    pub healthy: bool,
    /// Throughput relative to one H100 (1.0). `None`: derived from the GPU models with
    /// [`crate::speed_factor`]. The simulator's oracles set the true value here.
    pub speed: Option<f64>,
}

impl WorkerView {
    /// A healthy, online worker with one GPU: the common case, mostly for tests and examples.
    pub fn online(id: impl Into<String>, service: impl Into<String>, gpu_model: &str) -> Self {
        Self {
            id: id.into(),
            services: vec![service.into()],
            gpus: vec![Gpu {
                model: gpu_model.to_owned(),
                vram_total_mib: 81_920,
                vram_free_mib: 81_920,
                utilization: 0.0,
            }],
            tags: Vec::new(),
            load: PublishedLoad {
                max_concurrency: 1,
                ..PublishedLoad::default()
            },
            state: WorkerState::Online,
            healthy: true,
            speed: None,
        }
    }

    /// Relative throughput: the published `speed`, else the fastest GPU's class factor.
    pub fn effective_speed(&self) -> f64 {
        match self.speed {
            Some(s) if s.is_finite() && s > 0.0 => s,
            _ => self
                .gpus
                .iter()
                .map(|g| crate::speed_factor(&g.model))
                .fold(0.0_f64, f64::max)
                .max(crate::gpu::UNKNOWN_SPEED),
        }
    }

    /// Largest free VRAM on a single GPU, in MiB (a model must fit on one GPU).
    pub fn max_free_vram_mib(&self) -> u64 {
        self.gpus.iter().map(|g| g.vram_free_mib).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_defaults_to_gpu_class_and_respects_override() {
        let mut w = WorkerView::online("a", "llm", "NVIDIA A100-SXM4-80GB");
        assert!((w.effective_speed() - 0.6).abs() < 1e-9);
        w.speed = Some(0.25);
        assert!((w.effective_speed() - 0.25).abs() < 1e-9);
        w.speed = Some(f64::NAN);
        assert!((w.effective_speed() - 0.6).abs() < 1e-9);
    }

    #[test]
    fn zero_max_concurrency_reads_as_one_slot() {
        assert_eq!(PublishedLoad::default().slots(), 1);
    }
}
