//! `ANY /api/service/{service}/{*path}` (forward) and `GET /api/route/{service}` (pick only).
//!
//! Requirements come from headers: `x-gpumesh-min-vram-gib` (free VRAM on one GPU, GiB),
//! `x-gpumesh-gpu` (substring of the GPU model, any case), `x-gpumesh-capability`
//! (comma-separated capability tags, all required).

use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::types::RouteResponse;
use super::{AppState, ClientAddr, PathParam, json};
use gpumesh_scheduler::Outcome;

use gpumesh_dht::rules::ServiceName;

use crate::directory::Requirements;
use crate::error::GatewayError;
use crate::forward::Outbound;

/// Header: minimum free VRAM on one GPU, in GiB (a decimal number).
pub const MIN_VRAM_HEADER: &str = "x-gpumesh-min-vram-gib";
/// Header: GPU model filter (case-insensitive substring).
pub const GPU_HEADER: &str = "x-gpumesh-gpu";
/// Header: required capability tags, comma-separated.
pub const CAPABILITY_HEADER: &str = "x-gpumesh-capability";

/// The route templates of the forward route, as the router names them (metrics labels).
pub const FORWARD_ROUTES: [&str; 3] = [
    "/api/service/{service}",
    "/api/service/{service}/",
    "/api/service/{service}/{*path}",
];

/// The router's template for `path` when it is a forward request with a non-empty service
/// segment; `None` for everything the router should see.
pub fn forward_route(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/api/service/")?;
    let (service, tail) = match rest.split_once('/') {
        Some((service, tail)) => (service, Some(tail)),
        None => (rest, None),
    };
    if service.is_empty() {
        return None;
    }
    Some(match tail {
        None => FORWARD_ROUTES[0],
        Some("") => FORWARD_ROUTES[1],
        Some(_) => FORWARD_ROUTES[2],
    })
}

/// Builds the scheduler requirements from the path's service and the request headers.
///
/// # Errors
/// 400 [`GatewayError::BadRequest`] naming the bad header.
pub fn requirements(service: &str, headers: &HeaderMap) -> Result<Requirements, GatewayError> {
    // The rulebook's one rule and message, as at every other edge.
    let service =
        ServiceName::parse(service).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let bad =
        |what: &str, e: &dyn std::fmt::Display| GatewayError::BadRequest(format!("{what}: {e}"));
    let header = |name: &str| -> Result<Option<&str>, GatewayError> {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).map_err(|e| bad(name, &e)))
            .transpose()
    };
    let mut req = Requirements::new(service.as_str()).map_err(|e| bad("service", &e))?;
    if let Some(v) = header(MIN_VRAM_HEADER)? {
        let gib: f64 = v.parse().map_err(|e| bad(MIN_VRAM_HEADER, &e))?;
        req = req
            .with_min_free_vram_gib(gib)
            .map_err(|e| bad(MIN_VRAM_HEADER, &e))?;
    }
    if let Some(v) = header(GPU_HEADER)? {
        req = req.with_gpu_model(v).map_err(|e| bad(GPU_HEADER, &e))?;
    }
    if let Some(v) = header(CAPABILITY_HEADER)? {
        for tag in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            req = req.with_tag(tag).map_err(|e| bad(CAPABILITY_HEADER, &e))?;
        }
    }
    Ok(req)
}

/// Splits the raw (still percent-encoded) path into the service and the rest.
fn split_path(raw: &str) -> Result<(String, String), GatewayError> {
    let rest = raw.strip_prefix("/api/service/").unwrap_or_default();
    let (service, path) = rest.split_once('/').unwrap_or((rest, ""));
    if path.split('/').any(is_dot_segment) {
        return Err(GatewayError::BadRequest(
            "`.` and `..` path segments are not forwarded".into(),
        ));
    }
    Ok((service.to_owned(), path.to_owned()))
}

/// Whether a segment is `.` or `..`, with any dot percent-encoded (`%2e`, `%2E`); no
/// allocation on the hot path.
fn is_dot_segment(seg: &str) -> bool {
    let mut rest = seg.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1] == b'2' && rest[2] | 0x20 == b'e' {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 1 || dots == 2
}

/// `ANY /api/service/{service}/{*path}`.
///
/// # Errors
/// Any [`GatewayError`]; see docs/gateway.md.
pub async fn forward(
    State(state): State<AppState>,
    client: ClientAddr,
    req: Request,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let unrouted = |service: &str, e: GatewayError| {
        let requests = state.forwarder.requests();
        requests.error(&state.directory, service, &e, None, started);
        e
    };
    let (service, path) = split_path(parts.uri.path()).map_err(|e| unrouted("unknown", e))?;
    let requirements = requirements(&service, &parts.headers).map_err(|e| unrouted(&service, e))?;
    let outbound = Outbound {
        service,
        path,
        query: parts.uri.query().map(str::to_owned),
        method: parts.method,
        headers: parts.headers,
        body,
        client: client.0,
        requirements,
        started,
    };
    // The forwarder counts its own outcomes.
    state.forwarder.forward(&state.directory, outbound).await
}

/// `GET /api/route/{service}`: the worker a request would go to now.
///
/// # Errors
/// 400, 404, 503.
pub async fn route(
    State(state): State<AppState>,
    PathParam(service): PathParam,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let requirements = requirements(&service, &headers)?;
    let now = Instant::now();
    let picked = state.directory.pick(&requirements, None, now)?;
    // Only a lookup: the client calls the worker itself, so the pick ends at once.
    state
        .directory
        .finish(&picked, Outcome::Cancelled, Duration::ZERO, now);
    Ok(json(RouteResponse {
        gpus: state.directory.gpus(&picked.id),
        worker_id: picked.id.to_string(),
        url: picked.url.as_str().trim_end_matches('/').to_owned(),
        source: picked.source.as_str().to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_keep_encoding_and_refuse_dot_segments() {
        assert_eq!(
            split_path("/api/service/ocr/v1/a%20b").unwrap(),
            ("ocr".into(), "v1/a%20b".into())
        );
        assert_eq!(
            split_path("/api/service/ocr").unwrap(),
            ("ocr".into(), String::new())
        );
        assert!(split_path("/api/service/ocr/a/../../admin").is_err());
        assert!(split_path("/api/service/ocr/%2E%2E/x").is_err());
        assert!(split_path("/api/service/ocr/a/%2e/b").is_err());
        assert!(split_path("/api/service/ocr/.%2e").is_err());
        assert!(split_path("/api/service/ocr/.../x.y/%2e%2e%2e").is_ok());
    }

    #[test]
    fn a_bad_service_name_gets_the_rulebook_message() {
        let rule = ServiceName::parse("OCR").unwrap_err().to_string();
        match requirements("OCR", &HeaderMap::new()) {
            Err(GatewayError::BadRequest(message)) => assert_eq!(message, rule),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn bad_requirement_headers_are_400() {
        let mut h = HeaderMap::new();
        h.insert(MIN_VRAM_HEADER, "lots".parse().unwrap());
        assert!(matches!(
            requirements("llm", &h),
            Err(GatewayError::BadRequest(_))
        ));
        assert!(matches!(
            requirements("no spaces", &HeaderMap::new()),
            Err(GatewayError::BadRequest(_))
        ));
    }
}
