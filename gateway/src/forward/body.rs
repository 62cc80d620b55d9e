//! The worker's response body, tracked: the pick ends exactly once, when the body has ended,
//! failed, or the client went away.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use futures::{Stream, TryStreamExt};
use tracing::debug;

use crate::directory::{Directory, Finish, Picked};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{HistogramFamily, RequestLabels};

/// Ends a forwarded request exactly once: in-flight released, outcome to the scheduler and the
/// metrics. Dropped unfinished means the frontend went away (not the worker's fault).
pub(super) struct FinishGuard {
    pub(super) directory: Arc<Directory>,
    pub(super) picked: Picked,
    pub(super) started: Instant,
    pub(super) requests: Family<RequestLabels, Counter>,
    pub(super) durations: HistogramFamily<RequestLabels>,
    pub(super) labels: RequestLabels,
    pub(super) server_error: bool,
    pub(super) done: bool,
}

impl FinishGuard {
    pub(super) fn finish(&mut self, body_ok: Option<bool>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let outcome = match body_ok {
            Some(true) if !self.server_error => Finish::Success,
            Some(_) => Finish::Failure,
            None => Finish::Cancelled,
        };
        if body_ok == Some(false) {
            self.labels.outcome = "body_failed".to_owned();
        } else if body_ok.is_none() {
            self.labels.outcome = "client_gone".to_owned();
        }
        self.directory
            .finish(&self.picked, outcome, elapsed, Instant::now());
        self.requests.get_or_create(&self.labels).inc();
        self.durations
            .get_or_create(&self.labels)
            .observe(elapsed.as_secs_f64());
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.finish(None);
    }
}

pub(super) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// The worker's response body, finishing its [`FinishGuard`] when it ends.
pub(super) struct Tracked {
    pub(super) inner: ByteStream,
    pub(super) guard: FinishGuard,
    /// Bytes still expected when the worker sent a Content-Length.
    pub(super) remaining: Option<u64>,
}

impl Stream for Tracked {
    type Item = Result<Bytes, reqwest::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().try_poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(left) = self.remaining {
                    let left = left.saturating_sub(chunk.len() as u64);
                    self.remaining = Some(left);
                    if left == 0 {
                        self.guard.finish(Some(true));
                    }
                }
            }
            Poll::Ready(None) => self.guard.finish(Some(true)),
            Poll::Ready(Some(Err(e))) => {
                debug!(worker = %self.guard.picked.id, error = %e, "worker response body failed");
                self.guard.finish(Some(false));
            }
            Poll::Pending => {}
        }
        polled
    }
}
