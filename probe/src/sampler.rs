//! The sampler: GPU source plus host probe, run off the async runtime.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gpumesh_dht::record::{GpuInfo, HostInfo};
use tracing::warn;

use crate::error::ProbeError;
use crate::gpu::GpuSource;
use crate::host::HostProbe;

/// One measurement of the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every GPU (the last good list if this sample's GPU read failed).
    pub gpus: Vec<GpuInfo>,
    /// Host figures.
    pub host: HostInfo,
    /// Why the GPU read failed, if it did.
    pub gpu_error: Option<String>,
    /// How long the sample took.
    pub took: Duration,
}

/// Measures the machine. Cheap to clone; every clone shares the same NVML handle and `System`.
#[derive(Debug, Clone)]
pub struct Sampler {
    gpus: Arc<dyn GpuSource>,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    host: HostProbe,
    last_gpus: Vec<GpuInfo>,
}

impl Sampler {
    /// Builds a sampler over a GPU source.
    pub fn new(gpus: Arc<dyn GpuSource>) -> Result<Self, ProbeError> {
        Ok(Self {
            gpus,
            inner: Arc::new(Mutex::new(Inner {
                host: HostProbe::new()?,
                last_gpus: Vec::new(),
            })),
        })
    }

    /// The GPU source's name (`nvml`, `fake:a100`, `none`).
    pub fn source_kind(&self) -> String {
        self.gpus.kind()
    }

    /// Takes the two CPU readings a meaningful utilisation needs. Blocking (about 200 ms).
    pub fn warm_up_blocking(&self) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .host
            .warm_up();
    }

    /// Measures now, on the calling thread. Blocking: calls into NVML.
    pub fn sample_blocking(&self) -> Sample {
        let start = Instant::now();
        let gpu = self.gpus.sample();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let host = inner.host.sample();
        let (gpus, gpu_error) = match gpu {
            Ok(g) => {
                inner.last_gpus.clone_from(&g);
                (g, None)
            }
            Err(e) => {
                warn!(error = %e, "GPU probe failed; keeping the last good figures");
                (inner.last_gpus.clone(), Some(e.to_string()))
            }
        };
        Sample {
            gpus,
            host,
            gpu_error,
            took: start.elapsed(),
        }
    }

    /// Measures now, on tokio's blocking pool so that FFI never stalls the runtime.
    pub async fn sample(&self) -> Sample {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.sample_blocking()).await {
            Ok(s) => s,
            Err(e) => Sample {
                gpus: Vec::new(),
                host: HostInfo::default(),
                gpu_error: Some(format!("probe task failed: {e}")),
                took: Duration::ZERO,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::FakeGpus;

    #[derive(Debug)]
    struct Broken;
    impl GpuSource for Broken {
        fn kind(&self) -> String {
            "broken".into()
        }
        fn sample(&self) -> Result<Vec<GpuInfo>, ProbeError> {
            Err(ProbeError::Nvml("GPU is lost".into()))
        }
    }

    #[tokio::test]
    async fn sample_runs_off_the_runtime_and_reports_gpus() {
        let s = Sampler::new(Arc::new(FakeGpus::from_profile("h100x2", 1).unwrap())).unwrap();
        let sample = s.sample().await;
        assert_eq!(sample.gpus.len(), 2);
        assert!(sample.gpu_error.is_none());
    }

    #[tokio::test]
    async fn gpu_errors_are_reported_not_raised() {
        let s = Sampler::new(Arc::new(Broken)).unwrap();
        let sample = s.sample().await;
        assert!(sample.gpus.is_empty());
        assert!(sample.gpu_error.unwrap().contains("lost"));
    }
}
