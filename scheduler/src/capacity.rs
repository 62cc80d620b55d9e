//! Capacity learned from serving: the batch slots a worker's cost divides by and the speed its
//! sampling weight uses come from what this scheduler has seen it serve. The record's claim
//! is only a ceiling and a prior.
//!
//! A record is written by a stranger. Believed as published, a record claiming an H200 with
//! 2³² − 1 slots would be one of the two candidates of almost every pick and would never look
//! loaded. So:
//!
//! - **Slots** follow AIMD, as TCP's congestion window and Netflix's `concurrency-limits` do.
//!   A new worker starts at a prior no higher than [`CapacityConfig::prior_slots`], the
//!   fleet's median *learned* slots (so that a crowd of sybil claims cannot raise it) and its
//!   own claim. It gains one slot when answers given with more than its credited slots in
//!   flight came, on average, about as fast as answers given without: it really served that
//!   concurrency (Little's law, L = λW: at the same W, more in flight is more served), where a
//!   worker that only queues the extra request answers it later by about one service time in
//!   `slots` ([`LearnedSlots::on_success`]). It never rises above the claim or
//!   [`CapacityConfig::max_slots`]; it halves on a failure; a claim below it lowers it at once
//!   (an honest worker that became busy).
//! - **Speed**: the GPU class factor ([`crate::gpu`]) is a ceiling and the prior (an unknown
//!   model gets [`crate::gpu::UNKNOWN_SPEED`], never the best). Once the worker has latency
//!   samples, the speed used is `min(class, observed × (1 + probe_margin))`, observed = the
//!   fleet's latency per unit speed ÷ the worker's latency estimate. A worker claiming an H200
//!   that answers at T4 speed is weighted like a T4 after a few answers; the margin lets an
//!   honest worker read a little faster than it was last seen, so that a slow spell (a burst
//!   that queued) does not hold its weight down for good.
//!
//! The sampling weight is `speed used × learned slots × trust × slow-start ramp`
//! ([`crate::Candidates`]); the cost ([`crate::policy::gpumesh`]) divides load by the learned
//! slots.

use std::time::Duration;

/// How capacity is learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityConfig {
    /// Learn slots and speed from serving. `false`: believe the record (the reference
    /// policies, which the simulator compares as they are defined).
    pub learn: bool,
    /// The most slots a new worker is credited with before it has served anything (further
    /// bounded by the fleet's median learned slots and its claim).
    pub prior_slots: u32,
    /// The most slots learning ever credits, whatever the claim: keeps the largest sampling
    /// weight within a small multiple of a typical one, so that rejection sampling stays cheap.
    pub max_slots: u32,
    /// How much faster than observed a worker may read: room to win back weight after a slow
    /// spell.
    pub probe_margin: f64,
    /// Answers above the credited slots averaged before one more slot is earned.
    pub grow_after: u32,
    /// How often, at most, the fleet's median learned slots is recomputed (O(n), off the pick
    /// path).
    pub median_every: Duration,
}

impl CapacityConfig {
    /// gpumesh's settings (docs/routing.md says why).
    pub const DEFAULT: Self = Self {
        learn: true,
        prior_slots: 4,
        max_slots: 64,
        probe_margin: 0.25,
        grow_after: 16,
        median_every: Duration::from_secs(1),
    };

    /// Believe every record: slots = the claim, speed = the GPU class (the reference policies).
    pub const OFF: Self = Self {
        learn: false,
        prior_slots: u32::MAX,
        max_slots: u32::MAX,
        probe_margin: f64::INFINITY,
        grow_after: u32::MAX,
        median_every: Duration::from_secs(1),
    };
}

impl Default for CapacityConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Weight of one sample in the unloaded-latency average.
const UNLOADED_ALPHA: f64 = 0.1;

/// The slots this scheduler credits a worker with, and the latency figures that decide
/// whether it has earned one more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnedSlots {
    slots: u32,
    /// Average latency of successes that ended with no more than `slots` in flight: the
    /// worker's service time when nothing waits (if the credited slots are real).
    unloaded_s: Option<f64>,
    /// Sum and count of latencies of successes that ended with more than `slots` in flight:
    /// the trial of one more slot.
    loaded_sum_s: f64,
    loaded_n: u32,
}

impl LearnedSlots {
    /// A new worker's slots: its claim bounded by the prior and the fleet's median.
    pub fn new(claim: u32, fleet_median: u32, cfg: &CapacityConfig) -> Self {
        let claim = claim.max(1);
        let slots = if cfg.learn {
            claim.min(cfg.prior_slots).min(fleet_median).max(1)
        } else {
            claim
        };
        Self {
            slots,
            unloaded_s: None,
            loaded_sum_s: 0.0,
            loaded_n: 0,
        }
    }

    /// The slots now (at least 1).
    #[inline]
    pub fn get(&self) -> u32 {
        self.slots
    }

    /// A new claim: a lower one lowers the slots at once; a higher one only lifts the ceiling.
    pub fn on_claim(&mut self, claim: u32, cfg: &CapacityConfig) {
        let claim = claim.max(1);
        let slots = if cfg.learn {
            self.slots.min(claim)
        } else {
            claim
        };
        self.set(slots);
    }

    /// A success that ended while `in_flight` requests (this one included) were at the
    /// worker, `latency_s` after it was sent. Returns whether the slots grew.
    ///
    /// One more slot is earned when [`CapacityConfig::grow_after`] successes that ended with
    /// more than the credited slots in flight took on average no longer than
    /// `1 + 1/(2 × slots)` times the unloaded average. Halfway between the two answers the
    /// test can give: with a real extra slot the ratio is 1; when the extra request only
    /// waited, the wait adds about one service time in `slots`, a ratio of `1 + 1/slots`.
    /// Averaging over several answers keeps one lucky fast answer from counting.
    pub fn on_success(
        &mut self,
        in_flight: u32,
        latency_s: f64,
        claim: u32,
        cfg: &CapacityConfig,
    ) -> bool {
        if !cfg.learn || !latency_s.is_finite() {
            return false;
        }
        if in_flight <= self.slots {
            self.unloaded_s = Some(match self.unloaded_s {
                None => latency_s,
                Some(u) => u + UNLOADED_ALPHA * (latency_s - u),
            });
            return false;
        }
        let Some(base) = self.unloaded_s else {
            return false;
        };
        self.loaded_sum_s += latency_s;
        self.loaded_n += 1;
        if self.loaded_n < cfg.grow_after.max(1) {
            return false;
        }
        let mean = self.loaded_sum_s / f64::from(self.loaded_n);
        let ceiling = claim.max(1).min(cfg.max_slots);
        let earned = mean <= base * (1.0 + 0.5 / f64::from(self.slots));
        if earned && self.slots < ceiling {
            self.set(self.slots + 1);
            return true;
        }
        self.set(self.slots);
        false
    }

    /// A failure: half the slots (at least one).
    pub fn on_failure(&mut self, cfg: &CapacityConfig) {
        if cfg.learn {
            self.set((self.slots / 2).max(1));
        }
    }

    /// A new level: the trial of the next slot starts over.
    fn set(&mut self, slots: u32) {
        self.slots = slots;
        self.loaded_sum_s = 0.0;
        self.loaded_n = 0;
    }
}

/// The speed to weight a worker with: its class speed, or less when it has been seen to
/// answer slower than its class (`None` observed speed: no samples yet, or learning off).
/// Returns (speed used, observed speed).
#[inline]
pub fn speed_used(
    class: f64,
    fleet_latency_per_speed: f64,
    estimate_s: f64,
    samples: u64,
    cfg: &CapacityConfig,
) -> (f64, Option<f64>) {
    if !cfg.learn || samples == 0 || estimate_s <= 0.0 || !estimate_s.is_finite() {
        return (class, None);
    }
    let observed = fleet_latency_per_speed / estimate_s;
    (
        class.min(observed * (1.0 + cfg.probe_margin)),
        Some(observed),
    )
}

/// The fleet's median learned slots, recomputed at most every
/// [`CapacityConfig::median_every`] into a buffer kept between computations.
#[derive(Debug, Default)]
pub(crate) struct FleetMedian {
    value: Option<u32>,
    at: Option<Duration>,
    buf: Vec<u32>,
}

impl FleetMedian {
    /// The median at `now` (the prior itself when the fleet is empty).
    pub(crate) fn get(
        &mut self,
        now: Duration,
        slots: impl Iterator<Item = u32>,
        cfg: &CapacityConfig,
    ) -> u32 {
        let fresh = self
            .at
            .is_some_and(|at| now.saturating_sub(at) < cfg.median_every);
        if let (true, Some(v)) = (fresh, self.value) {
            return v;
        }
        self.buf.clear();
        self.buf.extend(slots);
        let v = if self.buf.is_empty() {
            cfg.prior_slots
        } else {
            let mid = self.buf.len() / 2;
            *self.buf.select_nth_unstable(mid).1
        };
        self.value = Some(v);
        self.at = Some(now);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: CapacityConfig = CapacityConfig::DEFAULT;

    #[test]
    fn a_huge_claim_starts_at_the_prior_and_the_median() {
        assert_eq!(LearnedSlots::new(u32::MAX, 4, &C).get(), 4);
        assert_eq!(LearnedSlots::new(u32::MAX, 2, &C).get(), 2);
        assert_eq!(LearnedSlots::new(1, 4, &C).get(), 1);
        assert_eq!(LearnedSlots::new(0, 4, &C).get(), 1);
        assert_eq!(
            LearnedSlots::new(u32::MAX, 4, &CapacityConfig::OFF).get(),
            u32::MAX
        );
    }

    /// Feeds `n` successes at `in_flight` with latency `l`; returns the slots after.
    fn feed(s: &mut LearnedSlots, n: usize, in_flight: u32, l: f64, claim: u32) -> u32 {
        for _ in 0..n {
            s.on_success(in_flight, l, claim, &C);
        }
        s.get()
    }

    #[test]
    fn slots_grow_only_when_more_in_flight_came_back_as_fast() {
        let mut s = LearnedSlots::new(16, 4, &C);
        // No unloaded figure yet: nothing to compare with.
        assert_eq!(feed(&mut s, 40, 8, 0.1, 16), 4);
        assert_eq!(
            feed(&mut s, 20, 3, 0.1, 16),
            4,
            "unloaded answers teach no slots"
        );
        // Above its slots, but the answers took 1.25× as long (they waited): nothing.
        assert_eq!(feed(&mut s, 64, 5, 0.125, 16), 4);
        // As fast as unloaded: one slot per `grow_after` answers.
        assert_eq!(feed(&mut s, 16, 5, 0.1, 16), 5);
        assert_eq!(feed(&mut s, 400, 64, 0.1, 16), 16, "never above the claim");
        let mut big = LearnedSlots::new(u32::MAX, 4, &C);
        feed(&mut big, 10, 1, 0.1, u32::MAX);
        assert_eq!(feed(&mut big, 5000, 1000, 0.1, u32::MAX), C.max_slots);
    }

    #[test]
    fn failures_halve_and_lower_claims_lower_at_once() {
        let mut s = LearnedSlots::new(8, 8, &C);
        assert_eq!(s.get(), 4);
        feed(&mut s, 1, 1, 0.1, 8);
        s.on_failure(&C);
        assert_eq!(s.get(), 2);
        s.on_failure(&C);
        s.on_failure(&C);
        assert_eq!(s.get(), 1);
        let mut s = LearnedSlots::new(8, 8, &C);
        s.on_claim(2, &C);
        assert_eq!(s.get(), 2);
        s.on_claim(100, &C);
        assert_eq!(s.get(), 2, "a higher claim only lifts the ceiling");
    }

    #[test]
    fn a_slow_worker_reads_at_its_observed_speed_and_a_fast_one_at_its_class() {
        // Fleet: 0.1 s per unit speed. A claimed H200 (1.15) answering in 0.83 s is a T4.
        let (used, obs) = speed_used(1.15, 0.1, 0.1 / 0.12, 20, &C);
        assert!((obs.unwrap_or(0.0) - 0.12).abs() < 1e-9);
        assert!((used - 0.15).abs() < 1e-9, "{used}");
        // An honest H100 a little slower than the fleet still reads as an H100.
        assert_eq!(speed_used(1.0, 0.1, 0.11, 20, &C).0, 1.0);
        // No samples: the class.
        assert_eq!(speed_used(1.15, 0.1, 0.83, 0, &C), (1.15, None));
    }

    #[test]
    fn the_median_is_recomputed_at_most_once_per_interval() {
        let mut m = FleetMedian::default();
        let t = Duration::from_secs(5);
        assert_eq!(m.get(t, std::iter::empty(), &C), C.prior_slots);
        assert_eq!(
            m.get(t + Duration::from_secs(1), [1, 2, 8].into_iter(), &C),
            2
        );
        // Within the interval: the old value, whatever the fleet now says.
        assert_eq!(
            m.get(t + Duration::from_millis(1500), [9, 9, 9].into_iter(), &C),
            2
        );
        assert_eq!(
            m.get(t + Duration::from_secs(2), [9, 9, 9].into_iter(), &C),
            9
        );
    }
}
