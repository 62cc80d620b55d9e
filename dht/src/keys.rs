//! Protocol names and key namespaces (DESIGN.md "Records and keys").
//!
//! Everything is namespaced under `/gpumesh/`, never the IPFS defaults, so a gpumesh node never
//! mixes its routing table or store with another network's.

use libp2p::{PeerId, StreamProtocol, kad::RecordKey};

use crate::rules::ServiceName;

/// Kademlia protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/gpumesh/kad/1.0.0");
/// Identify `protocol_version`. libp2p-identify 0.48 always speaks `/ipfs/id/1.0.0` on the wire,
/// so this string is how peers of our network recognise each other.
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
}
