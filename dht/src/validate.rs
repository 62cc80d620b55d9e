//! Why inbound data is refused, and the limits it is checked against.
//!
//! Every inbound record and provider goes through here (`StoreInserts::FilterBoth`), as does every
//! gossip message; each refusal is counted by reason in [`crate::metrics::DhtMetrics`].

use std::time::Duration;

/// Why a record, provider or gossip message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RejectReason {
    /// The key is not in one of our namespaces, or is malformed.
    #[error("unknown or malformed key namespace")]
    UnknownNamespace,
    /// The value is bigger than the cap.
    #[error("value too large")]
    Oversized,
    /// The value is not a signed envelope of a worker record, or the JSON does not parse.
    #[error("malformed value")]
    Malformed,
    /// The envelope's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The signer is not the peer named in the key or in the record.
    #[error("signer does not match the key's peer id")]
    SignerMismatch,
    /// The record has expired.
    #[error("record expired")]
    Expired,
    /// The record claims a lifetime longer than allowed, or was issued in the future.
    #[error("record times out of bounds")]
    BadTimes,
    /// A record with the same or a newer `seq` is already held.
    #[error("stale seq")]
    StaleSeq,
    /// The record parses but breaks the schema (lengths, counts, names).
    #[error("schema violation")]
    Schema,
    /// A provider record names too many addresses.
    #[error("too many provider addresses")]
    TooManyAddresses,
    /// The local store refused it (full).
    #[error("store full")]
    StoreFull,
    /// Admission is enforced and the peer has no valid, unexpired operator token for its own
    /// peer id (missing, for another peer, expired, or signed by an untrusted operator).
    #[error("peer not admitted")]
    NotAdmitted,
}

impl RejectReason {
    /// Stable label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownNamespace => "unknown_namespace",
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::SignerMismatch => "signer_mismatch",
            Self::Expired => "expired",
            Self::BadTimes => "bad_times",
            Self::StaleSeq => "stale_seq",
            Self::Schema => "schema",
            Self::TooManyAddresses => "too_many_addresses",
            Self::StoreFull => "store_full",
            Self::NotAdmitted => "not_admitted",
        }
    }
}

/// Limits applied to records (the same on every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    /// Largest signed envelope, bytes.
    pub max_value_bytes: usize,
    /// Longest lifetime (`expires_at - issued_at`) a record may claim.
    pub max_ttl: Duration,
    /// Allowed clock skew for `issued_at` in the future.
    pub max_skew: Duration,
}

impl Default for RecordLimits {
    fn default() -> Self {
        Self {
            max_value_bytes: 4096,
            max_ttl: Duration::from_secs(600),
            max_skew: Duration::from_secs(60),
        }
    }
}

/// Most addresses a provider record may carry.
pub const MAX_PROVIDER_ADDRS: usize = 8;
/// Most services a record may list.
pub const MAX_SERVICES: usize = 32;
/// Most GPUs a record may list.
pub const MAX_GPUS: usize = 16;
/// Longest free-text field (model, uuid, version, capability), bytes.
pub const MAX_TEXT: usize = 256;
/// Longest tunnel URL, bytes.
pub const MAX_URL: usize = 512;
