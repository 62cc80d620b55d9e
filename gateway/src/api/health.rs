//! `GET /healthz` (the process answers), `GET /readyz` (it can route), `GET /metrics`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::types::HealthResponse;
use super::{AppState, json};
use crate::error::GatewayError;

/// Content type of the OpenMetrics text format prometheus-client writes.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /healthz`: 200 while the process serves HTTP.
pub async fn healthz(State(state): State<AppState>) -> Response {
    json(HealthResponse {
        status: "ok".into(),
        workers: state.directory.len(),
        dht_enabled: state.dht.enabled(),
    })
}

/// `GET /readyz`: 200 once the DHT view is warm or any worker (from either source) is known.
///
/// # Errors
/// 503 `not_ready` before that.
pub async fn readyz(State(state): State<AppState>) -> Result<Response, GatewayError> {
    let workers = state.directory.len();
    if workers > 0 || state.dht.snapshot().warm {
        Ok(json(HealthResponse {
            status: "ready".into(),
            workers,
            dht_enabled: state.dht.enabled(),
        }))
    } else {
        Err(GatewayError::NotReady)
    }
}

/// `GET /metrics`: every metric in the shared registry, OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics_registry) {
        Ok(()) => {
            let mut response = text.into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
