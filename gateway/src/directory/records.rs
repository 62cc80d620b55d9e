//! Record checks and conversions: what a record must look like to enter the view, and how an
//! entry is shown by the API.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gpumesh_dht::record::{WorkerRecord, WorkerState};

use super::{AttemptLog, Entry, Refused};
use crate::api::types::{GpuSummary, WorkerView};

/// `joining`, `online` or `draining`.
pub fn state_name(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Joining => "joining",
        WorkerState::Online => "online",
        WorkerState::Draining => "draining",
    }
}

/// Longest worker id accepted.
pub const MAX_ID_LEN: usize = 128;
/// Most services one record may offer.
pub const MAX_SERVICES: usize = 32;

/// Whether `name` is an acceptable service name: 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub(super) fn check_record(record: &WorkerRecord) -> Result<(), Refused> {
    let id = &record.peer_id;
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Refused::Invalid(
            "peer_id must be 1-128 ASCII letters and digits",
        ));
    }
    if record.services.is_empty() || record.services.len() > MAX_SERVICES {
        return Err(Refused::Invalid("a record must offer 1 to 32 services"));
    }
    if !record
        .services
        .iter()
        .all(|s| valid_service_name(s.as_str()))
    {
        return Err(Refused::Invalid("service names are 1-64 of [A-Za-z0-9._-]"));
    }
    Ok(())
}

/// GPU summaries of a record (for `GET /api/route`).
pub fn gpu_summaries(record: &WorkerRecord) -> Vec<GpuSummary> {
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

pub(super) fn to_view(e: &Entry, log: AttemptLog, now: Instant) -> WorkerView {
    let r = &e.record;
    WorkerView {
        id: r.peer_id.clone(),
        source: e.source.as_str().to_owned(),
        state: r.state,
        services: r.services.iter().map(ToString::to_string).collect(),
        tunnel_url: r.tunnel_url.clone(),
        seq: r.seq,
        record_age_ms: u64::try_from(now.saturating_duration_since(e.received_at).as_millis())
            .unwrap_or(u64::MAX),
        in_flight: e.in_flight,
        gpus: r.gpus.clone(),
        load: r.load,
        agent_version: r.agent_version.clone(),
        last_attempt_ms: log.last_attempt_ms,
        first_failure_ms: log.first_failure_ms,
        failures: log.failures,
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
