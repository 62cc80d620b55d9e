//! The gateway's HTTP worker registry: the fallback when the DHT cannot be joined or
//! `DHT_ENABLED=false`.
//!
//! `POST /api/workers/register` (body: the [`WorkerRecord`]), `POST /api/workers/{id}/heartbeat`
//! (body: [`HeartbeatRequest`]; 404 means "register again"), `DELETE /api/workers/{id}`, all with
//! `Authorization: Bearer <token>`. The shapes are [`gpumesh_dht::wire`]'s.
//!
//! With a signing key ([`Coordinator::with_signer`]) a registration also carries
//! `signed_record`: the hex of the same signed envelope the worker publishes in the DHT, with
//! its operator admission token inside. Gateways that enforce admission require it (a token
//! alone is public data; the signature proves the worker holds its peer id's key) and answer
//! 403 `not_admitted` ([`CoordinatorError::NotAdmitted`]) when it is missing or does not admit
//! this worker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_dht::admission::hex_encode;
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::signed::now_ms;
use gpumesh_dht::validate::RecordLimits;
pub use gpumesh_dht::wire::{HeartbeatRequest, RegisterResponse};
use gpumesh_dht::{AdmissionToken, DhtError, RejectReason, SignedRecord};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::tunnel::Secret;

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The gateway no longer knows this worker: register again.
    #[error("the registry does not know worker {0}")]
    Unknown(String),
    /// The token was refused.
    #[error("the registry refused the token (HTTP {0})")]
    Unauthorized(u16),
    /// The gateway enforces operator admission and refused this worker (no signed record,
    /// no token, a token for another peer, expired, or from an operator it does not trust).
    #[error(
        "the gateway refused this worker's admission ({0}); start the agent with \
         `--admission FILE` holding a valid token from `gpumesh admit`"
    )]
    NotAdmitted(String),
    /// Transport or server error.
    #[error("registry request failed: {0}")]
    Request(String),
}

/// A registry client for one gateway.
#[derive(Debug, Clone)]
pub struct Coordinator {
    base: String,
    token: Secret,
    client: reqwest::Client,
    calls: Arc<AtomicU64>,
    signer: Option<Arc<Signer>>,
}

/// Signs a record with the worker's key and admission token (a closure, so that this crate
/// names no libp2p type).
type SignFn = dyn Fn(&WorkerRecord) -> Result<SignedRecord, RejectReason> + Send + Sync;

/// The registration signer.
struct Signer(Box<SignFn>);

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// The register body: the record's fields plus, when signed, `signed_record`.
#[derive(Serialize)]
struct RegisterBody<'a> {
    #[serde(flatten)]
    record: &'a WorkerRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_record: Option<String>,
}

/// The part of the gateway's JSON error body that tells refusals apart.
#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Coordinator {
    /// `base` is the gateway's base URL (`https://gw.example.org`).
    pub fn new(base: &str, token: Secret) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            client,
            calls: Arc::new(AtomicU64::new(0)),
            signer: None,
        })
    }

    /// Signs every registration with the worker's node key (`key_path`, created if missing:
    /// its peer id is the worker id) and carries its admission token, as its DHT records do.
    ///
    /// # Errors
    /// The key file cannot be read or created.
    pub fn with_signing_key(
        mut self,
        key_path: &Path,
        admission: Option<AdmissionToken>,
    ) -> Result<Self, DhtError> {
        let key = gpumesh_dht::identity::load_or_create_keypair(key_path)?;
        let sign = move |record: &WorkerRecord| {
            SignedRecord::sign_admitted(
                &key,
                record.clone(),
                admission.as_ref(),
                &RecordLimits::default(),
                now_ms(),
            )
        };
        self.signer = Some(Arc::new(Signer(Box::new(sign))));
        Ok(self)
    }

    /// The hex envelope of `record`, or `None` (logged) when it cannot be signed: a record the
    /// DHT would refuse (too large, expired) is sent plain, and only an admission-enforcing
    /// gateway refuses it.
    fn sign(&self, record: &WorkerRecord) -> Option<String> {
        let signer = self.signer.as_ref()?;
        match (signer.0)(record) {
            Ok(signed) => Some(hex_encode(&signed.bytes)),
            Err(e) => {
                warn!(error = %e, "cannot sign the registry record; sending it unsigned");
                None
            }
        }
    }

    /// Registry requests made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        id: &str,
    ) -> Result<reqwest::Response, CoordinatorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| CoordinatorError::Request(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(CoordinatorError::Unknown(id.to_owned())),
            StatusCode::FORBIDDEN => {
                let body = resp.text().await.unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&body) {
                    Ok(e) if e.code == "not_admitted" => Err(CoordinatorError::NotAdmitted(
                        e.message.chars().take(300).collect(),
                    )),
                    _ => Err(CoordinatorError::Unauthorized(403)),
                }
            }
            s @ StatusCode::UNAUTHORIZED => Err(CoordinatorError::Unauthorized(s.as_u16())),
            s => {
                let body = resp.text().await.unwrap_or_default();
                Err(CoordinatorError::Request(format!(
                    "HTTP {s}: {}",
                    body.chars().take(200).collect::<String>()
                )))
            }
        }
    }

    /// Registers (or re-registers) the worker with its full record (signed, with a signer).
    pub async fn register(
        &self,
        record: &WorkerRecord,
    ) -> Result<RegisterResponse, CoordinatorError> {
        let url = format!("{}/api/workers/register", self.base);
        let body = RegisterBody {
            record,
            signed_record: self.sign(record),
        };
        let resp = self
            .send(self.client.post(url).json(&body), &record.peer_id)
            .await?;
        let r: RegisterResponse = resp
            .json()
            .await
            .map_err(|e| CoordinatorError::Request(e.to_string()))?;
        debug!(worker = %r.worker_id, ttl = r.ttl_secs, "registered with the coordinator");
        Ok(r)
    }

    /// Sends a heartbeat with fresh figures.
    pub async fn heartbeat(
        &self,
        id: &str,
        beat: &HeartbeatRequest,
    ) -> Result<(), CoordinatorError> {
        let url = format!("{}/api/workers/{id}/heartbeat", self.base);
        self.send(self.client.post(url).json(beat), id)
            .await
            .map(drop)
    }

    /// Removes the worker.
    pub async fn deregister(&self, id: &str) -> Result<(), CoordinatorError> {
        let url = format!("{}/api/workers/{id}", self.base);
        self.send(self.client.delete(url), id).await.map(drop)
    }
}
