//! No unbounded allocation in the decoders: what each one allocates is measured with dhat's
//! heap profiler (a safe global allocator, so no `unsafe` here) for adversarial inputs at the
//! largest size the transport lets through, and must stay within a fixed factor of the input.
//!
//! One test in this file: dhat's profiler is process-wide and its counters never reset, so the
//! cases run one after another and each is measured as the bytes allocated while it ran.

use gpumesh_dht::{
    SignedRecord, WorkerRecord,
    gossip::Heartbeat,
    keys,
    rules::RecordLimits,
    wire::{BootstrapResponse, HeartbeatRequest},
};
use libp2p::identity::Keypair;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// 2026-01-01T00:00:00Z.
const NOW_MS: u64 = 1_767_225_600_000;
/// The registry endpoints' body limit (`gateway::api::REGISTRY_BODY_LIMIT`), the largest JSON
/// a peer can make the gateway decode.
const BODY_LIMIT: usize = 64 * 1024;
/// Most bytes a decoder may allocate per input byte (serde builds `Vec`s by doubling, and a
/// 3-byte `"",` becomes a 24-byte `String`).
const MAX_FACTOR: usize = 32;

/// A named input and the decoder it is fed to.
type Case = (&'static str, Vec<u8>, fn(&[u8]));

/// Bytes allocated while `f` runs.
fn allocated(f: impl FnOnce()) -> u64 {
    let before = dhat::HeapStats::get().total_bytes;
    f();
    dhat::HeapStats::get().total_bytes - before
}

/// `{"key":[item,item,…]}` of about `size` bytes.
fn json_list(prefix: &str, item: &str, suffix: &str, size: usize) -> Vec<u8> {
    let mut s = String::from(prefix);
    while s.len() + item.len() + suffix.len() + 1 < size {
        s.push_str(item);
        s.push(',');
    }
    s.pop();
    s.push_str(suffix);
    s.into_bytes()
}

#[test]
fn decoders_allocate_in_proportion_to_their_input() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let limits = RecordLimits::default();
    let peer = Keypair::ed25519_from_bytes([7u8; 32])
        .expect("32 bytes")
        .public()
        .to_peer_id();
    let key = keys::worker_key(&peer);

    // A 1 MiB DHT value is refused by size before any decoding.
    let big = vec![0x0a; 1 << 20];
    let n = allocated(|| {
        let _ = SignedRecord::verify(&big, Some(&key), &limits, NOW_MS);
    });
    assert!(n < 1024, "1 MiB value: {n} bytes allocated");

    // A protobuf envelope whose field claims a 2 GiB length.
    let mut lying = vec![0x0a, 0x80, 0x80, 0x80, 0x80, 0x08];
    lying.resize(limits.max_value_bytes, 0);
    let n = allocated(|| {
        let _ = SignedRecord::verify(&lying, Some(&key), &limits, NOW_MS);
    });
    assert!(n < 64 * 1024, "lying length prefix: {n} bytes allocated");

    // JSON at the body limit, shaped to allocate as much as possible per byte.
    let cases: Vec<Case> = vec![
        (
            "record with 16k empty services",
            json_list(r#"{"services":["#, r#""""#, "]}", BODY_LIMIT),
            |b| drop(serde_json::from_slice::<WorkerRecord>(b)),
        ),
        (
            "record with 4k gpus",
            json_list(
                r#"{"gpus":["#,
                r#"{"model":"","uuid":"","vram_total_mib":0,"vram_free_mib":0}"#,
                "]}",
                BODY_LIMIT,
            ),
            |b| drop(serde_json::from_slice::<WorkerRecord>(b)),
        ),
        (
            "heartbeat with 4k gpus",
            json_list(
                r#"{"gpus":["#,
                r#"{"model":"","uuid":"","vram_total_mib":0,"vram_free_mib":0}"#,
                "]}",
                BODY_LIMIT,
            ),
            |b| drop(serde_json::from_slice::<HeartbeatRequest>(b)),
        ),
        (
            "seed list with 16k empty addresses",
            json_list(
                r#"{"seeds":[{"peer_id":"x","multiaddrs":["#,
                r#""""#,
                "]}]}",
                BODY_LIMIT,
            ),
            |b| drop(serde_json::from_slice::<BootstrapResponse>(b)),
        ),
        (
            "deeply nested arrays",
            {
                let mut v = vec![b'['; BODY_LIMIT / 2];
                v.extend(vec![b']'; BODY_LIMIT / 2]);
                v
            },
            |b| drop(serde_json::from_slice::<Heartbeat>(b)),
        ),
    ];
    for (what, body, decode) in cases {
        assert!(body.len() <= BODY_LIMIT, "{what}: {} bytes", body.len());
        let n = allocated(|| decode(&body));
        let factor = n as f64 / body.len() as f64;
        eprintln!(
            "{what}: {} input bytes, {n} allocated ({factor:.1}x)",
            body.len()
        );
        assert!(
            n <= (MAX_FACTOR * body.len()) as u64,
            "{what}: {n} bytes allocated for {} input bytes",
            body.len()
        );
    }
}
