//! The event loop: Poisson arrivals, gateways running [`Scheduler`]s, workers with slots and
//! FIFO queues, published load, timeouts, and the scenario's disturbances.

mod event;
mod liars;

use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp1};

use self::event::{Event, Timed};
use super::dist::ServiceDist;
use super::scenario::{BASE_SERVICE_S, Lie};
use crate::policy::PolicyKind;
use crate::scheduler::{Outcome, Scheduler};
use crate::table::WorkerKey;
use crate::worker::PublishedLoad;
use crate::{NoEligible, Requirements};

/// Everything one run needs (one policy, one scenario variant).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// (GPU model, speed, slots) per worker.
    pub fleet: Vec<(&'static str, f64, u32)>,
    /// Workers that join late and when (seconds).
    pub joiners: std::ops::Range<usize>,
    /// Join time, seconds.
    pub join_at: f64,
    /// Arrival rate, requests per second.
    pub rate: f64,
    /// Requests to simulate.
    pub requests: usize,
    /// Work distribution.
    pub service: ServiceDist,
    /// Gateways.
    pub gateways: usize,
    /// Publication interval, seconds (0: on every change).
    pub publish_every: f64,
    /// Client timeout, seconds.
    pub timeout: Option<f64>,
    /// (worker, factor, from, to): a worker slowed down for a window.
    pub slow: Option<(usize, f64, f64, f64)>,
    /// (worker, from): a worker that fails every request in 1 ms from `from` on.
    pub fail: Option<(usize, f64)>,
    /// Per worker, how it lies (empty: nobody does). `fleet` holds the truth.
    pub lies: Vec<Option<Lie>>,
    /// The gateway checks answers: a canary per worker on join and for 1 % of requests, and a
    /// missed deadline (`timeout`) is reported as evidence.
    pub checks: bool,
    /// Seed: arrivals and work are drawn from it identically for every policy.
    pub seed: u64,
}

/// What happened to each request, for the report.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestRecord {
    /// Arrival time, s.
    pub arrival: f64,
    /// Response latency, s (`NaN` if rejected without a worker).
    pub latency: f64,
    /// The worker it went to (`u32::MAX`: none).
    pub worker: u32,
    /// Whether it succeeded.
    pub ok: bool,
}

/// A run's raw outcome.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// One record per request, in arrival order.
    pub records: Vec<RequestRecord>,
    /// Simulated time at the last event, s.
    pub end: f64,
    /// Per joiner: peak requests at it (serving + queued) in its first 5 s.
    pub joiner_peak: Vec<u32>,
    /// Mean requests per worker (serving + queued) across the fleet, sampled whenever a
    /// joiner received a request in its first 5 s: the joiner's fair share.
    pub fair_in_system: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatch {
    Sent,
    Held,
    Rejected,
}

#[derive(Debug, Default)]
struct SimWorker {
    speed: f64,
    factor: f64,
    slots: u32,
    busy: u32,
    queue: VecDeque<u32>,
    failing: bool,
    joined: bool,
    joined_at: f64,
    peak: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Req {
    arrival: f64,
    work: f64,
    gateway: u32,
    worker: u32,
    key: Option<WorkerKey>,
    finished: bool,
}

struct Sim<'a> {
    spec: &'a RunSpec,
    kind: PolicyKind,
    heap: BinaryHeap<Timed>,
    seq: u64,
    now: f64,
    workers: Vec<SimWorker>,
    ids: Vec<String>,
    gateways: Vec<Scheduler>,
    reqs: Vec<Req>,
    records: Vec<RequestRecord>,
    central: VecDeque<u32>,
    requirements: Requirements,
    fair_sum: f64,
    fair_samples: u64,
    workload: SmallRng,
    picker: SmallRng,
    /// Draws canaries: apart from `workload` so arrivals stay the same for every policy.
    checker: SmallRng,
}

fn dur(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// Runs `spec` under `kind`.
pub fn run(spec: &RunSpec, kind: PolicyKind) -> RunOutput {
    let requirements = match Requirements::new("llm") {
        Ok(r) => r,
        Err(_) => unreachable!("\"llm\" is a valid service name"),
    };
    let mut sim = Sim {
        spec,
        kind,
        heap: BinaryHeap::new(),
        seq: 0,
        now: 0.0,
        workers: Vec::new(),
        ids: (0..spec.fleet.len()).map(|i| format!("w{i}")).collect(),
        gateways: (0..spec.gateways.max(1))
            .map(|_| Scheduler::for_policy(kind))
            .collect(),
        reqs: Vec::with_capacity(spec.requests),
        records: Vec::with_capacity(spec.requests),
        central: VecDeque::new(),
        requirements,
        fair_sum: 0.0,
        fair_samples: 0,
        workload: SmallRng::seed_from_u64(spec.seed),
        picker: SmallRng::seed_from_u64(spec.seed ^ 0x9e37_79b9_7f4a_7c15),
        checker: SmallRng::seed_from_u64(spec.seed ^ 0x5851_f42d_4c95_7f2d),
    };
    sim.start();
    while let Some(t) = sim.heap.pop() {
        sim.now = t.at;
        sim.handle(t.event);
    }
    RunOutput {
        records: sim.records,
        end: sim.now,
        joiner_peak: spec.joiners.clone().map(|w| sim.workers[w].peak).collect(),
        fair_in_system: sim.fair_sum / sim.fair_samples.max(1) as f64,
    }
}

impl Sim<'_> {
    fn schedule(&mut self, at: f64, event: Event) {
        self.seq += 1;
        self.heap.push(Timed {
            at,
            seq: self.seq,
            event,
        });
    }

    fn start(&mut self) {
        let spec = self.spec;
        for (i, &(_, speed, slots)) in spec.fleet.iter().enumerate() {
            self.workers.push(SimWorker {
                speed,
                factor: 1.0,
                slots,
                ..SimWorker::default()
            });
            if spec.joiners.contains(&i) {
                self.schedule(spec.join_at, Event::Join { worker: i as u32 });
            } else {
                self.join(i as u32);
            }
        }
        if let Some((w, factor, from, to)) = spec.slow {
            self.schedule(
                from,
                Event::Speed {
                    worker: w as u32,
                    factor,
                },
            );
            self.schedule(
                to,
                Event::Speed {
                    worker: w as u32,
                    factor: 1.0,
                },
            );
        }
        if let Some((w, from)) = spec.fail {
            self.schedule(from, Event::Fail { worker: w as u32 });
        }
        let first = self.next_gap();
        self.schedule(first, Event::Arrival);
    }

    fn next_gap(&mut self) -> f64 {
        let e: f64 = Exp1.sample(&mut self.workload);
        e / self.spec.rate
    }

    fn join(&mut self, w: u32) {
        let view = self.view_of(w);
        for g in &mut self.gateways {
            g.upsert_worker(view.clone(), dur(self.now));
        }
        self.on_join_checks(w);
        let sw = &mut self.workers[w as usize];
        sw.joined = true;
        sw.joined_at = self.now;
        if self.spec.publish_every > 0.0 {
            let phase = self.picker.random::<f64>() * self.spec.publish_every;
            self.schedule(self.now + phase, Event::Publish { worker: w });
        }
    }

    /// Pushes worker `w`'s load to the gateways: all of them when `all`, else only the
    /// oracles' (which always see the truth) or everyone when publication is continuous.
    fn publish(&mut self, w: u32, all: bool) {
        if !(all || self.kind.is_oracle() || self.spec.publish_every == 0.0) {
            return;
        }
        let sw = &self.workers[w as usize];
        let load = PublishedLoad {
            in_flight: sw.busy,
            queued: sw.queue.len() as u32,
            max_concurrency: self.claimed_slots(w),
            published_at: dur(self.now),
        };
        let id = &self.ids[w as usize];
        for g in &mut self.gateways {
            g.update_load(id, load);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrival => self.arrival(),
            Event::Done { worker, req, ok } => self.done(worker, req, ok),
            Event::Timeout { req } => self.timeout(req),
            Event::Publish { worker } => {
                self.publish(worker, true);
                if self.reqs.len() < self.spec.requests {
                    let at = self.now + self.spec.publish_every;
                    self.schedule(at, Event::Publish { worker });
                }
            }
            Event::Join { worker } => self.join(worker),
            Event::Speed { worker, factor } => {
                self.workers[worker as usize].factor = factor;
                if self.kind.is_oracle() {
                    let speed = self.workers[worker as usize].speed / factor;
                    let id = &self.ids[worker as usize];
                    for g in &mut self.gateways {
                        g.set_speed(id, Some(speed));
                    }
                }
            }
            Event::Evidence { worker, evidence } => self.evidence(worker, evidence),
            Event::Fail { worker } => {
                self.workers[worker as usize].failing = true;
                if self.kind.is_oracle() {
                    // An oracle knows the worker is broken.
                    let id = &self.ids[worker as usize];
                    for g in &mut self.gateways {
                        g.set_healthy(id, false);
                    }
                }
            }
        }
    }

    fn arrival(&mut self) {
        let id = self.reqs.len() as u32;
        let work = self.spec.service.sample(&mut self.workload);
        let gateway = self.workload.random_range(0..self.gateways.len()) as u32;
        self.reqs.push(Req {
            arrival: self.now,
            work,
            gateway,
            worker: u32::MAX,
            key: None,
            finished: false,
        });
        self.records.push(RequestRecord {
            arrival: self.now,
            latency: f64::NAN,
            worker: u32::MAX,
            ok: false,
        });
        if self.reqs.len() < self.spec.requests {
            let at = self.now + self.next_gap();
            self.schedule(at, Event::Arrival);
        }
        if let Some(t) = self.spec.timeout {
            self.schedule(self.now + t, Event::Timeout { req: id });
        }
        if self.dispatch(id) == Dispatch::Held {
            self.central.push_back(id);
        }
        self.maybe_canary();
    }

    /// Picks a worker for `req` through its gateway and hands it over.
    fn dispatch(&mut self, req: u32) -> Dispatch {
        let r = self.reqs[req as usize];
        let g = &mut self.gateways[r.gateway as usize];
        match g.pick(&self.requirements, dur(self.now), &mut self.picker) {
            Ok(pick) => {
                // Ids are "w<index>".
                let Some(w) = g
                    .worker_id(pick.key)
                    .and_then(|id| id.get(1..))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    unreachable!("the simulator names every worker w<index>")
                };
                self.reqs[req as usize].worker = w;
                self.reqs[req as usize].key = Some(pick.key);
                self.records[req as usize].worker = w;
                self.enqueue(w, req);
                Dispatch::Sent
            }
            Err(NoEligible::Saturated { .. }) => Dispatch::Held,
            Err(_) => {
                // Rejected (503): an error with no latency.
                self.reqs[req as usize].finished = true;
                Dispatch::Rejected
            }
        }
    }

    fn enqueue(&mut self, w: u32, req: u32) {
        if self.liar_takes(w, req) {
            return;
        }
        let sw = &mut self.workers[w as usize];
        if sw.failing {
            self.schedule(
                self.now + 0.001,
                Event::Done {
                    worker: w,
                    req,
                    ok: false,
                },
            );
            return;
        }
        if sw.busy < sw.slots {
            sw.busy += 1;
            let t = self.reqs[req as usize].work * BASE_SERVICE_S * sw.factor / sw.speed;
            self.schedule(
                self.now + t,
                Event::Done {
                    worker: w,
                    req,
                    ok: true,
                },
            );
        } else {
            sw.queue.push_back(req);
        }
        let sw = &mut self.workers[w as usize];
        if self.spec.joiners.contains(&(w as usize)) && self.now - sw.joined_at <= 5.0 {
            sw.peak = sw.peak.max(sw.busy + sw.queue.len() as u32);
            let (total, joined) = self
                .workers
                .iter()
                .filter(|x| x.joined)
                .fold((0u64, 0u64), |(t, n), x| {
                    (t + u64::from(x.busy) + x.queue.len() as u64, n + 1)
                });
            self.fair_sum += total as f64 / joined.max(1) as f64;
            self.fair_samples += 1;
        }
        self.publish(w, false);
    }

    fn done(&mut self, w: u32, req: u32, ok: bool) {
        // Garbage and tarpit answers hold no batch slot.
        if ok && !self.is_slotless(w) {
            let sw = &mut self.workers[w as usize];
            sw.busy -= 1;
            if let Some(next) = sw.queue.pop_front() {
                sw.busy += 1;
                let t = self.reqs[next as usize].work * BASE_SERVICE_S * sw.factor / sw.speed;
                self.schedule(
                    self.now + t,
                    Event::Done {
                        worker: w,
                        req: next,
                        ok: true,
                    },
                );
            }
            self.publish(w, false);
        }
        self.finish(req, ok);
        if self.lie(w) == Some(Lie::Garbage) {
            // The gateway took it for a success; the client got a wrong answer.
            self.records[req as usize].ok = false;
        }
        self.drain_central();
    }

    /// The client gives up: the request fails, and a worker that has not started it yet drops
    /// it from its queue (the connection is gone). One already in a batch slot runs to the end.
    fn timeout(&mut self, req: u32) {
        let r = self.reqs[req as usize];
        if r.finished {
            return;
        }
        if let Some(sw) = self.workers.get_mut(r.worker as usize)
            && let Some(pos) = sw.queue.iter().position(|&q| q == req)
        {
            sw.queue.remove(pos);
            self.publish(r.worker, false);
        }
        self.finish(req, false);
        if self.spec.checks && r.key.is_some() {
            self.evidence(r.worker, crate::trust::Evidence::DeadlineMissed);
        }
    }

    fn finish(&mut self, req: u32, ok: bool) {
        let r = &mut self.reqs[req as usize];
        if r.finished {
            return;
        }
        r.finished = true;
        let latency = self.now - r.arrival;
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        if let Some(key) = r.key {
            self.gateways[r.gateway as usize].on_finish(key, outcome, dur(latency), dur(self.now));
        }
        let rec = &mut self.records[req as usize];
        rec.latency = latency;
        rec.ok = ok;
    }

    fn drain_central(&mut self) {
        while let Some(&req) = self.central.front() {
            if self.reqs[req as usize].finished {
                self.central.pop_front();
                continue;
            }
            if self.dispatch(req) == Dispatch::Held {
                break;
            }
            self.central.pop_front();
        }
    }
}
