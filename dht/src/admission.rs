//! Operator-signed worker admission (docs/SECURITY.md: keep outsiders out).
//!
//! A network key (pnet) keeps strangers off the wire, but every holder of it is equal. Admission
//! adds a second, per-worker gate: an operator holds an Ed25519 key, and for each worker it
//! signs an [`AdmissionToken`] naming that worker's peer id and an expiry (`not_after`). The
//! worker carries the token inside its signed record; nodes configured with the operator's
//! public key ([`Admission::trusted`]) refuse records, provider records and gossip from any
//! peer without a valid, unexpired token for exactly that peer id
//! (`gpumesh_dht_records_rejected{reason="not_admitted"}`). With no trusted key configured,
//! nothing is checked.
//!
//! The token is a libp2p signed envelope (domain [`ADMISSION_DOMAIN`], payload type
//! [`ADMISSION_PAYLOAD_TYPE`]) around a small JSON payload, so an operator signature can never
//! be replayed as a record or gossip signature, or the other way round. Tokens are public data
//! (they prove nothing without the worker's private key, which signs the record around them).
//!
//! The operator's public key is written as its libp2p peer id (`12D3KooW…`): for Ed25519 keys
//! the peer id embeds the whole public key, so it is both short and sufficient to verify.
//!
//! Token files are text: `#` comment lines (informational: peer, operator, expiry) and one line
//! `gpumesh-admission-v1:<hex of the envelope>`.

use std::{fmt, path::Path, str::FromStr};

use libp2p::{
    PeerId,
    core::SignedEnvelope,
    identity::{Keypair, PublicKey},
};
use serde::{Deserialize, Serialize};

use crate::DhtError;

/// Domain separation string of admission signatures.
pub const ADMISSION_DOMAIN: &str = "gpumesh-worker-admission";
/// Payload type of admission envelopes.
pub const ADMISSION_PAYLOAD_TYPE: &[u8] = b"/gpumesh/v1/admission";
/// Prefix of the text form of a token (version tag).
pub const TOKEN_TEXT_TAG: &str = "gpumesh-admission-v1:";
/// Largest encoded token, bytes (an Ed25519 token is about 200).
pub const MAX_TOKEN_BYTES: usize = 512;
/// Largest token file, bytes (comments included).
pub const MAX_TOKEN_FILE_BYTES: usize = 4096;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Not a token: bad text form, bad envelope, bad payload, or too large.
    #[error("not a gpumesh admission token ({0})")]
    Malformed(&'static str),
    /// The envelope's signature does not verify.
    #[error("the admission token's signature does not verify")]
    BadSignature,
    /// An operator public key that does not parse.
    #[error(
        "not an operator public key ({0}); use the value `gpumesh keygen --operator-key` prints"
    )]
    BadOperatorKey(&'static str),
    /// The operator key is not Ed25519.
    #[error("operator keys must be Ed25519")]
    NotEd25519,
    /// The token admits another peer.
    #[error("the admission token is for peer {token}, not {peer}")]
    WrongPeer {
        /// The peer the token names (base58).
        token: String,
        /// The peer presenting it (base58).
        peer: String,
    },
    /// The token's `not_after` has passed.
    #[error("the admission token expired (not_after {not_after_ms} ms since the epoch)")]
    Expired {
        /// The token's `not_after`.
        not_after_ms: u64,
    },
    /// The token is signed by an operator this node does not trust.
    #[error("the admission token is signed by operator {0}, which this node does not trust")]
    UntrustedOperator(String),
    /// The record carries no token.
    #[error("no admission token")]
    Missing,
}

/// An operator's Ed25519 public key, written and parsed as its libp2p peer id (`12D3KooW…`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct OperatorKey(PublicKey);

impl OperatorKey {
    /// The public key of an operator keypair.
    pub fn of(keypair: &Keypair) -> Result<Self, AdmissionError> {
        Self::from_public(keypair.public())
    }

    /// Wraps a public key; only Ed25519 keys (whose peer id embeds the key) are accepted.
    pub fn from_public(key: PublicKey) -> Result<Self, AdmissionError> {
        key.clone()
            .try_into_ed25519()
            .map(|_| Self(key))
            .map_err(|_| AdmissionError::NotEd25519)
    }

    /// The key.
    pub fn public(&self) -> &PublicKey {
        &self.0
    }
}

impl fmt::Display for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.to_peer_id())
    }
}

impl fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OperatorKey({self})")
    }
}

impl FromStr for OperatorKey {
    type Err = AdmissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let peer = PeerId::from_str(s.trim())
            .map_err(|_| AdmissionError::BadOperatorKey("not a peer id"))?;
        let key = inline_public_key(&peer).map_err(|e| match e {
            InlineKeyError::Hashed => AdmissionError::NotEd25519,
            InlineKeyError::Undecodable => AdmissionError::BadOperatorKey("does not decode"),
        })?;
        Self::from_public(key)
    }
}

/// Why a peer id yields no public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InlineKeyError {
    /// The id is a hash of its key (large key types), not the key itself.
    Hashed,
    /// The id's bytes do not decode as a public key.
    Undecodable,
}

/// The public key a peer id carries inline: for small keys (Ed25519) the id is an identity
/// multihash (code 0) whose digest is the protobuf-encoded key.
pub(crate) fn inline_public_key(peer: &PeerId) -> Result<PublicKey, InlineKeyError> {
    let mh: &libp2p::multihash::Multihash<64> = peer.as_ref();
    if mh.code() != 0 {
        return Err(InlineKeyError::Hashed);
    }
    PublicKey::try_decode_protobuf(mh.digest()).map_err(|_| InlineKeyError::Undecodable)
}

/// The signed payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// Format version (1).
    v: u8,
    /// The admitted worker, base58.
    peer_id: String,
    /// When the operator signed, ms since the Unix epoch.
    issued_at_ms: u64,
    /// When admission ends, ms since the Unix epoch.
    not_after_ms: u64,
}

/// A verified operator signature admitting one worker until `not_after`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdmissionToken {
    peer_id: PeerId,
    operator: OperatorKey,
    issued_at_ms: u64,
    not_after_ms: u64,
    bytes: Vec<u8>,
}

impl fmt::Debug for AdmissionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdmissionToken")
            .field("peer_id", &self.peer_id)
            .field("operator", &self.operator)
            .field("issued_at_ms", &self.issued_at_ms)
            .field("not_after_ms", &self.not_after_ms)
            .finish()
    }
}

impl AdmissionToken {
    /// Signs a token admitting `peer_id` until `not_after_ms` with the operator's key.
    pub fn issue(
        operator: &Keypair,
        peer_id: PeerId,
        issued_at_ms: u64,
        not_after_ms: u64,
    ) -> Result<Self, AdmissionError> {
        OperatorKey::of(operator)?;
        let payload = serde_json::to_vec(&Payload {
            v: 1,
            peer_id: peer_id.to_base58(),
            issued_at_ms,
            not_after_ms,
        })
        .map_err(|_| AdmissionError::Malformed("payload does not encode"))?;
        let envelope = SignedEnvelope::new(
            operator,
            ADMISSION_DOMAIN.to_owned(),
            ADMISSION_PAYLOAD_TYPE.to_vec(),
            payload,
        )
        .map_err(|_| AdmissionError::BadSignature)?;
        Self::from_bytes(&envelope.into_protobuf_encoding())
    }

    /// Decodes a token and verifies its signature (not the peer, expiry or operator: see
    /// [`AdmissionToken::check`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AdmissionError> {
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(AdmissionError::Malformed("too large"));
        }
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|_| AdmissionError::Malformed("not a signed envelope"))?;
        let (payload, signer) = envelope
            .payload_and_signing_key(ADMISSION_DOMAIN.to_owned(), ADMISSION_PAYLOAD_TYPE)
            .map_err(|e| match e {
                libp2p::core::signed_envelope::ReadPayloadError::InvalidSignature => {
                    AdmissionError::BadSignature
                }
                _ => AdmissionError::Malformed("wrong payload type"),
            })?;
        let operator = OperatorKey::from_public(signer.clone())?;
        let p: Payload = serde_json::from_slice(payload)
            .map_err(|_| AdmissionError::Malformed("payload is not JSON"))?;
        if p.v != 1 {
            return Err(AdmissionError::Malformed("unknown version"));
        }
        let peer_id = PeerId::from_str(&p.peer_id)
            .map_err(|_| AdmissionError::Malformed("peer id does not parse"))?;
        if p.not_after_ms <= p.issued_at_ms {
            return Err(AdmissionError::Malformed(
                "not_after is not after issued_at",
            ));
        }
        Ok(Self {
            peer_id,
            operator,
            issued_at_ms: p.issued_at_ms,
            not_after_ms: p.not_after_ms,
            bytes: bytes.to_vec(),
        })
    }

    /// The encoded envelope.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The text form: `gpumesh-admission-v1:<hex>`.
    pub fn to_text(&self) -> String {
        format!("{TOKEN_TEXT_TAG}{}", hex_encode(&self.bytes))
    }

    /// Parses the text form (surrounding whitespace ignored) and verifies the signature.
    pub fn from_text(text: &str) -> Result<Self, AdmissionError> {
        let hex = text
            .trim()
            .strip_prefix(TOKEN_TEXT_TAG)
            .ok_or(AdmissionError::Malformed(
                "missing gpumesh-admission-v1: tag",
            ))?;
        if hex.len() > 2 * MAX_TOKEN_BYTES {
            return Err(AdmissionError::Malformed("too large"));
        }
        let bytes = hex_decode(hex).ok_or(AdmissionError::Malformed("bad hex"))?;
        Self::from_bytes(&bytes)
    }

    /// The admitted worker.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The operator that signed it.
    pub fn operator(&self) -> &OperatorKey {
        &self.operator
    }

    /// When the operator signed it, ms since the Unix epoch.
    pub fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }

    /// When admission ends, ms since the Unix epoch.
    pub fn not_after_ms(&self) -> u64 {
        self.not_after_ms
    }

    /// Whether this token admits `peer` now under `trusted` operators.
    pub fn check(
        &self,
        peer: &PeerId,
        trusted: &[OperatorKey],
        now_ms: u64,
    ) -> Result<(), AdmissionError> {
        if self.peer_id != *peer {
            return Err(AdmissionError::WrongPeer {
                token: self.peer_id.to_base58(),
                peer: peer.to_base58(),
            });
        }
        if !trusted.contains(&self.operator) {
            return Err(AdmissionError::UntrustedOperator(self.operator.to_string()));
        }
        if self.not_after_ms <= now_ms {
            return Err(AdmissionError::Expired {
                not_after_ms: self.not_after_ms,
            });
        }
        Ok(())
    }

    /// The token file: informational comments, then the text form.
    pub fn to_file_text(&self) -> String {
        format!(
            "# gpumesh worker admission (public data; the worker's own key is what proves it)\n\
             # peer_id: {}\n# operator: {}\n# issued_at_ms: {}\n# not_after_ms: {}\n{}\n",
            self.peer_id,
            self.operator,
            self.issued_at_ms,
            self.not_after_ms,
            self.to_text()
        )
    }

    /// Parses a token file: blank and `#` lines are skipped; exactly one token line remains.
    pub fn from_file_text(text: &str) -> Result<Self, AdmissionError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines
            .next()
            .ok_or(AdmissionError::Malformed("empty file"))?;
        if lines.next().is_some() {
            return Err(AdmissionError::Malformed("more than one token line"));
        }
        Self::from_text(line)
    }
}

/// Admission settings of one node.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// This node's own token, carried in every record it publishes (workers).
    pub token: Option<AdmissionToken>,
    /// Operators whose tokens this node accepts. Empty: admission is not enforced.
    pub trusted: Vec<OperatorKey>,
}

impl Admission {
    /// Whether this node refuses data from peers without a token.
    pub fn enforced(&self) -> bool {
        !self.trusted.is_empty()
    }
}

/// Reads a token file (see the module docs for the format).
pub fn load_token(path: &Path) -> Result<AdmissionToken, DhtError> {
    let bad = |reason: String| DhtError::BadKey {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_TOKEN_FILE_BYTES as u64 {
        return Err(bad("larger than an admission token file can be".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    AdmissionToken::from_file_text(&text).map_err(|e| bad(e.to_string()))
}

/// Writes a token file; refuses to overwrite an existing file.
pub fn write_token(path: &Path, token: &AdmissionToken) -> Result<(), DhtError> {
    use std::io::Write;
    let err = |source| DhtError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err)?;
    file.write_all(token.to_file_text().as_bytes())
        .map_err(err)?;
    file.sync_all().map_err(err)
}

/// Parses a list of operator keys (`--admission-pubkey`), naming the bad one.
pub fn parse_operator_keys<S: AsRef<str>>(keys: &[S]) -> Result<Vec<OperatorKey>, DhtError> {
    keys.iter()
        .map(|k| {
            k.as_ref().parse().map_err(|e: AdmissionError| {
                DhtError::Config(format!("admission public key `{}`: {e}", k.as_ref()))
            })
        })
        .collect()
}

/// Parses a base58 peer id (for callers that do not depend on libp2p themselves).
pub fn parse_peer_id(s: &str) -> Result<PeerId, AdmissionError> {
    PeerId::from_str(s.trim()).map_err(|_| AdmissionError::Malformed("peer id does not parse"))
}

/// Lower-case hex of `bytes` (the encoding tokens and signed records use in text and JSON).
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Decodes [`hex_encode`]'s output (either case); `None` when it is not hex.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Hex of a token's bytes as records carry it (no tag: the record field names it).
pub(crate) fn record_field(token: &AdmissionToken) -> String {
    hex_encode(&token.bytes)
}

/// Decodes the record field form.
pub(crate) fn from_record_field(hex: &str) -> Result<AdmissionToken, AdmissionError> {
    if hex.len() > 2 * MAX_TOKEN_BYTES {
        return Err(AdmissionError::Malformed("too large"));
    }
    AdmissionToken::from_bytes(&hex_decode(hex).ok_or(AdmissionError::Malformed("bad hex"))?)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn op() -> Keypair {
        Keypair::generate_ed25519()
    }

    #[test]
    fn issue_check_and_round_trip() {
        let k = op();
        let key = OperatorKey::of(&k).unwrap();
        let worker = PeerId::random();
        let t = AdmissionToken::issue(&k, worker, 1_000, 2_000).unwrap();
        assert_eq!(t.peer_id(), worker);
        assert_eq!(t.operator(), &key);
        assert!(t.check(&worker, std::slice::from_ref(&key), 1_500).is_ok());
        assert_eq!(AdmissionToken::from_text(&t.to_text()).unwrap(), t);
        assert_eq!(
            AdmissionToken::from_file_text(&t.to_file_text()).unwrap(),
            t
        );
        assert_eq!(from_record_field(&record_field(&t)).unwrap(), t);
        assert_eq!(key.to_string().parse::<OperatorKey>().unwrap(), key);
    }

    #[test]
    fn check_refuses_wrong_peer_operator_and_expiry() {
        let k = op();
        let key = OperatorKey::of(&k).unwrap();
        let other = OperatorKey::of(&op()).unwrap();
        let worker = PeerId::random();
        let t = AdmissionToken::issue(&k, worker, 1_000, 2_000).unwrap();
        assert!(matches!(
            t.check(&PeerId::random(), std::slice::from_ref(&key), 1_500),
            Err(AdmissionError::WrongPeer { .. })
        ));
        assert!(matches!(
            t.check(&worker, std::slice::from_ref(&other), 1_500),
            Err(AdmissionError::UntrustedOperator(_))
        ));
        assert_eq!(
            t.check(&worker, &[key], 2_000),
            Err(AdmissionError::Expired {
                not_after_ms: 2_000
            })
        );
        assert!(AdmissionToken::issue(&k, worker, 2_000, 2_000).is_err());
    }

    #[test]
    fn other_signatures_and_domains_are_refused() {
        let k = op();
        // A worker-record envelope signed by the operator is not a token (other domain).
        let env = SignedEnvelope::new(
            &k,
            crate::signed::RECORD_DOMAIN.to_owned(),
            ADMISSION_PAYLOAD_TYPE.to_vec(),
            b"{}".to_vec(),
        )
        .unwrap();
        assert_eq!(
            AdmissionToken::from_bytes(&env.into_protobuf_encoding()),
            Err(AdmissionError::BadSignature)
        );
        assert!(AdmissionToken::from_text("gpumesh-admission-v1:zz").is_err());
        assert!(AdmissionToken::from_text("abcd").is_err());
        assert!(AdmissionToken::from_file_text("# only comments\n").is_err());
        assert!("not-a-peer-id".parse::<OperatorKey>().is_err());
        let rsa_like = PeerId::random().to_string(); // random ids are not identity multihashes
        assert!(rsa_like.parse::<OperatorKey>().is_err());
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(issued in 0u64..1u64 << 50, life in 1u64..1u64 << 40) {
            let k = op();
            let worker = PeerId::random();
            let t = AdmissionToken::issue(&k, worker, issued, issued + life).unwrap();
            let back = AdmissionToken::from_text(&t.to_text()).unwrap();
            prop_assert_eq!(back.not_after_ms(), issued + life);
            prop_assert_eq!(back.issued_at_ms(), issued);
            prop_assert_eq!(back.peer_id(), worker);
            prop_assert_eq!(&back, &t);
        }

        #[test]
        fn any_flipped_byte_is_refused(idx in 0usize..512, bit in 0u8..8) {
            let k = op();
            let t = AdmissionToken::issue(&k, PeerId::random(), 1, 2).unwrap();
            let mut bytes = t.as_bytes().to_vec();
            let i = idx % bytes.len();
            bytes[i] ^= 1 << bit;
            // Either it no longer decodes, or it decodes to something that is not this token
            // (a flip in the signer key or signature never verifies).
            prop_assert!(AdmissionToken::from_bytes(&bytes).is_err());
        }

        #[test]
        fn garbage_never_panics(s in ".{0,600}") {
            let _ = AdmissionToken::from_text(&s);
            let _ = AdmissionToken::from_file_text(&s);
            let _ = s.parse::<OperatorKey>();
        }
    }
}
