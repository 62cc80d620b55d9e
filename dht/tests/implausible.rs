//! Records that claim impossible hardware are refused like any other bad record, over the
//! network too, so they do not spread; plausible ones of the same shape are taken.

mod support;

use gpumesh_dht::{
    RejectReason, SignedRecord, WorkerRecord, keys,
    record::GpuInfo,
    rules::{RecordLimits, unix_ms},
    signed::{RECORD_DOMAIN, RECORD_PAYLOAD_TYPE},
};
use libp2p::{PeerId, core::SignedEnvelope, identity::Keypair};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

const H100: &str = "NVIDIA H100 80GB HBM3";

fn record(key: &Keypair, gpus: Vec<GpuInfo>) -> WorkerRecord {
    let now = unix_ms();
    let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://x.example.invalid");
    r.peer_id = key.public().to_peer_id().to_base58();
    r.seq = 1;
    r.issued_at_ms = now;
    r.expires_at_ms = now + 60_000;
    r.gpus = gpus;
    r
}

/// A correctly signed envelope, built by hand: [`SignedRecord::sign`] refuses to sign what
/// others would refuse, and a liar would not use it.
fn envelope(key: &Keypair, r: &WorkerRecord) -> Vec<u8> {
    let payload = serde_json::to_vec(r).unwrap();
    SignedEnvelope::new(
        key,
        RECORD_DOMAIN.to_owned(),
        RECORD_PAYLOAD_TYPE.to_vec(),
        payload,
    )
    .unwrap()
    .into_protobuf_encoding()
}

fn gpus(model: &str, n: usize, total_mib: u64) -> Vec<GpuInfo> {
    (0..n)
        .map(|i| GpuInfo::new(model, format!("GPU-{i}"), total_mib, total_mib / 2))
        .collect()
}

fn verify(key: &Keypair, r: &WorkerRecord) -> Result<SignedRecord, RejectReason> {
    let k = keys::worker_key(&key.public().to_peer_id());
    SignedRecord::verify(
        &envelope(key, r),
        Some(&k),
        &RecordLimits::default(),
        unix_ms(),
    )
}

#[test]
fn verify_refuses_impossible_hardware_and_takes_real_hardware() {
    let key = Keypair::generate_ed25519();
    let two_tb = record(&key, gpus(H100, 1, 2 * 1024 * 1024));
    assert_eq!(
        verify(&key, &two_tb).map(|_| ()),
        Err(RejectReason::Implausible)
    );
    let mut free_above_total = record(&key, gpus("Tesla T4", 1, 15_360));
    free_above_total.gpus[0].vram_free_mib = 20_000;
    assert_eq!(
        verify(&key, &free_above_total).map(|_| ()),
        Err(RejectReason::Implausible)
    );
    // The agent never signs what others would refuse.
    assert_eq!(
        SignedRecord::sign(&key, two_tb, &RecordLimits::default(), unix_ms()).map(|_| ()),
        Err(RejectReason::Implausible)
    );
    // Eight H200s as NVML reports them, and a card no class knows, are fine.
    assert!(verify(&key, &record(&key, gpus("NVIDIA H200", 8, 143_771))).is_ok());
    assert!(verify(&key, &record(&key, gpus("Acme X9", 1, 2 * 1024 * 1024))).is_ok());
    // A claimed concurrency beyond the ceiling is clamped by readers, not refused.
    let mut many_slots = record(&key, gpus(H100, 2, 81_559));
    many_slots.load.max_concurrency = u32::MAX;
    assert!(verify(&key, &many_slots).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implausible_records_are_refused_over_the_network() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let gateway = net.gateways[0].clone();
    let sender = net.spawn_worker(false).await?;
    let m = gateway.metrics().clone();

    let honest = Keypair::generate_ed25519();
    let liar = Keypair::generate_ed25519();
    let put = |key: &Keypair, r: WorkerRecord| {
        let (sender, key_id) = (sender.clone(), keys::worker_key(&key.public().to_peer_id()));
        let bytes = envelope(key, &r);
        async move { sender.put_raw_record(key_id, bytes).await }
    };
    let peer = |key: &Keypair| -> PeerId { key.public().to_peer_id() };

    // The same path takes a plausible record (so the refusal below is not a broken path).
    put(&honest, record(&honest, gpus("NVIDIA H200", 8, 143_771))).await?;
    assert!(
        wait_until(EVENTUALLY, || gateway.registry().contains(&peer(&honest))).await,
        "a plausible record is stored and seen"
    );
    put(&liar, record(&liar, gpus(H100, 1, 2 * 1024 * 1024))).await?;
    assert!(
        wait_until(EVENTUALLY, || m
            .rejected("record", RejectReason::Implausible)
            >= 1)
        .await,
        "implausible={}",
        m.rejected("record", RejectReason::Implausible)
    );
    assert!(!gateway.registry().contains(&peer(&liar)));
    net.shutdown().await;
    Ok(())
}
