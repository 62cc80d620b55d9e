//! The registry source: workers that cannot use the DHT register over HTTP.
//!
//! `Authorization: Bearer <token>` on every call (401 without it, 403 with a wrong one, 403
//! when no token is configured). Entries live until the lease this source grants ends
//! (`registry_ttl` after the last register or heartbeat, never past an admission token).
//! Rate limited per client IP before the token is even looked at. Records taken here meet the
//! same schema limits as DHT records. `docs/SECURITY.md` has the admission rules: under
//! enforced admission a registration carries the worker's signed DHT envelope, and heartbeats
//! and deregistrations are signed by the worker's own key.
//!
//! Layout: [`http`] (the handlers), `admissions` (admitted workers and the replay guard),
//! and here the [`RegistrySource`] that turns accepted calls into directory [`Change`]s.

mod admissions;
pub mod http;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpumesh_dht::OperatorKey;
use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::rules::{MAX_ID_LEN, unix_ms};
use tracing::{debug, info, warn};

use super::{Change, Refresh, Source};
use crate::config::Config;
use crate::directory::{Directory, Refused};
use crate::error::GatewayError;
use crate::metrics::{Metrics, RefusedLabels};
use crate::ratelimit::RateLimiter;
use crate::types::{HeartbeatRequest, RegisterResponse};
use admissions::Admissions;

/// Largest JSON body accepted by the registry endpoints.
pub const REGISTRY_BODY_LIMIT: usize = 64 * 1024;

/// The registry source: its settings, its admission store and the table it feeds.
#[derive(Debug)]
pub struct RegistrySource {
    directory: Arc<Directory>,
    metrics: Metrics,
    /// The bearer token agents present (`None`: the registry is disabled).
    token: Option<String>,
    ttl: Duration,
    /// Operators whose admission tokens are accepted; empty: admission is not enforced.
    operators: Vec<OperatorKey>,
    limiter: RateLimiter,
    admissions: Admissions,
}

impl RegistrySource {
    /// The registry of a gateway configured with `config`, feeding `directory`.
    pub fn new(config: &Config, directory: Arc<Directory>, metrics: Metrics) -> Self {
        Self {
            directory,
            metrics,
            token: config.registry_token.clone(),
            ttl: config.registry_ttl,
            operators: config.dht_admission_operators.clone(),
            limiter: RateLimiter::per_minute(config.registry_rate_per_min),
            admissions: Admissions::default(),
        }
    }

    /// Whether operator admission is enforced.
    fn enforced(&self) -> bool {
        !self.operators.is_empty()
    }

    /// A lease of `registry_ttl`, cut short at `not_after_ms` (the worker's admission token).
    fn lease(&self, id: String, not_after_ms: Option<u64>) -> RegisterResponse {
        let now_ms = unix_ms();
        let ttl = not_after_ms.map_or(self.ttl, |end| {
            self.ttl
                .min(Duration::from_millis(end.saturating_sub(now_ms)))
        });
        RegisterResponse {
            worker_id: id,
            ttl_secs: ttl.as_secs(),
            heartbeat_interval_secs: (self.ttl.as_secs() / 3).max(1),
            expires_at_ms: now_ms
                .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Takes a checked record into the table under a fresh lease.
    fn register(
        &self,
        record: WorkerRecord,
        not_after_ms: Option<u64>,
    ) -> Result<RegisterResponse, GatewayError> {
        let id = record.peer_id.clone();
        let response = self.lease(id.clone(), not_after_ms);
        let change = Change::Upsert {
            record: Box::new(record),
            source: Source::Registry,
            lease_until_ms: Some(response.expires_at_ms),
        };
        self.directory
            .apply(change, Instant::now())
            .map_err(|refused| match refused {
                Refused::Policy(p) => GatewayError::UpstreamRefused(p.to_string()),
                stale @ Refused::Stale { .. } => GatewayError::StaleRecord(stale.to_string()),
                other => GatewayError::BadRequest(other.to_string()),
            })?;
        if let Some(not_after_ms) = not_after_ms {
            info!(worker = %id, not_after_ms, "registry worker admitted");
            let bound = self.directory.len() * 2 + 64;
            self.admissions
                .insert(id, not_after_ms, unix_ms(), bound, || self.live());
        }
        Ok(response)
    }

    /// Refreshes a registry worker: a new lease and the heartbeat's fresh figures.
    ///
    /// # Errors
    /// [`GatewayError::UnknownWorker`] when the registry holds no such worker (it expired or
    /// never registered): the agent should register again.
    fn heartbeat(
        &self,
        id: &str,
        beat: HeartbeatRequest,
        not_after_ms: Option<u64>,
    ) -> Result<RegisterResponse, GatewayError> {
        let response = self.lease(id.to_owned(), not_after_ms);
        let refresh = Refresh {
            load: beat.load,
            state: beat.state,
            gpus: beat.gpus,
            at_ms: unix_ms(),
            lease_until_ms: Some(response.expires_at_ms),
        };
        let change = Change::Refresh {
            id: id.to_owned(),
            source: Source::Registry,
            refresh,
        };
        match self.directory.apply(change, Instant::now()) {
            Ok(()) => {
                debug!(worker = %id, "registry heartbeat");
                Ok(response)
            }
            Err(_) => Err(GatewayError::UnknownWorker(id.to_owned())),
        }
    }

    /// Removes a registry worker.
    ///
    /// # Errors
    /// [`GatewayError::UnknownWorker`] when the registry holds no such worker.
    fn deregister(&self, id: &str) -> Result<(), GatewayError> {
        self.admissions.remove(id);
        if self.directory.source_of(id) != Some(Source::Registry) {
            return Err(GatewayError::UnknownWorker(id.to_owned()));
        }
        let change = Change::Remove {
            id: id.to_owned(),
            source: Source::Registry,
        };
        // A removal is never refused.
        let _ = self.directory.apply(change, Instant::now());
        Ok(())
    }

    /// The ids the registry holds now.
    fn live(&self) -> HashSet<String> {
        self.directory
            .ids_from(Source::Registry)
            .into_iter()
            .collect()
    }

    /// Counts and logs a record refused before it reaches the directory.
    fn refuse(&self, id: &str, reason: &'static str, error: GatewayError) -> GatewayError {
        self.metrics
            .records_refused
            .get_or_create(&RefusedLabels {
                source: Source::Registry.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        // The id is not checked yet: never log a client's arbitrary string.
        let valid = id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_alphanumeric());
        let worker = if valid { id } else { "(invalid id)" };
        warn!(source = "registry", worker, reason, %error, "worker record refused");
        error
    }
}
