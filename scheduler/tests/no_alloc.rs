//! The pick path does not allocate: dhat's counting global allocator (testing mode) around
//! many pick + on_finish calls, for every policy, with half the fleet ineligible so that
//! rejection sampling and the scan fallback both run.

use std::time::Duration;

use gpumesh_scheduler::{
    Outcome, PolicyKind, PublishedLoad, Requirements, Scheduler, WorkerState, WorkerView,
};
use rand::SeedableRng;
use rand::rngs::SmallRng;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn pick_and_finish_do_not_allocate() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let req = Requirements::new("llm")
        .and_then(|r| r.with_gpu_model("a100"))
        .and_then(|r| r.with_min_free_vram_mib(1024))
        .expect("valid");
    for kind in PolicyKind::ALL {
        for n in [10usize, 2000] {
            let mut s = Scheduler::for_policy(kind);
            for i in 0..n {
                let mut w = WorkerView::online(format!("w{i}"), "llm", "NVIDIA A100-SXM4-80GB");
                w.load = PublishedLoad {
                    in_flight: (i % 3) as u32,
                    queued: 0,
                    max_concurrency: 4,
                    published_at: Duration::ZERO,
                };
                if i % 2 == 1 {
                    w.state = WorkerState::Draining;
                }
                s.upsert_worker(w, Duration::ZERO);
            }
            let mut rng = SmallRng::seed_from_u64(3);
            let before = dhat::HeapStats::get().total_blocks;
            let mut picked = 0;
            for i in 0..5_000u64 {
                let now = Duration::from_micros(100 * i);
                if let Ok(p) = s.pick(&req, now, &mut rng) {
                    picked += 1;
                    let outcome = if i % 7 == 0 {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    };
                    s.on_finish(p.key, outcome, Duration::from_millis(20), now);
                }
            }
            let allocs = dhat::HeapStats::get().total_blocks - before;
            assert!(picked > 0, "{kind} never picked");
            assert_eq!(allocs, 0, "{kind} at {n} workers allocated {allocs} times");
        }
    }
}
