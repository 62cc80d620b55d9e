//! The forwarder's edges, against real gateways and fake workers on loopback port 0:
//! forwarding loops, credential and response-header rules, HTTP/2 request bodies without a
//! length, and clients that stall mid-upload (whose failures must not be charged to workers).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::any;
use gpumesh_gateway::Config;
use gpumesh_gateway::api::types::{ErrorBody, WorkerView};
use reqwest::StatusCode;
use support::{client, config, record, register, serve, start_gateway, start_worker};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;

fn seen(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

#[tokio::test]
async fn two_gateways_pointing_at_each_other_stop_after_one_round_trip() {
    let a = start_gateway(config()).await;
    let b = start_gateway(config()).await;
    // Each gateway's only worker for `loop` is the other gateway.
    let to_b = record(
        "gwb",
        "loop",
        &format!("http://{}/api/service/loop", b.addr),
    );
    let to_a = record(
        "gwa",
        "loop",
        &format!("http://{}/api/service/loop", a.addr),
    );
    register_ok(&a, &to_b).await;
    register_ok(&b, &to_a).await;

    let resp = client()
        .get(a.url("/api/service/loop/x"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the loop ends well before the client gives up");
    assert_eq!(resp.status(), StatusCode::LOOP_DETECTED);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(
        (err.code.as_str(), err.fault.as_str()),
        ("loop_detected", "worker")
    );

    // A: the client's request (forwarded once) and B's (refused). B: one forwarded request.
    let metrics_a = a.get_text("/metrics").await;
    let metrics_b = b.get_text("/metrics").await;
    assert_eq!(requests(&metrics_a, "loop_detected"), 1.0, "{metrics_a}");
    assert_eq!(requests(&metrics_a, ""), 2.0, "{metrics_a}");
    assert_eq!(requests(&metrics_b, ""), 1.0, "{metrics_b}");

    // A gateway that is its own worker stops after one hop too.
    let c = start_gateway(config()).await;
    let to_c = record(
        "gwc",
        "self",
        &format!("http://{}/api/service/self", c.addr),
    );
    register_ok(&c, &to_c).await;
    let resp = client()
        .post(c.url("/api/service/self/y"))
        .body("x")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::LOOP_DETECTED);
    assert_eq!(requests(&c.get_text("/metrics").await, ""), 2.0);
}

/// Registers `record` and checks that the gateway took it.
async fn register_ok(gw: &support::RunningGateway, record: &gpumesh_dht::record::WorkerRecord) {
    let resp = client()
        .post(gw.url("/api/workers/register"))
        .bearer_auth(support::TOKEN)
        .json(record)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
}

/// The sum of `gpumesh_gateway_requests_total` samples whose outcome is `outcome` (any
/// outcome when empty).
fn requests(text: &str, outcome: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("gpumesh_gateway_requests_total{"))
        .filter(|l| outcome.is_empty() || l.contains(&format!("outcome=\"{outcome}\"")))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

/// A worker that reports the credentials it saw and answers with headers that must not reach
/// the gateway's origin.
async fn start_header_worker() -> (SocketAddr, CancellationToken) {
    let app = Router::new().fallback(any(|headers: HeaderMap| async move {
        let location = if seen(&headers, "x-want-location") == "relative" {
            "/api/service/hdr/next"
        } else {
            "https://phish.example/login"
        };
        let reported = format!(
            "auth={} cookie={} proxy={} custom={} via={} xff={}",
            seen(&headers, "authorization"),
            seen(&headers, "cookie"),
            seen(&headers, "proxy-foo"),
            seen(&headers, "x-custom"),
            seen(&headers, "via"),
            seen(&headers, "x-forwarded-for"),
        );
        (
            AxumStatus::FOUND,
            [
                ("set-cookie", "session=stolen; Domain=.example.org"),
                ("strict-transport-security", "max-age=63072000"),
                ("location", location),
                ("content-type", "text/html"),
            ],
            reported,
        )
    }));
    serve(app).await
}

async fn header_exchange(gw: &support::RunningGateway, location: &str) -> reqwest::Response {
    // Redirects are looked at, not followed.
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    client
        .get(gw.url("/api/service/hdr/x"))
        .header("authorization", "Bearer fleet-key")
        .header("cookie", "sid=1")
        .header("proxy-foo", "p")
        .header("x-custom", "kept")
        .header("x-want-location", location)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn credentials_stay_at_the_gateway_and_worker_headers_are_neutralised() {
    let (w, _stop) = start_header_worker().await;
    let gw = start_gateway(config()).await;
    register(&gw, &record("hdr", "hdr", &format!("http://{w}"))).await;

    let resp = header_exchange(&gw, "absolute").await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let h = resp.headers().clone();
    for gone in ["set-cookie", "strict-transport-security", "location"] {
        assert!(h.get(gone).is_none(), "{gone} passed: {h:?}");
    }
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-security-policy"], "sandbox");
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("auth=- cookie=- proxy=- custom=kept via=1.1 "),
        "{text}"
    );
    assert!(text.ends_with("xff=127.0.0.1"), "{text}");

    // A relative Location stays on the gateway's origin, so it passes.
    let resp = header_exchange(&gw, "relative").await;
    assert_eq!(resp.headers()["location"], "/api/service/hdr/next");
}

#[tokio::test]
async fn an_h2_streamed_body_without_a_length_reaches_the_worker_whole() {
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Frame;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let (w, _stop) = start_worker("h2").await;
    let gw = start_gateway(config()).await;
    register(&gw, &record("h2", "echo", &format!("http://{w}"))).await;

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = payload
        .chunks(16 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures::stream::iter(frames));
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<StreamBody<_>>();
    let request = axum::http::Request::post(gw.url("/api/service/echo/echo/h2"))
        .body(body)
        .unwrap();
    assert!(request.headers().get("content-length").is_none());
    let resp = h2.request(request).await.expect("h2 prior knowledge");
    assert_eq!(resp.version(), axum::http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let got = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got.len(), payload.len(), "the whole body was forwarded");
    assert_eq!(got.as_ref(), payload.as_slice());
}

/// A worker that reads the whole request body before answering, as most HTTP servers do.
async fn start_reading_worker() -> (SocketAddr, CancellationToken) {
    let app = Router::new().fallback(any(|body: Bytes| async move { body.len().to_string() }));
    serve(app).await
}

/// Opens a connection, declares a large body, sends half of it and stalls for `stall`.
async fn stall_mid_upload(gw: SocketAddr, stall: Duration) {
    let Ok(mut conn) = tokio::net::TcpStream::connect(gw).await else {
        return;
    };
    let head = format!(
        "POST /api/service/upload/x HTTP/1.1\r\nhost: {gw}\r\ncontent-length: 200000\r\n\r\n"
    );
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(&[b'a'; 100_000]).await;
    tokio::time::sleep(stall).await;
}

#[tokio::test]
async fn clients_that_stall_mid_upload_do_not_cost_the_worker() {
    let stallers: usize = std::env::var("EDGES_STALLERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let (w, _stop) = start_reading_worker().await;
    let cfg = Config {
        upstream_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_millis(1500),
        ..config()
    };
    let gw = start_gateway(cfg).await;
    let mut rec = record("honest", "upload", &format!("http://{w}"));
    rec.load.max_concurrency = 4096;
    register(&gw, &rec).await;

    // Every client stalls longer than the upstream timeout, then goes away.
    let addr = gw.addr;
    let clients: Vec<_> = (0..stallers)
        .map(|_| tokio::spawn(stall_mid_upload(addr, Duration::from_millis(2500))))
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let settled = support::eventually(Duration::from_secs(10), || async {
        let view: WorkerView = gw.get_json("/api/workers/honest").await;
        view.in_flight == 0
    })
    .await;
    assert!(settled, "every stalled upload ended");
    let view: WorkerView = gw.get_json("/api/workers/honest").await;
    let metrics = gw.get_text("/metrics").await;
    let outcomes: Vec<_> = metrics
        .lines()
        .filter(|l| l.starts_with("gpumesh_gateway_requests_total{"))
        .collect();
    eprintln!(
        "{stallers} stalled uploads: {outcomes:?}; worker failures {}",
        view.failures
    );
    assert_eq!(view.failures, 0, "{view:?}");
    assert!(view.ejected_for_s.is_none(), "{view:?}");

    // The worker still serves a client that sends its whole body.
    let resp = client()
        .post(gw.url("/api/service/upload/x"))
        .body(vec![b'b'; 200_000])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "200000");
}

#[tokio::test]
async fn operators_may_forward_a_credential_and_keep_the_client_address_back() {
    let (w, _stop) = start_header_worker().await;
    let gw = start_gateway(Config {
        forward_headers: vec!["Authorization".into()],
        forwarded_for: false,
        ..config()
    })
    .await;
    register(&gw, &record("hdr", "hdr", &format!("http://{w}"))).await;
    let text = header_exchange(&gw, "relative").await.text().await.unwrap();
    assert!(
        text.starts_with("auth=Bearer fleet-key cookie=- "),
        "{text}"
    );
    assert!(text.ends_with("xff=-"), "{text}");
}

#[tokio::test]
async fn worker_urls_naming_the_gateway_itself_are_refused() {
    let gw = start_gateway(Config {
        public_names: vec!["gw.example.org".into(), "127.0.0.9".into()],
        via_name: Some("gw-named".into()),
        ..config()
    })
    .await;
    for url in [
        "https://GW.example.org/api/service/x",
        "http://127.0.0.9:8080/",
    ] {
        let resp = client()
            .post(gw.url("/api/workers/register"))
            .bearer_auth(support::TOKEN)
            .json(&record("self", "x", url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{url}");
        let err: ErrorBody = resp.json().await.unwrap();
        assert!(err.message.contains("this gateway's own"), "{err:?}");
    }
    // The configured name is the one `Via` carries: a request with it is a loop.
    let resp = client()
        .get(gw.url("/api/service/x/y"))
        .header("via", "1.1 gw-named")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::LOOP_DETECTED);
}
