//! Invariants over arbitrary views and requirements (proptest).

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpumesh_scheduler::candidates::Candidates;
use gpumesh_scheduler::{
    Gpu, Outcome, Policy, PolicyKind, PublishedLoad, Requirements, Scheduler, WorkerState,
    WorkerView,
};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

fn arb_view(i: usize) -> impl Strategy<Value = WorkerView> {
    (
        prop::sample::subsequence(vec!["llm", "ocr", "embed"], 0..=3),
        prop::sample::select(vec!["H100", "A100", "Tesla T4", "RTX 3090", "?"]),
        0u64..100_000,
        prop::sample::select(vec![
            WorkerState::Joining,
            WorkerState::Online,
            WorkerState::Draining,
        ]),
        any::<bool>(),
        (0u32..50, 0u32..50, 0u32..9, 0u64..100),
        prop::option::of(prop_oneof![Just(f64::NAN), Just(0.0), -1.0..4.0f64]),
        any::<bool>(),
    )
        .prop_map(
            move |(services, model, vram, state, healthy, (inf, q, slots, age), speed, tag)| {
                WorkerView {
                    id: format!("w{i}"),
                    services: services.into_iter().map(String::from).collect(),
                    gpus: vec![Gpu {
                        model: model.into(),
                        vram_total_mib: 100_000,
                        vram_free_mib: vram,
                        utilization: 0.5,
                    }],
                    tags: if tag { vec!["fp8".into()] } else { vec![] },
                    load: PublishedLoad {
                        in_flight: inf,
                        queued: q,
                        max_concurrency: slots,
                        published_at: Duration::from_secs(age),
                    },
                    state,
                    healthy,
                    speed,
                }
            },
        )
}

fn arb_req() -> impl Strategy<Value = Requirements> {
    (
        prop::sample::select(vec!["llm", "ocr", "embed", "tts"]),
        0i64..120_000,
        prop::option::of(prop::sample::select(vec!["h100", "T4", "a100", "mi300"])),
        any::<bool>(),
    )
        .prop_map(|(svc, vram, model, tag)| {
            let mut r = Requirements::new(svc)
                .and_then(|r| r.with_min_free_vram_mib(vram))
                .expect("valid");
            if let Some(m) = model {
                r = r.with_gpu_model(m).expect("valid");
            }
            if tag {
                r = r.with_tag("fp8").expect("valid");
            }
            r
        })
}

fn eligible(v: &WorkerView, r: &Requirements) -> bool {
    v.services.iter().any(|s| s == r.service())
        && v.state == WorkerState::Online
        && v.healthy
        && v.max_free_vram_mib() >= r.min_free_vram_mib()
        && r.gpu_model().is_none_or(|m| {
            v.gpus
                .iter()
                .any(|g| g.model.to_lowercase().contains(&m.to_lowercase()))
        })
        && r.tags().iter().all(|t| v.tags.contains(t))
}

/// Records the pairs a P2C draw compares, in a log the test keeps a handle to.
#[derive(Debug, Default, Clone)]
struct PairSpy {
    pairs: Arc<Mutex<Vec<(u32, u32)>>>,
}

impl PairSpy {
    fn log(&self) -> Vec<(u32, u32)> {
        self.pairs.lock().expect("not poisoned").clone()
    }
}

impl Policy for PairSpy {
    fn name(&self) -> &'static str {
        "spy"
    }
    fn choose(&mut self, c: &Candidates<'_>, rng: &mut dyn RngCore) -> Option<u32> {
        let mut pair = [0u32; 2];
        match c.sample_distinct(rng, &mut pair) {
            2 => {
                assert!(c.is_eligible(pair[0]) && c.is_eligible(pair[1]));
                self.pairs
                    .lock()
                    .expect("not poisoned")
                    .push((pair[0], pair[1]));
                Some(pair[0])
            }
            1 => Some(pair[0]),
            _ => None,
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_policy_picks_only_eligible_workers_and_never_panics(
        views in (1usize..40).prop_flat_map(|n| (0..n).map(arb_view).collect::<Vec<_>>()),
        reqs in prop::collection::vec(arb_req(), 1..6),
        seed in any::<u64>(),
    ) {
        for kind in PolicyKind::ALL {
            let mut s = Scheduler::for_policy(kind);
            for v in &views {
                s.upsert_worker(v.clone(), Duration::ZERO);
            }
            let mut rng = SmallRng::seed_from_u64(seed);
            for (i, r) in reqs.iter().enumerate() {
                let now = Duration::from_millis(i as u64 * 7);
                let any_eligible = views.iter().any(|v| eligible(v, r));
                match s.pick(r, now, &mut rng) {
                    Ok(p) => {
                        let v = s.view(p.key).expect("picked worker exists");
                        prop_assert!(eligible(v, r), "{kind} picked ineligible {}", v.id);
                        s.on_finish(p.key, if i % 2 == 0 { Outcome::Success } else { Outcome::Failure },
                            Duration::from_millis(5), now);
                    }
                    Err(e) => {
                        // Only oracle-central may hold while something is eligible.
                        prop_assert!(!any_eligible || kind == PolicyKind::OracleCentral,
                            "{kind}: {e} although a worker was eligible");
                    }
                }
            }
        }
    }

    #[test]
    fn p2c_compares_two_distinct_eligible_workers(
        views in (2usize..60).prop_flat_map(|n| (0..n).map(arb_view).collect::<Vec<_>>()),
        seed in any::<u64>(),
    ) {
        let spy = PairSpy::default();
        let mut s = Scheduler::with_policy(Default::default(), Box::new(spy.clone()));
        for v in &views {
            s.upsert_worker(v.clone(), Duration::ZERO);
        }
        let r = Requirements::new("llm").expect("valid");
        let mut rng = SmallRng::seed_from_u64(seed);
        let n_eligible = views.iter().filter(|v| eligible(v, &r)).count();
        for _ in 0..50 {
            let _ = s.pick(&r, Duration::ZERO, &mut rng);
        }
        // The spy asserted eligibility; its log shows distinctness.
        let log = spy.log();
        prop_assert_eq!(log.is_empty(), n_eligible < 2);
        prop_assert!(log.iter().all(|(a, b)| a != b));
    }
}

#[test]
fn sampled_pairs_are_distinct_and_uniform() {
    use gpumesh_scheduler::Scheduler as S;
    let spy = PairSpy::default();
    let mut s = S::with_policy(Default::default(), Box::new(spy.clone()));
    for i in 0..4 {
        s.upsert_worker(support::worker(&format!("w{i}"), "H100", 1), Duration::ZERO);
    }
    let mut rng = support::rng();
    for _ in 0..8000 {
        let p = s
            .pick(&support::llm(), Duration::ZERO, &mut rng)
            .expect("eligible");
        s.on_finish(p.key, Outcome::Cancelled, Duration::ZERO, Duration::ZERO);
    }
    let mut counts = [[0u32; 4]; 4];
    let mut total = 0;
    for (a, b) in spy.log() {
        assert_ne!(a, b, "a pair repeated a worker");
        counts[a as usize][b as usize] += 1;
        total += 1;
    }
    assert_eq!(total, 8000);
    // 12 ordered pairs, each ≈ 667; allow ±20%.
    for (a, row) in counts.iter().enumerate() {
        for (b, &c) in row.iter().enumerate() {
            if a != b {
                assert!((533..=800).contains(&c), "pair ({a},{b}) drawn {c} times");
            }
        }
    }
}
