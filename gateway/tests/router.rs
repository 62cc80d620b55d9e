//! Router tests without a gateway socket (`tower::ServiceExt::oneshot`): every status code
//! the API promises, with its JSON error body.

mod support;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use gpumesh_dht::record::WorkerState;
use gpumesh_gateway::api::types::{
    BootstrapResponse, ErrorBody, RegisterResponse, WorkersResponse,
};
use gpumesh_gateway::api::{AppState, router};
use gpumesh_gateway::server::build_state;
use gpumesh_gateway::{Config, Source};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::{TOKEN, config, dead_addr, record};
use tower::ServiceExt;

fn app_with(config: Config) -> (Router, AppState) {
    let state = build_state(config, Registry::default()).expect("state");
    (router(state.clone()), state)
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn error_of(app: &Router, req: Request<Body>) -> (StatusCode, ErrorBody) {
    let (status, headers, body) = call(app, req).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let err: ErrorBody = serde_json::from_slice(&body).expect("JSON error body");
    assert!(!err.message.is_empty());
    (status, err)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn add_worker(state: &AppState, id: &str, service: &str, url: &str, ws: WorkerState) {
    let mut r = record(id, service, url);
    r.state = ws;
    support::upsert(state, r, Source::Dht).expect("accepted");
}

fn register_req(token: Option<&str>, body: String) -> Request<Body> {
    let mut b =
        Request::post("/api/workers/register").header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn health_and_readiness() {
    let (app, state) = app_with(config());
    assert_eq!(call(&app, get("/healthz")).await.0, StatusCode::OK);
    let (status, err) = error_of(&app, get("/readyz")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    assert_eq!(call(&app, get("/readyz")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn status_400_bad_requirement_header_and_bad_service_name() {
    let (app, state) = app_with(config());
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    let req = Request::get("/api/service/ocr/x")
        .header("x-gpumesh-min-vram-gib", "lots")
        .body(Body::empty())
        .unwrap();
    let (status, err) = error_of(&app, req).await;
    assert_eq!(
        (status, err.code.as_str(), err.fault.as_str()),
        (StatusCode::BAD_REQUEST, "bad_request", "client")
    );
    let (status, _) = error_of(&app, get("/api/service/o%20cr/x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = error_of(&app, get("/api/service/ocr/a/../../admin")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The same bad service name gets the rulebook's one message on the request path and in a
/// registration (the agent's flags and the DHT apply the same rule).
#[tokio::test]
async fn an_upper_case_service_gets_the_rulebook_message_at_every_http_edge() {
    let (app, _) = app_with(config());
    let rule = gpumesh_dht::ServiceName::parse("OCR")
        .unwrap_err()
        .to_string();
    let (status, err) = error_of(&app, get("/api/service/OCR/x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains(&rule), "request path: {}", err.message);
    let mut body = serde_json::to_value(record("w1", "ocr", "http://127.0.0.1:9")).unwrap();
    body["services"] = serde_json::json!(["OCR"]);
    let (status, err) = error_of(&app, register_req(Some(TOKEN), body.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains(&rule), "registry: {}", err.message);
}

#[tokio::test]
async fn status_401_403_registry_auth() {
    let (app, _) = app_with(config());
    let body = serde_json::to_string(&record("w1", "ocr", "http://127.0.0.1:9")).unwrap();
    let (status, err) = error_of(&app, register_req(None, body.clone())).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, err) = error_of(&app, register_req(Some("wrong"), body.clone())).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    // No token configured: the registry is off.
    let (app, _) = app_with(Config {
        registry_token: None,
        dht_enabled: true,
        ..config()
    });
    let (status, _) = error_of(&app, register_req(Some(TOKEN), body)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn registry_register_heartbeat_deregister() {
    let (app, _) = app_with(config());
    let body = serde_json::to_string(&record("w1", "ocr", "http://127.0.0.1:9")).unwrap();
    let (status, _, bytes) = call(&app, register_req(Some(TOKEN), body)).await;
    assert_eq!(status, StatusCode::OK);
    let reg: RegisterResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (
            reg.worker_id.as_str(),
            reg.ttl_secs,
            reg.heartbeat_interval_secs
        ),
        ("w1", 90, 30)
    );

    let beat = Request::post("/api/workers/w1/heartbeat")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(r#"{"state":"draining"}"#))
        .unwrap();
    assert_eq!(call(&app, beat).await.0, StatusCode::OK);
    let (_, _, bytes) = call(&app, get("/api/workers")).await;
    let list: WorkersResponse = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list.count, 1);
    assert_eq!(
        (list.workers[0].source.as_str(), list.workers[0].state),
        ("registry", WorkerState::Draining)
    );

    // Draining: no eligible worker, with the scheduler's reason.
    let (status, err) = error_of(&app, get("/api/service/ocr/x")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "no_eligible_worker")
    );
    assert!(err.reason.unwrap_or_default().contains("draining"));

    let del = |id: &str| {
        Request::delete(format!("/api/workers/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(call(&app, del("w1")).await.0, StatusCode::NO_CONTENT);
    let (status, err) = error_of(&app, del("w1")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_worker")
    );
    // A heartbeat for an expired/unknown entry says: register again.
    let beat = Request::post("/api/workers/w1/heartbeat")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(error_of(&app, beat).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_400_refused_upstreams_by_default() {
    let (app, state) = app_with(Config {
        allow_private_upstreams: false,
        ..config()
    });
    for url in [
        "http://127.0.0.1:9",
        "https://10.0.0.7",
        "https://169.254.169.254",
        "https://localhost",
    ] {
        let body = serde_json::to_string(&record("w1", "ocr", url)).unwrap();
        let (status, err) = error_of(&app, register_req(Some(TOKEN), body)).await;
        assert_eq!(
            (status, err.code.as_str()),
            (StatusCode::BAD_REQUEST, "upstream_refused"),
            "{url}"
        );
    }
    let body = serde_json::to_string(&record("w1", "ocr", "https://w1.example.com")).unwrap();
    assert_eq!(
        call(&app, register_req(Some(TOKEN), body)).await.0,
        StatusCode::OK
    );
    // A DHT record with a private URL never enters the view either.
    let private = record("w2", "ocr", "https://192.168.1.5");
    assert!(support::upsert(&state, private, Source::Dht).is_err());
    assert_eq!(state.directory.len(), 1);
}

#[tokio::test]
async fn status_404_unknown_service_worker_and_route() {
    let (app, state) = app_with(config());
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    let (status, err) = error_of(&app, get("/api/service/embed/x")).await;
    assert_eq!(
        (status, err.code.as_str(), err.service.as_deref()),
        (StatusCode::NOT_FOUND, "unknown_service", Some("embed"))
    );
    let (status, err) = error_of(&app, get("/api/route/embed")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_service")
    );
    let (status, err) = error_of(&app, get("/api/workers/nobody")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::NOT_FOUND, "unknown_worker")
    );
    let (status, err) = error_of(&app, get("/no/such/thing")).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
}

#[tokio::test]
async fn status_413_body_limits() {
    let (app, state) = app_with(Config {
        max_body_bytes: 1024,
        ..config()
    });
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    let req = Request::post("/api/service/ocr/x")
        .header(header::CONTENT_LENGTH, "4096")
        .body(Body::from(vec![0u8; 4096]))
        .unwrap();
    let (status, err) = error_of(&app, req).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    let (status, _) = error_of(&app, register_req(Some(TOKEN), big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn status_429_bootstrap_rate_limit_with_retry_after() {
    let (app, _) = app_with(Config {
        bootstrap_rate_per_min: 2,
        seeds: vec![
            "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .into(),
        ],
        ..config()
    });
    for _ in 0..2 {
        let (status, headers, body) = call(&app, get("/api/dht/bootstrap")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=3600");
        let b: BootstrapResponse = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (
                b.count,
                b.seeds[0].peer_id.as_str(),
                b.seeds[0].role.as_str()
            ),
            (
                1,
                "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
                "seed"
            )
        );
    }
    let resp = app
        .clone()
        .oneshot(get("/api/dht/bootstrap"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn status_502_when_the_only_worker_is_unreachable() {
    let (app, state) = app_with(config());
    add_worker(
        &state,
        "w1",
        "ocr",
        &format!("http://{}", dead_addr()),
        WorkerState::Online,
    );
    let (status, err) = error_of(&app, get("/api/service/ocr/x")).await;
    assert_eq!(
        (status, err.code.as_str(), err.fault.as_str()),
        (StatusCode::BAD_GATEWAY, "worker_failed", "worker")
    );
    assert_eq!(err.worker.as_deref(), Some("w1"));
    assert_eq!(
        state
            .directory
            .view("w1", Instant::now())
            .unwrap()
            .in_flight,
        0
    );
}

#[tokio::test]
async fn status_503_no_eligible_and_route_lookup() {
    let (app, state) = app_with(config());
    // An empty view (a gateway that just started blind) is not ready: 503, not a 404 for a
    // service it simply has not heard of yet.
    let (status, err) = error_of(&app, get("/api/service/ocr/x")).await;
    assert_eq!(
        (status, err.code.as_str(), err.fault.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "gateway")
    );
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    let req = Request::get("/api/route/ocr")
        .header("x-gpumesh-gpu", "T4")
        .body(Body::empty())
        .unwrap();
    let (status, err) = error_of(&app, req).await;
    assert_eq!(
        (status, err.code.as_str(), err.fault.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no_eligible_worker",
            "gateway"
        )
    );
    assert!(err.reason.unwrap().contains("T4"));
    let req = Request::get("/api/route/ocr")
        .header("x-gpumesh-min-vram-gib", "100")
        .body(Body::empty())
        .unwrap();
    assert_eq!(error_of(&app, req).await.0, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _, body) = call(&app, get("/api/route/ocr")).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (
            v["worker_id"].as_str(),
            v["url"].as_str(),
            v["source"].as_str()
        ),
        (Some("w1"), Some("http://127.0.0.1:9"), Some("dht"))
    );
    assert_eq!(
        state
            .directory
            .view("w1", Instant::now())
            .unwrap()
            .in_flight,
        0
    );
}

#[tokio::test]
async fn openapi_lists_every_route_and_topology_has_workers() {
    let (app, state) = app_with(config());
    add_worker(
        &state,
        "w1",
        "ocr",
        "http://127.0.0.1:9",
        WorkerState::Online,
    );
    let (status, _, body) = call(&app, get("/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    for path in [
        "/api/service/{service}/{path}",
        "/api/route/{service}",
        "/api/dht/bootstrap",
        "/api/dht/topology",
        "/api/workers",
        "/api/workers/register",
        "/api/workers/{id}",
        "/api/workers/{id}/heartbeat",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }
    let (_, _, body) = call(&app, get("/api/dht/topology")).await;
    let topo: Value = serde_json::from_slice(&body).unwrap();
    let roles: Vec<&str> = topo["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["gateway", "worker"]);
}
