//! Protocol names and key namespaces (docs/dht.md, "Namespaces").
//!
//! Everything is namespaced under `/gpumesh/`, never the IPFS defaults, so a gpumesh node never
//! mixes its routing table or store with another network's.

use cid::{Cid, multihash::Multihash};
use libp2p::{PeerId, StreamProtocol, kad::RecordKey};
use sha2::{Digest, Sha256};

use crate::rules::ServiceName;

/// Kademlia protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/gpumesh/kad/1.0.0");
/// Identify `protocol_version` this node announces. Informational only: the identify spec leaves
/// the field to each implementation (js-libp2p cannot set it), so peers are never judged by it;
/// the kad protocol name, pnet and admission keep other networks out.
pub const IDENTIFY_PROTOCOL: &str = "/gpumesh/id/1.0.0";
/// Gossipsub protocol id (namespaced so we never join another network's meshes).
pub const GOSSIP_PROTOCOL: &str = "/gpumesh/meshsub/1.1.0";
/// Gossip topic of load heartbeats and record announcements.
pub const LOAD_TOPIC: &str = "/gpumesh/v1/load";
/// Prefix of worker record keys: `/gpumesh/v1/worker/<peer_id>`.
pub const WORKER_PREFIX: &str = "/gpumesh/v1/worker/";
/// Prefix of service index keys: `/gpumesh/v1/svc/<service>/<shard>`.
pub const SERVICE_PREFIX: &str = "/gpumesh/v1/svc/";
/// Longest key we accept, bytes.
pub const MAX_KEY_BYTES: usize = 160;
/// Most shards a service index may have (also bounds what a peer may make us store).
pub const MAX_SHARDS: u32 = 4096;

/// The record key of a worker.
pub fn worker_key(peer: &PeerId) -> RecordKey {
    RecordKey::new(&format!("{WORKER_PREFIX}{peer}"))
}

/// The service index key of one shard.
pub fn service_key(service: &str, shard: u32) -> RecordKey {
    RecordKey::new(&format!("{SERVICE_PREFIX}{service}/{shard}"))
}

/// Multicodec of raw bytes: a service CID names the bytes of its [`service_key`].
const RAW_CODEC: u64 = 0x55;
/// Multicodec (multihash code) of sha2-256.
const SHA2_256: u64 = 0x12;
/// Length of a sha2-256 multihash: code (1 byte), digest length (1 byte), 32-byte digest.
const SHA2_256_MULTIHASH_BYTES: usize = 34;

/// The release that drops the legacy string provider keys. Agents provide under the CID key
/// only; until this release `find_workers` also queries the legacy string key
/// ([`legacy_provider_key`]) and merges, so agents from before CID keys are still found, and
/// inbound ADD_PROVIDER under a legacy key is still accepted. Publishing under both keys as
/// well would cost every agent a second ADD_PROVIDER (and its closest-peers query) per service
/// per refresh, which on a gateway serving 500 agents raised its DHT messages by a quarter
/// and the load test's p99 by about 1.5×, for readers that no production component has
/// (only `find_workers`, which queries both keys).
pub const LEGACY_PROVIDER_KEYS_UNTIL: &str = "0.3.0";

/// The CID of one shard of a service's index: CIDv1, codec raw, over the sha2-256 multihash of
/// the bytes of [`service_key`]. Any libp2p implementation can compute it from the service name.
pub fn service_cid(service: &str, shard: u32) -> Cid {
    let digest = Sha256::digest(service_key(service, shard).as_ref());
    let hash = Multihash::wrap(SHA2_256, &digest).expect("a 32-byte digest fits a multihash");
    Cid::new_v1(RAW_CODEC, hash)
}

/// The kad key of one shard's provider records: the multihash bytes of [`service_cid`], which is
/// what GET_PROVIDERS and ADD_PROVIDER carry for a CID in the kad-dht spec (go and js servers
/// store and serve such keys).
pub fn provider_key(service: &str, shard: u32) -> RecordKey {
    RecordKey::new(&service_cid(service, shard).hash().to_bytes())
}

/// Every key one shard's provider records are looked up under: the CID key, then (until
/// [`LEGACY_PROVIDER_KEYS_UNTIL`]) the legacy string key older agents provide under.
pub fn lookup_keys(service: &str, shard: u32) -> Vec<RecordKey> {
    let mut keys = vec![provider_key(service, shard)];
    keys.extend(legacy_provider_key(service, shard));
    keys
}

/// Compatibility window until [`LEGACY_PROVIDER_KEYS_UNTIL`]: the string key
/// (`/gpumesh/v1/svc/<service>/<shard>`) that nodes before CID keys provide under and query.
/// To end the window, delete this function and `is_legacy_provider_key`.
pub fn legacy_provider_key(service: &str, shard: u32) -> Option<RecordKey> {
    Some(service_key(service, shard))
}

/// Whether a string key is a legacy provider key of a shard below `shards` (see
/// [`legacy_provider_key`]; goes with it).
fn is_legacy_provider_key(key: &RecordKey, shards: u32) -> bool {
    matches!(parse_key(key), Some(ParsedKey::Service { shard, .. }) if shard < shards)
}

/// Whether this node stores an inbound provider record under `key`: any well-formed sha2-256
/// multihash (a CID key), or a legacy string key of a shard below `shards`.
///
/// A hash cannot be mapped back to its service without a table of every service, and a
/// gateway stores providers for services it has never heard of, so any such hash is taken.
/// That widens nothing: service names were already free-form, so a peer could always fill
/// many keys; the store's caps (keys, providers per key) and the admission gate bound it.
pub fn is_provider_key(key: &RecordKey, shards: u32) -> bool {
    let bytes = key.as_ref();
    let is_cid_key = bytes.len() == SHA2_256_MULTIHASH_BYTES
        && Multihash::<64>::from_bytes(bytes)
            .is_ok_and(|h| h.code() == SHA2_256 && usize::from(h.size()) == 32);
    is_cid_key || is_legacy_provider_key(key, shards)
}

/// The shard a worker provides for: a stable hash (FNV-1a) of its peer id, so every node agrees.
pub fn shard_of(peer: &PeerId, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in peer.to_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// A key we know, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedKey {
    /// `/gpumesh/v1/worker/<peer_id>`.
    Worker(PeerId),
    /// `/gpumesh/v1/svc/<service>/<shard>`.
    Service {
        /// The service.
        service: String,
        /// The shard.
        shard: u32,
    },
}

/// Parses a record key; `None` for anything outside our namespaces or malformed.
pub fn parse_key(key: &RecordKey) -> Option<ParsedKey> {
    let bytes = key.as_ref();
    if bytes.len() > MAX_KEY_BYTES {
        return None;
    }
    let s = std::str::from_utf8(bytes).ok()?;
    if let Some(peer) = s.strip_prefix(WORKER_PREFIX) {
        return peer.parse().ok().map(ParsedKey::Worker);
    }
    let rest = s.strip_prefix(SERVICE_PREFIX)?;
    let (service, shard_text) = rest.rsplit_once('/')?;
    let shard: u32 = shard_text.parse().ok()?;
    // Only the canonical spelling: `07` or `+7` would give one shard many keys to fill.
    if shard_text != shard.to_string() {
        return None;
    }
    (ServiceName::parse(service).is_ok() && shard < MAX_SHARDS).then(|| ParsedKey::Service {
        service: service.to_owned(),
        shard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let peer = PeerId::random();
        assert_eq!(parse_key(&worker_key(&peer)), Some(ParsedKey::Worker(peer)));
        assert_eq!(
            parse_key(&service_key("ocr", 7)),
            Some(ParsedKey::Service {
                service: "ocr".into(),
                shard: 7
            })
        );
        assert_eq!(parse_key(&RecordKey::new(&"/ipfs/x")), None);
        assert_eq!(parse_key(&RecordKey::new(&"/gpumesh/v1/svc/OCR/1")), None);
        assert_eq!(
            parse_key(&RecordKey::new(&"/gpumesh/v1/svc/ocr/99999")),
            None
        );
        assert!(shard_of(&peer, 8) < 8);
        assert_eq!(shard_of(&peer, 8), shard_of(&peer, 8));
    }

    /// Known answers, computed independently with js `multiformats` (`CID.createV1(raw.code,
    /// await sha256.digest(bytes))`): a change here breaks every other implementation.
    #[test]
    fn service_cids_match_multiformats() {
        assert_eq!(
            service_cid("ocr", 7).to_string(),
            "bafkreiety3h7lohfjje7xxcxpqwzjxfkziitilevy7agyig3ncndkzjzwu"
        );
        assert_eq!(
            service_cid("llama-3.1-8b", 0).to_string(),
            "bafkreibuuaa5bklwgdclbf44zglpfp23pon6ninuijvwi5637uhj7vxvpm"
        );
        let key = provider_key("ocr", 7);
        assert_eq!(key.as_ref().len(), SHA2_256_MULTIHASH_BYTES);
        assert_eq!(
            key.as_ref()[..6],
            [0x12, 0x20, 0x93, 0xc6, 0xcf, 0xf5],
            "the kad key is the CID's multihash, not the CID"
        );
    }

    #[test]
    fn provider_keys_accepted_inbound() {
        assert!(is_provider_key(&provider_key("ocr", 7), 8));
        // A CID key is taken for any shard: the hash does not tell which.
        assert!(is_provider_key(&provider_key("ocr", 4000), 8));
        assert!(is_provider_key(&service_key("ocr", 7), 8));
        assert!(!is_provider_key(&service_key("ocr", 8), 8));
        assert_eq!(lookup_keys("ocr", 7).len(), 2);
        // Other multihashes and malformed ones are refused.
        let mut sha512 = vec![0x13, 0x40];
        sha512.extend([7u8; 64]);
        assert!(!is_provider_key(&RecordKey::new(&sha512), 8));
        let mut short = provider_key("ocr", 7).to_vec();
        short.pop();
        assert!(!is_provider_key(&RecordKey::new(&short), 8));
        let mut identity = vec![0x00, 0x20];
        identity.extend([7u8; 32]);
        assert!(!is_provider_key(&RecordKey::new(&identity), 8));
        assert!(!is_provider_key(&RecordKey::new(&"/ipfs/x"), 8));
    }

    /// The compatibility window closes with the release named in
    /// [`LEGACY_PROVIDER_KEYS_UNTIL`]: this fails from then on, until the legacy keys are gone.
    #[test]
    fn legacy_provider_keys_window_is_open() {
        let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
        assert!(
            version(env!("CARGO_PKG_VERSION")) < version(LEGACY_PROVIDER_KEYS_UNTIL),
            "version {} reached {LEGACY_PROVIDER_KEYS_UNTIL}: delete legacy_provider_key and \
             is_legacy_provider_key (dht/src/keys.rs)",
            env!("CARGO_PKG_VERSION")
        );
    }
}
