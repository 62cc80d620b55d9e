//! One HTTP connection's life: the first byte, the first request head, idleness.
//!
//! hyper bounds an HTTP/1.1 request head once it knows the connection is HTTP/1.1, but
//! hyper-util's version detection waits for the first 24 bytes with no timer, and h2 has no
//! idle limit at all. So each connection is watched from accept:
//! - **first byte** within `first_byte_timeout`, or it is closed before hyper sees it;
//! - **first request head** within `header_read_timeout` of accept (the h2 preface and
//!   SETTINGS included), or it is closed;
//! - **idle**: with no request in flight for `idle_timeout`, it is closed (a GOAWAY for h2).
//!
//! A request is in flight from the head's arrival until its response body ends, so long
//! streamed answers never count as idle.

use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Dispatch;
use super::caps::Admitted;
use super::metrics::Phase;
use crate::config::{Config, MIN_HEADER_BYTES};

/// How long a connection closed for idleness may take to let go after being told to (an
/// h2 GOAWAY, or the end of an h1 response that raced the close).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// h2 keep-alive pings: a peer that answers none within the timeout is dead and its
/// connection is closed, even while a long response streams to it.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct HttpLimits {
    pub(super) header_read_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) first_byte_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) body_read_timeout: Duration,
}

impl HttpLimits {
    pub(super) fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
            first_byte_timeout: config.first_byte_timeout,
            idle_timeout: config.idle_timeout,
            body_read_timeout: config.body_read_timeout,
        }
    }

    /// The connection builder: HTTP/1.1 with a header read timeout and a bounded read buffer
    /// (the request head must fit in it: over the limit hyper answers 431), h2c with a bounded
    /// header list and keep-alive pings, both with a tokio timer.
    pub(super) fn builder(self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper refuses buffers under 8 KiB; the configuration is checked for that.
            .max_buf_size(self.max_header_bytes.max(MIN_HEADER_BYTES));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            // As `axum::serve` does: the CONNECT protocol for HTTP/2 WebSockets.
            .enable_connect_protocol();
        builder
    }
}

/// Whether a connection has served a request, has requests in flight, and since when none.
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    served: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to the moment the last request in flight ended.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            served: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request in flight until the returned guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }

    /// When the connection became idle; `None` while a request is in flight.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.start + Duration::from_millis(ms))
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = u64::try_from(activity.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Stored before the count drops, so the watchdog never sees an old idle start.
        activity.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight until it ends or is dropped.
pub(super) struct TrackedBody {
    pub(super) inner: Body,
    pub(super) _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Resolves with the deadline a connection missed: no request by `head_deadline`, or no
/// request in flight for `idle` (counted from accept until the first request).
async fn watchdog(activity: &Activity, head_deadline: Instant, idle: Duration) -> Phase {
    loop {
        let now = Instant::now();
        let served = activity.served.load(Ordering::Acquire);
        let next = match activity.idle_since() {
            None => now + idle,
            Some(since) => {
                let end = if served {
                    since + idle
                } else {
                    (since + idle).min(head_deadline)
                };
                if end <= now {
                    return if served { Phase::Idle } else { Phase::Head };
                }
                end
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Waits for the client's first byte; `false` when it closed first or missed the deadline.
async fn first_byte(stream: &TcpStream, within: Duration) -> Result<bool, ()> {
    let mut probe = [0u8; 1];
    match tokio::time::timeout(within, stream.peek(&mut probe)).await {
        Ok(Ok(n)) => Ok(n > 0),
        Ok(Err(_)) => Ok(false),
        Err(_) => Err(()),
    }
}

/// Serves one admitted connection until it ends, misses a deadline, or `shutdown` (then
/// gracefully). Its place in the connection table is given back on return.
pub(super) async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    service: Dispatch,
    place: Admitted,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let _place = place;
    // Responses are written in one go; small ones must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (peer, metrics) = (service.peer, service.connections.clone());
    let activity = Arc::clone(&service.activity);
    let head_deadline = activity.start + limits.header_read_timeout;
    let arrived = tokio::select! {
        () = shutdown.cancelled() => return,
        arrived = first_byte(&stream, limits.first_byte_timeout) => arrived,
    };
    match arrived {
        Ok(true) => {}
        Ok(false) => return,
        Err(()) => {
            metrics.timed_out(Phase::FirstByte);
            debug!(%peer, "connection closed: no first byte in time");
            return;
        }
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    let mut cancelled = pin!(shutdown.cancelled());
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancelled.as_mut() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        phase = watchdog(&activity, head_deadline, limits.idle_timeout) => {
            metrics.timed_out(phase);
            debug!(%peer, ?phase, "connection closed by a deadline");
            if phase == Phase::Head {
                return;
            }
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(CLOSE_GRACE, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        // Header read timeouts, oversized heads and clients that vanish end up here.
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
