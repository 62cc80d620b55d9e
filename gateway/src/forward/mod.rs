//! The forwarder: sends a frontend's request to a worker's tunnel URL and streams the answer.
//!
//! Rules (docs/gateway.md has the long form):
//! - one pooled client ([`client`]); the request and response bodies pass through without
//!   re-wrapping;
//! - hop-by-hop headers stripped both ways (RFC 9110 §7.6.1, plus those named in
//!   `Connection`), `Host` set from the upstream URL, `X-Forwarded-For/-Host/-Proto` and
//!   `Via` added, client credentials kept from workers, worker headers that would act on the
//!   gateway's origin dropped ([`headers`]);
//! - a request that carries this gateway's own `Via` entry has looped back through a worker
//!   record that points at a gateway, and is refused (508) before any worker is picked;
//! - request bodies up to [`REPLAY_BUFFER`] bytes are buffered so that the request can be
//!   re-sent; larger, chunked or (HTTP/2) unsized bodies stream through and are never re-sent,
//!   and the worker's head timeout runs only while the gateway waits for the worker, not for
//!   the client's upload ([`upload`]);
//! - a request goes to another worker only as [`retry`] allows; safe requests may be hedged
//!   ([`hedge`]);
//! - the worker's in-flight slot is held until the response body ends (or the client goes
//!   away, or a deadline passes), and the outcome and latency go back to the scheduler then
//!   ([`body`]);
//! - an [`AnswerTap`] hears of every request and gets a copy of a sampled few small answers
//!   for cross-checks ([`tap`]);
//! - every request is counted once, in [`recorder`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode, Uri};
use gpumesh_scheduler::Outcome;
use http_body_util::Limited;
use hyper::body::Incoming;

use crate::config::Config;
use crate::directory::{Directory, Picked, Requirements};
use crate::error::{ClientError, GatewayError};
use crate::metrics::Metrics;
use crate::sources::Source;

mod body;
mod client;
mod headers;
mod hedge;
mod recorder;
mod retry;
mod tap;
mod upload;

pub use body::Deadline;
use body::{Deadlines, FinishGuard, Tracked};
pub use headers::{HeaderRules, strip_hop_by_hop};
use hedge::{Hedge, HedgeBudget, PickGuard};
pub use recorder::RequestMetrics;
use retry::Attempts;
pub use retry::IDEMPOTENCY_KEY;
pub use tap::{AnswerTap, Served, TEE_LIMIT};
use tap::{Draft, Tee};
use upload::{OutBody, UploadState, Watched};

/// Request bodies up to this size are buffered and may be re-sent to another worker.
pub const REPLAY_BUFFER: usize = 64 * 1024;

/// Response header naming the worker that served the request.
pub const WORKER_HEADER: &str = "x-gpumesh-worker";
/// Response header saying where the worker came from: `dht` or `registry`.
pub const SOURCE_HEADER: &str = "x-gpumesh-worker-source";

/// One incoming request, taken apart for forwarding.
#[derive(Debug)]
pub struct Outbound {
    /// Requested service.
    pub service: String,
    /// Path below `/api/service/{service}/`, still percent-encoded, without a leading `/`.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// The request method.
    pub method: Method,
    /// Incoming headers.
    pub headers: HeaderMap,
    /// Incoming body.
    pub body: Body,
    /// The frontend's address, when known.
    pub client: Option<SocketAddr>,
    /// Worker filter taken from the `x-gpumesh-*` headers.
    pub requirements: Requirements,
    /// When the gateway received the request (the request metrics' clock).
    pub started: Instant,
}

/// The pooled client and the forwarding rules.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: client::UpstreamClient,
    upstream_timeout: Duration,
    read_timeout: Duration,
    ttfb_timeout: Duration,
    response_deadline: Duration,
    max_body: usize,
    max_attempts: u32,
    /// Hears of real requests and gets sampled answers (`None`: no answer checks).
    tap: Option<Arc<dyn AnswerTap>>,
    /// Hedge safe requests after this long without response headers (`None`: never).
    hedge_after: Option<Duration>,
    hedges: Arc<HedgeBudget>,
    metrics: Metrics,
    requests: RequestMetrics,
    /// How headers are rewritten both ways, and this gateway's `Via` name.
    headers: HeaderRules,
}

/// A failed request: the error and, when a worker was chosen, where it came from.
type Failed = (GatewayError, Option<Source>);

/// What `respond` needs of the request beside the worker's response.
struct Answer {
    /// When the gateway received the request (the request metrics' clock).
    started: Instant,
    /// When the worker had the whole request (the response deadlines run from here).
    sent: Instant,
    /// A HEAD request (its answer has no body).
    head: bool,
    /// The request kept for a cross-check, if sampled.
    draft: Option<Draft>,
}

/// What to do after one attempt failed.
enum Next {
    Retry,
    Fail(Failed),
}

impl Forwarder {
    /// Builds the pooled client.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised, or the `Via` name or a forwarded header
    /// name is invalid (`Config::validate` refuses those first).
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, ClientError> {
        let via_name = config.via_name.clone().unwrap_or_else(random_via_name);
        let allowed = config
            .forward_headers
            .iter()
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError(format!("forwarded header: {e}")))?;
        let headers = HeaderRules::new(&via_name, allowed, config.forwarded_for)
            .map_err(|e| ClientError(format!("via name: {e}")))?;
        Ok(Self {
            headers,
            client: client::build(config),
            upstream_timeout: config.upstream_timeout,
            read_timeout: config.read_timeout,
            ttfb_timeout: config.ttfb_timeout,
            response_deadline: config.response_deadline,
            tap: None,
            max_body: config.max_body_bytes,
            max_attempts: config.max_attempts,
            hedge_after: config.hedge_after,
            hedges: Arc::default(),
            requests: RequestMetrics::new(metrics.clone()),
            metrics,
        })
    }

    /// Tells `tap` about real requests and hands it sampled answers.
    #[must_use]
    pub fn with_tap(mut self, tap: Arc<dyn AnswerTap>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The pooled client's request, for answer checks: sent through the same pool and
    /// SSRF-guarded resolver as real requests.
    ///
    /// # Errors
    /// The client's error when no response headers came.
    pub async fn send_check(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(request).await
    }

    /// The response deadline requests run under.
    pub fn response_deadline(&self) -> Duration {
        self.response_deadline
    }

    /// Where every request is counted.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Forwards `req` to a worker chosen by `directory`, re-sending to another worker when the
    /// first cannot be reached and the body allows it. Every error is counted here once.
    ///
    /// # Errors
    /// A [`GatewayError`]: 400/404/413/503 before any worker is called, 502/504 after.
    pub async fn forward(
        &self,
        directory: &Arc<Directory>,
        mut req: Outbound,
    ) -> Result<Response<Body>, GatewayError> {
        let service = std::mem::take(&mut req.service);
        let started = req.started;
        if self.headers.is_loop(&req.headers) {
            let err = GatewayError::LoopDetected {
                via: self.headers.via_name().to_owned(),
            };
            self.requests
                .error(directory, &service, &err, None, started);
            return Err(err);
        }
        if let Some(tap) = &self.tap {
            tap.request(&service);
        }
        self.attempt(directory, &service, req)
            .await
            .map_err(|(err, source)| {
                self.requests
                    .error(directory, &service, &err, source, started);
                err
            })
    }

    async fn attempt(
        &self,
        directory: &Arc<Directory>,
        service: &str,
        mut req: Outbound,
    ) -> Result<Response<Body>, Failed> {
        let body = std::mem::replace(&mut req.body, Body::empty());
        let mut body = self
            .take_body(&req.method, &req.headers, body)
            .await
            .map_err(|e| (e, None))?;
        // Read before the headers move.
        let mut tries = Attempts::new(&req);
        let mut draft = match (&self.tap, &body) {
            (Some(tap), OutBody::Replayable(bytes)) => Draft::of(tap, service, &req, bytes),
            _ => None,
        };
        let mut headers = self
            .headers
            .request(std::mem::take(&mut req.headers), req.client);
        loop {
            let picked = tries.pick(directory, &req.requirements)?;
            let request = self.request_for(
                directory,
                &picked,
                &req,
                &mut body,
                &mut headers,
                &mut tries,
            )?;
            tries.made += 1;
            let hedge_copy = self.hedge_copy(&req.method, &body, &request);
            let (path, query) = (req.path.as_str(), req.query.as_deref());
            let uri_for = |p: &Picked| upstream_uri(p, path, query).ok();
            let hedge = hedge_copy.map(|(after, copy)| Hedge {
                after,
                copy,
                requirements: &req.requirements,
                budget: &self.hedges,
                uri_for: &uri_for,
            });
            // Until the answer's headers arrive, the frontend may go away (hyper then drops
            // this future): the guard ends the pick as `Cancelled`, so in-flight never leaks.
            let guard = PickGuard {
                directory,
                picked: Some(picked),
                started: req.started,
            };
            // The first-byte deadline bounds the wait for the head too: a worker that never
            // answers (a black hole) is cut at whichever comes first.
            let head_limit = self.upstream_timeout.min(self.ttfb_timeout);
            let upload = tries.upload.as_deref();
            let (picked, sent) =
                hedge::send(&self.client, guard, request, head_limit, hedge, upload).await;
            let failure = match sent {
                Ok(Ok(resp)) => {
                    let answer = Answer {
                        started: req.started,
                        sent: tries.sent_at(),
                        head: req.method == Method::HEAD,
                        draft: draft.take(),
                    };
                    return Ok(self.respond(directory, picked, service, resp, answer));
                }
                Err(()) => None,
                Ok(Err(e)) => Some(e),
            };
            let replayable = matches!(body, OutBody::Replayable(_));
            match self.judge(directory, service, &picked, failure, replayable, &mut tries) {
                Next::Retry => {}
                Next::Fail(failed) => return Err(failed),
            }
        }
    }

    /// The request to send to `picked`, with the body (re-sent or streamed once) and headers;
    /// when none can be built, the pick ends (`Cancelled`) and the error is returned.
    fn request_for(
        &self,
        directory: &Directory,
        picked: &Picked,
        req: &Outbound,
        body: &mut OutBody,
        headers: &mut HeaderMap,
        tries: &mut Attempts,
    ) -> Result<Request<Body>, Failed> {
        let cancel = |failed: Failed| {
            directory.finish(picked, Outcome::Cancelled, Duration::ZERO, Instant::now());
            failed
        };
        let uri = upstream_uri(picked, &req.path, req.query.as_deref()).map_err(|()| {
            let err = GatewayError::BadRequest("the path or query is not valid".into());
            cancel((err, None))
        })?;
        let send_body = match body {
            OutBody::Replayable(bytes) if bytes.is_empty() => Body::empty(),
            OutBody::Replayable(bytes) => Body::from(bytes.clone()),
            OutBody::Streaming(stream) => {
                let Some(stream) = stream.take() else {
                    let err = GatewayError::WorkerFailed {
                        worker: picked.id.to_string(),
                        detail: "request body already sent",
                    };
                    return Err(cancel((err, Some(picked.source))));
                };
                let state = Arc::new(UploadState::default());
                tries.upload = Some(Arc::clone(&state));
                let limited = Limited::new(stream, self.max_body);
                Body::new(Watched::new(limited, state, self.read_timeout))
            }
        };
        let mut request = Request::new(send_body);
        *request.method_mut() = req.method.clone();
        *request.uri_mut() = uri;
        // The headers are moved into the request when it cannot be re-sent anyway.
        let may_resend = matches!(body, OutBody::Replayable(_));
        *request.headers_mut() = if tries.made + 1 < self.max_attempts && may_resend {
            headers.clone()
        } else {
            std::mem::take(headers)
        };
        Ok(request)
    }

    /// A copy of a safe request with a re-sendable body, for a hedge to a second worker.
    fn hedge_copy(
        &self,
        method: &Method,
        body: &OutBody,
        request: &Request<Body>,
    ) -> Option<(Duration, Request<Body>)> {
        match (body, self.hedge_after) {
            (OutBody::Replayable(bytes), Some(after)) if hedge::is_safe(method) => {
                self.hedges.eligible();
                let mut copy = Request::new(Body::from(bytes.clone()));
                *copy.method_mut() = method.clone();
                *copy.headers_mut() = request.headers().clone();
                Some((after, copy))
            }
            _ => None,
        }
    }

    fn respond(
        &self,
        directory: &Arc<Directory>,
        picked: Picked,
        service: &str,
        resp: Response<Incoming>,
        answer: Answer,
    ) -> Response<Body> {
        let Answer {
            started,
            sent,
            head: method_is_head,
            draft,
        } = answer;
        let (mut parts, incoming) = resp.into_parts();
        let status = parts.status;
        self.headers.response(&mut parts.headers);
        if let Ok(v) = HeaderValue::from_str(&picked.id) {
            parts
                .headers
                .insert(HeaderName::from_static(WORKER_HEADER), v);
        }
        parts.headers.insert(
            HeaderName::from_static(SOURCE_HEADER),
            HeaderValue::from_static(picked.source.as_str()),
        );
        let guard = FinishGuard {
            directory: Arc::clone(directory),
            ending: self.requests.ending(service, picked.source),
            picked,
            started,
            sent,
            server_error: status.is_server_error(),
            done: false,
            tee: None,
        };
        // hyper stops polling a body once Content-Length bytes are out, so the end is
        // detected by counting, not only by the body's end.
        let bodiless = method_is_head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let remaining = if bodiless {
            Some(0)
        } else {
            content_length(&parts.headers)
        };
        let deadlines = Deadlines {
            ttfb: tokio::time::Instant::from_std(sent + self.ttfb_timeout),
            total: tokio::time::Instant::from_std(sent + self.response_deadline),
        };
        let mut tracked = Tracked::new(incoming, guard, remaining, self.read_timeout, deadlines);
        if status.is_success() && !bodiless {
            tracked.guard.tee = draft.and_then(|d| Tee::start(d, remaining));
        }
        if remaining == Some(0) {
            tracked.guard.finish(body::End::Complete);
        }
        Response::from_parts(parts, Body::new(tracked))
    }
}

/// A name no other gateway has: the standard library's per-process random hash keys.
fn random_via_name() -> String {
    use std::hash::BuildHasher as _;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("gpumesh-{random:016x}")
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `{tunnel_url}/{path}?{query}`, keeping the tunnel URL's own base path. The base URL was
/// parsed and checked once, when the record arrived.
pub(crate) fn upstream_uri(picked: &Picked, path: &str, query: Option<&str>) -> Result<Uri, ()> {
    let base = picked.url.as_str().trim_end_matches('/');
    let len = base.len() + 2 + path.len() + query.map_or(0, str::len);
    let mut s = String::with_capacity(len);
    s.push_str(base);
    s.push('/');
    s.push_str(path);
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    Uri::try_from(s).map_err(|_| ())
}
