//! Sending one request to a picked worker, optionally hedged.
//!
//! Hedging (Dean and Barroso, "The Tail at Scale", CACM 2013; Finagle's backup requests):
//! when `--hedge-after-ms` is set and a *safe* request (GET, HEAD, OPTIONS) with a re-sendable
//! body has had no response headers from its worker after that delay, the same request goes
//! to a second worker (the scheduler's `pick_other`) and whichever answers first is used; the
//! other is dropped (its pick ends as `Cancelled`). A worker that is slow right now (a T4
//! behind a queue, a GPU that just throttled) then costs the client the hedge delay plus a
//! fast worker's time, not its own tail. The price is duplicate work on the workers, so
//! hedges are capped at [`HEDGE_BUDGET`] of the hedge-eligible requests.
//!
//! Why not retry after the upstream timeout instead: by then the client's own deadline has
//! usually passed, and a timed-out worker is most often an overloaded one, so re-sending
//! adds load exactly where there is none to spare. Unsafe methods (POST, PUT, DELETE, …) are
//! never hedged: the gateway cannot know whether running them twice is harmless.
//!
//! Re-sending after a failure is a separate, narrower rule (in `retry`): a worker that could
//! not be connected to never saw the request, so any re-sendable request goes to another
//! worker. A connection that broke *after* the request went out (the worker's machine died
//! mid-request) is retried only for idempotent methods and for requests that carry an
//! `Idempotency-Key` header, the client's statement that a repeat is harmless.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::debug;

use gpumesh_scheduler::Outcome;

use super::upload::UploadState;
use crate::directory::{Directory, Picked, Requirements};

/// Share of hedge-eligible requests that may be hedged (plus a small burst allowance).
pub const HEDGE_BUDGET: f64 = 0.05;
/// Hedges allowed beyond the budget's share, so that a quiet gateway can hedge at all.
const HEDGE_BURST: u64 = 10;

/// The result of sending: the worker's answer or error, or `Err(())` when no response
/// headers came within the upstream timeout.
pub(super) type Sent = Result<Result<Response<Incoming>, hyper_util::client::legacy::Error>, ()>;

/// Whether a request may be sent twice: a safe method (RFC 9110 §9.2.1).
pub(super) fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Counts hedge-eligible requests and hedges sent, to keep hedges within the budget.
#[derive(Debug, Default)]
pub(super) struct HedgeBudget {
    eligible: AtomicU64,
    sent: AtomicU64,
}

impl HedgeBudget {
    /// Records one hedge-eligible request.
    pub(super) fn eligible(&self) {
        self.eligible.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one hedge from the budget, if there is one left.
    pub(super) fn try_take(&self) -> bool {
        let eligible = self.eligible.load(Ordering::Relaxed);
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let allowed = (eligible as f64 * HEDGE_BUDGET) as u64 + HEDGE_BURST;
        self.sent
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sent| {
                (sent < allowed).then_some(sent + 1)
            })
            .is_ok()
    }
}

/// Ends a pick as `Cancelled` when dropped armed (the frontend left while the worker had the
/// request and no response headers had come back yet, or a hedge lost the race).
pub(super) struct PickGuard<'a> {
    pub(super) directory: &'a Directory,
    pub(super) picked: Option<Picked>,
    pub(super) started: Instant,
}

impl PickGuard<'_> {
    pub(super) fn disarm(mut self) -> Picked {
        self.picked.take().expect("a guard is disarmed once")
    }

    /// Ends the pick now as a failure (the worker failed while another was still trying).
    fn fail(self) {
        let started = self.started;
        let directory = self.directory;
        let picked = self.disarm();
        directory.finish(&picked, Outcome::Failure, started.elapsed(), Instant::now());
    }
}

impl Drop for PickGuard<'_> {
    fn drop(&mut self) {
        if let Some(picked) = self.picked.take() {
            debug!(worker = %picked.id, "pick abandoned before the worker answered");
            self.directory.finish(
                &picked,
                Outcome::Cancelled,
                self.started.elapsed(),
                Instant::now(),
            );
        }
    }
}

/// What a hedge needs: the delay, a copy of the request (its URI is set for the second
/// worker), the requirements to pick it with, and the budget.
pub(super) struct Hedge<'a> {
    pub(super) after: Duration,
    pub(super) copy: Request<Body>,
    pub(super) requirements: &'a Requirements,
    pub(super) budget: &'a HedgeBudget,
    /// Builds the request URI for a worker (`None`: the path cannot be sent to it).
    pub(super) uri_for: &'a (dyn Fn(&Picked) -> Option<axum::http::Uri> + Sync),
}

/// Sends `request` to `guard`'s worker, waiting at most `timeout` for the response headers
/// (with a streamed `upload`, `timeout` of the gateway's own waiting for the worker, see
/// [`UploadState::head_overdue`]); with `hedge`, races a copy against a second worker once
/// `hedge.after` has passed. Returns the pick the answer (or the last failure) belongs to;
/// any other pick has been ended.
pub(super) async fn send<'a>(
    client: &super::client::UpstreamClient,
    guard: PickGuard<'a>,
    request: Request<Body>,
    timeout: Duration,
    hedge: Option<Hedge<'_>>,
    upload: Option<&UploadState>,
) -> (Picked, Sent) {
    let Some(hedge) = hedge else {
        let head = client.request(request);
        let sent = match upload {
            None => tokio::time::timeout(timeout, head).await.map_err(|_| ()),
            Some(upload) => tokio::select! {
                answer = head => Ok(answer),
                () = upload.head_overdue(timeout) => Err(()),
            },
        };
        return (guard.disarm(), sent);
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = client.request(request);
    let hedge_at = (tokio::time::Instant::now() + hedge.after).min(deadline);
    match tokio::time::timeout_at(hedge_at, &mut first).await {
        Ok(result) => return (guard.disarm(), Ok(result)),
        Err(_) if hedge_at >= deadline => return (guard.disarm(), Err(())),
        Err(_) => {}
    }
    let directory = guard.directory;
    let started = guard.started;
    let primary_key = guard.picked.as_ref().map(|p| p.key);
    let other = if hedge.budget.try_take() {
        directory
            .pick(hedge.requirements, primary_key, Instant::now())
            .ok()
    } else {
        None
    };
    let Some((other, uri)) = other.and_then(|o| {
        let uri = (hedge.uri_for)(&o);
        match uri {
            Some(uri) => Some((o, uri)),
            None => {
                directory.finish(&o, Outcome::Cancelled, Duration::ZERO, Instant::now());
                None
            }
        }
    }) else {
        let sent = tokio::time::timeout_at(deadline, first)
            .await
            .map_err(|_| ());
        return (guard.disarm(), sent);
    };
    debug!(first = ?guard.picked.as_ref().map(|p| &p.id), second = %other.id, "hedging");
    let mut copy = hedge.copy;
    *copy.uri_mut() = uri;
    let backup = PickGuard {
        directory,
        picked: Some(other),
        started,
    };
    let mut second = client.request(copy);
    tokio::select! {
        result = &mut first => match result {
            // The backup is dropped on return: its pick ends as Cancelled.
            Ok(resp) => (guard.disarm(), Ok(Ok(resp))),
            Err(_) => {
                guard.fail();
                let sent = tokio::time::timeout_at(deadline, second).await.map_err(|_| ());
                (backup.disarm(), sent)
            }
        },
        result = &mut second => match result {
            Ok(resp) => (backup.disarm(), Ok(Ok(resp))),
            Err(_) => {
                backup.fail();
                let sent = tokio::time::timeout_at(deadline, first).await.map_err(|_| ());
                (guard.disarm(), sent)
            }
        },
        () = tokio::time::sleep_until(deadline) => {
            // Neither answered in time: both failed; the primary is reported.
            backup.fail();
            (guard.disarm(), Err(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_hedged() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(is_safe(&m), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!is_safe(&m), "{m}");
        }
    }

    #[test]
    fn hedges_stay_within_the_budget() {
        let budget = HedgeBudget::default();
        for _ in 0..1000 {
            budget.eligible();
        }
        let taken = (0..1000).filter(|_| budget.try_take()).count();
        // 5 % of 1000 plus the burst of 10.
        assert_eq!(taken, 60);
    }
}
