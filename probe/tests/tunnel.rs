//! The cloudflared supervisor against a fake cloudflared executable.

mod support;

use std::time::Duration;

use gpumesh_probe::tunnel::{
    CloudflaredConfig, NamedTunnel, Secret, Tunnel, TunnelConfig, TunnelStatus,
};
use support::fake_cloudflared::{self, Behaviour};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn config(bin: std::path::PathBuf, named: Option<NamedTunnel>) -> TunnelConfig {
    TunnelConfig::Cloudflared(CloudflaredConfig {
        bin,
        upstream: "http://127.0.0.1:9".into(),
        named,
        poll_every: Duration::from_millis(100),
        backoff_base: Duration::from_millis(200),
        backoff_max: Duration::from_secs(2),
    })
}

/// Waits until `pred` holds, recording every status seen.
async fn wait_for(
    rx: &mut watch::Receiver<TunnelStatus>,
    seen: &mut Vec<TunnelStatus>,
    pred: impl Fn(&TunnelStatus) -> bool,
) -> TunnelStatus {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let s = rx.borrow_and_update().clone();
            seen.push(s.clone());
            if pred(&s) {
                return s;
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("tunnel status never matched")
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn quick_tunnel_url_is_usable_only_once_ready() {
    if !fake_cloudflared::python_available() {
        eprintln!("skipped: python3 not available for the fake cloudflared");
        return;
    }
    let dir = support::temp_dir("cf-quick");
    let (bin, log) = fake_cloudflared::write(
        &dir,
        Behaviour {
            ready_after: 1.0,
            first_run_dies_after: None,
        },
    );
    let stop = CancellationToken::new();
    let tunnel = Tunnel::start(config(bin, None), stop.clone());
    let mut rx = tunnel.subscribe();
    let mut seen = Vec::new();
    let s = wait_for(&mut rx, &mut seen, |s| s.ready).await;
    let url = s.usable_url().unwrap().to_owned();
    assert!(
        url.starts_with("https://fake-") && url.ends_with(".trycloudflare.com"),
        "{url}"
    );
    assert!(
        seen.iter()
            .any(|s| s.url.is_some() && s.usable_url().is_none()),
        "the hostname was known before /ready and was not usable yet: {seen:?}"
    );
    let starts = fake_cloudflared::starts(&log);
    assert_eq!(starts.len(), 1);
    let argv = &starts[0].argv;
    for flag in [
        "tunnel",
        "--no-autoupdate",
        "--metrics",
        "--url",
        "http://127.0.0.1:9",
    ] {
        assert!(
            argv.iter().any(|a| a == flag),
            "{flag} missing from {argv:?}"
        );
    }
    stop.cancel();
    tunnel.stopped().await;
    assert!(gone(starts[0].pid), "the child is killed on shutdown");
}

#[tokio::test]
async fn crashed_cloudflared_is_restarted_with_a_new_url() {
    if !fake_cloudflared::python_available() {
        return;
    }
    let dir = support::temp_dir("cf-crash");
    let (bin, log) = fake_cloudflared::write(
        &dir,
        Behaviour {
            ready_after: 0.1,
            first_run_dies_after: Some(1.5),
        },
    );
    let stop = CancellationToken::new();
    let tunnel = Tunnel::start(config(bin, None), stop.clone());
    let mut rx = tunnel.subscribe();
    let mut seen = Vec::new();
    let first = wait_for(&mut rx, &mut seen, |s| s.ready).await;
    let down = wait_for(&mut rx, &mut seen, |s| {
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("exited"))
    })
    .await;
    assert!(
        down.usable_url().is_none(),
        "a dead tunnel's URL is not usable"
    );
    let second = wait_for(&mut rx, &mut seen, |s| s.ready && s.restarts >= 1).await;
    assert_ne!(first.url, second.url, "a quick tunnel gets a new hostname");
    assert_eq!(fake_cloudflared::starts(&log).len(), 2);
    stop.cancel();
    tunnel.stopped().await;
}

#[tokio::test]
async fn named_tunnel_gets_its_token_from_the_environment_not_argv() {
    if !fake_cloudflared::python_available() {
        return;
    }
    let dir = support::temp_dir("cf-named");
    let (bin, log) = fake_cloudflared::write(
        &dir,
        Behaviour {
            ready_after: 0.2,
            first_run_dies_after: None,
        },
    );
    let named = NamedTunnel {
        public_url: "https://worker7.example.org".into(),
        token: Some(Secret::new("s3cret-token")),
    };
    let stop = CancellationToken::new();
    let tunnel = Tunnel::start(config(bin, Some(named)), stop.clone());
    let mut rx = tunnel.subscribe();
    let s = wait_for(&mut rx, &mut Vec::new(), |s| s.ready).await;
    assert_eq!(s.usable_url(), Some("https://worker7.example.org"));
    let starts = fake_cloudflared::starts(&log);
    assert_eq!(starts[0].token.as_deref(), Some("s3cret-token"));
    assert!(starts[0].argv.iter().all(|a| !a.contains("s3cret")));
    assert!(starts[0].argv.iter().any(|a| a == "run"));
    stop.cancel();
    tunnel.stopped().await;
}

#[tokio::test]
async fn missing_cloudflared_is_reported_and_retried_not_fatal() {
    let stop = CancellationToken::new();
    let tunnel = Tunnel::start(
        config("/nonexistent/cloudflared".into(), None),
        stop.clone(),
    );
    let mut rx = tunnel.subscribe();
    let s = wait_for(&mut rx, &mut Vec::new(), |s| s.restarts >= 2).await;
    assert!(s.usable_url().is_none());
    assert!(s.last_error.unwrap().contains("cannot start"));
    stop.cancel();
    tunnel.stopped().await;
}
