//! The agent with an operator admission token: a real admission-enforcing gateway-role node on
//! loopback discovers it; a token that cannot admit this worker stops the agent at start with a
//! usage error (exit code 64 in the CLI).

mod support;

use std::time::{Duration, Instant};

use gpumesh_dht::admission::{load_token, write_token};
use gpumesh_dht::config::Identity;
use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::{AdmissionToken, NodeConfig, OperatorKey, RejectReason, Role, Timings};
use gpumesh_probe::agent::worker_id;
use gpumesh_probe::bootstrap::Seed;
use gpumesh_probe::{AgentConfig, run};
use libp2p::{PeerId, identity::Keypair};
use support::fake_gateway::FakeGateway;
use tokio_util::sync::CancellationToken;

fn config(gw: &FakeGateway, state: &str) -> AgentConfig {
    support::dht_agent_config(&gw.url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_agent_is_discovered_and_a_foreign_token_is_refused_at_start() {
    let operator = Keypair::generate_ed25519();
    let gw_key = Keypair::generate_ed25519();
    let port = support::free_port();
    let mut c = NodeConfig::new(Role::Gateway);
    c.identity = Identity::Key(gw_key.clone());
    c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
    c.timings = Timings::fast();
    c.admission.trusted = vec![OperatorKey::of(&operator).unwrap()];
    let node = gpumesh_dht::spawn(c, CancellationToken::new()).unwrap();
    let peer = gw_key.public().to_peer_id().to_base58();
    let gw = FakeGateway::start_with_seeds(
        "t",
        vec![Seed {
            multiaddrs: vec![format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")],
            peer_id: peer,
            role: "gateway".into(),
        }],
    )
    .await;

    // The operator admits the worker's peer id; the token travels as a file, as with
    // `gpumesh admit --out` and `gpumesh agent --admission FILE`.
    let mut cfg = config(&gw, "admitted");
    let id = worker_id(&cfg.state_dir).unwrap();
    let now = unix_ms();
    let token =
        AdmissionToken::issue(&operator, id.parse().unwrap(), now, now + 3_600_000).unwrap();
    let file = cfg.state_dir.join("worker.admission");
    write_token(&file, &token).unwrap();
    cfg.admission = Some(load_token(&file).unwrap());

    let stop = CancellationToken::new();
    let task = tokio::spawn(support::run_with_service(cfg, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node
        .registry()
        .workers()
        .iter()
        .any(|w| w.peer_id.to_base58() == id)
    {
        assert!(
            Instant::now() < deadline,
            "the enforcing node never admitted the agent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        node.metrics().rejected("record", RejectReason::NotAdmitted)
            + node.metrics().rejected("gossip", RejectReason::NotAdmitted),
        0
    );
    stop.cancel();
    task.await.unwrap().unwrap();

    // A token for another peer, and an expired one, stop the agent before it starts anything.
    for name in ["foreign", "expired"] {
        let mut cfg = config(&gw, name);
        let me: PeerId = worker_id(&cfg.state_dir).unwrap().parse().unwrap();
        let token = match name {
            "foreign" => AdmissionToken::issue(&operator, PeerId::random(), now, now + 3_600_000),
            _ => AdmissionToken::issue(&operator, me, now - 7_200_000, now - 1),
        };
        cfg.admission = Some(token.unwrap());
        let err = run(cfg, CancellationToken::new()).await.unwrap_err();
        assert!(err.is_usage(), "{name}: {err}");
    }
    node.shutdown().await;
}
