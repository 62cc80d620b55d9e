#![no_main]
//! Messages on the load topic (`dht/src/gossip.rs`): one tag byte, then a heartbeat JSON (1), a
//! record envelope (2) or a leave JSON (3).
//!
//! `GossipMessage::decode` is crate-private, so this target applies the same framing to the
//! public body types and `SignedRecord::verify`, exactly as `node/events.rs` does on receipt.

use gpumesh_dht::{
    SignedRecord,
    gossip::{Heartbeat, Leave},
    keys,
    rules::RecordLimits,
};
use libfuzzer_sys::fuzz_target;
use libp2p::PeerId;
use std::sync::LazyLock;

/// A fixed clock (2026-01-01T00:00:00Z).
const NOW_MS: u64 = 1_767_225_600_000;

/// The authenticated gossip source the record must be signed by.
static SOURCE: LazyLock<PeerId> = LazyLock::new(|| {
    libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32])
        .expect("32 bytes")
        .public()
        .to_peer_id()
});

fuzz_target!(|data: &[u8]| {
    let Some((tag, body)) = data.split_first() else {
        return;
    };
    match tag {
        1 => {
            if let Ok(hb) = serde_json::from_slice::<Heartbeat>(body) {
                // Integers and enums only: what we send is what the peer reads back.
                let again = serde_json::to_vec(&hb).expect("serialisable");
                assert_eq!(serde_json::from_slice::<Heartbeat>(&again).ok(), Some(hb));
            }
        }
        2 => {
            let key = keys::worker_key(&SOURCE);
            if let Ok(sr) = SignedRecord::verify(body, Some(&key), &RecordLimits::default(), NOW_MS)
            {
                assert_eq!(sr.peer_id, *SOURCE);
            }
        }
        3 => {
            if let Ok(leave) = serde_json::from_slice::<Leave>(body) {
                let again = serde_json::to_vec(&leave).expect("serialisable");
                assert_eq!(serde_json::from_slice::<Leave>(&again).ok(), Some(leave));
            }
        }
        _ => {}
    }
});
