//! The worker table: dense slots, id lookup, a per-service index, and each worker's live
//! statistics (this scheduler's in-flight count, latency estimate, failure record).

use std::collections::HashMap;
use std::time::Duration;

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
    pub(crate) max_free_vram_mib: u64,
    pub(crate) in_flight: u32,
    pub(crate) latency: PeakEwma,
    pub(crate) ejection: Ejection,
    pub(crate) picks: u64,
    pub(crate) successes: u64,
    pub(crate) failures: u64,
    pub(crate) added_at: Duration,
    pub(crate) trust: TrustState,
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
    /// Relative throughput (1.0 = one H100).
    pub fn speed(&self) -> f64 {
        self.speed
    }
    /// Batch slots (at least 1).
    pub fn slots(&self) -> u32 {
        self.view.load.slots()
    }
    /// Capacity: speed × slots (one H100 slot = 1.0).
    #[inline]
    pub fn capacity(&self) -> f64 {
        self.speed * f64::from(self.slots())
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
    /// An upper bound on every worker's capacity (exact after a removal).
    max_capacity: f64,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn max_capacity(&self) -> f64 {
        self.max_capacity
    }

    fn raise_max_capacity(&mut self, slot: u32) {
        let c = self.entry(slot).capacity();
        if c.is_finite() {
            self.max_capacity = self.max_capacity.max(c);
        }
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

    /// Inserts or replaces a worker's view; live figures survive a replace.
    pub(crate) fn upsert(
        &mut self,
        view: WorkerView,
        now: Duration,
        seed: Duration,
        trust: TrustState,
    ) -> WorkerKey {
        let speed = view.effective_speed();
        let vram = view.max_free_vram_mib();
        if let Some(&slot) = self.ids.get(&view.id) {
            let old_services = match self.entries[slot as usize].as_mut() {
                Some(e) => {
                    e.speed = speed;
                    e.max_free_vram_mib = vram;
                    std::mem::replace(&mut e.view, view)
                }
                None => unreachable!("id map points at an empty slot"),
            }
            .services;
            let new_services = self.entry(slot).view.services.clone();
            if old_services != new_services {
                self.unlink(slot, &old_services);
                self.link(slot, &new_services);
            }
            self.raise_max_capacity(slot);
            return self.entry(slot).key;
        }
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
        self.entries[slot as usize] = Some(WorkerEntry {
            view,
            key,
            speed,
            max_free_vram_mib: vram,
            in_flight: 0,
            latency: PeakEwma::new(seed, now),
            ejection: Ejection::default(),
            picks: 0,
            successes: 0,
            failures: 0,
            added_at: now,
            trust,
        });
        self.link(slot, &services);
        self.len += 1;
        self.raise_max_capacity(slot);
        key
    }

    pub(crate) fn update_load(&mut self, id: &str, load: PublishedLoad) -> bool {
        let Some(&slot) = self.ids.get(id) else {
            return false;
        };
        if let Some(e) = self.entries[slot as usize].as_mut() {
            e.view.load = load;
        }
        self.raise_max_capacity(slot);
        true
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
                self.raise_max_capacity(slot);
                true
            }
            None => false,
        }
    }

    pub(crate) fn remove(&mut self, id: &str) -> Option<WorkerView> {
        let slot = self.ids.remove(id)?;
        let entry = self.entries[slot as usize].take()?;
        self.unlink(slot, &entry.view.services);
        self.generations[slot as usize] = self.generations[slot as usize].wrapping_add(1);
        self.free.push(slot);
        self.len -= 1;
        self.max_capacity = self
            .entries
            .iter()
            .flatten()
            .map(WorkerEntry::capacity)
            .filter(|c| c.is_finite())
            .fold(0.0, f64::max);
        Some(entry.view)
    }

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
            let list = &mut self.by_service[idx];
            if !list.contains(&slot) {
                list.push(slot);
            }
        }
    }

    fn unlink(&mut self, slot: u32, services: &[String]) {
        for s in services {
            if let Some(&i) = self.services.get(s.as_str()) {
                let list = &mut self.by_service[i];
                if let Some(pos) = list.iter().position(|&x| x == slot) {
                    list.swap_remove(pos);
                }
            }
        }
    }

    pub(crate) fn entry_mut_by_key(&mut self, key: WorkerKey) -> Option<&mut WorkerEntry> {
        self.get_key_mut(key)
    }
}
