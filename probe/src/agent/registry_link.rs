//! The coordinator-fallback link: register, heartbeat and deregister over HTTP.
//!
//! Registrations carry signed records, as DHT publications do, so this link stamps them the
//! way the DHT node stamps its own: with the rulebook's [`Stamper`] and TTL.

use std::time::{Duration, Instant};

use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::rules::{Stamper, unix_ms};
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::coordinator::{Coordinator, CoordinatorError, HeartbeatRequest};

/// What a registration or heartbeat achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The registry holds the record (or took the fresh figures).
    Held,
    /// 409 `stale_record`: the gateway already holds this record or a newer one from the DHT.
    /// No back-off: nothing failed, and re-sending the same record would only be refused again.
    HeldViaDht,
    /// The call failed; the next one waits for the back-off.
    Failed,
}

impl Outcome {
    /// Whether the gateway holds the record, by either path.
    pub(crate) fn held(self) -> bool {
        self != Self::Failed
    }
}

/// The worker's standing with the gateway registry.
#[derive(Debug)]
pub(crate) struct RegistryLink {
    client: Coordinator,
    registered: Option<String>,
    heartbeat_every: Duration,
    last_beat: Option<Instant>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// Stamps each registered record (`seq`, issue and expiry times).
    stamper: Stamper,
    /// How long a registered record lives: [`gpumesh_dht::rules::record_ttl`] of the agent's
    /// refresh period.
    record_ttl: Duration,
}

impl RegistryLink {
    pub(crate) fn new(client: Coordinator, record_ttl: Duration) -> Self {
        Self {
            client,
            stamper: Stamper::new(),
            record_ttl,
            registered: None,
            heartbeat_every: Duration::from_secs(30),
            last_beat: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            retry_at: None,
        }
    }

    pub(crate) fn calls(&self) -> u64 {
        self.client.calls()
    }

    pub(crate) fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    /// The registry answered: the next call need not wait.
    fn answered(&mut self) {
        self.backoff.reset();
        self.retry_at = None;
    }

    fn failed(&mut self, what: &str, e: &CoordinatorError) {
        let d = self.backoff.next_delay();
        if matches!(e, CoordinatorError::NotAdmitted(_)) {
            // Retrying will not help until the operator issues a token: say so loudly.
            error!(error = %e, retry_in = ?d, "registry {what} refused: worker not admitted");
        } else {
            warn!(error = %e, retry_in = ?d, "registry {what} failed");
        }
        self.retry_at = Some(Instant::now() + d);
    }

    /// Stamps and registers the full record (also used after a material change: the registry
    /// replaces the entry).
    pub(crate) async fn publish(&mut self, record: &WorkerRecord) -> Outcome {
        if self.backing_off() {
            return Outcome::Failed;
        }
        let mut record = record.clone();
        self.stamper
            .next(unix_ms(), self.record_ttl)
            .apply(&mut record);
        match self.client.register(&record).await {
            Ok(r) => {
                if self.registered.is_none() {
                    info!(worker = %r.worker_id, "registered with the gateway registry");
                }
                self.heartbeat_every = Duration::from_secs(r.heartbeat_interval_secs.clamp(1, 300));
                self.registered = Some(r.worker_id);
                self.last_beat = Some(Instant::now());
                self.answered();
                Outcome::Held
            }
            Err(CoordinatorError::AlreadyHeld(why)) => {
                debug!(seq = record.seq, %why, "the gateway already holds this record from the DHT");
                self.answered();
                Outcome::HeldViaDht
            }
            Err(e) => {
                self.failed("register", &e);
                Outcome::Failed
            }
        }
    }

    /// A heartbeat with fresh load and GPU figures, at the gateway's suggested period (the
    /// registry is a central service: it does not get the DHT's fast load beats).
    pub(crate) async fn heartbeat(&mut self, record: &WorkerRecord) {
        let due = self
            .last_beat
            .is_none_or(|t| t.elapsed() >= self.heartbeat_every);
        if due && !self.backing_off() {
            self.beat(record).await;
        }
    }

    /// A heartbeat now; re-registers when the gateway forgot the worker.
    pub(crate) async fn beat(&mut self, record: &WorkerRecord) -> Outcome {
        let Some(id) = self.registered.clone() else {
            return self.publish(record).await;
        };
        let beat = HeartbeatRequest {
            state: Some(record.state),
            load: Some(record.load),
            gpus: Some(record.gpus.clone()),
        };
        match self.client.heartbeat(&id, &beat).await {
            Ok(()) => {
                self.last_beat = Some(Instant::now());
                self.backoff.reset();
                Outcome::Held
            }
            Err(CoordinatorError::Unknown(_)) => {
                info!("registry forgot this worker; registering again");
                self.registered = None;
                self.publish(record).await
            }
            Err(e) => {
                self.failed("heartbeat", &e);
                Outcome::Failed
            }
        }
    }

    /// Removes the worker from the registry (drain, or moving back to the DHT).
    pub(crate) async fn withdraw(&mut self) {
        if let Some(id) = self.registered.take() {
            match self.client.deregister(&id).await {
                Ok(()) | Err(CoordinatorError::Unknown(_)) => info!("left the gateway registry"),
                Err(e) => warn!(error = %e, "deregister failed; the entry will expire"),
            }
        }
    }
}
