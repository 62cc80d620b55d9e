//! Agent configuration and its validation (done before any socket is opened).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gpumesh_dht::rules::{DEFAULT_VRAM_STEP_MIB, MAX_SERVICES, ServiceName, record_ttl};

use crate::error::AgentError;
use crate::gpu::GpuChoice;
use crate::tunnel::{Secret, TunnelConfig, validate_public_url};

/// Everything `gpumesh agent` needs. Build it from flags, then [`AgentConfig::validate`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Services offered (`--service ocr --service embed`): 1 to [`MAX_SERVICES`] names, each
    /// valid by construction (parsed where the flags are read).
    pub services: Vec<ServiceName>,
    /// Capability tags published with the record.
    pub capabilities: Vec<String>,
    /// Where GPU figures come from.
    pub gpu: GpuChoice,
    /// Seed for fake GPU uuids (distinct per simulated worker).
    pub fake_seed: u64,
    /// How the worker gets its public URL.
    pub tunnel: TunnelConfig,
    /// The local service (health checks; the quick tunnel's target).
    pub upstream: String,
    /// Health path on the upstream; any answer below 500 means "up".
    pub health_path: String,
    /// Where the load endpoint listens (the service posts its load here).
    pub report_listen: SocketAddr,
    /// Concurrency to publish while the service has not reported its own.
    pub max_concurrency: u32,
    /// Whether to use the DHT (`DHT_ENABLED=false` turns it off: coordinator only).
    pub dht_enabled: bool,
    /// The DHT's TCP listen port (`DHT_PORT`; 0 = dial out only, the usual NATed worker).
    pub dht_port: u16,
    /// DHT node timings; `None` derives them from the refresh and load periods.
    pub dht_timings: Option<gpumesh_dht::Timings>,
    /// How long a DHT join waits for a seed connection.
    pub dht_join_timeout: Duration,
    /// A gateway's `GET /api/dht/bootstrap` URL.
    pub bootstrap_url: Option<String>,
    /// A gateway base URL for the fallback registry.
    pub registry_url: Option<String>,
    /// The registry's bearer token (from the environment only).
    pub registry_token: Option<Secret>,
    /// The operator's admission token for this worker (`--admission FILE`), carried in every
    /// record so that admission-enforcing gateways accept it. Checked at start against the
    /// worker's peer id and the clock.
    pub admission: Option<gpumesh_dht::AdmissionToken>,
    /// The DHT's pre-shared network key (`--network-key-file`): without the network's key a
    /// node cannot connect to it at all. Its `Debug` shows only the fingerprint.
    pub network_key: Option<gpumesh_dht::PreSharedKey>,
    /// Where the worker id and the seed cache are kept.
    pub state_dir: PathBuf,
    /// Record refresh period; a record lives the rulebook's [`record_ttl`] of it (three
    /// periods).
    pub refresh_every: Duration,
    /// Load heartbeat period.
    pub load_every: Duration,
    /// Probe period (material changes are detected at this rate).
    pub probe_every: Duration,
    /// A free-VRAM move at least this large is a material change.
    pub vram_step_mib: u64,
    /// How long a drain waits for in-flight work.
    pub drain_grace: Duration,
    /// A load report older than this means the service is not reporting.
    pub report_stale_after: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            services: Vec::new(),
            capabilities: Vec::new(),
            gpu: GpuChoice::Auto,
            fake_seed: 0,
            tunnel: TunnelConfig::PublicUrl(String::new()),
            upstream: "http://127.0.0.1:8000".into(),
            health_path: "/health".into(),
            report_listen: SocketAddr::from(([127, 0, 0, 1], 7071)),
            max_concurrency: 1,
            dht_enabled: true,
            dht_port: 0,
            dht_timings: None,
            dht_join_timeout: Duration::from_secs(10),
            bootstrap_url: None,
            registry_url: None,
            registry_token: None,
            admission: None,
            network_key: None,
            state_dir: PathBuf::from(".gpumesh"),
            refresh_every: Duration::from_secs(30),
            load_every: Duration::from_secs(2),
            probe_every: Duration::from_secs(5),
            vram_step_mib: DEFAULT_VRAM_STEP_MIB,
            drain_grace: Duration::from_secs(30),
            report_stale_after: Duration::from_secs(10),
        }
    }
}

fn http_url(what: &str, s: &str) -> Result<(), AgentError> {
    let u = url::Url::parse(s).map_err(|e| AgentError::Config(format!("{what} `{s}`: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(AgentError::Config(format!(
            "{what} `{s}`: need http(s)://host"
        )));
    }
    Ok(())
}

impl AgentConfig {
    /// Checks the configuration; the message names the flag at fault.
    pub fn validate(&self) -> Result<(), AgentError> {
        let bad = |m: &str| Err(AgentError::Config(m.to_owned()));
        if self.services.is_empty() || self.services.len() > MAX_SERVICES {
            return Err(AgentError::Config(format!(
                "give 1 to {MAX_SERVICES} services (--service NAME)"
            )));
        }
        http_url("--upstream", &self.upstream)?;
        if !self.health_path.starts_with('/') {
            return bad("--health-path must start with /");
        }
        match &self.tunnel {
            TunnelConfig::PublicUrl(u) => {
                validate_public_url(u).map_err(AgentError::Config)?;
            }
            TunnelConfig::Cloudflared(c) => {
                if let Some(n) = &c.named {
                    validate_public_url(&n.public_url).map_err(AgentError::Config)?;
                }
                if c.bin.as_os_str().is_empty() {
                    return bad("--cloudflared-bin is empty");
                }
            }
        }
        if let Some(u) = &self.bootstrap_url {
            http_url("--bootstrap-url", u)?;
        }
        if let Some(u) = &self.registry_url {
            http_url("--registry-url", u)?;
        }
        if self
            .registry_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return bad("GPUMESH_REGISTRY_TOKEN is empty");
        }
        if !self.dht_enabled && (self.registry_base().is_none() || self.registry_token.is_none()) {
            return bad(
                "with DHT_ENABLED=false the agent needs --registry-url (or --bootstrap-url) and GPUMESH_REGISTRY_TOKEN",
            );
        }
        if self.dht_enabled && self.bootstrap_url.is_none() && self.registry_url.is_none() {
            return bad("give --bootstrap-url (a gateway's /api/dht/bootstrap) or --registry-url");
        }
        if self.refresh_every < Duration::from_secs(1)
            || self.load_every < Duration::from_millis(100)
            || self.probe_every < Duration::from_millis(100)
        {
            return bad("intervals too short (refresh >= 1 s, load and probe >= 100 ms)");
        }
        if record_ttl(self.refresh_every) <= self.refresh_every {
            return bad("--refresh-secs too long: a record must outlive its refresh period");
        }
        if self.max_concurrency == 0 {
            return bad("--max-concurrency must be at least 1");
        }
        Ok(())
    }

    /// The registry base URL: `--registry-url`, else the origin of `--bootstrap-url`.
    pub fn registry_base(&self) -> Option<String> {
        if let Some(u) = &self.registry_url {
            return Some(u.trim_end_matches('/').to_owned());
        }
        let u = url::Url::parse(self.bootstrap_url.as_deref()?).ok()?;
        Some(u.origin().ascii_serialization())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> AgentConfig {
        AgentConfig {
            services: vec!["ocr".parse().unwrap()],
            tunnel: TunnelConfig::PublicUrl("https://w.example.org".into()),
            bootstrap_url: Some("https://gw.example.org/api/dht/bootstrap".into()),
            ..AgentConfig::default()
        }
    }

    #[test]
    fn validation_names_the_problem() {
        good().validate().unwrap();
        let mut c = good();
        c.services.clear();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("give 1 to 32")
        );
        let mut c = good();
        c.refresh_every = Duration::from_secs(3600);
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("--refresh-secs")
        );
        let mut c = good();
        c.tunnel = TunnelConfig::PublicUrl("nope".into());
        assert!(c.validate().is_err());
        let mut c = good();
        c.dht_enabled = false;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("DHT_ENABLED=false")
        );
        c.registry_token = Some(Secret::new("t"));
        c.validate().unwrap();
        assert_eq!(c.registry_base().unwrap(), "https://gw.example.org");
    }
}
