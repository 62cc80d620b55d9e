//! The gateway's HTTP worker registry: the fallback when the DHT cannot be joined or
//! `DHT_ENABLED=false`.
//!
//! `POST /api/workers/register` (body: the [`WorkerRecord`]), `POST /api/workers/{id}/heartbeat`
//! (body: [`HeartbeatRequest`]; 404 means "register again"), `DELETE /api/workers/{id}`, all with
//! `Authorization: Bearer <token>`. The shapes are [`gpumesh_dht::wire`]'s.
//!
//! With a signing key ([`Coordinator::with_signing_key`]) a registration also carries
//! `signed_record`: the hex of the same signed envelope the worker publishes in the DHT, with
//! its operator admission token inside, and heartbeats and deregistrations carry a request
//! signature by the same key ([`gpumesh_dht::request`]). Gateways that enforce admission
//! require both (a token alone is public data, and the registry token is shared by every
//! agent; the signatures prove the worker holds its peer id's key) and answer 403
//! `not_admitted` ([`CoordinatorError::NotAdmitted`]) when they are missing or do not admit
//! this worker.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_dht::admission::hex_encode;
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::request::{self, RequestSigError};
use gpumesh_dht::rules::RecordLimits;
use gpumesh_dht::rules::unix_ms;
pub use gpumesh_dht::wire::{HeartbeatRequest, RegisterResponse};
use gpumesh_dht::{AdmissionToken, DhtError, RejectReason, SignedRecord};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::http::read_capped;
use crate::tunnel::Secret;

/// Most bytes read of a registry error answer (a JSON error body is a few hundred).
const MAX_ERROR_BYTES: usize = 16 * 1024;
/// Most bytes read of a registration answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

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
    /// 409 `stale_record`: the gateway already holds this record, or a newer one, from the DHT
    /// (a DHT write that the agent counted as failed reached this gateway after all). Not a
    /// failure of the registry: retrying the same record would only be refused again.
    #[error("the gateway already holds this record or a newer one ({0})")]
    AlreadyHeld(String),
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

/// Signs a heartbeat or deregistration: (action, signing time, body) → hex signature.
type SignRequestFn = dyn Fn(&str, u64, &[u8]) -> Result<String, RequestSigError> + Send + Sync;

/// The registration and request signer (one key).
struct Signer {
    record: Box<SignFn>,
    request: Box<SignRequestFn>,
}

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
        let request_key = key.clone();
        let record = move |record: &WorkerRecord| {
            SignedRecord::sign_admitted(
                &key,
                record.clone(),
                admission.as_ref(),
                &RecordLimits::default(),
                unix_ms(),
            )
        };
        let request = move |action: &str, at_ms: u64, body: &[u8]| {
            request::sign(&request_key, action, at_ms, body)
        };
        self.signer = Some(Arc::new(Signer {
            record: Box::new(record),
            request: Box::new(request),
        }));
        Ok(self)
    }

    /// The hex envelope of `record`, or `None` (logged) when it cannot be signed: a record the
    /// DHT would refuse (too large, expired) is sent plain, and only an admission-enforcing
    /// gateway refuses it.
    fn sign(&self, record: &WorkerRecord) -> Option<String> {
        let signer = self.signer.as_ref()?;
        match (signer.record)(record) {
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
            s @ StatusCode::UNAUTHORIZED => Err(CoordinatorError::Unauthorized(s.as_u16())),
            s => {
                // The gateway's JSON error `code` tells the refusals that need their own
                // handling apart; anything else is a failed request.
                let body = read_capped(resp, MAX_ERROR_BYTES).await.unwrap_or_default();
                let refusal = serde_json::from_slice::<ErrorBody>(&body).ok();
                let message = |e: ErrorBody| e.message.chars().take(300).collect();
                match (s, refusal) {
                    (StatusCode::FORBIDDEN, Some(e)) if e.code == "not_admitted" => {
                        Err(CoordinatorError::NotAdmitted(message(e)))
                    }
                    (StatusCode::FORBIDDEN, _) => Err(CoordinatorError::Unauthorized(403)),
                    (StatusCode::CONFLICT, Some(e)) if e.code == "stale_record" => {
                        Err(CoordinatorError::AlreadyHeld(message(e)))
                    }
                    _ => Err(CoordinatorError::Request(format!(
                        "HTTP {s}: {}",
                        String::from_utf8_lossy(&body)
                            .chars()
                            .take(200)
                            .collect::<String>()
                    ))),
                }
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
        let bytes = read_capped(resp, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| CoordinatorError::Request(e.to_string()))?;
        let r: RegisterResponse = serde_json::from_slice(&bytes)
            .map_err(|e| CoordinatorError::Request(format!("not a registration answer: {e}")))?;
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
        let body =
            serde_json::to_vec(beat).map_err(|e| CoordinatorError::Request(e.to_string()))?;
        let req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        let req = self.sign_request(req, "heartbeat", &body);
        self.send(req.body(body), id).await.map(drop)
    }

    /// Removes the worker.
    pub async fn deregister(&self, id: &str) -> Result<(), CoordinatorError> {
        let url = format!("{}/api/workers/{id}", self.base);
        let req = self.sign_request(self.client.delete(url), "deregister", &[]);
        self.send(req, id).await.map(drop)
    }

    /// With a signer, adds the request signature headers (gateways that enforce admission
    /// require them on heartbeats and deregistrations; others ignore them). A request that
    /// cannot be signed goes out unsigned (logged), as a record does.
    fn sign_request(
        &self,
        req: reqwest::RequestBuilder,
        action: &str,
        body: &[u8],
    ) -> reqwest::RequestBuilder {
        let Some(signer) = &self.signer else {
            return req;
        };
        let at_ms = unix_ms();
        match (signer.request)(action, at_ms, body) {
            Ok(signature) => req
                .header(request::SIGNED_AT_HEADER, at_ms.to_string())
                .header(request::SIGNATURE_HEADER, signature),
            Err(e) => {
                warn!(error = %e, action, "cannot sign the registry request; sending it unsigned");
                req
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers every request with `head` and then an endless body, counting the
    /// bytes it got out before the client hung up.
    async fn endless(head: &'static str) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&sent);
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 8192];
            let _ = socket.read(&mut buf).await;
            let _ = socket.write_all(head.as_bytes()).await;
            let chunk = vec![b'x'; 64 * 1024];
            while socket.write_all(&chunk).await.is_ok() {
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        (format!("http://{addr}"), sent)
    }

    #[tokio::test]
    async fn endless_answers_are_read_only_up_to_a_cap() {
        let mut record = WorkerRecord::new(vec!["ocr".parse().unwrap()], "http://127.0.0.1:9/");
        record.peer_id = "12D3KooWtest".into();
        for (head, want) in [
            // A refusal's body is read for its error code, at most MAX_ERROR_BYTES.
            (
                "HTTP/1.1 403 Forbidden\r\nconnection: close\r\n\r\n",
                "the registry refused the token (HTTP 403)",
            ),
            // A success whose body never ends is an error, not a hang.
            (
                "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
                "larger than",
            ),
        ] {
            let (base, sent) = endless(head).await;
            let c = Coordinator::new(&base, Secret::new("t".to_owned())).unwrap();
            let err = c.register(&record).await.unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            // The client hung up after the cap: the server got out at most the socket
            // buffers' worth, where reading to the 10 s timeout would take gigabytes.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = sent.load(Ordering::SeqCst);
            assert!(n < 32 * 1024 * 1024, "{n} bytes sent");
        }
    }
}
