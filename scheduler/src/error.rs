//! Typed errors: invalid requirements, and why no worker could be picked.

use std::time::Duration;

/// A request's requirements are malformed (the client's fault: HTTP 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidRequirements {
    /// A name (service, GPU model, tag) is empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A name is longer than the limit.
    #[error("{0} is longer than {1} bytes")]
    TooLong(&'static str, usize),
    /// A name contains a control character.
    #[error("{0} contains a control character")]
    ControlCharacter(&'static str),
    /// Negative minimum VRAM.
    #[error("minimum free VRAM must not be negative (got {0})")]
    NegativeVram(f64),
    /// NaN or infinite minimum VRAM.
    #[error("minimum free VRAM must be a finite number")]
    NotFinite,
    /// More tags than allowed.
    #[error("at most {0} capability tags may be required")]
    TooManyTags(usize),
}

/// Why no worker was eligible for a request, from the first filter stage that emptied the
/// set. The gateway maps [`NoEligible::NoWorkerForService`] to 404 and the rest to 503.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoEligible {
    /// The scheduler knows no worker at all.
    #[error("no workers are known")]
    NoWorkers,
    /// No known worker serves the service.
    #[error("no worker serves `{service}`")]
    NoWorkerForService {
        /// The requested service.
        service: String,
    },
    /// Workers serve it, but none has the requested GPU model.
    #[error("no worker serving `{service}` has a GPU matching `{model}`")]
    NoGpuModelMatch {
        /// The requested service.
        service: String,
        /// The requested model filter.
        model: String,
    },
    /// Workers serve it, but none has enough free VRAM on one GPU.
    #[error(
        "no worker serving `{service}` has {required_mib} MiB free on one GPU (most is {best_mib} MiB)"
    )]
    NotEnoughVram {
        /// The requested service.
        service: String,
        /// Requested minimum, MiB.
        required_mib: u64,
        /// The largest free VRAM among matching workers, MiB.
        best_mib: u64,
    },
    /// Workers match, but none has every requested capability tag.
    #[error("no worker serving `{service}` has all the requested capability tags")]
    MissingTags {
        /// The requested service.
        service: String,
    },
    /// Every matching worker is draining.
    #[error("every worker serving `{service}` is draining")]
    AllDraining {
        /// The requested service.
        service: String,
    },
    /// Every matching worker is still joining.
    #[error("every worker serving `{service}` is still starting")]
    AllJoining {
        /// The requested service.
        service: String,
    },
    /// Every matching worker is reported unhealthy.
    #[error("every worker serving `{service}` is unhealthy")]
    AllUnhealthy {
        /// The requested service.
        service: String,
    },
    /// Every matching worker is ejected after repeated failures.
    #[error("every worker serving `{service}` is ejected after failures; retry in {retry_after:?}")]
    AllEjected {
        /// The requested service.
        service: String,
        /// When the first ejection ends.
        retry_after: Duration,
    },
    /// Eligible workers exist but the policy holds the request (only `oracle-central`
    /// does: every slot is busy, the request waits in the central queue).
    #[error("every eligible worker serving `{service}` is busy")]
    Saturated {
        /// The requested service.
        service: String,
    },
}
