//! The HTTP server's limits and the forward route's fast path, on real loopback sockets.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;
use crate::api::service::{FORWARD_ROUTES, forward_route};
use crate::config::{ConfigError, MIN_HEADER_BYTES};

/// Generous on a loaded 2-core machine: the timeouts under test are far shorter.
const PATIENCE: Duration = Duration::from_secs(20);

fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dht_enabled: false,
        registry_token: Some("test-token".to_owned()),
        allow_private_upstreams: true,
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 16 * 1024,
        ..Config::default()
    }
}

async fn start(config: Config) -> (SocketAddr, CancellationToken) {
    let gateway = Gateway::bind(config).await.expect("gateway binds");
    let addr = gateway.local_addr().expect("local addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(gateway.serve(shutdown.clone()));
    (addr, shutdown)
}

/// Reads until the peer closes (or resets) the connection; what it sent before that.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the gateway closes the connection");
    got
}

#[tokio::test]
async fn a_client_sending_half_a_request_head_is_disconnected() {
    let (addr, shutdown) = start(config()).await;
    // A complete request on another connection is answered: the server itself works.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut ok).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

    // Half a head, then silence: without a header read timeout this waits forever.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "a half request is never served: {answer:?}"
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_with_431() {
    let (addr, shutdown) = start(config()).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let big = "a".repeat(32 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading (and close) before all of it is written.
    let _ = stream.write_all(head.as_bytes()).await;
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    shutdown.cancel();
}

#[tokio::test]
async fn forward_requests_are_counted_under_the_router_templates() {
    let (addr, shutdown) = start(config()).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // No worker is known: the forward handler answers (503), not the router's 404 fallback.
    let resp = client
        .get(format!("http://{addr}/api/service/llm/v1/chat?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let resp = client
        .get(format!("http://{addr}/api/service/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        404,
        "an empty service is the router's"
    );
    let metrics = client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("gpumesh_gateway_http_requests_total")
                && l.contains(r#"route="/api/service/{service}/{*path}""#)
                && l.contains(r#"status="503""#)
        })
        .unwrap_or_else(|| panic!("no forward series in:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
    shutdown.cancel();
}

#[test]
fn forward_route_templates_match_the_router() {
    assert_eq!(forward_route("/api/service/llm"), Some(FORWARD_ROUTES[0]));
    assert_eq!(forward_route("/api/service/llm/"), Some(FORWARD_ROUTES[1]));
    assert_eq!(
        forward_route("/api/service/llm/a/b"),
        Some(FORWARD_ROUTES[2])
    );
    assert_eq!(forward_route("/api/service/"), None);
    assert_eq!(forward_route("/api/service//x"), None);
    assert_eq!(forward_route("/api/services/llm"), None);
    assert_eq!(forward_route("/api/route/llm"), None);
}

#[test]
fn header_limits_below_the_server_minimum_are_refused() {
    let cfg = Config {
        max_header_bytes: 1024,
        ..config()
    };
    assert!(matches!(
        cfg.validate(),
        Err(ConfigError::HeaderLimit {
            min: MIN_HEADER_BYTES,
            got: 1024
        })
    ));
}

fn worker_record(id: &str, model: &str, url: &str) -> gpumesh_dht::record::WorkerRecord {
    use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerRecord};
    let now = gpumesh_dht::rules::unix_ms();
    // A plausible size for the model: its class's largest, at most 80 GiB.
    let vram = gpumesh_dht::rules::plausible::gpu_class(model)
        .map_or(81_920, |c| c.max_vram_mib().min(81_920));
    WorkerRecord {
        peer_id: id.to_owned(),
        seq: 1,
        issued_at_ms: now,
        expires_at_ms: now + 600_000,
        gpus: vec![GpuInfo::new(model, format!("GPU-{id}"), vram, vram * 7 / 8)],
        load: LoadInfo {
            max_concurrency: 4,
            ..LoadInfo::default()
        },
        agent_version: "test".into(),
        started_at_ms: now,
        ..WorkerRecord::new(vec!["llm".parse().unwrap()], url)
    }
}

/// A worker answering `name` after `delay`, on loopback port 0.
async fn worker(name: &'static str, delay: Duration) -> SocketAddr {
    let app = Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        name
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn a_stalled_get_is_hedged_to_another_worker() {
    // The stalled worker would answer long after the upstream timeout: without a hedge,
    // every request picked for it is a 504. It is the H100, so the scheduler's class prior
    // makes it the first choice every time (a hedge that wins ends its pick as Cancelled,
    // which teaches the scheduler nothing), and the T4 is what a hedge finds.
    let stalled = worker("stalled", Duration::from_secs(600)).await;
    let fast = worker("fast", Duration::ZERO).await;
    let gateway = Gateway::bind(Config {
        upstream_timeout: Duration::from_secs(4),
        hedge_after: Some(Duration::from_millis(50)),
        ..config()
    })
    .await
    .unwrap();
    let addr = gateway.local_addr().unwrap();
    let workers = [
        ("stalled", "NVIDIA H100 80GB HBM3", stalled),
        ("fast", "Tesla T4", fast),
    ];
    for (id, model, at) in workers {
        let event = crate::Change::Upsert {
            record: Box::new(worker_record(id, model, &format!("http://{at}"))),
            source: crate::Source::Registry,
            lease_until_ms: None,
        };
        gateway
            .state()
            .directory
            .apply(event, Instant::now())
            .unwrap();
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(gateway.serve(shutdown.clone()));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..8 {
        let resp = client
            .get(format!("http://{addr}/api/service/llm/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["x-gpumesh-worker"], "fast");
        assert_eq!(resp.text().await.unwrap(), "fast");
    }
    shutdown.cancel();
}
