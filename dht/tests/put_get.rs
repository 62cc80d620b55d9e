//! Two nodes put/get; a record is read by a node other than its publisher.

mod support;

use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_put_and_get() -> anyhow::Result<()> {
    support::init_tracing();
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let worker = net.add_worker().await?;
    let seq = worker.registry().len(); // the worker's own view holds nobody
    assert_eq!(seq, 0);

    // The gateway (the other node) gets the record through the DHT.
    let gateway = net.gateways[0].clone();
    let got = gateway.get_record(worker.peer_id()).await?;
    let got = got.ok_or_else(|| anyhow::anyhow!("record not found"))?;
    assert_eq!(got.peer_id, worker.peer_id());
    assert_eq!(got.record.services, ["ocr"]);
    assert!(
        wait_until(EVENTUALLY, || gateway
            .registry()
            .contains(&worker.peer_id()))
        .await
    );

    // A second client (not the publisher, not a server) also finds it.
    let reader = net.spawn_worker(false).await?;
    let mut found = None;
    for _ in 0..20 {
        found = reader.get_record(worker.peer_id()).await?;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let found = found.ok_or_else(|| anyhow::anyhow!("reader did not find the record"))?;
    assert_eq!(found.peer_id, worker.peer_id());
    let topo = gateway.topology().await?;
    assert!(topo.server);
    assert!(topo.records_stored >= 1);
    net.shutdown().await;
    Ok(())
}
