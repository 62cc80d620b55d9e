//! Host figures through `sysinfo`: CPU utilisation, memory and load average, cgroup-aware.

use gpumesh_dht::record::HostInfo;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use crate::error::ProbeError;

const MIB: u64 = 1024 * 1024;

/// One `System` kept for the life of the agent: CPU usage is a difference between refreshes,
/// so the first reading after start is meaningless (see [`HostProbe::warm_up`]).
#[derive(Debug)]
pub struct HostProbe {
    sys: System,
}

impl HostProbe {
    /// Builds the probe (only CPU usage and RAM are refreshed, nothing else).
    pub fn new() -> Result<Self, ProbeError> {
        let kind = RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing().with_usage())
            .with_memory(MemoryRefreshKind::nothing().with_ram());
        let sys = System::new_with_specifics(kind).map_err(|e| ProbeError::Host(e.to_string()))?;
        Ok(Self { sys })
    }

    /// Takes the two CPU readings that a meaningful utilisation needs (blocks for
    /// `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`, 200 ms on Linux).
    pub fn warm_up(&mut self) {
        self.sys.refresh_cpu_usage();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        self.sys.refresh_cpu_usage();
    }

    /// Measures the host now.
    ///
    /// cgroup-aware: the CPU count is the parallelism the process may use (it honours CPU
    /// quotas and affinity), and memory is capped by the cgroup limit when there is one. CPU
    /// utilisation is the host-wide figure.
    pub fn sample(&mut self) -> HostInfo {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let mut total = self.sys.total_memory();
        let mut available = self.sys.available_memory();
        if let Some(limits) = self.sys.cgroup_limits()
            && limits.total_memory > 0
            && limits.total_memory < total
        {
            total = limits.total_memory;
            available = available.min(limits.free_memory);
        }
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or_else(|_| self.sys.cpus().len() as u32);
        let cpu = self.sys.global_cpu_usage();
        HostInfo {
            cpu_util_pct: if cpu.is_finite() {
                cpu.clamp(0.0, 100.0)
            } else {
                0.0
            },
            cpus,
            mem_total_mib: total / MIB,
            mem_available_mib: available / MIB,
            load_avg_1m: System::load_average()
                .ok()
                .map(|l| l.one as f32)
                .filter(|l| l.is_finite()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sample_is_in_range() {
        let mut p = HostProbe::new().unwrap();
        p.warm_up();
        let h = p.sample();
        assert!((0.0..=100.0).contains(&h.cpu_util_pct));
        assert!(h.cpus >= 1);
        assert!(h.mem_total_mib > 0);
        assert!(h.mem_available_mib <= h.mem_total_mib);
        if let Some(l) = h.load_avg_1m {
            assert!(l >= 0.0);
        }
    }
}
