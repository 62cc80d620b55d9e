//! Sending one check request (a canary or a replay) to a picked worker and reading its whole
//! answer within a deadline, through the forwarder's pooled, SSRF-guarded client.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use gpumesh_scheduler::Outcome;
use http_body_util::{BodyExt, Limited};

use crate::directory::{Directory, Picked};
use crate::forward::{Forwarder, upstream_uri};

/// Largest answer a check reads (a canary's or a replay's).
pub(super) const MAX_ANSWER: usize = 1024 * 1024;

/// One check request.
pub(super) struct CheckRequest<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) headers: &'a [(HeaderName, HeaderValue)],
    pub(super) body: Bytes,
    pub(super) deadline: Duration,
}

/// How a check request went.
#[derive(Debug)]
pub(super) enum Reply {
    /// A whole answer came in time.
    Answer(StatusCode, Bytes),
    /// No whole answer within the deadline.
    Late,
    /// The worker could not be reached, broke the exchange or sent too much.
    Broken,
}

/// Sends `req` to `picked`; the caller ends the pick with [`finish`] once it has judged the
/// answer. Returns the reply and how long it took.
pub(super) async fn send(
    forwarder: &Forwarder,
    picked: &Picked,
    req: CheckRequest<'_>,
) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = match build(picked, &req) {
        Some(request) => {
            let exchange = async {
                let resp = forwarder.send_check(request).await.ok()?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .ok()?;
                Some((status, body.to_bytes()))
            };
            match tokio::time::timeout(req.deadline, exchange).await {
                Ok(Some((status, body))) => Reply::Answer(status, body),
                Ok(None) => Reply::Broken,
                Err(_) => Reply::Late,
            }
        }
        None => Reply::Broken,
    };
    (reply, started.elapsed())
}

/// Ends a check's pick: in-flight released, the outcome (`right`: a good answer) and latency
/// to the scheduler.
pub(super) fn finish(directory: &Directory, picked: &Picked, right: bool, took: Duration) {
    let outcome = if right {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    directory.finish(picked, outcome, took, Instant::now());
}

fn build(picked: &Picked, req: &CheckRequest<'_>) -> Option<Request<Body>> {
    let uri = upstream_uri(picked, req.path, req.query).ok()?;
    let mut request = Request::new(Body::from(req.body.clone()));
    *request.method_mut() = req.method.clone();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for (name, value) in req.headers {
        headers.insert(name.clone(), value.clone());
    }
    Some(request)
}
