//! Turning runs into figures: percentiles in mean service times, shares, scenario metrics;
//! medians over seeds; markdown and JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::engine::{RequestRecord, RunOutput, RunSpec};
use super::scenario::{BASE_SERVICE_S, Lie, Scenario};
use crate::policy::PolicyKind;

/// Share of the earliest requests left out of latency figures (the empty-system transient).
const WARMUP: f64 = 0.05;

/// One policy's figures (latencies of successful responses, in mean service times at speed
/// 1.0, leaving out the first 5% of requests).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyResult {
    /// Policy name.
    pub policy: String,
    /// Median latency.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Mean.
    pub mean: f64,
    /// Successful requests per simulated second.
    pub throughput: f64,
    /// Failed or rejected requests.
    pub errors: u64,
    /// Successes ÷ requests.
    pub success_ratio: f64,
    /// Publication interval Δ of this row, seconds (0: continuous).
    pub publish_interval_s: f64,
    /// Per GPU class: traffic share ÷ capacity share (1.0 = proportionate).
    pub traffic_vs_capacity: BTreeMap<String, f64>,
    /// `fast-fail`: the failing worker's largest share of arrivals in any 1 s window that
    /// starts 1 s or more after the failure began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_share_after_1s: Option<f64>,
    /// `fast-fail`: its share in the first second of the failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_share_first_1s: Option<f64>,
    /// `join`: seconds from joining to the first request, worst joiner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_first_request_s: Option<f64>,
    /// `join`: most requests at a joiner (serving + queued) in its first 5 s, ÷ its fair
    /// share (the fleet's mean requests per worker over the same moments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_peak_vs_fair: Option<f64>,
    /// `liars`: per group (`honest` and each [`Lie`]), its share of the requests and its
    /// share of the fleet's true capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<BTreeMap<String, GroupShare>>,
    /// `liars`: (p50, p99) of the requests honest workers answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub honest_p50_p99: Option<(f64, f64)>,
}

/// One group's shares in the `liars` scenario.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct GroupShare {
    /// Share of the requests (after warm-up) sent to the group's workers.
    pub traffic: f64,
    /// Share of the fleet's true capacity (0 for workers whose answers are worthless).
    pub capacity: f64,
}

/// One scenario's results: the `gpumesh sim --json` object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Offered load ρ.
    pub load: f64,
    /// Fleet size.
    pub workers: usize,
    /// First seed.
    pub seed: u64,
    /// Seeds run (figures are medians over them).
    pub seeds: u64,
    /// Requests per run.
    pub requests: usize,
    /// Service-time distribution.
    pub service: String,
    /// One row per policy (and publication interval).
    pub results: Vec<PolicyResult>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Per GPU class: its share of `recs` (the requests after warm-up) divided by its share of
/// the fleet's capacity (Σ speed × slots), so 1.0 means traffic in proportion to capacity.
fn traffic_vs_capacity(spec: &RunSpec, recs: &[RequestRecord]) -> BTreeMap<String, f64> {
    let mut traffic: BTreeMap<&str, f64> = BTreeMap::new();
    let mut capacity: BTreeMap<&str, f64> = BTreeMap::new();
    let honest = |w: usize| spec.lies.get(w).copied().flatten().is_none();
    for (w, &(model, speed, slots)) in spec.fleet.iter().enumerate() {
        if !honest(w) {
            continue;
        }
        *capacity.entry(model).or_default() += speed * f64::from(slots);
        traffic.entry(model).or_default();
    }
    let mut sent = 0.0;
    for r in recs {
        if let Some(&(model, _, _)) = spec.fleet.get(r.worker as usize)
            && honest(r.worker as usize)
        {
            *traffic.entry(model).or_default() += 1.0;
            sent += 1.0;
        }
    }
    let cap_total: f64 = capacity.values().sum();
    capacity
        .iter()
        .map(|(&m, &c)| {
            let t = traffic.get(m).copied().unwrap_or(0.0) / f64::max(sent, 1.0);
            (m.to_owned(), t / (c / cap_total))
        })
        .collect()
}

/// Figures of one run.
pub fn summarise(
    scenario: Scenario,
    spec: &RunSpec,
    kind: PolicyKind,
    publish_interval: f64,
    out: &RunOutput,
) -> PolicyResult {
    let recs = &out.records;
    let skip = (recs.len() as f64 * WARMUP) as usize;
    // Successful responses only: a worker that fails in 1 ms must not make a policy that
    // sinkholes into it look fast. Failures show in `errors` and `success_ratio`.
    let mut lat: Vec<f64> = recs[skip..]
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.latency / BASE_SERVICE_S)
        .filter(|l| l.is_finite())
        .collect();
    lat.sort_unstable_by(f64::total_cmp);
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    let ok = recs.iter().filter(|r| r.ok).count() as u64;
    let last_response = recs
        .iter()
        .map(|r| r.arrival + r.latency)
        .filter(|t| t.is_finite())
        .fold(0.0, f64::max);
    let total = recs.len() as u64;

    let traffic_vs_capacity = traffic_vs_capacity(spec, &recs[skip..]);

    let mut result = PolicyResult {
        policy: kind.name().to_owned(),
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        mean,
        throughput: ok as f64 / last_response.max(1e-9),
        errors: total - ok,
        success_ratio: ok as f64 / total.max(1) as f64,
        publish_interval_s: publish_interval,
        traffic_vs_capacity,
        failing_share_after_1s: None,
        failing_share_first_1s: None,
        join_first_request_s: None,
        join_peak_vs_fair: None,
        groups: None,
        honest_p50_p99: None,
    };
    if scenario == Scenario::Liars {
        result.groups = Some(liar_groups(spec, &recs[skip..]));
        result.honest_p50_p99 = Some(honest_percentiles(spec, &recs[skip..]));
    }
    if let (Scenario::FastFail, Some((w, from))) = (scenario, spec.fail) {
        let (first, after) = failing_shares(recs, w as u32, from);
        result.failing_share_first_1s = Some(first);
        result.failing_share_after_1s = Some(after);
    }
    if scenario == Scenario::Join && !spec.joiners.is_empty() {
        let mut worst_first: f64 = 0.0;
        for w in spec.joiners.clone() {
            let first = recs
                .iter()
                .find(|r| r.worker == w as u32)
                .map_or(f64::INFINITY, |r| r.arrival - spec.join_at);
            worst_first = worst_first.max(first);
        }
        result.join_first_request_s = Some(worst_first);
        let peak = out.joiner_peak.iter().copied().max().unwrap_or(0);
        result.join_peak_vs_fair = Some(f64::from(peak) / out.fair_in_system.max(1e-9));
    }
    result
}

/// `fast-fail`: worker `w`'s share of arrivals in the first second from `from`, and its
/// largest share in any 1 s window (steps of 0.25 s) starting 1 s or more later.
fn failing_shares(recs: &[RequestRecord], w: u32, from: f64) -> (f64, f64) {
    let share = |a: f64, b: f64| {
        let in_window = recs.iter().filter(|r| r.arrival >= a && r.arrival < b);
        let (n, to_w) = in_window.fold((0u64, 0u64), |(n, k), r| {
            (n + 1, k + u64::from(r.worker == w))
        });
        to_w as f64 / n.max(1) as f64
    };
    let last = recs.last().map_or(from, |r| r.arrival);
    let mut worst: f64 = 0.0;
    let mut t = from + 1.0;
    while t + 1.0 <= last {
        worst = worst.max(share(t, t + 1.0));
        t += 0.25;
    }
    (share(from, from + 1.0), worst)
}

/// One policy's markdown table row.
fn write_row(s: &mut String, r: &PolicyResult, stale: bool) {
    let _ = write!(s, "| {} |", r.policy);
    if stale {
        let _ = write!(s, " {} |", r.publish_interval_s);
    }
    let shares: Vec<String> = r
        .traffic_vs_capacity
        .iter()
        .map(|(k, v)| format!("{k} {v:.2}"))
        .collect();
    let _ = write!(
        s,
        " {} | {} | {} | {} | {} | {} | {:.4} | {} |",
        num(r.p50),
        num(r.p99),
        num(r.p999),
        num(r.mean),
        num(r.throughput),
        r.errors,
        r.success_ratio,
        shares.join(", ")
    );
    if let (Some(a), Some(b)) = (r.failing_share_first_1s, r.failing_share_after_1s) {
        let _ = write!(s, " {a:.4} / {b:.4} |");
    }
    if let (Some(a), Some(b)) = (r.join_first_request_s, r.join_peak_vs_fair) {
        let _ = write!(s, " {a:.3} / {b:.2} |");
    }
    if let (Some((p50, p99)), Some(groups)) = (r.honest_p50_p99, &r.groups) {
        let shares: Vec<String> = groups
            .iter()
            .map(|(k, g)| format!("{k} {:.4} / {:.4}", g.traffic, g.capacity))
            .collect();
        let _ = write!(s, " {} / {} | {} |", num(p50), num(p99), shares.join(", "));
    }
    let _ = writeln!(s);
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_unstable_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Field-wise median over seeds (the first result's names and keys).
pub fn median_of(runs: Vec<PolicyResult>) -> PolicyResult {
    let Some(first) = runs.first().cloned() else {
        unreachable!("at least one seed runs")
    };
    if runs.len() == 1 {
        return first;
    }
    let m = |f: &dyn Fn(&PolicyResult) -> f64| median(runs.iter().map(f).collect());
    let mo = |f: &dyn Fn(&PolicyResult) -> Option<f64>| {
        f(&first).map(|_| median(runs.iter().filter_map(f).collect()))
    };
    PolicyResult {
        policy: first.policy.clone(),
        p50: m(&|r| r.p50),
        p99: m(&|r| r.p99),
        p999: m(&|r| r.p999),
        mean: m(&|r| r.mean),
        throughput: m(&|r| r.throughput),
        errors: m(&|r| r.errors as f64).round() as u64,
        success_ratio: m(&|r| r.success_ratio),
        publish_interval_s: first.publish_interval_s,
        traffic_vs_capacity: first
            .traffic_vs_capacity
            .keys()
            .map(|k| {
                let v = median(
                    runs.iter()
                        .filter_map(|r| r.traffic_vs_capacity.get(k).copied())
                        .collect(),
                );
                (k.clone(), v)
            })
            .collect(),
        failing_share_after_1s: mo(&|r| r.failing_share_after_1s),
        failing_share_first_1s: mo(&|r| r.failing_share_first_1s),
        join_first_request_s: mo(&|r| r.join_first_request_s),
        join_peak_vs_fair: mo(&|r| r.join_peak_vs_fair),
        groups: first.groups.as_ref().map(|g| {
            let share = |k: &String, f: fn(&GroupShare) -> f64| {
                median(
                    runs.iter()
                        .filter_map(|r| r.groups.as_ref()?.get(k).map(f))
                        .collect(),
                )
            };
            g.keys()
                .map(|k| {
                    let traffic = share(k, |g| g.traffic);
                    let capacity = share(k, |g| g.capacity);
                    (k.clone(), GroupShare { traffic, capacity })
                })
                .collect()
        }),
        honest_p50_p99: first.honest_p50_p99.map(|_| {
            let p = |f: fn((f64, f64)) -> f64| {
                median(
                    runs.iter()
                        .filter_map(|r| r.honest_p50_p99.map(f))
                        .collect(),
                )
            };
            (p(|x| x.0), p(|x| x.1))
        }),
    }
}

/// The group a worker belongs to in reports.
fn group_of(spec: &RunSpec, w: usize) -> &'static str {
    spec.lies
        .get(w)
        .copied()
        .flatten()
        .map_or("honest", Lie::label)
}

/// Per group: share of `recs` sent to it, and share of the true capacity.
fn liar_groups(spec: &RunSpec, recs: &[RequestRecord]) -> BTreeMap<String, GroupShare> {
    let mut groups: BTreeMap<&str, GroupShare> = BTreeMap::new();
    let mut cap_total = 0.0;
    for (w, &(_, speed, slots)) in spec.fleet.iter().enumerate() {
        let serves = spec.lies.get(w).copied().flatten().is_none_or(Lie::serves);
        let c = if serves {
            speed * f64::from(slots)
        } else {
            0.0
        };
        groups.entry(group_of(spec, w)).or_insert(GroupShare {
            traffic: 0.0,
            capacity: 0.0,
        });
        if let Some(g) = groups.get_mut(group_of(spec, w)) {
            g.capacity += c;
        }
        cap_total += c;
    }
    let mut sent = 0.0;
    for r in recs
        .iter()
        .filter(|r| (r.worker as usize) < spec.fleet.len())
    {
        if let Some(g) = groups.get_mut(group_of(spec, r.worker as usize)) {
            g.traffic += 1.0;
        }
        sent += 1.0;
    }
    groups
        .into_iter()
        .map(|(k, g)| {
            let share = GroupShare {
                traffic: g.traffic / f64::max(sent, 1.0),
                capacity: g.capacity / f64::max(cap_total, 1e-12),
            };
            (k.to_owned(), share)
        })
        .collect()
}

/// (p50, p99) of successful requests answered by honest workers, in mean service times.
fn honest_percentiles(spec: &RunSpec, recs: &[RequestRecord]) -> (f64, f64) {
    let mut lat: Vec<f64> = recs
        .iter()
        .filter(|r| r.ok && group_of(spec, r.worker as usize) == "honest")
        .map(|r| r.latency / BASE_SERVICE_S)
        .filter(|l| l.is_finite())
        .collect();
    lat.sort_unstable_by(f64::total_cmp);
    (percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "—".to_owned()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

impl ScenarioReport {
    /// A markdown section: heading, settings line and one table.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "### {}\n", self.scenario);
        let _ = writeln!(
            s,
            "ρ = {}, {} workers, {} requests, {} service times, seed {} ({} seed{}, medians). \
             Latencies in mean service times (H100).\n",
            self.load,
            self.workers,
            self.requests,
            self.service,
            self.seed,
            self.seeds,
            if self.seeds == 1 { "" } else { "s" }
        );
        let stale = self.scenario == Scenario::Stale.name();
        let mut extra = Vec::new();
        if self
            .results
            .iter()
            .any(|r| r.failing_share_after_1s.is_some())
        {
            extra.push("failing share 1st s / max after 1 s");
        }
        if self
            .results
            .iter()
            .any(|r| r.join_first_request_s.is_some())
        {
            extra.push("joiner first request (s) / peak ÷ fair share");
        }
        if self.results.iter().any(|r| r.groups.is_some()) {
            extra.push("honest p50 / p99");
            extra.push("traffic share / true capacity share per group");
        }
        let _ = write!(s, "| policy |");
        if stale {
            let _ = write!(s, " Δ (s) |");
        }
        let _ = write!(
            s,
            " p50 | p99 | p99.9 | mean | req/s | errors | success | traffic ÷ capacity |"
        );
        for e in &extra {
            let _ = write!(s, " {e} |");
        }
        let _ = writeln!(s);
        let cols = 9 + usize::from(stale) + extra.len();
        let _ = writeln!(s, "|{}", "---|".repeat(cols));
        for r in &self.results {
            write_row(&mut s, r, stale);
        }
        s
    }

    /// The machine-readable object on one line (a contract other tools read), fields in
    /// declaration order.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}
