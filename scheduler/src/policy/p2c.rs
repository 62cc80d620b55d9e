//! The two tower/linkerd2-proxy balancers: P2C on pending requests and P2C on peak EWMA.

use rand::RngCore;

use super::{Policy, p2c};
use crate::candidates::Candidates;

/// P2C on this gateway's own in-flight count (tower `PendingRequests`).
#[derive(Debug, Clone, Copy, Default)]
pub struct P2cInflight;

impl Policy for P2cInflight {
    fn name(&self) -> &'static str {
        "p2c-inflight"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        p2c(c, rng, |s| f64::from(c.worker(s).in_flight()))
    }
}

/// P2C on `peak_ewma × (in_flight + 1)` (tower `PeakEwma`; run with
/// [`crate::SchedulerConfig::TOWER`]: default RTT 30 ms, τ = 10 s, decay to 0).
#[derive(Debug, Clone, Copy, Default)]
pub struct P2cPeakEwma;

impl Policy for P2cPeakEwma {
    fn name(&self) -> &'static str {
        "p2c-peak-ewma"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        p2c(c, rng, |s| {
            c.latency(s) * (f64::from(c.worker(s).in_flight()) + 1.0)
        })
    }
}
