#![no_main]
//! `keys::parse_key` on arbitrary key bytes (every inbound kad record and provider key).
//!
//! Beyond "no panic", a key that parses must be the canonical spelling of what it parsed to:
//! otherwise one shard has many keys (`…/7`, `…/07`, `…/+7`), each a separate store slot a peer
//! can fill, which defeats the `MAX_SHARDS` bound (this target found that bug; fixed).

use gpumesh_dht::keys::{self, MAX_KEY_BYTES, MAX_SHARDS, ParsedKey};
use libfuzzer_sys::fuzz_target;
use libp2p::kad::RecordKey;

fuzz_target!(|data: &[u8]| {
    let key = RecordKey::new(&data);
    let Some(parsed) = keys::parse_key(&key) else {
        return;
    };
    assert!(data.len() <= MAX_KEY_BYTES);
    let canonical = match &parsed {
        ParsedKey::Worker(peer) => keys::worker_key(peer),
        ParsedKey::Service { service, shard } => {
            assert!(*shard < MAX_SHARDS && gpumesh_dht::ServiceName::parse(service).is_ok());
            keys::service_key(service, *shard)
        }
    };
    assert_eq!(
        canonical.as_ref(),
        data,
        "non-canonical key accepted: {:?}",
        String::from_utf8_lossy(data)
    );
});
