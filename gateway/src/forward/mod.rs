//! The forwarder: sends a frontend's request to a worker's tunnel URL and streams the answer.
//!
//! Rules (docs/gateway.md has the long form):
//! - one pooled client (reqwest, rustls), no system proxy, a DNS resolver that applies the
//!   upstream policy to every resolved address;
//! - hop-by-hop headers stripped both ways (RFC 9110 §7.6.1, plus those named in
//!   `Connection`), `Host` set from the upstream URL, `X-Forwarded-For/-Host/-Proto` added;
//! - request bodies up to [`REPLAY_BUFFER`] bytes are buffered so that the request can be
//!   re-sent; larger or chunked bodies stream through and are never re-sent;
//! - a request is re-sent to another worker only when the first could not be connected to
//!   (the request never reached it); anything after that is a 502/504 for this request;
//! - the worker's in-flight slot is held until the response body ends (or the client goes
//!   away), and the outcome and latency go back to the scheduler then.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::{debug, warn};
use url::Url;

use crate::config::Config;
use crate::directory::{Directory, Finish, Picked, Requirements, Source, WorkerKey};
use crate::error::GatewayError;
use crate::metrics::{Metrics, RequestLabels, ServiceLabels};
use crate::policy::{GuardedResolver, UpstreamPolicy};

mod body;
mod headers;

use body::{FinishGuard, Tracked};
pub use headers::{forward_headers, strip_hop_by_hop};

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
    client: reqwest::Client,
    upstream_timeout: Duration,
    max_body: usize,
    max_attempts: u32,
    metrics: Metrics,
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
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, reqwest::Error> {
        let policy = UpstreamPolicy::new(config.allow_private_upstreams);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .dns_resolver(GuardedResolver::new(policy))
            .build()?;
        Ok(Self {
            client,
            upstream_timeout: config.upstream_timeout,
            max_body: config.max_body_bytes,
            max_attempts: config.max_attempts,
            metrics,
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
        req: Outbound,
    ) -> Result<Response<Body>, GatewayError> {
        let started = Instant::now();
        let service = req.service.clone();
        self.attempt(directory, req, started)
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
        let headers = forward_headers(std::mem::take(&mut req.headers), req.client);
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
            let url = upstream_url(&picked, &req.path, req.query.as_deref());
            let send_body = match &mut body {
                OutBody::Replayable(bytes) => reqwest::Body::from(bytes.clone()),
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
                    let limited = Limited::new(stream, self.max_body);
                    reqwest::Body::wrap_stream(limited.into_data_stream())
                }
            };
            let request = self
                .client
                .request(req.method.clone(), url)
                .headers(headers.clone())
                .body(send_body);
            attempts += 1;
            let sent = tokio::time::timeout(self.upstream_timeout, request.send()).await;
            let err = match sent {
                Ok(Ok(resp)) => {
                    let labels = RequestLabels {
                        service: req.service.clone(),
                        outcome: "ok".to_owned(),
                        source: picked.source.as_str().to_owned(),
                    };
                    return Ok(self.respond(
                        directory,
                        picked,
                        resp,
                        started,
                        labels,
                        req.method == Method::HEAD,
                    ));
                }
                Err(_) => GatewayError::WorkerTimeout {
                    worker: picked.id.clone(),
                    after_ms: u64::try_from(self.upstream_timeout.as_millis()).unwrap_or(u64::MAX),
                },
                Ok(Err(e)) => {
                    let replayable = matches!(body, OutBody::Replayable(_));
                    if e.is_connect() && replayable && attempts < self.max_attempts {
                        debug!(worker = %picked.id, service = %req.service, error = %e, "worker unreachable; trying another");
                        directory.finish(
                            &picked,
                            Finish::Failure,
                            started.elapsed(),
                            Instant::now(),
                        );
                        self.metrics
                            .retries
                            .get_or_create(&ServiceLabels {
                                service: req.service.clone(),
                            })
                            .inc();
                        let detail = "could not connect to the worker";
                        unreachable = Some((
                            GatewayError::WorkerFailed {
                                worker: picked.id.clone(),
                                detail,
                            },
                            picked.source,
                        ));
                        avoid = Some(picked.key);
                        continue;
                    }
                    debug!(worker = %picked.id, error = %e, "forwarding error");
                    classify(&e, &picked.id, self.max_body)
                }
            };
            // A body over the limit is the client's fault, not the worker's.
            let finish = if matches!(err, GatewayError::PayloadTooLarge { .. }) {
                Finish::Cancelled
            } else {
                Finish::Failure
            };
            warn!(worker = %picked.id, service = %req.service, code = err.code(), "forwarding failed");
            directory.finish(&picked, finish, started.elapsed(), Instant::now());
            return Err((err, Some(picked.source)));
        }
    }

    fn respond(
        &self,
        directory: &Arc<Directory>,
        picked: Picked,
        resp: reqwest::Response,
        started: Instant,
        mut labels: RequestLabels,
        method_is_head: bool,
    ) -> Response<Body> {
        let status = resp.status();
        if status.is_server_error() {
            labels.outcome = "upstream_5xx".to_owned();
        }
        let mut headers = resp.headers().clone();
        strip_hop_by_hop(&mut headers);
        if let Ok(v) = HeaderValue::from_str(&picked.id) {
            headers.insert(HeaderName::from_static(WORKER_HEADER), v);
        }
        headers.insert(
            HeaderName::from_static(SOURCE_HEADER),
            HeaderValue::from_static(picked.source.as_str()),
        );
        let guard = FinishGuard {
            directory: Arc::clone(directory),
            picked,
            started,
            requests: self.metrics.requests.clone(),
            durations: self.metrics.request_duration.clone(),
            labels,
            server_error: status.is_server_error(),
            done: false,
        };
        // hyper stops polling a body once Content-Length bytes are out, so the end is
        // detected by counting, not only by the stream's `None`.
        let bodiless = method_is_head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let remaining = if bodiless {
            Some(0)
        } else {
            resp.content_length()
        };
        let mut stream = Tracked {
            inner: Box::pin(resp.bytes_stream()),
            guard,
            remaining,
        };
        if remaining == Some(0) {
            stream.guard.finish(Some(true));
        }
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        out
    }
}

fn classify(e: &reqwest::Error, worker: &str, limit: usize) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<LengthLimitError>() {
            return GatewayError::PayloadTooLarge { limit };
        }
        source = s.source();
    }
    let worker = worker.to_owned();
    if e.is_timeout() {
        GatewayError::WorkerTimeout {
            worker,
            after_ms: 0,
        }
    } else if e.is_connect() {
        GatewayError::WorkerFailed {
            worker,
            detail: "could not connect to the worker",
        }
    } else if e.is_body() || e.is_request() {
        GatewayError::WorkerFailed {
            worker,
            detail: "the connection to the worker broke",
        }
    } else {
        GatewayError::WorkerFailed {
            worker,
            detail: "the worker's answer was invalid",
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

/// `{tunnel_url}/{path}?{query}`, keeping the tunnel URL's own base path.
fn upstream_url(picked: &Picked, path: &str, query: Option<&str>) -> Url {
    // The base URL was parsed and checked once, when the record arrived: only the path and
    // query are set here (no host parsing per request).
    let mut url = picked.url.clone();
    let joined = {
        let base = url.path().trim_end_matches('/');
        let mut p = String::with_capacity(base.len() + 1 + path.len());
        p.push_str(base);
        p.push('/');
        p.push_str(path);
        p
    };
    url.set_path(&joined);
    url.set_query(query);
    url
}
