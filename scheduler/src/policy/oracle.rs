//! Oracles: bounds no real gateway can reach. The simulator feeds their views the true
//! queue lengths (fresh after every event) and the true current speeds.

use rand::RngCore;

use super::{Policy, scan_min};
use crate::candidates::Candidates;

/// Shortest expected delay over every eligible worker, with true speed `μ` and exact queue
/// `q`: `(1/μ) × max(1, (q + 1)/c)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OracleSed;

impl Policy for OracleSed {
    fn name(&self) -> &'static str {
        "oracle-sed"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        scan_min(c, rng, |s| {
            let w = c.worker(s);
            let q = f64::from(w.published().total());
            let slots = f64::from(w.claimed_slots());
            ((q + 1.0) / slots).max(1.0) / w.speed().max(1e-9)
        })
    }
}

/// A central FIFO queue with late binding: the fastest worker with a free slot, else hold
/// the request until a slot frees (the simulator keeps the queue).
#[derive(Debug, Clone, Copy, Default)]
pub struct OracleCentral;

impl Policy for OracleCentral {
    fn name(&self) -> &'static str {
        "oracle-central"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        let pick = scan_min(c, rng, |s| {
            let w = c.worker(s);
            if w.published().total() < w.claimed_slots() {
                -w.speed()
            } else {
                f64::INFINITY
            }
        })?;
        let w = c.worker(pick);
        (w.published().total() < w.claimed_slots()).then_some(pick)
    }
}
