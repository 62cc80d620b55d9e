//! The coordinator fallback registry: workers that cannot use the DHT register over HTTP.
//!
//! `Authorization: Bearer <token>` on every call (401 without it, 403 with a wrong one, 403
//! when no token is configured). Entries expire `registry_ttl` after the last register or
//! heartbeat. Rate limited per client IP before the token is even looked at.
//!
//! Records taken here meet the same schema limits as DHT records
//! ([`gpumesh_dht::signed::check_schema`]: at most `MAX_GPUS` GPUs, 32 services, bounded text),
//! heartbeats' GPU lists too.
//!
//! **Admission.** Every volunteer agent holds the registry token, so when the gateway enforces
//! operator admission (`dht_admission_operators`), the registry must not be a way around the
//! DHT's gate. A registration then has to carry `signed_record`: the hex of the worker's signed
//! DHT envelope ([`SignedRecord`]), which holds the record and the operator token. The gateway
//! verifies it exactly as a DHT node verifies a record (signature, signer = `peer_id`, times,
//! schema) and checks the token with [`gpumesh_dht::AdmissionToken::check`], as the DHT gate
//! does. The signature matters: tokens are public data (any DHT member can read them in
//! records), so a token alone would let anyone with the registry token register under an
//! admitted worker's id and take its traffic. The entry's lease never outlives the token, and
//! heartbeats after it expired are refused and drop the entry. Refusals answer 403
//! `not_admitted`, are counted in `gpumesh_gateway_registry_requests{outcome="not_admitted"}`
//! and `gpumesh_gateway_records_refused{source="registry",reason="not_admitted"}`, and logged.
//! A `signed_record` that does not verify is refused the same way (403 `not_admitted`; the
//! `records_refused` reason says why, e.g. `signer_mismatch`). Without admission configured,
//! behaviour is unchanged: the plain record is taken and `signed_record` is not used.
//!
//! Under admission, heartbeats and deregistrations must be signed by the worker's own key
//! ([`gpumesh_dht::request`]: two headers, a time within a minute of the gateway's clock and
//! newer than the worker's last accepted request). The registry token alone would let any
//! agent set another worker's load or remove it. A refusal is 403 `not_admitted`, counted under
//! `records_refused{source="registry",reason}` with `unsigned`, `bad_signature`, `skewed`,
//! `replayed`, `malformed` or `bad_worker_id`.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gpumesh_dht::admission::{AdmissionError, hex_decode};
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::request::{self, RequestSigError};
use gpumesh_dht::signed::{check_gpus, check_schema};
use gpumesh_dht::validate::RecordLimits;
use gpumesh_dht::{RejectReason, SignedRecord};
use serde::Deserialize;
use tracing::{info, warn};

use super::types::{HeartbeatRequest, RegisterResponse};
use super::{AppState, ClientAddr, PathParam, json, rate_limit};
use crate::directory::{DirectoryEvent, MAX_ID_LEN, Refused, Source, unix_ms};
use crate::error::GatewayError;
use crate::metrics::RefusedLabels;

/// The register body's field beside the record fields: the hex of the worker's signed DHT
/// envelope. Agents that predate it send the plain record, which gateways without admission
/// still take (they do not look at `signed_record` at all).
#[derive(Debug, Deserialize)]
struct RegisterExtras {
    #[serde(default)]
    signed_record: Option<String>,
}

/// An admitted registry worker.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    /// When its admission token ends, ms since the Unix epoch.
    not_after_ms: u64,
    /// The signing time of the newest signed request accepted from it (replay guard).
    last_signed_ms: Option<u64>,
}

/// The registry workers admitted under enforced admission (filled only then). Bounded: entries
/// leave on deregister, on an expired token, and in a sweep of workers no longer in the
/// registry once the map outgrows the view.
#[derive(Debug, Default)]
pub struct Admissions(Mutex<HashMap<String, Admitted>>);

impl Admissions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Admitted>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, state: &AppState, id: String, not_after_ms: u64) {
        let mut map = self.lock();
        if map.len() >= state.directory.len() * 2 + 64 {
            let live: HashSet<String> = state
                .directory
                .ids_from(Source::Registry)
                .into_iter()
                .collect();
            let now = unix_ms();
            map.retain(|id, a| a.not_after_ms > now && live.contains(id));
        }
        // A re-registration keeps the replay guard: an old signed heartbeat stays old.
        let last_signed_ms = map.get(&id).and_then(|a| a.last_signed_ms);
        map.insert(
            id,
            Admitted {
                not_after_ms,
                last_signed_ms,
            },
        );
    }

    fn get(&self, id: &str) -> Option<Admitted> {
        self.lock().get(id).copied()
    }

    /// Checks a signed request from `id` against the last one accepted and records its time.
    /// Under one lock, so two copies of one request racing each other cannot both pass.
    fn accept_signed(
        &self,
        id: &str,
        check: impl FnOnce(Option<u64>) -> Result<u64, RequestSigError>,
    ) -> Result<(), RequestSigError> {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(id) else {
            return Err(RequestSigError::Missing);
        };
        entry.last_signed_ms = Some(check(entry.last_signed_ms)?);
        Ok(())
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

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

/// A lease of `registry_ttl`, cut short at `not_after_ms` (the worker's admission token).
fn lease(state: &AppState, id: String, not_after_ms: Option<u64>) -> (Instant, RegisterResponse) {
    let now_ms = unix_ms();
    let ttl = not_after_ms.map_or(state.config.registry_ttl, |end| {
        state
            .config
            .registry_ttl
            .min(Duration::from_millis(end.saturating_sub(now_ms)))
    });
    let expires_at_ms = now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let response = RegisterResponse {
        worker_id: id,
        ttl_secs: ttl.as_secs(),
        heartbeat_interval_secs: (state.config.registry_ttl.as_secs() / 3).max(1),
        expires_at_ms,
    };
    (Instant::now() + ttl, response)
}

fn enforced(state: &AppState) -> bool {
    !state.config.dht_admission_operators.is_empty()
}

/// Counts and logs a record refused before it reaches the directory.
fn refuse(state: &AppState, id: &str, reason: &'static str, error: GatewayError) -> GatewayError {
    state
        .metrics
        .records_refused
        .get_or_create(&RefusedLabels {
            source: Source::Registry.as_str().to_owned(),
            reason: reason.to_owned(),
        })
        .inc();
    // The id is not checked yet: never log a client's arbitrary string.
    let valid = id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric());
    let worker = if valid { id } else { "(invalid id)" };
    warn!(source = "registry", worker, reason, %error, "worker record refused");
    error
}

/// Verifies `signed_record` as a DHT node would and returns it; it must be `peer_id`'s. A
/// failure is 403 `not_admitted`: the worker did not prove it holds its peer id's key (the
/// label of `records_refused` says why).
fn verify_signed(state: &AppState, hex: &str, peer_id: &str) -> Result<SignedRecord, GatewayError> {
    let limits = RecordLimits::default();
    let bad = |reason: RejectReason| {
        refuse(
            state,
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
    state: &AppState,
    bytes: &[u8],
) -> Result<(WorkerRecord, Option<u64>), GatewayError> {
    let record: WorkerRecord = serde_json::from_slice(bytes)
        .map_err(|e| GatewayError::BadRequest(format!("the body is not a worker record: {e}")))?;
    let extras: RegisterExtras = serde_json::from_slice(bytes).map_err(|e| {
        GatewayError::BadRequest(format!("`signed_record` must be a hex string: {e}"))
    })?;
    if !enforced(state) {
        // Behaviour without admission is unchanged: the plain record, `signed_record` unused.
        check_schema(&record).map_err(|reason| {
            refuse(
                state,
                &record.peer_id,
                reason.as_str(),
                GatewayError::BadRequest(format!(
                    "invalid record: {reason} (the DHT's limits apply: at most {} GPUs, {} \
                     services, {}-byte text fields)",
                    gpumesh_dht::validate::MAX_GPUS,
                    gpumesh_dht::validate::MAX_SERVICES,
                    gpumesh_dht::validate::MAX_TEXT
                )),
            )
        })?;
        return Ok((record, None));
    }
    let not_admitted = |e: String| {
        refuse(
            state,
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
    let signed = verify_signed(state, &hex, &record.peer_id)?;
    let token = signed
        .admission
        .as_ref()
        .ok_or(AdmissionError::Missing)
        .and_then(|t| {
            t.check(
                &signed.peer_id,
                &state.config.dht_admission_operators,
                unix_ms(),
            )
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
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, GatewayError> {
    admit(&state, &headers, client, "register")?;
    let outcome = (|| -> Result<RegisterResponse, GatewayError> {
        let bytes = body_bytes(body)?;
        let (record, not_after_ms) = admitted_record(&state, &bytes)?;
        let id = record.peer_id.clone();
        let (expires_at, response) = lease(&state, id.clone(), not_after_ms);
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
        if let Some(not_after_ms) = not_after_ms {
            info!(worker = %id, not_after_ms, "registry worker admitted");
            state.registry_admissions.insert(&state, id, not_after_ms);
        }
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

/// Under admission: the token's `not_after` of a registry worker. An expired token drops the
/// entry (403 `not_admitted`); no entry is 404 (register again, with a fresh token).
fn heartbeat_admission(state: &AppState, id: &str) -> Result<Option<u64>, GatewayError> {
    if !enforced(state) {
        return Ok(None);
    }
    let Some(Admitted { not_after_ms, .. }) = state.registry_admissions.get(id) else {
        return Err(GatewayError::UnknownWorker(id.to_owned()));
    };
    if not_after_ms <= unix_ms() {
        state.registry_admissions.remove(id);
        let _ = state.directory.deregister(id);
        info!(worker = %id, not_after_ms, "admission token expired; registry worker dropped");
        return Err(refuse(
            state,
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
    state: &AppState,
    id: &str,
    action: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), GatewayError> {
    if !enforced(state) {
        return Ok(());
    }
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (signed_at, signature) = (
        value(request::SIGNED_AT_HEADER),
        value(request::SIGNATURE_HEADER),
    );
    let now = unix_ms();
    state
        .registry_admissions
        .accept_signed(id, |last| {
            request::verify(id, action, signed_at, signature, body, now, last)
        })
        .map_err(|e| {
            refuse(
                state,
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
        if let Some(gpus) = &beat.gpus {
            check_gpus(gpus).map_err(|reason| {
                GatewayError::BadRequest(format!(
                    "heartbeat refused: {reason} (at most {} GPUs, {}-byte text fields)",
                    gpumesh_dht::validate::MAX_GPUS,
                    gpumesh_dht::validate::MAX_TEXT
                ))
            })?;
        }
        let not_after_ms = heartbeat_admission(&state, &id)?;
        check_request_signature(&state, &id, "heartbeat", &headers, &bytes)?;
        let (expires_at, response) = lease(&state, id.clone(), not_after_ms);
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
/// 401, 403 (token, or `not_admitted`: under admission, not signed by the worker), 404, 429.
pub async fn deregister(
    State(state): State<AppState>,
    PathParam(id): PathParam,
    client: ClientAddr,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    admit(&state, &headers, client, "deregister")?;
    // Both checks pass at once without admission.
    let outcome = heartbeat_admission(&state, &id)
        .and_then(|_| check_request_signature(&state, &id, "deregister", &headers, &[]))
        .and_then(|()| {
            let gone = state.directory.deregister(&id);
            state.registry_admissions.remove(&id);
            gone
        });
    state.metrics.registry_call(
        "deregister",
        outcome.as_ref().map_or_else(GatewayError::code, |()| "ok"),
    );
    outcome.map(|()| StatusCode::NO_CONTENT.into_response())
}
