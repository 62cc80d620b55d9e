//! One test per failure mode: fast failures, ejection with backoff, draining, new workers,
//! and the reasons given when nothing is eligible.

mod support;

use std::time::Duration;

use gpumesh_scheduler::{
    NoEligible, Outcome, PolicyKind, Requirements, Scheduler, WorkerState, WorkerView,
};
use support::{MS, fleet, llm, rng, worker};

/// Drives `s` closed-loop: every pick finishes at once with latency 100 ms (or 1 ms failure
/// for `bad`). Returns how many picks went to `bad` among the last `tail` of `total`.
fn drive(s: &mut Scheduler, bad: &str, total: usize, tail: usize) -> usize {
    let mut rng = rng();
    let req = llm();
    let mut to_bad = 0;
    for i in 0..total {
        let now = Duration::from_millis(10) * i as u32;
        let pick = s.pick(&req, now, &mut rng).expect("eligible");
        let is_bad = s.worker_id(pick.key) == Some(bad);
        let (outcome, latency) = if is_bad {
            (Outcome::Failure, MS)
        } else {
            (Outcome::Success, 100 * MS)
        };
        s.on_finish(pick.key, outcome, latency, now + latency);
        if is_bad && i >= total - tail {
            to_bad += 1;
        }
    }
    to_bad
}

#[test]
fn fast_failing_worker_loses_its_share_with_gpumesh_but_sinkholes_tower() {
    let n = 10;
    let mut ours = fleet(n);
    let bad_ours = drive(&mut ours, "w0", 4000, 2000);
    assert!(
        bad_ours < 2000 / (2 * n),
        "gpumesh sent {bad_ours}/2000 to the failing worker"
    );

    let mut tower = Scheduler::for_policy(PolicyKind::P2cPeakEwma);
    for i in 0..n {
        tower.upsert_worker(worker(&format!("w{i}"), "H100", 4), Duration::ZERO);
    }
    let bad_tower = drive(&mut tower, "w0", 4000, 2000);
    assert!(
        bad_tower > 2000 / n,
        "tower's peak EWMA should sinkhole (got {bad_tower}/2000)"
    );
}

#[test]
fn repeated_failures_eject_with_backoff_and_a_success_restores() {
    let mut s = fleet(2);
    let key = s.key_of("w0").expect("known");
    let mut rng = rng();
    let req = llm();
    let t0 = Duration::from_secs(1);
    for _ in 0..5 {
        s.on_finish(key, Outcome::Failure, MS, t0);
    }
    for i in 0..200 {
        let p = s.pick(&req, t0 + MS * i, &mut rng).expect("w1 eligible");
        assert_eq!(s.worker_id(p.key), Some("w1"), "w0 is ejected");
        s.on_finish(p.key, Outcome::Cancelled, MS, t0);
    }
    // The 10% cap (at least one): w1 failing too is not ejected while w0 is.
    let k1 = s.key_of("w1").expect("known");
    for _ in 0..5 {
        s.on_finish(k1, Outcome::Failure, MS, t0);
    }
    assert!(s.pick(&req, t0 + Duration::from_secs(10), &mut rng).is_ok());
    s.on_finish(k1, Outcome::Success, MS, t0);
    // After 30 s it is back; five more failures eject it for 60 s.
    let t1 = t0 + Duration::from_secs(31);
    assert!(s.pick(&req, t1, &mut rng).is_ok());
    for _ in 0..5 {
        s.on_finish(key, Outcome::Failure, MS, t1);
    }
    let snap = s.snapshot(t1);
    let w0 = snap.iter().find(|w| w.id == "w0").expect("w0");
    assert_eq!(w0.ejected_for_s, Some(60.0));
}

#[test]
fn a_lone_ejected_worker_yields_all_ejected_with_retry_time() {
    let mut s = fleet(1);
    let key = s.key_of("w0").expect("known");
    let mut rng = rng();
    for _ in 0..5 {
        s.on_finish(key, Outcome::Failure, MS, Duration::from_secs(1));
    }
    match s.pick(&llm(), Duration::from_secs(11), &mut rng) {
        Err(NoEligible::AllEjected { retry_after, .. }) => {
            assert_eq!(retry_after, Duration::from_secs(20));
        }
        other => panic!("expected AllEjected, got {other:?}"),
    }
    assert!(s.pick(&llm(), Duration::from_secs(31), &mut rng).is_ok());
}

#[test]
fn draining_and_joining_workers_are_never_picked() {
    let mut s = fleet(3);
    s.set_state("w0", WorkerState::Draining);
    s.set_state("w1", WorkerState::Joining);
    let mut rng = rng();
    for i in 0..500 {
        let p = s.pick(&llm(), MS * i, &mut rng).expect("w2");
        assert_eq!(s.worker_id(p.key), Some("w2"));
    }
    s.set_state("w2", WorkerState::Draining);
    assert!(matches!(
        s.pick(&llm(), Duration::ZERO, &mut rng),
        Err(NoEligible::AllDraining { .. })
    ));
    s.set_state("w0", WorkerState::Joining);
    s.set_state("w2", WorkerState::Joining);
    assert!(matches!(
        s.pick(&llm(), Duration::ZERO, &mut rng),
        Err(NoEligible::AllJoining { .. })
    ));
}

#[test]
fn new_worker_gets_traffic_soon_but_is_not_flooded() {
    // 8 busy workers with a history of 100 ms latencies; a 9th joins.
    let mut s = fleet(8);
    let mut rng = rng();
    let req = llm();
    let mut open = Vec::new();
    let mut now = Duration::ZERO;
    // Warm up: keep ~16 requests in flight, each finishing after 100 ms.
    for i in 0..3000u32 {
        now = MS * (i * 5);
        let p = s.pick(&req, now, &mut rng).expect("eligible");
        open.push((p, now + 100 * MS));
        open.retain(|(p, end)| {
            if *end <= now {
                s.on_finish(p.key, Outcome::Success, 100 * MS, *end);
                false
            } else {
                true
            }
        });
    }
    s.upsert_worker(worker("new", "H100", 4), now);
    let mut first = None;
    let mut peak = 0;
    for i in 0..400u32 {
        let t = now + MS * (i * 5);
        let p = s.pick(&req, t, &mut rng).expect("eligible");
        if s.worker_id(p.key) == Some("new") && first.is_none() {
            first = Some(t - now);
        }
        open.push((p, t + 100 * MS));
        open.retain(|(p, end)| {
            if *end <= t {
                s.on_finish(p.key, Outcome::Success, 100 * MS, *end);
                false
            } else {
                true
            }
        });
        let k = s.key_of("new").expect("known");
        peak = peak.max(s.in_flight(k).unwrap_or(0));
    }
    let first = first.expect("the new worker got a request");
    assert!(
        first < Duration::from_secs(1),
        "first request after {first:?}"
    );
    // Fair share: 20 in flight over 9 workers ≈ 2.2; not flooded means at most twice that.
    assert!(peak <= 5, "new worker peaked at {peak} in flight");
}

#[test]
fn reasons_name_the_stage_that_emptied_the_set() {
    let mut rng = rng();
    let mut s = Scheduler::default();
    assert_eq!(
        s.pick(&llm(), Duration::ZERO, &mut rng),
        Err(NoEligible::NoWorkers)
    );
    let mut w = worker("a", "Tesla T4", 1);
    w.gpus[0].vram_free_mib = 8_000;
    w.tags = vec!["fp16".into()];
    s.upsert_worker(w, Duration::ZERO);
    let ocr = Requirements::new("ocr").unwrap();
    assert!(matches!(
        s.pick(&ocr, Duration::ZERO, &mut rng),
        Err(NoEligible::NoWorkerForService { .. })
    ));
    let a100 = llm().with_gpu_model("A100").unwrap();
    assert!(matches!(
        s.pick(&a100, Duration::ZERO, &mut rng),
        Err(NoEligible::NoGpuModelMatch { .. })
    ));
    let big = llm().with_min_free_vram_mib(16_000).unwrap();
    assert_eq!(
        s.pick(&big, Duration::ZERO, &mut rng),
        Err(NoEligible::NotEnoughVram {
            service: "llm".into(),
            required_mib: 16_000,
            best_mib: 8_000
        })
    );
    let fp8 = llm().with_tag("fp8").unwrap();
    assert!(matches!(
        s.pick(&fp8, Duration::ZERO, &mut rng),
        Err(NoEligible::MissingTags { .. })
    ));
    s.set_healthy("a", false);
    assert!(matches!(
        s.pick(&llm(), Duration::ZERO, &mut rng),
        Err(NoEligible::AllUnhealthy { .. })
    ));
    let ok = llm()
        .with_gpu_model("t4")
        .and_then(|r| r.with_min_free_vram_mib(4_000))
        .and_then(|r| r.with_tag("fp16"))
        .unwrap();
    s.set_healthy("a", true);
    assert!(s.pick(&ok, Duration::ZERO, &mut rng).is_ok());
}

#[test]
fn retry_avoids_the_first_worker_and_stale_keys_are_ignored() {
    let mut s = fleet(2);
    let mut rng = rng();
    let first = s.pick(&llm(), Duration::ZERO, &mut rng).unwrap();
    for _ in 0..50 {
        let other = s
            .pick_other(&llm(), first.key, Duration::ZERO, &mut rng)
            .unwrap();
        assert_ne!(other.key, first.key);
        s.on_finish(other.key, Outcome::Cancelled, MS, Duration::ZERO);
    }
    let id = s.worker_id(first.key).unwrap().to_owned();
    s.remove_worker(&id);
    s.upsert_worker(WorkerView::online(id.clone(), "llm", "H100"), MS);
    // The old pick's key must not touch the re-added worker.
    s.on_finish(first.key, Outcome::Failure, MS, MS);
    let k = s.key_of(&id).unwrap();
    assert_ne!(k, first.key);
    assert_eq!(s.in_flight(k), Some(0));
}

#[test]
fn unreachable_workers_leave_at_once_up_to_half_the_fleet() {
    let n = 10;
    let mut s = fleet(n);
    let mut rng = rng();
    let req = llm();
    let t0 = Duration::from_secs(1);
    // One refused connection takes a worker out of rotation (no five-failure wait).
    let k0 = s.key_of("w0").expect("known");
    assert!(s.on_unreachable(k0, t0));
    for i in 0..500 {
        let p = s.pick(&req, t0 + MS * i, &mut rng).expect("eligible");
        assert_ne!(s.worker_id(p.key), Some("w0"), "w0 is ejected");
        s.on_finish(p.key, Outcome::Cancelled, MS, t0);
    }
    // More than the 10% failure cap may go this way, but not more than half the fleet.
    let ejected: Vec<bool> = (1..n)
        .map(|i| {
            let k = s.key_of(&format!("w{i}")).expect("known");
            s.on_unreachable(k, t0)
        })
        .collect();
    assert_eq!(ejected.iter().filter(|e| **e).count(), 4, "5 of 10 at most");
    assert!(
        s.pick(&req, t0, &mut rng).is_ok(),
        "half the fleet still serves"
    );
}
