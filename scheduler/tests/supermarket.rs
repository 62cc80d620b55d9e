//! Validation against Mitzenmacher's supermarket model: 100 single-slot workers, exponential
//! service, exact information, ρ = 0.9 → mean time in system ≈ 10 (random) and ≈ 2.61
//! (two choices), in mean service times. Finite n and a finite run deviate a little; the
//! tolerance is 10%, and three seeds of 150 000 requests keep the run-to-run spread (about
//! 3% for random, 1% for P2C) well inside it.

use gpumesh_scheduler::PolicyKind;
use gpumesh_scheduler::sim::{Scenario, SimConfig, run_scenario};

#[test]
fn homogeneous_exp_reproduces_the_supermarket_model() {
    let cfg = SimConfig {
        scenario: Scenario::HomogeneousExp,
        load: 0.9,
        workers: Some(100),
        requests: 150_000,
        seed: 11,
        seeds: 3,
        policies: vec![PolicyKind::Random, PolicyKind::P2cInflight],
        service: None,
    };
    let report = run_scenario(&cfg);
    let mean = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.policy == name)
            .map(|r| r.mean)
            .expect("ran")
    };
    let random = mean("random");
    let p2c = mean("p2c-inflight");
    assert!((random / 10.0 - 1.0).abs() < 0.10, "random mean {random}");
    assert!((p2c / 2.61 - 1.0).abs() < 0.10, "p2c mean {p2c}");
}
