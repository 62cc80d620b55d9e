//! A real gateway with its DHT node, real worker DHT nodes on loopback, and fake workers:
//! bootstrap lists the gateway, a published record routes, a forged record's URL is never
//! called.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::rules::RecordLimits;
use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::signed::SignedRecord;
use gpumesh_dht::{DhtHandle, NodeConfig, Role, Timings};
use gpumesh_gateway::Config;
use gpumesh_gateway::api::types::{BootstrapResponse, WorkersResponse};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use reqwest::StatusCode;
use support::{RunningGateway, client, eventually, start_counting_worker, start_gateway};
use tokio_util::sync::CancellationToken;

fn dht_config() -> Config {
    Config {
        dht_enabled: true,
        dht_listen: "127.0.0.1:0".parse().unwrap(),
        dht_timings: Some(Timings::fast()),
        registry_token: None,
        ..support::config()
    }
}

async fn bootstrap(gw: &RunningGateway) -> BootstrapResponse {
    gw.get_json("/api/dht/bootstrap").await
}

async fn worker_node(seeds: Vec<Multiaddr>, shutdown: &CancellationToken) -> DhtHandle {
    let mut nc = NodeConfig::new(Role::Worker { reachable: false });
    nc.seeds = seeds;
    nc.timings = Timings::fast();
    gpumesh_dht::spawn(nc, shutdown.child_token()).expect("worker node starts")
}

async fn workers(gw: &RunningGateway) -> WorkersResponse {
    gw.get_json("/api/workers").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_records_route_and_forged_records_are_never_called() {
    let gw = start_gateway(dht_config()).await;
    let nodes = CancellationToken::new();

    // Bootstrap lists this gateway once its node listens.
    assert!(
        eventually(Duration::from_secs(10), || async {
            bootstrap(&gw).await.count == 1
        })
        .await
    );
    let boot = bootstrap(&gw).await;
    let me = &boot.seeds[0];
    assert_eq!(me.role, "gateway");
    assert!(
        me.multiaddrs[0].starts_with("/ip4/127.0.0.1/tcp/")
            && me.multiaddrs[0].ends_with(&format!("/p2p/{}", me.peer_id))
    );
    let seeds: Vec<Multiaddr> = me.multiaddrs.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(
        client()
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK,
        "a lone seed is warm"
    );

    // An honest worker publishes a signed record; the gateway routes to it.
    let (honest_addr, honest_hits, _h) = start_counting_worker("honest").await;
    let honest = worker_node(seeds.clone(), &nodes).await;
    honest
        .publish_record(WorkerRecord::new(
            vec!["gen".parse().unwrap()],
            format!("http://{honest_addr}"),
        ))
        .await
        .expect("published");
    let honest_id = honest.peer_id().to_base58();
    assert!(
        eventually(Duration::from_secs(15), || async {
            workers(&gw).await.workers.iter().any(|w| w.id == honest_id)
        })
        .await
    );
    let resp = client()
        .get(gw.url("/api/service/gen/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-gpumesh-worker-source"], "dht");
    assert_eq!(resp.headers()["x-gpumesh-worker"], honest_id.as_str());

    // An attacker puts records under a victim's key: signed by the wrong key, and tampered.
    let (forged_addr, forged_hits, _f) = start_counting_worker("forged").await;
    let attacker = worker_node(seeds.clone(), &nodes).await;
    let victim = PeerId::random();
    let attacker_key = Keypair::generate_ed25519();
    let mut forged = WorkerRecord::new(
        vec!["gen".parse().unwrap(), "forged".parse().unwrap()],
        format!("http://{forged_addr}"),
    );
    forged.peer_id = victim.to_base58(); // `sign` replaces it with the attacker's id
    (forged.seq, forged.issued_at_ms, forged.expires_at_ms) = (1, unix_ms(), unix_ms() + 6_000);
    let signed = SignedRecord::sign(&attacker_key, forged, &RecordLimits::default(), unix_ms())
        .expect("signs");
    let key = gpumesh_dht::keys::worker_key(&victim);
    let _ = attacker
        .put_raw_record(key.clone(), signed.bytes.clone())
        .await;
    let mut tampered = signed.bytes.clone();
    if let Some(pos) = tampered.windows(4).position(|w| w == b"http") {
        tampered[pos] = b'H';
    }
    let _ = attacker
        .put_raw_record(
            gpumesh_dht::keys::worker_key(&attacker_key.public().to_peer_id()),
            tampered,
        )
        .await;

    // Give the forged puts time to arrive, then send traffic.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..10 {
        let resp = client()
            .get(gw.url("/api/service/gen/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-gpumesh-worker"], honest_id.as_str());
    }
    let resp = client()
        .get(gw.url("/api/service/forged/x"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.status(), StatusCode::OK);
    assert_eq!(
        forged_hits.load(Ordering::SeqCst),
        0,
        "a forged record's URL is never called"
    );
    assert!(honest_hits.load(Ordering::SeqCst) >= 11);
    let ids: Vec<String> = workers(&gw)
        .await
        .workers
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(ids, vec![honest_id.clone()]);

    // The DHT's own metrics are in the same /metrics.
    let text = gw.get_text("/metrics").await;
    assert!(text.contains("gpumesh_dht_") && text.contains("gpumesh_gateway_"));
    // Both forgeries reached the gateway's node and were refused there.
    for reason in ["signer_mismatch", "bad_signature"] {
        let line =
            format!("gpumesh_dht_records_rejected_total{{kind=\"record\",reason=\"{reason}\"}} 1");
        assert!(text.contains(&line), "missing: {line}");
    }

    // The worker withdraws: it leaves the view.
    honest.withdraw().await.expect("withdraw");
    assert!(
        eventually(Duration::from_secs(10), || async {
            workers(&gw).await.count == 0
        })
        .await
    );
    nodes.cancel();
}

/// `serve` returns only after the view file's last write (before, that write ran in a detached
/// task, and a process that exited right after `serve` lost it; the soak's log showed
/// "worker view not saved at shutdown: background task failed").
#[tokio::test]
async fn the_view_file_is_written_before_serve_returns() {
    let dir = std::env::temp_dir().join(format!(
        "gpumesh-view-file-{}-{}",
        std::process::id(),
        unix_ms()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("view.bin");
    let config = Config {
        dht_view_file: Some(path.clone()),
        ..dht_config()
    };
    let gateway = gpumesh_gateway::Gateway::bind(config)
        .await
        .expect("gateway binds");
    let stop = CancellationToken::new();
    stop.cancel();
    gateway.serve(stop).await.expect("gateway stops cleanly");
    // Checked at once, without yielding to the runtime again.
    let written = path.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(written, "the view file exists when serve returns");
}
