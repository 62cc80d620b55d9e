//! The `GpuSource` seam: where GPU figures come from.
//!
//! Three sources: [`NvmlSource`] (real cards, through `nvml-wrapper`), [`FakeGpus`] (built-in
//! profiles or a TOML file, for demos and tests) and [`NoGpus`] (a CPU-only worker). Sources are
//! synchronous; the [`crate::sampler::Sampler`] calls them off the async runtime.

mod fake;
mod nvml;

use std::fmt;
use std::sync::Arc;

use gpumesh_dht::record::GpuInfo;
use tracing::warn;

pub use fake::{FakeGpus, PROFILES, profile_speed};
pub use nvml::NvmlSource;

use crate::error::ProbeError;

/// Something that can measure the machine's GPUs.
pub trait GpuSource: Send + Sync + fmt::Debug {
    /// A short name for logs: `nvml`, `fake:<profile>`, `none`.
    fn kind(&self) -> String;
    /// Measures every device now. Blocking: may call into a C library.
    fn sample(&self) -> Result<Vec<GpuInfo>, ProbeError>;
}

/// A CPU-only worker: no GPUs, never an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoGpus;

impl GpuSource for NoGpus {
    fn kind(&self) -> String {
        "none".to_owned()
    }
    fn sample(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        Ok(Vec::new())
    }
}

/// Which GPU source the agent should use (`--gpu`, `--gpu-profile`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GpuChoice {
    /// NVML when it loads, otherwise no GPUs (with a log line saying why).
    #[default]
    Auto,
    /// A fake source: a built-in profile name or a path to a TOML file.
    Profile(String),
    /// No GPUs: a CPU-only worker.
    None,
}

impl GpuChoice {
    /// Opens the source. A bad profile is an error (bad configuration); a missing NVML library
    /// or driver is not: it is logged and the worker runs CPU-only.
    ///
    /// `seed` makes fake uuids distinct between simulated workers.
    pub fn open(&self, seed: u64) -> Result<Arc<dyn GpuSource>, ProbeError> {
        match self {
            GpuChoice::None => Ok(Arc::new(NoGpus)),
            GpuChoice::Profile(p) => Ok(Arc::new(FakeGpus::from_profile(p, seed)?)),
            GpuChoice::Auto => match NvmlSource::init() {
                Ok(src) => Ok(Arc::new(src)),
                Err(e) => {
                    warn!(error = %e, "no NVIDIA GPU probe; running as a CPU-only worker");
                    Ok(Arc::new(NoGpus))
                }
            },
        }
    }
}
