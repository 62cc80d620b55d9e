//! Forged, oversized, stale and malformed records, and unknown namespaces, are rejected with a
//! reason and a metric; nothing is stored and the node keeps serving.

mod support;

use std::time::Duration;

use gpumesh_dht::{
    RejectReason, SignedRecord, WorkerRecord, keys, rules::RecordLimits, rules::unix_ms,
};
use libp2p::{identity::Keypair, kad::RecordKey};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

fn signed(key: &Keypair, seq: u64) -> SignedRecord {
    let now = unix_ms();
    let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://x.example.invalid");
    r.seq = seq;
    r.issued_at_ms = now;
    r.expires_at_ms = now + 3_000;
    SignedRecord::sign(key, r, &RecordLimits::default(), now).expect("sign")
}

#[test]
fn verify_rejects_each_kind_of_bad_value() {
    let limits = RecordLimits::default();
    let now = unix_ms();
    let victim = Keypair::generate_ed25519();
    let attacker = Keypair::generate_ed25519();
    let vkey = keys::worker_key(&victim.public().to_peer_id());
    let good = signed(&victim, 5);
    assert!(SignedRecord::verify(&good.bytes, Some(&vkey), &limits, now).is_ok());
    // Signed by another key under the victim's key.
    let forged = signed(&attacker, 6);
    assert_eq!(
        SignedRecord::verify(&forged.bytes, Some(&vkey), &limits, now),
        Err(RejectReason::SignerMismatch)
    );
    // A flipped byte breaks the signature or the encoding.
    let mut tampered = good.bytes.clone();
    let n = tampered.len() - 3;
    tampered[n] ^= 1;
    assert!(SignedRecord::verify(&tampered, Some(&vkey), &limits, now).is_err());
    assert_eq!(
        SignedRecord::verify(b"not an envelope", Some(&vkey), &limits, now),
        Err(RejectReason::Malformed)
    );
    assert_eq!(
        SignedRecord::verify(&vec![0; 5000], Some(&vkey), &limits, now),
        Err(RejectReason::Oversized)
    );
    assert_eq!(
        SignedRecord::verify(&good.bytes, Some(&RecordKey::new(&"/ipfs/x")), &limits, now),
        Err(RejectReason::UnknownNamespace)
    );
    assert_eq!(
        SignedRecord::verify(&good.bytes, Some(&vkey), &limits, now + 10_000),
        Err(RejectReason::Expired)
    );
    // A record too big to sign is refused before it leaves the worker.
    let mut big = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://x.example.invalid");
    big.capabilities = (0..30).map(|i| format!("{i:0>200}")).collect();
    big.expires_at_ms = now + 1000;
    big.issued_at_ms = now;
    assert!(SignedRecord::sign(&victim, big, &limits, now).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_rejected_over_the_network() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let gateway = net.gateways[0].clone();
    let victim = net.add_worker().await?;
    assert!(
        wait_until(EVENTUALLY, || gateway
            .registry()
            .contains(&victim.peer_id()))
        .await
    );
    let old = gateway
        .get_record(victim.peer_id())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no record"))?;
    // Let the victim refresh at least once so `old` is stale.
    assert!(
        wait_until(EVENTUALLY, || gateway
            .registry()
            .get(&victim.peer_id())
            .is_some_and(|w| w.record.seq > old.record.seq))
        .await
    );

    let attacker = net.spawn_worker(false).await?;
    let vkey = keys::worker_key(&victim.peer_id());
    let attacker_key = Keypair::generate_ed25519();
    let m = gateway.metrics().clone();
    // Forged by another key.
    attacker
        .put_raw_record(vkey.clone(), signed(&attacker_key, u64::MAX / 2).bytes)
        .await?;
    // Oversized (below the 16 KiB packet cap, above our 4 KiB value cap).
    attacker.put_raw_record(vkey.clone(), vec![7; 6000]).await?;
    // Replay of an older, validly signed record.
    attacker
        .put_raw_record(vkey.clone(), old.bytes.clone())
        .await?;
    // Malformed.
    attacker
        .put_raw_record(vkey.clone(), b"{\"peer_id\":1}".to_vec())
        .await?;
    // Unknown namespace.
    attacker
        .put_raw_record(RecordKey::new(&"/ipfs/whatever"), b"x".to_vec())
        .await?;

    let ok = wait_until(EVENTUALLY, || {
        m.rejected("record", RejectReason::SignerMismatch) >= 1
            && m.rejected("record", RejectReason::Oversized) >= 1
            && m.rejected("record", RejectReason::StaleSeq) >= 1
            && m.rejected("record", RejectReason::Malformed) >= 1
            && m.rejected("record", RejectReason::UnknownNamespace) >= 1
    })
    .await;
    assert!(
        ok,
        "reject counters: forged={} oversized={} stale={} malformed={} ns={}",
        m.rejected("record", RejectReason::SignerMismatch),
        m.rejected("record", RejectReason::Oversized),
        m.rejected("record", RejectReason::StaleSeq),
        m.rejected("record", RejectReason::Malformed),
        m.rejected("record", RejectReason::UnknownNamespace)
    );

    // Nothing bad was stored: the gateway still serves the victim's own, newest record.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = gateway
        .get_record(victim.peer_id())
        .await?
        .ok_or_else(|| anyhow::anyhow!("victim record lost"))?;
    assert_eq!(now.peer_id, victim.peer_id());
    assert!(now.record.seq > old.record.seq);
    assert_eq!(
        gateway.registry().len(),
        1,
        "only the victim is a known worker"
    );
    net.shutdown().await;
    Ok(())
}
