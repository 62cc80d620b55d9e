//! The agent in the DHT: a real gateway-role libp2p node on loopback TCP, seeds from the
//! bootstrap endpoint, the registry fallback and the return to the DHT.

mod support;

use std::time::{Duration, Instant};

use gpumesh_dht::config::Identity;
use gpumesh_dht::record::WorkerState;
use gpumesh_dht::{DhtHandle, NodeConfig, Role, Timings};
use gpumesh_probe::AgentConfig;
use gpumesh_probe::agent::{AgentReport, worker_id};
use gpumesh_probe::bootstrap::Seed;
use gpumesh_probe::gpu::GpuChoice;
use gpumesh_probe::tunnel::{Secret, TunnelConfig};
use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;
use support::fake_gateway::{Call, FakeGateway};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "registry-token";

/// A gateway-role DHT node on a fixed loopback port with a fixed identity.
fn gateway_node(port: u16, key: &Keypair) -> DhtHandle {
    private_gateway_node(port, key, None)
}

/// The same, on a private network when `psk` is set.
fn private_gateway_node(port: u16, key: &Keypair, psk: Option<PreSharedKey>) -> DhtHandle {
    let mut c = NodeConfig::new(Role::Gateway);
    c.network_key = psk;
    c.identity = Identity::Key(key.clone());
    c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    c.timings = Timings::fast();
    gpumesh_dht::spawn(c, CancellationToken::new()).unwrap()
}

fn seed(port: u16, key: &Keypair) -> Seed {
    let peer = key.public().to_peer_id().to_base58();
    Seed {
        multiaddrs: vec![format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")],
        peer_id: peer,
        role: "gateway".into(),
    }
}

fn config(gw: &FakeGateway, state: &str) -> AgentConfig {
    AgentConfig {
        gpu: GpuChoice::Profile("rtx3090".into()),
        tunnel: TunnelConfig::PublicUrl("https://w9.example.org".into()),
        registry_token: Some(Secret::new(TOKEN)),
        dht_join_timeout: Duration::from_secs(2),
        ..support::dht_agent_config(&gw.url, state)
    }
}

fn start(cfg: AgentConfig) -> (CancellationToken, JoinHandle<AgentReport>) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    (
        stop,
        tokio::spawn(async move { support::run_with_service(cfg, s).await.unwrap() }),
    )
}

async fn until(what: &str, secs: u64, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sees(node: &DhtHandle, id: &str, state: WorkerState) -> bool {
    node.registry()
        .workers()
        .iter()
        .any(|w| w.peer_id.to_base58() == id && w.record.state == state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_the_dht_and_reuses_cached_seeds_on_restart() {
    let key = Keypair::generate_ed25519();
    let port = support::free_port();
    let node = gateway_node(port, &key);
    let gw = FakeGateway::start_with_seeds(TOKEN, vec![seed(port, &key)]).await;
    let cfg = config(&gw, "dht");
    let id = worker_id(&cfg.state_dir).unwrap();

    let (stop, task) = start(cfg.clone());
    until("the gateway node to see the worker online", 30, || {
        sees(&node, &id, WorkerState::Online)
    })
    .await;
    let entry = node
        .registry()
        .workers()
        .into_iter()
        .find(|w| w.peer_id.to_base58() == id)
        .unwrap();
    assert_eq!(entry.record.tunnel_url, "https://w9.example.org");
    assert_eq!(entry.record.gpus.len(), 1);
    stop.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.bootstrap_calls, 1);
    assert!(
        gw.registrations().is_empty(),
        "no registry while the DHT works"
    );
    until("the worker to leave the gateway's view", 20, || {
        !node
            .registry()
            .workers()
            .iter()
            .any(|w| w.peer_id.to_base58() == id)
    })
    .await;

    // Restart with the same state directory: cached seeds, no bootstrap call.
    let (stop, task) = start(cfg);
    until("the worker back online", 30, || {
        sees(&node, &id, WorkerState::Online)
    })
    .await;
    stop.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.bootstrap_calls, 0, "seeds came from the cache");
    assert_eq!(
        gw.bootstrap_calls(),
        1,
        "one bootstrap call over two starts"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_the_registry_and_returns_to_the_dht_when_it_recovers() {
    let key = Keypair::generate_ed25519();
    let port = support::free_port();
    let gw = FakeGateway::start_with_seeds(TOKEN, vec![seed(port, &key)]).await;
    let cfg = config(&gw, "recover");
    let id = worker_id(&cfg.state_dir).unwrap();
    let (stop, task) = start(cfg);

    until("a registry registration while the DHT is down", 30, || {
        gw.registrations().iter().any(|r| r.peer_id == id)
    })
    .await;
    let node = gateway_node(port, &key);
    until("the worker in the DHT after recovery", 60, || {
        sees(&node, &id, WorkerState::Online)
    })
    .await;
    until("the registry entry removed", 10, || {
        gw.calls()
            .iter()
            .any(|c| matches!(c, Call::Deregister(w, _) if *w == id))
    })
    .await;
    stop.cancel();
    let report = task.await.unwrap();
    assert_eq!(report.bootstrap_calls, 1);
    node.shutdown().await;
}

/// `--network-key-file`: an agent with the network's key joins a private DHT; one without it
/// cannot connect at all and ends up on the registry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_a_private_network_only_with_its_key() {
    let psk = PreSharedKey::new([7; 32]);
    let key = Keypair::generate_ed25519();
    let port = support::free_port();
    let node = private_gateway_node(port, &key, Some(psk));
    let gw = FakeGateway::start_with_seeds(TOKEN, vec![seed(port, &key)]).await;

    let mut keyed = config(&gw, "psk-keyed");
    keyed.network_key = Some(psk);
    let keyed_id = worker_id(&keyed.state_dir).unwrap();
    let (stop, task) = start(keyed);
    until("the keyed worker in the private DHT", 30, || {
        sees(&node, &keyed_id, WorkerState::Online)
    })
    .await;
    stop.cancel();
    task.await.unwrap();

    let outsider = config(&gw, "psk-outsider");
    let outsider_id = worker_id(&outsider.state_dir).unwrap();
    let (stop, task) = start(outsider);
    until("the keyless worker on the registry instead", 30, || {
        gw.registrations().iter().any(|r| r.peer_id == outsider_id)
    })
    .await;
    assert!(
        !node
            .registry()
            .workers()
            .iter()
            .any(|w| w.peer_id.to_base58() == outsider_id),
        "a node without the key must never reach the private DHT"
    );
    stop.cancel();
    task.await.unwrap();
    node.shutdown().await;
}
