//! `gpumesh gateway`: flags → [`gpumesh_gateway::Config`] → [`gpumesh_gateway::run`].
//!
//! Every flag reads a `GPUMESH_*` variable; the seed system's `DHT_ENABLED` and `DHT_PORT`
//! keep working when the `GPUMESH_` names are unset. The registry token comes from the
//! environment only (`GPUMESH_REGISTRY_TOKEN`), never argv.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use gpumesh_gateway::checks::CheckPlan;
use gpumesh_gateway::{Config, RunError};
use tokio_util::sync::CancellationToken;

use super::UsageError;

/// Flags of `gpumesh gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP listen address.
    #[arg(long, env = "GPUMESH_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Run a DHT node (`false`: coordinator-registry only). Also read from `DHT_ENABLED`.
    #[arg(long, env = "GPUMESH_DHT_ENABLED", value_parser = BoolishValueParser::new())]
    dht_enabled: Option<bool>,
    /// DHT listen IP.
    #[arg(long, env = "GPUMESH_DHT_LISTEN", default_value = "0.0.0.0")]
    dht_listen: IpAddr,
    /// DHT TCP port (default 4001). Also read from `DHT_PORT`.
    #[arg(long, env = "GPUMESH_DHT_PORT")]
    dht_port: Option<u16>,
    /// A stable DHT node to list in bootstrap, `/…/p2p/<peer id>` (repeat; comma-separated in
    /// the env var).
    #[arg(long = "seed", env = "GPUMESH_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// This gateway's DHT address as others dial it, e.g. `/dns4/gw.example.org/tcp/4001`
    /// (repeat; comma-separated in the env var). Default: the node's listen addresses.
    #[arg(
        long = "dht-external-addr",
        env = "GPUMESH_DHT_EXTERNAL_ADDRS",
        value_delimiter = ','
    )]
    dht_external_addrs: Vec<String>,
    /// The DHT node's key file (created, mode 0600, if missing). Default: a fresh identity.
    #[arg(long, env = "GPUMESH_DHT_IDENTITY_FILE")]
    dht_identity_file: Option<PathBuf>,
    /// Pre-shared network key file (libp2p pnet): peers without the key cannot connect.
    #[arg(long, env = "GPUMESH_NETWORK_KEY_FILE")]
    network_key_file: Option<PathBuf>,
    /// File in which the gateway saves its worker view (signed records, re-verified on load)
    /// so that a restart starts with a whole view. Default: not saved.
    #[arg(long, env = "GPUMESH_DHT_VIEW_FILE")]
    dht_view_file: Option<PathBuf>,
    /// An operator public key (`gpumesh keygen --operator-key` prints it) whose admission
    /// tokens this gateway's DHT node accepts (repeat; comma-separated in the env var). When
    /// set, records, provider records and gossip of workers without a valid token are refused.
    #[arg(
        long = "admission-pubkey",
        env = "GPUMESH_ADMISSION_PUBKEYS",
        value_delimiter = ','
    )]
    admission_pubkeys: Vec<String>,
    /// Seconds a registry entry lives without a heartbeat.
    #[arg(long, env = "GPUMESH_REGISTRY_TTL_SECS", default_value_t = 90)]
    registry_ttl_secs: u64,
    /// Accept loopback, private, link-local and metadata upstreams, and plain http (demo, tests).
    #[arg(long, env = "GPUMESH_ALLOW_PRIVATE_UPSTREAMS", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    allow_private_upstreams: bool,
    /// Milliseconds allowed to connect to a worker.
    #[arg(long, env = "GPUMESH_CONNECT_TIMEOUT_MS", default_value_t = 3000)]
    connect_timeout_ms: u64,
    /// Seconds allowed for a worker's response headers.
    #[arg(long, env = "GPUMESH_UPSTREAM_TIMEOUT_SECS", default_value_t = 60)]
    upstream_timeout_secs: u64,
    /// Seconds allowed between two reads of a worker's response body.
    #[arg(long, env = "GPUMESH_READ_TIMEOUT_SECS", default_value_t = 60)]
    read_timeout_secs: u64,
    /// Time from a request's arrival to the first byte of the worker's answer body, e.g.
    /// `60s` (a bare number is seconds). A worker that misses it fails the request and loses
    /// trust.
    #[arg(long, env = "GPUMESH_TTFB_TIMEOUT", default_value = "60s", value_parser = duration)]
    ttfb_timeout: Duration,
    /// Time from a request's arrival to the end of the worker's answer, e.g. `600s`: a worker
    /// trickling bytes cannot hold a request longer.
    #[arg(long, env = "GPUMESH_RESPONSE_DEADLINE", default_value = "600s", value_parser = duration)]
    response_deadline: Duration,
    /// TOML file of canaries (known-answer requests) and cross-checked services; see
    /// docs/trust.md. Default: no answer checks.
    #[arg(long, env = "GPUMESH_CANARIES_FILE")]
    canaries: Option<PathBuf>,
    /// Largest request body forwarded, bytes.
    #[arg(long, env = "GPUMESH_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Bootstrap requests per client IP per minute.
    #[arg(long, env = "GPUMESH_BOOTSTRAP_RATE_PER_MIN", default_value_t = 60)]
    bootstrap_rate_per_min: u32,
    /// Registry requests per client IP per minute.
    #[arg(long, env = "GPUMESH_REGISTRY_RATE_PER_MIN", default_value_t = 120)]
    registry_rate_per_min: u32,
    /// Seconds clients may cache the bootstrap list.
    #[arg(long, env = "GPUMESH_BOOTSTRAP_TTL_SECS", default_value_t = 3600)]
    bootstrap_ttl_secs: u64,
    /// Workers tried per request when the first cannot be reached.
    #[arg(long, env = "GPUMESH_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Seconds a client may take to send a request head (also the idle keep-alive limit).
    #[arg(long, env = "GPUMESH_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    header_read_timeout_secs: u64,
    /// Largest request head (request line and headers) accepted, bytes (at least 8192).
    #[arg(long, env = "GPUMESH_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Milliseconds after which a GET/HEAD/OPTIONS still unanswered is also sent to a second
    /// worker (the first answer wins; at most 5 % of them). 0: never.
    #[arg(long, env = "GPUMESH_HEDGE_AFTER_MS", default_value_t = 0)]
    hedge_after_ms: u64,
    /// Idle connections kept open to each worker for reuse (0: none).
    #[arg(long, env = "GPUMESH_UPSTREAM_IDLE_PER_HOST", default_value_t = 8)]
    upstream_idle_per_host: usize,
    /// Time from accept to a client's first byte, e.g. `10s`; a connection that sends
    /// nothing is closed after it.
    #[arg(long, env = "GPUMESH_FIRST_BYTE_TIMEOUT", default_value = "10s", value_parser = duration)]
    first_byte_timeout: Duration,
    /// A connection with no request in flight (HTTP/1.1 keep-alive or h2) is closed after
    /// this long, e.g. `60s`.
    #[arg(long, env = "GPUMESH_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    idle_timeout: Duration,
    /// Longest pause allowed while reading a request body, e.g. `30s`; a body that stalls
    /// longer is cut and answered 408.
    #[arg(long, env = "GPUMESH_BODY_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    body_read_timeout: Duration,
    /// Open HTTP connections, all clients together; more are closed at accept. Default:
    /// half of what the open-file limit (`ulimit -n`) leaves after a reserve of a quarter
    /// of it, at most 1024.
    #[arg(long, env = "GPUMESH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open HTTP connections per client IP (an IPv6 client counts per /64).
    #[arg(long, env = "GPUMESH_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    max_connections_per_ip: usize,
    /// The most batch slots a worker's record may claim; more is cut to this (the gateway
    /// credits only slots it has seen served).
    #[arg(long, env = "GPUMESH_MAX_CLAIMED_SLOTS", default_value_t = 64)]
    max_claimed_slots: u32,
    /// This gateway's name in the `Via` header of forwarded requests (letters, digits and
    /// `-._~`…); a request that comes back carrying it is refused with 508. Give every
    /// gateway its own. Default: a random name per process.
    #[arg(long, env = "GPUMESH_VIA_NAME")]
    via_name: Option<String>,
    /// A host name or address under which clients reach this gateway (repeatable): worker
    /// URLs naming it, or resolving to it, are refused.
    #[arg(
        long = "public-name",
        env = "GPUMESH_PUBLIC_NAMES",
        value_delimiter = ','
    )]
    public_names: Vec<String>,
    /// A client header forwarded to workers although it carries credentials (repeatable;
    /// `Authorization`, `Cookie` and `Proxy-*` are otherwise stripped).
    #[arg(
        long = "forward-header",
        env = "GPUMESH_FORWARD_HEADERS",
        value_delimiter = ','
    )]
    forward_headers: Vec<String>,
    /// Do not tell workers the client's address: no `X-Forwarded-For` (nor the client's own
    /// `X-Forwarded-For` or `Forwarded`) is sent upstream.
    #[arg(long, env = "GPUMESH_NO_FORWARDED_FOR", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    no_forwarded_for: bool,
}

/// A duration flag: `500ms`, `60s`, `10m`, `1h` or a bare number of seconds.
fn duration(s: &str) -> Result<Duration, String> {
    gpumesh_gateway::checks::parse_duration(s)
        .ok_or_else(|| format!("`{s}` is not a positive duration such as 60s, 500ms or 10m"))
}

/// A non-empty environment variable (the registry token).
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Args {
    fn into_config(self) -> Result<Config, UsageError> {
        let dht_enabled = super::legacy_env::dht_enabled(self.dht_enabled)?;
        let dht_port = super::legacy_env::dht_port(self.dht_port, 4001)?;
        // The registry's bearer token: environment only, so it never shows in `ps`.
        let registry_token = env_var("GPUMESH_REGISTRY_TOKEN");
        let dht_admission_operators =
            gpumesh_dht::admission::parse_operator_keys(&self.admission_pubkeys)
                .map_err(|e| UsageError(format!("--admission-pubkey: {e}")))?;
        let checks = match &self.canaries {
            Some(path) => {
                CheckPlan::load(path).map_err(|e| UsageError(format!("--canaries: {e}")))?
            }
            None => CheckPlan::default(),
        };
        let config = Config {
            listen: self.listen,
            dht_enabled,
            dht_listen: SocketAddr::new(self.dht_listen, dht_port),
            seeds: self.seeds,
            dht_external_addrs: self.dht_external_addrs,
            dht_identity_file: self.dht_identity_file,
            dht_network_key_file: self.network_key_file,
            dht_admission_operators,
            dht_view_file: self.dht_view_file,
            dht_timings: None,
            dht_sizing: None,
            registry_token,
            registry_ttl: Duration::from_secs(self.registry_ttl_secs),
            allow_private_upstreams: self.allow_private_upstreams,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            upstream_timeout: Duration::from_secs(self.upstream_timeout_secs),
            read_timeout: Duration::from_secs(self.read_timeout_secs),
            ttfb_timeout: self.ttfb_timeout,
            response_deadline: self.response_deadline,
            checks: Arc::new(checks),
            max_body_bytes: self.max_body_bytes,
            bootstrap_rate_per_min: self.bootstrap_rate_per_min,
            registry_rate_per_min: self.registry_rate_per_min,
            bootstrap_ttl: Duration::from_secs(self.bootstrap_ttl_secs),
            max_attempts: self.max_attempts,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_header_bytes: self.max_header_bytes,
            hedge_after: (self.hedge_after_ms > 0)
                .then(|| Duration::from_millis(self.hedge_after_ms)),
            upstream_idle_per_host: self.upstream_idle_per_host,
            first_byte_timeout: self.first_byte_timeout,
            idle_timeout: self.idle_timeout,
            body_read_timeout: self.body_read_timeout,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_claimed_slots: self.max_claimed_slots,
            via_name: self.via_name,
            public_names: self.public_names,
            forward_headers: self.forward_headers,
            forwarded_for: !self.no_forwarded_for,
        };
        config
            .validate()
            .map_err(|e| UsageError(format!("invalid configuration: {e}")))?;
        Ok(config)
    }
}

/// Runs `gpumesh gateway` until Ctrl-C or SIGTERM.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // All configuration is checked before any socket opens.
    let config = args.into_config()?;
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            super::shutdown_signal().await;
            tracing::info!("shutdown signal received");
            trigger.cancel();
        });
        match gpumesh_gateway::run(config, shutdown).await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(RunError::Config(e)) => {
                Err(UsageError(format!("invalid configuration: {e}")).into())
            }
            Err(e) => Err(e.into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_a_valid_config() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--dht-enabled",
            "true",
            "--dht-port",
            "4100",
            "--seed",
            "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWseed",
            "--allow-private-upstreams",
        ])
        .unwrap();
        let config = cli.args.into_config().unwrap();
        assert_eq!(config.dht_listen.port(), 4100);
        assert!(config.allow_private_upstreams && config.dht_enabled);
    }

    #[test]
    fn forwarding_edge_flags_reach_the_config_and_bad_ones_are_usage_errors() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--via-name",
            "gw-eu-1",
            "--public-name",
            "gw.example.org",
            "--public-name",
            "203.0.113.5",
            "--forward-header",
            "authorization",
            "--no-forwarded-for",
        ])
        .unwrap();
        let config = cli.args.into_config().unwrap();
        assert_eq!(config.via_name.as_deref(), Some("gw-eu-1"));
        assert_eq!(config.public_names, ["gw.example.org", "203.0.113.5"]);
        assert_eq!(config.forward_headers, ["authorization"]);
        assert!(!config.forwarded_for);
        let defaults = Cli::try_parse_from(["gateway"]).unwrap();
        assert!(defaults.args.into_config().unwrap().forwarded_for);
        let bad = Cli::try_parse_from(["gateway", "--via-name", "two words"]).unwrap();
        assert!(bad.args.into_config().is_err());
    }

    /// A canary file that cannot be used stops the gateway before it starts, with a message
    /// naming the entry (a usage error: exit code 64).
    #[test]
    fn a_bad_canary_file_is_a_usage_error_naming_the_entry() {
        let dir = std::env::temp_dir().join(format!(
            "gpumesh-cli-canaries-{}-{}",
            std::process::id(),
            gpumesh_dht::rules::unix_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = "[[canary]]\nservice = \"ocr\"\nname = \"ok\"\npath = \"run\"\ncheck = { exact = \"x\" }\n";
        let bad_regex = format!(
            "{ok}[[canary]]\nservice = \"ocr\"\nname = \"ocr-known-text\"\npath = \"run\"\ncheck = {{ regex = \"([\" }}\n"
        );
        let bad_service = "[[canary]]\nservice = \"no such service!\"\npath = \"run\"\ncheck = { exact = \"x\" }\n";
        let cases: [(&str, Option<String>, &str); 5] = [
            ("missing", None, "missing.toml"),
            (
                "bad-toml",
                Some("[[canary]\nservice =".into()),
                "canary file",
            ),
            (
                "bad-regex",
                Some(bad_regex),
                "canary 2 (\"ocr-known-text\"): bad regex",
            ),
            ("bad-service", Some(bad_service.into()), "canary 1:"),
            (
                "bad-share",
                Some("[[deterministic]]\nservice = \"ocr\"\nshare = 0.02\n".into()),
                "deterministic 1 (\"ocr\"): share 0.02",
            ),
        ];
        for (name, text, expected) in cases {
            let path = dir.join(format!("{name}.toml"));
            if let Some(text) = text {
                std::fs::write(&path, text).unwrap();
            }
            let cli =
                Cli::try_parse_from(["gateway", "--canaries", path.to_str().unwrap()]).unwrap();
            let err = cli.args.into_config().unwrap_err();
            assert!(err.0.contains(expected), "{name}: {}", err.0);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connection_deadlines_and_caps_come_from_flags() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--first-byte-timeout",
            "2s",
            "--idle-timeout",
            "500ms",
            "--body-read-timeout",
            "3",
            "--max-connections",
            "100",
            "--max-connections-per-ip",
            "8",
        ])
        .unwrap();
        let config = cli.args.into_config().unwrap();
        assert_eq!(config.first_byte_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, Duration::from_millis(500));
        assert_eq!(config.body_read_timeout, Duration::from_secs(3));
        assert_eq!(config.max_connections, Some(100));
        assert_eq!(config.max_connections_per_ip, 8);
        let cli = Cli::try_parse_from(["gateway", "--max-connections", "0"]).unwrap();
        assert!(cli.args.into_config().is_err(), "a zero cap is refused");
    }

    #[test]
    fn the_claimed_slots_ceiling_comes_from_its_flag() {
        let cli = Cli::try_parse_from(["gateway", "--max-claimed-slots", "16"]).unwrap();
        assert_eq!(cli.args.into_config().unwrap().max_claimed_slots, 16);
        let cli = Cli::try_parse_from(["gateway", "--max-claimed-slots", "0"]).unwrap();
        assert!(cli.args.into_config().is_err(), "a zero ceiling is refused");
    }

    #[test]
    fn a_bad_seed_is_a_usage_error() {
        let cli = Cli::try_parse_from([
            "gateway",
            "--dht-enabled",
            "true",
            "--seed",
            "/ip4/1.2.3.4/tcp/1",
        ])
        .unwrap();
        assert!(cli.args.into_config().is_err());
    }

    /// Starts a real gateway (HTTP + DHT node) with a registry token, a network key file and a
    /// node key file, with every log line of every crate captured at TRACE, and checks that no
    /// secret reaches the logs, including a config dump.
    #[test]
    fn secrets_never_reach_the_logs() {
        use crate::cli::test_logs::{capture, eventually, hex};
        let logs = capture();
        let dir = std::env::temp_dir().join(format!(
            "gpumesh-cli-gw-secrets-{}-{}",
            std::process::id(),
            gpumesh_dht::rules::unix_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("node.key");
        let key = gpumesh_dht::identity::load_or_create_keypair(&key_file).unwrap();
        let psk_file = dir.join("net.psk");
        gpumesh_dht::identity::write_network_key(
            &psk_file,
            gpumesh_dht::identity::generate_network_key(),
        )
        .unwrap();
        let psk_hex = std::fs::read_to_string(&psk_file)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_owned();
        let operator = gpumesh_dht::identity::load_or_create_keypair(&dir.join("op.key")).unwrap();
        let token = "gw-registry-token-3f9a1c7e";
        let config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            dht_listen: "127.0.0.1:0".parse().unwrap(),
            dht_identity_file: Some(key_file.clone()),
            dht_network_key_file: Some(psk_file),
            dht_admission_operators: vec![gpumesh_dht::OperatorKey::of(&operator).unwrap()],
            dht_timings: Some(gpumesh_dht::Timings::fast()),
            registry_token: Some(token.into()),
            allow_private_upstreams: true,
            ..Config::default()
        };
        config.validate().unwrap();
        let rt = super::super::runtime().unwrap();
        rt.block_on(async {
            tracing::info!(?config, "gateway config (as an operator might log it)");
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(gpumesh_gateway::run(config.clone(), shutdown.clone()));
            assert!(
                eventually(60, || logs.text().contains("gateway listening")).await,
                "the gateway did not start"
            );
            shutdown.cancel();
            task.await.unwrap().unwrap();
        });
        let text = logs.text();
        let private = key.to_protobuf_encoding().unwrap();
        let secret = key.clone().try_into_ed25519().unwrap().secret();
        for (what, s) in [
            ("registry token", token.to_owned()),
            ("network key", psk_hex.to_lowercase()),
            ("node key (protobuf hex)", hex(&private)),
            ("node key (secret hex)", hex(secret.as_ref())),
        ] {
            assert!(!s.is_empty());
            assert!(
                !text.to_lowercase().contains(&s),
                "{what} leaked into the logs"
            );
        }
        assert!(
            text.contains("<redacted>"),
            "the config dump was not logged"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
