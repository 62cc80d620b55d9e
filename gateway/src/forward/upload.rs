//! The request body: taken from the client (buffered when small, streamed otherwise) and,
//! when streamed, watched on its way to the worker.
//!
//! Most HTTP servers read the whole request body before they answer, so the time a worker
//! takes to send its response head only means something once it has the body. The upstream
//! (head) timeout therefore counts only the gateway's own waiting for the worker: it starts
//! over whenever the client delivers more of the body, and it does not run while the gateway
//! waits for the client. A client that sends nothing for longer than the read timeout has
//! its request ended as the client's failure (408); a body the client broke off (its
//! connection closed mid-upload) is the client's fault too. Neither is charged to the worker.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

use super::body::BoxError;
use super::{Forwarder, REPLAY_BUFFER, content_length};
use crate::error::GatewayError;

/// The request body in the form it is sent: re-sendable or a one-shot stream.
pub(super) enum OutBody {
    Replayable(Bytes),
    Streaming(Option<Body>),
}

impl Forwarder {
    /// Reads the request body as far as needed: small declared bodies are buffered (so the
    /// request can be re-sent), others stream once. A body without a declared length streams
    /// unless it is known to be empty: HTTP/2 has no Transfer-Encoding, so a client's
    /// streamed h2 body carries neither header. GET and HEAD bodies have no meaning (RFC 9110
    /// §9.3.1) and without a length are not sent, which keeps those requests re-sendable.
    pub(super) async fn take_body(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<OutBody, GatewayError> {
        let too_large = GatewayError::PayloadTooLarge {
            limit: self.max_body,
        };
        let declared = content_length(headers);
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large);
        }
        let has_body = match declared {
            Some(n) => n > 0,
            None => {
                headers.contains_key(header::TRANSFER_ENCODING)
                    || (!matches!(*method, Method::GET | Method::HEAD)
                        && !body.is_end_stream()
                        && body.size_hint().upper() != Some(0))
            }
        };
        if !has_body {
            return Ok(OutBody::Replayable(Bytes::new()));
        }
        if declared.is_none_or(|n| n > REPLAY_BUFFER as u64) {
            return Ok(OutBody::Streaming(Some(body)));
        }
        match Limited::new(body, REPLAY_BUFFER.min(self.max_body))
            .collect()
            .await
        {
            Ok(collected) => Ok(OutBody::Replayable(collected.to_bytes())),
            Err(e) if e.is::<LengthLimitError>() => Err(too_large),
            Err(_) => Err(GatewayError::BadRequest(
                "the request body broke off".into(),
            )),
        }
    }
}

/// How the client failed its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UploadFailure {
    /// The body broke off (the client's connection closed, or its stream errored).
    Broke,
    /// Nothing arrived for longer than the allowed gap.
    Stalled,
}

/// What the forwarder learns about one streamed upload.
#[derive(Debug)]
pub(super) struct UploadState {
    progress: Mutex<Progress>,
    notify: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When the client last delivered part of the body (or the upload began).
    last: Instant,
    /// When the whole body had gone.
    ended: Option<Instant>,
    /// Whether the gateway is waiting for the client's next bytes.
    waiting_on_client: bool,
    failed: Option<UploadFailure>,
}

impl Default for UploadState {
    fn default() -> Self {
        Self {
            progress: Mutex::new(Progress {
                last: Instant::now(),
                ended: None,
                waiting_on_client: false,
                failed: None,
            }),
            notify: Notify::new(),
        }
    }
}

impl UploadState {
    fn progress(&self) -> Progress {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Progress)) {
        change(&mut self.progress.lock().unwrap_or_else(|e| e.into_inner()));
        self.notify.notify_waiters();
    }

    /// Resolves once the worker has had `limit` of the gateway's waiting without answering:
    /// counted from the client's last bytes (or the end of the body), and never while the
    /// gateway waits for the client.
    pub(super) async fn head_overdue(&self, limit: Duration) {
        loop {
            // Registered before the read, so a change between the two is not missed.
            let woken = self.notify.notified();
            let p = self.progress();
            if p.waiting_on_client && p.ended.is_none() {
                woken.await;
                continue;
            }
            let due = p.ended.unwrap_or(p.last) + limit;
            if Instant::now() >= due {
                return;
            }
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(due.into()) => {}
            }
        }
    }

    /// When the whole body had gone, if it has.
    pub(super) fn ended_at(&self) -> Option<Instant> {
        self.progress().ended
    }

    /// How the client failed the upload, if it did.
    pub(super) fn client_failure(&self) -> Option<UploadFailure> {
        self.progress().failed
    }
}

/// The client's body as sent upstream, reporting into an [`UploadState`] and failing when the
/// client sends nothing for `gap`.
pub(super) struct Watched<B> {
    inner: B,
    state: Arc<UploadState>,
    gap: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Watched<B> {
    /// Watches `inner`; the state is shared with the forwarder.
    pub(super) fn new(inner: B, state: Arc<UploadState>, gap: Duration) -> Self {
        Self {
            inner,
            state,
            gap,
            timer: None,
        }
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let gap = this.gap;
                if this.timer.is_none() {
                    this.state.update(|p| p.waiting_on_client = true);
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.state
                    .update(|p| p.failed = Some(UploadFailure::Stalled));
                Poll::Ready(Some(Err(
                    "the client stopped sending the request body".into()
                )))
            }
            Poll::Ready(None) => {
                this.timer = None;
                this.state.update(|p| {
                    p.waiting_on_client = false;
                    p.ended.get_or_insert_with(Instant::now);
                });
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.timer = None;
                let end = this.inner.is_end_stream();
                this.state.update(|p| {
                    let now = Instant::now();
                    p.waiting_on_client = false;
                    p.last = now;
                    if end {
                        p.ended.get_or_insert(now);
                    }
                });
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.state.update(|p| p.failed = Some(UploadFailure::Broke));
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use http_body_util::{Full, StreamBody};

    #[tokio::test]
    async fn a_whole_body_ends_the_upload() {
        let state = Arc::new(UploadState::default());
        let body = Watched::new(
            Full::new(Bytes::from_static(b"abc")),
            Arc::clone(&state),
            Duration::from_secs(1),
        );
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.as_ref(), b"abc");
        assert!(state.ended_at().is_some());
        assert_eq!(state.client_failure(), None);
    }

    #[tokio::test]
    async fn a_stalled_client_fails_as_its_own_fault_and_stops_the_head_clock() {
        let state = Arc::new(UploadState::default());
        let frames = futures::stream::iter([Ok::<_, std::io::Error>(Frame::data(
            Bytes::from_static(b"half"),
        ))])
        .chain(futures::stream::pending());
        let body = Watched::new(
            StreamBody::new(frames),
            Arc::clone(&state),
            Duration::from_millis(300),
        );
        let overdue = state.head_overdue(Duration::from_millis(100));
        tokio::pin!(overdue);
        let collected = body.collect();
        tokio::pin!(collected);
        tokio::select! {
            biased;
            () = &mut overdue => panic!("the head clock ran while the client owed bytes"),
            r = &mut collected => assert!(r.is_err()),
        }
        assert_eq!(state.client_failure(), Some(UploadFailure::Stalled));
        assert!(state.ended_at().is_none());
    }

    #[tokio::test]
    async fn the_head_clock_runs_from_the_end_of_the_body() {
        let state = Arc::new(UploadState::default());
        let slow = futures::stream::unfold(0u8, |i| async move {
            if i == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(160)).await;
            Some((
                Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x"))),
                i + 1,
            ))
        });
        let body = Watched::new(
            StreamBody::new(Box::pin(slow)),
            Arc::clone(&state),
            Duration::from_secs(5),
        );
        let start = tokio::time::Instant::now();
        let upload = async {
            body.collect().await.unwrap();
        };
        // 480 ms of upload, each part within the 200 ms limit: due 200 ms after the end.
        let ((), ()) = tokio::join!(upload, state.head_overdue(Duration::from_millis(200)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(680), "{took:?}");
    }
}
