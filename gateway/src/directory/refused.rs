//! Why a change from a source was not taken, and its metric label.

use gpumesh_dht::rules::plausible::Implausible;

use crate::policy::PolicyError;

/// Why a change was not taken.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The tunnel URL fails the upstream policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A malformed record (empty id, no service, bad service name).
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// A claim no machine can make (see [`gpumesh_dht::rules::plausible`]).
    #[error(transparent)]
    Implausible(#[from] Implausible),
    /// An older `seq` than the record held.
    #[error("seq {got} is not newer than the held {have}")]
    Stale {
        /// Sequence number received.
        got: u64,
        /// Sequence number held.
        have: u64,
    },
    /// A refresh for a worker this source does not hold (it expired or never joined).
    #[error("no worker `{0}` from this source")]
    Unknown(String),
}

impl Refused {
    /// The `reason` label of `records_refused`.
    pub(super) fn label(&self) -> &'static str {
        match self {
            Refused::Policy(_) => "upstream_policy",
            Refused::Invalid(_) => "invalid",
            // Which claim, not just "implausible": operators see what liars try.
            Refused::Implausible(i) => i.label(),
            Refused::Stale { .. } => "stale",
            Refused::Unknown(_) => "unknown",
        }
    }
}
