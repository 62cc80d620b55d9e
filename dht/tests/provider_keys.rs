//! Provider keys are CIDs (the sha2-256 multihash of the service key), as the kad-dht spec and
//! every other kad implementation expect; during the compatibility window
//! (`keys::LEGACY_PROVIDER_KEYS_UNTIL`) agents also provide under the legacy string key and
//! `find_workers` queries both.

#[path = "support/outsider.rs"]
mod outsider;
mod support;

use std::{collections::HashSet, time::Duration};

use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::{SignedRecord, WorkerRecord, keys, rules::RecordLimits};
use libp2p::{
    PeerId,
    kad::{Mode, Record, RecordKey},
};
use outsider::Outsider;
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

/// Service shards of the test network (`TestnetConfig::default`).
const SHARDS: u32 = 8;

/// A client-mode reader that only knows what it is told (another implementation, or a node
/// from before or after the compatibility window).
async fn reader(net: &Testnet) -> anyhow::Result<Outsider> {
    let mut r = Outsider::new(keys::IDENTIFY_PROTOCOL, "/gpumesh/kad/1.0.0", Mode::Client)?;
    r.connect(net.seeds[0].clone()).await?;
    Ok(r)
}

/// An agent outside gpumesh's node code: publishes its signed record, then provides "ocr"
/// under `key_of(shard)` only.
async fn foreign_agent(
    net: &Testnet,
    key_of: impl Fn(u32) -> RecordKey,
) -> anyhow::Result<Outsider> {
    let mut agent = reader(net).await?;
    let me = agent.peer_id();
    let mut record = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://old.example.invalid");
    let now = unix_ms();
    record.seq = now;
    record.issued_at_ms = now;
    record.expires_at_ms = now + 60_000;
    let signed = SignedRecord::sign(&agent.key, record, &RecordLimits::default(), now)?;
    agent
        .put_record(Record::new(keys::worker_key(&me), signed.bytes))
        .await?;
    agent.provide(key_of(keys::shard_of(&me, SHARDS))).await?;
    Ok(agent)
}

/// `find_workers("ocr")` from a fresh client worker (empty view, so only the service index
/// can tell it about anyone), retried while the announcements settle.
async fn found_by_new_node(net: &mut Testnet, want: PeerId) -> anyhow::Result<bool> {
    let finder = net.spawn_worker(false).await?;
    for _ in 0..20 {
        let found: HashSet<PeerId> = finder
            .find_workers("ocr")
            .await?
            .iter()
            .map(|w| w.peer_id)
            .collect();
        if found.contains(&want) {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_agents_provide_under_the_cid_key_only() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let worker = net.add_worker().await?;
    let shard = keys::shard_of(&worker.peer_id(), SHARDS);
    let mut r = reader(&net).await?;

    // A reader that only knows CID keys (another implementation) finds the new agent ...
    let mut by_cid = HashSet::new();
    for _ in 0..20 {
        by_cid = r.get_providers(keys::provider_key("ocr", shard)).await?;
        if by_cid.contains(&worker.peer_id()) {
            break;
        }
        r.drive(Duration::from_millis(250)).await;
    }
    assert!(by_cid.contains(&worker.peer_id()), "CID key: {by_cid:?}");
    // ... and it is not published under the legacy string key (only read there, for agents
    // from before CID keys).
    let legacy = keys::legacy_provider_key("ocr", shard).expect("window open");
    let by_string = r.get_providers(legacy).await?;
    assert!(
        !by_string.contains(&worker.peer_id()),
        "string key: {by_string:?}"
    );
    // The new agent is found by gpumesh's own lookup too.
    assert!(found_by_new_node(&mut net, worker.peer_id()).await?);
    net.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_style_provider_is_still_found() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let old = foreign_agent(&net, |shard| keys::service_key("ocr", shard)).await?;
    let gateway = net.gateways[0].clone();
    assert!(wait_until(EVENTUALLY, || gateway.registry().contains(&old.peer_id())).await);
    assert!(
        found_by_new_node(&mut net, old.peer_id()).await?,
        "a provider under the legacy string key was not found"
    );
    net.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cid_only_provider_is_found() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let new = foreign_agent(&net, |shard| keys::provider_key("ocr", shard)).await?;
    let gateway = net.gateways[0].clone();
    assert!(wait_until(EVENTUALLY, || gateway.registry().contains(&new.peer_id())).await);
    assert!(
        found_by_new_node(&mut net, new.peer_id()).await?,
        "a provider under the CID key only was not found"
    );
    net.shutdown().await;
    Ok(())
}
