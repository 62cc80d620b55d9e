//! A stand-in for the gateway's bootstrap and registry endpoints (same JSON shapes as
//! `gpumesh-gateway`'s `api::types`), recording every call.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use gpumesh_dht::record::WorkerRecord;
use gpumesh_probe::bootstrap::{BootstrapResponse, Seed};
use gpumesh_probe::coordinator::{HeartbeatRequest, RegisterResponse};

/// One call the fake gateway received.
#[derive(Debug, Clone)]
pub enum Call {
    /// `GET /api/dht/bootstrap`.
    Bootstrap,
    /// `POST /api/workers/register`.
    Register(Box<WorkerRecord>, Instant),
    /// `POST /api/workers/{id}/heartbeat`.
    Heartbeat(String, HeartbeatRequest),
    /// `DELETE /api/workers/{id}`.
    Deregister(String, Instant),
}

/// The fake gateway.
#[derive(Clone, Debug)]
pub struct FakeGateway {
    /// Base URL.
    pub url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

#[derive(Clone)]
struct St {
    calls: Arc<Mutex<Vec<Call>>>,
    seeds: Arc<Mutex<Vec<Seed>>>,
    token: String,
}

fn authorized(st: &St, h: &HeaderMap) -> bool {
    h.get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", st.token))
}

impl FakeGateway {
    /// Starts on 127.0.0.1:0 with a registry token; bootstrap lists one seed nobody listens
    /// on (joining it fails).
    pub async fn start(token: &str) -> Self {
        let seeds = vec![Seed {
            peer_id: "12D3KooWFakeSeed".into(),
            multiaddrs: vec!["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWFakeSeed".into()],
            role: "gateway".into(),
        }];
        Self::start_with_seeds(token, seeds).await
    }

    /// Starts with these bootstrap seeds.
    pub async fn start_with_seeds(token: &str, seeds: Vec<Seed>) -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let st = St {
            calls: calls.clone(),
            seeds: Arc::new(Mutex::new(seeds)),
            token: token.to_owned(),
        };
        let app = Router::new()
            .route("/api/dht/bootstrap", get(bootstrap))
            .route("/api/workers/register", post(register))
            .route("/api/workers/{id}/heartbeat", post(heartbeat))
            .route("/api/workers/{id}", delete(deregister))
            .with_state(st);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            calls,
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Bootstrap calls so far.
    pub fn bootstrap_calls(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| matches!(c, Call::Bootstrap))
            .count()
    }

    /// Registered records so far.
    pub fn registrations(&self) -> Vec<WorkerRecord> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Register(r, _) => Some(*r),
                _ => None,
            })
            .collect()
    }
}

async fn bootstrap(State(st): State<St>) -> Json<BootstrapResponse> {
    st.calls.lock().unwrap().push(Call::Bootstrap);
    let seeds = st.seeds.lock().unwrap().clone();
    Json(BootstrapResponse {
        count: seeds.len(),
        seeds,
        ttl_secs: 3600,
    })
}

async fn register(
    State(st): State<St>,
    h: HeaderMap,
    Json(rec): Json<WorkerRecord>,
) -> Result<Json<RegisterResponse>, StatusCode> {
    if !authorized(&st, &h) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let id = rec.peer_id.clone();
    st.calls
        .lock()
        .unwrap()
        .push(Call::Register(Box::new(rec), Instant::now()));
    Ok(Json(RegisterResponse {
        worker_id: id,
        ttl_secs: 3,
        heartbeat_interval_secs: 1,
        expires_at_ms: 0,
    }))
}

async fn heartbeat(
    State(st): State<St>,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(beat): Json<HeartbeatRequest>,
) -> StatusCode {
    if !authorized(&st, &h) {
        return StatusCode::UNAUTHORIZED;
    }
    st.calls.lock().unwrap().push(Call::Heartbeat(id, beat));
    StatusCode::OK
}

async fn deregister(State(st): State<St>, h: HeaderMap, Path(id): Path<String>) -> StatusCode {
    if !authorized(&st, &h) {
        return StatusCode::UNAUTHORIZED;
    }
    st.calls
        .lock()
        .unwrap()
        .push(Call::Deregister(id, Instant::now()));
    StatusCode::NO_CONTENT
}
