//! How big a record may be, and the check that applies it.
//!
//! Every node applies the same limits (a record one node stores, another must not refuse), the
//! agent checks its own records against them before it publishes, and the gateway's HTTP
//! registry applies them to the records it takes. They bound what a stranger can make a node
//! store or a gateway hold.

use std::time::Duration;

use super::plausible::ClaimLimits;
use crate::{
    record::{GpuInfo, WorkerRecord},
    validate::RejectReason,
};

/// Most addresses a provider record may carry.
pub const MAX_PROVIDER_ADDRS: usize = 8;
/// Most services a record may list.
pub const MAX_SERVICES: usize = 32;
/// Longest service name, bytes ([`super::ServiceName`]).
pub const MAX_SERVICE_BYTES: usize = 64;
/// Most GPUs a record may list.
pub const MAX_GPUS: usize = 16;
/// Longest free-text field (model, uuid, version, capability), bytes.
pub const MAX_TEXT: usize = 256;
/// Longest tunnel URL, bytes.
pub const MAX_URL: usize = 512;
/// Longest worker (peer) id, bytes: a base58 libp2p peer id is about 52; the slack admits
/// other key types without admitting unbounded ids.
pub const MAX_ID_LEN: usize = 128;
/// Longest lifetime (`expires_at - issued_at`) a record may claim: a record that outlives its
/// worker by more than this cannot be withdrawn in practice.
pub const MAX_RECORD_TTL: Duration = Duration::from_secs(600);

/// Limits applied to signed records (the same on every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest signed envelope, bytes.
    pub max_value_bytes: usize,
    /// Longest lifetime (`expires_at - issued_at`) a record may claim.
    pub max_ttl: Duration,
    /// Allowed clock skew for `issued_at` in the future.
    pub max_skew: Duration,
    /// What a record may claim about its hardware ([`super::check_claims`]); a record that
    /// claims the impossible is refused like one that breaks the schema.
    pub claims: ClaimLimits,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 4096,
            max_ttl: MAX_RECORD_TTL,
            max_skew: Duration::from_secs(60),
            claims: ClaimLimits::default(),
        }
    }
}

/// The schema limits every record must meet: at most [`MAX_SERVICES`] services and
/// capabilities, capabilities and the agent version at most [`MAX_TEXT`] bytes, a URL of at
/// most [`MAX_URL`] bytes, and the GPUs of [`check_gpus`]. Service names need no check here:
/// a [`super::ServiceName`] is valid by construction, and one that breaks the rule does not
/// deserialise.
///
/// # Errors
/// [`RejectReason::Schema`].
pub fn check_schema(r: &WorkerRecord) -> Result<(), RejectReason> {
    let text_ok = |s: &str| s.len() <= MAX_TEXT;
    let ok = r.services.len() <= MAX_SERVICES
        && r.capabilities.len() <= MAX_SERVICES
        && r.capabilities.iter().all(|c| text_ok(c))
        && r.tunnel_url.len() <= MAX_URL
        && text_ok(&r.agent_version);
    if ok {
        check_gpus(&r.gpus)
    } else {
        Err(RejectReason::Schema)
    }
}

/// The GPU part of [`check_schema`] (at most [`MAX_GPUS`], model and uuid at most
/// [`MAX_TEXT`] bytes), for updates that carry only GPUs (registry heartbeats).
///
/// # Errors
/// [`RejectReason::Schema`].
pub fn check_gpus(gpus: &[GpuInfo]) -> Result<(), RejectReason> {
    let text_ok = |s: &str| s.len() <= MAX_TEXT;
    if gpus.len() <= MAX_GPUS && gpus.iter().all(|g| text_ok(&g.model) && text_ok(&g.uuid)) {
        Ok(())
    } else {
        Err(RejectReason::Schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ServiceName;

    fn record() -> WorkerRecord {
        WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org")
    }

    fn gpus(n: usize) -> Vec<GpuInfo> {
        (0..n)
            .map(|i| GpuInfo::new("m", format!("GPU-{i}"), 1, 1))
            .collect()
    }

    #[test]
    fn services_up_to_the_cap() {
        let names = |n: usize| -> Vec<ServiceName> {
            (0..n).map(|i| format!("s{i}").parse().unwrap()).collect()
        };
        let mut r = record();
        r.services = names(MAX_SERVICES);
        assert_eq!(check_schema(&r), Ok(()));
        r.services = names(MAX_SERVICES + 1);
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
    }

    #[test]
    fn capabilities_count_and_length() {
        let mut r = record();
        r.capabilities = vec!["c".repeat(MAX_TEXT); MAX_SERVICES];
        assert_eq!(check_schema(&r), Ok(()));
        r.capabilities = vec!["c".into(); MAX_SERVICES + 1];
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
        r.capabilities = vec!["c".repeat(MAX_TEXT + 1)];
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
    }

    #[test]
    fn url_and_version_length() {
        let mut r = record();
        r.tunnel_url = "u".repeat(MAX_URL);
        assert_eq!(check_schema(&r), Ok(()));
        r.tunnel_url.push('u');
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
        let mut r = record();
        r.agent_version = "v".repeat(MAX_TEXT + 1);
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
    }

    #[test]
    fn gpus_count_and_text() {
        assert_eq!(check_gpus(&gpus(MAX_GPUS)), Ok(()));
        assert_eq!(check_gpus(&gpus(MAX_GPUS + 1)), Err(RejectReason::Schema));
        let mut long = gpus(1);
        long[0].model = "m".repeat(MAX_TEXT + 1);
        assert_eq!(check_gpus(&long), Err(RejectReason::Schema));
        let mut r = record();
        r.gpus = gpus(MAX_GPUS + 1);
        assert_eq!(check_schema(&r), Err(RejectReason::Schema));
    }

    #[test]
    fn the_default_lifetime_cap_is_the_record_ttl_cap() {
        assert_eq!(RecordLimits::default().max_ttl, MAX_RECORD_TTL);
    }
}
