//! Request extractors and response helpers every handler shares (handlers in `api` and in
//! the registry source alike).

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::ratelimit::RateLimiter;

/// The peer address of the connection, when the server was started with connect info.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// One path parameter (`{id}`, `{service}`) as a string. axum's `Path` answers a parameter
/// that is not UTF-8 after percent-decoding (`%FF`) with a plain-text 400; this extractor turns
/// that into the documented JSON error.
#[derive(Debug, Clone)]
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<String>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(GatewayError::BadRequest(format!(
                "the path is not valid: {}",
                rejection.body_text().chars().take(200).collect::<String>()
            ))),
        }
    }
}

/// Applies a rate limiter to a client.
///
/// # Errors
/// 429 [`GatewayError::RateLimited`].
pub fn rate_limit(limiter: &RateLimiter, client: ClientAddr) -> Result<(), GatewayError> {
    limiter
        .check(client.0.map(|a| a.ip()), std::time::Instant::now())
        .map_err(|wait| GatewayError::RateLimited {
            retry_after_secs: wait.as_secs().max(1),
        })
}

/// JSON with a 200 status.
pub fn json<T: serde::Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}
