//! Canaries: known-answer requests sent to workers like real requests of their service.
//!
//! Who gets one, per service with canaries (each tick of [`super::TICK`]):
//! - a worker that joined and was never checked, soon after it joins, at most
//!   [`JOIN_RATE`] a second per service (a flood of joiners cannot make the gateway flood);
//! - a serving worker at random, within [`CANARY_SHARE`] of the service's real requests less
//!   its cross-check share (a token bucket the forwarder fills);
//! - a distrusted worker every [`RECHECK_DISTRUSTED`], so that a fixed worker comes back.
//!
//! A right answer is [`Evidence::CanaryPassed`]; a wrong one (status, body, not parseable)
//! [`Evidence::CanaryFailed`] with the reason kept for `/api/workers`; no answer within the
//! canary's deadline [`Evidence::DeadlineMissed`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue};
use gpumesh_scheduler::Evidence;
use rand::Rng as _;

use super::Verifier;
use super::send::{self, CheckRequest, Reply};
use crate::checks::Canary;
use crate::directory::{CheckTarget, WorkerKey};
use crate::metrics::Metrics;

/// Canaries for new workers per service per second, at most.
pub const JOIN_RATE: f64 = 5.0;
/// Share of a service's real requests matched by random canaries to serving workers and
/// cross-check replays together. Below 1 %, so that the join and re-check canaries (bounded
/// by [`JOIN_RATE`] and [`RECHECK_DISTRUSTED`]) still fit in 1 % of the fleet's work.
pub const CANARY_SHARE: f64 = 0.008;
/// Most join and re-check canaries a service's budget may owe: beyond it they are free (a
/// fresh gateway that finds a large fleet checks every worker once, and random canaries wait
/// until the service's traffic has paid for those).
pub const JOIN_DEBT_CAP: f64 = 1000.0;
/// How often a distrusted worker is canaried (its way back).
pub const RECHECK_DISTRUSTED: Duration = Duration::from_secs(30);

/// What the runner remembers per worker between ticks.
#[derive(Debug, Default)]
pub(super) struct Checked {
    /// When its last canary was sent.
    pub(super) last: Option<Instant>,
    /// Whether one is on its way now (never two at once to one worker).
    pub(super) in_flight: bool,
}

/// One service's rate state.
#[derive(Debug)]
pub(super) struct Rates {
    /// Tokens for new-worker and distrusted-worker canaries (up to [`JOIN_RATE`]).
    pub(super) join_tokens: f64,
    pub(super) refilled: Instant,
}

impl Rates {
    fn take(&mut self, now: Instant) -> bool {
        let secs = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.join_tokens = (self.join_tokens + secs * JOIN_RATE).min(JOIN_RATE);
        if self.join_tokens >= 1.0 {
            self.join_tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Verifier {
    /// One tick for one service: decides who gets a canary and sends them.
    pub(super) fn canary_tick(self: &Arc<Self>, service: &str, now: Instant) {
        let mut targets = self.directory.check_targets(service);
        // Newest first: a worker that just joined is checked before the backlog a fresh
        // gateway has of workers it found all at once, so a liar joining a running fleet is
        // checked within a tick or two.
        targets.sort_unstable_by_key(|t| std::cmp::Reverse(t.joined));
        let mut chosen: Vec<WorkerKey> = Vec::new();
        {
            let mut state = self.state();
            let state = &mut *state;
            let rates = state.rates.entry(service.to_owned()).or_insert(Rates {
                join_tokens: JOIN_RATE,
                refilled: now,
            });
            for t in &targets {
                let checked = state.checked.entry(t.key).or_default();
                if checked.in_flight {
                    continue;
                }
                // Never checked by this gateway: a newcomer, or a worker whose trust was put
                // back after a restart (only a distrusted one needs a canary at once).
                let due = match checked.last {
                    None => (t.trust.verified == 0 && t.trust.failed == 0) || t.distrusted,
                    Some(last) => t.distrusted && now.duration_since(last) >= RECHECK_DISTRUSTED,
                };
                if due && rates.take(now) {
                    chosen.push(t.key);
                }
            }
            let serving: Vec<&CheckTarget> = targets.iter().filter(|t| !t.distrusted).collect();
            self.fill_budget(state, service);
            let budget = state.budgets.entry(service.to_owned()).or_default();
            // Join and re-check canaries are paid from the same budget (into debt, bounded),
            // so that over time all checks together stay within the service's share.
            *budget = (*budget - chosen.len() as f64).max(-JOIN_DEBT_CAP);
            while *budget >= 1.0 && !serving.is_empty() {
                *budget -= 1.0;
                let t = serving[state.rng.random_range(0..serving.len())];
                if !chosen.contains(&t.key)
                    && !state.checked.get(&t.key).is_some_and(|c| c.in_flight)
                {
                    chosen.push(t.key);
                }
            }
            for key in &chosen {
                let c = state.checked.entry(*key).or_default();
                c.in_flight = true;
                c.last = Some(now);
            }
        }
        for key in chosen {
            let Some(canary) = self.choose_canary(service) else {
                return;
            };
            let this = Arc::clone(self);
            tokio::spawn(async move {
                this.send_canary(key, &canary).await;
                if let Some(c) = this.state().checked.get_mut(&key) {
                    c.in_flight = false;
                }
            });
        }
    }

    fn choose_canary(&self, service: &str) -> Option<Canary> {
        let of_service: Vec<&Canary> = self
            .plan
            .canaries
            .iter()
            .filter(|c| c.service == service)
            .collect();
        if of_service.is_empty() {
            return None;
        }
        let i = self.state().rng.random_range(0..of_service.len());
        Some(of_service[i].clone())
    }

    /// Sends `canary` to worker `key` and turns the answer into evidence.
    pub(super) async fn send_canary(&self, key: WorkerKey, canary: &Canary) {
        let Some(picked) = self.directory.pick_worker(key, Instant::now()) else {
            return;
        };
        let headers: Vec<(HeaderName, HeaderValue)> = canary
            .headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            })
            .collect();
        let req = CheckRequest {
            method: &canary.method,
            path: &canary.path,
            query: None,
            headers: &headers,
            body: Bytes::from(canary.body.clone()),
            deadline: canary.deadline,
        };
        let (reply, took) = send::send(&self.forwarder, &picked, req).await;
        let (result, evidence, reason) = match reply {
            Reply::Answer(status, body) => match canary.check.verify(status, &body) {
                Ok(()) => ("passed", Some(Evidence::CanaryPassed), None),
                Err(why) => (
                    "failed",
                    Some(Evidence::CanaryFailed),
                    Some(format!("canary failed: {}: {why}", canary.name)),
                ),
            },
            Reply::Late => (
                "deadline",
                Some(Evidence::DeadlineMissed),
                Some(format!(
                    "canary {}: no whole answer within {} ms",
                    canary.name,
                    canary.deadline.as_millis()
                )),
            ),
            Reply::Broken => ("unreachable", None, None),
        };
        send::finish(&self.directory, &picked, result == "passed", took);
        Metrics::check(&self.metrics.canaries, &canary.service, result);
        if let Some(evidence) = evidence {
            tracing::info!(worker = %picked.id, canary = %canary.name, result, "canary");
            self.directory
                .evidence(picked.key, evidence, reason, Instant::now());
        }
    }
}
