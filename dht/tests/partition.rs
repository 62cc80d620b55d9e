//! Two halves that cannot reach each other each see only their own workers; once a link
//! appears, every gateway's view converges to all workers.

mod support;

use support::{EVENTUALLY, Testnet, TestnetConfig, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_and_views_converge() -> anyhow::Result<()> {
    support::init_tracing();
    let mut a = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    let mut b = Testnet::with_gateways(TestnetConfig::default(), 1).await?;
    for _ in 0..10 {
        a.add_worker().await?;
        b.add_worker().await?;
    }
    let (ga, gb) = (a.gateways[0].clone(), b.gateways[0].clone());
    assert!(
        wait_until(EVENTUALLY, || ga.registry().len() == 10
            && gb.registry().len() == 10)
        .await
    );
    // Partitioned: neither half knows the other's workers.
    assert!(
        a.workers
            .iter()
            .all(|w| !gb.registry().contains(&w.peer_id()))
    );

    // Heal: gateway B dials gateway A.
    gb.dial(a.seeds[0].clone()).await?;
    let all: Vec<_> = a.workers.iter().chain(b.workers.iter()).cloned().collect();
    let converged = wait_until(EVENTUALLY, || {
        all.iter()
            .all(|w| ga.registry().contains(&w.peer_id()) && gb.registry().contains(&w.peer_id()))
    })
    .await;
    assert!(
        converged,
        "views: a={} b={}",
        ga.registry().len(),
        gb.registry().len()
    );
    // A worker of A can now look up a worker of B through the DHT.
    let reader = a.workers[0].clone();
    let target = b.workers[3].peer_id();
    let mut found = None;
    for _ in 0..20 {
        found = reader.get_record(target).await?;
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(found.is_some(), "cross-partition lookup failed");
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
