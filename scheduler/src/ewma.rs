//! Peak-EWMA latency estimate (Finagle's `PeakEwma`, as in tower and linkerd2-proxy).
//!
//! A sample above the current estimate replaces it (the estimate jumps to the worst case at
//! once); a lower one is blended in with weight `1 − e^(−Δt/τ)`, Δt being the time since the
//! last update (Eckner's unevenly-spaced EWMA). Between samples the estimate decays: towards
//! 0 in Finagle/tower (an idle endpoint looks ever cheaper, so it gets re-probed), or towards
//! a `rest` value (gpumesh uses the worker's speed-class prior, so an idle worker goes back to
//! looking like an average worker of its class rather than like a free one).
//!
//! Reads are pure: `estimate(now)` applies the decay without storing it; the next
//! observation starts from the decayed value, as Finagle's `get()` → `observe(0)` would.

use std::time::Duration;

/// A peak-sensitive, time-decayed latency estimate, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    value: f64,
    updated_at: Duration,
    samples: u64,
}

impl PeakEwma {
    /// Seeded with `initial` at `now` (tower/linkerd: the default RTT, 30 ms).
    pub fn new(initial: Duration, now: Duration) -> Self {
        Self {
            value: initial.as_secs_f64(),
            updated_at: now,
            samples: 0,
        }
    }

    /// The estimate at `now`, in seconds, decayed towards `rest` with time constant `tau`.
    #[inline]
    pub fn estimate(&self, now: Duration, tau: Duration, rest: f64) -> f64 {
        let dt = now.saturating_sub(self.updated_at).as_secs_f64();
        if dt <= 0.0 {
            return self.value;
        }
        let w = (-dt / tau.as_secs_f64().max(1e-9)).exp();
        rest + (self.value - rest) * w
    }

    /// Records a latency sample observed at `now` (Finagle's rule: time-weighted blend).
    pub fn observe(&mut self, sample: Duration, now: Duration, tau: Duration, rest: f64) {
        let rtt = sample.as_secs_f64();
        let current = self.estimate(now, tau, rest);
        self.value = if rtt > current {
            rtt
        } else {
            let dt = now.saturating_sub(self.updated_at).as_secs_f64();
            let w = (-dt / tau.as_secs_f64().max(1e-9)).exp();
            current * w + rtt * (1.0 - w)
        };
        self.updated_at = self.updated_at.max(now);
        self.samples = self.samples.saturating_add(1);
    }

    /// Records a sample with per-sample weights: `up` for a sample above the estimate
    /// (1.0 = Finagle's jump), `down` below it. The time-weighted rule of [`Self::observe`]
    /// lets a worker's request rate set how long a peak lasts (a fast GPU sees many samples
    /// per τ, so its estimate sits near the maximum of many draws, a slow one's near the
    /// maximum of few), which biases the comparison against fast GPUs; per-sample weights
    /// make the bias the same for every worker.
    pub fn observe_per_sample(
        &mut self,
        sample: Duration,
        now: Duration,
        (up, down): (f64, f64),
        tau: Duration,
        rest: f64,
    ) {
        let x = sample.as_secs_f64();
        let current = self.estimate(now, tau, rest);
        let a = if x > current { up } else { down };
        self.value = current + a.clamp(0.0, 1.0) * (x - current);
        self.updated_at = self.updated_at.max(now);
        self.samples = self.samples.saturating_add(1);
    }

    /// How many samples were observed.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const TAU: Duration = Duration::from_secs(10);

    #[test]
    fn peak_jumps_up_at_once() {
        let mut e = PeakEwma::new(30 * MS, Duration::ZERO);
        e.observe(500 * MS, 10 * MS, TAU, 0.0);
        assert!((e.estimate(10 * MS, TAU, 0.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn lower_samples_pull_down_slowly() {
        let mut e = PeakEwma::new(100 * MS, Duration::ZERO);
        e.observe(10 * MS, 100 * MS, TAU, 0.0);
        let v = e.estimate(100 * MS, TAU, 0.0);
        assert!(v < 0.1 && v > 0.09, "{v}");
    }

    #[test]
    fn idle_estimate_decays_towards_rest() {
        // tower's unit test: default 10 ms, τ = 1 s, after 100 ms idle between 9 and 10 ms.
        let e = PeakEwma::new(10 * MS, Duration::ZERO);
        let v = e.estimate(100 * MS, Duration::from_secs(1), 0.0);
        assert!(v > 0.009 && v < 0.010, "{v}");
        let far = e.estimate(Duration::from_secs(100), TAU, 0.05);
        assert!((far - 0.05).abs() < 1e-4, "{far}");
    }
}
