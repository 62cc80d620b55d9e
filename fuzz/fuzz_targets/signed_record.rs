#![no_main]
//! `SignedRecord::verify` on arbitrary bytes: the decoder of every DHT value a peer stores at,
//! or returns to, this node, and of record announcements on the gossip topic.
//!
//! Random bytes rarely carry a valid signature, so this target mostly covers the size cap, the
//! protobuf envelope and signature check; `worker_record_json` signs its input first to reach
//! what lies behind them.

use gpumesh_dht::{SignedRecord, keys, rules::RecordLimits};
use libfuzzer_sys::fuzz_target;
use libp2p::kad::RecordKey;

/// A fixed clock (2026-01-01T00:00:00Z) so every run, and every crash, reproduces.
const NOW_MS: u64 = 1_767_225_600_000;

fuzz_target!(|data: &[u8]| {
    let limits = RecordLimits::default();
    if let Ok(sr) = SignedRecord::verify(data, None, &limits, NOW_MS) {
        // Accepted: the signer is named consistently, the cap held, and the value verifies
        // under its own worker key too.
        assert!(data.len() <= limits.max_value_bytes);
        assert_eq!(sr.record.peer_id, sr.peer_id.to_base58());
        assert_eq!(sr.bytes, data);
        let key = keys::worker_key(&sr.peer_id);
        assert!(SignedRecord::verify(data, Some(&key), &limits, NOW_MS).is_ok());
    }
    // Under a key of another namespace a value is always refused.
    let other = RecordKey::new(&"/gpumesh/v1/svc/ocr/0");
    assert!(SignedRecord::verify(data, Some(&other), &limits, NOW_MS).is_err());
});
