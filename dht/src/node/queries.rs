//! Outbound queries: bookkeeping with deadlines, results accumulated across steps.

use std::{collections::HashSet, time::Instant};

use libp2p::{
    PeerId,
    kad::{GetProvidersOk, GetRecordOk, ProgressStep, QueryId, QueryResult, QueryStats},
};

use super::EventLoop;
use crate::{
    DhtError,
    handle::Reply,
    keys,
    registry::WorkerEntry,
    rules::{ServiceName, unix_ms},
    signed::SignedRecord,
};

/// A query in flight.
pub(crate) struct Pending {
    started: Instant,
    deadline: Instant,
    kind: PendingKind,
}

#[allow(
    clippy::large_enum_variant,
    reason = "a few dozen live queries; boxing buys nothing"
)]
pub(crate) enum PendingKind {
    Put {
        reply: Option<Reply<u64>>,
        seq: u64,
    },
    Provide,
    GetRecord {
        target: PeerId,
        best: Option<SignedRecord>,
        answers: usize,
        reply: Option<Reply<Option<SignedRecord>>>,
        job: Option<u64>,
    },
    Providers {
        job: u64,
        found: HashSet<PeerId>,
    },
}

impl PendingKind {
    fn label(&self) -> &'static str {
        match self {
            Self::Put { .. } => "put_record",
            Self::Provide => "provide",
            Self::GetRecord { .. } => "get_record",
            Self::Providers { .. } => "get_providers",
        }
    }
}

/// A `find_workers` in progress: first every shard's providers, then unknown providers' records.
pub(crate) struct FindJob {
    service: String,
    outstanding: usize,
    providers: HashSet<PeerId>,
    fetching: bool,
    reply: Option<Reply<Vec<WorkerEntry>>>,
}

/// A valid `GetRecord` stops after this many answers: enough to pick the newest seq among
/// replicas without walking all k holders.
const GET_RECORD_ANSWERS: usize = 3;

impl EventLoop {
    pub(super) fn track(&mut self, id: QueryId, kind: PendingKind) {
        let now = Instant::now();
        self.queries.insert(
            id,
            Pending {
                started: now,
                deadline: now + self.config.timings.query_timeout,
                kind,
            },
        );
    }

    /// Finishes queries past their deadline with what they have.
    pub(super) fn expire_queries(&mut self) {
        let now = Instant::now();
        let late: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
            if let Some(p) = self.queries.remove(&id) {
                self.complete(p, "timeout");
            }
        }
    }

    pub(super) fn on_query_progressed(
        &mut self,
        id: QueryId,
        result: QueryResult,
        _stats: QueryStats,
        step: ProgressStep,
    ) {
        let Some(mut pending) = self.queries.remove(&id) else {
            self.count_bootstrap(&result, &step);
            return;
        };
        let mut finished = step.last;
        let mut outcome = "ok";
        match (&mut pending.kind, result) {
            (PendingKind::Put { reply, seq }, QueryResult::PutRecord(r)) => {
                let r = r
                    .map(|_| *seq)
                    .map_err(|e| DhtError::Query(format!("put: {e:?}")));
                if r.is_err() {
                    outcome = "error";
                }
                if let Some(reply) = reply.take() {
                    let _ = reply.send(r);
                }
                finished = true;
            }
            (PendingKind::Provide, QueryResult::StartProviding(r)) => {
                if r.is_err() {
                    outcome = "error";
                }
                finished = true;
            }
            (
                PendingKind::GetRecord {
                    target,
                    best,
                    answers,
                    ..
                },
                QueryResult::GetRecord(r),
            ) => match r {
                Ok(GetRecordOk::FoundRecord(pr)) => {
                    if self.take_record_answer(target, best, answers, &pr.record.value) {
                        finished = true;
                    }
                }
                Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => finished = true,
                Err(_) => {
                    finished = true;
                    if best.is_none() {
                        outcome = "not_found";
                    }
                }
            },
            (PendingKind::Providers { found, .. }, QueryResult::GetProviders(r)) => match r {
                Ok(GetProvidersOk::FoundProviders { providers, .. }) => found.extend(providers),
                Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => finished = true,
                Err(_) => finished = true,
            },
            (_, other) => {
                tracing::debug!(?other, "unexpected query result kind");
                finished = true;
            }
        }
        if finished {
            if !step.last
                && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
            {
                q.finish();
            }
            self.complete(pending, outcome);
        } else {
            self.queries.insert(id, pending);
        }
    }

    /// Counts a finished bootstrap (a query not tracked in `queries`) in the metrics.
    fn count_bootstrap(&self, result: &QueryResult, step: &ProgressStep) {
        if let QueryResult::Bootstrap(r) = result
            && step.last
        {
            let outcome = if r.is_ok() { "ok" } else { "error" };
            self.metrics
                .bootstraps
                .get_or_create(&crate::metrics::LookupLabels {
                    kind: "bootstrap",
                    outcome,
                })
                .inc();
        }
    }

    /// Takes one `GetRecord` answer for `target`'s record: a valid, admitted one counts and
    /// replaces `best` if newer; an invalid one is counted as rejected. Returns whether enough
    /// answers are in to stop the query.
    fn take_record_answer(
        &mut self,
        target: &PeerId,
        best: &mut Option<SignedRecord>,
        answers: &mut usize,
        value: &[u8],
    ) -> bool {
        let key = keys::worker_key(target);
        match SignedRecord::verify(value, Some(&key), &self.config.sizing.limits, unix_ms())
            .and_then(|sr| self.admit(&sr).map(|()| sr))
        {
            Ok(sr) => {
                *answers += 1;
                if best.as_ref().is_none_or(|b| b.record.seq < sr.record.seq) {
                    *best = Some(sr);
                }
                *answers >= GET_RECORD_ANSWERS
            }
            Err(reason) => {
                self.metrics.reject("record", reason);
                false
            }
        }
    }

    /// Delivers a finished (or timed-out) query.
    fn complete(&mut self, p: Pending, outcome: &'static str) {
        let label = p.kind.label();
        let secs = p.started.elapsed().as_secs_f64();
        match p.kind {
            PendingKind::Put { reply, seq } => {
                if let Some(r) = reply {
                    let _ = r.send(Err(DhtError::Timeout));
                }
                self.put_finished(seq, outcome == "ok");
            }
            PendingKind::Provide => {}
            PendingKind::GetRecord {
                target,
                best,
                reply,
                job,
                ..
            } => {
                self.fetching.remove(&target);
                let outcome = if best.is_some() {
                    "ok"
                } else if outcome == "ok" {
                    "not_found"
                } else {
                    outcome
                };
                self.metrics.lookup(label, outcome, secs);
                if let Some(sr) = &best {
                    self.registry.upsert(sr, Instant::now());
                }
                if let Some(r) = reply {
                    let _ = r.send(Ok(best));
                }
                if let Some(job) = job {
                    self.job_step(job, None);
                }
                return;
            }
            PendingKind::Providers { job, found } => {
                self.metrics.lookup(label, outcome, secs);
                self.job_step(job, Some(found));
                return;
            }
        }
        self.metrics.lookup(label, outcome, secs);
    }

    /// Starts a record lookup for `peer`.
    pub(super) fn start_get_record(
        &mut self,
        target: PeerId,
        reply: Option<Reply<Option<SignedRecord>>>,
        job: Option<u64>,
    ) {
        self.fetching.insert(target);
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .get_record(keys::worker_key(&target));
        self.track(
            id,
            PendingKind::GetRecord {
                target,
                best: None,
                answers: 0,
                reply,
                job,
            },
        );
    }

    pub(super) fn find_workers(&mut self, service: String, reply: Reply<Vec<WorkerEntry>>) {
        if let Err(e) = ServiceName::parse(&service) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        let job = self.next_job;
        self.next_job += 1;
        // Every key of every shard (the CID key and, during the compatibility window, the
        // legacy string key older agents provide under): the providers found are merged.
        let mut outstanding = 0;
        for shard in 0..self.config.sizing.service_shards {
            for key in keys::lookup_keys(&service, shard) {
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.track(
                    id,
                    PendingKind::Providers {
                        job,
                        found: HashSet::new(),
                    },
                );
                outstanding += 1;
            }
        }
        self.jobs.insert(
            job,
            FindJob {
                service,
                outstanding,
                providers: HashSet::new(),
                fetching: false,
                reply: Some(reply),
            },
        );
    }

    fn job_step(&mut self, id: u64, found: Option<HashSet<PeerId>>) {
        let me = self.local_peer();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        if let Some(found) = found {
            job.providers.extend(found);
        }
        job.outstanding = job.outstanding.saturating_sub(1);
        if job.outstanding > 0 {
            return;
        }
        if !job.fetching {
            job.fetching = true;
            let unknown: Vec<PeerId> = job
                .providers
                .iter()
                .filter(|p| **p != me && !self.registry.contains(p))
                .copied()
                .collect();
            job.outstanding = unknown.len();
            if !unknown.is_empty() {
                for p in unknown {
                    self.start_get_record(p, None, Some(id));
                }
                return;
            }
        }
        if let Some(job) = self.jobs.remove(&id) {
            let workers = self.registry.workers_for(&job.service);
            if let Some(r) = job.reply {
                let _ = r.send(Ok(workers));
            }
        }
    }
}
