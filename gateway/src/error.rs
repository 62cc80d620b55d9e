//! The gateway's error: whose fault it is, and the JSON a person can act on.
//!
//! Every variant maps to one HTTP status and one stable `code`. Internal detail (an upstream's
//! error chain) is logged where it happens, never put in the body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::types::ErrorBody;

/// Who caused a failure: the caller, a worker, or the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong (bad input, no credentials, too large, too fast).
    Client,
    /// The chosen worker failed or was too slow.
    Worker,
    /// The gateway cannot serve it (no eligible worker, not ready, a bug).
    Gateway,
}

impl Fault {
    /// The lower-case name used in JSON bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Client => "client",
            Fault::Worker => "worker",
            Fault::Gateway => "gateway",
        }
    }
}

/// Everything a gateway request can end in, other than success.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Malformed input: a bad header, JSON body or path.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A worker record names a URL the upstream policy refuses.
    #[error("upstream URL refused: {0}")]
    UpstreamRefused(String),
    /// No `Authorization: Bearer` header.
    #[error("a bearer token is required")]
    Unauthorized,
    /// A wrong token, or the registry is disabled.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The gateway enforces operator admission and the worker has no valid, unexpired token
    /// for its own peer id (missing, for another peer, expired, or from an untrusted
    /// operator), or did not prove it holds the key of that peer id.
    #[error("worker not admitted: {0}")]
    NotAdmitted(String),
    /// No worker has ever offered this service.
    #[error("unknown service `{0}`")]
    UnknownService(String),
    /// No worker with this id is known.
    #[error("unknown worker `{0}`")]
    UnknownWorker(String),
    /// No route matches the path.
    #[error("no such endpoint")]
    NotFound,
    /// The path exists but not for this method (the `Allow` header lists those that do).
    #[error("method not allowed on this path")]
    MethodNotAllowed,
    /// The registry already holds a record of this worker with the same or a newer `seq`.
    #[error("stale record: {0}")]
    StaleRecord(String),
    /// The request body is over the limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The caller is over its rate limit.
    #[error("rate limited; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
    /// Workers exist for the service but none passes the filter.
    #[error("no eligible worker for `{service}`: {reason}")]
    NoEligibleWorker {
        /// The requested service.
        service: String,
        /// The filter's reason, from the scheduler.
        reason: String,
    },
    /// Neither the DHT view nor the registry has any worker yet.
    #[error("the gateway has no worker view yet")]
    NotReady,
    /// The worker could not be reached or broke the exchange.
    #[error("worker `{worker}` failed: {detail}")]
    WorkerFailed {
        /// The worker's id.
        worker: String,
        /// A short, safe description (no internal error text).
        detail: &'static str,
    },
    /// The request came back to this gateway (its own `Via` entry): a worker record points
    /// at a gateway that routes to this one.
    #[error("the request looped back to this gateway ({via}); a worker record points at a gateway")]
    LoopDetected {
        /// This gateway's `Via` name.
        via: String,
    },
    /// The client stopped sending its request body.
    #[error("the request body stalled for longer than {after_ms} ms")]
    RequestTimeout {
        /// The allowed gap between two parts of the body.
        after_ms: u64,
    },
    /// The worker did not answer in time.
    #[error("worker `{worker}` timed out after {after_ms} ms")]
    WorkerTimeout {
        /// The worker's id.
        worker: String,
        /// The timeout that expired.
        after_ms: u64,
    },
}

impl GatewayError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::UpstreamRefused(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::NotAdmitted(_) => StatusCode::FORBIDDEN,
            Self::UnknownService(_) | Self::UnknownWorker(_) | Self::NotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::StaleRecord(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::NoEligibleWorker { .. } | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::WorkerFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::WorkerTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::LoopDetected { .. } => StatusCode::LOOP_DETECTED,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::UpstreamRefused(_) => "upstream_refused",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotAdmitted(_) => "not_admitted",
            Self::UnknownService(_) => "unknown_service",
            Self::UnknownWorker(_) => "unknown_worker",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::StaleRecord(_) => "stale_record",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::NoEligibleWorker { .. } => "no_eligible_worker",
            Self::NotReady => "not_ready",
            Self::WorkerFailed { .. } => "worker_failed",
            Self::WorkerTimeout { .. } => "worker_timeout",
            Self::LoopDetected { .. } => "loop_detected",
            Self::RequestTimeout { .. } => "request_timeout",
        }
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::NoEligibleWorker { .. } | Self::NotReady => Fault::Gateway,
            Self::WorkerFailed { .. } | Self::WorkerTimeout { .. } | Self::LoopDetected { .. } => {
                Fault::Worker
            }
            _ => Fault::Client,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        let (service, worker, reason) = match self {
            Self::UnknownService(s) => (Some(s.clone()), None, None),
            Self::UnknownWorker(w) => (None, Some(w.clone()), None),
            Self::NoEligibleWorker { service, reason } => {
                (Some(service.clone()), None, Some(reason.clone()))
            }
            Self::WorkerFailed { worker, .. } | Self::WorkerTimeout { worker, .. } => {
                (None, Some(worker.clone()), None)
            }
            _ => (None, None, None),
        };
        ErrorBody {
            code: self.code().to_owned(),
            message: self.to_string(),
            fault: self.fault().as_str().to_owned(),
            service,
            worker,
            reason,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let Self::RateLimited { retry_after_secs } = self
            && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// Why the gateway could not start or stopped with an error (the operator's or host's fault).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The forwarding client could not be built (TLS initialisation).
    #[error("cannot build the forwarding client: {0}")]
    Client(#[from] ClientError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The DHT node failed to start.
    #[error("DHT node failed: {0}")]
    Dht(String),
}

/// Why the forwarding client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);
