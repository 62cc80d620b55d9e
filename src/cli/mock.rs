//! The mock GPU service flags of `gpumesh agent` (feature `loadtest`): `--mock-service` runs
//! the mock next to the agent in this process, as its upstream, reporting load to the agent's
//! load endpoint the way a real inference server would; `--mock-only` runs the mock alone.
//! The agent library knows nothing of the mock.
//!
//! Failure modes switch at run time: `POST /admin/fault` on the mock with `{"mode":"none"}`,
//! `{"mode":"slow","factor":5}`, `{"mode":"error"}`, `{"mode":"hang"}`, `{"mode":"crash"}`, or
//! one of the liars: `{"mode":"garbage"}` (instant, well-formed, wrong answers),
//! `{"mode":"black_hole"}` (reads the request, never answers) and
//! `{"mode":"tarpit","byte_every_ms":1000}` (200 at once, then one body byte a second).
//! `--mock-claim-slots` makes it lie about its capacity from the start.

use std::net::SocketAddr;
use std::process::ExitCode;

use gpumesh_probe::AgentConfig;
use gpumesh_probe::gpu::profile_speed;
use gpumesh_testkit::{MockService, MockServiceConfig};

use super::UsageError;

/// Flags of the mock GPU service.
#[derive(Debug, clap::Args)]
pub struct MockFlags {
    /// Run the mock GPU service next to the agent, as its upstream (demos).
    #[arg(long, env = "GPUMESH_MOCK_SERVICE", conflicts_with = "mock_only")]
    mock_service: bool,
    /// Run only the mock GPU service (at --mock-listen) until a signal; no agent.
    #[arg(long, env = "GPUMESH_MOCK_ONLY")]
    pub mock_only: bool,
    /// Mock service address (--mock-service and --mock-only; port 0 picks one).
    #[arg(long, env = "GPUMESH_MOCK_LISTEN", default_value = "127.0.0.1:8000")]
    mock_listen: SocketAddr,
    /// Where the standalone mock posts its load (--mock-only), e.g. http://127.0.0.1:7071/load.
    #[arg(long, env = "GPUMESH_MOCK_REPORT_URL")]
    mock_report_url: Option<String>,
    /// Mock concurrency slots.
    #[arg(long, env = "GPUMESH_MOCK_SLOTS", default_value_t = 4)]
    mock_slots: u32,
    /// Mock service time of an empty request on an A100, ms.
    #[arg(long, env = "GPUMESH_MOCK_BASE_MS", default_value_t = 50.0)]
    mock_base_ms: f64,
    /// Mock extra time per KiB of request body on an A100, ms.
    #[arg(long, env = "GPUMESH_MOCK_PER_KIB_MS", default_value_t = 0.5)]
    mock_per_kib_ms: f64,
    /// Mock queue bound (more requests get 503).
    #[arg(long, env = "GPUMESH_MOCK_MAX_QUEUE", default_value_t = 64)]
    mock_max_queue: u32,
    /// Mock speed relative to one A100 (default: from --gpu-profile, else 1).
    #[arg(long, env = "GPUMESH_MOCK_SPEED")]
    mock_speed: Option<f64>,
    /// The concurrency the mock reports to the agent (default: --mock-slots); a larger number
    /// is a lie about capacity, for trying the gateway's defences.
    #[arg(long, env = "GPUMESH_MOCK_CLAIM_SLOTS")]
    mock_claim_slots: Option<u32>,
}

impl MockFlags {
    fn config(&self, gpu_profile: Option<&str>, report_url: Option<String>) -> MockServiceConfig {
        MockServiceConfig {
            listen: self.mock_listen,
            slots: self.mock_slots,
            speed: self
                .mock_speed
                .or_else(|| gpu_profile.and_then(profile_speed))
                .unwrap_or(1.0),
            base_ms: self.mock_base_ms,
            per_kib_ms: self.mock_per_kib_ms,
            max_queue: self.mock_max_queue,
            report_url,
            claim_slots: self.mock_claim_slots,
            ..MockServiceConfig::default()
        }
    }

    /// With `--mock-service`: checks the mock's figures and points `agent`'s upstream at the
    /// mock's address (so that the agent's own checks pass before any socket opens); the
    /// mock's configuration is returned for [`start_beside`].
    pub fn prepare(
        &self,
        gpu_profile: Option<&str>,
        agent: &mut AgentConfig,
    ) -> Result<Option<MockServiceConfig>, UsageError> {
        if !self.mock_service {
            return Ok(None);
        }
        let report_url = format!("http://{}/load", agent.report_listen);
        let cfg = self.config(gpu_profile, Some(report_url));
        cfg.validate().map_err(UsageError)?;
        agent.upstream = format!("http://{}", self.mock_listen);
        Ok(Some(cfg))
    }

    /// `--mock-only`: serves the mock until Ctrl-C or SIGTERM.
    pub fn run_only(&self, gpu_profile: Option<&str>) -> anyhow::Result<ExitCode> {
        let cfg = self.config(gpu_profile, self.mock_report_url.clone());
        cfg.validate().map_err(UsageError)?;
        super::runtime()?.block_on(async {
            let svc = MockService::spawn(cfg)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            eprintln!("mock GPU service at {}", svc.url());
            super::shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        })
    }
}

/// Starts the mock prepared by [`MockFlags::prepare`] and points `agent`'s upstream at its
/// bound address (port 0 is known only now). Keep the service alive as long as the agent.
pub async fn start_beside(
    cfg: Option<MockServiceConfig>,
    agent: &mut AgentConfig,
) -> anyhow::Result<Option<MockService>> {
    let Some(cfg) = cfg else { return Ok(None) };
    let svc = MockService::spawn(cfg)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    agent.upstream = svc.url();
    Ok(Some(svc))
}
