//! `GET /openapi.json`: the API described as OpenAPI 3.1, written by hand.
//!
//! utoipa would derive it, but its Swagger UI build downloads from GitHub, and the document is
//! small; a test checks that every route of the router is listed here.

use std::sync::LazyLock;

use axum::response::Response;
use serde_json::{Value, json};

/// Every `(method, path)` the document lists.
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "get",
        "/api/service/{service}/{path}",
        "Forward to a worker (any method)",
    ),
    (
        "get",
        "/api/route/{service}",
        "The worker a request would go to",
    ),
    ("get", "/api/dht/bootstrap", "DHT seed list"),
    (
        "get",
        "/api/dht/topology",
        "Gateways, seeds, workers and DHT links",
    ),
    ("get", "/api/workers", "The worker view"),
    (
        "post",
        "/api/workers/register",
        "Register a worker (coordinator fallback)",
    ),
    ("get", "/api/workers/{id}", "One worker"),
    ("delete", "/api/workers/{id}", "Deregister a worker"),
    (
        "post",
        "/api/workers/{id}/heartbeat",
        "Refresh a registration",
    ),
    ("get", "/healthz", "Liveness"),
    ("get", "/readyz", "Readiness"),
    ("get", "/metrics", "Prometheus metrics (OpenMetrics text)"),
    ("get", "/openapi.json", "This document"),
];

fn error_responses() -> Value {
    let err = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut map = serde_json::Map::new();
    for (code, what) in [
        ("400", "bad request"),
        ("401", "bearer token missing"),
        ("403", "token wrong or registry disabled"),
        ("404", "unknown service, worker or endpoint"),
        ("413", "body too large"),
        ("429", "rate limited (Retry-After)"),
        ("502", "worker failed"),
        ("503", "no eligible worker / not ready"),
        ("504", "worker timed out"),
    ] {
        let mut e = err.clone();
        e["description"] = json!(what);
        map.insert(code.to_owned(), e);
    }
    Value::Object(map)
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in OPERATIONS {
        let mut responses = error_responses();
        responses["200"] = json!({"description": "success"});
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let op = json!({"summary": summary, "parameters": params, "responses": responses});
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        if *path == "/api/service/{service}/{path}" {
            for m in ["get", "post", "put", "patch", "delete", "head", "options"] {
                entry[m] = op.clone();
            }
        } else {
            entry[*method] = op;
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "gpumesh gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["code", "message", "fault"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "fault": {"type": "string", "enum": ["client", "worker", "gateway"]},
                "service": {"type": "string"}, "worker": {"type": "string"}, "reason": {"type": "string"}}},
            "BootstrapResponse": {"type": "object", "properties": {
                "seeds": {"type": "array", "items": {"type": "object", "properties": {
                    "peer_id": {"type": "string"}, "multiaddrs": {"type": "array", "items": {"type": "string"}},
                    "role": {"type": "string", "enum": ["gateway", "seed"]}}}},
                "ttl_secs": {"type": "integer"}, "count": {"type": "integer"}}},
            "RegisterResponse": {"type": "object", "properties": {
                "worker_id": {"type": "string"}, "ttl_secs": {"type": "integer"},
                "heartbeat_interval_secs": {"type": "integer"}, "expires_at_ms": {"type": "integer"}}}
        }}
    })
});

/// The handler.
pub async fn openapi() -> Response {
    super::json(&*DOCUMENT)
}
