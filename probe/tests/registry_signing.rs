//! The registry client's side of admission (issue #7): with a signing key, a registration
//! carries `signed_record`, the worker's own signed envelope with its admission token, which a
//! gateway can verify like a DHT record; a 403 `not_admitted` answer becomes
//! [`CoordinatorError::NotAdmitted`] (not a token error). A real HTTP server on loopback stands
//! in for the gateway and keeps the bodies it receives.

mod support;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use gpumesh_dht::admission::hex_decode;
use gpumesh_dht::record::{LoadInfo, WorkerRecord, WorkerState};
use gpumesh_dht::rules::RecordLimits;
use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::{AdmissionToken, SignedRecord};
use gpumesh_probe::agent::{key_path, worker_id};
use gpumesh_probe::coordinator::{Coordinator, CoordinatorError};
use gpumesh_probe::tunnel::Secret;
use libp2p::identity::Keypair;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A registry stand-in answering `status` with `answer`, keeping every register body.
async fn registry(
    status: StatusCode,
    answer: Value,
) -> (String, Arc<Mutex<Vec<Value>>>, CancellationToken) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&bodies);
    let app = Router::new().route(
        "/api/workers/register",
        post(move |axum::Json(body): axum::Json<Value>| {
            let kept = Arc::clone(&kept);
            let answer = answer.clone();
            async move {
                kept.lock().unwrap().push(body);
                (status, axum::Json(answer))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(s.cancelled_owned())
            .await;
    });
    (url, bodies, stop)
}

fn record(id: &str) -> WorkerRecord {
    let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
    let now = unix_ms();
    r.peer_id = id.to_owned();
    r.seq = 1;
    r.issued_at_ms = now;
    r.expires_at_ms = now + 60_000;
    r.state = WorkerState::Online;
    r.load = LoadInfo {
        max_concurrency: 2,
        ..LoadInfo::default()
    };
    r
}

fn ok_answer(id: &str) -> Value {
    serde_json::json!({"worker_id": id, "ttl_secs": 90, "heartbeat_interval_secs": 30,
        "expires_at_ms": unix_ms() + 90_000})
}

#[tokio::test]
async fn a_signed_registration_carries_a_verifiable_envelope_with_the_token() {
    let dir = support::temp_dir("registry-signing");
    let id = worker_id(&dir).unwrap();
    let operator = Keypair::generate_ed25519();
    let now = unix_ms();
    let token =
        AdmissionToken::issue(&operator, id.parse().unwrap(), now, now + 3_600_000).unwrap();
    let (url, bodies, _stop) = registry(StatusCode::OK, ok_answer(&id)).await;

    let signing = Coordinator::new(&url, Secret::new("t"))
        .unwrap()
        .with_signing_key(&key_path(&dir), Some(token.clone()))
        .unwrap();
    let rec = record(&id);
    signing.register(&rec).await.unwrap();
    let plain = Coordinator::new(&url, Secret::new("t")).unwrap();
    plain.register(&rec).await.unwrap();

    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let hex = bodies[0]["signed_record"]
        .as_str()
        .expect("signed_record sent");
    let signed = SignedRecord::verify(
        &hex_decode(hex).unwrap(),
        None,
        &RecordLimits::default(),
        unix_ms(),
    )
    .expect("a gateway can verify it like a DHT record");
    assert_eq!(signed.peer_id.to_base58(), id);
    assert_eq!(signed.record, rec);
    assert_eq!(signed.admission.as_ref(), Some(&token));
    // The plain fields are still there for gateways that do not look at the envelope.
    assert_eq!(bodies[0]["peer_id"], Value::String(id.clone()));
    assert!(
        bodies[1].get("signed_record").is_none(),
        "no key, no envelope"
    );
    assert_eq!(bodies[1]["peer_id"], Value::String(id));
}

#[tokio::test]
async fn not_admitted_is_told_apart_from_a_wrong_token() {
    let dir = support::temp_dir("registry-not-admitted");
    let id = worker_id(&dir).unwrap();
    let refusal = serde_json::json!({"code": "not_admitted", "fault": "client",
        "message": "worker not admitted: no admission token"});
    let (url, _, _stop) = registry(StatusCode::FORBIDDEN, refusal).await;
    let client = Coordinator::new(&url, Secret::new("t")).unwrap();
    match client.register(&record(&id)).await {
        Err(e @ CoordinatorError::NotAdmitted(_)) => {
            let text = e.to_string();
            assert!(text.contains("no admission token"), "{text}");
            assert!(text.contains("--admission FILE"), "{text}");
        }
        other => panic!("expected NotAdmitted, got {other:?}"),
    }

    let wrong = serde_json::json!({"code": "forbidden", "fault": "client",
        "message": "the registry token is wrong"});
    let (url, _, _stop2) = registry(StatusCode::FORBIDDEN, wrong).await;
    let client = Coordinator::new(&url, Secret::new("t")).unwrap();
    assert!(matches!(
        client.register(&record(&id)).await,
        Err(CoordinatorError::Unauthorized(403))
    ));
}

/// 409 `stale_record` (the gateway holds this record or a newer one, from the DHT) is its own
/// answer, not a failed request; another 409 is still a failure.
#[tokio::test]
async fn stale_record_means_the_gateway_already_holds_the_record() {
    let dir = support::temp_dir("registry-stale");
    let id = worker_id(&dir).unwrap();
    let stale = serde_json::json!({"code": "stale_record", "fault": "client",
        "message": "stale record: seq 4 is older than the held 5"});
    let (url, _, _stop) = registry(StatusCode::CONFLICT, stale).await;
    let client = Coordinator::new(&url, Secret::new("t")).unwrap();
    match client.register(&record(&id)).await {
        Err(CoordinatorError::AlreadyHeld(why)) => assert!(why.contains("seq 4"), "{why}"),
        other => panic!("expected AlreadyHeld, got {other:?}"),
    }

    let other = serde_json::json!({"code": "conflict", "fault": "client", "message": "no"});
    let (url, _, _stop2) = registry(StatusCode::CONFLICT, other).await;
    let client = Coordinator::new(&url, Secret::new("t")).unwrap();
    assert!(matches!(
        client.register(&record(&id)).await,
        Err(CoordinatorError::Request(_))
    ));
}
