//! The agent: configuration, `probe_once`, and `run(config, shutdown)`.

mod announcer;
mod config;
mod defaults;
mod dht_link;
mod event_loop;
mod registry_link;

pub use announcer::Route;
pub use config::AgentConfig;
pub use defaults::{default_state_dir, report_stale_after};
pub use event_loop::AgentReport;

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpumesh_dht::Timings;
use gpumesh_dht::record::{LoadInfo, WorkerRecord};
use gpumesh_dht::rules::{Stamper, record_ttl, unix_ms};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::bootstrap::Bootstrapper;
use crate::coordinator::Coordinator;
use crate::error::AgentError;
use crate::load::LoadEndpoint;
use crate::record::{Identity, RecordBuilder, system_clock, worker_state};
use crate::sampler::Sampler;
use crate::tunnel::{Tunnel, TunnelConfig};
use announcer::Announcer;
use dht_link::{DhtLink, DhtSettings};
use event_loop::EventLoop;
use registry_link::RegistryLink;

/// The node key file inside the state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("node.key")
}

/// The worker id: the base58 peer id of the node key in `<state_dir>/node.key` (an Ed25519
/// libp2p key, created on first use). The same id is used in the DHT and in the registry, and
/// it survives restarts, so the gateway sees one worker, not a new one per restart.
pub fn worker_id(state_dir: &Path) -> Result<String, AgentError> {
    std::fs::create_dir_all(state_dir)?;
    let key = gpumesh_dht::identity::load_or_create_keypair(&key_path(state_dir))
        .map_err(|e| AgentError::Identity(e.to_string()))?;
    Ok(key.public().to_peer_id().to_base58())
}

fn identity(config: &AgentConfig) -> Result<Identity, AgentError> {
    Ok(Identity {
        peer_id: worker_id(&config.state_dir)?,
        services: config.services.clone(),
        capabilities: config.capabilities.clone(),
    })
}

/// Refuses an admission token that cannot admit this worker (another peer id, or expired):
/// better a clear error at start than records every enforcing gateway silently refuses.
fn check_admission(config: &AgentConfig) -> Result<(), AgentError> {
    let Some(token) = &config.admission else {
        return Ok(());
    };
    let me = worker_id(&config.state_dir)?;
    if token.peer_id().to_base58() != me {
        return Err(AgentError::Config(format!(
            "the admission token is for peer {}, but this worker is {me} (its key is {}); \
             ask the operator for a token for {me}",
            token.peer_id(),
            key_path(&config.state_dir).display()
        )));
    }
    if token.not_after_ms() <= unix_ms() {
        return Err(AgentError::Config(format!(
            "the admission token for {me} expired (not_after {} ms since the epoch); ask the \
             operator for a new one",
            token.not_after_ms()
        )));
    }
    info!(operator = %token.operator(), not_after_ms = token.not_after_ms(), "admission token loaded");
    Ok(())
}

/// Measures once and returns exactly the record the agent would publish now
/// (`gpumesh agent --probe-once --json`), state included (the upstream's health is checked
/// once) and stamped as a publication now would be. With a quick tunnel there is no URL yet:
/// the record then has an empty `tunnel_url`, and the agent would not publish it.
pub async fn probe_once(config: &AgentConfig) -> Result<WorkerRecord, AgentError> {
    let sampler = Sampler::new(config.gpu.open(config.fake_seed)?)?;
    let warm = sampler.clone();
    let _ = tokio::task::spawn_blocking(move || warm.warm_up_blocking()).await;
    let sample = sampler.sample().await;
    let url = match &config.tunnel {
        TunnelConfig::PublicUrl(u) => u.clone(),
        TunnelConfig::Cloudflared(c) => c
            .named
            .as_ref()
            .map(|n| n.public_url.clone())
            .unwrap_or_default(),
    };
    let builder = RecordBuilder::new(identity(config)?, &system_clock());
    let load = LoadInfo {
        max_concurrency: config.max_concurrency,
        ..LoadInfo::default()
    };
    let up = {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| AgentError::Http(e.to_string()))?;
        let health = format!(
            "{}{}",
            config.upstream.trim_end_matches('/'),
            config.health_path
        );
        event_loop::service_up(&http, &health).await
    };
    let state = worker_state(false, !url.is_empty(), up, sample.gpu_error.is_none());
    let mut record = builder.build(state, &url, &sample, load);
    Stamper::new()
        .next(unix_ms(), record_ttl(config.refresh_every))
        .apply(&mut record);
    Ok(record)
}

/// Runs the agent until `shutdown` is cancelled, then drains (publish `draining`, wait for
/// in-flight work up to the grace period, withdraw) and returns.
pub async fn run(
    config: AgentConfig,
    shutdown: CancellationToken,
) -> Result<AgentReport, AgentError> {
    config.validate()?;
    check_admission(&config)?;
    let http_err = |e: reqwest::Error| AgentError::Http(e.to_string());
    let sampler = Sampler::new(config.gpu.open(config.fake_seed)?)?;
    info!(gpu_source = %sampler.source_kind(), services = ?config.services, "agent starting");
    let warm = sampler.clone();
    let _ = tokio::task::spawn_blocking(move || warm.warm_up_blocking()).await;

    // Parts that outlive the main loop until the drain is over.
    let parts = CancellationToken::new();
    let load = LoadEndpoint::bind(config.report_listen, parts.clone()).await?;
    let mut cfg = config;
    if let TunnelConfig::Cloudflared(c) = &mut cfg.tunnel {
        c.upstream.clone_from(&cfg.upstream);
    }
    let tunnel = Tunnel::start(cfg.tunnel.clone(), parts.clone());
    let dht = dht_link(&cfg, &parts)?;
    let registry = registry_link(&cfg)?;
    // The health check runs once per probe period against a local service: a fresh loopback
    // connection each time costs less than an idle one held open per agent (a 2000-agent
    // load test in one process ran out of file descriptors on exactly these).
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .pool_max_idle_per_host(0)
        .build()
        .map_err(http_err)?;
    let health_url = format!("{}{}", cfg.upstream.trim_end_matches('/'), cfg.health_path);
    let builder = RecordBuilder::new(identity(&cfg)?, &system_clock());
    let event_loop = EventLoop {
        sampler,
        builder,
        announcer: Announcer::new(dht, registry),
        tunnel: tunnel.subscribe(),
        load: load.subscribe(),
        health_url,
        http,
        cfg,
    };
    let report = event_loop.run(shutdown).await;
    parts.cancel();
    tunnel.stopped().await;
    info!(?report, "agent stopped");
    Ok(report)
}

/// The DHT channel, unless `DHT_ENABLED=false`. Timings not given are derived from the
/// agent's own periods: the record refreshes with the agent and lives the rulebook's
/// [`record_ttl`] of that period, and the load heartbeat is never slower than the agent's.
fn dht_link(cfg: &AgentConfig, parts: &CancellationToken) -> Result<Option<DhtLink>, AgentError> {
    if !cfg.dht_enabled {
        info!("DHT disabled: coordinator registry only");
        return Ok(None);
    }
    let boot = Bootstrapper::new(
        cfg.bootstrap_url.clone(),
        Some(cfg.state_dir.join("seeds.json")),
    )
    .map_err(|e| AgentError::Http(e.to_string()))?;
    // Records refreshed at the agent's period live the rulebook's TTL of it; load heartbeats
    // go out at least as often as the agent samples load (at most 1/s).
    let timings = cfg.dht_timings.unwrap_or_else(|| {
        let t = Timings::default().with_refresh(cfg.refresh_every);
        Timings {
            heartbeat_interval: t
                .heartbeat_interval
                .min(cfg.load_every.max(Duration::from_secs(1))),
            ..t
        }
    });
    let settings = DhtSettings {
        key_path: key_path(&cfg.state_dir),
        port: cfg.dht_port,
        timings,
        join_timeout: cfg.dht_join_timeout,
        shutdown: parts.clone(),
        admission: cfg.admission.clone(),
        network_key: cfg.network_key,
    };
    Ok(Some(DhtLink::new(boot, settings)))
}

/// The fallback registry channel, when a registry URL and token are configured.
///
/// Registrations, heartbeats and deregistrations are signed with the node key, as DHT records
/// are, so that an admission-enforcing gateway can tell this worker from another agent holding
/// the same registry token or a copy of its admission token.
fn registry_link(cfg: &AgentConfig) -> Result<Option<RegistryLink>, AgentError> {
    let (Some(base), Some(token)) = (cfg.registry_base(), &cfg.registry_token) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&cfg.state_dir)?;
    let client = Coordinator::new(&base, token.clone())
        .map_err(|e| AgentError::Http(e.to_string()))?
        .with_signing_key(&key_path(&cfg.state_dir), cfg.admission.clone())
        .map_err(|e| AgentError::Identity(e.to_string()))?;
    Ok(Some(RegistryLink::new(
        client,
        record_ttl(cfg.refresh_every),
    )))
}
