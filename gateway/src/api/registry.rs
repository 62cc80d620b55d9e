//! The coordinator fallback registry: workers that cannot use the DHT register over HTTP.
//!
//! `Authorization: Bearer <token>` on every call (401 without it, 403 with a wrong one, 403
//! when no token is configured). Entries expire `registry_ttl` after the last register or
//! heartbeat. Rate limited per client IP before the token is even looked at.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpumesh_dht::record::WorkerRecord;

use super::types::{HeartbeatRequest, RegisterResponse};
use super::{AppState, ClientAddr, PathParam, json, rate_limit};
use crate::directory::{DirectoryEvent, Refused, Source, unix_ms};
use crate::error::GatewayError;

/// Checks rate and bearer token, counting refusals under `op`.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client: ClientAddr,
    op: &str,
) -> Result<(), GatewayError> {
    let result =
        rate_limit(&state.registry_limiter, client).and_then(|()| check_token(state, headers));
    if let Err(e) = &result {
        state.metrics.registry_call(op, e.code());
    }
    result
}

fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(expected) = state.config.registry_token.as_deref() else {
        return Err(GatewayError::Forbidden(
            "the coordinator registry is disabled on this gateway",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(GatewayError::Unauthorized)?;
    if constant_time_eq(presented.trim().as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(GatewayError::Forbidden("the registry token is wrong"))
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, GatewayError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            GatewayError::PayloadTooLarge {
                limit: super::REGISTRY_BODY_LIMIT,
            }
        } else {
            GatewayError::BadRequest("the request body could not be read".into())
        }
    })
}

fn lease(state: &AppState, id: String) -> (Instant, RegisterResponse) {
    let ttl = state.config.registry_ttl;
    let expires_at_ms =
        unix_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let response = RegisterResponse {
        worker_id: id,
        ttl_secs: ttl.as_secs(),
        heartbeat_interval_secs: (ttl.as_secs() / 3).max(1),
        expires_at_ms,
    };
    (Instant::now() + ttl, response)
}

/// `POST /api/workers/register` with a `WorkerRecord` JSON body.
///
/// # Errors
/// 400 (bad JSON, invalid record, refused URL), 401, 403, 409 (an older `seq` than the one
/// held), 413, 429.
pub async fn register(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    admit(&state, &headers, client, "register")?;
    let outcome = (|| -> Result<RegisterResponse, GatewayError> {
        let bytes = body_bytes(body)?;
        let record: WorkerRecord = serde_json::from_slice(&bytes).map_err(|e| {
            GatewayError::BadRequest(format!("the body is not a worker record: {e}"))
        })?;
        let (expires_at, response) = lease(&state, record.peer_id.clone());
        let event = DirectoryEvent::Upsert {
            record: Box::new(record),
            source: Source::Registry,
            expires_at: Some(expires_at),
        };
        state
            .directory
            .apply(event, Instant::now())
            .map_err(|refused| match refused {
                Refused::Policy(p) => GatewayError::UpstreamRefused(p.to_string()),
                stale @ Refused::Stale { .. } => GatewayError::StaleRecord(stale.to_string()),
                other => GatewayError::BadRequest(other.to_string()),
            })?;
        Ok(response)
    })();
    match outcome {
        Ok(response) => {
            state.metrics.registry_call("register", "ok");
            Ok(json(response))
        }
        Err(e) => {
            state.metrics.registry_call("register", e.code());
            Err(e)
        }
    }
}

/// `POST /api/workers/{id}/heartbeat` with an optional [`HeartbeatRequest`] body.
///
/// # Errors
/// 400, 401, 403, 404 (expired: register again), 413, 429.
pub async fn heartbeat(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    admit(&state, &headers, client, "heartbeat")?;
    let outcome = (|| -> Result<RegisterResponse, GatewayError> {
        let bytes = body_bytes(body)?;
        let beat: HeartbeatRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
            HeartbeatRequest::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                GatewayError::BadRequest(format!("the body is not a heartbeat: {e}"))
            })?
        };
        let (expires_at, response) = lease(&state, id.clone());
        state
            .directory
            .heartbeat(&id, beat, expires_at, Instant::now())?;
        Ok(response)
    })();
    state.metrics.registry_call(
        "heartbeat",
        outcome.as_ref().map_or_else(GatewayError::code, |_| "ok"),
    );
    outcome.map(json)
}

/// `DELETE /api/workers/{id}`: 204.
///
/// # Errors
/// 401, 403, 404, 429.
pub async fn deregister(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    admit(&state, &headers, client, "deregister")?;
    let outcome = state.directory.deregister(&id);
    state.metrics.registry_call(
        "deregister",
        outcome.as_ref().map_or_else(GatewayError::code, |()| "ok"),
    );
    outcome.map(|()| StatusCode::NO_CONTENT.into_response())
}
