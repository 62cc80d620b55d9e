//! The run report: JSON (a machine-readable contract other tools read), a markdown sibling and an
//! SVG chart of throughput and latency over time (plotters).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use crate::chaos::ChaosReport;
use crate::error::LoadtestError;
use crate::liars::LiarsReport;
use crate::soak::SoakReport;
use crate::traffic::Second;

/// Traffic share against capacity share for one GPU profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileShare {
    /// GPU profile.
    pub profile: String,
    /// Workers with it.
    pub workers: usize,
    /// Their share of the fleet's capacity (speed-weighted).
    pub capacity_share: f64,
    /// Their share of the requests served.
    pub traffic_share: f64,
    /// Requests they served.
    pub served: u64,
}

/// Where the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Available parallelism.
    pub cores: usize,
    /// `/proc/loadavg` at the end of the run.
    pub loadavg: String,
}

/// The machine figures now.
pub fn machine() -> Machine {
    Machine {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Workers started.
    pub workers: usize,
    /// Goose users.
    pub users: usize,
    /// Traffic time, seconds.
    pub duration_s: f64,
    /// Workers the gateway listed when traffic started.
    pub workers_discovered: usize,
    /// Seconds from fleet start until every worker was listed.
    pub discovery_s: f64,
    /// Requests answered.
    pub requests: u64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// `ok / requests`.
    pub success_ratio: f64,
    /// Latency percentiles, ms (`p50`, `p95`, `p99`, `p999`, `max`).
    pub latency_ms: BTreeMap<String, f64>,
    /// Failures by error code.
    pub errors: BTreeMap<String, u64>,
    /// Bootstrap and registry calls during the traffic window.
    pub central_calls_in_window: f64,
    /// Those calls per worker per day, extrapolated from the window.
    pub central_calls_per_worker_day: f64,
    /// Agents whose final report came back: the fleet plus those that churn and chaos started
    /// (an agent that fails to stop in time is logged and missing here).
    pub agent_starts: usize,
    /// Bootstrap calls per agent start, over the agents' whole lives (one with the DHT; more
    /// when a join fails and the cached seeds are refetched).
    pub bootstrap_calls_per_agent_start: f64,
    /// DHT messages per second seen by the gateway's node during the window.
    pub dht_messages_per_s: f64,
    /// `gateway-restart`: seconds from restart until every worker is listed again.
    pub view_recovery_s: Option<f64>,
    /// `chaos`: the longest time a killed worker kept receiving requests after its first
    /// failed one (last attempt − first failure, seconds; see [`ChaosReport`]).
    pub failed_worker_traffic_stop_s: Option<f64>,
    /// `chaos`: the per-worker figures behind `failed_worker_traffic_stop_s`.
    pub chaos: Option<ChaosReport>,
    /// Failures whose answer lacked the documented JSON error body (also counted in
    /// `errors`).
    pub failures_without_error_body: u64,
    /// 2xx answers delivered to clients, each checked against its request's known answer.
    pub answers_delivered: u64,
    /// Of those, answers that were wrong: garbage that reached a client.
    pub garbage_answers_delivered: u64,
    /// `liars`: the groups' figures (flattened: `honest_success_ratio`, `liar_groups`, …).
    #[serde(flatten)]
    pub liars: Option<LiarsReport>,
    /// `gateway-restart`: whether the gateway reloaded a saved view at restart.
    pub view_file: Option<bool>,
    /// Largest resident memory of the whole process seen during the run, MiB.
    pub peak_rss_mib: f64,
    /// `soak`: resource series and their trends.
    pub soak: Option<SoakReport>,
    /// Traffic share vs capacity share per GPU profile.
    pub traffic_by_profile: Vec<ProfileShare>,
    /// `(seconds since fleet start, workers listed)`.
    pub discovered_over_time: Vec<(f64, usize)>,
    /// Per-second throughput and latency.
    pub timeline: Vec<Second>,
    /// The machine.
    pub machine: Machine,
}

impl Report {
    /// The markdown summary.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# gpumesh loadtest: `{}`\n", self.scenario);
        self.write_figures(&mut s);
        self.write_errors(&mut s);
        self.write_soak(&mut s);
        self.write_liars(&mut s);
        self.write_traffic_by_profile(&mut s);
        s
    }

    /// `liars`: one row per group, and the checks' cost.
    fn write_liars(&self, s: &mut String) {
        let Some(l) = &self.liars else {
            return;
        };
        let _ = writeln!(
            s,
            "\n## Liars\n\nclient requests answered 2xx: {:.5}; honest workers ejected or \
             distrusted: {}; canaries and cross-checks: {:.4} of the fleet's requests from the \
             join ({:.4} over the whole run)\n",
            l.honest_success_ratio,
            l.honest_workers_ejected,
            l.canary_share_of_capacity,
            l.canary_share_whole_run
        );
        let _ = writeln!(
            s,
            "| group | workers | traffic share | true capacity share | share after 30 s | \
             share after 60 s |\n|---|---|---|---|---|---|"
        );
        for (name, g) in &l.liar_groups {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.5} | {:.5} | {:.5} | {:.5} |",
                g.workers,
                g.traffic_share,
                g.true_capacity_share,
                g.share_after_30s,
                g.share_after_60s
            );
        }
    }

    /// The headline table: one row per figure, with the restart and chaos rows only for the
    /// scenarios that measure them.
    fn write_figures(&self, s: &mut String) {
        let l = |k: &str| self.latency_ms.get(k).copied().unwrap_or(0.0);
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let mut row = |k: &str, v: String| {
            let _ = writeln!(s, "| {k} | {v} |");
        };
        row(
            "workers (discovered)",
            format!("{} ({})", self.workers, self.workers_discovered),
        );
        row("discovery time", format!("{:.1} s", self.discovery_s));
        row(
            "users, duration",
            format!("{}, {:.0} s", self.users, self.duration_s),
        );
        row(
            "requests (failed)",
            format!("{} ({})", self.requests, self.failed),
        );
        row("success ratio", format!("{:.5}", self.success_ratio));
        row(
            "latency p50 / p95 / p99 / p99.9 / max",
            format!(
                "{:.1} / {:.1} / {:.1} / {:.1} / {:.1} ms",
                l("p50"),
                l("p95"),
                l("p99"),
                l("p999"),
                l("max")
            ),
        );
        row(
            "central calls per worker-day",
            format!("{:.2}", self.central_calls_per_worker_day),
        );
        row(
            "bootstrap calls per agent start (starts)",
            format!(
                "{:.2} ({})",
                self.bootstrap_calls_per_agent_start, self.agent_starts
            ),
        );
        row(
            "DHT messages/s at the gateway",
            format!("{:.1}", self.dht_messages_per_s),
        );
        for (k, v) in self.restart_and_chaos_rows() {
            row(k, v);
        }
        row(
            "answers delivered (garbage)",
            format!(
                "{} ({})",
                self.answers_delivered, self.garbage_answers_delivered
            ),
        );
        row(
            "failures without the JSON error body",
            self.failures_without_error_body.to_string(),
        );
        row(
            "peak RSS (whole process)",
            format!("{:.0} MiB", self.peak_rss_mib),
        );

        row(
            "machine",
            format!(
                "{} cores, load {}",
                self.machine.cores, self.machine.loadavg
            ),
        );
    }

    /// Rows of the headline table that only `gateway-restart` and `chaos` runs have, in
    /// table order.
    fn restart_and_chaos_rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = Vec::new();
        if let Some(v) = self.view_recovery_s {
            let how = match self.view_file {
                Some(true) => " (saved view reloaded)",
                Some(false) => " (no saved view)",
                None => "",
            };
            rows.push(("view recovery after restart", format!("{v:.2} s{how}")));
        }
        if let Some(c) = &self.chaos {
            let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3} s"));
            rows.push((
                "killed workers: traffic after first failure, p50 / max",
                format!(
                    "{} / {} ({} of {} killed saw a failure)",
                    f(c.traffic_stop_p50_s),
                    f(c.traffic_stop_max_s),
                    c.killed_with_failures,
                    c.killed
                ),
            ));
            rows.push((
                "killed workers out of the online view",
                f(c.out_of_online_view_s),
            ));
        }
        rows
    }

    /// The failures-by-error-code table, when there were failures.
    fn write_errors(&self, s: &mut String) {
        if !self.errors.is_empty() {
            let _ = writeln!(s, "\n## Errors\n\n| code | count |\n|---|---|");
            for (k, v) in &self.errors {
                let _ = writeln!(s, "| `{k}` | {v} |");
            }
        }
    }

    /// The soak section: each resource series with its trend, when the run was a soak.
    fn write_soak(&self, s: &mut String) {
        if let Some(soak) = &self.soak {
            let _ = writeln!(
                s,
                "\n## Soak: {} workers churned in {} rounds, sampled every {:.0} s\n\n| series | first | last | max | slope per hour | slope per hour after {:.0} s |\n|---|---|---|---|---|---|",
                soak.churned,
                soak.rounds,
                soak.sample_every_s,
                crate::soak::WARM_UP_S
            );
            for t in &soak.trends {
                let _ = writeln!(
                    s,
                    "| {} | {:.1} | {:.1} | {:.1} | {:+.2} | {:+.2} |",
                    t.series,
                    t.first,
                    t.last,
                    t.max,
                    t.slope_per_hour,
                    t.slope_after_warm_up_per_hour
                );
            }
        }
    }

    /// The table comparing each GPU profile's traffic share with its capacity share.
    fn write_traffic_by_profile(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "\n## Traffic vs capacity by GPU\n\n| profile | workers | capacity share | traffic share |\n|---|---|---|---|"
        );
        for p in &self.traffic_by_profile {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} |",
                p.profile, p.workers, p.capacity_share, p.traffic_share
            );
        }
    }

    /// Writes `path` (JSON), `path` with `.md`, and `path` with `.svg`; returns the paths.
    ///
    /// # Errors
    /// A file that cannot be written, or a chart that cannot be drawn.
    pub fn write(&self, path: &Path) -> Result<Vec<PathBuf>, LoadtestError> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json)?;
        let md = path.with_extension("md");
        std::fs::write(&md, self.markdown())?;
        let svg = path.with_extension("svg");
        self.chart(&svg)?;
        Ok(vec![path.to_owned(), md, svg])
    }

    /// Draws throughput (req/s) and p50/p99 latency (ms) per second into an SVG file.
    ///
    /// # Errors
    /// [`LoadtestError::Io`] when plotters fails.
    pub fn chart(&self, path: &Path) -> Result<(), LoadtestError> {
        let err =
            |e: &dyn std::fmt::Display| LoadtestError::Io(std::io::Error::other(e.to_string()));
        let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (top, bottom) = root.split_vertically(300);
        let t_max = self.timeline.len().max(2) as f64;
        let rps_max = self
            .timeline
            .iter()
            .map(|s| (s.ok + s.failed) as f64)
            .fold(1.0, f64::max);
        let mut c = ChartBuilder::on(&top)
            .caption(
                format!("{}: requests per second", self.scenario),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..t_max, 0f64..rps_max * 1.1)
            .map_err(|e| err(&e))?;
        c.configure_mesh().x_desc("s").draw().map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t as f64, s.ok as f64)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("ok");
        c.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t as f64, s.failed as f64)),
            &RED,
        ))
        .map_err(|e| err(&e))?
        .label("failed");
        let lat_max = self.timeline.iter().map(|s| s.p99_ms).fold(1.0, f64::max);
        let mut c = ChartBuilder::on(&bottom)
            .caption(
                "latency p50 (green) and p99 (orange), ms",
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..t_max, 0f64..lat_max * 1.1)
            .map_err(|e| err(&e))?;
        c.configure_mesh().x_desc("s").draw().map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t as f64, s.p50_ms)),
            &GREEN,
        ))
        .map_err(|e| err(&e))?;
        c.draw_series(LineSeries::new(
            self.timeline.iter().map(|s| (s.t as f64, s.p99_ms)),
            &RGBColor(230, 120, 0),
        ))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
        Ok(())
    }
}
