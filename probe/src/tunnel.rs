//! The worker's public URL: a fixed `--public-url`, or a supervised `cloudflared` child.
//!
//! Quick tunnel: `cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:M --url <upstream>`;
//! the hostname is read from the metrics endpoint's `GET /quicktunnel` and the URL is reported
//! usable only once `GET /ready` answers 200. Named tunnel: `cloudflared tunnel --no-autoupdate
//! --metrics 127.0.0.1:M run` with the token in the child's `TUNNEL_TOKEN` environment
//! variable (never argv, where any local user could read it); cloudflared does not report a
//! named tunnel's hostname, so the agent is told it. A child that exits is restarted with
//! jittered exponential backoff; the backoff resets once a child has been ready for a minute.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the worker gets a public URL.
#[derive(Debug, Clone, PartialEq)]
pub enum TunnelConfig {
    /// A URL the operator set up (reverse proxy, port forward, own tunnel).
    PublicUrl(String),
    /// A `cloudflared` child process the agent supervises.
    Cloudflared(CloudflaredConfig),
}

/// Supervision of `cloudflared`.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudflaredConfig {
    /// The executable (`cloudflared` on `PATH` by default).
    pub bin: PathBuf,
    /// The local service the quick tunnel points at.
    pub upstream: String,
    /// Set for a named tunnel; `None` for a quick tunnel.
    pub named: Option<NamedTunnel>,
    /// How often the metrics endpoint is polled.
    pub poll_every: Duration,
    /// First restart delay.
    pub backoff_base: Duration,
    /// Longest restart delay.
    pub backoff_max: Duration,
}

/// A named tunnel: its public URL (cloudflared cannot report it) and token.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTunnel {
    /// The hostname routed to this tunnel, as a URL.
    pub public_url: String,
    /// The tunnel token, passed to the child as `TUNNEL_TOKEN`.
    pub token: Option<Secret>,
}

/// What the tunnel can offer now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunnelStatus {
    /// The public URL, once known.
    pub url: Option<String>,
    /// Whether the URL reaches the service now (cloudflared `/ready`). Only a ready URL may be
    /// published.
    pub ready: bool,
    /// Child restarts so far.
    pub restarts: u32,
    /// Why the tunnel is not ready, if known.
    pub last_error: Option<String>,
}

impl TunnelStatus {
    /// The URL if it may be published.
    pub fn usable_url(&self) -> Option<&str> {
        self.url.as_deref().filter(|_| self.ready)
    }
}

/// Checks a public URL: http(s) with a host.
pub fn validate_public_url(s: &str) -> Result<String, String> {
    let u = url::Url::parse(s).map_err(|e| format!("bad public URL `{s}`: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!("bad public URL `{s}`: need http(s)://host"));
    }
    Ok(u.as_str().trim_end_matches('/').to_owned())
}

/// A running tunnel supervisor.
#[derive(Debug)]
pub struct Tunnel {
    rx: watch::Receiver<TunnelStatus>,
    task: JoinHandle<()>,
}

impl Tunnel {
    /// Starts the tunnel; it stops (killing any child) when `shutdown` is cancelled.
    pub fn start(config: TunnelConfig, shutdown: CancellationToken) -> Self {
        match config {
            TunnelConfig::PublicUrl(url) => {
                let (tx, rx) = watch::channel(TunnelStatus {
                    url: Some(url),
                    ready: true,
                    ..TunnelStatus::default()
                });
                let task = tokio::spawn(async move {
                    shutdown.cancelled().await;
                    drop(tx);
                });
                Self { rx, task }
            }
            TunnelConfig::Cloudflared(cfg) => {
                let (tx, rx) = watch::channel(TunnelStatus::default());
                let task = tokio::spawn(supervise(cfg, tx, shutdown));
                Self { rx, task }
            }
        }
    }

    /// Status updates.
    pub fn subscribe(&self) -> watch::Receiver<TunnelStatus> {
        self.rx.clone()
    }

    /// Waits for the supervisor (and its child) to be gone after shutdown.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn supervise(
    cfg: CloudflaredConfig,
    tx: watch::Sender<TunnelStatus>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
    let mut restarts = 0u32;
    loop {
        let started = Instant::now();
        let mut ready_since = None;
        let outcome = run_child(&cfg, &tx, &shutdown, restarts, &mut ready_since).await;
        let Err(reason) = outcome else { break };
        warn!(reason = %reason, restarts, "cloudflared is down; restarting after backoff");
        tx.send_replace(TunnelStatus {
            url: None,
            ready: false,
            restarts,
            last_error: Some(reason),
        });
        if ready_since.is_some_and(|t: Instant| t.elapsed() >= Duration::from_secs(60)) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        debug!(?delay, ran_for = ?started.elapsed(), "cloudflared restart delay");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
        restarts += 1;
    }
    tx.send_modify(|s| {
        s.ready = false;
    });
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Starts cloudflared with its metrics (and readiness) endpoint on `metrics`; its stderr goes
/// to the debug log.
fn spawn_child(cfg: &CloudflaredConfig, metrics: &str) -> Result<tokio::process::Child, String> {
    let mut cmd = Command::new(&cfg.bin);
    cmd.args(["tunnel", "--no-autoupdate", "--metrics", metrics]);
    match &cfg.named {
        Some(named) => {
            cmd.arg("run");
            if let Some(token) = &named.token {
                cmd.env("TUNNEL_TOKEN", token.expose());
            }
        }
        None => {
            cmd.args(["--url", &cfg.upstream]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.bin.display()))?;
    info!(pid = child.id(), %metrics, named = cfg.named.is_some(), "cloudflared started");
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                debug!(target: "cloudflared", "{line}");
            }
        });
    }
    Ok(child)
}

/// One look at the child's metrics endpoint: its public URL and readiness, published on `tx`
/// when they changed.
async fn poll(
    cfg: &CloudflaredConfig,
    client: &reqwest::Client,
    base: &str,
    tx: &watch::Sender<TunnelStatus>,
    restarts: u32,
    ready_since: &mut Option<Instant>,
) {
    let url = match &cfg.named {
        Some(n) => Some(n.public_url.clone()),
        None => quick_hostname(client, base).await,
    };
    let ready = url.is_some() && is_ready(client, base).await;
    match (ready, ready_since.is_some()) {
        (true, false) => *ready_since = Some(Instant::now()),
        (false, true) => *ready_since = None,
        _ => {}
    }
    let next = TunnelStatus {
        url,
        ready,
        restarts,
        last_error: (!ready).then(|| "waiting for cloudflared /ready".to_owned()),
    };
    tx.send_if_modified(|s| {
        if *s == next {
            return false;
        }
        if next.ready && !s.ready {
            info!(url = ?next.url, "tunnel ready");
        }
        *s = next;
        true
    });
}

/// Runs one child until it exits (`Err(reason)`) or shutdown (`Ok`).
async fn run_child(
    cfg: &CloudflaredConfig,
    tx: &watch::Sender<TunnelStatus>,
    shutdown: &CancellationToken,
    restarts: u32,
    ready_since: &mut Option<Instant>,
) -> Result<(), String> {
    let port = free_port().map_err(|e| format!("no free metrics port: {e}"))?;
    let metrics = format!("127.0.0.1:{port}");
    let mut child = spawn_child(cfg, &metrics)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let base = format!("http://{metrics}");
    let mut tick = tokio::time::interval(cfg.poll_every);
    loop {
        tokio::select! {
            status = child.wait() => {
                return Err(match status {
                    Ok(s) => format!("cloudflared exited ({s})"),
                    Err(e) => format!("cloudflared wait failed: {e}"),
                });
            }
            () = shutdown.cancelled() => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                info!("cloudflared stopped");
                return Ok(());
            }
            _ = tick.tick() => poll(cfg, &client, &base, tx, restarts, ready_since).await,
        }
    }
}

#[derive(Deserialize)]
struct QuickTunnel {
    hostname: String,
}

async fn quick_hostname(client: &reqwest::Client, base: &str) -> Option<String> {
    let resp = client
        .get(format!("{base}/quicktunnel"))
        .send()
        .await
        .ok()?;
    let q: QuickTunnel = resp.error_for_status().ok()?.json().await.ok()?;
    let host = q.hostname.trim();
    if host.is_empty() {
        return None;
    }
    // The hostname comes from a child process: accept it only if it makes a valid URL.
    validate_public_url(&format!("https://{host}")).ok()
}

async fn is_ready(client: &reqwest::Client, base: &str) -> bool {
    client
        .get(format!("{base}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_validation() {
        assert_eq!(
            validate_public_url("https://w1.example.org/").unwrap(),
            "https://w1.example.org"
        );
        assert!(validate_public_url("ftp://x").is_err());
        assert!(validate_public_url("not a url").is_err());
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let n = NamedTunnel {
            public_url: "https://x".into(),
            token: Some(Secret::new("hunter2")),
        };
        assert!(!format!("{n:?}").contains("hunter2"));
    }
}
