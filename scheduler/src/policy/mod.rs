//! Selection policies behind one trait, so the simulator compares them on equal terms.
//!
//! | name | rule | source |
//! |---|---|---|
//! | `random` | one random eligible worker | baseline |
//! | `round-robin` | next eligible worker in index order | baseline |
//! | `least-loaded` | full scan, least published (possibly stale) load | Mitzenmacher 2000 |
//! | `p2c-inflight` | two distinct random, fewer own in-flight | tower `PendingRequests` |
//! | `p2c-peak-ewma` | two distinct random, peak-EWMA × (in-flight + 1) | tower / linkerd2-proxy / Finagle |
//! | `prequal` | three probes, hot-cold lexicographic rule | Prequal, NSDI'24 |
//! | `oracle-sed` | full scan, shortest expected delay with true speeds and queues | bound |
//! | `oracle-central` | a central queue: fastest free slot, else wait | bound |
//! | `gpumesh` | two distinct random, capacity-aware expected delay (see [`gpumesh`]) | ours |

mod baseline;
pub mod gpumesh;
mod oracle;
mod p2c;
mod prequal;

use rand::RngCore;

use crate::candidates::Candidates;
use crate::config::SchedulerConfig;

pub use baseline::{LeastLoaded, Random, RoundRobin};
pub use gpumesh::Gpumesh;
pub use oracle::{OracleCentral, OracleSed};
pub use p2c::{P2cInflight, P2cPeakEwma};
pub use prequal::Prequal;

/// A selection rule over the eligible set.
pub trait Policy: std::fmt::Debug + Send {
    /// The name used by `gpumesh sim`.
    fn name(&self) -> &'static str;

    /// Chooses an eligible slot; `None` when nothing is eligible, or (only for policies
    /// that queue centrally) to hold the request. Must not allocate.
    fn choose(&mut self, candidates: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32>;

    /// Called after a successful choice (for policies that keep a cursor or probe pool).
    fn on_pick(&mut self, _slot: u32) {}
}

/// The named policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `random`.
    Random,
    /// `round-robin`.
    RoundRobin,
    /// `least-loaded`.
    LeastLoaded,
    /// `p2c-inflight`.
    P2cInflight,
    /// `p2c-peak-ewma`.
    P2cPeakEwma,
    /// `prequal`.
    Prequal,
    /// `oracle-sed`.
    OracleSed,
    /// `oracle-central`.
    OracleCentral,
    /// `gpumesh`.
    Gpumesh,
}

impl PolicyKind {
    /// Every policy, in report order.
    pub const ALL: [PolicyKind; 9] = [
        PolicyKind::Random,
        PolicyKind::RoundRobin,
        PolicyKind::LeastLoaded,
        PolicyKind::P2cInflight,
        PolicyKind::P2cPeakEwma,
        PolicyKind::Prequal,
        PolicyKind::OracleSed,
        PolicyKind::OracleCentral,
        PolicyKind::Gpumesh,
    ];

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Random => "random",
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::LeastLoaded => "least-loaded",
            PolicyKind::P2cInflight => "p2c-inflight",
            PolicyKind::P2cPeakEwma => "p2c-peak-ewma",
            PolicyKind::Prequal => "prequal",
            PolicyKind::OracleSed => "oracle-sed",
            PolicyKind::OracleCentral => "oracle-central",
            PolicyKind::Gpumesh => "gpumesh",
        }
    }

    /// The policy named `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether it needs exact, fresh worker state (the simulator feeds oracles the truth).
    pub fn is_oracle(self) -> bool {
        matches!(self, PolicyKind::OracleSed | PolicyKind::OracleCentral)
    }

    /// A fresh instance.
    pub fn build(self) -> Box<dyn Policy> {
        match self {
            PolicyKind::Random => Box::new(Random),
            PolicyKind::RoundRobin => Box::new(RoundRobin::default()),
            PolicyKind::LeastLoaded => Box::new(LeastLoaded),
            PolicyKind::P2cInflight => Box::new(P2cInflight),
            PolicyKind::P2cPeakEwma => Box::new(P2cPeakEwma),
            PolicyKind::Prequal => Box::new(Prequal::default()),
            PolicyKind::OracleSed => Box::new(OracleSed),
            PolicyKind::OracleCentral => Box::new(OracleCentral),
            PolicyKind::Gpumesh => Box::new(Gpumesh),
        }
    }

    /// The settings it is defined with: gpumesh's own, tower's for the rest.
    pub fn config(self) -> SchedulerConfig {
        match self {
            PolicyKind::Gpumesh => SchedulerConfig::GPUMESH,
            _ => SchedulerConfig::TOWER,
        }
    }
}

impl std::fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Full scan for the lowest `cost`, starting at a random position so ties spread randomly.
pub(crate) fn scan_min(
    c: &Candidates<'_>,
    rng: &mut dyn RngCore,
    mut cost: impl FnMut(u32) -> f64,
) -> Option<u32> {
    use rand::Rng;
    let n = c.indexed();
    if n == 0 {
        return None;
    }
    let start = rng.random_range(0..n);
    let mut best: Option<(u32, f64)> = None;
    for i in 0..n {
        let slot = c.slot_at((start + i) % n)?;
        if !c.is_eligible(slot) {
            continue;
        }
        let k = cost(slot);
        if best.is_none_or(|(_, b)| k < b) {
            best = Some((slot, k));
        }
    }
    best.map(|(s, _)| s)
}

/// [`p2c`] with capacity-weighted draws ([`Candidates::sample_distinct_weighted`]).
pub(crate) fn p2c_weighted(
    c: &Candidates<'_>,
    rng: &mut dyn RngCore,
    cost: impl FnMut(u32) -> f64,
) -> Option<u32> {
    let mut pair = [0u32; 2];
    let drawn = c.sample_distinct_weighted(rng, &mut pair);
    lower_of(pair, drawn, cost)
}

/// Power of two choices: two distinct random eligible slots, the lower cost wins (tie →
/// the first drawn, itself random). One eligible → that one.
pub(crate) fn p2c(
    c: &Candidates<'_>,
    rng: &mut dyn RngCore,
    cost: impl FnMut(u32) -> f64,
) -> Option<u32> {
    let mut pair = [0u32; 2];
    let drawn = c.sample_distinct(rng, &mut pair);
    lower_of(pair, drawn, cost)
}

/// The P2C decision over `drawn` (0, 1 or 2) sampled slots: none, the only one, or the lower
/// cost (tie → the first drawn).
fn lower_of(pair: [u32; 2], drawn: usize, mut cost: impl FnMut(u32) -> f64) -> Option<u32> {
    match drawn {
        0 => None,
        1 => Some(pair[0]),
        _ => Some(if cost(pair[0]) <= cost(pair[1]) {
            pair[0]
        } else {
            pair[1]
        }),
    }
}
