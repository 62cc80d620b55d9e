//! The bridge to the scheduler crate: records in, picks out, outcomes back.
//!
//! The selection itself (filtering with reasons, GPU-aware latency- and load-weighted P2C,
//! ejection) is `gpumesh_scheduler::Scheduler`'s. This module only converts a DHT
//! [`WorkerRecord`] into the scheduler's [`WorkerView`], owns the RNG and the clock epoch the
//! scheduler wants injected, and maps [`NoEligible`] onto HTTP errors.

use std::time::{Duration, Instant};

use gpumesh_dht::record::{self, WorkerRecord};
use gpumesh_scheduler::{
    Gpu, NoEligible, Outcome, PublishedLoad, Requirements, Scheduler, WorkerKey, WorkerState,
    WorkerView,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::directory::{Finish, unix_ms};
use crate::error::GatewayError;

/// The scheduler, its RNG and its clock epoch.
#[derive(Debug)]
pub struct Selector {
    scheduler: Scheduler,
    rng: SmallRng,
    epoch: Instant,
}

impl Selector {
    /// gpumesh's scheduling policy with an RNG seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            scheduler: Scheduler::default(),
            rng: SmallRng::seed_from_u64(seed),
            epoch: Instant::now(),
        }
    }

    /// The scheduler's `now`: time since this selector was made.
    fn now(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.epoch)
    }

    /// Adds or replaces a worker from its record; its load figures were measured at
    /// `load_at_ms` (ms since the Unix epoch), so the scheduler can discount them by age.
    pub fn upsert(&mut self, record: &WorkerRecord, load_at_ms: u64, now: Instant) {
        let now = self.now(now);
        let view = to_view(record, load_at_ms, now);
        let _ = self.scheduler.upsert_worker(view, now);
    }

    /// Forgets a worker.
    pub fn remove(&mut self, id: &str) {
        let _ = self.scheduler.remove_worker(id);
    }

    /// Picks a worker, never `avoid` (the one that just could not be reached). The pick counts
    /// as in flight until [`Selector::finish`].
    ///
    /// # Errors
    /// 404 [`GatewayError::UnknownService`] when no worker serves the service; 503
    /// [`GatewayError::NoEligibleWorker`] with the filter's reason otherwise.
    pub fn pick(
        &mut self,
        req: &Requirements,
        avoid: Option<WorkerKey>,
        now: Instant,
    ) -> Result<(WorkerKey, String), GatewayError> {
        let now = self.now(now);
        let picked = match avoid {
            Some(avoid) => self.scheduler.pick_other(req, avoid, now, &mut self.rng),
            None => self.scheduler.pick(req, now, &mut self.rng),
        };
        let pick = picked.map_err(|e| no_eligible(req, e))?;
        match self.scheduler.worker_id(pick.key) {
            Some(id) => Ok((pick.key, id.to_owned())),
            None => {
                self.scheduler
                    .on_finish(pick.key, Outcome::Cancelled, Duration::ZERO, now);
                Err(GatewayError::NoEligibleWorker {
                    service: req.service().to_owned(),
                    reason: "the chosen worker just left".to_owned(),
                })
            }
        }
    }

    /// The worker could not be connected to: out of rotation at once (see
    /// [`Scheduler::on_unreachable`]).
    pub fn unreachable(&mut self, key: WorkerKey, now: Instant) {
        let now = self.now(now);
        let _ = self.scheduler.on_unreachable(key, now);
    }

    /// Ends a pick with its outcome and latency.
    pub fn finish(&mut self, key: WorkerKey, outcome: Finish, latency: Duration, now: Instant) {
        let outcome = match outcome {
            Finish::Success => Outcome::Success,
            Finish::Failure => Outcome::Failure,
            Finish::Cancelled => Outcome::Cancelled,
        };
        let now = self.now(now);
        self.scheduler.on_finish(key, outcome, latency, now);
    }
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

/// The scheduler's view of a record whose load was measured at `load_at_ms`.
pub fn to_view(r: &WorkerRecord, load_at_ms: u64, now: Duration) -> WorkerView {
    let age = Duration::from_millis(unix_ms().saturating_sub(load_at_ms));
    WorkerView {
        id: r.peer_id.clone(),
        services: r.services.iter().map(ToString::to_string).collect(),
        gpus: r
            .gpus
            .iter()
            .map(|g| Gpu {
                model: g.model.clone(),
                vram_total_mib: g.vram_total_mib,
                vram_free_mib: g.vram_free_mib,
                utilization: f32::from(g.util_pct.unwrap_or(0).min(100)) / 100.0,
            })
            .collect(),
        tags: r.capabilities.clone(),
        load: PublishedLoad {
            in_flight: r.load.in_flight,
            queued: r.load.queue_depth,
            max_concurrency: r.load.max_concurrency,
            published_at: now.saturating_sub(age),
        },
        state: match r.state {
            record::WorkerState::Joining => WorkerState::Joining,
            record::WorkerState::Online => WorkerState::Online,
            record::WorkerState::Draining => WorkerState::Draining,
        },
        healthy: true,
        speed: None,
    }
}
