//! The worker's response body, tracked: the pick ends exactly once, when the body has ended,
//! failed, stalled past the read timeout, missed a deadline, or the client went away.
//!
//! Deadlines run from the request's arrival: the first body byte (or the end of an empty
//! body) within the time-to-first-byte deadline, the whole body within the response
//! deadline. The read timeout alone bounds only the gap between two reads, so a worker that
//! sends one byte just inside it (a tarpit) would otherwise hold a request forever. A missed
//! deadline ends the body with an error (the client sees the stream break), finishes the pick
//! as a failure and lowers the worker's trust.

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
use super::tap::Tee;
use crate::directory::{Directory, Picked};

/// Which deadline a response missed (the `kind` label of `deadline_misses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No first byte of the body in time.
    Ttfb,
    /// The whole response not in time.
    Total,
}

impl Deadline {
    /// `ttfb` or `total`.
    pub fn label(self) -> &'static str {
        match self {
            Deadline::Ttfb => "ttfb",
            Deadline::Total => "total",
        }
    }
}

/// How a forwarded response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// The body ended.
    Complete,
    /// The body broke or stalled past the read timeout.
    Broken,
    /// A deadline passed.
    Missed(Deadline),
    /// The frontend went away.
    ClientGone,
}

/// Ends a forwarded request exactly once: in-flight released, outcome to the scheduler and the
/// metrics. Dropped unfinished means the frontend went away (not the worker's fault).
pub(super) struct FinishGuard {
    pub(super) directory: Arc<Directory>,
    pub(super) picked: Picked,
    /// When the gateway received the request (the request metrics' clock).
    pub(super) started: Instant,
    /// When the worker had the whole request (the worker's latency runs from here, so a
    /// client's slow upload is not counted against it).
    pub(super) sent: Instant,
    pub(super) ending: Ending,
    pub(super) server_error: bool,
    pub(super) done: bool,
    /// The answer kept for a cross-check, while it stays small.
    pub(super) tee: Option<Tee>,
}

impl FinishGuard {
    pub(super) fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let (outcome, label) = match end {
            End::Complete if !self.server_error => (Outcome::Success, None),
            End::Complete => (Outcome::Failure, Some("upstream_5xx")),
            End::Broken => (Outcome::Failure, Some("body_failed")),
            End::Missed(Deadline::Ttfb) => (Outcome::Failure, Some("deadline_ttfb")),
            End::Missed(Deadline::Total) => (Outcome::Failure, Some("deadline_total")),
            End::ClientGone => (Outcome::Cancelled, Some("client_gone")),
        };
        let now = Instant::now();
        let elapsed = self.sent.elapsed();
        self.directory.finish(&self.picked, outcome, elapsed, now);
        if let End::Missed(kind) = end {
            self.directory
                .deadline_missed(self.picked.key, kind.label(), elapsed, now);
        }
        if outcome == Outcome::Success
            && let Some(tee) = self.tee.take()
        {
            tee.answered(self.picked.key);
        }
        self.ending.record(label, self.started);
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        self.finish(End::ClientGone);
    }
}

/// When a response's deadlines fall (tokio instants, from the request's arrival).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub(super) ttfb: tokio::time::Instant,
    pub(super) total: tokio::time::Instant,
}

impl Deadlines {
    /// The next deadline to watch and its kind: the first byte's until it came, then the
    /// whole response's.
    fn next(&self, first_byte_seen: bool) -> (tokio::time::Instant, Deadline) {
        if first_byte_seen || self.total <= self.ttfb {
            (self.total, Deadline::Total)
        } else {
            (self.ttfb, Deadline::Ttfb)
        }
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
    pub(super) deadlines: Deadlines,
    /// The deadline timer (set to the next deadline; reset once the first byte came).
    pub(super) deadline: Pin<Box<Sleep>>,
    pub(super) first_byte_seen: bool,
}

impl Tracked {
    pub(super) fn new(
        inner: Incoming,
        guard: FinishGuard,
        remaining: Option<u64>,
        read_timeout: Duration,
        deadlines: Deadlines,
    ) -> Self {
        let (at, _) = deadlines.next(false);
        Self {
            inner,
            guard,
            remaining,
            read_timeout,
            timer: None,
            armed: false,
            deadlines,
            deadline: Box::pin(tokio::time::sleep_until(at)),
            first_byte_seen: false,
        }
    }

    /// Notes body bytes: the first one moves the deadline to the whole response's.
    fn saw_bytes(&mut self, chunk: &Bytes) {
        if let Some(tee) = &mut self.guard.tee
            && !tee.keep(chunk)
        {
            self.guard.tee = None;
        }
        if !self.first_byte_seen && !chunk.is_empty() {
            self.first_byte_seen = true;
            let (at, _) = self.deadlines.next(true);
            self.deadline.as_mut().reset(at);
        }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() && !this.guard.done {
            let (_, kind) = this.deadlines.next(this.first_byte_seen);
            debug!(worker = %this.guard.picked.id, deadline = kind.label(), "worker response missed its deadline");
            this.guard.finish(End::Missed(kind));
            return Poll::Ready(Some(Err(match kind {
                Deadline::Ttfb => "the worker did not start its answer in time".into(),
                Deadline::Total => "the worker did not finish its answer in time".into(),
            })));
        }
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
                this.guard.finish(End::Broken);
                Poll::Ready(Some(Err(
                    "the worker stopped sending the response body".into()
                )))
            }
            Poll::Ready(polled) => {
                this.armed = false;
                match &polled {
                    Some(Ok(frame)) => {
                        if let Some(chunk) = frame.data_ref() {
                            this.saw_bytes(chunk);
                            if let Some(left) = this.remaining {
                                let left = left.saturating_sub(chunk.len() as u64);
                                this.remaining = Some(left);
                                if left == 0 {
                                    this.guard.finish(End::Complete);
                                }
                            }
                        }
                    }
                    None => this.guard.finish(End::Complete),
                    Some(Err(e)) => {
                        debug!(worker = %this.guard.picked.id, error = %e, "worker response body failed");
                        this.guard.finish(End::Broken);
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
