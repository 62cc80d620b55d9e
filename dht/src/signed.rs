//! Signed worker records: a libp2p `SignedEnvelope` around the JSON of a [`WorkerRecord`].
//!
//! The kad `publisher` field is not authenticated, so authenticity lives in the value: the
//! envelope carries the worker's public key and signature, and a record is accepted only when that
//! key's peer id equals both the peer id in the record and the one in the DHT key.
//!
//! The signed payload is the record's JSON plus, when the worker has one, an `admission` field
//! (the hex of its operator [`AdmissionToken`]). It sits beside the record fields rather than in
//! [`WorkerRecord`] so that the schema type stays the same for everyone who builds records, and
//! nodes that do not know the field ignore it.

use libp2p::{PeerId, core::SignedEnvelope, identity::Keypair, kad::RecordKey};

use serde::{Deserialize, Serialize};

use crate::{
    admission::{self, AdmissionToken},
    keys::{self, ParsedKey},
    record::WorkerRecord,
    rules::{RecordLimits, check_claims},
    validate::RejectReason,
};

/// The schema check [`SignedRecord::verify`] applies; the gateway's HTTP registry applies the
/// same one to the records it takes.
pub use crate::rules::limits::{check_gpus, check_schema};

/// Domain separation string of worker record signatures.
pub const RECORD_DOMAIN: &str = "gpumesh-worker-record";
/// Payload type of worker record envelopes.
pub const RECORD_PAYLOAD_TYPE: &[u8] = b"/gpumesh/v1/worker";

/// A verified (or freshly signed) worker record with its wire bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedRecord {
    /// The signer, equal to `record.peer_id`.
    pub peer_id: PeerId,
    /// The record.
    pub record: WorkerRecord,
    /// The worker's admission token, if its record carries one (signature verified; whether
    /// it admits this peer here and now is the node's check).
    pub admission: Option<AdmissionToken>,
    /// The encoded envelope (the DHT value).
    pub bytes: Vec<u8>,
}

/// The signed payload: the record plus the optional admission token.
#[derive(Serialize, Deserialize)]
struct Payload {
    #[serde(flatten)]
    record: WorkerRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    admission: Option<String>,
}

impl SignedRecord {
    /// Signs `record` with `key`. `record.peer_id` is set to the key's peer id. The result is
    /// checked against `limits` and the schema so we never publish what others would refuse.
    pub fn sign(
        key: &Keypair,
        record: WorkerRecord,
        limits: &RecordLimits,
        now_ms: u64,
    ) -> Result<Self, RejectReason> {
        Self::sign_admitted(key, record, None, limits, now_ms)
    }

    /// [`SignedRecord::sign`], carrying the worker's operator admission token.
    pub fn sign_admitted(
        key: &Keypair,
        mut record: WorkerRecord,
        admission: Option<&AdmissionToken>,
        limits: &RecordLimits,
        now_ms: u64,
    ) -> Result<Self, RejectReason> {
        let peer_id = key.public().to_peer_id();
        record.peer_id = peer_id.to_base58();
        let payload = serde_json::to_vec(&Payload {
            record,
            admission: admission.map(admission::record_field),
        })
        .map_err(|_| RejectReason::Malformed)?;
        let envelope = SignedEnvelope::new(
            key,
            RECORD_DOMAIN.to_owned(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            payload,
        )
        .map_err(|_| RejectReason::BadSignature)?;
        let bytes = envelope.into_protobuf_encoding();
        Self::verify(&bytes, Some(&keys::worker_key(&peer_id)), limits, now_ms)
    }

    /// Decodes and verifies a value. With `key`, the key must be the worker key of the signer.
    /// Checks size, envelope, signature, signer, times, schema and plausible claims (not
    /// `seq`: that needs state).
    pub fn verify(
        bytes: &[u8],
        key: Option<&RecordKey>,
        limits: &RecordLimits,
        now_ms: u64,
    ) -> Result<Self, RejectReason> {
        if bytes.len() > limits.max_value_bytes {
            return Err(RejectReason::Oversized);
        }
        let expected_peer = match key.map(keys::parse_key) {
            None => None,
            Some(Some(ParsedKey::Worker(p))) => Some(p),
            Some(_) => return Err(RejectReason::UnknownNamespace),
        };
        let envelope =
            SignedEnvelope::from_protobuf_encoding(bytes).map_err(|_| RejectReason::Malformed)?;
        let (payload, signer) = envelope
            .payload_and_signing_key(RECORD_DOMAIN.to_owned(), RECORD_PAYLOAD_TYPE)
            .map_err(|e| match e {
                libp2p::core::signed_envelope::ReadPayloadError::InvalidSignature => {
                    RejectReason::BadSignature
                }
                _ => RejectReason::Malformed,
            })?;
        let signer = signer.to_peer_id();
        let Payload { record, admission } =
            serde_json::from_slice(payload).map_err(|_| RejectReason::Malformed)?;
        // A token that does not decode or verify is as malformed as any other bad field.
        let admission = admission
            .map(|t| admission::from_record_field(&t))
            .transpose()
            .map_err(|_| RejectReason::Malformed)?;
        if record.peer_id != signer.to_base58() || expected_peer.is_some_and(|p| p != signer) {
            return Err(RejectReason::SignerMismatch);
        }
        check_times(&record, limits, now_ms)?;
        check_schema(&record)?;
        if let Err(claim) = check_claims(&record, &limits.claims) {
            // Metrics count one reason for every implausible claim; the log says which.
            tracing::debug!(peer = %signer, %claim, kind = claim.label(), "implausible record");
            return Err(RejectReason::Implausible);
        }
        Ok(Self {
            peer_id: signer,
            record,
            admission,
            bytes: bytes.to_vec(),
        })
    }
}

fn check_times(r: &WorkerRecord, limits: &RecordLimits, now_ms: u64) -> Result<(), RejectReason> {
    let max_ttl = limits.max_ttl.as_millis() as u64;
    let skew = limits.max_skew.as_millis() as u64;
    if r.expires_at_ms <= r.issued_at_ms
        || r.expires_at_ms - r.issued_at_ms > max_ttl
        || r.issued_at_ms > now_ms.saturating_add(skew)
    {
        return Err(RejectReason::BadTimes);
    }
    if r.expires_at_ms <= now_ms {
        return Err(RejectReason::Expired);
    }
    Ok(())
}
