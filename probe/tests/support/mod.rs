//! Shared helpers for the probe's integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod fake_cloudflared;
pub mod fake_gateway;

use std::path::PathBuf;
use std::time::Duration;

use gpumesh_dht::Timings;
use gpumesh_probe::agent::AgentReport;
use gpumesh_probe::gpu::GpuChoice;
use gpumesh_probe::tunnel::TunnelConfig;
use gpumesh_probe::{AgentConfig, AgentError};
use gpumesh_testkit::{MockService, MockServiceConfig};
use tokio_util::sync::CancellationToken;

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A DHT agent (T4 profile, fast timings; run it with [`run_with_service`]) whose bootstrap endpoint
/// is `gateway_url`'s and whose state lives in a fresh directory named after `state`.
pub fn dht_agent_config(gateway_url: &str, state: &str) -> AgentConfig {
    AgentConfig {
        services: vec!["ocr".parse().unwrap()],
        gpu: GpuChoice::Profile("t4".into()),
        tunnel: TunnelConfig::PublicUrl("https://w7.example.org".into()),
        report_listen: std::net::SocketAddr::from(([127, 0, 0, 1], free_port())),
        bootstrap_url: Some(format!("{gateway_url}/api/dht/bootstrap")),
        state_dir: temp_dir(state),
        refresh_every: Duration::from_secs(1),
        load_every: Duration::from_millis(300),
        probe_every: Duration::from_millis(300),
        dht_timings: Some(Timings::fast()),
        dht_join_timeout: Duration::from_secs(5),
        ..AgentConfig::default()
    }
}

/// Runs the agent `cfg` with a mock GPU service next to it, as a volunteer runs the agent
/// beside an inference server: the mock is the agent's upstream and reports its load to the
/// agent's load endpoint. The mock stops when the agent returns.
pub async fn run_with_service(
    mut cfg: AgentConfig,
    stop: CancellationToken,
) -> Result<AgentReport, AgentError> {
    let svc = MockService::spawn(MockServiceConfig {
        report_url: Some(format!("http://{}/load", cfg.report_listen)),
        report_every: cfg.load_every,
        ..MockServiceConfig::default()
    })
    .await
    .expect("the mock service binds");
    cfg.upstream = svc.url();
    let report = gpumesh_probe::run(cfg, stop).await;
    drop(svc);
    report
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gpumesh-probe-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
