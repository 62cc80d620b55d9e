//! The directory: the gateway's one table of workers, fed by every source, read by every pick.
//!
//! The table is the scheduler's own ([`gpumesh_scheduler::Scheduler`]: one id map, dense
//! slots, a per-service index, live latency and in-flight figures). The directory adds the
//! gateway's columns for the same slot ([`worker::Worker`]: the full record, the checked URL,
//! provenance, lease, metric handles), so a worker is found by one lookup and a pick clones no
//! string. Sources apply [`Change`]s; the directory checks each record (schema and upstream
//! policy), keeps the newest per worker (by `seq`), and answers picks. No DHT lookup happens
//! on the request path.
//!
//! One worker id lives in one entry. When both sources know a worker, the record with the
//! higher `seq` wins and the entry names the source it came from; a source may only refresh
//! or remove entries it owns, so a DHT "leave" does not drop a worker still heartbeating to the
//! registry.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::rules::plausible::{ClaimLimits, clamp_claims, clamp_load};
use gpumesh_dht::rules::unix_ms;
use gpumesh_scheduler::{NoEligible, Outcome, Scheduler};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::{info, warn};
use url::Url;

use crate::error::GatewayError;
use crate::metrics::{Metrics, RefusedLabels, WorkerLabels};
use crate::policy::UpstreamPolicy;

mod attempts;
mod change;
mod gauges;
mod query;
mod refused;
mod trust;
mod worker;

pub use attempts::{AttemptLog, AttemptLogs};
pub use change::{Change, Refresh, Source};
pub use gpumesh_scheduler::{Requirements, WorkerKey};
pub use refused::Refused;
pub use trust::{CheckTarget, REMEMBERED};
pub use worker::state_name;

use attempts::Attempts;
use gauges::Tally;
use worker::Worker;

/// The worker a request goes to.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The scheduler's handle (ends the pick).
    pub key: WorkerKey,
    /// Worker id.
    pub id: Arc<str>,
    /// Its checked tunnel URL.
    pub url: Arc<Url>,
    /// Where its record came from.
    pub source: Source,
}

#[derive(Debug)]
struct Table {
    scheduler: Scheduler,
    rng: SmallRng,
    /// The scheduler's clock starts here.
    epoch: Instant,
    /// The gateway's columns, indexed by the scheduler's slot.
    workers: Vec<Option<Worker>>,
    attempts: Attempts,
    /// Trust of workers not in the table (departed, or saved before a restart).
    remembered: trust::Remembered,
}

impl Table {
    /// The scheduler's `now`.
    fn clock(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    fn worker(&self, key: WorkerKey) -> Option<&Worker> {
        self.workers
            .get(key.slot() as usize)?
            .as_ref()
            .filter(|w| w.key == key)
    }

    fn worker_mut(&mut self, key: WorkerKey) -> Option<&mut Worker> {
        self.workers
            .get_mut(key.slot() as usize)?
            .as_mut()
            .filter(|w| w.key == key)
    }

    fn by_id(&self, id: &str) -> Option<&Worker> {
        self.worker(self.scheduler.key_of(id)?)
    }

    fn live(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().flatten()
    }
}

/// The worker table. Share it as `Arc<Directory>`.
#[derive(Debug)]
pub struct Directory {
    table: Mutex<Table>,
    policy: UpstreamPolicy,
    metrics: Metrics,
    /// What a record may claim; inflated figures are cut to these ceilings.
    limits: ClaimLimits,
}

impl Directory {
    /// An empty table applying `policy` to every record; `seed` seeds the pick's RNG.
    pub fn new(policy: UpstreamPolicy, metrics: Metrics, seed: u64) -> Self {
        gauges::init(&metrics);
        Self {
            table: Mutex::new(Table {
                scheduler: Scheduler::default(),
                rng: SmallRng::seed_from_u64(seed),
                epoch: Instant::now(),
                workers: Vec::new(),
                attempts: Attempts::default(),
                remembered: trust::Remembered::default(),
            }),
            policy,
            metrics,
            limits: ClaimLimits::default(),
        }
    }

    /// The same table with other claim ceilings (`--max-claimed-slots`).
    #[must_use]
    pub fn with_claim_limits(mut self, limits: ClaimLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts a claim cut to its ceiling.
    fn clamped(&self, source: Source, reason: &str) {
        self.metrics
            .records_clamped
            .get_or_create(&RefusedLabels {
                source: source.as_str().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a source's change.
    ///
    /// # Errors
    /// [`Refused`] when a change is not taken (counted by reason and logged, except a refresh
    /// of an unknown worker, which its source answers itself).
    pub fn apply(&self, change: Change, now: Instant) -> Result<(), Refused> {
        let (source, result) = match change {
            Change::Upsert {
                record,
                source,
                lease_until_ms,
            } => (source, self.upsert(*record, source, lease_until_ms, now)),
            Change::Refresh {
                id,
                source,
                refresh,
            } => (source, self.refresh(id, source, refresh, now)),
            Change::Remove { id, source } => {
                let mut table = self.lock();
                if table.by_id(&id).is_some_and(|w| w.source == source) {
                    self.remove_locked(&mut table, &id);
                    info!(worker = %id, source = source.as_str(), "worker left");
                }
                (source, Ok(()))
            }
        };
        if let Err(refused) = &result
            && !matches!(refused, Refused::Unknown(_))
        {
            self.metrics
                .records_refused
                .get_or_create(&RefusedLabels {
                    source: source.as_str().to_owned(),
                    reason: refused.label().to_owned(),
                })
                .inc();
            warn!(source = source.as_str(), %refused, "worker record refused");
        }
        result
    }

    fn upsert(
        &self,
        mut record: WorkerRecord,
        source: Source,
        lease_until_ms: Option<u64>,
        now: Instant,
    ) -> Result<(), Refused> {
        worker::check_record(&record, &self.limits)?;
        if let Some(clamp) = clamp_claims(&mut record, &self.limits) {
            self.clamped(source, clamp.label());
        }
        let url = Arc::new(self.policy.check_url(&record.tunnel_url)?);
        let mut table = self.lock();
        let (id, gauge, old_tally, reason) = match table.by_id(&record.peer_id) {
            // A registry re-registration is authenticated by the token and replaces its own
            // entry whatever the seq (an agent restarted without its counter).
            Some(old)
                if !(old.source == Source::Registry && source == Source::Registry)
                    && (old.record.seq > record.seq
                        || (old.record.seq == record.seq && old.source != source)) =>
            {
                return Err(Refused::Stale {
                    got: record.seq,
                    have: old.record.seq,
                });
            }
            Some(old) => (
                Arc::clone(&old.id),
                old.gauge.clone(),
                Some(old.tally),
                old.reason.clone(),
            ),
            None => {
                info!(worker = %record.peer_id, source = source.as_str(), url = %url, "worker joined");
                (Arc::from(record.peer_id.as_str()), None, None, None)
            }
        };
        let joined = old_tally.is_none();
        let load_at_ms = match source {
            Source::Registry => unix_ms(),
            Source::Dht => record.issued_at_ms,
        };
        let clock = table.clock(now);
        let view = worker::scheduler_view(&record, load_at_ms, clock);
        let key = table.scheduler.upsert_worker(view, clock);
        if joined {
            trust::on_join(&mut table, &id);
        }
        let tally = Tally::of(&record, source);
        let slot = key.slot() as usize;
        if table.workers.len() <= slot {
            table.workers.resize_with(slot + 1, || None);
        }
        table.workers[slot] = Some(Worker {
            key,
            id,
            record,
            url,
            source,
            received_at: now,
            lease_until_ms,
            gauge,
            tally,
            reason,
        });
        gauges::recount(&self.metrics, old_tally, Some(tally));
        Ok(())
    }

    fn refresh(
        &self,
        id: String,
        source: Source,
        refresh: Refresh,
        now: Instant,
    ) -> Result<(), Refused> {
        let mut table = self.lock();
        let clock = table.clock(now);
        let Some(key) = table
            .scheduler
            .key_of(&id)
            .filter(|&k| table.worker(k).is_some_and(|w| w.source == source))
        else {
            return Err(Refused::Unknown(id));
        };
        let Table {
            scheduler, workers, ..
        } = &mut *table;
        let Some(w) = workers[key.slot() as usize].as_mut() else {
            return Err(Refused::Unknown(id));
        };
        let regpu = refresh.gpus.is_some();
        if let Some(mut load) = refresh.load {
            if let Some(clamp) = clamp_load(&mut load, &self.limits) {
                self.clamped(source, clamp.label());
            }
            w.record.load = load;
        }
        if let Some(state) = refresh.state {
            w.record.state = state;
        }
        if let Some(gpus) = refresh.gpus {
            w.record.gpus = gpus;
        }
        if refresh.lease_until_ms.is_some() {
            w.lease_until_ms = refresh.lease_until_ms;
        }
        w.received_at = now;
        if regpu {
            // New GPU figures change the hardware filters: the scheduler takes the whole view.
            scheduler.upsert_worker(
                worker::scheduler_view(&w.record, refresh.at_ms, clock),
                clock,
            );
        } else {
            let load = worker::published_load(w.record.load, refresh.at_ms, clock);
            scheduler.update_load(&id, load);
            scheduler.set_state(&id, worker::scheduler_state(w.record.state));
        }
        let old = w.tally;
        w.tally = Tally::of(&w.record, source);
        gauges::recount(&self.metrics, Some(old), Some(w.tally));
        Ok(())
    }

    fn remove_locked(&self, table: &mut Table, id: &str) {
        if let Some(key) = table.scheduler.key_of(id)
            && table.worker(key).is_some()
            && let Some(w) = table.workers[key.slot() as usize].take()
        {
            gauges::recount(&self.metrics, Some(w.tally), None);
            trust::on_leave(table, key, id);
        }
        table.scheduler.remove_worker(id);
        self.metrics.worker_in_flight.remove(&WorkerLabels {
            worker: id.to_owned(),
        });
    }

    /// Drops entries whose lease (granted by their source) ended before `now_ms` (ms since
    /// the Unix epoch); returns how many.
    pub fn expire(&self, now_ms: u64) -> usize {
        let mut table = self.lock();
        let gone: Vec<Arc<str>> = table
            .live()
            .filter(|w| w.lease_until_ms.is_some_and(|t| t <= now_ms))
            .map(|w| Arc::clone(&w.id))
            .collect();
        for id in &gone {
            self.remove_locked(&mut table, id);
            info!(worker = %id, "worker lease expired");
        }
        gone.len()
    }

    /// Picks a worker for a request, never `avoid` (the worker just found unreachable). The
    /// request counts as in flight to it until [`Directory::finish`].
    ///
    /// # Errors
    /// 404 [`GatewayError::UnknownService`] when no worker offers the service; 503
    /// [`GatewayError::NoEligibleWorker`] with the scheduler's reason otherwise, or
    /// [`GatewayError::NotReady`] while the table is empty.
    pub fn pick(
        &self,
        requirements: &Requirements,
        avoid: Option<WorkerKey>,
        now: Instant,
    ) -> Result<Picked, GatewayError> {
        let mut table = self.lock();
        let clock = table.clock(now);
        let Table {
            scheduler,
            rng,
            workers,
            attempts,
            ..
        } = &mut *table;
        let picked = match avoid {
            Some(unreachable) => {
                // `avoid` is the worker the forwarder just failed to connect to (refused,
                // reset or timed out before anything was sent): strong evidence that it is
                // gone, so it leaves rotation now rather than after five failures.
                scheduler.on_unreachable(unreachable, clock);
                scheduler.pick_other(requirements, unreachable, clock, rng)
            }
            None => scheduler.pick(requirements, clock, rng),
        };
        let pick = picked.map_err(|e| {
            // An empty table (a gateway that just started blind) knows no service yet: that
            // is "not ready" (503), not the client's unknown service (404).
            if scheduler.is_empty() {
                GatewayError::NotReady
            } else {
                no_eligible(requirements, e)
            }
        })?;
        let in_flight = scheduler.in_flight(pick.key).unwrap_or(0);
        let live = scheduler.len();
        let Some(w) = workers
            .get_mut(pick.key.slot() as usize)
            .and_then(Option::as_mut)
            .filter(|w| w.key == pick.key)
        else {
            // Slots and columns change together under this lock; a miss is a bug, reported
            // as a retryable 503 rather than a panic.
            scheduler.on_finish(pick.key, Outcome::Cancelled, Duration::ZERO, clock);
            return Err(GatewayError::NoEligibleWorker {
                service: requirements.service().to_owned(),
                reason: "the chosen worker just left".to_owned(),
            });
        };
        set_in_flight(&self.metrics, w, in_flight);
        let picked = Picked {
            key: pick.key,
            id: Arc::clone(&w.id),
            url: Arc::clone(&w.url),
            source: w.source,
        };
        attempts.attempt(&picked.id, live, |id| scheduler.key_of(id).is_some());
        Ok(picked)
    }

    /// A request to the picked worker ended: in-flight −1, outcome and latency to the
    /// scheduler.
    pub fn finish(&self, picked: &Picked, outcome: Outcome, latency: Duration, now: Instant) {
        let mut table = self.lock();
        let clock = table.clock(now);
        table
            .scheduler
            .on_finish(picked.key, outcome, latency, clock);
        if outcome == Outcome::Failure {
            table.attempts.failure(&picked.id);
        }
        let in_flight = table.scheduler.in_flight(picked.key).unwrap_or(0);
        if let Some(w) = table.worker_mut(picked.key) {
            set_in_flight(&self.metrics, w, in_flight);
        }
    }

    /// Ids of the workers that came from `source`.
    pub fn ids_from(&self, source: Source) -> Vec<String> {
        self.lock()
            .live()
            .filter(|w| w.source == source)
            .map(|w| w.id.to_string())
            .collect()
    }
}

/// Sets the worker's in-flight gauge, resolving its label set once per worker.
fn set_in_flight(metrics: &Metrics, w: &mut Worker, in_flight: u32) {
    w.gauge
        .get_or_insert_with(|| {
            metrics
                .worker_in_flight
                .get_or_create(&WorkerLabels {
                    worker: w.id.to_string(),
                })
                .clone()
        })
        .set(i64::from(in_flight));
}

fn no_eligible(req: &Requirements, e: NoEligible) -> GatewayError {
    match e {
        NoEligible::NoWorkerForService { service } => GatewayError::UnknownService(service),
        other => GatewayError::NoEligibleWorker {
            service: req.service().to_owned(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests;
