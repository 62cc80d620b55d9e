//! A seed goes away and comes back (same key, same port): the network keeps working meanwhile,
//! and the restarted seed rebuilds its view.

mod support;

use std::time::Duration;

use gpumesh_dht::{Role, config::Identity, testnet::fresh_identity};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_restarts_and_network_keeps_working() -> anyhow::Result<()> {
    support::init_tracing();
    let cfg = TestnetConfig::default();
    let ttl = cfg.timings.record_ttl;
    let mut net = Testnet::new(cfg);
    let (identity, key) = fresh_identity();
    let mut seed_cfg = net.node_config(Role::Seed, Vec::new());
    seed_cfg.identity = identity;
    let seed = net.add_gateway_with(seed_cfg).await?;
    let seed_addr = net.seeds[0].clone();
    net.add_gateway().await?;
    for _ in 0..10 {
        net.add_worker().await?;
    }
    let gw = net.gateways[1].clone();
    let first: Vec<_> = net.workers.clone();
    assert!(wait_until(EVENTUALLY, || net.all_gateways_see(&first)).await);

    seed.shutdown().await;
    // While the seed is down: a new worker joins through the remaining gateway, and existing
    // workers stay visible past a full TTL.
    let newcomer = net.add_worker().await?;
    assert!(wait_until(EVENTUALLY, || gw.registry().contains(&newcomer.peer_id())).await);
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    assert!(first.iter().all(|w| gw.registry().contains(&w.peer_id())));

    // Restart with the same identity and port; it rebuilds its view from its peers.
    let mut again = net.node_config(Role::Seed, vec![net.seeds[1].clone()]);
    again.identity = Identity::Key(key);
    again.listen = vec![seed_addr.iter().take(2).collect()];
    let (restarted, addr) = net.start_node(again).await?;
    assert_eq!(addr.as_ref(), Some(&seed_addr));
    let everyone: Vec<_> = net.workers.clone();
    assert!(
        wait_until(EVENTUALLY, || everyone
            .iter()
            .all(|w| restarted.registry().contains(&w.peer_id())))
        .await,
        "restarted seed sees {} of {}",
        restarted.registry().len(),
        everyone.len()
    );
    restarted.shutdown().await;
    net.shutdown().await;
    Ok(())
}
