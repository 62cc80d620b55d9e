//! Shared helpers for the scheduler's integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use gpumesh_scheduler::{PublishedLoad, Requirements, Scheduler, WorkerView};
use rand::SeedableRng;
use rand::rngs::SmallRng;

pub const MS: Duration = Duration::from_millis(1);

pub fn rng() -> SmallRng {
    SmallRng::seed_from_u64(42)
}

pub fn llm() -> Requirements {
    Requirements::new("llm").expect("valid")
}

/// An online single-GPU worker with `slots` slots.
pub fn worker(id: &str, model: &str, slots: u32) -> WorkerView {
    let mut w = WorkerView::online(id, "llm", model);
    w.load = PublishedLoad {
        max_concurrency: slots,
        ..PublishedLoad::default()
    };
    w
}

/// A gpumesh scheduler with `n` identical H100 workers `w0..wn`.
pub fn fleet(n: usize) -> Scheduler {
    let mut s = Scheduler::default();
    for i in 0..n {
        s.upsert_worker(worker(&format!("w{i}"), "H100", 4), Duration::ZERO);
    }
    s
}
