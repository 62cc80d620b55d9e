//! Workers are strangers: a real gateway on loopback against workers that answer right,
//! wrong, never, or one byte at a time. Deadlines end what a tarpit or a black hole holds;
//! canaries and cross-checks find wrong answers; trust steers traffic and survives a restart.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{Response, header};
use gpumesh_gateway::checks::CheckPlan;
use gpumesh_gateway::types::{WorkerView, WorkersResponse};
use gpumesh_gateway::{Config, Gateway, Source};
use http_body_util::BodyExt as _;
use tokio_util::sync::CancellationToken;

use support::{RunningGateway, client, config, eventually, record, start_gateway, upsert};

/// How a test worker answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `{"answer": <the body in upper case>}`.
    Honest,
    /// The same shape, a wrong answer, at once.
    Garbage,
    /// The response head, then one byte of a 1000-byte body every 100 ms.
    Tarpit,
    /// The response head, then the whole body after 3 s.
    SlowStart,
}

/// A worker answering as `kind`; counts the requests that are not canaries.
async fn worker(kind: Kind) -> (SocketAddr, Arc<AtomicUsize>, CancellationToken) {
    let (addr, real, _, stop) = counted_worker(kind).await;
    (addr, real, stop)
}

/// A worker answering as `kind`; counts real requests and canaries apart.
async fn counted_worker(
    kind: Kind,
) -> (
    SocketAddr,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    CancellationToken,
) {
    let real = Arc::new(AtomicUsize::new(0));
    let canaries = Arc::new(AtomicUsize::new(0));
    let (real_n, canary_n) = (Arc::clone(&real), Arc::clone(&canaries));
    let app = Router::new().fallback(move |req: Request| {
        let (real_n, canary_n) = (Arc::clone(&real_n), Arc::clone(&canary_n));
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let counter = if body.as_ref() == CANARY_BODY.as_bytes() {
                canary_n
            } else {
                real_n
            };
            counter.fetch_add(1, Ordering::SeqCst);
            answer(kind, &body)
        }
    });
    let (addr, stop) = support::serve(app).await;
    (addr, real, canaries, stop)
}

fn answer(kind: Kind, body: &[u8]) -> Response<Body> {
    let json = |answer: String| {
        let text = serde_json::json!({ "answer": answer, "service_ms": 1 }).to_string();
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, text.len())
            .body(Body::from(text))
            .unwrap()
    };
    match kind {
        Kind::Honest => json(String::from_utf8_lossy(body).to_uppercase()),
        Kind::Garbage => json("garbage".into()),
        Kind::Tarpit => {
            let bytes = futures::stream::unfold(0u32, |i| async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                (i < 1000).then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
            });
            Response::builder()
                .header(header::CONTENT_LENGTH, 1000)
                .body(Body::from_stream(bytes))
                .unwrap()
        }
        Kind::SlowStart => {
            let bytes = futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, std::io::Error>(Bytes::from_static(b"late"))
            });
            Response::builder().body(Body::from_stream(bytes)).unwrap()
        }
    }
}

/// A worker that accepts connections and never answers nor closes them.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

const CANARY_BODY: &str = "canary question";

fn plan(text: &str) -> Arc<CheckPlan> {
    Arc::new(CheckPlan::parse(text).unwrap())
}

/// One canary for `ocr`: the honest answer to [`CANARY_BODY`].
fn canary_plan() -> Arc<CheckPlan> {
    plan(&format!(
        "[[canary]]\nservice = \"ocr\"\nname = \"ocr-known-text\"\npath = \"run\"\nbody = \"{CANARY_BODY}\"\ndeadline = \"2s\"\ncheck = {{ json = {{ pointer = \"/answer\", equals = \"{}\" }} }}\n",
        CANARY_BODY.to_uppercase()
    ))
}

fn add(gw: &RunningGateway, id: &str, addr: SocketAddr) {
    upsert(
        &gw.state,
        record(id, "ocr", &format!("http://{addr}")),
        Source::Registry,
    )
    .unwrap();
}

async fn view(gw: &RunningGateway, id: &str) -> WorkerView {
    gw.get_json(&format!("/api/workers/{id}")).await
}

async fn metrics(gw: &RunningGateway) -> String {
    gw.get_text("/metrics").await
}

/// A tarpit that sends one byte every 100 ms, well inside the read timeout, would hold the
/// request for 100 s; the response deadline ends it at 1 s, the client sees the stream
/// break, and the worker loses trust.
#[tokio::test]
async fn a_tarpit_is_cut_off_at_the_response_deadline() {
    let (addr, _, _stop) = worker(Kind::Tarpit).await;
    let gw = start_gateway(Config {
        response_deadline: Duration::from_secs(1),
        ..config()
    })
    .await;
    add(&gw, "tarpit", addr);
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/api/service/ocr/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the head came in time");
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the gateway ends the response, not the test's timeout");
    assert!(body.is_err(), "the client sees the stream break");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let w = view(&gw, "tarpit").await;
    assert!(w.trust.failed >= 1 && w.trust.score < 0.2, "{:?}", w.trust);
    assert!(w.trust.reason.unwrap().contains("total deadline"));
    let m = metrics(&gw).await;
    assert!(
        m.contains("gpumesh_gateway_deadline_misses_total{kind=\"total\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("deadline_total"),
        "counted as a failed request: {m}"
    );
}

/// A worker that sends its head and then nothing for 3 s misses the 1 s first-byte deadline.
#[tokio::test]
async fn a_silent_body_misses_the_first_byte_deadline() {
    let (addr, _, _stop) = worker(Kind::SlowStart).await;
    let gw = start_gateway(Config {
        ttfb_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    add(&gw, "silent", addr);
    let started = Instant::now();
    let resp = client()
        .get(gw.url("/api/service/ocr/run"))
        .send()
        .await
        .unwrap();
    assert!(resp.bytes().await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let m = metrics(&gw).await;
    assert!(
        m.contains("gpumesh_gateway_deadline_misses_total{kind=\"ttfb\"} 1"),
        "{m}"
    );
    assert!(view(&gw, "silent").await.trust.failed >= 1);
}

/// A black hole never sends a head: the client gets a 504 and the worker loses trust.
#[tokio::test]
async fn a_black_hole_times_out_and_loses_trust() {
    let addr = black_hole().await;
    let gw = start_gateway(Config {
        upstream_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    add(&gw, "hole", addr);
    let before = view(&gw, "hole").await.trust.score;
    let resp = client()
        .post(gw.url("/api/service/ocr/run"))
        .body("question")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    let w = view(&gw, "hole").await;
    assert!(
        w.trust.failed >= 1 && w.trust.score < before,
        "{before} → {:?}",
        w.trust
    );
    assert!(
        metrics(&gw)
            .await
            .contains("deadline_misses_total{kind=\"ttfb\"} 1")
    );
}

/// A worker that answers fast and wrong fails its first canary, is distrusted and gets no
/// real traffic, while the honest worker passes and serves everything.
#[tokio::test]
async fn a_garbage_worker_is_distrusted_by_a_canary_and_loses_its_traffic() {
    let (honest, honest_real, _s1) = worker(Kind::Honest).await;
    let (liar, liar_real, _s2) = worker(Kind::Garbage).await;
    let gw = start_gateway(Config {
        checks: canary_plan(),
        ..config()
    })
    .await;
    add(&gw, "honest", honest);
    add(&gw, "liar", liar);
    let checked = eventually(Duration::from_secs(10), || async {
        let workers: WorkersResponse = gw.get_json("/api/workers").await;
        let by_id: HashMap<_, _> = workers.workers.iter().map(|w| (w.id.as_str(), w)).collect();
        by_id["liar"].trust.distrusted && by_id["honest"].trust.verified >= 1
    })
    .await;
    assert!(checked, "both workers are canaried soon after they join");
    let liar_view = view(&gw, "liar").await;
    assert_eq!(
        liar_view.trust.reason.as_deref(),
        Some(r#"canary failed: ocr-known-text: /answer was "garbage", expected "CANARY QUESTION""#)
    );
    assert_eq!(liar_view.trust.weight, 0.0);
    for i in 0..40 {
        let resp = client()
            .post(gw.url("/api/service/ocr/run"))
            .body(format!("request {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-gpumesh-worker"], "honest");
    }
    assert_eq!(liar_real.load(Ordering::SeqCst), 0);
    assert_eq!(honest_real.load(Ordering::SeqCst), 40);
    let m = metrics(&gw).await;
    assert!(
        m.contains("canaries_total{service=\"ocr\",result=\"failed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("trust_evidence_total{kind=\"canary_failed\"} 1"),
        "{m}"
    );
    let topology: serde_json::Value = gw.get_json("/api/dht/topology").await;
    let liar_node = topology["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "liar")
        .unwrap();
    assert_eq!(liar_node["distrusted"], true);
}

/// A serving worker gets random canaries, but no more than 1 % of the real requests (plus
/// the one it got on joining).
#[tokio::test]
async fn serving_workers_get_canaries_within_one_percent_of_real_traffic() {
    let (addr, real, canaries, _stop) = counted_worker(Kind::Honest).await;
    let gw = start_gateway(Config {
        checks: canary_plan(),
        ..config()
    })
    .await;
    add(&gw, "honest", addr);
    assert!(
        eventually(Duration::from_secs(5), || async {
            canaries.load(Ordering::SeqCst) == 1
        })
        .await,
        "a canary soon after joining"
    );
    let http = client();
    for i in 0..500 {
        let resp = http
            .post(gw.url("/api/service/ocr/run"))
            .body(format!("request {i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(real.load(Ordering::SeqCst), 500);
    let sent = canaries.load(Ordering::SeqCst);
    assert!(
        (2..=6).contains(&sent),
        "1 on joining + at most 5 for 500 requests: {sent}"
    );
    assert!(view(&gw, "honest").await.trust.verified >= 2);
}

/// Among three workers of a deterministic service, one answering wrong is found by
/// replayed real requests: the two honest ones agree, the liar is the minority.
#[tokio::test]
async fn a_cross_check_finds_the_liar_among_three() {
    let (a, _, _s1) = worker(Kind::Honest).await;
    let (b, _, _s2) = worker(Kind::Honest).await;
    let (liar, _, _s3) = worker(Kind::Garbage).await;
    let gw = start_gateway(Config {
        checks: plan("[[deterministic]]\nservice = \"ocr\"\ncompare = \"/answer\"\nshare = 0.01\n"),
        ..config()
    })
    .await;
    add(&gw, "honestA", a);
    add(&gw, "honestB", b);
    add(&gw, "liar", liar);
    let http = client();
    let mut found = false;
    for i in 0..4000 {
        let resp = http
            .post(gw.url("/api/service/ocr/run"))
            .body(format!("request {i}"))
            .send()
            .await
            .unwrap();
        let _ = resp.bytes().await;
        if i % 100 == 99 {
            let liar = view(&gw, "liar").await;
            let a = view(&gw, "honestA").await;
            let b = view(&gw, "honestB").await;
            if liar.trust.failed >= 1 && a.trust.verified + b.trust.verified >= 2 {
                found = true;
                assert!(
                    liar.trust
                        .reason
                        .unwrap()
                        .starts_with("cross-check disagreed: ocr"),
                    "the reason says why"
                );
                assert_eq!((a.trust.failed, b.trust.failed), (0, 0));
                break;
            }
        }
    }
    assert!(found, "a cross-check blamed the liar");
    let m = metrics(&gw).await;
    assert!(
        m.contains("cross_checks_total{service=\"ocr\",result=\"disagreed\"}"),
        "{m}"
    );
}

/// A distrusted worker stays distrusted across a gateway restart (its trust is in the saved
/// view file) when it registers again.
#[tokio::test]
async fn a_restarted_gateway_keeps_a_distrusted_worker_distrusted() {
    let dir = std::env::temp_dir().join(format!(
        "gpumesh-trust-restart-{}-{}",
        std::process::id(),
        gpumesh_dht::rules::unix_ms()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let view_file = dir.join("view.bin");
    let (liar, _, _stop) = worker(Kind::Garbage).await;
    let with_dht = |checks: Arc<CheckPlan>| Config {
        dht_enabled: true,
        dht_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        dht_timings: Some(gpumesh_dht::Timings::fast()),
        dht_view_file: Some(view_file.clone()),
        checks,
        ..config()
    };
    let (first, served) = serve(with_dht(canary_plan())).await;
    add(&first, "liar", liar);
    assert!(
        eventually(Duration::from_secs(10), || async {
            view(&first, "liar").await.trust.distrusted
        })
        .await
    );
    first.shutdown.cancel();
    served.await.unwrap().unwrap();
    // No canaries this time: nothing but the saved trust can make it distrusted.
    let (second, _served) = serve(with_dht(Arc::default())).await;
    add(&second, "liar", liar);
    let w = view(&second, "liar").await;
    assert!(w.trust.distrusted, "{:?}", w.trust);
    assert_eq!(w.trust.failed, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a gateway and returns its serving task (to wait for its last view-file write).
async fn serve(
    config: Config,
) -> (
    RunningGateway,
    tokio::task::JoinHandle<Result<(), gpumesh_gateway::RunError>>,
) {
    let gateway = Gateway::bind(config).await.unwrap();
    let addr = gateway.local_addr().unwrap();
    let state = gateway.state().clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(gateway.serve(shutdown.clone()));
    (
        RunningGateway {
            addr,
            state,
            shutdown,
        },
        task,
    )
}
