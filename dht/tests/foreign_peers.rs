//! Peers that are not gpumesh nodes. Identify's `protocol_version` is each implementation's own
//! (js-libp2p cannot set it), so it decides nothing: a peer that speaks `/gpumesh/kad/1.0.0` may
//! read records whatever it announces, and one that does not never enters the routing table or
//! the worker view.

#[path = "support/outsider.rs"]
mod outsider;
mod support;

use std::time::Duration;

use gpumesh_dht::keys;
use libp2p::kad::Mode;
use outsider::Outsider;

/// What js-libp2p announces by default.
const JS_PROTOCOL_VERSION: &str = "ipfs/0.1.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_with_another_protocol_version_reads_records() -> anyhow::Result<()> {
    support::init_tracing();
    let (net, _gateway, worker) = support::gateway_with_worker().await?;

    let mut reader = Outsider::new(JS_PROTOCOL_VERSION, "/gpumesh/kad/1.0.0", Mode::Client)?;
    let gw = reader.connect(net.seeds[0].clone()).await?;
    // Give the gateway time to act on our identify message (it used to disconnect here).
    reader.drive(Duration::from_millis(500)).await;
    assert!(
        reader.is_connected(&gw),
        "the gateway dropped the connection"
    );

    let record = reader
        .get_record(keys::worker_key(&worker.peer_id()))
        .await?
        .expect("the gateway serves the worker record");
    let limits = gpumesh_dht::rules::RecordLimits::default();
    let now = gpumesh_dht::rules::unix_ms();
    let sr = gpumesh_dht::SignedRecord::verify(&record.value, Some(&record.key), &limits, now)?;
    assert_eq!(sr.peer_id, worker.peer_id());
    assert!(reader.is_connected(&gw));
    net.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_of_another_kad_network_stays_out() -> anyhow::Result<()> {
    support::init_tracing();
    let (net, gateway, _worker) = support::gateway_with_worker().await?;

    // A reachable server of the IPFS DHT, and one that even announces our protocol version:
    // neither speaks our kad protocol, so neither may enter the routing table.
    let mut ipfs = Outsider::new(JS_PROTOCOL_VERSION, "/ipfs/kad/1.0.0", Mode::Server)?;
    let mut mimic = Outsider::new(keys::IDENTIFY_PROTOCOL, "/ipfs/kad/1.0.0", Mode::Server)?;
    for o in [&mut ipfs, &mut mimic] {
        o.swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        o.connect(net.seeds[0].clone()).await?;
    }
    // A gpumesh-speaking server (another implementation) does enter it: the check works.
    let mut member = Outsider::new(JS_PROTOCOL_VERSION, "/gpumesh/kad/1.0.0", Mode::Server)?;
    member.swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    member.connect(net.seeds[0].clone()).await?;

    let mut table = Vec::new();
    for _ in 0..40 {
        for o in [&mut ipfs, &mut mimic, &mut member] {
            o.drive(Duration::from_millis(50)).await;
        }
        table = gateway.topology().await?.routing_table;
        if table.contains(&member.peer_id()) {
            break;
        }
    }
    assert!(
        table.contains(&member.peer_id()),
        "routing table: {table:?}"
    );
    assert!(!table.contains(&ipfs.peer_id()), "routing table: {table:?}");
    assert!(
        !table.contains(&mimic.peer_id()),
        "routing table: {table:?}"
    );
    for o in [&ipfs, &mimic, &member] {
        assert!(!gateway.registry().contains(&o.peer_id()));
    }
    assert_eq!(gateway.registry().len(), 1);
    net.shutdown().await;
    Ok(())
}
