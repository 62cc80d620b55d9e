//! Prequal's hot-cold lexicographic rule (Wydrowski et al., NSDI'24).
//!
//! Each query probes `r_probe = 3` distinct random workers. A probe's RIF (requests in
//! flight) is the larger of this gateway's live count and the published load (probes older
//! than Prequal's 1 s age limit contribute only the live count). Its latency stands for
//! Prequal's "recent latency at the current RIF": the peak-EWMA estimate scaled to the
//! probed RIF, `L × (RIF + 1) / slots` (a FIFO worker's latency grows with its RIF). A probe is hot when its RIF exceeds the `Q_RIF = 2^−0.25 ≈ 0.84` quantile of
//! the last 16 probed RIFs (Prequal's pool size). Rule: the lowest-latency cold probe, else
//! the lowest-RIF probe. Simplification: probes are synchronous reads of the view, not
//! asynchronous RPCs, and the pool is only used for the quantile.

use std::time::Duration;

use rand::RngCore;

use super::Policy;
use crate::candidates::Candidates;

const POOL: usize = 16;
const PROBES: usize = 3;
const PROBE_AGE_LIMIT: Duration = Duration::from_secs(1);

/// Prequal HCL.
#[derive(Debug, Clone, Copy)]
pub struct Prequal {
    q_rif: f64,
    recent: [f64; POOL],
    len: usize,
    next: usize,
}

impl Default for Prequal {
    fn default() -> Self {
        Self {
            q_rif: 2f64.powf(-0.25),
            recent: [0.0; POOL],
            len: 0,
            next: 0,
        }
    }
}

impl Prequal {
    fn rif(c: &Candidates<'_>, slot: u32) -> f64 {
        let w = c.worker(slot);
        let own = f64::from(w.in_flight());
        let p = w.published();
        if c.now().saturating_sub(p.published_at) > PROBE_AGE_LIMIT {
            return own;
        }
        own.max(f64::from(p.total()))
    }

    fn threshold(&self) -> f64 {
        let mut sorted = self.recent;
        let s = &mut sorted[..self.len];
        s.sort_unstable_by(f64::total_cmp);
        let idx = ((self.len as f64 * self.q_rif).ceil() as usize).clamp(1, self.len) - 1;
        s[idx]
    }
}

impl Policy for Prequal {
    fn name(&self) -> &'static str {
        "prequal"
    }

    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        let mut probes = [0u32; PROBES];
        let n = c.sample_distinct(rng, &mut probes);
        if n == 0 {
            return None;
        }
        let mut rifs = [0.0; PROBES];
        for i in 0..n {
            rifs[i] = Self::rif(c, probes[i]);
            self.recent[self.next] = rifs[i];
            self.next = (self.next + 1) % POOL;
            self.len = (self.len + 1).min(POOL);
        }
        let hot_above = self.threshold();
        let mut best_cold: Option<(u32, f64)> = None;
        let mut best_rif: Option<(u32, f64)> = None;
        for i in 0..n {
            let (slot, rif) = (probes[i], rifs[i]);
            if rif <= hot_above {
                let slots = f64::from(c.worker(slot).slots());
                let lat = c.latency(slot) * (rif + 1.0) / slots;
                if best_cold.is_none_or(|(_, l)| lat < l) {
                    best_cold = Some((slot, lat));
                }
            }
            if best_rif.is_none_or(|(_, r)| rif < r) {
                best_rif = Some((slot, rif));
            }
        }
        best_cold.or(best_rif).map(|(s, _)| s)
    }
}
