//! The agent end to end: real HTTP servers on loopback, fake GPUs, a fake gateway.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gpumesh_dht::record::WorkerState;
use gpumesh_probe::agent::AgentReport;
use gpumesh_probe::gpu::GpuChoice;
use gpumesh_probe::tunnel::{CloudflaredConfig, Secret, TunnelConfig};
use gpumesh_probe::{AgentConfig, run};
use gpumesh_testkit::{MockService, MockServiceConfig};
use support::fake_gateway::{Call, FakeGateway};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "registry-token";

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn base_config(gw: &FakeGateway, state: &str) -> AgentConfig {
    AgentConfig {
        services: vec!["ocr".parse().unwrap(), "embed".parse().unwrap()],
        gpu: GpuChoice::Profile("a100".into()),
        tunnel: TunnelConfig::PublicUrl("https://w1.example.org".into()),
        report_listen: free_addr(),
        dht_enabled: false,
        registry_url: Some(gw.url.clone()),
        registry_token: Some(Secret::new(TOKEN)),
        state_dir: support::temp_dir(state),
        refresh_every: Duration::from_secs(1),
        load_every: Duration::from_millis(200),
        probe_every: Duration::from_millis(200),
        drain_grace: Duration::from_secs(10),
        ..AgentConfig::default()
    }
}

fn start(cfg: AgentConfig) -> (CancellationToken, JoinHandle<AgentReport>) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { run(cfg, s).await.unwrap() });
    (stop, task)
}

/// [`start`] with a mock GPU service next to the agent (its upstream).
fn start_with_service(cfg: AgentConfig) -> (CancellationToken, JoinHandle<AgentReport>) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { support::run_with_service(cfg, s).await.unwrap() });
    (stop, task)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_only_registers_heartbeats_and_drains_in_flight_work() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut cfg = base_config(&gw, "coord");
    let mock = MockService::spawn(MockServiceConfig {
        slots: 2,
        base_ms: 1500.0,
        report_url: Some(format!("http://{}/load", cfg.report_listen)),
        report_every: Duration::from_millis(200),
        ..MockServiceConfig::default()
    })
    .await
    .unwrap();
    cfg.upstream = mock.url();
    let (stop, task) = start(cfg);

    until("an online registration", || {
        gw.registrations()
            .iter()
            .any(|r| r.state == WorkerState::Online)
    })
    .await;
    let rec = gw.registrations().pop().unwrap();
    assert_eq!(rec.services, ["ocr", "embed"]);
    assert_eq!(rec.tunnel_url, "https://w1.example.org");
    assert_eq!(rec.gpus.len(), 1);
    // Stamped by the registry link with the rulebook's TTL: three 1 s refresh periods.
    assert_eq!(rec.expires_at_ms - rec.issued_at_ms, 3_000);
    assert!(rec.seq >= rec.issued_at_ms);

    // One request in flight, then SIGTERM.
    let url = format!("{}/api/service/ocr/run", mock.url());
    let req = tokio::spawn(async move {
        let r = reqwest::Client::new().post(url).send().await.unwrap();
        (r.status().as_u16(), Instant::now())
    });
    until("the request in flight", || mock.load().in_flight == 1).await;
    until("a heartbeat carrying the load", || {
        gw.calls()
            .iter()
            .any(|c| matches!(c, Call::Heartbeat(_, b) if b.load.is_some_and(|l| l.in_flight == 1)))
    })
    .await;
    stop.cancel();
    let report = task.await.unwrap();
    let (status, finished) = req.await.unwrap();
    assert_eq!(status, 200, "in-flight work finished");
    assert!(report.drained_clean);
    let calls = gw.calls();
    let draining_at = calls
        .iter()
        .position(|c| matches!(c, Call::Register(r, _) if r.state == WorkerState::Draining))
        .expect("published draining");
    let (dereg_at, dereg_time) = calls
        .iter()
        .enumerate()
        .find_map(|(i, c)| match c {
            Call::Deregister(_, t) => Some((i, *t)),
            _ => None,
        })
        .expect("withdrew");
    assert!(draining_at < dereg_at);
    assert!(
        dereg_time >= finished,
        "withdrew only after the in-flight request ended"
    );
    assert_eq!(report.bootstrap_calls, 0);
    assert_eq!(report.registry_calls as usize, calls.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_is_called_once_and_cached_while_falling_back_to_the_registry() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut cfg = base_config(&gw, "boot");
    cfg.dht_enabled = true;
    cfg.bootstrap_url = Some(format!("{}/api/dht/bootstrap", gw.url));
    cfg.registry_url = None; // derived from the bootstrap URL's origin
    let state_dir = cfg.state_dir.clone();
    let (stop, task) = start_with_service(cfg);
    until("a registration", || !gw.registrations().is_empty()).await;
    // Several refresh periods: the DHT join is retried, the endpoint is not called again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let report = task.await.unwrap();
    assert_eq!(gw.bootstrap_calls(), 1);
    assert_eq!(report.bootstrap_calls, 1);
    let cache = std::fs::read_to_string(state_dir.join("seeds.json")).unwrap();
    assert!(cache.contains("12D3KooWFakeSeed"));
    assert!(
        gw.calls().iter().any(|c| matches!(c, Call::Deregister(..))),
        "left the registry on drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_url_means_no_record() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut cfg = base_config(&gw, "nourl");
    cfg.tunnel = TunnelConfig::Cloudflared(CloudflaredConfig {
        bin: "/nonexistent/cloudflared".into(),
        upstream: String::new(),
        named: None,
        poll_every: Duration::from_millis(100),
        backoff_base: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
    });
    let (stop, task) = start_with_service(cfg);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let report = task.await.unwrap();
    assert!(gw.registrations().is_empty(), "published without a URL");
    assert_eq!(report.publications, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_service_down_is_published_as_joining_and_recovers() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut cfg = base_config(&gw, "down");
    let upstream = free_addr();
    cfg.upstream = format!("http://{upstream}");
    let (stop, task) = start(cfg);
    until("a joining registration", || {
        gw.registrations()
            .iter()
            .any(|r| r.state == WorkerState::Joining)
    })
    .await;
    assert!(
        gw.registrations()
            .iter()
            .all(|r| r.state != WorkerState::Online)
    );
    let svc = MockService::spawn(MockServiceConfig {
        listen: upstream,
        ..MockServiceConfig::default()
    })
    .await
    .unwrap();
    until("online once the service is up", || {
        gw.registrations()
            .iter()
            .any(|r| r.state == WorkerState::Online)
    })
    .await;
    stop.cancel();
    task.await.unwrap();
    drop(svc);
}

#[tokio::test]
async fn bad_config_is_refused_before_any_socket() {
    let gw = FakeGateway::start(TOKEN).await;
    let mut cfg = base_config(&gw, "bad");
    cfg.services.clear();
    let err = run(cfg, CancellationToken::new()).await.unwrap_err();
    assert!(err.is_usage(), "{err}");
    let mut cfg = base_config(&gw, "bad2");
    cfg.gpu = GpuChoice::Profile("/nonexistent/profile.toml".into());
    let err = run(cfg, CancellationToken::new()).await.unwrap_err();
    assert!(err.is_usage(), "{err}");
}

#[tokio::test]
async fn probe_once_returns_the_record_the_agent_would_publish() {
    let gw = FakeGateway::start(TOKEN).await;
    let svc = MockService::spawn(MockServiceConfig::default())
        .await
        .unwrap();
    let mut cfg = base_config(&gw, "probe-once");
    cfg.gpu = GpuChoice::Profile("h100x2".into());
    cfg.upstream = svc.url();
    let rec = gpumesh_probe::agent::probe_once(&cfg).await.unwrap();
    assert_eq!(rec.state, WorkerState::Online);
    assert_eq!(rec.gpus.len(), 2);
    assert_eq!(
        rec.peer_id,
        gpumesh_probe::agent::worker_id(&cfg.state_dir).unwrap()
    );
    assert!(rec.host.mem_total_mib > 0);
    drop(svc);
    let rec = gpumesh_probe::agent::probe_once(&cfg).await.unwrap();
    assert_eq!(rec.state, WorkerState::Joining, "service down");
    assert!(gw.calls().is_empty(), "probe-once publishes nothing");
}
