//! The HTTP API: the router, its shared state, and one module per endpoint group.
//!
//! | module | endpoints |
//! |---|---|
//! | [`service`] | `ANY /api/service/{service}/{*path}`, `GET /api/route/{service}` |
//! | [`bootstrap`] | `GET /api/dht/bootstrap` |
//! | [`crate::sources::registry::http`] | `POST /api/workers/register`, `POST /api/workers/{id}/heartbeat`, `DELETE /api/workers/{id}` |
//! | [`workers`] | `GET /api/workers`, `GET /api/workers/{id}`, `GET /api/dht/topology` |
//! | [`health`] | `GET /healthz`, `GET /readyz`, `GET /metrics` |
//! | [`openapi`] | `GET /openapi.json` |

pub mod bootstrap;
pub mod health;
pub mod openapi;
pub mod service;
pub mod workers;

pub use crate::extract::{ClientAddr, PathParam, json, rate_limit};
/// The JSON shapes of the API (they live low in the crate: the directory builds them too).
pub use crate::types;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use prometheus_client::registry::Registry;

use crate::config::Config;
use crate::directory::Directory;
use crate::error::GatewayError;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::sources::dht::DhtStatus;
use crate::sources::registry::{self, REGISTRY_BODY_LIMIT, RegistrySource};
use crate::verify::Verifier;

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
    /// The answer-check runner (canaries, cross-checks); `None` without a check plan.
    pub verifier: Option<Arc<Verifier>>,
    /// The gateway's metric families.
    pub metrics: Metrics,
    /// The Prometheus registry `/metrics` encodes (gateway and DHT metrics together).
    pub metrics_registry: Arc<Registry>,
    /// Rate limit of `GET /api/dht/bootstrap`.
    pub bootstrap_limiter: Arc<RateLimiter>,
    /// The HTTP fallback registry (a worker source).
    pub registry: Arc<RegistrySource>,
    /// What the DHT node reports (peer id, addresses, connections, warmth).
    pub dht: Arc<DhtStatus>,
}

impl FromRef<AppState> for Arc<RegistrySource> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.registry)
    }
}

/// The full router. Tests call it with `tower::ServiceExt::oneshot`, no socket needed.
pub fn router(state: AppState) -> Router {
    let registry_routes = Router::new()
        .route("/api/workers/register", post(registry::http::register))
        .route(
            "/api/workers/{id}/heartbeat",
            post(registry::http::heartbeat),
        )
        .route(
            "/api/workers/{id}",
            get(workers::get_worker).delete(registry::http::deregister),
        )
        .layer(DefaultBodyLimit::max(REGISTRY_BODY_LIMIT));
    // The forward routes come from the one table the server's fast path also matches.
    let forward = service::FORWARD_ROUTES
        .iter()
        .fold(Router::new(), |r, route| {
            r.route(route, any(service::forward))
        });
    forward
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
