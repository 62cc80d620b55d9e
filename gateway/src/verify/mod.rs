//! Answer checks: whether workers answer right, turned into trust evidence.
//!
//! Workers are strangers' machines; a record's claims prove nothing and a fast wrong answer
//! looks like good service. Two kinds of check, both from the operator's plan
//! ([`crate::checks::CheckPlan`]):
//! - [`canary`]: known-answer requests sent to new, serving and distrusted workers;
//! - [`cross`]: a small share of real requests to services marked deterministic replayed on
//!   another worker and compared; a disagreement asks a third.
//!
//! The forwarder feeds both through [`Tap`] (an [`AnswerTap`]): every real request grows its
//! service's canary budget, and sampled small answers come back for replay. Check requests
//! are picked with the scheduler's `pick_worker` (in flight like real requests) and go out
//! through the same pooled, SSRF-guarded client. `docs/trust.md` has the operator's view.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::checks::CheckPlan;
use crate::directory::{Directory, WorkerKey};
use crate::forward::{AnswerTap, Forwarder, Served};
use crate::metrics::Metrics;

pub mod canary;
pub mod cross;
mod send;

/// How often the canary runner looks at the table.
pub const TICK: Duration = Duration::from_millis(200);
/// Sampled answers waiting for a replay, at most (more are dropped: checks never queue up).
const REPLAY_QUEUE: usize = 64;
/// Cross-checks running at once, at most.
const REPLAYS_AT_ONCE: usize = 8;

/// The canary budget a service may save up (canaries sent in one burst at most).
const BUDGET_CAP: f64 = 5.0;

/// The forwarder's side: counts real requests of canaried services and samples answers for
/// replay. Runs on the request path: a counter per service (no lock), and a lock only for
/// the few requests of deterministic services.
#[derive(Debug)]
pub struct Tap {
    /// Real requests per canaried service since the runner last looked (a fixed set of
    /// services, so the map itself never changes).
    requests: Arc<HashMap<String, AtomicU64>>,
    /// Deterministic services and their replay share.
    shares: HashMap<String, f64>,
    rng: Mutex<SmallRng>,
    replays: mpsc::Sender<Served>,
}

impl AnswerTap for Tap {
    fn request(&self, service: &str) {
        if let Some(n) = self.requests.get(service) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sample(&self, service: &str) -> bool {
        match self.shares.get(service) {
            Some(&share) if share > 0.0 => {
                let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
                rng.random::<f64>() < share
            }
            _ => false,
        }
    }

    fn answered(&self, served: Served) {
        // A full queue drops the sample: checks must never slow or grow the gateway.
        let _ = self.replays.try_send(served);
    }
}

/// What the runner keeps between ticks (shared with [`Tap`]).
#[derive(Debug)]
struct RunnerState {
    rng: SmallRng,
    budgets: HashMap<String, f64>,
    rates: HashMap<String, canary::Rates>,
    checked: HashMap<WorkerKey, canary::Checked>,
}

/// The check runner: sends canaries and replays, feeds evidence to the directory.
#[derive(Debug)]
pub struct Verifier {
    plan: Arc<CheckPlan>,
    directory: Arc<Directory>,
    /// The forwarder without the tap (checks are not real traffic).
    forwarder: Forwarder,
    metrics: Metrics,
    shared: Mutex<RunnerState>,
    /// Real requests per canaried service, counted by the [`Tap`].
    requests: Arc<HashMap<String, AtomicU64>>,
    replays: Mutex<Option<mpsc::Receiver<Served>>>,
    replay_slots: Arc<Semaphore>,
    /// How long a replayed request may take.
    replay_deadline: Duration,
}

impl Verifier {
    /// A runner for `plan`, and the tap the forwarder reports to. `seed` seeds its choices.
    pub fn new(
        plan: Arc<CheckPlan>,
        directory: Arc<Directory>,
        forwarder: Forwarder,
        metrics: Metrics,
        seed: u64,
    ) -> (Arc<Self>, Arc<Tap>) {
        let shared = Mutex::new(RunnerState {
            rng: SmallRng::seed_from_u64(seed),
            budgets: HashMap::new(),
            rates: HashMap::new(),
            checked: HashMap::new(),
        });
        let requests: Arc<HashMap<String, AtomicU64>> = Arc::new(
            plan.canaries
                .iter()
                .map(|c| (c.service.clone(), AtomicU64::new(0)))
                .collect(),
        );
        let (tx, rx) = mpsc::channel(REPLAY_QUEUE);
        let tap = Tap {
            requests: Arc::clone(&requests),
            shares: plan
                .deterministic
                .iter()
                .map(|d| (d.service.clone(), d.share))
                .collect(),
            rng: Mutex::new(SmallRng::seed_from_u64(seed ^ 0x5eed)),
            replays: tx,
        };
        let verifier = Self {
            replay_deadline: forwarder_deadline(&forwarder),
            plan,
            directory,
            forwarder,
            metrics,
            shared,
            requests,
            replays: Mutex::new(Some(rx)),
            replay_slots: Arc::new(Semaphore::new(REPLAYS_AT_ONCE)),
        };
        (Arc::new(verifier), Arc::new(tap))
    }

    fn state(&self) -> MutexGuard<'_, RunnerState> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the requests counted since the last tick into `service`'s canary budget: random
    /// canaries and cross-checks share [`canary::CANARY_SHARE`] of a service's requests, so
    /// a canary is earned per request by what the service's cross-check share leaves (at most
    /// [`BUDGET_CAP`] saved up).
    fn fill_budget(&self, state: &mut RunnerState, service: &str) {
        let Some(counted) = self.requests.get(service) else {
            return;
        };
        #[allow(
            clippy::cast_precision_loss,
            reason = "request counts per tick are small"
        )]
        let cross = self
            .plan
            .deterministic
            .iter()
            .find(|d| d.service == service)
            .map_or(0.0, |d| d.share);
        let share = (canary::CANARY_SHARE - cross).max(0.0);
        let earned = counted.swap(0, Ordering::Relaxed) as f64 * share;
        let budget = state.budgets.entry(service.to_owned()).or_default();
        *budget = (*budget + earned).min(BUDGET_CAP);
    }

    /// Runs canaries and cross-checks until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut replays = self
            .replays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let services: Vec<String> = {
            let mut s: Vec<String> = self
                .plan
                .canaries
                .iter()
                .map(|c| c.service.clone())
                .collect();
            s.sort();
            s.dedup();
            s
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let now = Instant::now();
                    for service in &services {
                        self.canary_tick(service, now);
                    }
                    self.prune();
                }
                Some(served) = recv(&mut replays) => self.start_cross_check(served),
            }
        }
    }

    fn prune(&self) {
        let live: HashSet<WorkerKey> = self.directory.check_keys();
        self.state()
            .checked
            .retain(|k, c| c.in_flight || live.contains(k));
    }
}

/// The next sampled answer; pending forever without a queue.
async fn recv(rx: &mut Option<mpsc::Receiver<Served>>) -> Option<Served> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Replays get the same time as a real answer, capped so that a check cannot linger.
fn forwarder_deadline(forwarder: &Forwarder) -> Duration {
    forwarder.response_deadline().min(Duration::from_secs(60))
}
