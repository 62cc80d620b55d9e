//! The HTTP API: the router, its shared state, and one module per endpoint group.
//!
//! | module | endpoints |
//! |---|---|
//! | [`service`] | `ANY /api/service/{service}/{*path}`, `GET /api/route/{service}` |
//! | [`bootstrap`] | `GET /api/dht/bootstrap` |
//! | [`registry`] | `POST /api/workers/register`, `POST /api/workers/{id}/heartbeat`, `DELETE /api/workers/{id}` |
//! | [`workers`] | `GET /api/workers`, `GET /api/workers/{id}`, `GET /api/dht/topology` |
//! | [`health`] | `GET /healthz`, `GET /readyz`, `GET /metrics` |
//! | [`openapi`] | `GET /openapi.json` |

pub mod bootstrap;
pub mod health;
pub mod openapi;
pub mod registry;
pub mod service;
pub mod types;
pub mod workers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::dht::DhtStatus;
use crate::directory::Directory;
use crate::error::GatewayError;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;

/// Largest JSON body accepted by the registry endpoints.
pub const REGISTRY_BODY_LIMIT: usize = 64 * 1024;

/// What every handler shares: one `Arc`, so the per-request clone axum makes is one
/// reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The configuration the gateway runs with.
    pub config: Arc<Config>,
    /// The worker view.
    pub directory: Arc<Directory>,
    /// The pooled forwarding client.
    pub forwarder: Forwarder,
    /// The gateway's metric families.
    pub metrics: Metrics,
    /// The registry `/metrics` encodes (gateway and libp2p metrics together).
    pub registry: Arc<Registry>,
    /// Rate limit of `GET /api/dht/bootstrap`.
    pub bootstrap_limiter: Arc<RateLimiter>,
    /// Rate limit of the registry endpoints.
    pub registry_limiter: Arc<RateLimiter>,
    /// When each registry worker's admission token ends (used only when admission is
    /// enforced): heartbeats cannot keep a worker past its token.
    pub registry_admissions: registry::Admissions,
    /// What the DHT node reports (peer id, addresses, connections, warmth).
    pub dht: Arc<DhtStatus>,
}

/// The full router. Tests call it with `tower::ServiceExt::oneshot`, no socket needed.
pub fn router(state: AppState) -> Router {
    let registry_routes = Router::new()
        .route("/api/workers/register", post(registry::register))
        .route("/api/workers/{id}/heartbeat", post(registry::heartbeat))
        .route(
            "/api/workers/{id}",
            get(workers::get_worker).delete(registry::deregister),
        )
        .layer(DefaultBodyLimit::max(REGISTRY_BODY_LIMIT));
    Router::new()
        .route("/api/service/{service}", any(service::forward))
        .route("/api/service/{service}/", any(service::forward))
        .route("/api/service/{service}/{*path}", any(service::forward))
        .route("/api/route/{service}", get(service::route))
        .route("/api/dht/bootstrap", get(bootstrap::bootstrap))
        .route("/api/dht/topology", get(workers::topology))
        .route("/api/workers", get(workers::list))
        .merge(registry_routes)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi))
        .route(
            "/",
            get(|| async { axum::response::Html(include_str!("../../assets/index.html")) }),
        )
        .fallback(|| async { GatewayError::NotFound })
        // axum still adds the `Allow` header; the body becomes the documented JSON error.
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), count_http))
        .with_state(state)
}

/// Counts every answer by route template and status (never the raw path).
async fn count_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>`: cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.count_http(route, response.status().as_u16());
    response
}

/// The peer address of the connection, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// One path parameter (`{id}`, `{service}`) as a string. axum's `Path` answers a parameter
/// that is not UTF-8 after percent-decoding (`%FF`) with a plain-text 400; this extractor turns
/// that into the documented JSON error.
#[derive(Debug, Clone)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(GatewayError::BadRequest(format!(
                "the path is not valid: {}",
                rejection.body_text().chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// Applies a rate limiter to a client.
///
/// # Errors
/// 429 [`GatewayError::RateLimited`].
pub fn rate_limit(limiter: &RateLimiter, client: ClientAddr) -> Result<(), GatewayError> {
    limiter
        .check(client.0.map(|a| a.ip()), std::time::Instant::now())
        .map_err(|wait| GatewayError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        })
}

/// JSON with a 200 status.
pub fn json<T: serde::Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}
