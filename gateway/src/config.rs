//! Gateway configuration: typed values, checked before any socket opens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gpumesh_dht::Timings;
use libp2p::Multiaddr;

use crate::checks::CheckPlan;

/// Everything `run` needs. Built by the CLI (or a test) and checked with [`Config::validate`].
#[derive(Clone)]
pub struct Config {
    /// HTTP listen address (`127.0.0.1:0` in tests).
    pub listen: SocketAddr,
    /// Whether to run a DHT node; `false` is coordinator-only mode (`DHT_ENABLED=false`).
    pub dht_enabled: bool,
    /// DHT TCP listen address (the port comes from `DHT_PORT` in the seed system's names).
    pub dht_listen: SocketAddr,
    /// Multiaddrs (`…/p2p/<peer id>`) of configured stable DHT nodes, listed in bootstrap.
    pub seeds: Vec<String>,
    /// Multiaddrs at which this gateway's own DHT node is reachable from outside.
    pub dht_external_addrs: Vec<String>,
    /// The DHT node's key file (created if missing); `None`: a fresh identity each start.
    pub dht_identity_file: Option<PathBuf>,
    /// Pre-shared network key file (libp2p pnet): peers without it cannot connect.
    pub dht_network_key_file: Option<PathBuf>,
    /// Operators whose admission tokens the DHT node accepts; empty: admission not enforced.
    /// When set, workers without a valid token for their own peer id are refused.
    pub dht_admission_operators: Vec<gpumesh_dht::OperatorKey>,
    /// Where the gateway saves its worker view (the signed record envelopes) every few
    /// seconds and at shutdown, and reloads it at start so that a restart does not begin
    /// blind. Every record is verified again on load; expired ones are dropped. `None`: off.
    pub dht_view_file: Option<PathBuf>,
    /// DHT timings; `None`: production values (tests use `Timings::fast()`).
    pub dht_timings: Option<Timings>,
    /// DHT sizes (tests and in-process networks; every node of a network must agree on the
    /// replication factor and shards). `None`: the defaults.
    pub dht_sizing: Option<gpumesh_dht::config::Sizing>,
    /// Bearer token of the coordinator fallback registry; `None` disables the registry.
    pub registry_token: Option<String>,
    /// How long a registry entry lives without a heartbeat.
    pub registry_ttl: Duration,
    /// Accept loopback, private, link-local and metadata upstreams, and plain http.
    pub allow_private_upstreams: bool,
    /// Upper bound on connecting to a worker.
    pub connect_timeout: Duration,
    /// Upper bound on waiting for a worker's response headers.
    pub upstream_timeout: Duration,
    /// Upper bound on a gap between two reads of a worker's response body.
    pub read_timeout: Duration,
    /// Upper bound, from the request's arrival, on the first byte of the worker's response
    /// body (or the end of an empty one). Missing it ends the request and lowers the
    /// worker's trust.
    pub ttfb_timeout: Duration,
    /// Upper bound, from the request's arrival, on the whole response: a worker that trickles
    /// bytes just inside the read timeout still cannot hold a request longer.
    pub response_deadline: Duration,
    /// Canaries and cross-checked services (`--canaries FILE`); empty: no answer checks.
    pub checks: Arc<CheckPlan>,
    /// Largest request body forwarded to a worker, in bytes.
    pub max_body_bytes: usize,
    /// Bootstrap requests allowed per client IP per minute.
    pub bootstrap_rate_per_min: u32,
    /// Registry requests (register, heartbeat, deregister) allowed per client IP per minute.
    pub registry_rate_per_min: u32,
    /// `ttl` and `Cache-Control: max-age` of the bootstrap answer.
    pub bootstrap_ttl: Duration,
    /// Workers tried for one request when the first cannot be reached.
    pub max_attempts: u32,
    /// Upper bound on receiving a request head (and on an idle keep-alive connection waiting
    /// for the next one): slow or stalled clients are disconnected after it.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted, in bytes; at least 8 KiB.
    pub max_header_bytes: usize,
    /// Send a safe request (GET, HEAD, OPTIONS) to a second worker when the first has not
    /// answered within this delay, and use whichever answers first; `None`: never hedge.
    pub hedge_after: Option<Duration>,
    /// Idle connections kept open to each worker for reuse (0: none). A worker runs a few
    /// requests at a time, so more idle connections than that are never all reused, and with
    /// thousands of workers they add up to thousands of open files.
    pub upstream_idle_per_host: usize,
    /// Upper bound, from accept, on a client's first byte: a connection that sends nothing
    /// is closed after it (hyper's version detection has no timer of its own).
    pub first_byte_timeout: Duration,
    /// A connection with no request in flight is closed after this long (HTTP/1.1
    /// keep-alive and h2 alike). An idle h2 session answers pings, so only this ends it.
    pub idle_timeout: Duration,
    /// Upper bound on a gap between two reads of a request body: a body that stalls longer is
    /// cut and the request answered 408.
    pub body_read_timeout: Duration,
    /// Open HTTP connections, all clients together; over it new ones are closed at accept.
    /// `None`: sized from the open-file limit ([`crate::server::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Open HTTP connections per client address (an IPv6 client counts per /64); over it
    /// that client's new connections are closed at accept.
    pub max_connections_per_ip: usize,
    /// The most batch slots (`max_concurrency`) a record may claim; more is cut to this and
    /// counted (`records_clamped_total{reason="concurrency"}`). The gateway credits only the
    /// slots it has seen a worker serve, so this bounds a liar's claim, not an honest
    /// worker's traffic.
    pub max_claimed_slots: u32,
    /// This gateway's name in the `Via` header it adds to forwarded requests (an RFC 9110
    /// token); a request that already carries it has looped back and is refused (508).
    /// `None`: a random name per process.
    pub via_name: Option<String>,
    /// Host names and addresses under which clients reach this gateway (`--public-name`):
    /// worker URLs naming one, or resolving to one of the addresses, are refused, so that a
    /// record cannot make the gateway call itself.
    pub public_names: Vec<String>,
    /// Client headers forwarded to workers although they carry credentials
    /// (`Authorization`, `Cookie`, `Proxy-*` are otherwise stripped).
    pub forward_headers: Vec<String>,
    /// Whether workers are told the client's address in `X-Forwarded-For`.
    pub forwarded_for: bool,
}

/// Redacted: the registry token is a secret and configs end up in logs and panics. Key files
/// appear as paths only (their contents are never read into the config).
/// The smallest `--max-header-bytes` hyper accepts (its minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.registry_token.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("dht_enabled", &self.dht_enabled)
            .field("dht_listen", &self.dht_listen)
            .field("seeds", &self.seeds)
            .field("dht_external_addrs", &self.dht_external_addrs)
            .field("dht_identity_file", &self.dht_identity_file)
            .field("dht_network_key_file", &self.dht_network_key_file)
            .field("dht_admission_operators", &self.dht_admission_operators)
            .field("dht_view_file", &self.dht_view_file)
            .field("dht_timings", &self.dht_timings)
            .field("dht_sizing", &self.dht_sizing)
            .field("registry_token", &token)
            .field("registry_ttl", &self.registry_ttl)
            .field("allow_private_upstreams", &self.allow_private_upstreams)
            .field("connect_timeout", &self.connect_timeout)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("ttfb_timeout", &self.ttfb_timeout)
            .field("response_deadline", &self.response_deadline)
            .field("canaries", &self.checks.canaries.len())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bootstrap_rate_per_min", &self.bootstrap_rate_per_min)
            .field("registry_rate_per_min", &self.registry_rate_per_min)
            .field("bootstrap_ttl", &self.bootstrap_ttl)
            .field("max_attempts", &self.max_attempts)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("hedge_after", &self.hedge_after)
            .field("upstream_idle_per_host", &self.upstream_idle_per_host)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_claimed_slots", &self.max_claimed_slots)
            .field("via_name", &self.via_name)
            .field("public_names", &self.public_names)
            .field("forward_headers", &self.forward_headers)
            .field("forwarded_for", &self.forwarded_for)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dht_enabled: true,
            dht_listen: SocketAddr::from(([0, 0, 0, 0], 4001)),
            seeds: Vec::new(),
            dht_external_addrs: Vec::new(),
            dht_identity_file: None,
            dht_network_key_file: None,
            dht_admission_operators: Vec::new(),
            dht_view_file: None,
            dht_timings: None,
            dht_sizing: None,
            registry_token: None,
            registry_ttl: Duration::from_secs(90),
            allow_private_upstreams: false,
            connect_timeout: Duration::from_secs(3),
            upstream_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            ttfb_timeout: Duration::from_secs(60),
            response_deadline: Duration::from_secs(600),
            checks: Arc::default(),
            max_body_bytes: 16 * 1024 * 1024,
            bootstrap_rate_per_min: 60,
            registry_rate_per_min: 120,
            bootstrap_ttl: Duration::from_secs(3600),
            max_attempts: 3,
            header_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            hedge_after: None,
            upstream_idle_per_host: 8,
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            max_connections: None,
            max_connections_per_ip: 256,
            max_claimed_slots: 64,
            via_name: None,
            public_names: Vec::new(),
            forward_headers: Vec::new(),
            forwarded_for: true,
        }
    }
}

/// A configuration that cannot work; the CLI maps it to exit code 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A seed multiaddr without a trailing `/p2p/<peer id>`.
    #[error("seed `{0}` must be a multiaddr ending in /p2p/<peer id>")]
    BadSeed(String),
    /// An external address that is not a multiaddr.
    #[error("DHT external address `{0}` is not a multiaddr")]
    BadExternalAddr(String),
    /// Coordinator-only mode with no way for workers to register.
    #[error("the DHT is disabled and no registry token is set: no worker could ever be found")]
    NoSource,
    /// An empty registry token (it would accept `Authorization: Bearer `).
    #[error("the registry token must not be empty")]
    EmptyToken,
    /// A zero duration, size or count where it would disable the gateway.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// A value that cannot be what its flag asks for.
    #[error("`{value}` is not a valid {what}")]
    Invalid {
        /// What the value was for (`--via-name`, `--public-name`, `--forward-header`).
        what: &'static str,
        /// The value given.
        value: String,
    },
    /// A request-head limit below what the HTTP server can work with.
    #[error("the header size limit must be at least {min} bytes, got {got}")]
    HeaderLimit {
        /// The smallest accepted value.
        min: usize,
        /// The configured value.
        got: usize,
    },
}

impl Config {
    /// Checks the values together.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for seed in &self.seeds {
            // The rulebook's one seed parser, as the agent and the DHT node use it.
            if gpumesh_dht::rules::parse_seed(seed).is_err() {
                return Err(ConfigError::BadSeed(seed.clone()));
            }
        }
        let bad_external = self
            .dht_external_addrs
            .iter()
            .find(|a| a.parse::<Multiaddr>().is_err());
        if let Some(bad) = bad_external {
            return Err(ConfigError::BadExternalAddr(bad.clone()));
        }
        if self
            .registry_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::EmptyToken);
        }
        if !self.dht_enabled && self.registry_token.is_none() {
            return Err(ConfigError::NoSource);
        }
        self.validate_edges()?;
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(ConfigError::HeaderLimit {
                min: MIN_HEADER_BYTES,
                got: self.max_header_bytes,
            });
        }
        let zeros: [(&'static str, bool); 17] = [
            ("registry TTL", self.registry_ttl.is_zero()),
            ("connect timeout", self.connect_timeout.is_zero()),
            ("upstream timeout", self.upstream_timeout.is_zero()),
            ("read timeout", self.read_timeout.is_zero()),
            ("time-to-first-byte timeout", self.ttfb_timeout.is_zero()),
            ("response deadline", self.response_deadline.is_zero()),
            ("body limit", self.max_body_bytes == 0),
            ("bootstrap rate limit", self.bootstrap_rate_per_min == 0),
            ("registry rate limit", self.registry_rate_per_min == 0),
            ("max attempts", self.max_attempts == 0),
            ("header read timeout", self.header_read_timeout.is_zero()),
            ("first-byte timeout", self.first_byte_timeout.is_zero()),
            ("idle timeout", self.idle_timeout.is_zero()),
            ("body read timeout", self.body_read_timeout.is_zero()),
            ("connection cap", self.max_connections == Some(0)),
            (
                "per-client connection cap",
                self.max_connections_per_ip == 0,
            ),
            ("claimed slots ceiling", self.max_claimed_slots == 0),
        ];
        match zeros.into_iter().find(|(_, zero)| *zero) {
            Some((name, _)) => Err(ConfigError::Zero(name)),
            None => Ok(()),
        }
    }
}

impl Config {
    /// Checks the forwarding edge values: the `Via` name, public names, forwarded headers.
    fn validate_edges(&self) -> Result<(), ConfigError> {
        let invalid = |what: &'static str, value: &str| ConfigError::Invalid {
            what,
            value: value.to_owned(),
        };
        if let Some(name) = &self.via_name
            && !is_token(name)
        {
            return Err(invalid("--via-name (an RFC 9110 token)", name));
        }
        if let Some(bad) = self
            .public_names
            .iter()
            .find(|n| crate::policy::parse_host(n).is_none())
        {
            return Err(invalid("--public-name (a host name or address)", bad));
        }
        if let Some(bad) = self
            .forward_headers
            .iter()
            .find(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            return Err(invalid("--forward-header (a header name)", bad));
        }
        Ok(())
    }
}

/// Whether `s` is an RFC 9110 token (`tchar`s only, not empty).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_registry_token() {
        let cfg = Config {
            registry_token: Some("hunter2-registry-secret".into()),
            ..Config::default()
        };
        let shown = format!("{cfg:?} {cfg:#?}");
        assert!(!shown.contains("hunter2-registry-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn default_is_valid_and_coordinator_only_needs_a_token() {
        assert!(Config::default().validate().is_ok());
        let cfg = Config {
            dht_enabled: false,
            ..Config::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::NoSource)));
        let cfg = Config {
            seeds: vec!["/ip4/1.2.3.4/tcp/4001".into()],
            ..Config::default()
        };
        assert!(matches!(cfg.validate(), Err(ConfigError::BadSeed(_))));
        let cfg = Config {
            max_body_bytes: 0,
            ..Config::default()
        };
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Zero("body limit"))
        ));
    }

    #[test]
    fn edge_values_are_checked() {
        let good = Config {
            via_name: Some("gw-eu-1".into()),
            public_names: vec![
                "gw.example.org".into(),
                "203.0.113.5".into(),
                "[2001:db8::1]".into(),
            ],
            forward_headers: vec!["Authorization".into()],
            ..Config::default()
        };
        assert!(good.validate().is_ok());
        for bad in [
            Config {
                via_name: Some("two words".into()),
                ..Config::default()
            },
            Config {
                via_name: Some(String::new()),
                ..Config::default()
            },
            Config {
                public_names: vec!["https://gw.example.org/".into()],
                ..Config::default()
            },
            Config {
                forward_headers: vec!["bad header".into()],
                ..Config::default()
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(ConfigError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }
}
