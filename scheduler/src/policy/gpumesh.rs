//! gpumesh's cost: the expected delay of joining a worker, from what a gateway can know.
//!
//! ```text
//! cost = L × (max(1, (q + 1) / c) + 0.001 × q / c)
//! L = latency estimate: a peak-leaning EWMA (weight 0.1 for a sample above the
//!     estimate, 0.05 below; a failure jumps it), seeded with and decaying (τ 10 s)
//!     towards the class prior (fleet latency per unit speed ÷ the worker's speed factor)
//! q = own live in-flight + others' published load × e^(−age / 0.5 s)
//! c = the worker's learned batch slots (its claim is only a ceiling; see crate::capacity)
//! ```
//!
//! Why each part (measurements in docs/benchmarks/scheduler.md):
//! - `L × (q + 1)` is Finagle's peak-EWMA cost; with `L ≈ 1/μ` it is shortest expected
//!   delay. Dividing by `c` and flooring at 1 makes it SED for a multi-slot GPU: a request
//!   that finds a free slot waits for nothing, one behind `q − c + 1` others waits that many
//!   slot-service times ÷ `c`. Without it a 4-slot H100 would look 4× as loaded as it is.
//! - The class prior gives a new worker its fair share at once (not the flood a 30 ms seed
//!   invites, nor the starvation of a pessimistic one), and pulls an idle worker's estimate
//!   back to "average for its GPU" instead of to 0.
//! - Failures are recorded as latency of at least 10× the prior and twice the current
//!   estimate, so a worker failing in 1 ms looks slow, not fast; five in a row eject it with
//!   exponential backoff (see [`crate::ejection`]).
//! - Candidates are drawn in proportion to a weight, speed used × learned slots × trust
//!   ([`crate::capacity`], [`crate::trust`]), so two T4s are rarely the only choice and a
//!   record's claims never draw more traffic than the worker has been seen to serve; a new
//!   worker's weight ramps from 30% to 100% over 10 s (slow start), so it gets traffic at
//!   once but is not flooded while its queue is still empty. The cost itself does not use
//!   trust: it is the expected delay, whoever answers.
//! - Published load covers other gateways' requests; it is discounted by age because a
//!   30-second-old queue depth says little, and the live count and latency come first.

use rand::RngCore;

use super::{Policy, p2c_weighted};
use crate::candidates::Candidates;

/// gpumesh: P2C over two distinct random eligible workers, drawn with probability
/// proportional to their sampling weight, on [`cost`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Gpumesh;

/// The cost of sending the next request to `slot` (seconds of expected delay).
#[inline]
pub fn cost(c: &Candidates<'_>, slot: u32) -> f64 {
    let latency = c.latency(slot);
    let q = c.load_estimate(slot);
    let slots = f64::from(c.worker(slot).slots());
    // The tiny q term only breaks ties among workers with free slots, spreading requests
    // across them instead of filling one worker's slots first.
    latency * (((q + 1.0) / slots).max(1.0) + TIE_BREAK * q / slots)
}

/// Weight of the in-flight tie-breaker (far below any real latency difference).
const TIE_BREAK: f64 = 1e-3;

impl Policy for Gpumesh {
    fn name(&self) -> &'static str {
        "gpumesh"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        p2c_weighted(c, rng, |s| cost(c, s))
    }
}
