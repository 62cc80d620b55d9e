//! The bench's figures ([`BenchReport`], printed as JSON or a table) and the process
//! counters they are read from (Linux `/proc`).

use serde::Serialize;

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

pub(super) fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
