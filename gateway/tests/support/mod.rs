//! Shared helpers: worker records, configs, a real gateway and fake workers on port 0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::routing::{any, get};
use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerRecord};
use gpumesh_gateway::api::AppState;
use gpumesh_gateway::{Config, Gateway};
use tokio_util::sync::CancellationToken;

/// The registry token tests use.
pub const TOKEN: &str = "test-token";

/// A valid record for `id` offering `service` at `url`.
pub fn record(id: &str, service: &str, url: &str) -> WorkerRecord {
    let now = gpumesh_dht::rules::unix_ms();
    WorkerRecord {
        peer_id: id.to_owned(),
        seq: 1,
        issued_at_ms: now,
        expires_at_ms: now + 600_000,
        gpus: vec![GpuInfo {
            util_pct: Some(10),
            ..GpuInfo::new("NVIDIA H100 80GB HBM3", format!("GPU-{id}"), 81_920, 70_000)
        }],
        load: LoadInfo {
            max_concurrency: 4,
            ..LoadInfo::default()
        },
        agent_version: "test".into(),
        started_at_ms: now,
        ..WorkerRecord::new(vec![service.parse().expect("a valid service name")], url)
    }
}

/// Puts `record` into the gateway's view as `source` would (a registry entry lives an hour).
///
/// # Errors
/// The directory's refusal.
pub fn upsert(
    state: &AppState,
    record: WorkerRecord,
    source: gpumesh_gateway::Source,
) -> Result<(), gpumesh_gateway::directory::Refused> {
    let now = std::time::Instant::now();
    let lease_until_ms = (source == gpumesh_gateway::Source::Registry)
        .then(|| gpumesh_dht::rules::unix_ms() + 3_600_000);
    state.directory.apply(
        gpumesh_gateway::Change::Upsert {
            record: Box::new(record),
            source,
            lease_until_ms,
        },
        now,
    )
}

/// Coordinator-only, private upstreams allowed, short timeouts.
pub fn config() -> Config {
    Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dht_enabled: false,
        registry_token: Some(TOKEN.to_owned()),
        allow_private_upstreams: true,
        connect_timeout: Duration::from_millis(500),
        upstream_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A running gateway.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub state: AppState,
    pub shutdown: CancellationToken,
}

impl RunningGateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path` and the body as text (any status).
    #[allow(dead_code, reason = "not every test binary reads text")]
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("gateway answers")
            .text()
            .await
            .expect("body")
    }

    /// `GET path` and the body decoded as JSON (any status).
    #[allow(dead_code, reason = "not every test binary reads JSON")]
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        client()
            .get(self.url(path))
            .send()
            .await
            .expect("gateway answers")
            .json()
            .await
            .expect("JSON body")
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds a gateway on port 0 and serves it in the background.
pub async fn start_gateway(config: Config) -> RunningGateway {
    let gateway = Gateway::bind(config).await.expect("gateway binds");
    let addr = gateway.local_addr().expect("local addr");
    let state = gateway.state().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(gateway.serve(shutdown.clone()));
    RunningGateway {
        addr,
        state,
        shutdown,
    }
}

/// A plain client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn header(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A fake worker named `name`:
/// - `ANY /echo/*`: the request body back, with `x-seen-*` headers describing the request;
/// - `GET /stream`: one chunk, then a second once `POST /release` is called (or after 30 s),
///   so a test can look at the gateway while the body is provably still open;
/// - `GET /hang`: never answers;
/// - `GET /fail`: 500.
pub async fn start_worker(name: &'static str) -> (SocketAddr, CancellationToken) {
    let echo = move |req: Request| async move {
        let h = req.headers().clone();
        let mut resp = axum::http::Response::new(req.into_body());
        let out = resp.headers_mut();
        out.insert("x-served-by", name.parse().unwrap());
        for (seen, from) in [
            ("x-seen-host", "host"),
            ("x-seen-xff", "x-forwarded-for"),
            ("x-seen-xfh", "x-forwarded-host"),
            ("x-seen-connection-named", "x-hop"),
            ("x-seen-auth", "authorization"),
        ] {
            let v = header(&h, from);
            out.insert(seen, v.parse().unwrap());
        }
        resp
    };
    let release_stream = std::sync::Arc::new(tokio::sync::Notify::new());
    let release_post = release_stream.clone();
    let app = Router::new()
        .route("/echo/{*rest}", any(echo))
        .route(
            "/stream",
            get(move || {
                let release = release_stream.clone();
                async move {
                    let chunks = futures::stream::unfold(0u8, move |i| {
                        let release = release.clone();
                        async move {
                            if i == 2 {
                                return None;
                            }
                            if i == 1 {
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(30),
                                    release.notified(),
                                )
                                .await;
                            }
                            Some((Ok::<_, std::io::Error>(format!("chunk{i};")), i + 1))
                        }
                    });
                    Body::from_stream(chunks)
                }
            }),
        )
        .route(
            "/release",
            axum::routing::post(move || {
                let release = release_post.clone();
                async move {
                    // `notify_one` stores a permit, so a release that comes first is not lost.
                    release.notify_one();
                    "released"
                }
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                "never"
            }),
        )
        .route(
            "/fail",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        );
    serve(app).await
}

/// Serves `app` on a loopback port of its own until the returned token is cancelled.
pub async fn serve(app: Router) -> (SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind worker");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (addr, token)
}

/// An address nothing listens on (connections are refused).
pub fn dead_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// Registers `record` with the gateway's registry; returns the status.
pub async fn register(gw: &RunningGateway, record: &WorkerRecord) -> reqwest::StatusCode {
    client()
        .post(gw.url("/api/workers/register"))
        .bearer_auth(TOKEN)
        .json(record)
        .send()
        .await
        .expect("register call")
        .status()
}

/// A fake worker that counts every request it receives (any path) and answers 200 `name`.
pub async fn start_counting_worker(
    name: &'static str,
) -> (
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    CancellationToken,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            name
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind worker");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    });
    (addr, hits, token)
}

/// Polls `cond` every 50 ms for up to `timeout`; returns whether it came true.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
