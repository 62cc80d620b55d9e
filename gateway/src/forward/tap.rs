//! The forwarder's side of cross-checks and canary budgets: it tells an [`AnswerTap`] about
//! real requests and, for a sampled few, hands over the request and the worker's answer once
//! the answer ended well. The answer is copied as it passes ([`Tee`]); the client never waits.
//!
//! Only small exchanges are kept: a buffered request body and a response with a
//! Content-Length, both within [`TEE_LIMIT`]. Streams (SSE, chunked answers) are never
//! replayed.

use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue, Method, header};

use crate::directory::WorkerKey;

/// Largest request body or answer kept for a cross-check.
pub const TEE_LIMIT: usize = 64 * 1024;

/// Request headers a replay carries (credentials and client identity never do).
const REPLAY_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];

/// Receives what the forwarder sees of real traffic (the answer checks implement it).
pub trait AnswerTap: Send + Sync + fmt::Debug {
    /// A real request for `service` is being forwarded (canary budgets grow with them).
    fn request(&self, service: &str);
    /// Whether to keep this request of `service` for a replay (a random share of the
    /// services the operator marked deterministic).
    fn sample(&self, service: &str) -> bool;
    /// A kept request ended well on `served.worker`.
    fn answered(&self, served: Served);
}

/// A real request and the answer one worker gave it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The service.
    pub service: String,
    /// The worker that answered.
    pub worker: WorkerKey,
    /// Request method.
    pub method: Method,
    /// Path below `/api/service/{service}/`.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// The headers a replay carries (content type and accept only).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body.
    pub body: Bytes,
    /// The worker's answer (the response body).
    pub answer: Bytes,
}

/// A request kept for a replay, before its answer came.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    tap: Arc<dyn AnswerTap>,
    service: String,
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Draft {
    /// A draft of `req` (whose body is `body`), if the tap samples it.
    pub(super) fn of(
        tap: &Arc<dyn AnswerTap>,
        service: &str,
        req: &super::Outbound,
        body: &Bytes,
    ) -> Option<Self> {
        if body.len() > TEE_LIMIT || !tap.sample(service) {
            return None;
        }
        let headers = REPLAY_HEADERS
            .iter()
            .filter_map(|name| Some((name.clone(), req.headers.get(name)?.clone())))
            .collect();
        Some(Self {
            tap: Arc::clone(tap),
            service: service.to_owned(),
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers,
            body: body.clone(),
        })
    }
}

/// The answer being copied as it passes.
pub(super) struct Tee {
    draft: Draft,
    buf: Vec<u8>,
}

impl Tee {
    /// Starts copying an answer of `declared` bytes; `None` when it would be too large.
    pub(super) fn start(draft: Draft, declared: Option<u64>) -> Option<Self> {
        // An empty answer has nothing to compare.
        let len = usize::try_from(declared?)
            .ok()
            .filter(|&n| n > 0 && n <= TEE_LIMIT)?;
        Some(Self {
            draft,
            buf: Vec::with_capacity(len),
        })
    }

    /// Copies a chunk; `false` once the answer outgrew the limit (the copy is then dropped).
    pub(super) fn keep(&mut self, chunk: &Bytes) -> bool {
        if self.buf.len() + chunk.len() > TEE_LIMIT {
            return false;
        }
        self.buf.extend_from_slice(chunk);
        true
    }

    /// The answer ended well on `worker`.
    pub(super) fn answered(self, worker: WorkerKey) {
        let d = self.draft;
        d.tap.answered(Served {
            service: d.service,
            worker,
            method: d.method,
            path: d.path,
            query: d.query,
            headers: d.headers,
            body: d.body,
            answer: Bytes::from(self.buf),
        });
    }
}
