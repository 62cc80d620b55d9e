//! The worker table: dense slots, id lookup, a per-service index, and each worker's live
//! statistics (this scheduler's in-flight count, latency estimate, failure record, learned
//! slots, trust).
//!
//! Every change is O(1) amortised in the fleet size: each entry remembers its position in
//! each service list, so removal is a `swap_remove` plus one fix-up, and the bound on
//! sampling weights ([`crate::bound`]) is adjusted per change rather than recomputed.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::bound::{WeightBound, bucket_of};
use crate::capacity::{CapacityConfig, FleetMedian, LearnedSlots};
use crate::ejection::Ejection;
use crate::ewma::PeakEwma;
use crate::gpu::contains_ignore_ascii_case;
use crate::trust::TrustState;
use crate::worker::{PublishedLoad, WorkerView};

/// A cheap handle to a worker in one [`crate::Scheduler`]: a slot plus a generation, so a
/// handle to a removed worker never reaches the worker that later reuses its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerKey {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl WorkerKey {
    /// The dense slot index (stable while the worker stays; reused after removal).
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

/// A worker as the scheduler holds it: its published view and this scheduler's live figures.
#[derive(Debug, Clone)]
pub struct WorkerEntry {
    pub(crate) view: WorkerView,
    pub(crate) key: WorkerKey,
    pub(crate) speed: f64,
    /// The speed used at the last answer ([`crate::capacity::speed_used`]; the class speed
    /// until then). The latency prior and decay target divide by it, not by the class: a
    /// worker that claims a fast GPU and answers slowly must not drift back to looking fast
    /// whenever it idles.
    pub(crate) seen_speed: f64,
    pub(crate) max_free_vram_mib: u64,
    pub(crate) in_flight: u32,
    pub(crate) latency: PeakEwma,
    pub(crate) ejection: Ejection,
    pub(crate) picks: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) added_at: Duration,
    pub(crate) trust: TrustState,
    pub(crate) slots: LearnedSlots,
    /// (service list index, position in it), one per service the worker is linked into.
    positions: Vec<(u32, u32)>,
    /// The weight bucket this entry is counted in ([`crate::bound`]).
    bucket: Option<u8>,
}

impl WorkerEntry {
    /// The published view.
    pub fn view(&self) -> &WorkerView {
        &self.view
    }
    /// Its handle.
    pub fn key(&self) -> WorkerKey {
        self.key
    }
    /// Relative throughput of its GPU class (1.0 = one H100): the ceiling of the speed it is
    /// weighted with ([`crate::capacity`]).
    pub fn speed(&self) -> f64 {
        self.speed
    }
    /// Batch slots this scheduler credits it with, learned from serving (at least 1; the
    /// claim itself when learning is off).
    #[inline]
    pub fn slots(&self) -> u32 {
        self.slots.get()
    }
    /// Batch slots its record claims (at least 1).
    pub fn claimed_slots(&self) -> u32 {
        self.view.load.slots()
    }
    /// Credited capacity: class speed × learned slots (one H100 slot = 1.0). An upper bound
    /// of its sampling weight.
    #[inline]
    pub fn capacity(&self) -> f64 {
        self.speed * f64::from(self.slots())
    }
    /// What its sampling weight can reach now: capacity × trust (clamped finite).
    #[inline]
    pub(crate) fn weight_ceiling(&self) -> f64 {
        (self.capacity() * self.trust.score).clamp(0.0, f64::MAX)
    }
    /// Requests this scheduler has sent and not yet seen finish.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
    /// The published load.
    pub fn published(&self) -> &PublishedLoad {
        &self.view.load
    }
    /// Latency samples observed.
    pub fn samples(&self) -> u64 {
        self.latency.samples()
    }
    /// When this scheduler first saw the worker.
    pub fn added_at(&self) -> Duration {
        self.added_at
    }
    /// Failure record.
    pub fn ejection(&self) -> &Ejection {
        &self.ejection
    }
    /// Trust in its answers.
    pub fn trust(&self) -> &TrustState {
        &self.trust
    }

    /// Static filters: hardware, model, tags. No allocation.
    #[inline]
    pub(crate) fn matches_hardware(&self, req: &crate::Requirements) -> bool {
        self.max_free_vram_mib >= req.min_free_vram_mib()
            && req.gpu_model().is_none_or(|m| {
                self.view
                    .gpus
                    .iter()
                    .any(|g| contains_ignore_ascii_case(&g.model, m))
            })
            && req.tags().iter().all(|t| self.view.tags.contains(t))
    }
}

/// Slots, ids and the service index.
#[derive(Debug, Default)]
pub(crate) struct Table {
    entries: Vec<Option<WorkerEntry>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    ids: HashMap<String, u32>,
    services: HashMap<String, usize>,
    by_service: Vec<Vec<u32>>,
    len: usize,
    /// A bound on every worker's sampling weight, within 2× of the largest.
    bound: WeightBound,
    /// The fleet's median learned slots, for new workers' priors.
    median: FleetMedian,
    /// Picks that fell back from rejection sampling to a full scan.
    pub(crate) fallbacks: AtomicU64,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A bound on every worker's sampling weight (0 with no workers).
    #[inline]
    pub(crate) fn weight_bound(&self) -> f64 {
        self.bound.bound()
    }

    /// Recounts `slot`'s weight in the bound after anything it depends on changed (O(1)).
    #[inline]
    pub(crate) fn retrack(&mut self, slot: u32) {
        let Some(e) = self.entries.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let to = bucket_of(e.weight_ceiling());
        let from = std::mem::replace(&mut e.bucket, to);
        self.bound.shift(from, to);
    }

    pub(crate) fn get(&self, slot: u32) -> Option<&WorkerEntry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    /// The entry behind `slot`; only for slots taken from the service index.
    #[inline]
    pub(crate) fn entry(&self, slot: u32) -> &WorkerEntry {
        // Slots in the service index always hold an entry: remove() unlinks first.
        match self.entries.get(slot as usize) {
            Some(Some(e)) => e,
            _ => unreachable!("service index points at an empty slot"),
        }
    }

    pub(crate) fn get_key(&self, key: WorkerKey) -> Option<&WorkerEntry> {
        self.get(key.slot).filter(|e| e.key == key)
    }

    pub(crate) fn get_key_mut(&mut self, key: WorkerKey) -> Option<&mut WorkerEntry> {
        self.entries
            .get_mut(key.slot as usize)
            .and_then(Option::as_mut)
            .filter(|e| e.key == key)
    }

    pub(crate) fn key_of(&self, id: &str) -> Option<WorkerKey> {
        self.ids.get(id).and_then(|&s| self.get(s)).map(|e| e.key)
    }

    pub(crate) fn service_list(&self, service: &str) -> Option<&[u32]> {
        self.services
            .get(service)
            .map(|&i| self.by_service[i].as_slice())
    }

    /// Services with at least one worker.
    pub(crate) fn services(&self) -> impl Iterator<Item = &str> {
        self.services
            .iter()
            .filter(|&(_, &i)| !self.by_service[i].is_empty())
            .map(|(s, _)| s.as_str())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &WorkerEntry> {
        self.entries.iter().flatten()
    }

    /// Inserts or replaces a worker's view; live figures survive a replace (a lower slot
    /// claim lowers the learned slots at once).
    pub(crate) fn upsert(
        &mut self,
        view: WorkerView,
        now: Duration,
        seed: Duration,
        trust: TrustState,
        cfg: &CapacityConfig,
    ) -> WorkerKey {
        let speed = view.effective_speed();
        let vram = view.max_free_vram_mib();
        if let Some(&slot) = self.ids.get(&view.id) {
            let old_services = match self.entries[slot as usize].as_mut() {
                Some(e) => {
                    e.speed = speed;
                    e.seen_speed = e.seen_speed.min(speed);
                    e.max_free_vram_mib = vram;
                    e.slots.on_claim(view.load.slots(), cfg);
                    std::mem::replace(&mut e.view, view)
                }
                None => unreachable!("id map points at an empty slot"),
            }
            .services;
            if old_services != self.entry(slot).view.services {
                self.unlink(slot);
                let new_services = self.entry(slot).view.services.clone();
                self.link(slot, &new_services);
            }
            self.retrack(slot);
            return self.entry(slot).key;
        }
        let median = self.median.get(
            now,
            self.entries.iter().flatten().map(|e| e.slots.get()),
            cfg,
        );
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.entries.push(None);
                self.generations.push(0);
                (self.entries.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        let key = WorkerKey { slot, generation };
        let services = view.services.clone();
        self.ids.insert(view.id.clone(), slot);
        let slots = LearnedSlots::new(view.load.slots(), median, cfg);
        self.entries[slot as usize] = Some(WorkerEntry {
            view,
            key,
            speed,
            seen_speed: speed,
            max_free_vram_mib: vram,
            in_flight: 0,
            latency: PeakEwma::new(seed, now),
            ejection: Ejection::default(),
            picks: 0,
            successes: 0,
            failures: 0,
            added_at: now,
            trust,
            slots,
            positions: Vec::with_capacity(services.len()),
            bucket: None,
        });
        self.link(slot, &services);
        self.len += 1;
        self.retrack(slot);
        key
    }

    pub(crate) fn update_load(
        &mut self,
        id: &str,
        load: PublishedLoad,
        cfg: &CapacityConfig,
    ) -> bool {
        let Some(&slot) = self.ids.get(id) else {
            return false;
        };
        if let Some(e) = self.entries[slot as usize].as_mut() {
            e.view.load = load;
            e.slots.on_claim(load.slots(), cfg);
        }
        self.retrack(slot);
        true
    }

    pub(crate) fn slot_of(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    pub(crate) fn entry_mut_by_id(&mut self, id: &str) -> Option<&mut WorkerEntry> {
        let slot = *self.ids.get(id)?;
        self.entries[slot as usize].as_mut()
    }

    pub(crate) fn view_mut(&mut self, id: &str) -> Option<&mut WorkerView> {
        let slot = *self.ids.get(id)?;
        self.entries[slot as usize].as_mut().map(|e| &mut e.view)
    }

    pub(crate) fn set_speed(&mut self, id: &str, speed: Option<f64>) -> bool {
        let Some(&slot) = self.ids.get(id) else {
            return false;
        };
        match self.entries[slot as usize].as_mut() {
            Some(e) => {
                e.view.speed = speed;
                e.speed = e.view.effective_speed();
                e.seen_speed = e.speed;
                self.retrack(slot);
                true
            }
            None => false,
        }
    }

    /// Forgets a worker in O(1) amortised: no other entry is visited except the one each
    /// `swap_remove` moves.
    pub(crate) fn remove(&mut self, id: &str) -> Option<WorkerView> {
        let slot = self.ids.remove(id)?;
        self.unlink(slot);
        let entry = self.entries[slot as usize].take()?;
        self.bound.shift(entry.bucket, None);
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.len -= 1;
        Some(entry.view)
    }

    /// Adds `slot` to each service's list, remembering where (a service named twice is
    /// linked once).
    fn link(&mut self, slot: u32, services: &[String]) {
        for s in services {
            let idx = match self.services.get(s.as_str()) {
                Some(&i) => i,
                None => {
                    self.by_service.push(Vec::new());
                    self.services.insert(s.clone(), self.by_service.len() - 1);
                    self.by_service.len() - 1
                }
            };
            let Some(Some(e)) = self.entries.get_mut(slot as usize) else {
                return;
            };
            if e.positions.iter().any(|&(i, _)| i as usize == idx) {
                continue;
            }
            let list = &mut self.by_service[idx];
            e.positions.push((idx as u32, list.len() as u32));
            list.push(slot);
        }
    }

    /// Takes `slot` out of every service list it is in: `swap_remove`, then the moved
    /// entry's remembered position is fixed.
    fn unlink(&mut self, slot: u32) {
        let positions = match self.entries.get_mut(slot as usize) {
            Some(Some(e)) => std::mem::take(&mut e.positions),
            _ => return,
        };
        for &(idx, pos) in &positions {
            let list = &mut self.by_service[idx as usize];
            list.swap_remove(pos as usize);
            let Some(&moved) = list.get(pos as usize) else {
                continue;
            };
            if let Some(Some(m)) = self.entries.get_mut(moved as usize)
                && let Some(p) = m.positions.iter_mut().find(|(i, _)| *i == idx)
            {
                p.1 = pos;
            }
        }
        // Keep the allocation for the next link.
        if let Some(Some(e)) = self.entries.get_mut(slot as usize) {
            e.positions = positions;
            e.positions.clear();
        }
    }

    pub(crate) fn entry_mut_by_key(&mut self, key: WorkerKey) -> Option<&mut WorkerEntry> {
        self.get_key_mut(key)
    }
}
