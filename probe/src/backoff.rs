//! Jittered exponential backoff with an injected random source.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Exponential backoff with "equal jitter": each delay is uniform in `[d/2, d]` where `d`
/// doubles from `base` up to `max`. The jitter keeps a fleet restarted together from
/// retrying in lock-step.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: SmallRng,
}

impl Backoff {
    /// A backoff with a seeded RNG (tests and simulations).
    pub fn with_seed(base: Duration, max: Duration, seed: u64) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// A backoff seeded from the OS.
    pub fn new(base: Duration, max: Duration) -> Self {
        let mut b = Self::with_seed(base, max, 0);
        b.rng = SmallRng::from_os_rng();
        b
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let d = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let jitter_ms = self.rng.random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the base delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_jitters_and_resets() {
        let mut b = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(1), 1);
        let d: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(1)));
        assert!(d[7] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        let mut other = Backoff::with_seed(Duration::from_millis(100), Duration::from_secs(1), 2);
        let o: Vec<_> = (0..8).map(|_| other.next_delay()).collect();
        assert_ne!(d, o, "different seeds jitter differently");
    }
}
