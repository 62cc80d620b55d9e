//! The gateway's HTTP worker registry: the fallback when the DHT cannot be joined or
//! `DHT_ENABLED=false`.
//!
//! `POST /api/workers/register` (body: the [`WorkerRecord`]), `POST /api/workers/{id}/heartbeat`
//! (body: [`HeartbeatRequest`]; 404 means "register again"), `DELETE /api/workers/{id}`, all with
//! `Authorization: Bearer <token>`. The shapes are [`gpumesh_dht::wire`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpumesh_dht::record::WorkerRecord;
pub use gpumesh_dht::wire::{HeartbeatRequest, RegisterResponse};
use reqwest::StatusCode;
use tracing::debug;

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
        })
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
            s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                Err(CoordinatorError::Unauthorized(s.as_u16()))
            }
            s => {
                let body = resp.text().await.unwrap_or_default();
                Err(CoordinatorError::Request(format!(
                    "HTTP {s}: {}",
                    body.chars().take(200).collect::<String>()
                )))
            }
        }
    }

    /// Registers (or re-registers) the worker with its full record.
    pub async fn register(
        &self,
        record: &WorkerRecord,
    ) -> Result<RegisterResponse, CoordinatorError> {
        let url = format!("{}/api/workers/register", self.base);
        let resp = self
            .send(self.client.post(url).json(record), &record.peer_id)
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
