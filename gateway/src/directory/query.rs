//! Read-only questions about the table: for the API, metrics labels and the registry source.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use gpumesh_scheduler::WorkerSnapshot;

use super::attempts::AttemptLog;
use super::worker::{self, Worker};
use super::{Directory, Source, Table};
use crate::types::{GpuSummary, TrustView, WorkerView};

impl Directory {
    /// Where worker `id`'s entry came from, if the table holds it.
    pub fn source_of(&self, id: &str) -> Option<Source> {
        self.lock().by_id(id).map(|w| w.source)
    }

    /// Whether any worker offers `service` (O(1)).
    pub fn knows_service(&self, service: &str) -> bool {
        self.lock().scheduler.serves(service)
    }

    /// Workers in the table.
    pub fn len(&self) -> usize {
        self.lock().scheduler.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every service offered, for bounded metric labels and the OpenAPI examples.
    pub fn services(&self) -> BTreeSet<String> {
        self.lock()
            .scheduler
            .services()
            .map(str::to_owned)
            .collect()
    }

    /// GPU summaries of one worker.
    pub fn gpus(&self, id: &str) -> Vec<GpuSummary> {
        self.lock()
            .by_id(id)
            .map(|w| worker::gpu_summaries(&w.record))
            .unwrap_or_default()
    }

    /// One worker as the API shows it.
    pub fn view(&self, id: &str, now: Instant) -> Option<WorkerView> {
        let table = self.lock();
        let w = table.by_id(id)?;
        let figures = figures(&table, now);
        Some(api_view(&table, w, &figures, now))
    }

    /// What this gateway sent to worker `id` and how it went, also after it left the table
    /// (the logs of the last few thousand departed workers are kept).
    pub fn attempt_log(&self, id: &str) -> Option<AttemptLog> {
        self.lock().attempts.get(id)
    }

    /// Every worker, sorted by id.
    pub fn views(&self, now: Instant) -> Vec<WorkerView> {
        let table = self.lock();
        let figures = figures(&table, now);
        let mut all: Vec<WorkerView> = table
            .live()
            .map(|w| api_view(&table, w, &figures, now))
            .collect();
        drop(table);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

/// The scheduler's figures of every worker, by id (the sampling weight and learned slots are
/// only in its snapshot).
fn figures(table: &Table, now: Instant) -> HashMap<String, WorkerSnapshot> {
    table
        .scheduler
        .snapshot(table.clock(now))
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect()
}

fn api_view(
    table: &Table,
    w: &Worker,
    figures: &HashMap<String, WorkerSnapshot>,
    now: Instant,
) -> WorkerView {
    let in_flight = table.scheduler.in_flight(w.key).unwrap_or(0);
    let log = table.attempts.get(&w.id).unwrap_or_default();
    let state = table.scheduler.trust(w.key);
    let snapshot = figures.get(&*w.id);
    let distrusted = table.scheduler.is_distrusted(w.key).unwrap_or(false);
    let trust = TrustView {
        score: state.map_or(0.0, |t| t.score),
        verified: state.map_or(0, |t| t.verified),
        failed: state.map_or(0, |t| t.failed),
        distrusted,
        reason: w.reason.clone(),
        // A distrusted worker is not eligible at all: it is never sampled, whatever its weight.
        weight: if distrusted {
            0.0
        } else {
            snapshot.map_or(0.0, |s| s.weight)
        },
        slots_learned: snapshot.map_or(0, |s| s.slots_learned),
    };
    let ejected_for_s = snapshot.and_then(|s| s.ejected_for_s);
    worker::api_view(w, in_flight, log, trust, ejected_for_s, now)
}
