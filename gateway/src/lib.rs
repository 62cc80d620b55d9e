//! gpumesh-gateway: the HTTP endpoint frontends call.
//!
//! A request to `/api/service/{service}/{path}` is matched against the in-memory worker table,
//! a worker is chosen by the scheduler crate, and the request is forwarded straight to that
//! worker's tunnel URL. The gateway also hands out the DHT seed list, keeps a token-protected
//! fallback registry for workers that cannot use the DHT, and serves topology, worker views,
//! metrics and health. `docs/gateway.md` has the API, error codes and rules;
//! `docs/architecture.md` the path of a worker record.
//!
//! Layout, lowest layer first (a module imports only from layers above it in this list):
//! - [`config`], [`checks`], [`error`], [`types`], [`metrics`], [`ratelimit`], [`policy`],
//!   [`extract`]: the shared nouns: [`Config`], the answer-check plan (canaries and
//!   cross-checked services), [`GatewayError`] and [`RunError`], the JSON shapes, metric
//!   families, token buckets, which upstream URLs may be called, request extractors.
//! - [`directory`]: the one table of workers (the scheduler's, plus the gateway's columns).
//! - [`sources`]: where workers come from ([`sources::dht`], [`sources::registry`]), as
//!   [`sources::Change`]s applied to the directory.
//! - [`forward`]: the pooled client, header rules, retries, hedging, in-flight tracking,
//!   request metrics, response deadlines.
//! - [`verify`]: answer checks: canaries sent to workers, real requests replayed on others
//!   (cross-checks); their verdicts become trust evidence in the directory.
//! - [`api`]: the axum router and one module per endpoint group.
//! - [`server`]: [`Gateway`] / [`run`]: state, sockets, background tasks, shutdown.

pub mod api;
pub mod checks;
pub mod config;
pub mod directory;
pub mod error;
pub mod extract;
pub mod forward;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod sources;
pub mod types;
pub mod verify;

pub use config::{Config, ConfigError};
pub use directory::{AttemptLog, AttemptLogs, Directory};
pub use error::{GatewayError, RunError};
pub use server::{Gateway, run};
pub use sources::{Change, Source};
