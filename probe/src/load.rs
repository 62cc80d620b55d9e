//! The local load endpoint: the service posts its in-flight and queue depth here.
//!
//! Why a report endpoint rather than proxying the service (`--upstream` in the data path): the
//! agent stays off the request path, so it adds no hop, never buffers or breaks streamed
//! bodies, keeps in-flight work alive if it restarts, and meets its RSS/CPU budget at any
//! request rate; and only the service knows how many requests are running versus waiting for a
//! slot. The cost is one small POST from the service on each change. A report older than the
//! staleness bound counts as "service down".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use gpumesh_dht::record::LoadInfo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::error::AgentError;

/// The last load report and when it arrived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    /// The figures.
    pub load: LoadInfo,
    /// Arrival time.
    pub at: Instant,
}

/// A bound load endpoint.
#[derive(Debug)]
pub struct LoadEndpoint {
    addr: SocketAddr,
    rx: watch::Receiver<Option<LoadReport>>,
}

impl LoadEndpoint {
    /// Binds `listen` and serves `POST /load` (a JSON [`LoadInfo`]) and `GET /load` until
    /// `shutdown`.
    pub async fn bind(listen: SocketAddr, shutdown: CancellationToken) -> Result<Self, AgentError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| AgentError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(None);
        let app = Router::new()
            .route("/load", post(put_load).get(get_load))
            .with_state(Arc::new(tx));
        tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = r {
                warn!(error = %e, "load endpoint stopped");
            }
        });
        Ok(Self { addr, rx })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL a service posts to.
    pub fn report_url(&self) -> String {
        format!("http://{}/load", self.addr)
    }

    /// A receiver that changes on every report.
    pub fn subscribe(&self) -> watch::Receiver<Option<LoadReport>> {
        self.rx.clone()
    }
}

/// The latest report if it is younger than `stale_after`.
pub fn fresh(report: Option<LoadReport>, stale_after: Duration) -> Option<LoadInfo> {
    report
        .filter(|r| r.at.elapsed() <= stale_after)
        .map(|r| r.load)
}

async fn put_load(
    State(tx): State<Arc<watch::Sender<Option<LoadReport>>>>,
    Json(load): Json<LoadInfo>,
) -> StatusCode {
    tx.send_replace(Some(LoadReport {
        load,
        at: Instant::now(),
    }));
    StatusCode::NO_CONTENT
}

async fn get_load(
    State(tx): State<Arc<watch::Sender<Option<LoadReport>>>>,
) -> Json<Option<LoadInfo>> {
    Json(tx.borrow().map(|r| r.load))
}
