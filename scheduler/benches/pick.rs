//! Cost of one pick (and its finish) at 10, 100 and 2000 eligible workers, per policy that
//! the gateway could deploy. Goal: under 1 µs per gpumesh pick at 2000 workers.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gpumesh_scheduler::{Outcome, PolicyKind, PublishedLoad, Requirements, Scheduler, WorkerView};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const MODELS: [&str; 4] = ["H100", "A100", "RTX 3090", "T4"];

fn fleet(kind: PolicyKind, n: usize) -> Scheduler {
    let mut s = Scheduler::for_policy(kind);
    for i in 0..n {
        let mut w = WorkerView::online(format!("worker-{i}"), "llm", MODELS[i % 4]);
        w.load = PublishedLoad {
            in_flight: (i % 5) as u32,
            queued: (i % 3) as u32,
            max_concurrency: 4,
            published_at: Duration::ZERO,
        };
        s.upsert_worker(w, Duration::ZERO);
    }
    s
}

fn bench_pick(c: &mut Criterion) {
    let req = Requirements::new("llm").expect("valid");
    let mut group = c.benchmark_group("pick+finish");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for kind in [
        PolicyKind::Gpumesh,
        PolicyKind::P2cPeakEwma,
        PolicyKind::Prequal,
        PolicyKind::LeastLoaded,
    ] {
        for n in [10usize, 100, 2000] {
            let mut s = fleet(kind, n);
            let mut rng = SmallRng::seed_from_u64(1);
            let mut t = Duration::from_secs(1);
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| {
                    t += Duration::from_micros(50);
                    let p = s.pick(black_box(&req), t, &mut rng).expect("eligible");
                    s.on_finish(p.key, Outcome::Success, Duration::from_millis(200), t);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
