//! Runs the simulator without the full `gpumesh` binary (quick iteration):
//! `cargo run --release -p gpumesh-scheduler --example sim -- <scenario> <load> <requests> <seeds> [policies]`.

use gpumesh_scheduler::PolicyKind;
use gpumesh_scheduler::sim::{Scenario, SimConfig, run_scenario};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_owned());
    let scenarios = match get(0, "all").as_str() {
        "all" => Scenario::ALL.to_vec(),
        name => Scenario::from_name(name).into_iter().collect(),
    };
    let policies = match args.get(4) {
        Some(list) => list.split(',').filter_map(PolicyKind::from_name).collect(),
        None => PolicyKind::ALL.to_vec(),
    };
    for scenario in scenarios {
        let cfg = SimConfig {
            scenario,
            load: get(1, "0.9").parse().unwrap_or(0.9),
            workers: None,
            requests: get(2, "100000").parse().unwrap_or(100_000),
            seed: 1,
            seeds: get(3, "1").parse().unwrap_or(1),
            policies: policies.clone(),
            service: None,
        };
        let t = std::time::Instant::now();
        let report = run_scenario(&cfg);
        println!("{}({:.1?})\n", report.to_markdown(), t.elapsed());
    }
}
