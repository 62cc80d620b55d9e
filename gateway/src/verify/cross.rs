//! Cross-checks: a sampled real request to a deterministic service, answered well by worker
//! A, is replayed on another worker B and the compared values (a JSON pointer, or the whole
//! body) matched. Agreement is [`Evidence::CrossCheckAgreed`] for both. A disagreement asks a
//! third worker C: the two that agree get `CrossCheckAgreed`, the odd one
//! [`Evidence::CrossCheckDisagreed`]. When C fails or matches neither there is no quorum and
//! nobody is blamed.
//!
//! Replaying runs the request again, so it is only done for services the operator declared
//! deterministic, whose requests must be free of side effects (docs/trust.md says so).

use std::sync::Arc;
use std::time::Instant;

use gpumesh_scheduler::Evidence;
use rand::Rng as _;

use super::Verifier;
use super::send::{self, CheckRequest, Reply};
use crate::checks::compare_value;
use crate::directory::WorkerKey;
use crate::forward::Served;
use crate::metrics::Metrics;

impl Verifier {
    /// Starts a cross-check of `served` unless too many run already (then it is dropped).
    pub(super) fn start_cross_check(self: &Arc<Self>, served: Served) {
        let Ok(permit) = Arc::clone(&self.replay_slots).try_acquire_owned() else {
            return;
        };
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.cross_check(&served).await;
            Metrics::check(&this.metrics.cross_checks, &served.service, result);
            drop(permit);
        });
    }

    /// Runs one cross-check; the result label.
    async fn cross_check(&self, served: &Served) -> &'static str {
        let pointer = self
            .plan
            .deterministic
            .iter()
            .find(|d| d.service == served.service)
            .and_then(|d| d.compare.clone());
        let Some(a) = compare_value(&served.answer, pointer.as_deref()) else {
            return "failed";
        };
        let Some((b_key, b)) = self
            .replay(served, &[served.worker], pointer.as_deref())
            .await
        else {
            return "failed";
        };
        if a == b {
            self.agreed(&[served.worker, b_key]);
            return "agreed";
        }
        let Some((c_key, c)) = self
            .replay(served, &[served.worker, b_key], pointer.as_deref())
            .await
        else {
            return "no_quorum";
        };
        let what = pointer.as_deref().unwrap_or("the body");
        let (majority, minority) = if c == a {
            ([served.worker, c_key], b_key)
        } else if c == b {
            ([b_key, c_key], served.worker)
        } else {
            return "no_quorum";
        };
        self.agreed(&majority);
        let reason = format!(
            "cross-check disagreed: {}: {what} differed from two other workers",
            served.service
        );
        self.directory.evidence(
            minority,
            Evidence::CrossCheckDisagreed,
            Some(reason),
            Instant::now(),
        );
        "disagreed"
    }

    fn agreed(&self, keys: &[WorkerKey]) {
        for &key in keys {
            self.directory
                .evidence(key, Evidence::CrossCheckAgreed, None, Instant::now());
        }
    }

    /// Replays `served` on a trusted worker other than `avoid`; its key and compared value.
    /// `None` when there is no such worker or it gave no good answer.
    async fn replay(
        &self,
        served: &Served,
        avoid: &[WorkerKey],
        pointer: Option<&str>,
    ) -> Option<(WorkerKey, Vec<u8>)> {
        let others: Vec<WorkerKey> = self
            .directory
            .check_targets(&served.service)
            .into_iter()
            .filter(|t| !t.distrusted && !avoid.contains(&t.key))
            .map(|t| t.key)
            .collect();
        if others.is_empty() {
            return None;
        }
        let key = others[self.state().rng.random_range(0..others.len())];
        let picked = self.directory.pick_worker(key, Instant::now())?;
        let req = CheckRequest {
            method: &served.method,
            path: &served.path,
            query: served.query.as_deref(),
            headers: &served.headers,
            body: served.body.clone(),
            deadline: self.replay_deadline,
        };
        let (reply, took) = send::send(&self.forwarder, &picked, req).await;
        let value = match &reply {
            Reply::Answer(status, body) if status.is_success() => compare_value(body, pointer),
            _ => None,
        };
        send::finish(&self.directory, &picked, value.is_some(), took);
        if matches!(reply, Reply::Late) {
            let kind = crate::forward::Deadline::Total.label();
            self.directory
                .deadline_missed(picked.key, kind, took, Instant::now());
        }
        Some((key, value?))
    }
}
