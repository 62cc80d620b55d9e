//! The mock service's HTTP server, slots, queue, faults and load reporter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gpumesh_dht::record::LoadInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Fault, MockServiceConfig, MockState, liar};
use crate::error::MockError;

/// State shared by handlers, the reporter and the handle.
#[derive(Debug)]
struct Shared {
    cfg: MockServiceConfig,
    slots: Semaphore,
    in_flight: AtomicU32,
    queued: AtomicU32,
    served: AtomicU64,
    received: AtomicU64,
    failed: AtomicU64,
    accepting: AtomicBool,
    fault: Mutex<Fault>,
    changed: Notify,
    /// Cancelled when the server crashes or stops; replaced on restart.
    life: Mutex<CancellationToken>,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(PoisonError::into_inner)
    }
    fn life(&self) -> CancellationToken {
        self.life
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    /// The true load.
    fn load(&self) -> LoadInfo {
        LoadInfo {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            queue_depth: self.queued.load(Ordering::SeqCst),
            max_concurrency: self.cfg.slots,
        }
    }
    /// The load as the service tells it (`/load`, reports): the claimed slots.
    fn reported(&self) -> LoadInfo {
        LoadInfo {
            max_concurrency: self.cfg.claim_slots.unwrap_or(self.cfg.slots),
            ..self.load()
        }
    }
    fn state(&self) -> MockState {
        MockState {
            load: self.load(),
            fault: self.fault(),
            served: self.served.load(Ordering::SeqCst),
            received: self.received.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            accepting: self.accepting.load(Ordering::SeqCst),
        }
    }
}

/// Decrements a counter and announces the change when dropped (also when the client goes
/// away mid-request and the handler future is dropped).
struct Counted<'a>(&'a AtomicU32, &'a Notify);

impl<'a> Counted<'a> {
    fn new(c: &'a AtomicU32, n: &'a Notify) -> Self {
        c.fetch_add(1, Ordering::SeqCst);
        n.notify_one();
        Self(c, n)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.notify_one();
    }
}

/// A running mock service. Dropping it stops the server.
#[derive(Debug)]
pub struct MockService {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl MockService {
    /// Binds and starts the service.
    pub async fn spawn(cfg: MockServiceConfig) -> Result<Self, MockError> {
        cfg.validate().map_err(MockError::Config)?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| MockError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            slots: Semaphore::new(cfg.slots as usize),
            cfg,
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            served: AtomicU64::new(0),
            received: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            fault: Mutex::new(Fault::None),
            changed: Notify::new(),
            life: Mutex::new(CancellationToken::new()),
        });
        let stop = CancellationToken::new();
        start(shared.clone(), listener, stop.clone());
        info!(%addr, slots = shared.cfg.slots, speed = shared.cfg.speed, "mock GPU service listening");
        Ok(Self { shared, addr, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current load, with the real slots (what `/load` reports may claim others).
    pub fn load(&self) -> LoadInfo {
        self.shared.load()
    }

    /// Counters and mode.
    pub fn state(&self) -> MockState {
        self.shared.state()
    }

    /// Switches the failure mode. Leaving `crash` restarts the server on the same address.
    pub async fn set_fault(&self, fault: Fault) -> Result<(), MockError> {
        let was = std::mem::replace(
            &mut *self
                .shared
                .fault
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            fault,
        );
        if fault == Fault::Crash {
            self.shared.life().cancel();
        } else if was == Fault::Crash {
            let listener =
                TcpListener::bind(self.addr)
                    .await
                    .map_err(|source| MockError::Bind {
                        addr: self.addr,
                        source,
                    })?;
            start(self.shared.clone(), listener, self.stop.clone());
        }
        self.shared.changed.notify_one();
        Ok(())
    }

    /// Stops taking new work (drain): new requests get 503, in-flight ones finish.
    pub fn stop_accepting(&self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
    }
}

impl Drop for MockService {
    fn drop(&mut self) {
        self.stop.cancel();
        self.shared.life().cancel();
    }
}

/// Starts a server generation: a fresh life token, the HTTP server and the reporter.
fn start(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    let life = stop.child_token();
    *shared.life.lock().unwrap_or_else(PoisonError::into_inner) = life.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/load", get(load))
        .route("/admin/state", get(state))
        .route("/admin/fault", post(set_fault))
        .fallback(work)
        .with_state(shared.clone());
    tokio::spawn(serve(listener, app, life.clone()));
    if shared.cfg.report_url.is_some() {
        tokio::spawn(report(shared, life));
    }
}

/// Accepts connections until `life` ends, then drops every connection at once, answered or
/// not: a crashed (or stopped) machine sends nothing more, so callers see the connection
/// break rather than a polite 5xx.
async fn serve(listener: TcpListener, app: Router, life: CancellationToken) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            biased;
            () = life.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "mock service accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (builder, life) = (Arc::clone(&builder), life.clone());
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            // `biased`: once `life` ends, nothing more is written, not even a finished answer.
            tokio::select! {
                biased;
                () = life.cancelled() => {}
                r = conn => if let Err(e) = r {
                    debug!(error = %e, "mock service connection ended with an error");
                }
            }
        });
    }
}

async fn health(State(s): State<Arc<Shared>>) -> Response {
    match s.fault() {
        Fault::Error => (StatusCode::INTERNAL_SERVER_ERROR, "error mode").into_response(),
        _ => "ok".into_response(),
    }
}

async fn load(State(s): State<Arc<Shared>>) -> Json<LoadInfo> {
    Json(s.reported())
}

async fn state(State(s): State<Arc<Shared>>) -> Json<MockState> {
    Json(s.state())
}

async fn set_fault(State(s): State<Arc<Shared>>, Json(fault): Json<Fault>) -> Response {
    info!(?fault, "mock service fault mode");
    *s.fault.lock().unwrap_or_else(PoisonError::into_inner) = fault;
    s.changed.notify_one();
    if fault == Fault::Crash {
        // Answer first, then die, so the caller learns its command arrived.
        let life = s.life();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            life.cancel();
        });
    }
    Json(json!({ "fault": fault })).into_response()
}

fn fail(s: &Shared, status: StatusCode, msg: &str) -> Response {
    s.failed.fetch_add(1, Ordering::SeqCst);
    (status, Json(json!({ "error": msg }))).into_response()
}

async fn work(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    s.received.fetch_add(1, Ordering::SeqCst);
    let life = s.life();
    if !s.accepting.load(Ordering::SeqCst) {
        return fail(&s, StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match s.fault() {
        Fault::Error => return fail(&s, StatusCode::INTERNAL_SERVER_ERROR, "injected error"),
        Fault::BlackHole => return liar::black_hole(life).await,
        Fault::Garbage => {
            s.served.fetch_add(1, Ordering::SeqCst);
            return liar::garbage(&body);
        }
        Fault::Tarpit { byte_every_ms } => {
            s.served.fetch_add(1, Ordering::SeqCst);
            return liar::tarpit(&body, byte_every_ms);
        }
        Fault::None | Fault::Slow { .. } | Fault::Hang | Fault::Crash => {}
    }
    let arrived = Instant::now();
    let queued = Counted::new(&s.queued, &s.changed);
    if s.queued.load(Ordering::SeqCst) > s.cfg.max_queue + s.slots.available_permits() as u32 {
        drop(queued);
        return fail(&s, StatusCode::SERVICE_UNAVAILABLE, "queue full");
    }
    // tokio's Semaphore is fair: waiters get slots in arrival order (FIFO).
    let permit = tokio::select! {
        p = s.slots.acquire() => p,
        () = life.cancelled() => return fail(&s, StatusCode::BAD_GATEWAY, "crashed"),
    };
    let Ok(_permit) = permit else {
        return fail(&s, StatusCode::SERVICE_UNAVAILABLE, "closed");
    };
    drop(queued);
    let _running = Counted::new(&s.in_flight, &s.changed);
    let queued_ms = arrived.elapsed().as_millis() as u64;
    let fault = s.fault();
    let took = s.cfg.service_time(body.len(), fault);
    tokio::select! {
        () = async {
            if fault == Fault::Hang {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(took).await;
        } => {}
        () = life.cancelled() => return fail(&s, StatusCode::BAD_GATEWAY, "crashed"),
    }
    s.served.fetch_add(1, Ordering::SeqCst);
    Json(liar::honest(&body, took.as_millis() as u64, queued_ms)).into_response()
}

/// Posts the load to the agent on every change (coalesced over 50 ms) and at least every
/// `report_every`; stops with the server generation.
async fn report(s: Arc<Shared>, life: CancellationToken) {
    let Some(url) = s.cfg.report_url.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "mock service cannot build its report client");
            return;
        }
    };
    loop {
        let load = s.reported();
        match client.post(&url).json(&load).send().await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => debug!(status = %r.status(), "load report refused"),
            Err(e) => debug!(error = %e, "load report failed"),
        }
        tokio::select! {
            () = life.cancelled() => return,
            () = s.changed.notified() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            () = tokio::time::sleep(s.cfg.report_every) => {}
        }
    }
}
