//! A worker that stops silently disappears within its TTL; one that withdraws leaves at once.

mod support;

use std::time::{Duration, Instant};

use gpumesh_dht::{RegistryEvent, registry::LeaveReason};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_expires_after_worker_stops() -> anyhow::Result<()> {
    support::init_tracing();
    let cfg = TestnetConfig::default();
    let ttl = cfg.timings.record_ttl;
    let mut net = Testnet::with_gateways(cfg, 2).await?;
    let dead = net.add_worker().await?;
    let alive = net.add_worker().await?;
    let both = [dead.clone(), alive.clone()];
    assert!(wait_until(EVENTUALLY, || net.all_gateways_see(&both)).await);

    let stopped_at = Instant::now();
    dead.shutdown().await; // silently: no withdraw
    let g = net.gateways[1].clone();
    assert!(
        wait_until(ttl + Duration::from_secs(2), || !g
            .registry()
            .contains(&dead.peer_id()))
        .await
    );
    let gone_after = stopped_at.elapsed();
    assert!(
        gone_after <= ttl + Duration::from_secs(1),
        "gone after {gone_after:?}"
    );
    // The live worker stays (its refreshes keep it).
    tokio::time::sleep(ttl).await;
    assert!(g.registry().contains(&alive.peer_id()));
    // The DHT copies are gone too.
    assert!(net.gateways[0].get_record(dead.peer_id()).await?.is_none());

    // Withdraw: leaves every view at once with reason Withdrawn.
    let mut events = g.subscribe();
    alive.withdraw().await?;
    let left = tokio::time::timeout(EVENTUALLY, async {
        loop {
            match events.recv().await {
                Ok(RegistryEvent::Left { peer_id, reason }) if peer_id == alive.peer_id() => {
                    return Some(reason);
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    })
    .await?;
    assert_eq!(left, Some(LeaveReason::Withdrawn));
    net.shutdown().await;
    Ok(())
}
