//! Baselines: random, round-robin, least-loaded on published (possibly stale) load.

use rand::RngCore;

use super::{Policy, scan_min};
use crate::candidates::Candidates;

/// One random eligible worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Random;

impl Policy for Random {
    fn name(&self) -> &'static str {
        "random"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        c.sample_one(rng)
    }
}

/// The next eligible worker after the last one chosen, in service-index order.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobin {
    cursor: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }
    fn choose(&mut self, c: &Candidates<'_>, _rng: &mut dyn RngCore) -> Option<u32> {
        let n = c.indexed();
        for i in 0..n {
            let pos = (self.cursor + i) % n;
            let slot = c.slot_at(pos)?;
            if c.is_eligible(slot) {
                self.cursor = pos + 1;
                return Some(slot);
            }
        }
        None
    }
}

/// Full scan for the least published load (in-flight + queued), however old the figures.
/// With fresh figures this is join-the-shortest-queue; with stale ones every gateway herds
/// onto the same apparently idle worker (Mitzenmacher, "How useful is old information?").
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastLoaded;

impl Policy for LeastLoaded {
    fn name(&self) -> &'static str {
        "least-loaded"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        scan_min(c, rng, |s| f64::from(c.worker(s).published().total()))
    }
}
