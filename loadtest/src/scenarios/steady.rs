//! `steady`: steady traffic to a steady fleet. Nothing happens during the run; its figures
//! (latency, success ratio, central calls per worker-day, traffic shares by GPU class) are the
//! baseline the other scenarios are read against.

use super::Outcome;

/// Nothing to do while the traffic runs.
pub(crate) fn during() -> Outcome {
    Outcome::default()
}
