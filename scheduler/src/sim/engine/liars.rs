//! The `liars` scenario's workers and checks: what each lying worker publishes and does with
//! a request, and the gateway's canaries, modelled as evidence fed at a bounded rate.
//!
//! Simplification: a canary does not occupy the worker (at ≤ 1 % of traffic its load is
//! small); its verdict arrives when the worker would have answered it.

use rand::Rng;

use super::event::Event;
use super::{Sim, dur};
use crate::sim::scenario::{BASE_SERVICE_S, LIARS_DEADLINE_S, Lie};
use crate::trust::Evidence;
use crate::worker::{PublishedLoad, WorkerView};

/// Share of requests followed by a canary to a random worker.
const CANARY_SHARE: f64 = 0.01;

/// How long a garbage worker takes to answer, seconds.
const GARBAGE_S: f64 = 0.002;

/// When a tarpit answers, as a share of the deadline.
const TARPIT_SHARE_OF_DEADLINE: f64 = 0.95;

impl Sim<'_> {
    pub(super) fn lie(&self, w: u32) -> Option<Lie> {
        self.spec.lies.get(w as usize).copied().flatten()
    }

    /// Garbage and tarpit workers answer without a batch slot (they hold none for it).
    pub(super) fn is_slotless(&self, w: u32) -> bool {
        matches!(self.lie(w), Some(Lie::Garbage | Lie::Tarpit))
    }

    /// The slots worker `w` publishes: its claim, except to oracles, which see the truth.
    pub(super) fn claimed_slots(&self, w: u32) -> u32 {
        let truth = self.workers[w as usize].slots;
        match self.lie(w) {
            Some(lie) if !self.kind.is_oracle() => lie.claim().2,
            _ => truth,
        }
    }

    /// The record worker `w` publishes. An oracle sees the true speed and slots, and knows
    /// a worker whose answers are worthless is not one to use.
    pub(super) fn view_of(&self, w: u32) -> WorkerView {
        let (model, speed, _) = self.spec.fleet[w as usize];
        let lie = self.lie(w).filter(|_| !self.kind.is_oracle());
        let mut view = match lie {
            Some(lie) => {
                let (model, gpus, _) = lie.claim();
                let mut v = WorkerView::online(self.ids[w as usize].clone(), "llm", model);
                v.gpus = vec![v.gpus[0].clone(); gpus];
                v
            }
            None => WorkerView::online(self.ids[w as usize].clone(), "llm", model),
        };
        view.load = PublishedLoad {
            max_concurrency: self.claimed_slots(w),
            published_at: dur(self.now),
            ..PublishedLoad::default()
        };
        if self.kind.is_oracle() {
            view.speed = Some(speed);
            view.healthy = self.lie(w).is_none_or(Lie::serves);
        }
        view
    }

    /// A lying worker's handling of a request, if it lies in how it answers; `false`: it
    /// queues and serves like an honest one (at its true speed and slots).
    pub(super) fn liar_takes(&mut self, w: u32, req: u32) -> bool {
        let at = match self.lie(w) {
            Some(Lie::Garbage) => self.now + GARBAGE_S,
            Some(Lie::Tarpit) => self.now + TARPIT_SHARE_OF_DEADLINE * LIARS_DEADLINE_S,
            // Never answers: the deadline (`timeout`) ends it.
            Some(Lie::BlackHole) => return true,
            Some(Lie::Inflated) | None => return false,
        };
        self.schedule(
            at,
            Event::Done {
                worker: w,
                req,
                ok: true,
            },
        );
        true
    }

    /// One canary per worker as it joins.
    pub(super) fn on_join_checks(&mut self, w: u32) {
        if self.spec.checks {
            self.canary(w);
        }
    }

    /// After a request: a canary to a random joined worker, for [`CANARY_SHARE`] of them.
    pub(super) fn maybe_canary(&mut self) {
        if !self.spec.checks || self.checker.random::<f64>() >= CANARY_SHARE {
            return;
        }
        let w = self.checker.random_range(0..self.workers.len()) as u32;
        if self.workers[w as usize].joined {
            self.canary(w);
        }
    }

    /// A canary's verdict, delivered when the worker would have answered it.
    fn canary(&mut self, w: u32) {
        let (evidence, after) = match self.lie(w) {
            Some(Lie::Garbage) => (Evidence::CanaryFailed, GARBAGE_S),
            Some(Lie::BlackHole) => (Evidence::DeadlineMissed, LIARS_DEADLINE_S),
            Some(Lie::Tarpit) => (
                Evidence::CanaryPassed,
                TARPIT_SHARE_OF_DEADLINE * LIARS_DEADLINE_S,
            ),
            Some(Lie::Inflated) | None => (
                Evidence::CanaryPassed,
                BASE_SERVICE_S / self.workers[w as usize].speed,
            ),
        };
        self.schedule(
            self.now + after,
            Event::Evidence {
                worker: w,
                evidence,
            },
        );
    }

    /// Feeds evidence about worker `w` to every gateway.
    pub(super) fn evidence(&mut self, w: u32, evidence: Evidence) {
        let id = &self.ids[w as usize];
        let now = dur(self.now);
        for g in &mut self.gateways {
            if let Some(key) = g.key_of(id) {
                let _ = g.on_evidence(key, evidence, now);
            }
        }
    }
}
