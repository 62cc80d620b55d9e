//! What this gateway sent to each worker and how it went, kept beyond the view.
//!
//! The evidence for "a failing worker stops getting traffic quickly" (first failure → last
//! attempt). Kept apart from the table so that it outlives a worker's entry: a killed worker
//! leaves the view soon after it starts failing.

use std::collections::HashMap;
use std::sync::Arc;

use gpumesh_dht::rules::unix_ms;

use super::Directory;

/// One worker's log.
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
pub struct AttemptLogs(Arc<Directory>);

impl AttemptLogs {
    pub(crate) fn new(directory: Arc<Directory>) -> Self {
        Self(directory)
    }

    /// The log of worker `id`, also after it left the view.
    pub fn get(&self, id: &str) -> Option<AttemptLog> {
        self.0.attempt_log(id)
    }
}

/// Logs kept beyond the view's own workers (departed ones), at most.
const DEPARTED_LOGS: usize = 4096;

/// The logs by worker id.
#[derive(Debug, Default)]
pub(super) struct Attempts(HashMap<Arc<str>, AttemptLog>);

impl Attempts {
    /// A request was routed to `id` now. `live` is the number of workers in the view: once
    /// the map holds more than that plus [`DEPARTED_LOGS`], departed workers' logs go.
    pub(super) fn attempt(&mut self, id: &Arc<str>, live: usize, is_live: impl Fn(&str) -> bool) {
        if self.0.len() >= live + DEPARTED_LOGS {
            self.0.retain(|id, _| is_live(id));
        }
        let at = Some(unix_ms());
        // Look up before inserting: the common case (a known worker) clones nothing.
        match self.0.get_mut(id) {
            Some(log) => log.last_attempt_ms = at,
            None => {
                let log = AttemptLog {
                    last_attempt_ms: at,
                    ..AttemptLog::default()
                };
                self.0.insert(Arc::clone(id), log);
            }
        }
    }

    /// A request to `id` failed.
    pub(super) fn failure(&mut self, id: &str) {
        if let Some(log) = self.0.get_mut(id) {
            log.failures += 1;
            log.first_failure_ms.get_or_insert_with(unix_ms);
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<AttemptLog> {
        self.0.get(id).copied()
    }
}
