//! When a record changed enough to be published again now rather than at the next refresh.
//!
//! The agent asks this before it re-publishes; the DHT node asks it before it re-announces a
//! record over gossip (and bumps the content seq its heartbeats carry). One rule, so that what
//! the agent publishes as a change the node announces as one.

use super::record::{GpuInfo, WorkerRecord};

/// The free-VRAM move that counts as material unless the operator sets another (the agent's
/// `--vram-step-mib`). The DHT node, which does not see that flag, uses this one.
pub const DEFAULT_VRAM_STEP_MIB: u64 = 1024;

/// Whether `next` differs from the published `prev` in anything a gateway routes on: state,
/// services, capabilities, URL, agent version, concurrency slots, the set of GPUs (uuid, model
/// and total VRAM, in order), or a GPU's free VRAM moving by at least `vram_step_mib`.
///
/// Not material: `seq` and times, load, host figures and GPU utilisation. They change all the
/// time and travel in load heartbeats.
pub fn is_material_change(prev: &WorkerRecord, next: &WorkerRecord, vram_step_mib: u64) -> bool {
    let same_gpu = |a: &GpuInfo, b: &GpuInfo| {
        a.uuid == b.uuid
            && a.model == b.model
            && a.vram_total_mib == b.vram_total_mib
            && a.vram_free_mib.abs_diff(b.vram_free_mib) < vram_step_mib
    };
    prev.state != next.state
        || prev.services != next.services
        || prev.capabilities != next.capabilities
        || prev.tunnel_url != next.tunnel_url
        || prev.agent_version != next.agent_version
        || prev.load.max_concurrency != next.load.max_concurrency
        || prev.gpus.len() != next.gpus.len()
        || !prev
            .gpus
            .iter()
            .zip(&next.gpus)
            .all(|(a, b)| same_gpu(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::WorkerState;

    const STEP: u64 = 1024;

    fn record(free: u64) -> WorkerRecord {
        let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
        r.gpus = vec![GpuInfo::new("H100", "GPU-1", 80_000, free)];
        r.load.max_concurrency = 4;
        r
    }

    fn material(f: impl FnOnce(&mut WorkerRecord)) -> bool {
        let base = record(40_000);
        let mut next = base.clone();
        f(&mut next);
        is_material_change(&base, &next, STEP)
    }

    #[test]
    fn fast_figures_are_not_material() {
        assert!(!material(|_| {}));
        assert!(!material(|r| {
            r.seq = 99;
            r.issued_at_ms = 5;
            r.expires_at_ms = 6;
        }));
        assert!(!material(|r| r.load.in_flight = 9));
        assert!(!material(|r| r.load.queue_depth = 9));
        assert!(!material(|r| r.host.cpu_util_pct = 99.0));
        assert!(!material(|r| r.gpus[0].util_pct = Some(100)));
        assert!(!material(|r| r.gpus[0].vram_free_mib -= STEP - 1));
    }

    #[test]
    fn what_gateways_route_on_is_material() {
        assert!(material(|r| r.state = WorkerState::Draining));
        assert!(material(|r| r.services.push("embed".parse().unwrap())));
        assert!(material(|r| r.capabilities.push("fp8".into())));
        assert!(material(|r| r.tunnel_url = "https://v.example.org".into()));
        assert!(material(|r| r.agent_version = "9.9.9".into()));
        assert!(material(|r| r.load.max_concurrency = 8));
    }

    #[test]
    fn the_gpu_set_and_large_vram_moves_are_material() {
        assert!(material(|r| r.gpus[0].vram_free_mib -= STEP));
        assert!(material(|r| r.gpus[0].vram_free_mib += STEP));
        assert!(material(|r| r.gpus[0].uuid = "GPU-2".into()));
        assert!(material(|r| r.gpus[0].model = "A100".into()));
        assert!(material(|r| r.gpus[0].vram_total_mib = 40_000));
        assert!(material(|r| r.gpus.clear()));
        assert!(material(|r| r
            .gpus
            .push(GpuInfo::new("H100", "GPU-2", 80_000, 1))));
    }
}
