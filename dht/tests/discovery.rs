//! 3 gateways + 50 workers: every gateway sees every worker, and the sharded service index
//! enumerates all of them (client-mode workers included).

mod support;

use std::time::Duration;

use gpumesh_dht::RegistryEvent;
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_fifty_workers_discover_everything() -> anyhow::Result<()> {
    support::init_tracing();
    // 53 nodes on a shared 2-core machine in a debug build, where one Ed25519 check costs
    // ~10 ms: this test uses the production refresh/heartbeat periods so that signature checks
    // do not starve the nodes (expiry is covered by `expiry.rs` with short timings).
    let cfg = TestnetConfig {
        timings: gpumesh_dht::Timings {
            query_timeout: Duration::from_secs(10),
            ..gpumesh_dht::Timings::default()
        },
        ..TestnetConfig::default()
    };
    let mut net = Testnet::with_gateways(cfg, 3).await?;
    let mut joins = net.gateways[0].subscribe();
    for _ in 0..50 {
        net.add_worker().await?;
    }
    let workers = net.workers.clone();
    assert!(
        wait_until(EVENTUALLY, || net.all_gateways_see(&workers)).await,
        "views: {:?}",
        net.gateways
            .iter()
            .map(|g| g.registry().len())
            .collect::<Vec<_>>()
    );
    // Join events were emitted for the workers.
    let mut joined = 0;
    while let Ok(ev) = joins.try_recv() {
        if matches!(ev, RegistryEvent::Joined(_)) {
            joined += 1;
        }
    }
    assert!(joined >= 50, "joined events: {joined}");

    // The service index: a worker (client mode, empty view) enumerates every provider.
    let reader = net.spawn_worker(false).await?;
    let mut found = Vec::new();
    for _ in 0..10 {
        found = reader.find_workers("ocr").await?;
        if found.len() >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(found.len(), 50, "find_workers found {}", found.len());
    assert!(reader.find_workers("nope").await?.is_empty());

    // Every gateway's routing table holds the other gateways, never the client-mode workers.
    for g in &net.gateways {
        let t = g.topology().await?;
        assert_eq!(t.routing_table.len(), 2, "{:?}", t.routing_table);
    }
    net.shutdown().await;
    Ok(())
}
