//! A worker that stays alive stays in every gateway's view, also in gateways that are not
//! among the kad servers closest to its record key and so hear it only by gossip: their DHT
//! view extends its lease from heartbeats, and the gateway keeps no second expiry of its own.

mod support;

use std::time::{Duration, Instant};

use gpumesh_dht::config::Sizing;
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::{DhtHandle, NodeConfig, Role, Timings};
use gpumesh_gateway::Config;
use gpumesh_gateway::api::types::{BootstrapResponse, WorkersResponse};
use libp2p::Multiaddr;
use support::{RunningGateway, eventually, start_counting_worker, start_gateway};
use tokio_util::sync::CancellationToken;

/// Fewer than the gateways: some gateway is never asked to store the worker's record.
const REPLICATION: usize = 2;
/// Kad servers beside the gateways, so that the closest ones are often not gateways at all.
const EXTRA_SERVERS: usize = 4;

fn sizing() -> Sizing {
    Sizing {
        replication_factor: REPLICATION,
        service_shards: 8,
        ..Sizing::default()
    }
}

fn gateway_config(seeds: Vec<String>) -> Config {
    Config {
        dht_enabled: true,
        dht_listen: "127.0.0.1:0".parse().unwrap(),
        dht_timings: Some(Timings::fast()),
        dht_sizing: Some(sizing()),
        registry_token: None,
        seeds,
        ..support::config()
    }
}

async fn dht_addr(gw: &RunningGateway) -> Multiaddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let boot: BootstrapResponse = gw.get_json("/api/dht/bootstrap").await;
        let addr = boot
            .seeds
            .first()
            .and_then(|s| s.multiaddrs.first())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => return addr,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => panic!("the gateway lists no DHT address"),
        }
    }
}

fn node(role: Role, seeds: Vec<Multiaddr>, shutdown: &CancellationToken) -> DhtHandle {
    let mut nc = NodeConfig::new(role);
    if role.is_server() {
        nc.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    }
    nc.seeds = seeds;
    nc.timings = Timings::fast();
    nc.sizing = sizing();
    gpumesh_dht::spawn(nc, shutdown.child_token()).expect("node starts")
}

async fn sees(gw: &RunningGateway, id: &str) -> bool {
    let view: WorkersResponse = gw.get_json("/api/workers").await;
    view.workers.iter().any(|w| w.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_stays_in_every_gateway_view_for_five_ttls() {
    let nodes = CancellationToken::new();
    let first = start_gateway(gateway_config(Vec::new())).await;
    let seed = dht_addr(&first).await;
    let mut gateways = vec![first];
    for _ in 0..2 {
        gateways.push(start_gateway(gateway_config(vec![seed.to_string()])).await);
    }
    let mut seeds = Vec::new();
    for gw in &gateways {
        seeds.push(dht_addr(gw).await);
    }
    let _servers: Vec<DhtHandle> = (0..EXTRA_SERVERS)
        .map(|_| node(Role::Gateway, seeds.clone(), &nodes))
        .collect();
    // Let the routing tables fill before the worker publishes.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (addr, _hits, _w) = start_counting_worker("alive").await;
    let worker = node(Role::Worker { reachable: false }, seeds, &nodes);
    worker
        .publish_record(WorkerRecord::new(
            vec!["gen".parse().unwrap()],
            format!("http://{addr}"),
        ))
        .await
        .expect("published");
    let id = worker.peer_id().to_base58();
    for (i, gw) in gateways.iter().enumerate() {
        assert!(
            eventually(Duration::from_secs(20), || sees(gw, &id)).await,
            "gateway {i} learns of the worker"
        );
    }

    // The worker keeps refreshing and heartbeating; nobody may drop it.
    let ttl = Timings::fast().record_ttl;
    let start = Instant::now();
    let until = start + ttl * 5;
    while Instant::now() < until {
        for (i, gw) in gateways.iter().enumerate() {
            assert!(
                sees(gw, &id).await,
                "gateway {i} dropped a live worker after {:?}",
                start.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    nodes.cancel();
}
