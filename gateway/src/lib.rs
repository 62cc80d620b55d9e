//! gpumesh-gateway: the HTTP endpoint frontends call.
//!
//! A request to `/api/service/{service}/{path}` is matched against the in-memory worker view,
//! a worker is chosen by the scheduler crate, and the request is forwarded straight to that
//! worker's tunnel URL. The gateway also hands out the DHT seed list, keeps a token-protected
//! fallback registry for workers that cannot use the DHT, and serves topology, worker views,
//! metrics and health. `docs/gateway.md` has the API, error codes and rules.
//!
//! Layout:
//! - [`config`]: [`Config`], checked before any socket opens.
//! - [`server`]: [`Gateway`] / [`run`]: state, sockets, background tasks, shutdown.
//! - [`api`]: the axum router and one module per endpoint group; [`api::types`] holds the
//!   JSON shapes other crates (the agent) read.
//! - [`directory`]: the worker view, fed by sources through [`DirectoryEvent`]s.
//! - [`select`]: the bridge to the scheduler crate.
//! - [`forward`]: the pooled client, header rules, retries, in-flight tracking.
//! - [`policy`]: which upstream URLs may be called.
//! - [`error`]: [`GatewayError`], whose fault and which status.
//! - [`metrics`], [`ratelimit`], [`dht`]: metric families, token buckets, DHT node status.

pub mod api;
pub mod config;
pub mod dht;
pub mod directory;
pub mod error;
pub mod forward;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod select;
pub mod server;

pub use config::{Config, ConfigError};
pub use directory::{AttemptLog, AttemptLogs, Directory, DirectoryEvent, Source};
pub use error::GatewayError;
pub use server::{Gateway, RunError, run};
