//! Real GPUs through NVML (`nvml-wrapper`, loaded at run time: no link-time driver dependency).

use gpumesh_dht::record::GpuInfo;
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use tracing::{debug, warn};

use super::GpuSource;
use crate::error::ProbeError;

const MIB: u64 = 1024 * 1024;

/// NVML, initialised once for the life of the agent (init loads every symbol and is slow).
///
/// `Device<'nvml>` borrows the library handle, so devices are looked up again on every sample
/// and never stored.
pub struct NvmlSource {
    nvml: Nvml,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource").finish_non_exhaustive()
    }
}

impl NvmlSource {
    /// Loads `libnvidia-ml.so.1` and initialises NVML. Fails (without panicking) when the
    /// library or the driver is missing.
    pub fn init() -> Result<Self, ProbeError> {
        Nvml::init()
            .map(|nvml| Self { nvml })
            .map_err(|e| ProbeError::NvmlUnavailable(e.to_string()))
    }
}

/// An optional field: `NotSupported` is "unknown"; other errors are logged and also unknown,
/// so one odd sensor never hides the rest of the card.
fn optional<T>(field: &str, index: u32, r: Result<T, NvmlError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(NvmlError::NotSupported) => None,
        Err(e) => {
            debug!(gpu = index, field, error = %e, "NVML field unavailable");
            None
        }
    }
}

impl GpuSource for NvmlSource {
    fn kind(&self) -> String {
        "nvml".to_owned()
    }

    fn sample(&self) -> Result<Vec<GpuInfo>, ProbeError> {
        let count = self
            .nvml
            .device_count()
            .map_err(|e| ProbeError::Nvml(e.to_string()))?;
        let mut out = Vec::with_capacity(count as usize);
        for index in 0..count {
            // device_count includes devices we may not be allowed to open: skip those.
            let dev = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    warn!(gpu = index, error = %e, "cannot open GPU; skipping it");
                    continue;
                }
            };
            let mem = match dev.memory_info() {
                Ok(m) => m,
                Err(e) => {
                    warn!(gpu = index, error = %e, "cannot read GPU memory; skipping it");
                    continue;
                }
            };
            let util = optional("utilization", index, dev.utilization_rates());
            out.push(GpuInfo {
                model: optional("name", index, dev.name()).unwrap_or_else(|| "unknown".into()),
                uuid: optional("uuid", index, dev.uuid())
                    .unwrap_or_else(|| format!("index-{index}")),
                vram_total_mib: mem.total / MIB,
                vram_free_mib: mem.free / MIB,
                util_pct: util.as_ref().map(|u| u.gpu.min(100) as u8),
                mem_util_pct: util.as_ref().map(|u| u.memory.min(100) as u8),
                temperature_c: optional(
                    "temperature",
                    index,
                    dev.temperature(TemperatureSensor::Gpu),
                )
                .map(|t| t.min(u32::from(u16::MAX)) as u16),
                power_w: optional("power", index, dev.power_usage()).map(|mw| mw as f32 / 1000.0),
                power_limit_w: optional("power_limit", index, dev.enforced_power_limit())
                    .map(|mw| mw as f32 / 1000.0),
            });
        }
        Ok(out)
    }
}
