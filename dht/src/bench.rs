//! `gpumesh dht-bench`: N workers and G gateways/seeds in one process, bootstrapping as real
//! agents do (a seed list, staggered starts), and the figures issue 3 asks for.
//!
//! Phases: start gateways; start workers staggered, each publishing its record; wait until
//! every gateway's view holds every worker (or the deadline); measure steady-state traffic,
//! RSS and CPU over a window; time DHT lookups from client-mode workers (so no local store
//! hit); start new workers one by one and time until every gateway sees each.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde::Serialize;

use crate::{
    DhtError, DhtHandle, Timings, TransportKind,
    config::Sizing,
    metrics::DhtMetrics,
    rules::ServiceName,
    testnet::{Testnet, TestnetConfig},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Workers.
    pub nodes: usize,
    /// Gateways (also the seeds).
    pub gateways: usize,
    /// OS threads of a separate runtime the gateways run on (0: share the workers' runtime).
    /// Real gateways are separate processes on their own machines; on one shared scheduler the
    /// 3 gateway tasks get the same share as each of 2000 worker tasks and fall behind.
    pub gateway_threads: usize,
    /// Transport.
    pub transport: TransportKind,
    /// Delay between worker starts.
    pub stagger: Duration,
    /// How long after the last start every gateway must see every worker.
    pub deadline: Duration,
    /// Steady-state window for traffic, RSS and CPU.
    pub steady: Duration,
    /// DHT lookups to time.
    pub lookups: usize,
    /// New workers to start after the full view, one by one.
    pub new_workers: usize,
    /// Node timings.
    pub timings: Timings,
    /// Node sizes.
    pub sizing: Sizing,
}

impl BenchConfig {
    /// Defaults for `nodes` workers: 3 gateways, TCP, production timings.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            gateways: 3,
            gateway_threads: 3,
            transport: TransportKind::Tcp,
            stagger: Duration::from_millis(5),
            deadline: Duration::from_secs(if nodes <= 500 { 10 } else { 30 }),
            steady: Duration::from_secs(30),
            lookups: 200,
            new_workers: 20,
            timings: Timings::default(),
            sizing: Sizing::default(),
        }
    }
}

/// The figures (`--json` prints this object).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Workers.
    pub nodes: usize,
    /// Gateways/seeds.
    pub gateways: usize,
    /// Threads of the gateways' own runtime (0: shared with the workers).
    pub gateway_threads: usize,
    /// `tcp` or `memory`.
    pub transport: &'static str,
    /// Worst gateway's share of workers seen at the deadline (or when all were seen).
    pub discoverable_fraction: f64,
    /// Seconds from the last worker start until every gateway saw every worker (null: never
    /// within the deadline).
    pub time_to_full_view_s: Option<f64>,
    /// Seconds from the first to the last worker start.
    pub start_span_s: f64,
    /// Workers whose first publish failed.
    pub publish_failures: usize,
    /// Median seconds from a new worker's start until every gateway saw it.
    pub new_worker_visible_p50_s: Option<f64>,
    /// 99th percentile of the same.
    pub new_worker_visible_p99_s: Option<f64>,
    /// New workers never seen by every gateway within 10 s.
    pub new_worker_missed: usize,
    /// Median DHT record lookup (client-mode worker looking up another worker), ms.
    pub lookup_p50_ms: Option<f64>,
    /// 99th percentile lookup, ms.
    pub lookup_p99_ms: Option<f64>,
    /// Share of lookups that found the record.
    pub lookup_success_fraction: f64,
    /// Process RSS growth divided by nodes (workers + gateways), bytes.
    pub rss_per_node_bytes: u64,
    /// Process RSS at steady state, bytes.
    pub rss_total_bytes: u64,
    /// Kad requests answered + gossip messages delivered, per node per minute, at steady state.
    pub messages_per_node_per_min: f64,
    /// Process CPU at steady state, percent of one core.
    pub steady_cpu_pct: f64,
    /// Process CPU seconds for the whole run.
    pub cpu_total_s: f64,
    /// Record TTL, refresh and heartbeat periods used, seconds.
    pub record_ttl_s: f64,
    /// Refresh period, seconds.
    pub refresh_interval_s: f64,
    /// Heartbeat period, seconds.
    pub heartbeat_interval_s: f64,
    /// 1-minute load average when the run ended (the machine is shared).
    pub load_avg_1m: Option<f64>,
}

/// Runs the bench. Every node stops before this returns.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport, DhtError> {
    if cfg.nodes == 0 || cfg.gateways == 0 {
        return Err(DhtError::Config("nodes and gateways must be > 0".into()));
    }
    let started = Instant::now();
    let cpu0 = cpu_seconds();
    let rss0 = rss_bytes();
    let metrics = DhtMetrics::default();
    let net_cfg = TestnetConfig {
        transport: cfg.transport,
        timings: cfg.timings,
        sizing: cfg.sizing,
        network_key: None,
        shared_metrics: Some(metrics.clone()),
        services: vec![ServiceName::parse("bench").expect("a valid name")],
    };
    let gateway_rt = BackgroundRuntime(if cfg.gateway_threads > 0 {
        Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.gateway_threads)
                .thread_name("dht-gateway")
                .enable_all()
                .build()
                .map_err(|e| DhtError::Config(format!("gateway runtime: {e}")))?,
        )
    } else {
        None
    });
    let mut net = Testnet::new(net_cfg);
    if let Some(rt) = &gateway_rt.0 {
        net.set_server_runtime(rt.handle().clone());
    }
    for _ in 0..cfg.gateways {
        net.add_gateway().await?;
    }

    // Workers, staggered; each publishes from its own task so slow puts do not slow starts.
    let first_start = Instant::now();
    let mut publishes = Vec::with_capacity(cfg.nodes);
    for i in 0..cfg.nodes {
        let w = net.spawn_worker(false).await?;
        let record = net.worker_record(i);
        publishes.push(tokio::spawn(async move { w.publish_record(record).await }));
        tokio::time::sleep(cfg.stagger).await;
    }
    let last_start = Instant::now();
    let workers: Vec<DhtHandle> = net.workers.clone();
    let ids: Vec<PeerId> = workers.iter().map(DhtHandle::peer_id).collect();
    let seen = |net: &Testnet| {
        net.gateways
            .iter()
            .map(|g| ids.iter().filter(|p| g.registry().contains(p)).count())
            .min()
            .unwrap_or(0)
    };
    let mut time_to_full = None;
    while last_start.elapsed() < cfg.deadline {
        if seen(&net) == ids.len() {
            time_to_full = Some(last_start.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let discoverable_fraction = seen(&net) as f64 / ids.len() as f64;
    if time_to_full.is_none() {
        // Keep waiting (bounded) so the steady-state figures describe a settled network.
        let extra = Instant::now();
        while extra.elapsed() < cfg.deadline && seen(&net) < ids.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut publish_failures = 0;
    for p in publishes {
        if !matches!(p.await, Ok(Ok(_))) {
            publish_failures += 1;
        }
    }

    // Steady state: traffic, CPU and memory over a window.
    let msgs = || metrics.message_count("kad_in") + metrics.message_count("gossip_in");
    let (m0, c0) = (msgs(), cpu_seconds());
    tokio::time::sleep(cfg.steady).await;
    let (m1, c1) = (msgs(), cpu_seconds());
    let all_nodes = (cfg.nodes + cfg.gateways) as f64;
    let minutes = cfg.steady.as_secs_f64() / 60.0;
    let messages_per_node_per_min = (m1 - m0) as f64 / all_nodes / minutes;
    let steady_cpu_pct = (c1 - c0) / cfg.steady.as_secs_f64() * 100.0;
    let rss = rss_bytes();
    let rss_per_node_bytes = (rss.saturating_sub(rss0) as f64 / all_nodes) as u64;

    // Lookups from client-mode workers for other workers' records, 8 at a time.
    let mut lookup_ms = Vec::new();
    let mut found = 0usize;
    let mut rng = SplitMix(0x9e37_79b9_7f4a_7c15 ^ cfg.nodes as u64);
    let mut i = 0;
    while i < cfg.lookups && workers.len() > 1 {
        let batch: Vec<_> = (i..(i + 8).min(cfg.lookups))
            .map(|_| {
                let reader = workers[rng.below(workers.len())].clone();
                let target = ids[rng.below(ids.len())];
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = reader.get_record(target).await;
                    (t.elapsed(), matches!(r, Ok(Some(_))))
                })
            })
            .collect();
        i += batch.len();
        for b in batch {
            if let Ok((d, ok)) = b.await {
                lookup_ms.push(d.as_secs_f64() * 1000.0);
                found += usize::from(ok);
            }
        }
    }

    // New workers, one every 250 ms, timed until every gateway sees each.
    let mut pending: Vec<(PeerId, Instant)> = Vec::new();
    let mut visible = Vec::new();
    for i in 0..cfg.new_workers {
        let t = Instant::now();
        let w = net.spawn_worker(false).await?;
        let record = net.worker_record(cfg.nodes + i);
        let h = w.clone();
        tokio::spawn(async move { h.publish_record(record).await });
        pending.push((w.peer_id(), t));
        let next = Instant::now() + Duration::from_millis(250);
        while Instant::now() < next {
            poll_visible(&net, &mut pending, &mut visible);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let wait = Instant::now();
    while !pending.is_empty() && wait.elapsed() < Duration::from_secs(10) {
        poll_visible(&net, &mut pending, &mut visible);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let new_worker_missed = pending.len();

    net.shutdown().await;
    drop(gateway_rt);
    let _ = started;
    Ok(BenchReport {
        nodes: cfg.nodes,
        gateways: cfg.gateways,
        gateway_threads: cfg.gateway_threads,
        transport: match cfg.transport {
            TransportKind::Tcp => "tcp",
            TransportKind::Memory => "memory",
        },
        discoverable_fraction,
        time_to_full_view_s: time_to_full,
        start_span_s: (last_start - first_start).as_secs_f64(),
        publish_failures,
        new_worker_visible_p50_s: percentile(&mut visible, 0.50),
        new_worker_visible_p99_s: percentile(&mut visible, 0.99),
        new_worker_missed,
        lookup_p50_ms: percentile(&mut lookup_ms, 0.50),
        lookup_p99_ms: percentile(&mut lookup_ms, 0.99),
        lookup_success_fraction: if lookup_ms.is_empty() {
            0.0
        } else {
            found as f64 / lookup_ms.len() as f64
        },
        rss_per_node_bytes,
        rss_total_bytes: rss,
        messages_per_node_per_min,
        steady_cpu_pct,
        cpu_total_s: cpu_seconds() - cpu0,
        record_ttl_s: cfg.timings.record_ttl.as_secs_f64(),
        refresh_interval_s: cfg.timings.refresh_interval.as_secs_f64(),
        heartbeat_interval_s: cfg.timings.heartbeat_interval.as_secs_f64(),
        load_avg_1m: load_avg(),
    })
}

/// A runtime that is shut down in the background when dropped (dropping a runtime inside an
/// async context panics).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

fn poll_visible(net: &Testnet, pending: &mut Vec<(PeerId, Instant)>, visible: &mut Vec<f64>) {
    pending.retain(|(p, t)| {
        if net.gateways.iter().all(|g| g.registry().contains(p)) {
            visible.push(t.elapsed().as_secs_f64());
            false
        } else {
            true
        }
    });
}

/// The `q` quantile (nearest rank) of `v`, or `None` when empty.
fn percentile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// A tiny deterministic generator for picking lookup pairs.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

/// Resident set size of this process (Linux `/proc/self/statm`; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// User + system CPU seconds of this process (Linux `/proc/self/stat`; 0 elsewhere).
pub fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl BenchReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.3} {unit}"));
        let rows = [
            ("nodes (workers)", self.nodes.to_string()),
            ("gateways/seeds", self.gateways.to_string()),
            ("gateway threads", self.gateway_threads.to_string()),
            ("transport", self.transport.to_owned()),
            (
                "workers started over",
                format!("{:.1} s", self.start_span_s),
            ),
            ("publish failures", self.publish_failures.to_string()),
            (
                "discoverable fraction",
                format!("{:.4}", self.discoverable_fraction),
            ),
            ("time to full view", opt(self.time_to_full_view_s, "s")),
            (
                "new worker visible p50",
                opt(self.new_worker_visible_p50_s, "s"),
            ),
            (
                "new worker visible p99",
                opt(self.new_worker_visible_p99_s, "s"),
            ),
            ("new workers missed", self.new_worker_missed.to_string()),
            ("lookup p50", opt(self.lookup_p50_ms, "ms")),
            ("lookup p99", opt(self.lookup_p99_ms, "ms")),
            (
                "lookup success",
                format!("{:.3}", self.lookup_success_fraction),
            ),
            (
                "RSS per node",
                format!("{:.0} KiB", self.rss_per_node_bytes as f64 / 1024.0),
            ),
            (
                "RSS total",
                format!("{:.1} MiB", self.rss_total_bytes as f64 / 1048576.0),
            ),
            (
                "messages/node/min",
                format!("{:.1}", self.messages_per_node_per_min),
            ),
            (
                "steady CPU",
                format!("{:.0} % of a core", self.steady_cpu_pct),
            ),
            ("CPU total", format!("{:.1} s", self.cpu_total_s)),
            (
                "ttl / refresh / heartbeat",
                format!(
                    "{} s / {} s / {} s",
                    self.record_ttl_s, self.refresh_interval_s, self.heartbeat_interval_s
                ),
            ),
            ("load average (1m)", opt(self.load_avg_1m, "")),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<28} {v}\n"));
        }
        out
    }
}
