//! The quality run (docs/benchmarks/gateway.md): 8 mock GPU workers of mixed classes, one
//! of which turns 10× slow for the middle third of the run, behind nginx
//! (`random two least_conn`) and behind the gateway, each driven by the same open-loop load.
//!
//! Started by `gateway/bench/quality.sh`, which runs nginx and the gateway as separate
//! processes first; this program owns the mock workers (fixed loopback ports, so that nginx's
//! upstream block can name them), registers them with the gateway's coordinator registry,
//! then for each target:
//! 1. a fault-free calibration run at the same rate (median latency);
//! 2. the measured run, with worker `h100a` slowed 10× between 1/3 and 2/3 of it, and a
//!    client timeout of 5× the nginx calibration median (the same for both targets).
//!
//! Latency is taken from each request's scheduled send time (no coordinated omission); a
//! request that fails or times out counts as a failure and enters the percentiles at the
//! time it was given up.
//!
//! Arguments (all `--name value`): `--gateway URL`, `--nginx URL`, `--token T`,
//! `--base-port P` (workers on P..P+7), `--rate R` (requests/s), `--secs S`, `--calib-secs C`.

use std::collections::HashMap;
use std::time::Duration;

use gpumesh_dht::record::{GpuInfo, LoadInfo, WorkerRecord};
use gpumesh_testkit::{Fault, MockService, MockServiceConfig};

/// (name, GPU model, speed relative to one A100), two workers of each class.
const CLASSES: [(&str, &str, f64); 4] = [
    ("h100", "NVIDIA H100 80GB HBM3", 2.0),
    ("a100", "NVIDIA A100-SXM4-40GB", 1.0),
    ("rtx3090", "NVIDIA GeForce RTX 3090", 0.6),
    ("t4", "Tesla T4", 0.25),
];
const SLOTS: u32 = 4;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Self {
        let raw: Vec<String> = std::env::args().skip(1).collect();
        let map = raw
            .chunks(2)
            .filter_map(|c| Some((c[0].trim_start_matches("--").to_owned(), c.get(1)?.clone())))
            .collect();
        Self(map)
    }
    fn get(&self, k: &str, default: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| default.to_owned())
    }
    fn num(&self, k: &str, default: f64) -> f64 {
        self.get(k, &default.to_string()).parse().expect("a number")
    }
}

/// One request's result.
#[derive(Clone, Copy)]
struct Sample {
    /// Since the run's start, when it was scheduled.
    at: Duration,
    /// Until the answer ended, or until it was given up.
    latency: Duration,
    ok: bool,
    timed_out: bool,
}

fn record(id: &str, model: &str, url: &str) -> WorkerRecord {
    let now = gpumesh_dht::rules::unix_ms();
    // A plausible size for the model: its class's largest, at most 40 GiB.
    let vram = gpumesh_dht::rules::plausible::gpu_class(model)
        .map_or(40_960, |c| c.max_vram_mib().min(40_960));
    WorkerRecord {
        peer_id: id.to_owned(),
        seq: 1,
        issued_at_ms: now,
        expires_at_ms: now + 3_600_000,
        gpus: vec![GpuInfo::new(model, format!("GPU-{id}"), vram, vram * 7 / 8)],
        load: LoadInfo {
            max_concurrency: SLOTS,
            ..LoadInfo::default()
        },
        agent_version: "quality-run".into(),
        started_at_ms: now,
        ..WorkerRecord::new(vec!["quality".parse().unwrap()], url)
    }
}

/// Open-loop load: `rate` requests/s for `secs`, each given up after `timeout`.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    rate: f64,
    secs: f64,
    timeout: Duration,
) -> Vec<Sample> {
    let n = (rate * secs) as u64;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(start + at).await;
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let scheduled = start + at;
            let call = async {
                let resp = client.get(&url).send().await.ok()?;
                let ok = resp.status().is_success();
                resp.bytes().await.ok()?;
                Some(ok)
            };
            let result = tokio::time::timeout(timeout, call).await;
            let latency = scheduled.elapsed();
            Sample {
                at,
                latency: latency.min(timeout),
                ok: matches!(result, Ok(Some(true))),
                timed_out: result.is_err(),
            }
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[idx.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
}

fn summary(name: &str, samples: &[Sample], window: Option<(Duration, Duration)>) -> String {
    let picked: Vec<&Sample> = samples
        .iter()
        .filter(|s| window.is_none_or(|(a, b)| s.at >= a && s.at < b))
        .collect();
    let mut lat: Vec<Duration> = picked.iter().map(|s| s.latency).collect();
    lat.sort();
    let ok = picked.iter().filter(|s| s.ok).count();
    let timeouts = picked.iter().filter(|s| s.timed_out).count();
    format!(
        "| {name} | {} | {:.2} % | {:.0} | {:.0} | {:.0} | {:.0} | {timeouts} | {} |",
        picked.len(),
        100.0 * ok as f64 / picked.len() as f64,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        pct(&lat, 100.0),
        picked.len() - ok - timeouts,
    )
}

fn median_ms(samples: &[Sample]) -> f64 {
    let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    lat.sort();
    pct(&lat, 50.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let gateway = args.get("gateway", "http://127.0.0.1:18230");
    let nginx = args.get("nginx", "http://127.0.0.1:18240");
    let token = args.get("token", "bench");
    let base_port = args.num("base-port", 18201.0) as u16;
    let rate = args.num("rate", 150.0);
    let secs = args.num("secs", 45.0);
    let calib_secs = args.num("calib-secs", 6.0);

    let mut workers = Vec::new();
    for (i, (class, model, speed)) in CLASSES.iter().flat_map(|c| [c, c]).enumerate() {
        let port = base_port + i as u16;
        let cfg = MockServiceConfig {
            listen: ([127, 0, 0, 1], port).into(),
            slots: SLOTS,
            speed: *speed,
            ..MockServiceConfig::default()
        };
        let svc = MockService::spawn(cfg).await.expect("mock worker binds");
        // Worker ids are ASCII letters and digits only.
        let id = format!("{class}{}", ["a", "b"][i % 2]);
        workers.push((id, *model, svc));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("client");
    for (id, model, svc) in &workers {
        let resp = client
            .post(format!("{gateway}/api/workers/register"))
            .bearer_auth(&token)
            .json(&record(id, model, &svc.url()))
            .send()
            .await
            .expect("gateway reachable");
        assert!(
            resp.status().is_success(),
            "register {id}: {}",
            resp.status()
        );
    }
    let targets = [
        (
            "nginx random two least_conn",
            format!("{nginx}/api/service/quality/run"),
        ),
        (
            "gpumesh gateway",
            format!("{gateway}/api/service/quality/run"),
        ),
    ];
    for (name, url) in &targets {
        let resp = client.get(url).send().await.expect("target reachable");
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }

    // Calibration: fault-free, the same rate.
    let generous = Duration::from_secs(10);
    let mut medians = Vec::new();
    for (name, url) in &targets {
        let s = drive(&client, url, rate, calib_secs, generous).await;
        let m = median_ms(&s);
        eprintln!(
            "calibration {name}: median {m:.1} ms over {} requests",
            s.len()
        );
        medians.push(m);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let timeout = Duration::from_secs_f64(5.0 * medians[0] / 1e3);
    eprintln!(
        "client timeout: {:.0} ms (5 × nginx's median)",
        timeout.as_secs_f64() * 1e3
    );

    let slow_from = Duration::from_secs_f64(secs / 3.0);
    let slow_to = Duration::from_secs_f64(2.0 * secs / 3.0);
    let mut results = Vec::new();
    for (name, url) in &targets {
        let slow = &workers[0].2;
        let schedule = async {
            tokio::time::sleep(slow_from).await;
            slow.set_fault(Fault::Slow { factor: 10.0 })
                .await
                .expect("fault");
            tokio::time::sleep(slow_to - slow_from).await;
            slow.set_fault(Fault::None).await.expect("fault");
        };
        let (s, ()) = tokio::join!(drive(&client, url, rate, secs, timeout), schedule);
        results.push((*name, s));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    println!(
        "Open loop {rate} req/s for {secs} s per target; worker `{}` 10× slow from {:.0} s to \
         {:.0} s; client timeout {:.0} ms = 5 × nginx's fault-free median ({:.1} ms; gateway's: \
         {:.1} ms).\n",
        workers[0].0,
        slow_from.as_secs_f64(),
        slow_to.as_secs_f64(),
        timeout.as_secs_f64() * 1e3,
        medians[0],
        medians[1],
    );
    println!(
        "| target (window) | requests | success | p50 ms | p99 ms | p99.9 ms | max ms | timeouts | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, s) in &results {
        println!("{}", summary(&format!("{name} (all)"), s, None));
        println!(
            "{}",
            summary(
                &format!("{name} (slow window)"),
                s,
                Some((slow_from, slow_to))
            )
        );
    }
    for (id, _, svc) in &workers {
        let st = svc.state();
        eprintln!("{id}: {st:?}");
    }
}
