//! Property-based fuzzing of the HTTP API through the real router: arbitrary methods, paths
//! (percent-escapes, dot segments, bad UTF-8), headers and bodies (arbitrary bytes and
//! field-level mutations of valid register / heartbeat JSON).
//!
//! What must hold for every request: no 500 and no 5xx other than the documented 502 / 503 /
//! 504; every error is the documented JSON shape with a `fault` that matches its status; the
//! registry never answers 2xx without the token; metric labels stay bounded whatever the path.
//! The schema-driven counterpart against a running gateway is `hardening/api-fuzz.sh`.

mod support;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use gpumesh_dht::record::WorkerRecord;
use gpumesh_gateway::Source;
use gpumesh_gateway::api::types::ErrorBody;
use gpumesh_gateway::api::{AppState, router};
use gpumesh_gateway::server::build_state;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::Value;
use support::{TOKEN, config, dead_addr, record};
use tower::ServiceExt;

/// Cases per property (`PROPTEST_CASES` raises it).
fn cases(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A router with one registry worker (`w1`, service `ocr`) whose URL refuses connections, so
/// forwarding reaches the worker-failure path without waiting on a timeout.
fn app() -> (Router, AppState) {
    let state = build_state(config(), Registry::default()).expect("state");
    let url = format!("http://{}", dead_addr());
    support::upsert(&state, record("w1", "ocr", &url), Source::Registry).expect("accepted");
    (router(state.clone()), state)
}

/// Path segments: plain, percent-encoded (valid and invalid UTF-8), dots, empty, long.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._-]{1,12}",
        2 => "[A-Za-z0-9._~%+!$&'()*,;=:@-]{0,24}",
        1 => Just("ocr".to_owned()),
        1 => Just("w1".to_owned()),
        1 => prop::sample::select(vec![
            "%FF", "%00", "%2e%2e", "..", ".", "%2F", "%C3%A9", "%", "%zz", "", "a%20b",
        ]).prop_map(str::to_owned),
        1 => Just("x".repeat(300)),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let s = segment;
    prop_oneof![
        (s(), prop::collection::vec(s(), 0..4))
            .prop_map(|(svc, rest)| format!("/api/service/{svc}/{}", rest.join("/"))),
        s().prop_map(|svc| format!("/api/service/{svc}")),
        s().prop_map(|svc| format!("/api/route/{svc}")),
        s().prop_map(|id| format!("/api/workers/{id}")),
        s().prop_map(|id| format!("/api/workers/{id}/heartbeat")),
        Just("/api/workers/register".to_owned()),
        Just("/api/workers".to_owned()),
        Just("/api/dht/bootstrap".to_owned()),
        Just("/api/dht/topology".to_owned()),
        Just("/healthz".to_owned()),
        Just("/readyz".to_owned()),
        Just("/metrics".to_owned()),
        Just("/openapi.json".to_owned()),
        prop::collection::vec(s(), 0..5).prop_map(|v| format!("/{}", v.join("/"))),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
    ])
}

/// Visible-ASCII header values (what an HTTP client can send), sometimes meaningful.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        prop::sample::select(vec![
            "1",
            "-1",
            "NaN",
            "inf",
            "1e308",
            "0.5",
            "80",
            "h100",
            ",,,",
            "fp8,BAD TAG"
        ])
        .prop_map(str::to_owned),
    ]
}

fn auth() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(format!("Bearer {TOKEN}"))),
        Just(Some("Bearer wrong".to_owned())),
        "[ -~]{0,30}".prop_map(Some),
    ]
}

/// Arbitrary JSON values, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(Value::from(1e39)),
        Just(Value::from("ftp://127.0.0.1/x")),
        Just(Value::from("https://169.254.169.254/latest")),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const RECORD_FIELDS: &[&str] = &[
    "peer_id",
    "seq",
    "issued_at_ms",
    "expires_at_ms",
    "state",
    "services",
    "capabilities",
    "tunnel_url",
    "gpus",
    "host",
    "load",
    "agent_version",
    "started_at_ms",
];

fn valid_record() -> WorkerRecord {
    record("fz1", "ocr", "http://127.0.0.1:9")
}

/// Bodies: empty, arbitrary bytes, or a valid register / heartbeat JSON with one field
/// replaced or removed.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..256),
        (0..RECORD_FIELDS.len(), prop::option::of(json_value())).prop_map(|(i, new)| {
            let mut v = serde_json::to_value(valid_record()).expect("json");
            let obj = v.as_object_mut().expect("object");
            match new {
                Some(n) => obj.insert(RECORD_FIELDS[i].to_owned(), n),
                None => obj.remove(RECORD_FIELDS[i]),
            };
            serde_json::to_vec(&v).expect("json")
        }),
        (
            prop::sample::select(vec!["state", "load", "gpus", "other"]),
            json_value()
        )
            .prop_map(|(k, v)| serde_json::to_vec(&serde_json::json!({ k: v })).expect("json")),
        Just(serde_json::to_vec(&valid_record()).expect("json")),
    ]
}

#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    query: Option<String>,
    auth: Option<String>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn call() -> impl Strategy<Value = Call> {
    let named = prop::sample::select(vec![
        "x-gpumesh-min-vram-gib",
        "x-gpumesh-gpu",
        "x-gpumesh-capability",
        "content-type",
        "accept",
    ]);
    (
        method(),
        path(),
        prop::option::of("[a-z0-9=&%]{0,20}"),
        auth(),
        prop::collection::vec((named, header_value()), 0..3),
        body(),
    )
        .prop_map(|(method, path, query, auth, headers, body)| Call {
            method,
            path,
            query,
            auth,
            headers,
            body,
        })
}

/// Sends `c`; `None` when it is not a request an HTTP client could send (an invalid URI).
async fn send(app: &Router, c: &Call) -> Option<(StatusCode, axum::http::HeaderMap, Vec<u8>)> {
    let uri = match &c.query {
        Some(q) => format!("{}?{q}", c.path),
        None => c.path.clone(),
    };
    let mut b = Request::builder().method(c.method.clone()).uri(uri);
    if let Some(a) = &c.auth {
        b = b.header(header::AUTHORIZATION, a.as_str());
    }
    for (name, value) in &c.headers {
        b = b.header(*name, value.as_str());
    }
    let req = b.body(Body::from(c.body.clone())).ok()?;
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    Some((status, headers, bytes.to_vec()))
}

/// The contract every answer keeps.
fn check(c: &Call, status: StatusCode, headers: &axum::http::HeaderMap, body: &[u8]) {
    let what = format!("{} {} -> {status}", c.method, c.path);
    assert!(
        !status.is_server_error() || matches!(status.as_u16(), 502..=504),
        "{what}: undocumented server error"
    );
    let registry = c.path == "/api/workers/register"
        || (c.path.starts_with("/api/workers/")
            && (c.path.ends_with("/heartbeat") || c.method == Method::DELETE));
    if status.is_success() && registry && c.method != Method::GET {
        assert_eq!(
            c.auth.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{what}"
        );
    }
    if status.is_client_error() || status.is_server_error() {
        if c.method == Method::HEAD {
            return; // No body on HEAD.
        }
        assert_eq!(
            headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{what}: error without a JSON content type"
        );
        let err: ErrorBody = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "{what}: error body is not the documented shape ({e}): {}",
                String::from_utf8_lossy(body)
            )
        });
        assert!(!err.code.is_empty() && !err.message.is_empty(), "{what}");
        let expected_fault = match status.as_u16() {
            502 | 504 => "worker",
            503 => "gateway",
            _ => "client",
        };
        assert_eq!(err.fault, expected_fault, "{what}: {}", err.code);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Arbitrary requests: documented statuses and error bodies only.
    #[test]
    fn arbitrary_requests(calls in prop::collection::vec(call(), 1..4)) {
        let rt = runtime();
        rt.block_on(async {
            let (app, _) = app();
            for c in &calls {
                if let Some((status, headers, body)) = send(&app, c).await {
                    check(c, status, &headers, &body);
                }
            }
        });
    }
}

/// After many requests to random paths and services, the request metrics hold a bounded set
/// of label values (route templates and `unknown`, never raw paths or service names).
#[test]
fn metric_labels_stay_bounded() {
    let rt = runtime();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    rt.block_on(async {
        let (app, _) = app();
        for _ in 0..300 {
            let c = call().new_tree(&mut runner).expect("value").current();
            let _ = send(&app, &c).await;
        }
        let metrics = Call {
            method: Method::GET,
            path: "/metrics".into(),
            query: None,
            auth: None,
            headers: Vec::new(),
            body: Vec::new(),
        };
        let (_, _, text) = send(&app, &metrics).await.expect("valid");
        let text = String::from_utf8(text).expect("utf-8");
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        assert!(series < 400, "{series} series after 300 random requests");
        for label in ["service=\"", "route=\""] {
            let values: std::collections::BTreeSet<&str> = text
                .split(label)
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .collect();
            assert!(
                values.len() <= 20,
                "{label} has {} values: {values:?}",
                values.len()
            );
        }
    });
}

fn plain(method: Method, path: &str, auth: bool, body: Vec<u8>) -> Call {
    Call {
        method,
        path: path.to_owned(),
        query: None,
        auth: auth.then(|| format!("Bearer {TOKEN}")),
        headers: Vec::new(),
        body,
    }
}

/// Inputs the fuzzers found answered outside the contract (plain-text 400 and 405 bodies, a
/// stale `seq` reported as a client's bad request), pinned.
#[test]
fn regressions_found_by_fuzzing() {
    let rt = runtime();
    rt.block_on(async {
        let (app, state) = app();
        // A path parameter that is not UTF-8 once decoded: axum's plain-text rejection before.
        for path in [
            "/api/workers/%FF",
            "/api/route/%C3%28",
            "/api/workers/%FF/heartbeat",
        ] {
            let c = plain(Method::POST, path, true, Vec::new());
            let c = if path.ends_with("heartbeat") {
                c
            } else {
                Call {
                    method: Method::GET,
                    ..c
                }
            };
            let (status, headers, body) = send(&app, &c).await.expect("valid URI");
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
            check(&c, status, &headers, &body);
        }
        // A known path with the wrong method: 405 with `Allow` and the JSON body.
        let c = plain(Method::POST, "/api/workers", false, Vec::new());
        let (status, headers, body) = send(&app, &c).await.expect("valid URI");
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(headers.contains_key(header::ALLOW));
        check(&c, status, &headers, &body);
        // Registering an older seq than the DHT's record of the same worker: 409, not 400.
        let mut r = valid_record();
        r.seq = 5;
        support::upsert(&state, r.clone(), Source::Dht).expect("accepted");
        r.seq = 4;
        let older = plain(
            Method::POST,
            "/api/workers/register",
            true,
            serde_json::to_vec(&r).expect("json"),
        );
        let (status, headers, body) = send(&app, &older).await.expect("valid URI");
        assert_eq!(status, StatusCode::CONFLICT);
        check(&older, status, &headers, &body);
        let err: ErrorBody = serde_json::from_slice(&body).expect("error body");
        assert_eq!(err.code, "stale_record");
    });
}
