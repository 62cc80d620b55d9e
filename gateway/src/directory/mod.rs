//! The worker directory: the gateway's in-memory view of workers, fed by any source.
//!
//! Sources (the DHT registry view, the coordinator fallback registry) send
//! [`DirectoryEvent`]s; the directory checks each record against the upstream policy, keeps the
//! newest record per worker (by `seq`), mirrors it into the scheduler, and answers picks. No
//! DHT lookup happens on the request path: picks read only this view.
//!
//! One worker id lives in one entry. When both sources know a worker, the record with the
//! higher `seq` wins and the entry names the source it came from; a source may only remove
//! entries it owns, so a DHT "leave" does not drop a worker still heartbeating to the registry.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gpumesh_dht::record::{LoadInfo, WorkerRecord, WorkerState};
use prometheus_client::metrics::gauge::Gauge;
use tracing::{debug, info, warn};
use url::Url;

use crate::api::types::{GpuSummary, HeartbeatRequest, WorkerView};
use crate::error::GatewayError;
use crate::metrics::{GpuCountLabels, Metrics, RefusedLabels, WorkerCountLabels, WorkerLabels};
use crate::policy::{PolicyError, UpstreamPolicy};
use crate::select::Selector;

mod records;

pub use records::{MAX_ID_LEN, MAX_SERVICES, state_name, unix_ms, valid_service_name};
use records::{check_record, gpu_summaries, to_view};

pub use gpumesh_scheduler::{Requirements, WorkerKey};

/// The `gpu` label of a worker that publishes no GPU.
const NO_GPU: &str = "none";

/// The states the worker gauges report (a series for each from the start).
const COUNTED_STATES: [WorkerState; 3] = [
    WorkerState::Joining,
    WorkerState::Online,
    WorkerState::Draining,
];

/// Where a worker's record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A signed record from the DHT.
    Dht,
    /// The coordinator fallback registry (`POST /api/workers/register`).
    Registry,
}

impl Source {
    /// `dht` or `registry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Dht => "dht",
            Source::Registry => "registry",
        }
    }
}

/// A change from a source.
#[derive(Debug, Clone)]
pub enum DirectoryEvent {
    /// A worker joined or published a new record. `expires_at` bounds the entry's life
    /// (the registry's TTL); `None` lets it live until the source removes it or the record's
    /// own `expires_at_ms` passes.
    Upsert {
        /// The record.
        record: Box<WorkerRecord>,
        /// Its source.
        source: Source,
        /// Optional gateway-side expiry.
        expires_at: Option<Instant>,
    },
    /// Fresh load (and state) for a worker this source owns, measured at `at_ms`.
    Load {
        /// Worker id.
        id: String,
        /// The load.
        load: LoadInfo,
        /// Its state now.
        state: WorkerState,
        /// When the worker measured it, ms since the Unix epoch.
        at_ms: u64,
        /// The source it came from.
        source: Source,
    },
    /// A worker left (or its record expired) in this source.
    Remove {
        /// Worker id.
        id: String,
        /// The source it left.
        source: Source,
    },
}

/// Why a record was not taken into the view.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    /// The tunnel URL fails the upstream policy.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A malformed record (empty id, no service, bad service name).
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// An older `seq` than the record held.
    #[error("seq {got} is not newer than the held {have}")]
    Stale {
        /// Sequence number received.
        got: u64,
        /// Sequence number held.
        have: u64,
    },
}

/// How a forwarded request ended, for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The worker answered and its body ended cleanly.
    Success,
    /// The worker failed (unreachable, timed out, 5xx, broken body).
    Failure,
    /// Neither: the client went away or sent too much. Frees the slot without judging.
    Cancelled,
}

/// The worker a request goes to.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The scheduler's handle (ends the pick).
    pub key: WorkerKey,
    /// Worker id.
    pub id: String,
    /// Its checked tunnel URL.
    pub url: Url,
    /// Where its record came from.
    pub source: Source,
}

#[derive(Debug)]
struct Entry {
    record: WorkerRecord,
    url: Url,
    source: Source,
    received_at: Instant,
    expires_at: Option<Instant>,
    in_flight: u32,
    /// This worker's `worker_in_flight` series, created on its first pick (cached so the hot
    /// path does not build label strings).
    gauge: Option<Gauge>,
    /// The gauge series this worker is counted in.
    tally: Tally,
}

/// Where a worker counts in the `workers` and `workers_by_gpu` gauges. The gauges are kept
/// by moving one worker between series on each change (O(1)); recounting the whole view on
/// every join cost O(n²) while 2000 workers joined at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    source: Source,
    state: WorkerState,
    /// Speed class of the first GPU (`gpumesh_scheduler::gpu::gpu_class`), or `none`.
    class: &'static str,
}

impl Tally {
    fn of(record: &WorkerRecord, source: Source) -> Self {
        Self {
            source,
            state: record.state,
            class: record
                .gpus
                .first()
                .map_or(NO_GPU, |g| gpumesh_scheduler::gpu::gpu_class(&g.model)),
        }
    }
}

/// What this gateway sent to one worker and how it went: the evidence for "a failing worker
/// stops getting traffic quickly" (first failure → last attempt). Kept apart from the view so
/// that it outlives the worker's entry (a killed worker leaves the view soon after failing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptLog {
    /// When a request was last routed to it (ms since the Unix epoch).
    pub last_attempt_ms: Option<u64>,
    /// When a request to it first failed (ms since the Unix epoch).
    pub first_failure_ms: Option<u64>,
    /// Failed requests to it.
    pub failures: u64,
}

/// A cheap, cloneable, read-only handle on a gateway's [`AttemptLog`]s.
#[derive(Debug, Clone)]
pub struct AttemptLogs(std::sync::Arc<Directory>);

impl AttemptLogs {
    pub(crate) fn new(directory: std::sync::Arc<Directory>) -> Self {
        Self(directory)
    }

    /// The log of worker `id`, also after it left the view.
    pub fn get(&self, id: &str) -> Option<AttemptLog> {
        self.0.attempt_log(id)
    }
}

/// Attempt logs kept beyond the view's own workers (departed ones), at most.
const DEPARTED_LOGS: usize = 4096;

#[derive(Debug)]
struct State {
    entries: HashMap<String, Entry>,
    selector: Selector,
    attempts: HashMap<String, AttemptLog>,
}

/// The in-memory worker view. Share it as `Arc<Directory>`.
#[derive(Debug)]
pub struct Directory {
    state: Mutex<State>,
    policy: UpstreamPolicy,
    metrics: Metrics,
}

impl Directory {
    /// An empty view applying `policy` to every record.
    pub fn new(policy: UpstreamPolicy, metrics: Metrics, seed: u64) -> Self {
        // Every series exists from the start at 0, so an empty class or state reads 0
        // rather than missing; the label sets are bounded (sources × states, classes × states).
        let classes = gpumesh_scheduler::gpu::SPEED_CLASSES
            .iter()
            .map(|(c, _)| *c)
            .chain([gpumesh_scheduler::gpu::OTHER_CLASS, NO_GPU]);
        for state in COUNTED_STATES {
            for source in [Source::Dht, Source::Registry] {
                metrics
                    .workers
                    .get_or_create(&WorkerCountLabels {
                        source: source.as_str().into(),
                        state: state_name(state).into(),
                    })
                    .inc_by(0);
            }
            for class in classes.clone() {
                metrics
                    .workers_by_gpu
                    .get_or_create(&GpuCountLabels {
                        gpu: class.to_owned(),
                        state: state_name(state).into(),
                    })
                    .inc_by(0);
            }
        }
        Self {
            state: Mutex::new(State {
                entries: HashMap::new(),
                selector: Selector::new(seed),
                attempts: HashMap::new(),
            }),
            policy,
            metrics,
        }
    }

    /// Moves one worker between gauge series (`None`: not in the view).
    fn recount(&self, from: Option<Tally>, to: Option<Tally>) {
        if from == to {
            return;
        }
        for (tally, delta) in [(from, -1), (to, 1)] {
            let Some(t) = tally else { continue };
            let state = state_name(t.state);
            self.metrics
                .workers
                .get_or_create(&WorkerCountLabels {
                    source: t.source.as_str().into(),
                    state: state.into(),
                })
                .inc_by(delta);
            self.metrics
                .workers_by_gpu
                .get_or_create(&GpuCountLabels {
                    gpu: t.class.to_owned(),
                    state: state.into(),
                })
                .inc_by(delta);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a source's change.
    ///
    /// # Errors
    /// [`Refused`] when an upserted record is not taken (it is counted and logged too).
    pub fn apply(&self, event: DirectoryEvent, now: Instant) -> Result<(), Refused> {
        match event {
            DirectoryEvent::Upsert {
                record,
                source,
                expires_at,
            } => {
                let result = self.upsert(*record, source, expires_at, now);
                if let Err(refused) = &result {
                    let reason = match refused {
                        Refused::Policy(_) => "upstream_policy",
                        Refused::Invalid(_) => "invalid",
                        Refused::Stale { .. } => "stale",
                    };
                    self.metrics
                        .records_refused
                        .get_or_create(&RefusedLabels {
                            source: source.as_str().to_owned(),
                            reason: reason.to_owned(),
                        })
                        .inc();
                    warn!(source = source.as_str(), %refused, "worker record refused");
                }
                result
            }
            DirectoryEvent::Load {
                id,
                load,
                state,
                at_ms,
                source,
            } => {
                let mut state_guard = self.lock();
                let State {
                    entries, selector, ..
                } = &mut *state_guard;
                if let Some(entry) = entries.get_mut(&id).filter(|e| e.source == source) {
                    entry.record.load = load;
                    entry.record.state = state;
                    entry.received_at = now;
                    selector.upsert(&entry.record, at_ms, now);
                    let old = entry.tally;
                    entry.tally.state = state;
                    self.recount(Some(old), Some(entry.tally));
                }
                Ok(())
            }
            DirectoryEvent::Remove { id, source } => {
                let mut state = self.lock();
                if state.entries.get(&id).is_some_and(|e| e.source == source) {
                    self.remove_locked(&mut state, &id);
                    info!(worker = %id, source = source.as_str(), "worker left");
                }
                Ok(())
            }
        }
    }

    fn upsert(
        &self,
        record: WorkerRecord,
        source: Source,
        expires_at: Option<Instant>,
        now: Instant,
    ) -> Result<(), Refused> {
        check_record(&record)?;
        let url = self.policy.check_url(&record.tunnel_url)?;
        let mut state = self.lock();
        let (in_flight, gauge) = match state.entries.get(&record.peer_id) {
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
            Some(old) => (old.in_flight, old.gauge.clone()),
            None => {
                info!(worker = %record.peer_id, source = source.as_str(), url = %url, "worker joined");
                (0, None)
            }
        };
        let load_at_ms = if source == Source::Registry {
            unix_ms()
        } else {
            record.issued_at_ms
        };
        state.selector.upsert(&record, load_at_ms, now);
        let id = record.peer_id.clone();
        let tally = Tally::of(&record, source);
        let entry = Entry {
            record,
            url,
            source,
            received_at: now,
            expires_at,
            in_flight,
            gauge,
            tally,
        };
        let previous = state.entries.insert(id, entry);
        self.recount(previous.map(|p| p.tally), Some(tally));
        Ok(())
    }

    fn remove_locked(&self, state: &mut State, id: &str) {
        if let Some(gone) = state.entries.remove(id) {
            self.recount(Some(gone.tally), None);
        }
        state.selector.remove(id);
        self.metrics.worker_in_flight.remove(&WorkerLabels {
            worker: id.to_owned(),
        });
    }

    /// Drops entries whose gateway-side expiry or record expiry has passed; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let wall_ms = unix_ms();
        let mut state = self.lock();
        let gone: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| {
                e.expires_at.is_some_and(|t| t <= now)
                    || (e.source == Source::Dht && e.record.expires_at_ms <= wall_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.remove_locked(&mut state, id);
            info!(worker = %id, "worker expired");
        }
        gone.len()
    }

    /// Refreshes a registry entry: new expiry and the heartbeat's fresh figures.
    ///
    /// # Errors
    /// [`GatewayError::UnknownWorker`] when no registry entry has this id (it expired or never
    /// registered): the agent should register again.
    pub fn heartbeat(
        &self,
        id: &str,
        beat: HeartbeatRequest,
        expires_at: Instant,
        now: Instant,
    ) -> Result<(), GatewayError> {
        let mut state = self.lock();
        let State {
            entries, selector, ..
        } = &mut *state;
        let Some(entry) = entries.get_mut(id).filter(|e| e.source == Source::Registry) else {
            return Err(GatewayError::UnknownWorker(id.to_owned()));
        };
        if let Some(load) = beat.load {
            entry.record.load = load;
        }
        if let Some(gpus) = beat.gpus {
            entry.record.gpus = gpus;
        }
        if let Some(s) = beat.state {
            entry.record.state = s;
        }
        entry.expires_at = Some(expires_at);
        entry.received_at = now;
        selector.upsert(&entry.record, unix_ms(), now);
        debug!(worker = %id, "registry heartbeat");
        let old = entry.tally;
        entry.tally = Tally::of(&entry.record, Source::Registry);
        self.recount(Some(old), Some(entry.tally));
        Ok(())
    }

    /// Removes a registry entry (`DELETE /api/workers/{id}`).
    ///
    /// # Errors
    /// [`GatewayError::UnknownWorker`] when no registry entry has this id.
    pub fn deregister(&self, id: &str) -> Result<(), GatewayError> {
        let mut state = self.lock();
        if !state
            .entries
            .get(id)
            .is_some_and(|e| e.source == Source::Registry)
        {
            return Err(GatewayError::UnknownWorker(id.to_owned()));
        }
        self.remove_locked(&mut state, id);
        Ok(())
    }

    /// Picks a worker for a request, never `avoid` (the worker just found unreachable). The
    /// request counts as in flight to it until [`Directory::finish`].
    ///
    /// # Errors
    /// 404 [`GatewayError::UnknownService`] when no worker offers the service; 503
    /// [`GatewayError::NoEligibleWorker`] with the scheduler's reason otherwise.
    pub fn pick(
        &self,
        requirements: &Requirements,
        avoid: Option<WorkerKey>,
        now: Instant,
    ) -> Result<Picked, GatewayError> {
        let mut state = self.lock();
        let State {
            entries,
            selector,
            attempts,
        } = &mut *state;
        if let Some(unreachable) = avoid {
            // `avoid` is the worker the forwarder just failed to connect to (refused, reset
            // or timed out before anything was sent): strong evidence that it is gone, so it
            // leaves rotation now rather than after five failures.
            selector.unreachable(unreachable, now);
        }
        let (key, id) = selector.pick(requirements, avoid, now).map_err(|e| {
            // An empty view (a gateway that just started blind) knows no service yet: that is
            // "not ready" (503), not the client's unknown service (404).
            if entries.is_empty() {
                GatewayError::NotReady
            } else {
                e
            }
        })?;
        if attempts.len() >= entries.len() + DEPARTED_LOGS {
            attempts.retain(|id, _| entries.contains_key(id));
        }
        let Some(entry) = entries.get_mut(&id) else {
            selector.finish(key, Finish::Cancelled, Duration::ZERO, now);
            return Err(GatewayError::NoEligibleWorker {
                service: requirements.service().to_owned(),
                reason: "the chosen worker just left".to_owned(),
            });
        };
        entry.in_flight += 1;
        self.publish_in_flight(entry, &id);
        // Look up before inserting: the common case (a known worker) then costs no id clone.
        let at = Some(unix_ms());
        match attempts.get_mut(&id) {
            Some(log) => log.last_attempt_ms = at,
            None => {
                let log = AttemptLog {
                    last_attempt_ms: at,
                    ..AttemptLog::default()
                };
                attempts.insert(id.clone(), log);
            }
        }
        Ok(Picked {
            key,
            url: entry.url.clone(),
            source: entry.source,
            id,
        })
    }

    /// A request to the picked worker ended: in-flight −1, outcome and latency to the
    /// scheduler.
    pub fn finish(&self, picked: &Picked, outcome: Finish, latency: Duration, now: Instant) {
        let mut state = self.lock();
        let State {
            entries,
            selector,
            attempts,
        } = &mut *state;
        selector.finish(picked.key, outcome, latency, now);
        if outcome == Finish::Failure
            && let Some(log) = attempts.get_mut(&picked.id)
        {
            log.failures += 1;
            log.first_failure_ms.get_or_insert_with(unix_ms);
        }
        if let Some(e) = entries.get_mut(&picked.id) {
            e.in_flight = e.in_flight.saturating_sub(1);
            self.publish_in_flight(e, &picked.id);
        }
    }

    /// Sets the worker's in-flight gauge, resolving its label set once per entry.
    fn publish_in_flight(&self, entry: &mut Entry, id: &str) {
        entry
            .gauge
            .get_or_insert_with(|| {
                self.metrics
                    .worker_in_flight
                    .get_or_create(&WorkerLabels {
                        worker: id.to_owned(),
                    })
                    .clone()
            })
            .set(i64::from(entry.in_flight));
    }

    /// Ids of the workers that came from `source`.
    pub fn ids_from(&self, source: Source) -> Vec<String> {
        self.lock()
            .entries
            .iter()
            .filter(|(_, e)| e.source == source)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Whether any worker offers `service`.
    pub fn knows_service(&self, service: &str) -> bool {
        self.lock()
            .entries
            .values()
            .any(|e| e.record.services.iter().any(|s| s == service))
    }

    /// Workers in the view.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every service offered, for bounded metric labels and the OpenAPI examples.
    pub fn services(&self) -> BTreeSet<String> {
        self.lock()
            .entries
            .values()
            .flat_map(|e| e.record.services.iter().map(ToString::to_string))
            .collect()
    }

    /// GPU summaries of one worker.
    pub fn gpus(&self, id: &str) -> Vec<GpuSummary> {
        self.lock()
            .entries
            .get(id)
            .map(|e| gpu_summaries(&e.record))
            .unwrap_or_default()
    }

    /// One worker as the API shows it.
    pub fn view(&self, id: &str, now: Instant) -> Option<WorkerView> {
        let state = self.lock();
        let log = state.attempts.get(id).copied().unwrap_or_default();
        state.entries.get(id).map(|e| to_view(e, log, now))
    }

    /// What this gateway sent to worker `id` and how it went, also after it left the view
    /// (the logs of the last few thousand departed workers are kept).
    pub fn attempt_log(&self, id: &str) -> Option<AttemptLog> {
        self.lock().attempts.get(id).copied()
    }

    /// Every worker, sorted by id.
    pub fn views(&self, now: Instant) -> Vec<WorkerView> {
        let state = self.lock();
        let mut all: Vec<WorkerView> = state
            .entries
            .values()
            .map(|e| {
                let log = state.attempts.get(&e.record.peer_id).copied();
                to_view(e, log.unwrap_or_default(), now)
            })
            .collect();
        drop(state);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

#[cfg(test)]
mod tests;
