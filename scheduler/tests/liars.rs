//! Workers whose records lie: capacity is learned from serving, a failed canary stops real
//! traffic, and a huge claim never pushes picks into the O(n) scan.

mod support;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use gpumesh_scheduler::{Evidence, Outcome, Scheduler, WorkerKey};
use rand::Rng;
use support::{llm, rng, worker};

/// A worker as it really is: batch slots and the seconds one request takes on one slot.
#[derive(Clone)]
struct Truth {
    slot_free_at: Vec<f64>,
    service_s: f64,
}

/// Open-loop traffic at `rate` per second over `[from, until)` seconds: each request goes
/// where the scheduler picks, waits for the worker's earliest free slot, takes an exponential
/// service time and is finished (on_finish) when done. Returns picks per worker counted from
/// `count_from` seconds on, and the scheduler's scan fallbacks over the same window.
fn drive(
    s: &mut Scheduler,
    truth: &mut [Truth],
    rate: f64,
    (from, until): (f64, f64),
    count_from: f64,
) -> (Vec<u64>, u64) {
    let mut rng = rng();
    let req = llm();
    let mut picks = vec![0u64; truth.len()];
    // (finish time in µs, key, latency in µs)
    let mut pending: BinaryHeap<Reverse<(u64, WorkerKey, u64)>> = BinaryHeap::new();
    let mut t = from;
    let mut fallbacks_at_start = None;
    let slot_of = |s: &Scheduler, k: WorkerKey| -> usize {
        let id = s.worker_id(k).expect("live");
        id[1..].parse().expect("w<index>")
    };
    while t < until {
        t += -rng.random::<f64>().max(1e-12).ln() / rate;
        let now_us = (t * 1e6) as u64;
        while let Some(Reverse((at, key, lat))) = pending.peek().copied() {
            if at > now_us {
                break;
            }
            pending.pop();
            let (at, lat) = (Duration::from_micros(at), Duration::from_micros(lat));
            s.on_finish(key, Outcome::Success, lat, at);
        }
        if t >= count_from && fallbacks_at_start.is_none() {
            fallbacks_at_start = Some(s.scan_fallbacks());
        }
        let now = Duration::from_micros(now_us);
        let Ok(pick) = s.pick(&req, now, &mut rng) else {
            continue;
        };
        let w = slot_of(s, pick.key);
        if t >= count_from {
            picks[w] += 1;
        }
        let tr = &mut truth[w];
        let (i, free) = tr
            .slot_free_at
            .iter()
            .copied()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one slot");
        let service = -rng.random::<f64>().max(1e-12).ln() * tr.service_s;
        let done = free.max(t) + service;
        tr.slot_free_at[i] = done;
        let done_us = (done * 1e6) as u64;
        pending.push(Reverse((done_us, pick.key, done_us - now_us)));
    }
    let fallbacks = s.scan_fallbacks() - fallbacks_at_start.unwrap_or(0);
    (picks, fallbacks)
}

fn h100(n: usize) -> Vec<Truth> {
    vec![
        Truth {
            slot_free_at: vec![0.0; 4],
            service_s: 0.1,
        };
        n
    ]
}

#[test]
fn a_claimed_h200_with_u32_max_slots_serving_at_t4_speed_gets_its_true_share() {
    let mut s = Scheduler::default();
    let mut liar = worker("w0", "NVIDIA H200", u32::MAX);
    liar.gpus = vec![liar.gpus[0].clone(); 8];
    s.upsert_worker(liar, Duration::ZERO);
    for i in 1..=200 {
        s.upsert_worker(worker(&format!("w{i}"), "H100", 4), Duration::ZERO);
    }
    let mut truth = h100(201);
    // Four real slots at T4 speed (0.12 of an H100).
    truth[0].service_s = 0.1 / 0.12;
    // True capacity: 200 × 4 / 0.1 s + 4 / 0.83 s ≈ 8 005 requests/s; offer 70 %.
    let capacity: f64 = truth
        .iter()
        .map(|t| t.slot_free_at.len() as f64 / t.service_s)
        .sum();
    let (picks, _) = drive(&mut s, &mut truth, 0.7 * capacity, (0.0, 12.0), 1.0);
    let total: u64 = picks.iter().sum();
    let share = picks[0] as f64 / total as f64;
    let true_share = (4.0 / truth[0].service_s) / capacity;
    assert!(
        share <= 1.5 * true_share,
        "the liar got {share:.5} of picks, its true capacity share is {true_share:.5}"
    );
    let snap = s.snapshot(Duration::from_secs(12));
    let w0 = snap.iter().find(|w| w.id == "w0").expect("w0");
    assert!(w0.slots_learned <= 4, "{w0:?}");
    assert!(w0.speed < 0.5, "weighted like a slow GPU: {w0:?}");
}

#[test]
fn a_fast_worker_distrusted_by_a_failed_canary_gets_no_picks() {
    let mut s = Scheduler::default();
    let liar = s.upsert_worker(worker("w0", "H100", 4), Duration::ZERO);
    for i in 1..=20 {
        s.upsert_worker(worker(&format!("w{i}"), "H100", 4), Duration::ZERO);
    }
    let state = s.on_evidence(liar, Evidence::CanaryFailed, Duration::ZERO);
    assert!(state.is_some_and(|t| t.failed == 1));
    assert_eq!(s.is_distrusted(liar), Some(true));
    let mut truth = h100(21);
    // It answers (garbage) in 2 ms: by latency alone it would take most of the traffic.
    truth[0].service_s = 0.002;
    let (picks, _) = drive(&mut s, &mut truth, 500.0, (0.0, 10.0), 0.0);
    assert_eq!(picks[0], 0, "the distrusted worker was picked");
    assert!(picks[1..].iter().sum::<u64>() > 4000);
    // A canary may still reach it: that is how a fixed worker comes back.
    let p = s.pick_worker(liar, Duration::from_secs(10));
    assert!(p.is_some());
}

#[test]
fn a_huge_claim_does_not_push_picks_into_the_scan_and_a_withdrawn_one_leaves_no_trace() {
    let mut s = Scheduler::default();
    s.upsert_worker(worker("w0", "H200", u32::MAX), Duration::ZERO);
    for i in 1..=200 {
        s.upsert_worker(worker(&format!("w{i}"), "H100", 4), Duration::ZERO);
    }
    let mut truth = h100(202);
    let (_, fallbacks) = drive(&mut s, &mut truth, 2000.0, (0.0, 3.0), 0.0);
    assert!(
        fallbacks < 10,
        "{fallbacks} picks fell back to the scan while a worker claimed u32::MAX slots"
    );

    // A speed override is believed (the operator's word): a huge one is a huge weight, and
    // the scan takes over while it lasts ...
    s.upsert_worker(worker("w201", "H200", 1), Duration::from_secs(3));
    s.set_speed("w201", Some(1e9));
    let (_, during) = drive(&mut s, &mut truth, 2000.0, (3.0, 4.0), 3.0);
    assert!(during > 100, "only {during} fallbacks with a 1e9 weight");
    // ... and stops as soon as it is withdrawn, or the worker leaves.
    s.set_speed("w201", None);
    let (_, after) = drive(&mut s, &mut truth, 2000.0, (4.0, 5.0), 4.0);
    assert!(
        after < 10,
        "{after} fallbacks after the override was withdrawn"
    );
    s.set_speed("w201", Some(1e9));
    s.remove_worker("w201");
    let (_, gone) = drive(&mut s, &mut truth, 2000.0, (5.0, 6.0), 5.0);
    assert!(gone < 10, "{gone} fallbacks after the worker left");
}

#[test]
fn removing_from_a_100k_table_touches_only_the_removed_entries() {
    let n = 100_000;
    let started = std::time::Instant::now();
    let mut s = Scheduler::default();
    for i in 0..n {
        let mut w = worker(&format!("w{i}"), "H100", 4);
        if i % 2 == 1 {
            w.services.push("ocr".into());
        }
        s.upsert_worker(w, Duration::ZERO);
    }
    // Remove the odd workers from the last down: most removals move another entry into the
    // hole (swap_remove), whose remembered position must follow.
    for i in (0..n).rev().step_by(2) {
        assert!(s.remove_worker(&format!("w{i}")).is_some());
    }
    let elapsed = started.elapsed();
    // O(n) per removal would be 5·10⁹ entry visits: minutes even optimised.
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert_eq!(s.len(), n / 2);
    // The index is consistent: the removed ones are never picked, and "ocr" went with the
    // odd workers.
    assert!(!s.serves("ocr"));
    let mut rng = rng();
    for t in 0..2000u64 {
        let p = s
            .pick(&llm(), Duration::from_millis(t), &mut rng)
            .expect("eligible");
        let id = s.worker_id(p.key).expect("live");
        let i: usize = id[1..].parse().expect("w<index>");
        assert_eq!(i % 2, 0, "removed worker {id} was picked");
        s.on_finish(p.key, Outcome::Cancelled, Duration::ZERO, Duration::ZERO);
    }
}

#[test]
fn an_idle_liar_does_not_drift_back_to_its_claimed_speed() {
    // Between answers a worker's latency estimate decays towards a prior. Were that the prior
    // of its claimed class, a T4 claiming an H200 would look like an H200 again after every
    // idle spell and win its next comparisons; at light load idle spells are the rule.
    let mut s = Scheduler::default();
    s.upsert_worker(worker("w0", "NVIDIA H200", 4), Duration::ZERO);
    for i in 1..=50 {
        s.upsert_worker(worker(&format!("w{i}"), "Tesla T4", 4), Duration::ZERO);
    }
    let mut truth = h100(51);
    for t in &mut truth {
        t.service_s = 0.1 / 0.12;
    }
    let capacity: f64 = truth
        .iter()
        .map(|t| t.slot_free_at.len() as f64 / t.service_s)
        .sum();
    let (picks, _) = drive(&mut s, &mut truth, 0.3 * capacity, (0.0, 120.0), 30.0);
    let total: u64 = picks.iter().sum();
    let share = picks[0] as f64 / total as f64;
    let true_share = 1.0 / 51.0;
    assert!(
        share <= 1.5 * true_share,
        "the liar got {share:.4} of picks, its true capacity share is {true_share:.4}"
    );
}
