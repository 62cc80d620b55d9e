//! `gpumesh agent`: flags → [`gpumesh_probe::AgentConfig`] → [`gpumesh_probe::run`].
//!
//! Secrets come from the environment only, never argv: `GPUMESH_REGISTRY_TOKEN`, and
//! `GPUMESH_TUNNEL_TOKEN` (or cloudflared's own `TUNNEL_TOKEN`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use gpumesh_probe::gpu::GpuChoice;
use gpumesh_probe::tunnel::{CloudflaredConfig, NamedTunnel, Secret, TunnelConfig};
use gpumesh_probe::{AgentConfig, AgentError};
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
    /// The mock GPU service beside the agent (demos and tests).
    #[cfg(feature = "loadtest")]
    #[command(flatten)]
    mock: Box<super::mock::MockFlags>,
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
}

fn env_secret(names: &[&str]) -> Option<Secret> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok())
        .map(Secret::new)
}

impl Flags {
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
        let dht_enabled = super::legacy_env::dht_enabled(self.dht_enabled)?;
        let dht_port = super::legacy_env::dht_port(self.dht_port, 0)?;
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
        let load_every = Duration::from_millis(self.load_interval_ms);
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
            bootstrap_url: self.bootstrap_url,
            registry_url: self.registry_url,
            registry_token: env_secret(&["GPUMESH_REGISTRY_TOKEN"]),
            admission,
            network_key,
            refresh_every: Duration::from_secs(self.refresh_secs),
            probe_every: Duration::from_millis(self.probe_interval_ms),
            vram_step_mib: self.vram_step_mib,
            drain_grace: Duration::from_secs(self.drain_grace_secs),
            ..AgentConfig::with_defaults(self.state_dir, load_every)
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

/// Cancels the token on the first Ctrl-C/SIGTERM; a second one exits at once. Call it inside
/// the runtime.
fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
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
    #[cfg(feature = "loadtest")]
    if args.mock.mock_only {
        return args.mock.run_only(args.flags.gpu_profile.as_deref());
    }
    let flags = *args.flags;
    let (probe_once, json) = (flags.probe_once, flags.json);
    #[cfg(feature = "loadtest")]
    let gpu_profile = flags.gpu_profile.clone();
    #[cfg_attr(not(feature = "loadtest"), allow(unused_mut))]
    let mut config = flags.into_config()?;
    #[cfg(feature = "loadtest")]
    let mock = args.mock.prepare(gpu_profile.as_deref(), &mut config)?;
    if !probe_once {
        config.validate().map_err(usage_or_error)?;
    }
    let rt = super::runtime()?;
    rt.block_on(async move {
        #[cfg(feature = "loadtest")]
        let _mock = super::mock::start_beside(mock, &mut config).await?;
        if probe_once {
            return print_probe(&config, json).await;
        }
        let shutdown = on_signal();
        gpumesh_probe::run(config, shutdown)
            .await
            .map_err(usage_or_error)?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `--probe-once`: prints the record the agent would publish now.
async fn print_probe(config: &AgentConfig, json: bool) -> anyhow::Result<ExitCode> {
    let record = gpumesh_probe::agent::probe_once(config)
        .await
        .map_err(usage_or_error)?;
    if record.tunnel_url.is_empty() {
        tracing::warn!("no public URL yet: the agent would not publish this record");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&record)?);
        return Ok(ExitCode::SUCCESS);
    }
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

    /// The agent started through its flags with `--admission FILE`: the token is loaded and
    /// checked, the agent runs (DHT join attempts, registry fallback with a
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
