//! The worker's response body, tracked: the pick ends exactly once, when the body has ended,
//! failed, stalled past the read timeout, or the client went away.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use gpumesh_scheduler::Outcome;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::Sleep;
use tracing::debug;

use super::recorder::Ending;
use crate::directory::{Directory, Picked};

/// Ends a forwarded request exactly once: in-flight released, outcome to the scheduler and the
/// metrics. Dropped unfinished means the frontend went away (not the worker's fault).
pub(super) struct FinishGuard {
    pub(super) directory: Arc<Directory>,
    pub(super) picked: Picked,
    pub(super) started: Instant,
    pub(super) ending: Ending,
    pub(super) server_error: bool,
    pub(super) done: bool,
}

impl FinishGuard {
    pub(super) fn finish(&mut self, body_ok: Option<bool>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (outcome, label) = match body_ok {
            Some(true) if !self.server_error => (Outcome::Success, None),
            Some(true) => (Outcome::Failure, Some("upstream_5xx")),
            Some(false) => (Outcome::Failure, Some("body_failed")),
            None => (Outcome::Cancelled, Some("client_gone")),
        };
        self.directory.finish(
            &self.picked,
            outcome,
            self.started.elapsed(),
            Instant::now(),
        );
        self.ending.record(label, self.started);
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The error a tracked body ends with.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The worker's response body, finishing its [`FinishGuard`] when it ends, and failing when
/// the worker sends nothing for `read_timeout`.
pub(super) struct Tracked {
    pub(super) inner: Incoming,
    pub(super) guard: FinishGuard,
    /// Bytes still expected when the worker sent a Content-Length.
    pub(super) remaining: Option<u64>,
    pub(super) read_timeout: Duration,
    /// The read timer, created on the first wait and re-armed on later ones.
    pub(super) timer: Option<Pin<Box<Sleep>>>,
    pub(super) armed: bool,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.read_timeout;
                if !this.armed {
                    this.armed = true;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                if let Some(t) = &mut this.timer {
                    ready!(t.as_mut().poll(cx));
                }
                debug!(worker = %this.guard.picked.id, "worker response body stalled");
                this.guard.finish(Some(false));
                Poll::Ready(Some(Err(
                    "the worker stopped sending the response body".into()
                )))
            }
            Poll::Ready(polled) => {
                this.armed = false;
                match &polled {
                    Some(Ok(frame)) => {
                        if let (Some(left), Some(chunk)) = (this.remaining, frame.data_ref()) {
                            let left = left.saturating_sub(chunk.len() as u64);
                            this.remaining = Some(left);
                            if left == 0 {
                                this.guard.finish(Some(true));
                            }
                        }
                    }
                    None => this.guard.finish(Some(true)),
                    Some(Err(e)) => {
                        debug!(worker = %this.guard.picked.id, error = %e, "worker response body failed");
                        this.guard.finish(Some(false));
                    }
                }
                Poll::Ready(polled.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Only once the guard has finished: hyper would otherwise drop the body unpolled.
        self.guard.done && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
