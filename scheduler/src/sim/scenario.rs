//! The scenarios: fleet, workload, information model and the event that makes each one hard.

use super::dist::ServiceDist;

/// Mean service time of one request on a speed-1.0 GPU (an H100), seconds. All latencies
/// are reported in multiples of it.
pub const BASE_SERVICE_S: f64 = 0.2;

/// The gateway's deadline in the `liars` scenario, seconds: 100 mean service times, long
/// enough that no honest answer misses it, so that a tarpit can answer just before it.
pub const LIARS_DEADLINE_S: f64 = 100.0 * BASE_SERVICE_S;

/// The named scenarios of `gpumesh sim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Validation: identical single-slot workers, exponential service, exact information
    /// (Mitzenmacher's supermarket model).
    HomogeneousExp,
    /// Mixed GPUs (H100, A100, RTX 3090, T4), 4 slots each.
    Hetero,
    /// One worker 10× slower for the middle half of the run; timeout 5× the median.
    SlowWorker,
    /// One worker answers every request with an error in 1 ms from 20% of the run on.
    FastFail,
    /// A quarter of the fleet joins at 30% of the run.
    Join,
    /// The hetero fleet behind 4 gateways, published load refreshed every 0 s, 1 s, 30 s.
    Stale,
    /// The hetero fleet with 5 % of its workers lying, in four groups ([`Lie`]); the gateway
    /// runs canaries (1 % of traffic and one per worker on join) and a deadline.
    Liars,
}

/// How a worker of the `liars` scenario lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lie {
    /// Claims 8× H200 with 4 096 slots; really a T4 with 4 slots (answers right, slowly).
    Inflated,
    /// Answers every request at once (2 ms), wrong. Canaries catch it.
    Garbage,
    /// Accepts every request and never answers; the gateway's deadline ends each one.
    BlackHole,
    /// Answers right, just before the deadline.
    Tarpit,
}

impl Lie {
    /// Every group, in report order.
    pub const ALL: [Lie; 4] = [Lie::Inflated, Lie::Garbage, Lie::BlackHole, Lie::Tarpit];

    /// The group's name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Lie::Inflated => "inflated",
            Lie::Garbage => "garbage",
            Lie::BlackHole => "black-hole",
            Lie::Tarpit => "tarpit",
        }
    }

    /// What its record claims: (GPU model, GPU count, slots).
    pub fn claim(self) -> (&'static str, usize, u32) {
        match self {
            Lie::Inflated => ("H200", 8, 4096),
            Lie::Garbage | Lie::BlackHole | Lie::Tarpit => ("H100", 1, 4),
        }
    }

    /// Whether its answers are worth anything (right, and before the deadline in a useful
    /// time): only the inflated worker's are, at its true speed.
    pub fn serves(self) -> bool {
        self == Lie::Inflated
    }
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 7] = [
        Scenario::HomogeneousExp,
        Scenario::Hetero,
        Scenario::SlowWorker,
        Scenario::FastFail,
        Scenario::Join,
        Scenario::Stale,
        Scenario::Liars,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::HomogeneousExp => "homogeneous-exp",
            Scenario::Hetero => "hetero",
            Scenario::SlowWorker => "slow-worker",
            Scenario::FastFail => "fast-fail",
            Scenario::Join => "join",
            Scenario::Stale => "stale",
            Scenario::Liars => "liars",
        }
    }

    /// The scenario named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Default fleet size.
    pub fn default_workers(self) -> usize {
        match self {
            Scenario::HomogeneousExp => 100,
            Scenario::Hetero | Scenario::Stale => 32,
            Scenario::SlowWorker => 32,
            Scenario::FastFail | Scenario::Join => 16,
            Scenario::Liars => 160,
        }
    }

    /// Default service-time distribution.
    pub fn default_service(self) -> ServiceDist {
        match self {
            // Linkerd's 2016 replay had sd ≈ 3% of the median; σ = 0.2 keeps the service time
            // itself far below a 5×-median timeout, so timeouts measure balancing only.
            Scenario::SlowWorker => ServiceDist::LogNormal { sigma: 0.2 },
            Scenario::Join => ServiceDist::Bimodal {
                p_long: 0.1,
                ratio: 20.0,
            },
            _ => ServiceDist::Exponential,
        }
    }

    /// Gateways, each with its own scheduler and view.
    pub fn gateways(self) -> usize {
        match self {
            Scenario::Stale => 4,
            _ => 1,
        }
    }

    /// Publication intervals to run (`0.0`: every change reaches every gateway at once).
    pub fn publish_intervals(self) -> &'static [f64] {
        match self {
            Scenario::Stale => &[0.0, 1.0, 30.0],
            _ => &[0.0],
        }
    }

    /// The fleet: (GPU model, speed, slots) per worker.
    pub fn fleet(self, n: usize) -> Vec<(&'static str, f64, u32)> {
        match self {
            Scenario::HomogeneousExp => vec![("H100", 1.0, 1); n],
            Scenario::Hetero | Scenario::Stale | Scenario::Liars => (0..n)
                .map(|i| match i % 8 {
                    0 => ("H100", 1.0, 4),
                    1 | 2 => ("A100", 0.6, 4),
                    3 | 4 => ("RTX 3090", 0.35, 4),
                    _ => ("T4", 0.12, 4),
                })
                .zip(self.lies(n))
                .map(|(honest, lie)| match lie {
                    // The truth behind the lie; the claim is `Lie::claim`.
                    Some(Lie::Inflated) => ("T4", 0.12, 4),
                    Some(_) => ("H100", 1.0, 4),
                    None => honest,
                })
                .collect(),
            Scenario::SlowWorker | Scenario::FastFail => vec![("H100", 1.0, 4); n],
            Scenario::Join => vec![("A100", 0.6, 4); n],
        }
    }

    /// Per worker, how it lies (`liars`: every 20th worker, the four groups in turn; no
    /// worker elsewhere).
    pub fn lies(self, n: usize) -> Vec<Option<Lie>> {
        (0..n)
            .map(|i| match self {
                Scenario::Liars if i % 20 == 19 => Some(Lie::ALL[(i / 20) % 4]),
                _ => None,
            })
            .collect()
    }

    /// Workers (by index) that join late, and when (fraction of the run).
    pub fn joiners(self, n: usize) -> (std::ops::Range<usize>, f64) {
        match self {
            Scenario::Join => (n - n / 4..n, 0.3),
            _ => (n..n, 0.0),
        }
    }
}
