//! The forwarder: sends a frontend's request to a worker's tunnel URL and streams the answer.
//!
//! Rules (docs/gateway.md has the long form):
//! - one pooled client (hyper-util's legacy client over hyper-rustls, http/1.1 and h2 by
//!   ALPN), no system proxy, a DNS resolver that applies the upstream policy to every resolved
//!   address; the request and response bodies pass through without re-wrapping;
//! - hop-by-hop headers stripped both ways (RFC 9110 §7.6.1, plus those named in
//!   `Connection`), `Host` set from the upstream URL, `X-Forwarded-For/-Host/-Proto` added;
//! - request bodies up to [`REPLAY_BUFFER`] bytes are buffered so that the request can be
//!   re-sent; larger or chunked bodies stream through and are never re-sent;
//! - a request is re-sent to another worker only when the first could not be connected to
//!   (the request never reached it); anything after that is a 502/504 for this request;
//! - the worker's in-flight slot is held until the response body ends (or the client goes
//!   away), and the outcome and latency go back to the scheduler then.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use tracing::{debug, warn};

use crate::config::Config;
use crate::directory::{Directory, Finish, Picked, Requirements, Source, WorkerKey};
use crate::error::GatewayError;
use crate::metrics::{Metrics, RequestLabels, ServiceLabels};
use crate::policy::{GuardedResolver, UpstreamPolicy};

mod body;
mod headers;
mod send;

use body::{FinishGuard, Tracked};
pub use headers::{forward_headers, strip_hop_by_hop};
use send::{Hedge, HedgeBudget, PickGuard};

/// The pooled upstream client.
type UpstreamClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>;

/// Why the forwarding client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(String);

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
    /// Method.
    pub method: Method,
    /// Incoming headers.
    pub headers: HeaderMap,
    /// Incoming body.
    pub body: Body,
    /// The frontend's address, when known.
    pub client: Option<SocketAddr>,
    /// Worker filter taken from the `x-gpumesh-*` headers.
    pub requirements: Requirements,
}

/// The pooled client and the forwarding rules.
#[derive(Debug, Clone)]
pub struct Forwarder {
    client: UpstreamClient,
    upstream_timeout: Duration,
    read_timeout: Duration,
    max_body: usize,
    max_attempts: u32,
    /// Hedge safe requests after this long without response headers (`None`: never).
    hedge_after: Option<Duration>,
    hedges: Arc<HedgeBudget>,
    metrics: Metrics,
    ok_series: Arc<OkSeries>,
}

/// Cached handles of the `outcome="ok"` request series, per service and source, so the hot
/// path neither allocates label strings nor hashes them into the families. Services here
/// are only those a worker was picked for (bounded like the labels themselves).
#[derive(Debug, Default)]
struct OkSeries(RwLock<HashMap<String, Arc<ServiceSeries>>>);

#[derive(Debug)]
struct ServiceSeries {
    service: Arc<str>,
    by_source: [OnceLock<(Counter, Histogram)>; 2],
}

impl OkSeries {
    fn get(&self, service: &str) -> Arc<ServiceSeries> {
        if let Some(s) = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
        {
            return Arc::clone(s);
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(service.to_owned()).or_insert_with(|| {
            Arc::new(ServiceSeries {
                service: Arc::from(service),
                by_source: [OnceLock::new(), OnceLock::new()],
            })
        }))
    }
}

impl ServiceSeries {
    fn ok(&self, metrics: &Metrics, source: Source) -> (Counter, Histogram) {
        let slot = match source {
            Source::Dht => 0,
            Source::Registry => 1,
        };
        self.by_source[slot]
            .get_or_init(|| {
                let l = RequestLabels {
                    service: self.service.to_string(),
                    outcome: "ok".to_owned(),
                    source: source.as_str().to_owned(),
                };
                (
                    metrics.requests.get_or_create(&l).clone(),
                    metrics.request_duration.get_or_create(&l).clone(),
                )
            })
            .clone()
    }
}

/// The request body in the form it is sent: re-sendable or a one-shot stream.
enum OutBody {
    Replayable(Bytes),
    Streaming(Option<Body>),
}

impl Forwarder {
    /// Builds the pooled client.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, ClientError> {
        let policy = UpstreamPolicy::new(config.allow_private_upstreams);
        let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.upstream_idle_per_host)
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(Self {
            client,
            upstream_timeout: config.upstream_timeout,
            read_timeout: config.read_timeout,
            max_body: config.max_body_bytes,
            max_attempts: config.max_attempts,
            hedge_after: config.hedge_after,
            hedges: Arc::default(),
            metrics,
            ok_series: Arc::default(),
        })
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
        let started = Instant::now();
        let service = std::mem::take(&mut req.service);
        self.attempt(directory, &service, req, started)
            .await
            .map_err(|(err, source)| {
                let service = if directory.knows_service(&service) {
                    service
                } else {
                    "unknown".to_owned()
                };
                let l = RequestLabels {
                    service,
                    outcome: err.code().to_owned(),
                    source: source.map_or("none", Source::as_str).to_owned(),
                };
                self.metrics.requests.get_or_create(&l).inc();
                self.metrics
                    .request_duration
                    .get_or_create(&l)
                    .observe(started.elapsed().as_secs_f64());
                err
            })
    }

    async fn attempt(
        &self,
        directory: &Arc<Directory>,
        service: &str,
        mut req: Outbound,
        started: Instant,
    ) -> Result<Response<Body>, (GatewayError, Option<Source>)> {
        let declared = content_length(&req.headers);
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err((
                GatewayError::PayloadTooLarge {
                    limit: self.max_body,
                },
                None,
            ));
        }
        let has_body =
            declared.is_some_and(|n| n > 0) || req.headers.contains_key(header::TRANSFER_ENCODING);
        let mut body = if !has_body {
            OutBody::Replayable(Bytes::new())
        } else if declared.is_some_and(|n| n <= REPLAY_BUFFER as u64) {
            let limited = Limited::new(req.body, REPLAY_BUFFER.min(self.max_body));
            match limited.collect().await {
                Ok(collected) => OutBody::Replayable(collected.to_bytes()),
                Err(e) if e.is::<LengthLimitError>() => {
                    return Err((
                        GatewayError::PayloadTooLarge {
                            limit: self.max_body,
                        },
                        None,
                    ));
                }
                Err(_) => {
                    let err = GatewayError::BadRequest("the request body broke off".into());
                    return Err((err, None));
                }
            }
        } else {
            OutBody::Streaming(Some(req.body))
        };
        // Read before the headers move into the request: whether a connection that broke
        // before any answer may be retried on another worker (the request may have reached it).
        let resend_after_break = send::resend_after_break(&req.method, &req.headers);
        let mut headers = forward_headers(std::mem::take(&mut req.headers), req.client);
        let mut avoid: Option<WorkerKey> = None;
        let mut attempts = 0u32;
        let mut unreachable: Option<(GatewayError, Source)> = None;
        loop {
            let picked = match directory.pick(&req.requirements, avoid, Instant::now()) {
                Ok(picked) => picked,
                Err(e) => {
                    // Nobody else to try: the caller hears about the worker that failed.
                    return Err(match unreachable.take() {
                        Some((err, source)) => (err, Some(source)),
                        None => (e, None),
                    });
                }
            };
            let uri = match upstream_uri(&picked, &req.path, req.query.as_deref()) {
                Ok(uri) => uri,
                Err(()) => {
                    directory.finish(&picked, Finish::Cancelled, Duration::ZERO, Instant::now());
                    let err = GatewayError::BadRequest("the path or query is not valid".into());
                    return Err((err, None));
                }
            };
            let send_body = match &mut body {
                OutBody::Replayable(bytes) if bytes.is_empty() => Body::empty(),
                OutBody::Replayable(bytes) => Body::from(bytes.clone()),
                OutBody::Streaming(stream) => {
                    let Some(stream) = stream.take() else {
                        let detail = "request body already sent";
                        return Err((
                            GatewayError::WorkerFailed {
                                worker: picked.id,
                                detail,
                            },
                            Some(picked.source),
                        ));
                    };
                    Body::new(Limited::new(stream, self.max_body))
                }
            };
            let mut request = Request::new(send_body);
            *request.method_mut() = req.method.clone();
            *request.uri_mut() = uri;
            attempts += 1;
            // The headers are moved into the request when it cannot be re-sent anyway.
            *request.headers_mut() = if attempts < self.max_attempts && may_resend(&body) {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            // A safe request with a re-sendable body may be hedged to a second worker.
            let hedge_copy = match (&body, self.hedge_after) {
                (OutBody::Replayable(bytes), Some(after)) if send::is_safe(&req.method) => {
                    self.hedges.eligible();
                    let mut copy = Request::new(Body::from(bytes.clone()));
                    *copy.method_mut() = req.method.clone();
                    *copy.headers_mut() = request.headers().clone();
                    Some((after, copy))
                }
                _ => None,
            };
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
                started,
            };
            let (picked, sent) =
                send::send(&self.client, guard, request, self.upstream_timeout, hedge).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    return Ok(self.respond(
                        directory,
                        picked,
                        service,
                        resp,
                        started,
                        req.method == Method::HEAD,
                    ));
                }
                Err(()) => GatewayError::WorkerTimeout {
                    worker: picked.id.clone(),
                    after_ms: u64::try_from(self.upstream_timeout.as_millis()).unwrap_or(u64::MAX),
                },
                Ok(Err(e)) => {
                    let failure = Failure::of(&e);
                    let replayable = matches!(body, OutBody::Replayable(_));
                    if failure.may_retry(resend_after_break)
                        && replayable
                        && attempts < self.max_attempts
                    {
                        debug!(worker = %picked.id, service, error = %e, "worker unreachable; trying another");
                        directory.finish(
                            &picked,
                            Finish::Failure,
                            started.elapsed(),
                            Instant::now(),
                        );
                        self.metrics
                            .retries
                            .get_or_create(&ServiceLabels {
                                service: service.to_owned(),
                            })
                            .inc();
                        unreachable =
                            Some((failure.error(&picked.id, self.max_body), picked.source));
                        avoid = Some(picked.key);
                        continue;
                    }
                    debug!(worker = %picked.id, error = %e, "forwarding error");
                    failure.error(&picked.id, self.max_body)
                }
            };
            // A body over the limit is the client's fault, not the worker's.
            let finish = if matches!(err, GatewayError::PayloadTooLarge { .. }) {
                Finish::Cancelled
            } else {
                Finish::Failure
            };
            warn!(worker = %picked.id, service, code = err.code(), "forwarding failed");
            directory.finish(&picked, finish, started.elapsed(), Instant::now());
            return Err((err, Some(picked.source)));
        }
    }

    fn respond(
        &self,
        directory: &Arc<Directory>,
        picked: Picked,
        service: &str,
        resp: Response<Incoming>,
        started: Instant,
        method_is_head: bool,
    ) -> Response<Body> {
        let (mut parts, incoming) = resp.into_parts();
        let status = parts.status;
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(v) = HeaderValue::from_str(&picked.id) {
            parts
                .headers
                .insert(HeaderName::from_static(WORKER_HEADER), v);
        }
        parts.headers.insert(
            HeaderName::from_static(SOURCE_HEADER),
            HeaderValue::from_static(picked.source.as_str()),
        );
        let series = self.ok_series.get(service);
        let guard = FinishGuard {
            directory: Arc::clone(directory),
            ok: series.ok(&self.metrics, picked.source),
            service: Arc::clone(&series.service),
            metrics: self.metrics.clone(),
            picked,
            started,
            server_error: status.is_server_error(),
            done: false,
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
        let mut tracked = Tracked {
            inner: incoming,
            guard,
            remaining,
            read_timeout: self.read_timeout,
            timer: None,
            armed: false,
        };
        if remaining == Some(0) {
            tracked.guard.finish(Some(true));
        }
        Response::from_parts(parts, Body::new(tracked))
    }
}

/// Whether a failed attempt could be followed by another (the headers must then be kept).
fn may_resend(body: &OutBody) -> bool {
    matches!(body, OutBody::Replayable(_))
}

/// How sending to a worker failed, read once from the client error's source chain: what the
/// caller hears, and whether another worker may be tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
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
    fn of(e: &hyper_util::client::legacy::Error) -> Self {
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
    /// after a break only when a repeat is harmless ([`send::resend_after_break`]).
    fn may_retry(self, after_break: bool) -> bool {
        self == Self::Connect || (after_break && self == Self::Broke)
    }

    fn error(self, worker: &str, limit: usize) -> GatewayError {
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
fn upstream_uri(picked: &Picked, path: &str, query: Option<&str>) -> Result<Uri, ()> {
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
