//! The registry workers admitted under enforced operator admission, and the replay guard of
//! their signed requests.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use gpumesh_dht::request::RequestSigError;

/// An admitted registry worker.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admitted {
    /// When its admission token ends, ms since the Unix epoch.
    pub(super) not_after_ms: u64,
    /// The signing time of the newest signed request accepted from it (replay guard).
    pub(super) last_signed_ms: Option<u64>,
}

/// Filled only under enforced admission. Bounded: entries leave on deregister, on an expired
/// token, and in a sweep of workers no longer in the registry once the map outgrows the view.
#[derive(Debug, Default)]
pub(super) struct Admissions(Mutex<HashMap<String, Admitted>>);

impl Admissions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Admitted>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits `id` until `not_after_ms`. `live` lists the registry's workers now, read only
    /// when the map has outgrown `bound` (a sweep of departed workers and ended tokens).
    pub(super) fn insert(
        &self,
        id: String,
        not_after_ms: u64,
        now_ms: u64,
        bound: usize,
        live: impl FnOnce() -> HashSet<String>,
    ) {
        let mut map = self.lock();
        if map.len() >= bound {
            let live = live();
            map.retain(|id, a| a.not_after_ms > now_ms && live.contains(id));
        }
        // A re-registration keeps the replay guard: an old signed heartbeat stays old.
        let last_signed_ms = map.get(&id).and_then(|a| a.last_signed_ms);
        map.insert(
            id,
            Admitted {
                not_after_ms,
                last_signed_ms,
            },
        );
    }

    pub(super) fn get(&self, id: &str) -> Option<Admitted> {
        self.lock().get(id).copied()
    }

    /// Checks a signed request from `id` against the last one accepted and records its time.
    /// Under one lock, so two copies of one request racing each other cannot both pass.
    pub(super) fn accept_signed(
        &self,
        id: &str,
        check: impl FnOnce(Option<u64>) -> Result<u64, RequestSigError>,
    ) -> Result<(), RequestSigError> {
        let mut map = self.lock();
        let Some(entry) = map.get_mut(id) else {
            return Err(RequestSigError::Missing);
        };
        entry.last_signed_ms = Some(check(entry.last_signed_ms)?);
        Ok(())
    }

    pub(super) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}
