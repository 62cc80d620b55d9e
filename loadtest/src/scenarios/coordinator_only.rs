//! `coordinator-only`: the seed system's fallback mode, `DHT_ENABLED=false` everywhere. The
//! gateway runs without a DHT node and every agent registers and heartbeats through the
//! gateway's HTTP registry ([`crate::run`] sets that up), so its central-call figure shows
//! what the DHT saves. Nothing happens during the run.

use super::Outcome;

/// Nothing to do while the traffic runs.
pub(crate) fn during() -> Outcome {
    Outcome::default()
}
