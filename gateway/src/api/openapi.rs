//! `GET /openapi.json`: the API described as OpenAPI 3.1, written by hand.
//!
//! utoipa would derive it, but its Swagger UI build downloads from GitHub, and the document is
//! small. It is precise enough for a schema-driven fuzzer (`hardening/api-fuzz.sh` runs
//! schemathesis with every check): path parameters and requirement headers carry the patterns
//! the handlers enforce, request bodies and 200 answers have schemas, the registry routes
//! declare the bearer token, and `register` links its `worker_id` to heartbeat and deregister.
//! What a schema cannot say (the upstream policy on tunnel URLs, `seq` ordering) answers with a
//! documented 400 or 409. A router test checks that every route is listed here.

use std::sync::LazyLock;

use axum::response::Response;
use serde_json::{Value, json};

/// Every `(method, path, summary)` the document lists; `/api/service/{service}/{path}` stands
/// for every method.
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

/// Methods `/api/service/{service}/{path}` is documented for (it forwards any method).
const FORWARD_METHODS: &[&str] = &[
    "get", "post", "put", "patch", "delete", "head", "options", "trace",
];

/// Service names: the rulebook's one rule.
const SERVICE_PATTERN: &str = gpumesh_dht::rules::ServiceName::PATTERN;
/// One forwarded path segment that is not `.` or `..` (those are refused).
const PATH_PATTERN: &str = "^[A-Za-z0-9_~-][A-Za-z0-9._~-]{0,63}$";
/// Worker ids: what the registry accepts as `peer_id`.
const ID_PATTERN: &str = "^[A-Za-z0-9]{1,128}$";

fn error_responses() -> Value {
    let err = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut map = serde_json::Map::new();
    for (code, what) in [
        ("400", "bad request"),
        ("401", "bearer token missing"),
        (
            "403",
            "token wrong or registry disabled; `not_admitted`: worker not admitted",
        ),
        ("404", "unknown service, worker or endpoint"),
        ("405", "method not allowed on this path"),
        ("409", "a newer record of this worker is already held"),
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

fn path_param(name: &str) -> Value {
    let pattern = match name {
        "service" => SERVICE_PATTERN,
        "path" => PATH_PATTERN,
        _ => ID_PATTERN,
    };
    json!({"name": name, "in": "path", "required": true,
        "schema": {"type": "string", "pattern": pattern}})
}

/// The requirement headers of the forward and route operations (docs/gateway.md).
fn requirement_headers() -> [Value; 3] {
    [
        json!({"name": "x-gpumesh-min-vram-gib", "in": "header", "required": false,
            "description": "Free VRAM needed on one GPU, GiB",
            "schema": {"type": "string", "pattern": "^[0-9]{1,5}(\\.[0-9]{1,3})?$"}}),
        json!({"name": "x-gpumesh-gpu", "in": "header", "required": false,
            "description": "Case-insensitive substring of the GPU model",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$"}}),
        json!({"name": "x-gpumesh-capability", "in": "header", "required": false,
            "description": "Required capability tags, comma-separated (at most 16; empty: none)",
            "schema": {"type": "string", "pattern": "^([A-Za-z0-9._-]{1,32}(,[A-Za-z0-9._-]{1,32}){0,15})?$"}}),
    ]
}

fn json_content(schema: &str) -> Value {
    json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}})
}

/// The success answer of one operation.
fn success(method: &str, path: &str) -> (&'static str, Value) {
    let ok = |schema: &str| {
        (
            "200",
            json!({"description": "success", "content": json_content(schema)}),
        )
    };
    match (method, path) {
        (_, "/api/service/{service}/{path}") => (
            "200",
            json!({"description": "the worker's answer, passed through (any status below 500 is the worker's)"}),
        ),
        (_, "/api/route/{service}") => ok("RouteResponse"),
        (_, "/api/dht/bootstrap") => ok("BootstrapResponse"),
        (_, "/api/dht/topology") => ok("TopologyResponse"),
        (_, "/api/workers") => ok("WorkersResponse"),
        ("get", "/api/workers/{id}") => ok("WorkerView"),
        ("delete", "/api/workers/{id}") => ("204", json!({"description": "deregistered"})),
        (_, "/api/workers/register" | "/api/workers/{id}/heartbeat") => (
            "200",
            json!({"description": "registered until expires_at_ms", "content": json_content("RegisterResponse"),
                "links": {
                    "Heartbeat": {"operationId": "heartbeat", "parameters": {"id": "$response.body#/worker_id"}},
                    "Deregister": {"operationId": "deregister", "parameters": {"id": "$response.body#/worker_id"}}}}),
        ),
        (_, "/healthz" | "/readyz") => ok("HealthResponse"),
        (_, "/metrics") => (
            "200",
            json!({"description": "OpenMetrics text",
                "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}),
        ),
        _ => (
            "200",
            json!({"description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}}),
        ),
    }
}

fn operation(method: &str, path: &str, summary: &str) -> Value {
    let mut responses = error_responses();
    let (code, answer) = success(method, path);
    responses[code] = answer;
    let mut params: Vec<Value> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(path_param)
        .collect();
    if path.starts_with("/api/service/") || path.starts_with("/api/route/") {
        params.extend(requirement_headers());
    }
    if path.starts_with("/api/service/") {
        params.push(
            json!({"name": "idempotency-key", "in": "header", "required": false,
            "description": "Any value: the client says a repeat is harmless, so a request \
                whose worker died mid-request may be re-sent to another worker (idempotent \
                methods are re-sent without it)",
            "schema": {"type": "string", "maxLength": 255}}),
        );
    }
    if matches!(
        (method, path),
        ("post", "/api/workers/{id}/heartbeat") | ("delete", "/api/workers/{id}")
    ) {
        params.extend(request_signature_headers());
    }
    let mut op = json!({"summary": summary, "parameters": params, "responses": responses});
    let registry = matches!(
        (method, path),
        ("post", _) | ("delete", "/api/workers/{id}")
    ) && path.starts_with("/api/workers");
    if registry {
        op["security"] = json!([{"registryToken": []}]);
    }
    match (method, path) {
        ("post", "/api/workers/register") => {
            op["operationId"] = json!("register");
            op["requestBody"] =
                json!({"required": true, "content": json_content("RegisterRequest")});
        }
        ("post", "/api/workers/{id}/heartbeat") => {
            op["operationId"] = json!("heartbeat");
            op["requestBody"] =
                json!({"required": false, "content": json_content("HeartbeatRequest")});
        }
        ("delete", "/api/workers/{id}") => op["operationId"] = json!("deregister"),
        _ => {}
    }
    op
}

/// The worker's request signature (`gpumesh_dht::request`): required by gateways that enforce
/// operator admission, ignored by others.
fn request_signature_headers() -> [Value; 2] {
    [
        json!({"name": gpumesh_dht::request::SIGNED_AT_HEADER, "in": "header", "required": false,
            "description": "When the worker signed, ms since the Unix epoch (within 60 s of the \
                gateway's clock, newer than its last signed request). Required under admission.",
            "schema": {"type": "string", "pattern": "^[0-9]{1,20}$"}}),
        json!({"name": gpumesh_dht::request::SIGNATURE_HEADER, "in": "header", "required": false,
            "description": "Hex Ed25519 signature by the worker's peer-id key over \
                `gpumesh-registry-request/v1\\n<action>\\n<id>\\n<signed-at>\\n<body>`. \
                Required under admission.",
            "schema": {"type": "string", "pattern": "^[0-9a-f]{128}$"}}),
    ]
}

fn uint(max: u64) -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": max})
}

fn nullable(schema: Value) -> Value {
    json!({"oneOf": [schema, {"type": "null"}]})
}

/// The component schemas: the serde shapes of `api::types` and `gpumesh_dht::wire`.
fn schemas() -> Value {
    let mut all = record_schemas();
    if let (Some(all), Value::Object(views)) = (all.as_object_mut(), view_schemas()) {
        all.extend(views);
    }
    all
}

/// The worker record and the registry's request and response shapes.
fn record_schemas() -> Value {
    let text = |max: u64| json!({"type": "string", "maxLength": max});
    let service = json!({"type": "string", "pattern": SERVICE_PATTERN});
    let state = json!({"type": "string", "enum": ["joining", "online", "draining"]});
    let number = json!({"type": "number"});
    json!({
        "Error": {"type": "object", "required": ["code", "message", "fault"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "fault": {"type": "string", "enum": ["client", "worker", "gateway"]},
            "service": {"type": "string"}, "worker": {"type": "string"}, "reason": {"type": "string"}}},
        "GpuInfo": {"type": "object",
            "required": ["model", "uuid", "vram_total_mib", "vram_free_mib"],
            "properties": {
                "model": text(256), "uuid": text(256),
                "vram_total_mib": uint(u64::MAX), "vram_free_mib": uint(u64::MAX),
                "util_pct": nullable(uint(u8::MAX.into())), "mem_util_pct": nullable(uint(u8::MAX.into())),
                "temperature_c": nullable(uint(u16::MAX.into())),
                "power_w": nullable(number.clone()), "power_limit_w": nullable(number.clone())}},
        "HostInfo": {"type": "object",
            "required": ["cpu_util_pct", "cpus", "mem_total_mib", "mem_available_mib"],
            "properties": {
                "cpu_util_pct": number.clone(), "cpus": uint(u32::MAX.into()),
                "mem_total_mib": uint(u64::MAX), "mem_available_mib": uint(u64::MAX),
                "load_avg_1m": nullable(number)}},
        "LoadInfo": {"type": "object", "required": ["in_flight", "queue_depth", "max_concurrency"],
            "properties": {"in_flight": uint(u32::MAX.into()), "queue_depth": uint(u32::MAX.into()),
                "max_concurrency": uint(u32::MAX.into())}},
        "WorkerRecord": {"type": "object",
            "required": ["peer_id", "seq", "issued_at_ms", "expires_at_ms", "state", "services",
                "tunnel_url", "gpus", "host", "load", "agent_version", "started_at_ms"],
            "properties": {
                "peer_id": {"type": "string", "pattern": ID_PATTERN},
                "seq": uint(u64::MAX), "issued_at_ms": uint(u64::MAX), "expires_at_ms": uint(u64::MAX),
                "state": state.clone(),
                "services": {"type": "array", "items": service.clone(), "minItems": 1, "maxItems": 32},
                "capabilities": {"type": "array", "items": text(256), "maxItems": 32},
                "tunnel_url": {"type": "string", "maxLength": 512,
                    "description": "http(s) origin; private and loopback hosts only where the operator allows them",
                    "pattern": "^https?://[a-z0-9]+(\\.[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9_~-]*)*$"},
                "gpus": {"type": "array", "items": {"$ref": "#/components/schemas/GpuInfo"}, "maxItems": 16},
                "host": {"$ref": "#/components/schemas/HostInfo"},
                "load": {"$ref": "#/components/schemas/LoadInfo"},
                "agent_version": text(256), "started_at_ms": uint(u64::MAX)}},
        "RegisterRequest": {"allOf": [{"$ref": "#/components/schemas/WorkerRecord"},
            {"type": "object", "properties": {"signed_record": {"type": "string",
                "maxLength": 8192, "pattern": "^[0-9a-f]*$",
                "description": "hex of the worker's signed DHT record envelope (carrying its \
                    admission token); required when the gateway enforces admission (then the \
                    record inside it is the one registered, and one that does not verify is \
                    403 not_admitted), unused otherwise"}}}]},
        "HeartbeatRequest": {"type": "object", "properties": {
            "state": state.clone(), "load": {"$ref": "#/components/schemas/LoadInfo"},
            "gpus": {"type": "array", "items": {"$ref": "#/components/schemas/GpuInfo"}, "maxItems": 16}}},
        "RegisterResponse": {"type": "object",
            "required": ["worker_id", "ttl_secs", "heartbeat_interval_secs", "expires_at_ms"],
            "properties": {"worker_id": {"type": "string"}, "ttl_secs": uint(u64::MAX),
                "heartbeat_interval_secs": uint(u64::MAX), "expires_at_ms": uint(u64::MAX)}}
    })
}

/// The shapes of the read endpoints (bootstrap, route, workers, topology, health).
fn view_schemas() -> Value {
    let state = json!({"type": "string", "enum": ["joining", "online", "draining"]});
    json!({
        "BootstrapResponse": {"type": "object", "required": ["seeds", "ttl_secs", "count"], "properties": {
            "seeds": {"type": "array", "items": {"type": "object", "required": ["peer_id", "multiaddrs", "role"],
                "properties": {
                    "peer_id": {"type": "string"}, "multiaddrs": {"type": "array", "items": {"type": "string"}},
                    "role": {"type": "string", "enum": ["gateway", "seed"]}}}},
            "ttl_secs": uint(u64::MAX), "count": uint(u64::MAX)}},
        "GpuSummary": {"type": "object", "required": ["model", "vram_total_mib", "vram_free_mib"],
            "properties": {"model": {"type": "string"}, "vram_total_mib": uint(u64::MAX),
                "vram_free_mib": uint(u64::MAX)}},
        "RouteResponse": {"type": "object", "required": ["worker_id", "url", "source", "gpus"], "properties": {
            "worker_id": {"type": "string"}, "url": {"type": "string"},
            "source": {"type": "string", "enum": ["dht", "registry"]},
            "gpus": {"type": "array", "items": {"$ref": "#/components/schemas/GpuSummary"}}}},
        "WorkerView": {"type": "object",
            "required": ["id", "source", "state", "services", "tunnel_url", "seq", "record_age_ms",
                "in_flight", "gpus", "load", "agent_version", "trust"],
            "properties": {
                "id": {"type": "string"}, "source": {"type": "string", "enum": ["dht", "registry"]},
                "state": state, "services": {"type": "array", "items": {"type": "string"}},
                "tunnel_url": {"type": "string"}, "seq": uint(u64::MAX), "record_age_ms": uint(u64::MAX),
                "in_flight": uint(u32::MAX.into()),
                "gpus": {"type": "array", "items": {"$ref": "#/components/schemas/GpuInfo"}},
                "load": {"$ref": "#/components/schemas/LoadInfo"}, "agent_version": {"type": "string"},
                "last_attempt_ms": uint(u64::MAX), "first_failure_ms": uint(u64::MAX),
                "failures": uint(u64::MAX),
                "ejected_for_s": {"type": "number", "minimum": 0},
                "trust": {"$ref": "#/components/schemas/TrustView"}}},
        "TrustView": trust_schema(),
        "WorkersResponse": {"type": "object", "required": ["workers", "count"], "properties": {
            "workers": {"type": "array", "items": {"$ref": "#/components/schemas/WorkerView"}},
            "count": uint(u64::MAX)}},
        "TopologyResponse": {"type": "object", "required": ["nodes", "edges"], "properties": {
            "nodes": {"type": "array", "items": {"type": "object", "required": ["id", "role", "state"],
                "properties": {
                    "id": {"type": "string"}, "role": {"type": "string", "enum": ["gateway", "seed", "worker"]},
                    "state": {"type": "string"}, "source": {"type": "string"}, "gpu": {"type": "string"},
                    "load": {"type": "number"}, "trust": unit(),
                    "distrusted": {"type": "boolean"}}}},
            "edges": {"type": "array", "items": {"type": "object", "required": ["from", "to"],
                "properties": {"from": {"type": "string"}, "to": {"type": "string"}}}}}},
        "HealthResponse": {"type": "object", "required": ["status", "workers", "dht_enabled"], "properties": {
            "status": {"type": "string", "enum": ["ok", "ready"]}, "workers": uint(u64::MAX),
            "dht_enabled": {"type": "boolean"}}}
    })
}

/// A number in [0, 1].
fn unit() -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 1})
}

/// A worker's trust in `WorkerView` (docs/trust.md).
fn trust_schema() -> Value {
    json!({"type": "object",
        "required": ["score", "verified", "failed", "distrusted", "reason", "weight", "slots_learned"],
        "properties": {
            "score": unit(), "verified": uint(u32::MAX.into()), "failed": uint(u32::MAX.into()),
            "distrusted": {"type": "boolean",
                "description": "below the trust floor: no real traffic until a canary passes"},
            "reason": {"type": ["string", "null"],
                "description": "the last reason given, e.g. a failed canary's"},
            "weight": {"type": "number", "minimum": 0,
                "description": "sampling weight now: learned capacity x trust x slow start"},
            "slots_learned": uint(u32::MAX.into())}})
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
    let mut paths = serde_json::Map::new();
    for (method, path, summary) in OPERATIONS {
        let entry = paths.entry((*path).to_owned()).or_insert_with(|| json!({}));
        if *path == "/api/service/{service}/{path}" {
            for m in FORWARD_METHODS {
                entry[*m] = operation(m, path, summary);
            }
        } else {
            entry[*method] = operation(method, path, summary);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "gpumesh gateway", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {"registryToken": {"type": "http", "scheme": "bearer",
                "description": "The gateway's registry token (GPUMESH_REGISTRY_TOKEN)"}},
            "schemas": schemas()
        }
    })
});

/// The handler.
pub async fn openapi() -> Response {
    super::json(&*DOCUMENT)
}
