//! [`Scheduler`]: the stateful API the gateway calls (and each simulated gateway runs).

use std::time::Duration;

use rand::RngCore;

use crate::candidates::Candidates;
use crate::config::SchedulerConfig;
use crate::policy::{Policy, PolicyKind};
use crate::table::{Table, WorkerEntry, WorkerKey};
use crate::trust::{Evidence, TrustState};
use crate::worker::{PublishedLoad, WorkerState, WorkerView};
use crate::{NoEligible, Requirements};

mod snapshot;

pub use snapshot::WorkerSnapshot;

/// Weight of one success in the fleet's latency-per-unit-speed average.
const FLEET_ALPHA: f64 = 0.02;

/// How a request ended, as far as the scheduler cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered successfully; the latency is a sample.
    Success,
    /// The worker's fault: connection error, 5xx, timeout. Raises the cost; repeated ones eject.
    Failure,
    /// Neither: the client went away, or the request was never sent. Only ends the in-flight.
    Cancelled,
}

/// A chosen worker. Exactly one [`Scheduler::on_finish`] call must follow each pick, when the
/// response ends (for streams: at the end of the body), so that in-flight counts stay right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "every pick must be finished with Scheduler::on_finish"]
pub struct Pick {
    /// The worker.
    pub key: WorkerKey,
    /// When the pick was made (the `now` passed to `pick`).
    pub started_at: Duration,
}

/// Pure worker selection: a worker table plus a [`Policy`] (gpumesh's by default).
///
/// Time is injected: every call takes `now` as a [`Duration`] since an epoch the caller
/// chooses (the gateway: `Instant::now() - start`; the simulator: simulated time), and
/// randomness comes from the caller's RNG. Nothing here does I/O or reads a clock.
#[derive(Debug)]
pub struct Scheduler {
    table: Table,
    cfg: SchedulerConfig,
    policy: Box<dyn Policy>,
    /// Fleet average of (latency estimate × speed) after each success, seconds (0 until the
    /// first sample).
    latency_per_speed: f64,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new(SchedulerConfig::GPUMESH)
    }
}

impl Scheduler {
    /// gpumesh's policy with `cfg`.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self::with_policy(cfg, PolicyKind::Gpumesh.build())
    }

    /// A named policy with the settings it is defined with (reference policies: tower's).
    pub fn for_policy(kind: PolicyKind) -> Self {
        Self::with_policy(kind.config(), kind.build())
    }

    /// Any policy with any settings.
    pub fn with_policy(cfg: SchedulerConfig, policy: Box<dyn Policy>) -> Self {
        Self {
            table: Table::default(),
            cfg,
            policy,
            latency_per_speed: 0.0,
        }
    }

    /// The policy's name (as in `gpumesh sim`).
    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }

    /// The settings.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Known workers.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// No workers known.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Adds a worker or replaces its view (a newer record); live figures survive a replace.
    pub fn upsert_worker(&mut self, view: WorkerView, now: Duration) -> WorkerKey {
        let seed = self.seed_for(view.effective_speed());
        let trust = TrustState::new(&self.cfg.trust);
        self.table
            .upsert(view, now, seed, trust, &self.cfg.capacity)
    }

    /// Replaces a worker's published load (a load heartbeat); `false` if unknown. A slot
    /// claim below the learned slots lowers them at once.
    pub fn update_load(&mut self, id: &str, load: PublishedLoad) -> bool {
        self.table.update_load(id, load, &self.cfg.capacity)
    }

    /// Sets a worker's state; `false` if unknown.
    pub fn set_state(&mut self, id: &str, state: WorkerState) -> bool {
        self.table.view_mut(id).map(|v| v.state = state).is_some()
    }

    /// Sets a worker's health flag (from health checks); `false` if unknown.
    pub fn set_healthy(&mut self, id: &str, healthy: bool) -> bool {
        self.table
            .view_mut(id)
            .map(|v| v.healthy = healthy)
            .is_some()
    }

    /// Overrides a worker's relative speed (`None`: from its GPU models); `false` if unknown.
    pub fn set_speed(&mut self, id: &str, speed: Option<f64>) -> bool {
        self.table.set_speed(id, speed)
    }

    /// Picks that fell back from weighted rejection sampling to a full scan of the service's
    /// workers (each costs O(n)). It stays near 0 while the sampling weights are within a
    /// small multiple of each other; a rising count means a few workers dwarf the rest.
    pub fn scan_fallbacks(&self) -> u64 {
        self.table
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Forgets a worker (O(1) amortised); outstanding picks of it are ignored when they
    /// finish.
    pub fn remove_worker(&mut self, id: &str) -> Option<WorkerView> {
        self.table.remove(id)
    }

    /// Whether any known worker offers `service` (O(1): the service index).
    pub fn serves(&self, service: &str) -> bool {
        self.table
            .service_list(service)
            .is_some_and(|l| !l.is_empty())
    }

    /// The services some known worker offers, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.table.services()
    }

    /// The handle of a worker id.
    pub fn key_of(&self, id: &str) -> Option<WorkerKey> {
        self.table.key_of(id)
    }

    /// The id behind a handle (`None` once removed).
    pub fn worker_id(&self, key: WorkerKey) -> Option<&str> {
        self.table.get_key(key).map(|e| e.view.id.as_str())
    }

    /// The view behind a handle.
    pub fn view(&self, key: WorkerKey) -> Option<&WorkerView> {
        self.table.get_key(key).map(|e| &e.view)
    }

    /// The entry behind a handle: its view and this scheduler's live figures.
    pub fn entry(&self, key: WorkerKey) -> Option<&WorkerEntry> {
        self.table.get_key(key)
    }

    /// This scheduler's in-flight count for a worker.
    pub fn in_flight(&self, key: WorkerKey) -> Option<u32> {
        self.table.get_key(key).map(|e| e.in_flight)
    }

    /// Feeds one piece of evidence about a worker's answers; the new trust (`None`: stale key).
    pub fn on_evidence(
        &mut self,
        key: WorkerKey,
        evidence: Evidence,
        _now: Duration,
    ) -> Option<TrustState> {
        let cfg = self.cfg.trust;
        let e = self.table.entry_mut_by_key(key)?;
        e.trust.on_evidence(evidence, &cfg);
        let state = e.trust;
        self.table.retrack(key.slot);
        Some(state)
    }

    /// A worker's trust.
    pub fn trust(&self, key: WorkerKey) -> Option<TrustState> {
        self.table.get_key(key).map(|e| e.trust)
    }

    /// Puts back the trust a restarted gateway saved (call after
    /// [`upsert_worker`](Self::upsert_worker)); `false` if the id is unknown.
    pub fn restore_trust(&mut self, id: &str, state: TrustState) -> bool {
        let Some(e) = self.table.entry_mut_by_id(id) else {
            return false;
        };
        e.trust = state.sanitized();
        if let Some(slot) = self.table.slot_of(id) {
            self.table.retrack(slot);
        }
        true
    }

    /// Whether a worker is below the trust floor (no real traffic); `None`: stale key.
    pub fn is_distrusted(&self, key: WorkerKey) -> Option<bool> {
        self.table
            .get_key(key)
            .map(|e| e.trust.is_distrusted(&self.cfg.trust))
    }

    /// A pick of this very worker (a canary or a cross-check), counted in flight like
    /// [`pick`](Self::pick) and finished the same way. Eligibility is not checked on purpose:
    /// a distrusted worker is checked so that it has a way back. `None`: stale key.
    pub fn pick_worker(&mut self, key: WorkerKey, now: Duration) -> Option<Pick> {
        let e = self.table.entry_mut_by_key(key)?;
        e.in_flight = e.in_flight.saturating_add(1);
        e.picks += 1;
        Some(Pick {
            key,
            started_at: now,
        })
    }

    /// Chooses a worker for `req` and counts the request as in flight to it. No allocation
    /// on success.
    pub fn pick(
        &mut self,
        req: &Requirements,
        now: Duration,
        rng: &mut dyn RngCore,
    ) -> Result<Pick, NoEligible> {
        self.pick_inner(req, None, now, rng)
    }

    /// Like [`Scheduler::pick`] but never `avoid` (a retry after the first worker failed
    /// before the request reached it).
    pub fn pick_other(
        &mut self,
        req: &Requirements,
        avoid: WorkerKey,
        now: Duration,
        rng: &mut dyn RngCore,
    ) -> Result<Pick, NoEligible> {
        let avoid = self.table.get_key(avoid).map(|e| e.key.slot);
        self.pick_inner(req, avoid, now, rng)
    }

    fn pick_inner(
        &mut self,
        req: &Requirements,
        avoid: Option<u32>,
        now: Duration,
        rng: &mut dyn RngCore,
    ) -> Result<Pick, NoEligible> {
        let Some(list) = self.table.service_list(req.service()) else {
            return Err(if self.table.len() == 0 {
                NoEligible::NoWorkers
            } else {
                NoEligible::NoWorkerForService {
                    service: req.service().to_owned(),
                }
            });
        };
        let candidates = Candidates {
            table: &self.table,
            list,
            req,
            now,
            cfg: &self.cfg,
            latency_per_speed: self.fleet_latency_per_speed(),
            avoid,
        };
        let chosen = self.policy.choose(&candidates, rng);
        let Some(slot) = chosen.filter(|&s| candidates.is_eligible(s)) else {
            return Err(candidates.diagnose());
        };
        let key = self.table.entry(slot).key;
        if let Some(e) = self.table.entry_mut_by_key(key) {
            e.in_flight = e.in_flight.saturating_add(1);
            e.picks += 1;
        }
        self.policy.on_pick(slot);
        Ok(Pick {
            key,
            started_at: now,
        })
    }

    /// Ends a pick: the in-flight count drops, and the outcome feeds the latency estimate,
    /// the learned slots, trust and the failure record. Unknown or stale keys are ignored.
    pub fn on_finish(
        &mut self,
        key: WorkerKey,
        outcome: Outcome,
        latency: Duration,
        now: Duration,
    ) {
        let Some(e) = self.table.entry_mut_by_key(key) else {
            return;
        };
        // This request included: the concurrency it was served at.
        let in_flight = e.in_flight;
        e.in_flight = e.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Success => self.on_success(key, in_flight, latency, now),
            Outcome::Failure => self.on_failure(key, latency, now),
            Outcome::Cancelled => return,
        }
        self.table.retrack(key.slot);
    }

    /// (latency prior, decay target) of a worker whose speed (class, or as seen) is `speed`.
    pub(crate) fn prior_and_rest(&self, speed: f64) -> (f64, f64) {
        let prior = self.fleet_latency_per_speed() / speed.max(1e-3);
        let rest = match self.cfg.decay_target {
            crate::config::DecayTarget::Zero => 0.0,
            crate::config::DecayTarget::ClassPrior => prior,
        };
        (prior, rest)
    }

    fn on_success(&mut self, key: WorkerKey, in_flight: u32, latency: Duration, now: Duration) {
        let fleet = self.fleet_latency_per_speed();
        let cfg = self.cfg;
        let Some((speed, seen)) = self.table.get_key(key).map(|e| (e.speed, e.seen_speed)) else {
            return;
        };
        let (_, rest) = self.prior_and_rest(seen);
        let Some(e) = self.table.entry_mut_by_key(key) else {
            return;
        };
        e.successes += 1;
        e.trust.on_success(&cfg.trust);
        e.ejection.on_success();
        observe(&mut e.latency, latency, now, &cfg, rest);
        let claim = e.claimed_slots();
        e.slots
            .on_success(in_flight, latency.as_secs_f64(), claim, &cfg.capacity);
        // The fleet figure averages the workers' *estimates* (per unit speed), not raw
        // samples, so a newcomer seeded with it reads like a typical worker under the same
        // estimator, with the same bias towards peaks. The speed used (not the class) makes
        // each contribution at most (1 + probe margin) × the figure: a worker that claims a
        // fast GPU and answers slowly cannot drag every worker's prior up.
        let estimate = e.latency.estimate(now, cfg.decay, rest);
        let (used, _) =
            crate::capacity::speed_used(speed, fleet, estimate, e.samples(), &cfg.capacity);
        e.seen_speed = used;
        let sample = estimate * used;
        self.latency_per_speed = if self.latency_per_speed == 0.0 {
            sample
        } else {
            self.latency_per_speed + FLEET_ALPHA * (sample - self.latency_per_speed)
        };
    }

    fn on_failure(&mut self, key: WorkerKey, latency: Duration, now: Duration) {
        let cfg = self.cfg;
        let Some(seen) = self.table.get_key(key).map(|e| e.seen_speed) else {
            return;
        };
        let (prior, rest) = self.prior_and_rest(seen);
        let may_eject = self.ejected_share_below_cap(now);
        let Some(e) = self.table.entry_mut_by_key(key) else {
            return;
        };
        e.failures += 1;
        e.slots.on_failure(&cfg.capacity);
        let recorded = match cfg.failure_penalty {
            None => latency,
            Some(mult) => {
                let current = e.latency.estimate(now, cfg.decay, rest);
                let floor = (mult * prior).max(2.0 * current);
                latency.max(Duration::from_secs_f64(floor.min(1e6)))
            }
        };
        // A failure jumps the estimate (a peak), whatever the success weights.
        e.latency
            .observe_per_sample(recorded, now, (1.0, 0.0), cfg.decay, rest);
        let cfg_ej = if may_eject {
            cfg.ejection
        } else {
            crate::ejection::EjectionConfig::DISABLED
        };
        e.ejection.on_failure(now, &cfg_ej);
    }

    /// The worker could not be connected to (refused, reset or timed out before the request
    /// was sent): a failure that ejects at once, as long as no more than
    /// [`max_unreachable_share`](crate::ejection::EjectionConfig::max_unreachable_share) of
    /// the workers are ejected. Call it in addition to the pick's
    /// [`on_finish`](Self::on_finish). Returns `true` when it started an ejection.
    pub fn on_unreachable(&mut self, key: WorkerKey, now: Duration) -> bool {
        let ejected = self
            .table
            .iter()
            .filter(|e| e.ejection.is_ejected(now))
            .count();
        let share = self.cfg.ejection.max_unreachable_share;
        let cap = ((self.table.len() as f64 * share).ceil() as usize).max(1);
        let cfg = self.cfg.ejection;
        match self.table.entry_mut_by_key(key) {
            Some(e) if ejected < cap => e.ejection.on_unreachable(now, &cfg),
            _ => false,
        }
    }

    /// Whether one more ejection keeps the ejected share within
    /// [`crate::ejection::EjectionConfig::max_ejected_share`] (O(n); only on failures).
    fn ejected_share_below_cap(&self, now: Duration) -> bool {
        let ejected = self
            .table
            .iter()
            .filter(|e| e.ejection.is_ejected(now))
            .count();
        let cap = (self.table.len() as f64 * self.cfg.ejection.max_ejected_share).ceil() as usize;
        ejected < cap.max(1)
    }

    /// Fleet latency per unit speed, falling back to the default RTT before any sample.
    pub(crate) fn fleet_latency_per_speed(&self) -> f64 {
        if self.latency_per_speed > 0.0 {
            self.latency_per_speed
        } else {
            self.cfg.default_rtt.as_secs_f64()
        }
    }

    fn seed_for(&self, speed: f64) -> Duration {
        if self.cfg.seed_from_class {
            let s = self.fleet_latency_per_speed() / speed.max(1e-3);
            Duration::from_secs_f64(s.clamp(0.0, 1e6))
        } else {
            self.cfg.default_rtt
        }
    }
}

fn observe(
    ewma: &mut crate::ewma::PeakEwma,
    sample: Duration,
    now: Duration,
    cfg: &SchedulerConfig,
    rest: f64,
) {
    match cfg.per_sample_weights {
        Some(w) => ewma.observe_per_sample(sample, now, w, cfg.decay, rest),
        None => ewma.observe(sample, now, cfg.decay, rest),
    }
}
