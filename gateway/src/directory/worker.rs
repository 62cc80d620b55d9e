//! One worker's gateway-side columns, the checks a record must pass to enter the table, and
//! the two projections of a record: the scheduler's view and the API's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpumesh_dht::record::{self, WorkerRecord, WorkerState};
use gpumesh_dht::rules::plausible::{ClaimLimits, check_claims};
use gpumesh_dht::rules::{MAX_ID_LEN, check_schema, unix_ms};
use gpumesh_scheduler::{Gpu, PublishedLoad, WorkerKey};
use prometheus_client::metrics::gauge::Gauge;
use url::Url;

use super::Refused;
use super::Source;
use super::attempts::AttemptLog;
use super::gauges::Tally;
use crate::types::{GpuSummary, TrustView, WorkerView};

/// `joining`, `online` or `draining`.
pub fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Joining => "joining",
        WorkerState::Online => "online",
        WorkerState::Draining => "draining",
    }
}

/// What the gateway keeps beside the scheduler's entry for one worker, in the directory's
/// column of the same slot.
#[derive(Debug)]
pub(super) struct Worker {
    /// The scheduler's handle (slot and generation) this column belongs to.
    pub(super) key: WorkerKey,
    /// Shared with every pick, so a pick clones no string.
    pub(super) id: Arc<str>,
    pub(super) record: WorkerRecord,
    /// The tunnel URL, checked against the upstream policy once, when the record arrived.
    pub(super) url: Arc<Url>,
    pub(super) source: Source,
    pub(super) received_at: Instant,
    /// Lease end granted by the source (ms since the Unix epoch); `None`: until removed.
    pub(super) lease_until_ms: Option<u64>,
    /// This worker's `worker_in_flight` series, created on its first pick (cached so the hot
    /// path does not build label strings).
    pub(super) gauge: Option<Gauge>,
    pub(super) tally: Tally,
    /// Why its trust last changed for the worse or better (a failed canary's reason …),
    /// truncated and safe to show; `None` until a check says something.
    pub(super) reason: Option<String>,
}

/// The record rules the table applies on top of the source's own checks: the rulebook's
/// schema ([`check_schema`]; service names are valid by type) and plausible claims
/// ([`check_claims`]: every source, the registry included, passes here), a peer id that is safe to log
/// and to use as a metric label, and at least one service.
pub(super) fn check_record(record: &WorkerRecord, limits: &ClaimLimits) -> Result<(), Refused> {
    let id = &record.peer_id;
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Refused::Invalid(
            "peer_id must be 1-128 ASCII letters and digits",
        ));
    }
    if record.services.is_empty() {
        return Err(Refused::Invalid("a record must offer at least one service"));
    }
    check_schema(record).map_err(|_| {
        Refused::Invalid("the record breaks the schema limits (services, text, URL or GPUs)")
    })?;
    check_claims(record, limits)?;
    Ok(())
}

/// The scheduler's view of a record whose load was measured at `load_at_ms` (ms since the
/// Unix epoch); `now` is the scheduler's clock.
pub(super) fn scheduler_view(
    r: &WorkerRecord,
    load_at_ms: u64,
    now: Duration,
) -> gpumesh_scheduler::WorkerView {
    gpumesh_scheduler::WorkerView {
        id: r.peer_id.clone(),
        services: r.services.iter().map(|s| s.as_str().to_owned()).collect(),
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
        load: published_load(r.load, load_at_ms, now),
        state: scheduler_state(r.state),
        healthy: true,
        speed: None,
    }
}

/// Published load with its age on the scheduler's clock.
pub(super) fn published_load(
    load: record::LoadInfo,
    load_at_ms: u64,
    now: Duration,
) -> PublishedLoad {
    let age = Duration::from_millis(unix_ms().saturating_sub(load_at_ms));
    PublishedLoad {
        in_flight: load.in_flight,
        queued: load.queue_depth,
        max_concurrency: load.max_concurrency,
        published_at: now.saturating_sub(age),
    }
}

/// The record's state as the scheduler names it.
pub(super) fn scheduler_state(state: WorkerState) -> gpumesh_scheduler::WorkerState {
    match state {
        WorkerState::Joining => gpumesh_scheduler::WorkerState::Joining,
        WorkerState::Online => gpumesh_scheduler::WorkerState::Online,
        WorkerState::Draining => gpumesh_scheduler::WorkerState::Draining,
    }
}

/// GPU summaries of a record (for `GET /api/route`).
pub(super) fn gpu_summaries(record: &WorkerRecord) -> Vec<GpuSummary> {
    record
        .gpus
        .iter()
        .map(|g| GpuSummary {
            model: g.model.clone(),
            vram_total_mib: g.vram_total_mib,
            vram_free_mib: g.vram_free_mib,
        })
        .collect()
}

/// A worker as the API shows it.
pub(super) fn api_view(
    w: &Worker,
    in_flight: u32,
    log: AttemptLog,
    trust: TrustView,
    ejected_for_s: Option<f64>,
    now: Instant,
) -> WorkerView {
    let r = &w.record;
    WorkerView {
        id: r.peer_id.clone(),
        source: w.source.as_str().to_owned(),
        state: r.state,
        services: r.services.iter().map(|s| s.as_str().to_owned()).collect(),
        tunnel_url: r.tunnel_url.clone(),
        seq: r.seq,
        record_age_ms: u64::try_from(now.saturating_duration_since(w.received_at).as_millis())
            .unwrap_or(u64::MAX),
        in_flight,
        gpus: r.gpus.clone(),
        load: r.load,
        agent_version: r.agent_version.clone(),
        last_attempt_ms: log.last_attempt_ms,
        first_failure_ms: log.first_failure_ms,
        failures: log.failures,
        ejected_for_s,
        trust,
    }
}
