//! Shared helpers of the dht integration tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::time::Duration;

use gpumesh_dht::DhtHandle;
pub use gpumesh_dht::testnet::{Testnet, TestnetConfig, wait_until};

/// Generous upper bound for "eventually" on a loaded 2-core machine.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Logs to the test output when `GPUMESH_LOG` is set.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("GPUMESH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A network of one gateway and one worker, returned once the gateway's view holds the
/// worker: `(network, gateway, worker)`.
pub async fn gateway_with_worker() -> anyhow::Result<(Testnet, DhtHandle, DhtHandle)> {
    let mut net = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let worker = net.add_worker().await?;
    let gateway = net.gateways[0].clone();
    let seen = wait_until(EVENTUALLY, || {
        gateway.registry().contains(&worker.peer_id())
    })
    .await;
    anyhow::ensure!(seen, "the gateway never saw the worker");
    Ok((net, gateway, worker))
}
