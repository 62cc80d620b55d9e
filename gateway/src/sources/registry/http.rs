//! The registry's HTTP handlers: `POST /api/workers/register`,
//! `POST /api/workers/{id}/heartbeat`, `DELETE /api/workers/{id}`.
//!
//! Each authenticates the call (rate, bearer token, and under admission the worker's
//! signatures), parses the body once, and hands the result to the [`RegistrySource`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpumesh_dht::admission::{AdmissionError, hex_decode};
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::request;
use gpumesh_dht::rules::RecordLimits;
use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::signed::{check_gpus, check_schema};
use gpumesh_dht::{RejectReason, SignedRecord};
use serde::Deserialize;
use tracing::info;

use super::admissions::Admitted;
use super::{REGISTRY_BODY_LIMIT, RegistrySource};
use crate::error::GatewayError;
use crate::extract::{ClientAddr, PathParam, json, rate_limit};
use crate::types::{HeartbeatRequest, RegisterResponse};

/// The register body's field beside the record fields: the hex of the worker's signed DHT
/// envelope. Agents that predate it send the plain record, which gateways without admission
/// still take (they do not look at `signed_record` at all).
#[derive(Debug, Deserialize)]
struct RegisterExtras {
    #[serde(default)]
    signed_record: Option<String>,
}

/// The registry source as handlers receive it.
type Src = State<Arc<RegistrySource>>;

/// Checks rate and bearer token, counting refusals under `op`.
fn admit(
    src: &RegistrySource,
    headers: &HeaderMap,
    client: ClientAddr,
    op: &str,
) -> Result<(), GatewayError> {
    let result = rate_limit(&src.limiter, client).and_then(|()| check_token(src, headers));
    if let Err(e) = &result {
        src.metrics.registry_call(op, e.code());
    }
    result
}

fn check_token(src: &RegistrySource, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(expected) = src.token.as_deref() else {
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
                limit: REGISTRY_BODY_LIMIT,
            }
        } else {
            GatewayError::BadRequest("the request body could not be read".into())
        }
    })
}

/// Verifies `signed_record` as a DHT node would and returns it; it must be `peer_id`'s. A
/// failure is 403 `not_admitted`: the worker did not prove it holds its peer id's key (the
/// label of `records_refused` says why).
fn verify_signed(
    src: &RegistrySource,
    hex: &str,
    peer_id: &str,
) -> Result<SignedRecord, GatewayError> {
    let limits = RecordLimits::default();
    let bad = |reason: RejectReason| {
        src.refuse(
            peer_id,
            reason.as_str(),
            GatewayError::NotAdmitted(format!("signed_record does not verify: {reason}")),
        )
    };
    if hex.len() > 2 * limits.max_value_bytes {
        return Err(bad(RejectReason::Oversized));
    }
    let bytes = hex_decode(hex).ok_or_else(|| bad(RejectReason::Malformed))?;
    let signed = SignedRecord::verify(&bytes, None, &limits, unix_ms()).map_err(bad)?;
    if signed.record.peer_id != peer_id {
        return Err(bad(RejectReason::SignerMismatch));
    }
    Ok(signed)
}

/// The record to register and, under admission, its token's `not_after`.
fn admitted_record(
    src: &RegistrySource,
    bytes: &[u8],
) -> Result<(WorkerRecord, Option<u64>), GatewayError> {
    let record: WorkerRecord = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::BadRequest(format!("the body is not a worker record: {e}")))?;
    let extras: RegisterExtras = serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::BadRequest(format!("`signed_record` must be a hex string: {e}"))
    })?;
    if !src.enforced() {
        // Behaviour without admission is unchanged: the plain record, `signed_record` unused.
        check_schema(&record).map_err(|reason| {
            src.refuse(
                &record.peer_id,
                reason.as_str(),
                GatewayError::BadRequest(format!(
                    "invalid record: {reason} (the DHT's limits apply: at most {} GPUs, {} \
                     services, {}-byte text fields)",
                    gpumesh_dht::rules::MAX_GPUS,
                    gpumesh_dht::rules::MAX_SERVICES,
                    gpumesh_dht::rules::MAX_TEXT
                )),
            )
        })?;
        return Ok((record, None));
    }
    let not_admitted = |e: String| {
        src.refuse(
            &record.peer_id,
            RejectReason::NotAdmitted.as_str(),
            GatewayError::NotAdmitted(e),
        )
    };
    let Some(hex) = extras.signed_record else {
        return Err(not_admitted(
            "this gateway enforces operator admission: register with `signed_record` (the \
             worker's signed record carrying its admission token; `gpumesh agent --admission \
             FILE` sends it)"
                .into(),
        ));
    };
    // Verified as a DHT node verifies a record: signature, signer, times and schema.
    let signed = verify_signed(src, &hex, &record.peer_id)?;
    let token = signed
        .admission
        .as_ref()
        .ok_or(AdmissionError::Missing)
        .and_then(|t| {
            t.check(&signed.peer_id, &src.operators, unix_ms())
                .map(|()| t.not_after_ms())
        })
        .map_err(|e| not_admitted(e.to_string()))?;
    Ok((signed.record, Some(token)))
}

/// `POST /api/workers/register` with a `WorkerRecord` JSON body.
///
/// # Errors
/// 400 (bad JSON, invalid record or `signed_record`, refused URL), 401, 403 (token, or
/// `not_admitted`), 409 (an older `seq` than the one held), 413, 429.
pub async fn register(
    State(src): Src,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    admit(&src, &headers, client, "register")?;
    let outcome = body_bytes(body)
        .and_then(|bytes| admitted_record(&src, &bytes))
        .and_then(|(record, not_after_ms)| src.register(record, not_after_ms));
    match outcome {
        Ok(response) => {
            src.metrics.registry_call("register", "ok");
            Ok(json(response))
        }
        Err(e) => {
            src.metrics.registry_call("register", e.code());
            Err(e)
        }
    }
}

/// Under admission: the token's `not_after` of a registry worker. An expired token drops the
/// entry (403 `not_admitted`); no entry is 404 (register again, with a fresh token).
fn heartbeat_admission(src: &RegistrySource, id: &str) -> Result<Option<u64>, GatewayError> {
    if !src.enforced() {
        return Ok(None);
    }
    let Some(Admitted { not_after_ms, .. }) = src.admissions.get(id) else {
        return Err(GatewayError::UnknownWorker(id.to_owned()));
    };
    if not_after_ms <= unix_ms() {
        let _ = src.deregister(id);
        info!(worker = %id, not_after_ms, "admission token expired; registry worker dropped");
        return Err(src.refuse(
            id,
            RejectReason::NotAdmitted.as_str(),
            GatewayError::NotAdmitted(AdmissionError::Expired { not_after_ms }.to_string()),
        ));
    }
    Ok(Some(not_after_ms))
}

/// Under admission: a heartbeat or deregistration must be signed by the worker's own key
/// ([`gpumesh_dht::request`]), newer than the last one accepted from it. A refusal is 403
/// `not_admitted`, counted under `records_refused{reason}` with the signature's reason.
fn check_request_signature(
    src: &RegistrySource,
    id: &str,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), GatewayError> {
    if !src.enforced() {
        return Ok(());
    }
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (signed_at, signature) = (
        value(request::SIGNED_AT_HEADER),
        value(request::SIGNATURE_HEADER),
    );
    let now = unix_ms();
    src.admissions
        .accept_signed(id, |last| {
            request::verify(id, action, signed_at, signature, body, now, last)
        })
        .map_err(|e| {
            src.refuse(
                id,
                e.as_str(),
                GatewayError::NotAdmitted(format!("{action} refused: {e}")),
            )
        })
}

/// `POST /api/workers/{id}/heartbeat` with an optional [`HeartbeatRequest`] body.
///
/// # Errors
/// 400 (bad body, too many GPUs), 401, 403 (token, or `not_admitted`: the admission token
/// expired, or the heartbeat is not signed by the worker), 404 (expired: register again), 413,
/// 429.
pub async fn heartbeat(
    State(src): Src,
    PathParam(id): PathParam,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    admit(&src, &headers, client, "heartbeat")?;
    let outcome = (|| -> Result<RegisterResponse, GatewayError> {
        let bytes = body_bytes(body)?;
        let beat: HeartbeatRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
            HeartbeatRequest::default()
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                GatewayError::BadRequest(format!("the body is not a heartbeat: {e}"))
            })?
        };
        if let Some(gpus) = &beat.gpus {
            check_gpus(gpus).map_err(|reason| {
                GatewayError::BadRequest(format!(
                    "heartbeat refused: {reason} (at most {} GPUs, {}-byte text fields)",
                    gpumesh_dht::rules::MAX_GPUS,
                    gpumesh_dht::rules::MAX_TEXT
                ))
            })?;
        }
        let not_after_ms = heartbeat_admission(&src, &id)?;
        check_request_signature(&src, &id, "heartbeat", &headers, &bytes)?;
        src.heartbeat(&id, beat, not_after_ms)
    })();
    src.metrics.registry_call(
        "heartbeat",
        outcome.as_ref().map_or_else(GatewayError::code, |_| "ok"),
    );
    outcome.map(json)
}

/// `DELETE /api/workers/{id}`: 204.
///
/// # Errors
/// 401, 403 (token, or `not_admitted`: under admission, not signed by the worker), 404, 429.
pub async fn deregister(
    State(src): Src,
    PathParam(id): PathParam,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    admit(&src, &headers, client, "deregister")?;
    // Both checks pass at once without admission.
    let outcome = heartbeat_admission(&src, &id)
        .and_then(|_| check_request_signature(&src, &id, "deregister", &headers, &[]))
        .and_then(|()| src.deregister(&id));
    src.metrics.registry_call(
        "deregister",
        outcome.as_ref().map_or_else(GatewayError::code, |()| "ok"),
    );
    outcome.map(|()| StatusCode::NO_CONTENT.into_response())
}
