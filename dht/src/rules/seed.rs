//! Seed addresses: a multiaddr that ends in the seed's peer id, `/…/p2p/<peer id>`.
//!
//! A node dials seeds by address and must know whom it reached (Kademlia adds the peer to its
//! routing table, and a seed that answers under another id is someone else). So a seed without
//! a peer id is refused where it is configured, not discovered later as a silent dial failure.

use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};

/// Why a string is not a seed address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSeed {
    /// The string does not parse as a multiaddr.
    #[error("seed `{seed}` is not a multiaddr: {reason}")]
    NotAMultiaddr {
        /// The seed as given (cut to 200 characters).
        seed: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The multiaddr names no `/p2p/<peer id>`.
    #[error("seed `{0}` lacks a /p2p/<peer_id> part")]
    NoPeerId(String),
}

/// Parses a seed `/…/p2p/<peer id>` (surrounding whitespace ignored) into its peer id and
/// address.
///
/// # Errors
/// [`InvalidSeed`] when it is not a multiaddr or names no peer id.
pub fn parse_seed(s: &str) -> Result<(PeerId, Multiaddr), InvalidSeed> {
    let s = s.trim();
    let addr: Multiaddr =
        s.parse()
            .map_err(|e: libp2p::multiaddr::Error| InvalidSeed::NotAMultiaddr {
                seed: s.chars().take(200).collect(),
                reason: e.to_string(),
            })?;
    let peer = peer_of(&addr).ok_or_else(|| InvalidSeed::NoPeerId(addr.to_string()))?;
    Ok((peer, addr))
}

/// The peer id in a multiaddr's `/p2p/<id>` part, if it has one.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_an_address_with_a_peer_id() {
        let peer = PeerId::random();
        let text = format!("/ip4/203.0.113.5/tcp/4001/p2p/{peer}");
        let (p, addr) = parse_seed(&format!("  {text}\n")).unwrap();
        assert_eq!(p, peer);
        assert_eq!(addr.to_string(), text);
        assert_eq!(peer_of(&addr), Some(peer));
        let dns = format!("/dns4/seed.example.org/tcp/4001/p2p/{peer}");
        assert_eq!(parse_seed(&dns).unwrap().0, peer);
    }

    #[test]
    fn refuses_addresses_without_a_peer_id_and_non_multiaddrs() {
        for bare in ["/ip4/203.0.113.5/tcp/4001", ""] {
            assert!(
                matches!(parse_seed(bare), Err(InvalidSeed::NoPeerId(_))),
                "{bare:?}"
            );
        }
        for bad in [
            "ip4/1.2.3.4/p2p/x",
            "/dns4/seed.example/tcp/4001/p2p/",
            "/p2p/nope",
        ] {
            assert!(
                matches!(parse_seed(bad), Err(InvalidSeed::NotAMultiaddr { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(peer_of(&"/ip4/1.2.3.4/tcp/1".parse().unwrap()), None);
    }
}
