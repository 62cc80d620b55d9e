//! Why inbound data is refused ([`RejectReason`]); the limits it is checked against are the
//! rulebook's ([`crate::rules::limits`]).
//!
//! Every inbound record and provider goes through here (`StoreInserts::FilterBoth`), as does every
//! gossip message; each refusal is counted by reason in [`crate::metrics::DhtMetrics`].

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
    /// The record claims hardware that cannot exist
    /// ([`crate::rules::check_claims`]: a known GPU with more VRAM than its class ships with,
    /// more free VRAM than total, too many GPUs).
    #[error("implausible claims")]
    Implausible,
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
            Self::Implausible => "implausible",
            Self::TooManyAddresses => "too_many_addresses",
            Self::StoreFull => "store_full",
            Self::NotAdmitted => "not_admitted",
        }
    }
}
