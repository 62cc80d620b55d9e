//! The eligible set for one pick, and allocation-free ways to sample or scan it.
//!
//! Eligibility = serves the service (per-service index), online, healthy, not ejected, enough
//! free VRAM on one GPU, GPU model and tags match, and not the worker to avoid (a retry).
//! Sampling draws random positions of the service's index and rejects ineligible ones; after
//! a few misses it falls back to one reservoir-sampling scan, so a mostly ineligible set costs
//! O(n) and never fails to find an eligible worker that exists.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::{Rng, RngCore};

use crate::config::{DecayTarget, SchedulerConfig};
use crate::table::{Table, WorkerEntry};
use crate::worker::WorkerState;
use crate::{NoEligible, Requirements};

/// Share of its capacity a worker is sampled with right after joining.
pub const SLOW_START_FLOOR: f64 = 0.3;

/// What a client is told to wait when every worker that fits is distrusted.
const DISTRUST_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Random draws per wanted candidate before falling back to a scan.
const TRIES_PER_CANDIDATE: usize = 8;

/// The share of its weight a worker that joined at `added_at` is sampled with at `now`: from
/// [`SLOW_START_FLOOR`] to 1 over the slow-start window.
#[inline]
pub(crate) fn slow_start(cfg: &SchedulerConfig, added_at: Duration, now: Duration) -> f64 {
    let window = cfg.slow_start.as_secs_f64();
    let age = now.saturating_sub(added_at).as_secs_f64();
    if window <= 0.0 || age >= window {
        return 1.0;
    }
    SLOW_START_FLOOR + (1.0 - SLOW_START_FLOOR) * age / window
}

/// The workers a policy may choose from, for one request at one instant.
pub struct Candidates<'a> {
    pub(crate) table: &'a Table,
    pub(crate) list: &'a [u32],
    pub(crate) req: &'a Requirements,
    pub(crate) now: Duration,
    pub(crate) cfg: &'a SchedulerConfig,
    pub(crate) latency_per_speed: f64,
    pub(crate) avoid: Option<u32>,
}

impl<'a> Candidates<'a> {
    /// The pick's time.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Workers serving the service, eligible or not.
    pub fn indexed(&self) -> usize {
        self.list.len()
    }

    /// The slot at position `i` of the service index (for cursors such as round-robin).
    pub fn slot_at(&self, i: usize) -> Option<u32> {
        self.list.get(i).copied()
    }

    /// The worker in `slot`; `slot` must come from this set.
    #[inline]
    pub fn worker(&self, slot: u32) -> &'a WorkerEntry {
        self.table.entry(slot)
    }

    /// Whether `slot` may receive this request now.
    #[inline]
    pub fn is_eligible(&self, slot: u32) -> bool {
        let e = self.table.entry(slot);
        Some(slot) != self.avoid
            && e.view.state == WorkerState::Online
            && e.view.healthy
            && !e.ejection.is_ejected(self.now)
            && !e.trust.is_distrusted(&self.cfg.trust)
            && e.matches_hardware(self.req)
    }

    /// Every eligible slot, in index order (O(n)).
    pub fn eligible(&self) -> impl Iterator<Item = u32> + '_ {
        self.list.iter().copied().filter(|&s| self.is_eligible(s))
    }

    /// Fills `out` with distinct random eligible slots, in random order; returns how many
    /// (fewer than `out.len()` only when fewer are eligible).
    pub fn sample_distinct(&self, rng: &mut dyn RngCore, out: &mut [u32]) -> usize {
        let k = out.len();
        let n = self.list.len();
        if k == 0 || n == 0 {
            return 0;
        }
        let mut got = 0;
        for _ in 0..k * TRIES_PER_CANDIDATE {
            let slot = self.list[rng.random_range(0..n)];
            if self.is_eligible(slot) && !out[..got].contains(&slot) {
                out[got] = slot;
                got += 1;
                if got == k {
                    return k;
                }
            }
        }
        // Mostly ineligible (or tiny) set: reservoir-sample over one scan.
        let mut seen = 0usize;
        for slot in self.eligible() {
            if seen < k {
                out[seen] = slot;
            } else {
                let j = rng.random_range(0..=seen);
                if j < k {
                    out[j] = slot;
                }
            }
            seen += 1;
        }
        let got = seen.min(k);
        if got == 2 && rng.random::<bool>() {
            out.swap(0, 1);
        }
        got
    }

    /// Like [`Self::sample_distinct`], but each worker is drawn with probability
    /// proportional to its [`sampling_weight`](Self::sampling_weight), as nginx's `random
    /// two` draws by weight. Uniform draws make a pair of slow GPUs as likely as their count
    /// says: with 3/8 of a fleet on T4s holding 11% of its capacity, 14% of requests would see
    /// only T4s, more than they can serve, whatever the cost function. Rejection sampling
    /// against a bound on every weight, kept in O(1) per change (within 2× of the largest)
    /// keeps this allocation-free; after too many misses one weighted reservoir scan
    /// (Efraimidis–Spirakis keys) takes over, and is counted
    /// ([`crate::Scheduler::scan_fallbacks`]).
    pub fn sample_distinct_weighted(&self, rng: &mut dyn RngCore, out: &mut [u32]) -> usize {
        let k = out.len();
        let n = self.list.len();
        let w_max = self.table.weight_bound();
        if k == 0 || n == 0 || w_max <= 0.0 {
            return 0;
        }
        let mut got = 0;
        for _ in 0..k * TRIES_PER_CANDIDATE * 4 {
            let slot = self.list[rng.random_range(0..n)];
            let u = rng.random::<f64>() * w_max;
            // The ceiling (no latency read) rejects most misses cheaply.
            if u >= self.worker(slot).weight_ceiling() {
                continue;
            }
            if u < self.sampling_weight(slot)
                && self.is_eligible(slot)
                && !out[..got].contains(&slot)
            {
                out[got] = slot;
                got += 1;
                if got == k {
                    return k;
                }
            }
        }
        self.table.fallbacks.fetch_add(1, Ordering::Relaxed);
        // Weighted reservoir: keep the k largest keys u^(1/w).
        let mut keys = [f64::NEG_INFINITY; 8];
        let k = k.min(keys.len());
        let mut seen = 0usize;
        for slot in self.eligible() {
            let w = self.sampling_weight(slot).max(1e-9);
            let key = rng.random::<f64>().ln() / w;
            let (min_i, min_k) = keys[..k].iter().copied().enumerate().fold(
                (0, f64::INFINITY),
                |(bi, bk), (i, x)| if x < bk { (i, x) } else { (bi, bk) },
            );
            if key > min_k {
                keys[min_i] = key;
                out[min_i] = slot;
            }
            seen += 1;
        }
        seen.min(k)
    }

    /// The speed `slot` is weighted with now, and the speed observed from its latency (see
    /// [`crate::capacity`]).
    #[inline]
    pub fn speed_used(&self, slot: u32) -> (f64, Option<f64>) {
        let e = self.worker(slot);
        crate::capacity::speed_used(
            e.speed,
            self.latency_per_speed,
            self.latency(slot),
            e.samples(),
            &self.cfg.capacity,
        )
    }

    /// Speed used × learned slots × trust, ramped up over the slow-start window after a
    /// worker joins (Envoy's `slow_start_config`): from [`SLOW_START_FLOOR`] of it at once to
    /// all of it at the end. Never above the worker's weight ceiling, which the table's
    /// bound covers.
    #[inline]
    pub fn sampling_weight(&self, slot: u32) -> f64 {
        let e = self.worker(slot);
        let full = self.speed_used(slot).0 * f64::from(e.slots()) * e.trust.score;
        full * slow_start(self.cfg, e.added_at(), self.now)
    }

    /// One random eligible slot.
    pub fn sample_one(&self, rng: &mut dyn RngCore) -> Option<u32> {
        let mut out = [0u32; 1];
        (self.sample_distinct(rng, &mut out) == 1).then_some(out[0])
    }

    /// The worker's prior latency, seconds: fleet latency per unit speed ÷ its speed as last
    /// seen (its class speed until it has answered).
    #[inline]
    pub fn prior(&self, slot: u32) -> f64 {
        self.latency_per_speed / self.worker(slot).seen_speed.max(1e-3)
    }

    /// The peak-EWMA latency estimate now, seconds (decay per the scheduler's config).
    #[inline]
    pub fn latency(&self, slot: u32) -> f64 {
        let rest = match self.cfg.decay_target {
            DecayTarget::Zero => 0.0,
            DecayTarget::ClassPrior => self.prior(slot),
        };
        self.worker(slot)
            .latency
            .estimate(self.now, self.cfg.decay, rest)
    }

    /// Requests at the worker by this scheduler's best estimate: its own live in-flight
    /// plus the others' part of the published load, discounted by the publication's age.
    #[inline]
    pub fn load_estimate(&self, slot: u32) -> f64 {
        let e = self.worker(slot);
        let own = f64::from(e.in_flight);
        let published = &e.view.load;
        let others = f64::from(published.total()) - own;
        if others <= 0.0 {
            return own;
        }
        let age = self
            .now
            .saturating_sub(published.published_at)
            .as_secs_f64();
        let w = (-age / self.cfg.load_age_tau.as_secs_f64().max(1e-9)).exp();
        own + others * w
    }

    /// When an online, healthy worker that is not eligible now may be again: a distrusted one
    /// when a canary passes (canaries go out within the re-probe interval), an ejected one
    /// when its ejection ends. `None`: neither.
    fn back_at(&self, e: &WorkerEntry) -> Option<Duration> {
        if e.trust.is_distrusted(&self.cfg.trust) {
            return Some(self.now + DISTRUST_RETRY_AFTER);
        }
        e.ejection.until().filter(|&u| u > self.now)
    }

    /// Why nothing is eligible: the first filter stage that emptied the set (O(n), only on
    /// the error path).
    pub(crate) fn diagnose(&self) -> NoEligible {
        let service = || self.req.service().to_owned();
        let (mut model, mut vram, mut tags) = (0usize, 0usize, 0usize);
        let (mut draining, mut joining, mut unhealthy) = (0usize, 0usize, 0usize);
        let mut best_vram = 0u64;
        let mut ejected_until: Option<Duration> = None;
        for &slot in self.list {
            if Some(slot) == self.avoid {
                continue;
            }
            let e = self.table.entry(slot);
            let model_ok = self.req.gpu_model().is_none_or(|m| {
                e.view
                    .gpus
                    .iter()
                    .any(|g| crate::gpu::contains_ignore_ascii_case(&g.model, m))
            });
            if !model_ok {
                continue;
            }
            model += 1;
            best_vram = best_vram.max(e.max_free_vram_mib);
            if e.max_free_vram_mib < self.req.min_free_vram_mib() {
                continue;
            }
            vram += 1;
            if !self.req.tags().iter().all(|t| e.view.tags.contains(t)) {
                continue;
            }
            tags += 1;
            match e.view.state {
                WorkerState::Draining => draining += 1,
                WorkerState::Joining => joining += 1,
                WorkerState::Online if !e.view.healthy => unhealthy += 1,
                WorkerState::Online => {
                    if let Some(u) = self.back_at(e) {
                        ejected_until = Some(ejected_until.map_or(u, |x: Duration| x.min(u)));
                    }
                }
            }
        }
        if self.list.is_empty() || (self.avoid.is_some() && self.list.len() == 1) {
            return NoEligible::NoWorkerForService { service: service() };
        }
        if model == 0 {
            return NoEligible::NoGpuModelMatch {
                service: service(),
                model: self.req.gpu_model().unwrap_or_default().to_owned(),
            };
        }
        if vram == 0 {
            return NoEligible::NotEnoughVram {
                service: service(),
                required_mib: self.req.min_free_vram_mib(),
                best_mib: best_vram,
            };
        }
        if tags == 0 {
            return NoEligible::MissingTags { service: service() };
        }
        if let Some(until) = ejected_until {
            return NoEligible::AllEjected {
                service: service(),
                retry_after: until.saturating_sub(self.now),
            };
        }
        if unhealthy > 0 && unhealthy >= tags.saturating_sub(draining + joining) {
            return NoEligible::AllUnhealthy { service: service() };
        }
        if draining > 0 {
            return NoEligible::AllDraining { service: service() };
        }
        if joining > 0 {
            return NoEligible::AllJoining { service: service() };
        }
        NoEligible::Saturated { service: service() }
    }
}
