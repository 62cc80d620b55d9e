//! Trust in the table: evidence from deadlines and answer checks goes to the scheduler here,
//! the last reason is kept beside it, and trust outlives a worker's entry.
//!
//! A worker that leaves and comes back (a record that expired, an agent restart, a gateway
//! restart with a saved view) finds the trust it had: a liar cannot wash a failed canary off
//! by re-joining under the same id. Departed workers' states are kept up to
//! [`REMEMBERED`]; the view file saves them with the live ones.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpumesh_scheduler::{Evidence, TrustState};
use url::Url;

use super::{Directory, Picked, Source, Table, WorkerKey};
use crate::metrics::{BandLabels, KindLabels, TRUST_BANDS};

/// Departed workers whose trust is kept, at most (oldest forgotten first).
pub const REMEMBERED: usize = 10_000;

/// Trust states of workers not in the table (departed, or saved before a restart).
#[derive(Debug, Default)]
pub(super) struct Remembered {
    /// State and the generation of its entry in `order`.
    states: HashMap<String, (TrustState, u64)>,
    /// Oldest first; an entry whose generation no longer matches `states` is stale.
    order: VecDeque<(String, u64)>,
    generation: u64,
}

impl Remembered {
    pub(super) fn keep(&mut self, id: &str, state: TrustState) {
        self.generation += 1;
        self.states.insert(id.to_owned(), (state, self.generation));
        self.order.push_back((id.to_owned(), self.generation));
        while self.order.len() > REMEMBERED {
            let Some((old, generation)) = self.order.pop_front() else {
                break;
            };
            if self.states.get(&old).is_some_and(|(_, g)| *g == generation) {
                self.states.remove(&old);
            }
        }
    }

    pub(super) fn take(&mut self, id: &str) -> Option<TrustState> {
        self.states.remove(id).map(|(state, _)| state)
    }

    fn get(&self, id: &str) -> Option<TrustState> {
        self.states.get(id).map(|(state, _)| *state)
    }

    fn iter(&self) -> impl Iterator<Item = (&String, TrustState)> {
        self.states.iter().map(|(id, (state, _))| (id, *state))
    }
}

/// One worker of a service, as the answer checks see it.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    /// The scheduler's handle.
    pub key: WorkerKey,
    /// Worker id.
    pub id: Arc<str>,
    /// Its trust now.
    pub trust: TrustState,
    /// Below the trust floor.
    pub distrusted: bool,
    /// When this gateway first saw it, on the scheduler's clock.
    pub joined: Duration,
}

impl Directory {
    /// Feeds one piece of evidence about worker `key`'s answers; `reason` (shown on
    /// `/api/workers`) replaces the last one when given. The new trust, `None` when the
    /// worker left.
    pub fn evidence(
        &self,
        key: WorkerKey,
        evidence: Evidence,
        reason: Option<String>,
        now: Instant,
    ) -> Option<TrustState> {
        let mut table = self.lock();
        let clock = table.clock(now);
        let state = table.scheduler.on_evidence(key, evidence, clock)?;
        if let (Some(w), Some(reason)) = (table.worker_mut(key), reason) {
            w.reason = Some(reason);
        }
        drop(table);
        self.metrics
            .trust_evidence
            .get_or_create(&KindLabels {
                kind: evidence.label().to_owned(),
            })
            .inc();
        Some(state)
    }

    /// A response to worker `key` missed its `kind` deadline (`ttfb` or `total`) after
    /// `elapsed`: counted, and evidence against the worker.
    pub fn deadline_missed(
        &self,
        key: WorkerKey,
        kind: &'static str,
        elapsed: Duration,
        now: Instant,
    ) {
        self.metrics
            .deadline_misses
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
        let reason = format!("missed the {kind} deadline ({} ms)", elapsed.as_millis());
        self.evidence(key, Evidence::DeadlineMissed, Some(reason), now);
    }

    /// Counts a request to exactly this worker (a canary or a replay) as in flight; end it
    /// with [`Directory::finish`]. Distrusted workers are picked too: a check is their way
    /// back. `None` when the worker left.
    pub fn pick_worker(&self, key: WorkerKey, now: Instant) -> Option<Picked> {
        let mut table = self.lock();
        let clock = table.clock(now);
        let w = table.worker(key)?;
        let (id, url, source): (Arc<str>, Arc<Url>, Source) =
            (Arc::clone(&w.id), Arc::clone(&w.url), w.source);
        let pick = table.scheduler.pick_worker(key, clock)?;
        Some(Picked {
            key: pick.key,
            id,
            url,
            source,
        })
    }

    /// The workers offering `service`, with their trust (O(workers); for the check runner).
    pub fn check_targets(&self, service: &str) -> Vec<CheckTarget> {
        let table = self.lock();
        table
            .live()
            .filter(|w| w.record.services.iter().any(|s| s.as_str() == service))
            .filter_map(|w| {
                Some(CheckTarget {
                    key: w.key,
                    id: Arc::clone(&w.id),
                    trust: table.scheduler.trust(w.key)?,
                    distrusted: table.scheduler.is_distrusted(w.key)?,
                    joined: table.scheduler.entry(w.key)?.added_at(),
                })
            })
            .collect()
    }

    /// The handles of every worker in the table.
    pub fn check_keys(&self) -> HashSet<WorkerKey> {
        self.lock().live().map(|w| w.key).collect()
    }

    /// Worker `id`'s trust, live or remembered.
    pub fn trust_of(&self, id: &str) -> Option<TrustState> {
        let table = self.lock();
        match table.scheduler.key_of(id) {
            Some(key) => table.scheduler.trust(key),
            None => table.remembered.get(id),
        }
    }

    /// Every trust state to save: the live workers' and the remembered ones.
    pub fn trust_states(&self) -> Vec<(String, TrustState)> {
        let table = self.lock();
        let live = table
            .live()
            .filter_map(|w| Some((w.id.to_string(), table.scheduler.trust(w.key)?)));
        let mut all: Vec<(String, TrustState)> = live.collect();
        all.extend(
            table
                .remembered
                .iter()
                .map(|(id, state)| (id.clone(), state)),
        );
        all
    }

    /// Puts back saved trust states: at once for workers in the table, on arrival for the
    /// others.
    pub fn restore_trust(&self, states: impl IntoIterator<Item = (String, TrustState)>) {
        let mut table = self.lock();
        for (id, state) in states {
            if !table.scheduler.restore_trust(&id, state) {
                table.remembered.keep(&id, state);
            }
        }
    }

    /// Sets the trust gauges (distrusted workers, workers by band) from the table.
    pub fn count_trust(&self) {
        let table = self.lock();
        let mut bands = [0i64; TRUST_BANDS.len()];
        let mut distrusted = 0;
        for w in table.live() {
            let Some(trust) = table.scheduler.trust(w.key) else {
                continue;
            };
            if table.scheduler.is_distrusted(w.key) == Some(true) {
                distrusted += 1;
            }
            let band = TRUST_BANDS
                .iter()
                .rposition(|(_, low)| trust.score >= *low)
                .unwrap_or(0);
            bands[band] += 1;
        }
        drop(table);
        self.metrics.workers_distrusted.set(distrusted);
        for ((band, _), n) in TRUST_BANDS.iter().zip(bands) {
            self.metrics
                .workers_by_trust
                .get_or_create(&BandLabels {
                    band: (*band).to_owned(),
                })
                .set(n);
        }
    }
}

/// On a worker's arrival: the trust it had before, if any is remembered.
pub(super) fn on_join(table: &mut Table, id: &str) {
    if let Some(state) = table.remembered.take(id) {
        table.scheduler.restore_trust(id, state);
    }
}

/// On a worker's departure: remember its trust.
pub(super) fn on_leave(table: &mut Table, key: WorkerKey, id: &str) {
    if let Some(state) = table.scheduler.trust(key) {
        table.remembered.keep(id, state);
    }
}
