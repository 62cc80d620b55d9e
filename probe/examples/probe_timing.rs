//! Times probe samples: `cargo run --release -p gpumesh-probe --example probe_timing -- [PROFILE|nvml] [N]`.
//!
//! Prints the mean, p50, p99 and max of N samples (GPU source plus host figures), each taken
//! the way the agent takes them.

use std::sync::Arc;
use std::time::Duration;

use gpumesh_probe::gpu::{FakeGpus, GpuChoice, GpuSource};
use gpumesh_probe::sampler::Sampler;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "a100".into());
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let source: Arc<dyn GpuSource> = if which == "nvml" {
        GpuChoice::Auto.open(0)?
    } else {
        Arc::new(FakeGpus::from_profile(&which, 0)?)
    };
    let sampler = Sampler::new(source)?;
    sampler.warm_up_blocking();
    let mut took: Vec<Duration> = (0..n).map(|_| sampler.sample_blocking().took).collect();
    took.sort();
    let mean = took.iter().sum::<Duration>() / n as u32;
    let q = |p: f64| took[((n as f64 * p) as usize).min(n - 1)];
    println!(
        "source={} samples={n} mean={mean:?} p50={:?} p99={:?} max={:?}",
        sampler.source_kind(),
        q(0.5),
        q(0.99),
        took[n - 1]
    );
    Ok(())
}
