//! Scheduler settings: the latency estimator, failure handling, load discounting, trust and
//! learned capacity.

use std::time::Duration;

use crate::capacity::CapacityConfig;
use crate::ejection::EjectionConfig;
use crate::trust::TrustConfig;

/// Where an idle worker's latency estimate decays to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecayTarget {
    /// Towards 0, as Finagle, tower and linkerd2-proxy do.
    Zero,
    /// Towards the worker's speed-class prior: the fleet's observed latency per unit of speed
    /// divided by the worker's speed (gpumesh).
    ClassPrior,
}

/// Settings of one [`crate::Scheduler`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Peak-EWMA time constant τ (10 s in Finagle, tower and linkerd2-proxy).
    pub decay: Duration,
    /// Latency seed for a worker before any sample, when no fleet figure exists yet (30 ms in
    /// linkerd2-proxy).
    pub default_rtt: Duration,
    /// Seed new workers with their class prior instead of `default_rtt`, once the fleet has
    /// latency samples.
    pub seed_from_class: bool,
    /// Where idle estimates decay to.
    pub decay_target: DecayTarget,
    /// `Some((up, down))`: blend each sample with these weights (above / below the
    /// estimate) instead of Finagle's time-based weight; see [`crate::ewma::PeakEwma`].
    pub per_sample_weights: Option<(f64, f64)>,
    /// On a failure, record a latency of at least this many times the worker's class prior
    /// (and at least twice its current estimate), so that failing fast does not look fast.
    /// `None`: record the failure's latency as is (tower).
    pub failure_penalty: Option<f64>,
    /// Published load counts with weight `e^(−age/τ_load)`; fresh figures count fully.
    pub load_age_tau: Duration,
    /// Outlier ejection.
    pub ejection: EjectionConfig,
    /// Slow start: a new worker's sampling weight ramps from 30% to 100% of its capacity
    /// over this window (capacity-weighted policies only; zero disables).
    pub slow_start: Duration,
    /// How trust in a worker's answers moves ([`crate::trust`]).
    pub trust: TrustConfig,
    /// How slots and speed are learned from serving ([`crate::capacity`]).
    pub capacity: CapacityConfig,
}

impl SchedulerConfig {
    /// gpumesh's settings (docs/routing.md says why; docs/benchmarks/scheduler.md has the measurements).
    pub const GPUMESH: Self = Self {
        decay: Duration::from_secs(10),
        default_rtt: Duration::from_millis(30),
        seed_from_class: true,
        decay_target: DecayTarget::ClassPrior,
        per_sample_weights: Some((0.1, 0.05)),
        failure_penalty: Some(10.0),
        load_age_tau: Duration::from_millis(500),
        ejection: EjectionConfig {
            consecutive_failures: 5,
            base: Duration::from_secs(30),
            max: Duration::from_secs(300),
            max_ejected_share: 0.1,
            max_unreachable_share: 0.5,
        },
        slow_start: Duration::from_secs(10),
        trust: TrustConfig::DEFAULT,
        capacity: CapacityConfig::DEFAULT,
    };

    /// tower / linkerd2-proxy's `PeakEwma` as deployed: default RTT 30 ms, decay 10 s,
    /// decay to 0, failures recorded as plain samples, no ejection.
    pub const TOWER: Self = Self {
        decay: Duration::from_secs(10),
        default_rtt: Duration::from_millis(30),
        seed_from_class: false,
        decay_target: DecayTarget::Zero,
        per_sample_weights: None,
        failure_penalty: None,
        load_age_tau: Duration::from_secs(2),
        ejection: EjectionConfig::DISABLED,
        slow_start: Duration::ZERO,
        trust: TrustConfig::OFF,
        capacity: CapacityConfig::OFF,
    };
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self::GPUMESH
    }
}
