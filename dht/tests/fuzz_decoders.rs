//! Property-based fuzzing of every decoder in this crate that reads bytes from the network or
//! from disk: signed record envelopes and the `WorkerRecord` JSON inside them, gossip bodies,
//! kad keys, the HTTP wire types, registry request signatures, admission tokens and the key
//! files.
//!
//! Each property feeds arbitrary bytes and structure-aware mutations of valid inputs, and checks
//! that nothing panics, that refusals are the typed reason, and that whatever is accepted obeys
//! the schema. The coverage-guided targets of the same decoders live in `fuzz/` (docs/fuzzing.md);
//! `cargo test -p gpumesh-dht --test fuzz_decoders -- --ignored write_corpus` regenerates their
//! seed corpus from the valid inputs built here.

use std::sync::LazyLock;

use gpumesh_dht::{
    AdmissionToken, DhtError, RejectReason, ServiceName, SignedRecord, WorkerRecord,
    admission::hex_decode,
    gossip::{Heartbeat, Leave},
    identity::{load_network_key, load_or_create_keypair},
    keys::{self, MAX_KEY_BYTES, ParsedKey},
    record::{GpuInfo, LoadInfo, WorkerState},
    request,
    rules::{MAX_GPUS, MAX_SERVICES, MAX_URL, RecordLimits},
    signed::{RECORD_DOMAIN, RECORD_PAYLOAD_TYPE},
    wire::{BootstrapResponse, HeartbeatRequest, RegisterResponse, Seed},
};
use libp2p::{PeerId, core::SignedEnvelope, identity::Keypair, kad::RecordKey};
use proptest::prelude::*;
use serde_json::Value;

/// A fixed clock (2026-01-01T00:00:00Z), the same as the `fuzz/` targets use.
const NOW_MS: u64 = 1_767_225_600_000;

/// The worker key of the corpus (and of the `fuzz/` targets).
static KEY: LazyLock<Keypair> =
    LazyLock::new(|| Keypair::ed25519_from_bytes([7u8; 32]).expect("32 bytes"));

fn peer() -> PeerId {
    KEY.public().to_peer_id()
}

/// Cases per property: enough to matter, few enough that the file runs in seconds in a debug
/// build. `PROPTEST_CASES` raises it for a longer run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A schema-valid record, valid at [`NOW_MS`], not yet signed.
fn valid_record() -> WorkerRecord {
    let mut r = WorkerRecord::new(
        vec!["ocr".parse().unwrap(), "embed".parse().unwrap()],
        "https://w1.example.com",
    );
    r.peer_id = peer().to_base58();
    r.seq = 3;
    r.issued_at_ms = NOW_MS - 1_000;
    r.expires_at_ms = NOW_MS + 300_000;
    r.started_at_ms = NOW_MS - 60_000;
    r.capabilities = vec!["fp8".into()];
    r.gpus = vec![GpuInfo {
        model: "NVIDIA H100 80GB HBM3".into(),
        uuid: "GPU-0000".into(),
        vram_total_mib: 81_559,
        vram_free_mib: 80_000,
        util_pct: Some(12),
        mem_util_pct: None,
        temperature_c: Some(41),
        power_w: Some(120.5),
        power_limit_w: None,
    }];
    r.load = LoadInfo {
        in_flight: 1,
        queue_depth: 0,
        max_concurrency: 4,
    };
    r
}

/// Signs arbitrary payload bytes as a record envelope with [`KEY`].
fn seal(payload: Vec<u8>) -> Vec<u8> {
    SignedEnvelope::new(
        &KEY,
        RECORD_DOMAIN.to_owned(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        payload,
    )
    .expect("ed25519 signing does not fail")
    .into_protobuf_encoding()
}

fn valid_envelope() -> Vec<u8> {
    seal(serde_json::to_vec(&valid_record()).expect("serialisable"))
}

/// What an accepted record must satisfy, whatever bytes it came from.
fn assert_schema(sr: &SignedRecord) {
    let r = &sr.record;
    assert_eq!(r.peer_id, sr.peer_id.to_base58());
    assert!(r.services.len() <= MAX_SERVICES && r.gpus.len() <= MAX_GPUS);
    assert!(
        r.services
            .iter()
            .all(|s| ServiceName::parse(s.as_str()).is_ok())
    );
    assert!(r.tunnel_url.len() <= MAX_URL);
    assert!(r.issued_at_ms < r.expires_at_ms && r.expires_at_ms > NOW_MS);
}

/// One byte-level edit of a valid input.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1..32usize).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Flip(i, b) => {
                if !bytes.is_empty() {
                    bytes[i % len] ^= b;
                }
            }
            Edit::Truncate(i) => bytes.truncate(i % len),
            Edit::Insert(i, v) => {
                let at = i % (bytes.len() + 1);
                bytes.splice(at..at, v.iter().copied());
            }
            Edit::Remove(i, n) => {
                let at = i % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
        }
    }
    bytes
}

/// Arbitrary JSON values, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("x".repeat(300))),
        Just(Value::from(u64::MAX)),
        Just(Value::from(-1)),
        Just(Value::from(1e39)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Paths into a record's JSON that a mutation may replace or delete.
const RECORD_FIELDS: &[&[&str]] = &[
    &["peer_id"],
    &["seq"],
    &["issued_at_ms"],
    &["expires_at_ms"],
    &["state"],
    &["services"],
    &["capabilities"],
    &["tunnel_url"],
    &["gpus"],
    &["host"],
    &["host", "cpu_util_pct"],
    &["host", "load_avg_1m"],
    &["load"],
    &["load", "max_concurrency"],
    &["agent_version"],
    &["started_at_ms"],
];

fn set_path(v: &mut Value, path: &[&str], new: Option<Value>) {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = v;
    for p in parents {
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(obj) = cur.as_object_mut() {
        match new {
            Some(n) => obj.insert((*last).to_owned(), n),
            None => obj.remove(*last),
        };
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Arbitrary bytes as a DHT value: a typed refusal, never a panic; over the cap is
    /// `Oversized` before any parsing.
    #[test]
    fn envelope_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..6000)) {
        let limits = RecordLimits::default();
        let key = keys::worker_key(&peer());
        let verdict = SignedRecord::verify(&bytes, Some(&key), &limits, NOW_MS);
        if bytes.len() > limits.max_value_bytes {
            prop_assert_eq!(verdict, Err(RejectReason::Oversized));
        } else if let Ok(sr) = verdict {
            assert_schema(&sr);
        }
    }

    /// Byte edits of a valid envelope: either refused, or (when the edit only touched framing
    /// the signature does not cover) exactly the signed record.
    #[test]
    fn envelope_mutations(edits in prop::collection::vec(edit(), 1..4)) {
        let bytes = apply(valid_envelope(), &edits);
        let key = keys::worker_key(&peer());
        if let Ok(sr) = SignedRecord::verify(&bytes, Some(&key), &RecordLimits::default(), NOW_MS) {
            prop_assert_eq!(sr.record, valid_record());
        }
    }

    /// Field-level mutations of a valid record's JSON, signed by the right key so they reach
    /// the time and schema checks: whatever is accepted obeys the schema.
    #[test]
    fn record_json_mutations(
        field in 0..RECORD_FIELDS.len(),
        new in prop::option::of(json_value()),
        byte_edits in prop::collection::vec(edit(), 0..2),
    ) {
        let mut v = serde_json::to_value(valid_record()).expect("serialisable");
        set_path(&mut v, RECORD_FIELDS[field], new);
        let payload = apply(serde_json::to_vec(&v).expect("serialisable"), &byte_edits);
        // The registry endpoint decodes the same JSON bare.
        if let Ok(r) = serde_json::from_slice::<WorkerRecord>(&payload) {
            let _ = serde_json::to_vec(&r);
        }
        let key = keys::worker_key(&peer());
        match SignedRecord::verify(&seal(payload), Some(&key), &RecordLimits::default(), NOW_MS) {
            Ok(sr) => assert_schema(&sr),
            Err(reason) => prop_assert!(!reason.as_str().is_empty()),
        }
    }

    /// Gossip bodies (tag byte + heartbeat JSON / envelope / leave JSON), as `node/events.rs`
    /// decodes them: no panic, and integer-only messages read back as sent.
    #[test]
    fn gossip_bodies(tag in 0u8..5, body in prop::collection::vec(any::<u8>(), 0..512)) {
        match tag {
            1 => if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&body) {
                let again = serde_json::to_vec(&hb).expect("serialisable");
                prop_assert_eq!(serde_json::from_slice::<Heartbeat>(&again).ok(), Some(hb));
            },
            2 => {
                let key = keys::worker_key(&peer());
                let _ = SignedRecord::verify(&body, Some(&key), &RecordLimits::default(), NOW_MS);
            }
            3 => if let Ok(l) = serde_json::from_slice::<Leave>(&body) {
                let again = serde_json::to_vec(&l).expect("serialisable");
                prop_assert_eq!(serde_json::from_slice::<Leave>(&again).ok(), Some(l));
            },
            _ => {}
        }
    }

    /// Field mutations of a valid heartbeat.
    #[test]
    fn heartbeat_mutations(
        field in prop::sample::select(vec!["seq", "at_ms", "record_seq", "state", "load",
            "gpu_util_pct", "vram_free_mib", "content_seq", "record_expires_at_ms"]),
        new in prop::option::of(json_value()),
    ) {
        let mut v = serde_json::to_value(heartbeat()).expect("serialisable");
        set_path(&mut v, &[field], new);
        if let Ok(hb) = serde_json::from_value::<Heartbeat>(v) {
            let again = serde_json::to_vec(&hb).expect("serialisable");
            prop_assert_eq!(serde_json::from_slice::<Heartbeat>(&again).ok(), Some(hb));
        }
    }

    /// Arbitrary key bytes, and keys that start like ours: no panic, nothing longer than the
    /// cap parses.
    #[test]
    fn record_keys(
        prefix in prop::sample::select(vec!["", keys::WORKER_PREFIX, keys::SERVICE_PREFIX]),
        rest in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = prefix.as_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        if let Some(parsed) = keys::parse_key(&RecordKey::new(&bytes)) {
            prop_assert!(bytes.len() <= MAX_KEY_BYTES);
            if let ParsedKey::Service { service, .. } = parsed {
                prop_assert!(ServiceName::parse(&service).is_ok());
            }
        }
    }

    /// The HTTP wire types (bootstrap list and the agent's seed cache, register and heartbeat
    /// bodies): arbitrary bytes and JSON never panic, and integer-only types read back as sent.
    #[test]
    fn wire_types(value in json_value(), raw in prop::collection::vec(any::<u8>(), 0..256)) {
        for body in [serde_json::to_vec(&value).expect("serialisable"), raw] {
            if let Ok(b) = serde_json::from_slice::<BootstrapResponse>(&body) {
                let again = serde_json::to_vec(&b).expect("serialisable");
                prop_assert_eq!(serde_json::from_slice::<BootstrapResponse>(&again).ok(), Some(b));
            }
            let _ = serde_json::from_slice::<Seed>(&body);
            let _ = serde_json::from_slice::<RegisterResponse>(&body);
            let _ = serde_json::from_slice::<HeartbeatRequest>(&body);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Admission tokens (bytes from the network, text and files from the operator): arbitrary
    /// input or edits of a valid token never panic; an edited token that still decodes names
    /// the same peer and operator (the signature covers them).
    #[test]
    fn admission_tokens(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        text in "[ -~\n]{0,300}",
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let _ = AdmissionToken::from_bytes(&bytes);
        let _ = AdmissionToken::from_text(&text);
        let _ = AdmissionToken::from_file_text(&text);
        let valid = AdmissionToken::issue(&OPERATOR, peer(), NOW_MS, NOW_MS + 60_000)
            .expect("issue");
        let mutated = apply(valid.as_bytes().to_vec(), &edits);
        if let Ok(t) = AdmissionToken::from_bytes(&mutated) {
            prop_assert_eq!(t.peer_id(), peer());
            prop_assert_eq!(t.operator(), valid.operator());
        }
        let file = apply(valid.to_file_text().into_bytes(), &edits);
        if let Ok(file) = String::from_utf8(file) {
            let _ = AdmissionToken::from_file_text(&file);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// Registry request signatures (two headers and a body from the network): arbitrary
    /// header text never panics and never verifies, and an edited signature, body or time of
    /// a genuine request never verifies either.
    #[test]
    fn registry_request_signatures(
        at in "[ -~]{0,40}",
        sig in "[ -~]{0,200}",
        id in "[ -~]{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        edits in prop::collection::vec(edit(), 1..3),
        which in 0u8..3,
    ) {
        let arbitrary = request::verify(&id, "heartbeat", Some(&at), Some(&sig), &body, NOW_MS, None);
        prop_assert!(arbitrary.is_err());
        let worker = KEY.public().to_peer_id().to_base58();
        let good = request::sign(&KEY, "heartbeat", NOW_MS, &body).expect("signs");
        let (mut at, mut sig, mut edited_body) =
            (NOW_MS.to_string().into_bytes(), good.clone().into_bytes(), body.clone());
        match which {
            0 => at = apply(at, &edits),
            1 => sig = apply(sig, &edits),
            _ => edited_body = apply(edited_body, &edits),
        }
        let (at, sig) = (String::from_utf8_lossy(&at), String::from_utf8_lossy(&sig));
        let edited = request::verify(&worker, "heartbeat", Some(&at), Some(&sig), &edited_body, NOW_MS, None);
        // Only an edit that changed nothing that is signed (the same byte written back, a
        // time that parses to the same number, hex in other case) may verify.
        let same = at.trim().parse::<u64>() == Ok(NOW_MS)
            && hex_decode(&sig) == hex_decode(&good)
            && edited_body == body;
        prop_assert_eq!(edited.is_ok(), same, "{:?}", edited);
    }
}

/// The operator key of the admission properties.
static OPERATOR: LazyLock<Keypair> =
    LazyLock::new(|| Keypair::ed25519_from_bytes([9u8; 32]).expect("32 bytes"));

fn heartbeat() -> Heartbeat {
    Heartbeat {
        seq: 9,
        at_ms: NOW_MS,
        record_seq: 3,
        record_expires_at_ms: NOW_MS + 300_000,
        content_seq: 3,
        state: WorkerState::Online,
        load: LoadInfo::default(),
        gpu_util_pct: Some(40),
        vram_free_mib: Some(1024),
    }
}

proptest! {
    // Each case writes a real file.
    #![proptest_config(config(128))]

    /// Key files with arbitrary content, or a valid keypair / network key file with byte
    /// edits: a typed error, never a panic.
    #[test]
    fn key_files(
        bytes in prop::collection::vec(any::<u8>(), 0..128),
        kind in 0u8..3,
        edits in prop::collection::vec(edit(), 1..3),
    ) {
        let dir = scratch_dir();
        let path = dir.join(format!("k-{kind}-{}", bytes.len()));
        let content = match kind {
            0 => bytes,
            1 => apply(KEY.to_protobuf_encoding().expect("encodable"), &edits),
            _ => apply(PSK_FILE.to_vec(), &edits),
        };
        std::fs::write(&path, &content).expect("scratch file");
        match load_or_create_keypair(&path) {
            Ok(k) => prop_assert_eq!(k.public().to_peer_id(), peer()),
            Err(e) => prop_assert!(matches!(e, DhtError::BadKey { .. }), "{e}"),
        }
        if let Err(e) = load_network_key(&path) {
            prop_assert!(
                matches!(e, DhtError::BadKey { .. } | DhtError::KeyFile { .. }),
                "{e}"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// A valid network key file.
const PSK_FILE: &[u8] =
    b"/key/swarm/psk/1.0.0/\n/base16/\n000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";

/// A network key file with a multi-byte character in the key line must be refused with
/// `BadKey`, not crash the node at start.
///
/// Regression: libp2p-pnet 0.27's `PreSharedKey::from_str` slices the text by byte index and
/// panicked ("end byte index 10 is not a char boundary"); `load_network_key` now refuses
/// non-ASCII text first. Found by `fuzz/fuzz_targets/identity_files.rs`.
#[test]
fn network_key_with_multibyte_character() {
    let path = scratch_dir().join("psk-multibyte");
    std::fs::write(
        &path,
        "/key/swarm/psk/1.0.0/\n/base16/\n60708090a\u{41c}0c0d0e5f1011412311511617181931415161718191a1b1c1d1e1f\n",
    )
    .expect("scratch file");
    let verdict = std::panic::catch_unwind(|| load_network_key(&path).map(|_| ()));
    let _ = std::fs::remove_file(&path);
    match verdict {
        Ok(Err(DhtError::BadKey { .. })) => {}
        Ok(other) => panic!("expected BadKey, got {other:?}"),
        Err(_) => panic!("load_network_key panicked"),
    }
}

fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gpumesh-fuzz-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Two kad keys for one shard let a peer fill many store slots for it: every key that parses
/// must be the canonical spelling of what it names.
///
/// Regression: `parse_key` took the shard with `str::parse::<u32>`, which accepts `07` and
/// `+7`; it now accepts only the canonical spelling. Found by `fuzz/fuzz_targets/record_key.rs`.
#[test]
fn service_keys_are_canonical() {
    for alias in [
        "/gpumesh/v1/svc/ocr/07",
        "/gpumesh/v1/svc/ocr/+7",
        "/gpumesh/v1/svc/ocr/0007",
    ] {
        let parsed = keys::parse_key(&RecordKey::new(&alias));
        assert_eq!(parsed, None, "{alias} is an alias of shard 7");
    }
}

/// Writes the seed corpus of the `fuzz/` targets: `cargo test -p gpumesh-dht --test
/// fuzz_decoders -- --ignored write_corpus` (from the workspace root).
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("corpus file");
    };
    let record_json = serde_json::to_vec(&valid_record()).expect("serialisable");
    put("signed_record", "valid", &valid_envelope());
    put("signed_record", "empty", b"");
    let mut minimal = valid_record();
    minimal.gpus.clear();
    minimal.capabilities.clear();
    put(
        "signed_record",
        "no-gpus",
        &seal(serde_json::to_vec(&minimal).expect("json")),
    );
    put("worker_record_json", "valid", &record_json);
    put(
        "worker_record_json",
        "no-gpus",
        &serde_json::to_vec(&minimal).expect("json"),
    );
    let mut tagged = vec![1u8];
    tagged.extend(serde_json::to_vec(&heartbeat()).expect("json"));
    put("gossip_message", "heartbeat", &tagged);
    let mut rec = vec![2u8];
    rec.extend(valid_envelope());
    put("gossip_message", "record", &rec);
    put("gossip_message", "leave", b"\x03{\"record_seq\":3}");
    put("record_key", "worker", keys::worker_key(&peer()).as_ref());
    put(
        "record_key",
        "service",
        keys::service_key("ocr", 7).as_ref(),
    );
    let seeds = BootstrapResponse {
        seeds: vec![Seed {
            peer_id: peer().to_base58(),
            multiaddrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer())],
            role: "gateway".into(),
        }],
        ttl_secs: 3600,
        count: 1,
    };
    let mut wire = vec![0u8];
    wire.extend(serde_json::to_vec(&seeds).expect("json"));
    put("wire_json", "bootstrap", &wire);
    let mut reg = vec![2u8];
    reg.extend(
        serde_json::to_vec(&RegisterResponse {
            worker_id: peer().to_base58(),
            ttl_secs: 90,
            heartbeat_interval_secs: 30,
            expires_at_ms: NOW_MS,
        })
        .expect("json"),
    );
    put("wire_json", "register", &reg);
    put(
        "wire_json",
        "heartbeat",
        b"\x03{\"state\":\"draining\",\"load\":{\"in_flight\":1,\"queue_depth\":2,\"max_concurrency\":4}}",
    );
    put(
        "identity_files",
        "keypair",
        &KEY.to_protobuf_encoding().expect("encodable"),
    );
    put("identity_files", "psk", PSK_FILE);
}
