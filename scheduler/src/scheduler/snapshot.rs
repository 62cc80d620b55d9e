//! [`WorkerSnapshot`]: one worker's figures as the scheduler sees them, for metrics, the
//! workers API and debug pages.

use std::time::Duration;

use super::Scheduler;
use crate::worker::WorkerState;

/// A worker's figures for metrics and debugging.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerSnapshot {
    /// Worker id.
    pub id: String,
    /// Published state.
    pub state: WorkerState,
    /// Health flag.
    pub healthy: bool,
    /// Relative speed it is weighted with (1.0 = one H100): its GPU class, or less once it
    /// has been seen to answer slower ([`crate::capacity`]).
    pub speed: f64,
    /// This scheduler's in-flight requests to it.
    pub in_flight: u32,
    /// Published load (in-flight + queued).
    pub published_load: u32,
    /// Latency estimate now, seconds.
    pub latency_s: f64,
    /// Picks so far.
    pub picks: u64,
    /// Successes so far.
    pub successes: u64,
    /// Failures so far.
    pub failures: u64,
    /// Seconds until its ejection ends, if ejected.
    pub ejected_for_s: Option<f64>,
    /// Trust in its answers, 0 to 1 (see [`crate::trust`]).
    pub trust: f64,
    /// Checks it passed.
    pub verified: u32,
    /// Below the trust floor: no real traffic until a check passes.
    pub distrusted: bool,
    /// The weight it is sampled with now (speed used × learned slots × trust × slow start).
    pub weight: f64,
    /// Batch slots this scheduler believes it has.
    pub slots_learned: u32,
    /// Speed observed from its latency (1.0 = one H100), once there are samples.
    pub speed_observed: Option<f64>,
}

impl Scheduler {
    /// Every worker's figures (allocates; for metrics and debug pages).
    pub fn snapshot(&self, now: Duration) -> Vec<WorkerSnapshot> {
        let fleet = self.fleet_latency_per_speed();
        self.table
            .iter()
            .map(|e| {
                let (_, rest) = self.prior_and_rest(e.seen_speed);
                let latency_s = e.latency.estimate(now, self.cfg.decay, rest);
                let (used, observed) = crate::capacity::speed_used(
                    e.speed,
                    fleet,
                    latency_s,
                    e.samples(),
                    &self.cfg.capacity,
                );
                let ramp = crate::candidates::slow_start(&self.cfg, e.added_at, now);
                WorkerSnapshot {
                    id: e.view.id.clone(),
                    state: e.view.state,
                    healthy: e.view.healthy,
                    speed: used,
                    in_flight: e.in_flight,
                    published_load: e.view.load.total(),
                    latency_s,
                    picks: e.picks,
                    successes: e.successes,
                    failures: e.failures,
                    ejected_for_s: e
                        .ejection
                        .until()
                        .filter(|&u| u > now)
                        .map(|u| (u - now).as_secs_f64()),
                    trust: e.trust.score,
                    verified: e.trust.verified,
                    distrusted: e.trust.is_distrusted(&self.cfg.trust),
                    weight: used * f64::from(e.slots()) * e.trust.score * ramp,
                    slots_learned: e.slots(),
                    speed_observed: observed,
                }
            })
            .collect()
    }
}
