//! With a pre-shared network key, a node without it (or with another one) cannot connect.

mod support;

use std::time::Duration;

use gpumesh_dht::{Role, identity::generate_network_key};
use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_network_key_cannot_join() -> anyhow::Result<()> {
    support::init_tracing();
    let cfg = TestnetConfig {
        network_key: Some(generate_network_key()),
        ..TestnetConfig::default()
    };
    let mut net = Testnet::with_gateways(cfg, 1).await?;
    let gateway = net.gateways[0].clone();
    let member = net.add_worker().await?;
    assert!(
        wait_until(EVENTUALLY, || gateway
            .registry()
            .contains(&member.peer_id()))
        .await
    );

    for key in [None, Some(generate_network_key())] {
        let mut c = net.node_config(Role::Worker { reachable: false }, net.seeds.clone());
        c.network_key = key;
        let (outsider, _) = net.start_node(c).await?;
        let publish = outsider.publish_record(net.worker_record(99)).await;
        assert!(publish.is_err(), "an outsider's put must fail");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = outsider.topology().await?;
        assert!(
            t.connected_peers.is_empty(),
            "outsider connected to {:?}",
            t.connected_peers
        );
        assert!(!gateway.registry().contains(&outsider.peer_id()));
        assert!(
            !gateway
                .topology()
                .await?
                .connected_peers
                .contains(&outsider.peer_id())
        );
        outsider.shutdown().await;
    }
    net.shutdown().await;
    Ok(())
}
