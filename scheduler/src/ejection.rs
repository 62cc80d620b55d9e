//! Outlier ejection: consecutive failures take a worker out of rotation for a backoff period.
//!
//! Modelled on Envoy's outlier detection (`consecutive_5xx` = 5, base ejection 30 s, the
//! period multiplied by the number of times ejected, `max_ejection_percent` = 10%): here the
//! period doubles per ejection up to a maximum, one success resets both counters, and at most
//! 10% of the workers (at least one) are ejected at once, so that an overload that makes
//! every worker time out cannot eject the fleet and turn into an outage.

use std::time::Duration;

/// Ejection settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive failures that eject; 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection period.
    pub base: Duration,
    /// Longest ejection period.
    pub max: Duration,
    /// Largest share of workers ejected at once (at least one).
    pub max_ejected_share: f64,
    /// Largest share of workers ejected at once when the latest ejection is for a failed
    /// connection ([`Ejection::on_unreachable`]). Higher than `max_ejected_share`: a refused
    /// connection is not what overload looks like (an overloaded worker accepts and is slow,
    /// or its backlog drops SYNs and the connect times out), so the overload guard need not
    /// hold it back as tightly; past this share the gateway itself is the likelier culprit.
    pub max_unreachable_share: f64,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
            max_ejected_share: 0.1,
            max_unreachable_share: 0.5,
        }
    }
}

impl EjectionConfig {
    /// Never eject (the reference policies, as published, have no outlier detection).
    pub const DISABLED: Self = Self {
        consecutive_failures: 0,
        base: Duration::ZERO,
        max: Duration::ZERO,
        max_ejected_share: 0.0,
        max_unreachable_share: 0.0,
    };
}

/// A worker's failure record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ejection {
    consecutive: u32,
    times_ejected: u32,
    until: Option<Duration>,
}

impl Ejection {
    /// `true` while ejected at `now`.
    #[inline]
    pub fn is_ejected(&self, now: Duration) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the current ejection ends, if any.
    pub fn until(&self) -> Option<Duration> {
        self.until
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// A success: resets the counters.
    pub fn on_success(&mut self) {
        self.consecutive = 0;
        self.times_ejected = 0;
    }

    /// A connection to the worker failed before anything was sent (refused, reset, connect
    /// timeout) at `now`: ejects at once, for the same backoff periods as
    /// [`on_failure`](Self::on_failure). Returns `true` when it starts an ejection.
    pub fn on_unreachable(&mut self, now: Duration, cfg: &EjectionConfig) -> bool {
        if cfg.consecutive_failures == 0 || self.is_ejected(now) {
            return false;
        }
        self.consecutive = cfg.consecutive_failures.saturating_sub(1);
        self.on_failure(now, cfg)
    }

    /// A failure at `now`; returns `true` when it starts an ejection.
    pub fn on_failure(&mut self, now: Duration, cfg: &EjectionConfig) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        if cfg.consecutive_failures == 0
            || self.consecutive < cfg.consecutive_failures
            || self.is_ejected(now)
        {
            return false;
        }
        let factor = 1u32 << self.times_ejected.min(16);
        let period = cfg.base.saturating_mul(factor).min(cfg.max);
        self.until = Some(now.saturating_add(period));
        self.times_ejected = self.times_ejected.saturating_add(1);
        self.consecutive = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn ejects_after_threshold_and_backs_off_exponentially() {
        let cfg = EjectionConfig::default();
        let mut e = Ejection::default();
        for _ in 0..4 {
            assert!(!e.on_failure(Duration::ZERO, &cfg));
        }
        assert!(e.on_failure(Duration::ZERO, &cfg));
        assert!(e.is_ejected(29 * S));
        assert!(!e.is_ejected(30 * S));
        for _ in 0..5 {
            e.on_failure(30 * S, &cfg);
        }
        assert_eq!(e.until(), Some(90 * S), "second period doubles to 60 s");
        e.on_success();
        for _ in 0..5 {
            e.on_failure(100 * S, &cfg);
        }
        assert_eq!(e.until(), Some(130 * S), "a success resets the backoff");
    }

    #[test]
    fn unreachable_ejects_at_once_and_backs_off() {
        let cfg = EjectionConfig::default();
        let mut e = Ejection::default();
        assert!(e.on_unreachable(Duration::ZERO, &cfg));
        assert!(e.is_ejected(29 * S));
        assert!(!e.on_unreachable(10 * S, &cfg), "already ejected");
        assert!(e.on_unreachable(30 * S, &cfg));
        assert_eq!(e.until(), Some(90 * S), "second period doubles to 60 s");
        let mut off = Ejection::default();
        assert!(!off.on_unreachable(Duration::ZERO, &EjectionConfig::DISABLED));
    }

    #[test]
    fn disabled_never_ejects() {
        let mut e = Ejection::default();
        for _ in 0..100 {
            assert!(!e.on_failure(Duration::ZERO, &EjectionConfig::DISABLED));
        }
    }
}
