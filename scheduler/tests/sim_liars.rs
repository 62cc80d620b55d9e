//! The `liars` simulation: gpumesh keeps each lying group at or below its true capacity share
//! and the honest tail near the honest-only one, where tower's peak EWMA believes the records.

use gpumesh_scheduler::PolicyKind;
use gpumesh_scheduler::sim::{PolicyResult, Scenario, SimConfig, run_scenario};

fn share(r: &PolicyResult, group: &str) -> (f64, f64) {
    let g = r.groups.as_ref().and_then(|g| g.get(group)).expect(group);
    (g.traffic, g.capacity)
}

#[test]
fn lying_workers_get_no_more_than_their_true_capacity_with_gpumesh() {
    let cfg = SimConfig {
        scenario: Scenario::Liars,
        load: 0.9,
        workers: None,
        requests: 40_000,
        seed: 5,
        seeds: 1,
        policies: vec![PolicyKind::Gpumesh, PolicyKind::P2cPeakEwma],
        service: None,
    };
    let report = run_scenario(&cfg);
    let of = |name: &str| {
        report
            .results
            .iter()
            .find(|r| r.policy == name)
            .expect("ran")
    };
    let ours = of("gpumesh");
    let (inflated, inflated_cap) = share(ours, "inflated");
    assert!(
        inflated <= 1.5 * inflated_cap,
        "{inflated} vs {inflated_cap}"
    );
    for group in ["garbage", "black-hole", "tarpit"] {
        let (traffic, _) = share(ours, group);
        assert!(traffic < 0.002, "{group} got {traffic} of the requests");
    }
    // The reference believes every record: the garbage workers' 2 ms answers draw traffic.
    let tower = of("p2c-peak-ewma");
    assert!(share(tower, "garbage").0 > 0.005);
    let (_, ours_p99) = ours.honest_p50_p99.expect("liars figures");
    let (_, tower_p99) = tower.honest_p50_p99.expect("liars figures");
    assert!(ours_p99 < tower_p99, "{ours_p99} vs {tower_p99}");
}
