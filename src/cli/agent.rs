//! `gpumesh agent`: flags → [`gpumesh_probe::AgentConfig`] → [`gpumesh_probe::run`].
//!
//! Secrets come from the environment only, never argv: `GPUMESH_REGISTRY_TOKEN`, and
//! `GPUMESH_TUNNEL_TOKEN` (or cloudflared's own `TUNNEL_TOKEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use gpumesh_probe::gpu::{GpuChoice, profile_speed};
use gpumesh_probe::tunnel::{CloudflaredConfig, NamedTunnel, Secret, TunnelConfig};
use gpumesh_probe::{AgentConfig, AgentError, MockService, MockServiceConfig};
use tokio_util::sync::CancellationToken;

use super::UsageError;

/// How the worker gets a public URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TunnelKind {
    /// No tunnel: `--public-url` is reachable as is.
    None,
    /// Supervise `cloudflared` (quick tunnel, or named with `--public-url`).
    Cloudflared,
}

/// Flags of `gpumesh agent` (boxed: the flag set is large and `Command` holds it by value).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

/// The flags themselves.
#[derive(Debug, clap::Args)]
struct Flags {
    /// A service this worker offers (repeat; comma-separated in the env var).
    #[arg(long = "service", env = "GPUMESH_SERVICES", value_delimiter = ',')]
    services: Vec<gpumesh_dht::ServiceName>,
    /// A capability tag to publish (repeat; comma-separated in the env var).
    #[arg(
        long = "capability",
        env = "GPUMESH_CAPABILITIES",
        value_delimiter = ','
    )]
    capabilities: Vec<String>,
    /// Fake GPUs: h100x2, a100, rtx3090, t4, or a TOML file. Default: NVML when it loads.
    #[arg(long, env = "GPUMESH_GPU_PROFILE", conflicts_with = "no_gpu")]
    gpu_profile: Option<String>,
    /// CPU-only worker: do not probe GPUs.
    #[arg(long, env = "GPUMESH_NO_GPU")]
    no_gpu: bool,
    /// Seed for fake GPU uuids (distinct per simulated worker).
    #[arg(long, env = "GPUMESH_FAKE_SEED", default_value_t = 0)]
    fake_seed: u64,
    /// The local service URL (health checks; the quick tunnel's target).
    #[arg(
        long,
        env = "GPUMESH_UPSTREAM",
        default_value = "http://127.0.0.1:8000"
    )]
    upstream: String,
    /// Health path on the upstream (any answer below 500 means up).
    #[arg(long, env = "GPUMESH_HEALTH_PATH", default_value = "/health")]
    health_path: String,
    /// Where the service posts its load (`POST /load`, JSON in_flight/queue_depth/max_concurrency).
    #[arg(long, env = "GPUMESH_REPORT_LISTEN", default_value = "127.0.0.1:7071")]
    report_listen: SocketAddr,
    /// Concurrency to publish until the service reports its own.
    #[arg(long, env = "GPUMESH_MAX_CONCURRENCY", default_value_t = 1)]
    max_concurrency: u32,
    /// The worker's public URL (fixed, or a named tunnel's hostname).
    #[arg(long, env = "GPUMESH_PUBLIC_URL")]
    public_url: Option<String>,
    /// Tunnel to run.
    #[arg(long, env = "GPUMESH_TUNNEL", value_enum, default_value_t = TunnelKind::None)]
    tunnel: TunnelKind,
    /// The cloudflared executable.
    #[arg(long, env = "GPUMESH_CLOUDFLARED_BIN", default_value = "cloudflared")]
    cloudflared_bin: PathBuf,
    /// A gateway's bootstrap endpoint, e.g. https://gw.example.org/api/dht/bootstrap.
    #[arg(long, env = "GPUMESH_BOOTSTRAP_URL")]
    bootstrap_url: Option<String>,
    /// Gateway base URL for the fallback registry (default: the bootstrap URL's origin).
    #[arg(long, env = "GPUMESH_REGISTRY_URL")]
    registry_url: Option<String>,
    /// Use the DHT (false: coordinator registry only). Also reads `DHT_ENABLED`.
    #[arg(long, env = "GPUMESH_DHT_ENABLED", value_parser = BoolishValueParser::new())]
    dht_enabled: Option<bool>,
    /// DHT TCP port (0: any). Also reads `DHT_PORT`.
    #[arg(long, env = "GPUMESH_DHT_PORT")]
    dht_port: Option<u16>,
    /// The operator's admission token for this worker (`gpumesh admit --out FILE`). Needed
    /// when gateways enforce admission; checked at start against this worker's peer id.
    #[arg(long, env = "GPUMESH_ADMISSION_FILE")]
    admission: Option<PathBuf>,
    /// The DHT's pre-shared network key file (`gpumesh keygen --network-key FILE`); required
    /// to join a private network whose gateways and seeds use one.
    #[arg(long, env = "GPUMESH_NETWORK_KEY_FILE")]
    network_key_file: Option<PathBuf>,
    /// Where the worker id and seed cache live (default: $XDG_STATE_HOME/gpumesh).
    #[arg(long, env = "GPUMESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Record refresh period, seconds (records expire after twice this).
    #[arg(long, env = "GPUMESH_REFRESH_SECS", default_value_t = 30)]
    refresh_secs: u64,
    /// Load heartbeat period, milliseconds.
    #[arg(long, env = "GPUMESH_LOAD_INTERVAL_MS", default_value_t = 2000)]
    load_interval_ms: u64,
    /// Probe period, milliseconds.
    #[arg(long, env = "GPUMESH_PROBE_INTERVAL_MS", default_value_t = 5000)]
    probe_interval_ms: u64,
    /// A free-VRAM move this large (MiB) republishes the record at once.
    #[arg(long, env = "GPUMESH_VRAM_STEP_MIB", default_value_t = 1024)]
    vram_step_mib: u64,
    /// How long a drain waits for in-flight requests, seconds.
    #[arg(long, env = "GPUMESH_DRAIN_GRACE_SECS", default_value_t = 30)]
    drain_grace_secs: u64,
    /// Probe once, print the record the agent would publish, and exit.
    #[arg(long, env = "GPUMESH_PROBE_ONCE")]
    probe_once: bool,
    /// With --probe-once: print JSON.
    #[arg(long, env = "GPUMESH_JSON")]
    json: bool,
    /// Run the mock GPU service in-process as the upstream (demos).
    #[arg(long, env = "GPUMESH_MOCK_SERVICE", conflicts_with = "mock_only")]
    mock_service: bool,
    /// Run only the mock GPU service (at --mock-listen) until a signal; no agent.
    #[arg(long, env = "GPUMESH_MOCK_ONLY")]
    mock_only: bool,
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
}

fn env_secret(names: &[&str]) -> Option<Secret> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .map(Secret::new)
}

fn legacy_env<T: std::str::FromStr>(name: &str) -> Result<Option<T>, UsageError> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|_| UsageError(format!("{name}={v} is not valid"))),
        Err(_) => Ok(None),
    }
}

impl Flags {
    fn mock_config(&self, listen: SocketAddr, report_url: Option<String>) -> MockServiceConfig {
        let speed = self
            .mock_speed
            .or_else(|| self.gpu_profile.as_deref().and_then(profile_speed))
            .unwrap_or(1.0);
        MockServiceConfig {
            listen,
            slots: self.mock_slots,
            speed,
            base_ms: self.mock_base_ms,
            per_kib_ms: self.mock_per_kib_ms,
            max_queue: self.mock_max_queue,
            report_url,
            ..MockServiceConfig::default()
        }
    }

    fn into_config(self) -> Result<AgentConfig, UsageError> {
        let gpu = match (&self.gpu_profile, self.no_gpu) {
            (Some(p), _) => GpuChoice::Profile(p.clone()),
            (None, true) => GpuChoice::None,
            (None, false) => GpuChoice::Auto,
        };
        let tunnel = match (self.tunnel, &self.public_url) {
            (TunnelKind::None, Some(u)) => TunnelConfig::PublicUrl(u.clone()),
            (TunnelKind::None, None) if self.probe_once => TunnelConfig::PublicUrl(String::new()),
            (TunnelKind::None, None) => {
                return Err(UsageError(
                    "give --public-url URL or --tunnel cloudflared".into(),
                ));
            }
            (TunnelKind::Cloudflared, url) => TunnelConfig::Cloudflared(CloudflaredConfig {
                bin: self.cloudflared_bin.clone(),
                upstream: self.upstream.clone(),
                named: url.clone().map(|public_url| NamedTunnel {
                    public_url,
                    token: env_secret(&["GPUMESH_TUNNEL_TOKEN", "TUNNEL_TOKEN"]),
                }),
                poll_every: Duration::from_millis(500),
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
            }),
        };
        let dht_enabled = match self.dht_enabled {
            Some(b) => b,
            None => legacy_env::<String>("DHT_ENABLED")?
                .map(|v| {
                    !matches!(
                        v.to_ascii_lowercase().as_str(),
                        "false" | "0" | "no" | "off"
                    )
                })
                .unwrap_or(true),
        };
        let dht_port = match self.dht_port {
            Some(p) => p,
            None => legacy_env("DHT_PORT")?.unwrap_or(0),
        };
        let state_dir = self.state_dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .map_or_else(|| PathBuf::from(".gpumesh"), |d| d.join("gpumesh"))
        });
        let mock = self
            .mock_service
            .then(|| self.mock_config(self.mock_listen, None));
        let admission = self
            .admission
            .as_deref()
            .map(gpumesh_dht::admission::load_token)
            .transpose()
            .map_err(|e| UsageError(format!("--admission: {e}")))?;
        let network_key = self
            .network_key_file
            .as_deref()
            .map(gpumesh_dht::identity::load_network_key)
            .transpose()
            .map_err(|e| UsageError(format!("--network-key-file: {e}")))?;
        Ok(AgentConfig {
            services: self.services,
            capabilities: self.capabilities,
            gpu,
            fake_seed: self.fake_seed,
            tunnel,
            upstream: self.upstream,
            health_path: self.health_path,
            report_listen: self.report_listen,
            max_concurrency: self.max_concurrency,
            dht_enabled,
            dht_port,
            dht_timings: None,
            dht_join_timeout: Duration::from_secs(10),
            bootstrap_url: self.bootstrap_url,
            registry_url: self.registry_url,
            registry_token: env_secret(&["GPUMESH_REGISTRY_TOKEN"]),
            admission,
            network_key,
            state_dir,
            refresh_every: Duration::from_secs(self.refresh_secs),
            load_every: Duration::from_millis(self.load_interval_ms),
            probe_every: Duration::from_millis(self.probe_interval_ms),
            vram_step_mib: self.vram_step_mib,
            drain_grace: Duration::from_secs(self.drain_grace_secs),
            report_stale_after: Duration::from_millis(self.load_interval_ms.max(2000) * 5),
            mock,
        })
    }
}

fn usage_or_error(e: AgentError) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

/// Cancels the token on the first Ctrl-C/SIGTERM; a second one exits at once.
fn on_signal(rt: &tokio::runtime::Runtime) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    rt.spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("shutdown requested; draining (signal again to exit now)");
        t.cancel();
        super::shutdown_signal().await;
        std::process::exit(130);
    });
    token
}

/// Runs `gpumesh agent`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let args = *args.flags;
    if args.mock_only {
        let cfg = args.mock_config(args.mock_listen, args.mock_report_url.clone());
        cfg.validate().map_err(UsageError)?;
        let rt = super::runtime()?;
        return rt.block_on(async {
            let svc = MockService::spawn(cfg).await.map_err(usage_or_error)?;
            eprintln!("mock GPU service at {}", svc.url());
            super::shutdown_signal().await;
            Ok(ExitCode::SUCCESS)
        });
    }
    let probe_once = args.probe_once;
    let json = args.json;
    let config = args.into_config()?;
    let rt = super::runtime()?;
    if probe_once {
        let record = rt
            .block_on(gpumesh_probe::agent::probe_once(&config))
            .map_err(usage_or_error)?;
        if record.tunnel_url.is_empty() {
            tracing::warn!("no public URL yet: the agent would not publish this record");
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&record)?);
        } else {
            println!(
                "{} state={:?} services={:?} gpus={} cpu={:.0}% mem={}/{} MiB url={}",
                record.peer_id,
                record.state,
                record
                    .services
                    .iter()
                    .map(gpumesh_dht::ServiceName::as_str)
                    .collect::<Vec<_>>(),
                record.gpus.len(),
                record.host.cpu_util_pct,
                record.host.mem_available_mib,
                record.host.mem_total_mib,
                record.tunnel_url,
            );
            for g in &record.gpus {
                println!(
                    "  {} {} {}/{} MiB free",
                    g.model, g.uuid, g.vram_free_mib, g.vram_total_mib
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    config.validate().map_err(usage_or_error)?;
    let shutdown = on_signal(&rt);
    rt.block_on(gpumesh_probe::run(config, shutdown))
        .map_err(usage_or_error)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio_util::sync::CancellationToken;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::Args,
    }

    #[test]
    fn flags_parse_into_a_valid_config() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "agent",
            "--service",
            "ocr",
            "--service",
            "embed",
            "--gpu-profile",
            "t4",
            "--public-url",
            "https://w.example.org",
            "--bootstrap-url",
            "https://gw.example.org/api/dht/bootstrap",
        ])
        .unwrap();
        let cfg = cli.args.flags.into_config().unwrap();
        assert_eq!(cfg.services, ["ocr", "embed"]);
        cfg.validate().unwrap();
    }

    /// A service name the DHT would refuse (`OCR`: keys are lower case) is refused where the
    /// flags are read, with the rulebook's message, before the agent starts.
    #[test]
    fn an_upper_case_service_is_refused_before_the_agent_starts() {
        let parsed = Cli::try_parse_from([
            "agent",
            "--service",
            "OCR",
            "--public-url",
            "https://w.example.org",
            "--bootstrap-url",
            "https://gw.example.org/api/dht/bootstrap",
        ]);
        let refused = match parsed {
            Err(e) => e.to_string(),
            Ok(cli) => match cli.args.flags.into_config() {
                Err(e) => e.to_string(),
                Ok(cfg) => cfg
                    .validate()
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            },
        };
        assert!(
            refused.contains(
                "service name `OCR` is invalid: use 1-64 characters of a-z, 0-9, '.', '_' or '-'"
            ),
            "accepted, or refused for another reason: {refused:?}"
        );
    }

    /// The agent started through its flags with `--admission FILE`: the token is loaded and
    /// checked, the agent runs (mock service, DHT join attempts, registry fallback with a
    /// bearer token), and neither the registry token nor the node key reaches the logs.
    #[test]
    fn admission_file_loads_and_secrets_never_reach_the_logs() {
        use crate::cli::test_logs::{capture, eventually, hex};
        let logs = capture();
        let dir = std::env::temp_dir().join(format!(
            "gpumesh-cli-agent-secrets-{}-{}",
            std::process::id(),
            gpumesh_dht::rules::unix_ms()
        ));
        let state = dir.join("state");
        let id = gpumesh_probe::agent::worker_id(&state).unwrap();
        let operator = gpumesh_dht::identity::load_or_create_keypair(&dir.join("op.key")).unwrap();
        let now = gpumesh_dht::rules::unix_ms();
        let token = gpumesh_dht::AdmissionToken::issue(
            &operator,
            gpumesh_dht::admission::parse_peer_id(&id).unwrap(),
            now,
            now + 3_600_000,
        )
        .unwrap();
        let token_file = dir.join("w.admission");
        gpumesh_dht::admission::write_token(&token_file, &token).unwrap();
        std::fs::write(dir.join("bad.admission"), "gpumesh-admission-v1:00\n").unwrap();
        let args = |admission: &std::path::Path| {
            Cli::try_parse_from([
                "agent".as_ref(),
                "--service".as_ref(),
                "ocr".as_ref(),
                "--gpu-profile".as_ref(),
                "t4".as_ref(),
                "--mock-service".as_ref(),
                "--mock-listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--report-listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--public-url".as_ref(),
                "http://127.0.0.1:9".as_ref(),
                "--bootstrap-url".as_ref(),
                "http://127.0.0.1:9/api/dht/bootstrap".as_ref(),
                "--state-dir".as_ref(),
                state.as_os_str(),
                "--admission".as_ref(),
                admission.as_os_str(),
            ])
            .unwrap()
            .args
            .flags
        };
        // A file that is not a token, and a missing file, are usage errors.
        assert!(args(&dir.join("bad.admission")).into_config().is_err());
        assert!(args(&dir.join("missing.admission")).into_config().is_err());

        let mut cfg = args(&token_file).into_config().unwrap();
        assert_eq!(cfg.admission.as_ref(), Some(&token));
        let secret = "agent-registry-token-8b2e54d0";
        cfg.registry_token = Some(gpumesh_probe::tunnel::Secret::new(secret));
        cfg.validate().unwrap();
        let rt = super::super::runtime().unwrap();
        rt.block_on(async {
            tracing::info!(config = ?cfg, "agent config (as an operator might log it)");
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(gpumesh_probe::run(cfg, shutdown.clone()));
            assert!(
                eventually(60, || logs.text().contains("admission token loaded")
                    && logs.text().contains("DHT not joined"))
                .await,
                "the agent did not start"
            );
            shutdown.cancel();
            task.await.unwrap().unwrap();
        });
        let text = logs.text().to_lowercase();
        let key =
            gpumesh_dht::identity::load_or_create_keypair(&gpumesh_probe::agent::key_path(&state))
                .unwrap();
        let private = key.to_protobuf_encoding().unwrap();
        let ed = key.try_into_ed25519().unwrap().secret();
        assert!(!text.contains(secret), "registry token leaked");
        assert!(!text.contains(&hex(&private)), "node key leaked");
        assert!(!text.contains(&hex(ed.as_ref())), "node key leaked");
        assert!(
            text.contains("secret(<redacted>)"),
            "the config dump was not logged"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
