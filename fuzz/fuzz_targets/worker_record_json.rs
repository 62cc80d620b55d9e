#![no_main]
//! The `WorkerRecord` JSON decoder, twice: bare (what `POST /api/workers/register` parses) and
//! inside an envelope signed here with a fixed key, so that mutated JSON reaches the checks
//! behind the signature (signer, times, schema) instead of dying at the signature check.

use std::sync::LazyLock;

use gpumesh_dht::{
    SignedRecord, WorkerRecord, keys,
    signed::{RECORD_DOMAIN, RECORD_PAYLOAD_TYPE},
    rules::{MAX_GPUS, MAX_SERVICES, MAX_URL, RecordLimits},
};
use libfuzzer_sys::fuzz_target;
use libp2p::core::SignedEnvelope;
use libp2p::identity::Keypair;

/// A fixed clock (2026-01-01T00:00:00Z); the corpus records are valid at this instant.
const NOW_MS: u64 = 1_767_225_600_000;

/// The fuzzing worker's key (the corpus records name its peer id).
static KEY: LazyLock<Keypair> =
    LazyLock::new(|| Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes"));

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<WorkerRecord>(data) {
        // Whatever parsed can be written back (non-finite floats become `null`).
        let _ = serde_json::to_vec(&record);
    }
    let limits = RecordLimits::default();
    let envelope = SignedEnvelope::new(
        &KEY,
        RECORD_DOMAIN.to_owned(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        data.to_vec(),
    )
    .expect("ed25519 signing does not fail");
    let bytes = envelope.into_protobuf_encoding();
    let peer = KEY.public().to_peer_id();
    if let Ok(sr) = SignedRecord::verify(&bytes, Some(&keys::worker_key(&peer)), &limits, NOW_MS) {
        // Accepted records obey the schema the gateway relies on.
        let r = &sr.record;
        assert_eq!(sr.peer_id, peer);
        assert!(r.services.len() <= MAX_SERVICES && r.gpus.len() <= MAX_GPUS);
        assert!(r.services.iter().all(|s| gpumesh_dht::ServiceName::parse(s.as_str()).is_ok()));
        assert!(r.tunnel_url.len() <= MAX_URL);
        assert!(r.issued_at_ms < r.expires_at_ms && r.expires_at_ms > NOW_MS);
        assert!(bytes.len() <= limits.max_value_bytes);
    }
});
