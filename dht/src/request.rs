//! Signed registry requests: a worker proves that a heartbeat or deregistration is its own.
//!
//! The fallback registry's bearer token is shared by every volunteer agent, so it says "one of
//! ours", not "worker X". Under operator admission a registration already carries the worker's
//! signed record; heartbeats and deregistrations carry a signature too, made with the same key
//! (the one behind the worker's peer id), over
//!
//! ```text
//! gpumesh-registry-request/v1 \n <action> \n <worker id> \n <signed_at_ms> \n <body>
//! ```
//!
//! sent as two headers, [`SIGNED_AT_HEADER`] (ms since the Unix epoch) and [`SIGNATURE_HEADER`]
//! (hex). The action names the operation (`heartbeat`, `deregister`), not the URL path, so a
//! reverse proxy that rewrites paths does not break it. The gateway takes the public key from
//! the worker id itself (an Ed25519 peer id inlines its key), refuses a time more than
//! [`MAX_SKEW_MS`] from its clock, and refuses a time not newer than the last one it accepted
//! from that worker, so a captured request cannot be replayed.

use std::str::FromStr;

use libp2p::PeerId;
use libp2p::identity::Keypair;

use crate::admission::{hex_decode, hex_encode, inline_public_key};

/// Header with the signing time, ms since the Unix epoch.
pub const SIGNED_AT_HEADER: &str = "x-gpumesh-signed-at";
/// Header with the hex signature.
pub const SIGNATURE_HEADER: &str = "x-gpumesh-signature";
/// Largest accepted distance between the signing time and the gateway's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Domain separation: these bytes can never be mistaken for a record envelope or a token.
const DOMAIN: &str = "gpumesh-registry-request/v1";

/// Why a request signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestSigError {
    /// No signature or time headers.
    #[error("the request is not signed (headers {SIGNED_AT_HEADER} and {SIGNATURE_HEADER})")]
    Missing,
    /// The worker id is not an Ed25519 peer id with an inline key.
    #[error("the worker id does not carry an Ed25519 public key")]
    BadWorkerId,
    /// The headers do not parse.
    #[error("the signature headers are malformed")]
    Malformed,
    /// The signature does not match the worker's key.
    #[error("the signature does not verify against the worker id's key")]
    BadSignature,
    /// The signing time is too far from the gateway's clock.
    #[error("signed at {signed_at_ms}, more than {MAX_SKEW_MS} ms from the gateway's clock")]
    Skewed {
        /// The claimed signing time.
        signed_at_ms: u64,
    },
    /// Not newer than a request already accepted from this worker.
    #[error("signed at {signed_at_ms}, not after the last accepted request ({last_ms})")]
    Replayed {
        /// The claimed signing time.
        signed_at_ms: u64,
        /// The last time accepted.
        last_ms: u64,
    },
}

impl RequestSigError {
    /// A short, bounded label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "unsigned",
            Self::BadWorkerId => "bad_worker_id",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Skewed { .. } => "skewed",
            Self::Replayed { .. } => "replayed",
        }
    }
}

fn message(action: &str, worker_id: &str, signed_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{DOMAIN}\n{action}\n{worker_id}\n{signed_at_ms}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

/// Signs a request; returns the hex signature. The worker id is `key`'s peer id.
///
/// # Errors
/// The key cannot sign (a key type without signing support).
pub fn sign(
    key: &Keypair,
    action: &str,
    signed_at_ms: u64,
    body: &[u8],
) -> Result<String, RequestSigError> {
    let id = key.public().to_peer_id().to_base58();
    key.sign(&message(action, &id, signed_at_ms, body))
        .map(|s| hex_encode(&s))
        .map_err(|_| RequestSigError::BadSignature)
}

/// Checks a request from `worker_id`: the headers' values (`None` when absent), the time
/// against `now_ms` and `last_ms` (the newest time accepted from this worker, if any), and the
/// signature. Returns the signing time, to remember as the new `last_ms`.
///
/// # Errors
/// See [`RequestSigError`].
pub fn verify(
    worker_id: &str,
    action: &str,
    signed_at: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: u64,
    last_ms: Option<u64>,
) -> Result<u64, RequestSigError> {
    let (Some(signed_at), Some(signature)) = (signed_at, signature) else {
        return Err(RequestSigError::Missing);
    };
    let signed_at_ms: u64 = signed_at
        .trim()
        .parse()
        .map_err(|_| RequestSigError::Malformed)?;
    // An Ed25519 signature is 64 bytes; anything else is not worth decoding.
    if signature.len() != 128 {
        return Err(RequestSigError::Malformed);
    }
    let sig = hex_decode(signature).ok_or(RequestSigError::Malformed)?;
    if signed_at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(RequestSigError::Skewed { signed_at_ms });
    }
    let key = PeerId::from_str(worker_id)
        .ok()
        .and_then(|peer| inline_public_key(&peer).ok())
        .ok_or(RequestSigError::BadWorkerId)?;
    if !key.verify(&message(action, worker_id, signed_at_ms, body), &sig) {
        return Err(RequestSigError::BadSignature);
    }
    // Checked last: only a genuine request may be called a replay.
    if let Some(last_ms) = last_ms
        && signed_at_ms <= last_ms
    {
        return Err(RequestSigError::Replayed {
            signed_at_ms,
            last_ms,
        });
    }
    Ok(signed_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn signed(key: &Keypair, action: &str, at: u64, body: &[u8]) -> (String, String) {
        (at.to_string(), sign(key, action, at, body).unwrap())
    }

    #[test]
    fn a_worker_signature_verifies_and_every_change_breaks_it() {
        let key = Keypair::generate_ed25519();
        let id = key.public().to_peer_id().to_base58();
        let body = br#"{"in_flight":3}"#;
        let (at, sig) = signed(&key, "heartbeat", NOW, body);
        let check = |id: &str, action: &str, at: &str, sig: &str, body: &[u8], last| {
            verify(id, action, Some(at), Some(sig), body, NOW, last)
        };
        assert_eq!(check(&id, "heartbeat", &at, &sig, body, None), Ok(NOW));
        // Another body, action, time or worker: refused.
        let bad = Err(RequestSigError::BadSignature);
        assert_eq!(check(&id, "heartbeat", &at, &sig, b"{}", None), bad);
        assert_eq!(check(&id, "deregister", &at, &sig, body, None), bad);
        assert_eq!(
            check(&id, "heartbeat", &(NOW + 1).to_string(), &sig, body, None),
            bad
        );
        let other = Keypair::generate_ed25519()
            .public()
            .to_peer_id()
            .to_base58();
        assert_eq!(check(&other, "heartbeat", &at, &sig, body, None), bad);
        // The same request again: a replay.
        assert_eq!(
            check(&id, "heartbeat", &at, &sig, body, Some(NOW)),
            Err(RequestSigError::Replayed {
                signed_at_ms: NOW,
                last_ms: NOW
            })
        );
    }

    #[test]
    fn missing_malformed_skewed_and_foreign_ids_are_refused() {
        let key = Keypair::generate_ed25519();
        let id = key.public().to_peer_id().to_base58();
        let (at, sig) = signed(&key, "heartbeat", NOW, b"");
        let v = |id: &str, at: Option<&str>, sig: Option<&str>| {
            verify(id, "heartbeat", at, sig, b"", NOW, None)
        };
        assert_eq!(v(&id, None, Some(&sig)), Err(RequestSigError::Missing));
        assert_eq!(v(&id, Some(&at), None), Err(RequestSigError::Missing));
        assert_eq!(
            v(&id, Some("soon"), Some(&sig)),
            Err(RequestSigError::Malformed)
        );
        assert_eq!(
            v(&id, Some(&at), Some("zz")),
            Err(RequestSigError::Malformed)
        );
        assert_eq!(
            v(&id, Some(&at), Some(&"g".repeat(128))),
            Err(RequestSigError::Malformed)
        );
        let old = NOW - MAX_SKEW_MS - 1;
        let (old_at, old_sig) = signed(&key, "heartbeat", old, b"");
        assert_eq!(
            v(&id, Some(&old_at), Some(&old_sig)),
            Err(RequestSigError::Skewed { signed_at_ms: old })
        );
        assert_eq!(
            v("not-a-peer-id", Some(&at), Some(&sig)),
            Err(RequestSigError::BadWorkerId)
        );
        // A peer id whose bytes are no public key cannot be checked.
        let hashed = PeerId::random().to_base58();
        assert_eq!(
            v(&hashed, Some(&at), Some(&sig)),
            Err(RequestSigError::BadWorkerId)
        );
    }
}
