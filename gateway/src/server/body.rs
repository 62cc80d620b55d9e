//! The request body read deadline: a body that stalls longer than the gap between two
//! reads is cut, and the request is answered 408 whatever its handler made of the cut.
//!
//! Handlers read bodies in different ways (the registry buffers 64 KiB before its token
//! check, the forwarder streams or buffers), so the deadline sits under all of them, on
//! the body itself, and the answer is fixed up once the handler returns.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::types::ErrorBody;

/// The error a stalled body ends with (handlers see it as a failed read).
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than {0:?}")]
pub(crate) struct BodyStalled(Duration);

/// Set when a request's body was cut by the deadline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stalled(Arc<AtomicBool>);

impl Stalled {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Wraps `body` in the read deadline `gap`. A body that is already complete (most GETs)
/// is passed through with no timer.
pub(crate) fn with_deadline(body: Incoming, gap: Duration) -> (Body, Option<Stalled>) {
    if body.is_end_stream() {
        return (Body::new(body), None);
    }
    let stalled = Stalled::default();
    let body = DeadlineBody {
        inner: body,
        gap,
        timer: None,
        armed: false,
        stalled: stalled.clone(),
    };
    (Body::new(body), Some(stalled))
}

/// The 408 a request whose body stalled gets, with `Connection: close`: the rest of the
/// body may still be on its way, so the connection cannot carry another request.
pub(crate) fn stalled_response(gap: Duration) -> Response<Body> {
    let body = ErrorBody {
        code: "request_body_timeout".to_owned(),
        message: format!(
            "the request body stalled for more than {} ms; send it without pauses",
            gap.as_millis()
        ),
        fault: "client".to_owned(),
        service: None,
        worker: None,
        reason: None,
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body whose reads may not pause longer than `gap`. The timer is armed when a
/// read finds nothing to return and re-armed after every frame, so a handler that stops
/// reading for a while (backpressure from a slow worker) is never blamed for it: data that
/// arrived meanwhile is returned before the timer is looked at.
struct DeadlineBody {
    inner: Incoming,
    gap: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    stalled: Stalled,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + this.gap;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.armed {
            timer.as_mut().reset(deadline);
            this.armed = true;
        }
        ready!(timer.as_mut().poll(cx));
        this.stalled.0.store(true, Ordering::Release);
        Poll::Ready(Some(Err(BodyStalled(this.gap).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
