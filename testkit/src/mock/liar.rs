//! The work responses: the honest answer and the liars' ([`super::Fault::Garbage`],
//! [`super::Fault::BlackHole`], [`super::Fault::Tarpit`]).
//!
//! The liars take no slot and no service time on purpose: they stand for a volunteer whose
//! machine does not run the service at all, so whatever they claim, they answer (or fail to)
//! regardless of load.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::answer::{wrong_answer_for, wrong_embedding_for};
use super::{TARPIT_SPAN, answer_for, embedding_for};

/// The honest work response for `body`.
pub(super) fn honest(body: &[u8], service_ms: u64, queued_ms: u64) -> Value {
    json!({
        "answer": answer_for(body),
        "embedding": embedding_for(body),
        "bytes": body.len(),
        "service_ms": service_ms,
        "queued_ms": queued_ms,
    })
}

/// [`super::Fault::Garbage`]: the honest shape with a wrong answer and embedding, at once.
pub(super) fn garbage(body: &[u8]) -> Response {
    Json(json!({
        "answer": wrong_answer_for(body),
        "embedding": wrong_embedding_for(body),
        "bytes": body.len(),
        "service_ms": 0,
        "queued_ms": 0,
    }))
    .into_response()
}

/// [`super::Fault::BlackHole`]: waits until the server generation ends (or the client goes and the
/// connection drops this future), sending nothing.
pub(super) async fn black_hole(life: CancellationToken) -> Response {
    life.cancelled().await;
    // Never written: `serve` drops the connection as soon as `life` ends.
    StatusCode::BAD_GATEWAY.into_response()
}

/// [`super::Fault::Tarpit`]: 200 and headers now, a space every `byte_every_ms` (JSON allows
/// leading whitespace, so a patient client still gets a valid body), and the honest answer
/// after [`TARPIT_SPAN`].
pub(super) fn tarpit(body: &[u8], byte_every_ms: u64) -> Response {
    let every = Duration::from_millis(byte_every_ms.max(1));
    let answer = Bytes::from(honest(body, 0, 0).to_string());
    let until = Instant::now() + TARPIT_SPAN;
    // State: `None` once the answer went out; `first` sends the opening byte without waiting,
    // so the head and a byte reach the client at once.
    let drip = futures::stream::unfold(Some((answer, true)), move |state| async move {
        let (answer, first) = state?;
        if !first {
            tokio::time::sleep(every).await;
        }
        if Instant::now() >= until {
            Some((Ok::<_, Infallible>(answer), None))
        } else {
            Some((Ok(Bytes::from_static(b" ")), Some((answer, false))))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(drip),
    )
        .into_response()
}
