//! gpumesh-gateway: the HTTP endpoint frontends call.
//!
//! Will hold the axum router (service forwarding, route lookup, bootstrap seeds, topology,
//! worker view, fallback registry, metrics, health), the forwarder, and the upstream policy.
