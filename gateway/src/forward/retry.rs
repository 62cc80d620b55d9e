//! When a failed attempt may go to another worker, and what the caller hears.
//!
//! A worker that could not be connected to never saw the request, so any re-sendable request
//! goes to another worker. A connection that broke *after* the request went out (the worker's
//! machine died mid-request) is retried only for idempotent methods and for requests that carry
//! an `Idempotency-Key` header, the client's statement that a repeat is harmless. Anything
//! else is a 502/504 for this request. The classification reads the client error's source
//! chain once; the retry decision then lives on the result ([`Failure::may_retry`]), so every
//! caller agrees on it.

use std::sync::Arc;
use std::time::Instant;

use axum::http::Method;
use gpumesh_scheduler::Outcome;
use http_body_util::LengthLimitError;
use tracing::{debug, warn};

use super::upload::{UploadFailure, UploadState};
use super::{Deadline, Failed, Forwarder, Next};
use crate::directory::{Directory, Picked, Requirements, WorkerKey};
use crate::error::GatewayError;
use crate::metrics::ServiceLabels;
use crate::sources::Source;

/// The state of one request's attempts across workers.
pub(super) struct Attempts {
    /// The worker that could not be reached (never picked again for this request).
    pub(super) avoid: Option<WorkerKey>,
    /// Attempts made so far.
    pub(super) made: u32,
    /// The last unreachable worker's error, reported when nobody else is left.
    pub(super) unreachable: Option<(GatewayError, Source)>,
    /// Whether a connection that broke before any answer may be retried.
    pub(super) resend_after_break: bool,
    /// The streamed body's upload, once it is being sent.
    pub(super) upload: Option<Arc<UploadState>>,
    /// When the gateway received the request (each attempt's latency runs from here).
    pub(super) started: Instant,
}

impl Attempts {
    /// No attempt made yet for `req`.
    pub(super) fn new(req: &super::Outbound) -> Self {
        Self {
            avoid: None,
            made: 0,
            unreachable: None,
            // Whether a connection that broke before any answer may be retried on another
            // worker (the request may have reached it).
            resend_after_break: resend_after_break(&req.method, &req.headers),
            upload: None,
            started: req.started,
        }
    }

    /// The next worker, never the one found unreachable; when nobody else is left, the
    /// caller hears about the worker that failed.
    pub(super) fn pick(
        &mut self,
        directory: &Directory,
        requirements: &Requirements,
    ) -> Result<Picked, Failed> {
        directory
            .pick(requirements, self.avoid, Instant::now())
            .map_err(|e| match self.unreachable.take() {
                Some((err, source)) => (err, Some(source)),
                None => (e, None),
            })
    }

    /// When the worker had the whole request: the end of a streamed upload (or now, when
    /// the worker answered before it ended), else the request's arrival.
    pub(super) fn sent_at(&self) -> Instant {
        match &self.upload {
            Some(u) => u.ended_at().unwrap_or_else(Instant::now),
            None => self.started,
        }
    }
}

/// Whether a request whose connection broke before any answer may be sent to another worker:
/// idempotent methods (RFC 9110 §9.2.2), and any method carrying an `Idempotency-Key` header
/// (the client says a repeat is harmless). nginx makes the same distinction
/// (`proxy_next_upstream` skips non-idempotent requests unless told otherwise).
pub(super) fn resend_after_break(method: &Method, headers: &axum::http::HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) || headers.contains_key(IDEMPOTENCY_KEY)
}

/// The request header by which a client marks a non-idempotent request as safe to repeat
/// (IETF draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How sending to a worker failed, read once from the client error's source chain: what the
/// caller hears, and whether another worker may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// The body went over the limit (the client's fault).
    TooLarge,
    /// hyper's own timeout.
    Timeout,
    /// No connection was made: the worker never saw the request.
    Connect,
    /// The worker answered something that is not HTTP.
    Invalid,
    /// The connection broke before any answer (reset, closed mid-request).
    Broke,
    /// A failure on our side of the connection (hyper's user errors), reported like a break
    /// but never re-sent.
    Local,
}

impl Failure {
    pub(super) fn of(e: &hyper_util::client::legacy::Error) -> Self {
        let (mut parse, mut user) = (false, false);
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if s.is::<LengthLimitError>() {
                return Self::TooLarge;
            }
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return Self::Timeout;
                }
                parse |= h.is_parse() || h.is_parse_status();
                user |= h.is_user();
            }
            source = s.source();
        }
        if e.is_connect() {
            Self::Connect
        } else if parse {
            Self::Invalid
        } else if user {
            Self::Local
        } else {
            Self::Broke
        }
    }

    /// Whether another worker may get the request: always when it never reached this one;
    /// after a break only when a repeat is harmless ([`resend_after_break`]).
    pub(super) fn may_retry(self, after_break: bool) -> bool {
        self == Self::Connect || (after_break && self == Self::Broke)
    }

    pub(super) fn error(self, worker: &str, limit: usize) -> GatewayError {
        let detail = match self {
            Self::TooLarge => return GatewayError::PayloadTooLarge { limit },
            Self::Timeout => {
                return GatewayError::WorkerTimeout {
                    worker: worker.to_owned(),
                    after_ms: 0,
                };
            }
            Self::Connect => "could not connect to the worker",
            Self::Invalid => "the worker's answer was invalid",
            Self::Broke | Self::Local => "the connection to the worker broke",
        };
        GatewayError::WorkerFailed {
            worker: worker.to_owned(),
            detail,
        }
    }
}
impl Forwarder {
    /// After an attempt failed (`failure`: the client's error; `None`: no response headers
    /// within the upstream timeout): ends the pick and decides whether another worker gets
    /// the request.
    pub(super) fn judge(
        &self,
        directory: &Directory,
        service: &str,
        picked: &Picked,
        failure: Option<hyper_util::client::legacy::Error>,
        replayable: bool,
        tries: &mut Attempts,
    ) -> Next {
        // The worker's latency runs from when it had the whole request (from the arrival
        // when it never took all of it).
        let started = tries
            .upload
            .as_ref()
            .and_then(|u| u.ended_at())
            .unwrap_or(tries.started);
        if let Some(how) = tries.upload.as_ref().and_then(|u| u.client_failure()) {
            // The client broke off or stalled its upload: not the worker's failure.
            debug!(worker = %picked.id, service, ?how, "request body failed on the client's side");
            directory.finish(
                picked,
                Outcome::Cancelled,
                started.elapsed(),
                Instant::now(),
            );
            let err = match how {
                UploadFailure::Stalled => GatewayError::RequestTimeout {
                    after_ms: u64::try_from(self.read_timeout.as_millis()).unwrap_or(u64::MAX),
                },
                UploadFailure::Broke => {
                    GatewayError::BadRequest("the request body broke off".into())
                }
            };
            return Next::Fail((err, Some(picked.source)));
        }
        let err = match failure {
            None => GatewayError::WorkerTimeout {
                worker: picked.id.to_string(),
                after_ms: u64::try_from(self.upstream_timeout.as_millis()).unwrap_or(u64::MAX),
            },
            Some(e) => {
                let failure = Failure::of(&e);
                if failure.may_retry(tries.resend_after_break)
                    && replayable
                    && tries.made < self.max_attempts
                {
                    debug!(worker = %picked.id, service, error = %e, "worker unreachable; trying another");
                    directory.finish(picked, Outcome::Failure, started.elapsed(), Instant::now());
                    self.metrics
                        .retries
                        .get_or_create(&ServiceLabels {
                            service: service.to_owned(),
                        })
                        .inc();
                    tries.unreachable =
                        Some((failure.error(&picked.id, self.max_body), picked.source));
                    // Only a worker that was never reached leaves rotation at once: after a
                    // break the request did arrive, and the failure above counts as one.
                    tries.avoid = (failure == Failure::Connect).then_some(picked.key);
                    return Next::Retry;
                }
                debug!(worker = %picked.id, error = %e, "forwarding error");
                failure.error(&picked.id, self.max_body)
            }
        };
        // A body over the limit is the client's fault, not the worker's.
        let outcome = if matches!(err, GatewayError::PayloadTooLarge { .. }) {
            Outcome::Cancelled
        } else {
            Outcome::Failure
        };
        warn!(worker = %picked.id, service, code = err.code(), "forwarding failed");
        directory.finish(picked, outcome, started.elapsed(), Instant::now());
        if matches!(err, GatewayError::WorkerTimeout { .. }) {
            // No response head in time: the first byte's deadline, missed before the body.
            let kind = Deadline::Ttfb.label();
            directory.deadline_missed(picked.key, kind, started.elapsed(), Instant::now());
        }
        Next::Fail((err, Some(picked.source)))
    }
}
