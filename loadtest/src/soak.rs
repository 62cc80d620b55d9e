//! The `soak` scenario's measurements: resource series sampled over a long run with churn, and
//! their trends.
//!
//! A leak shows as a series that keeps growing while the fleet stays the same size, so the
//! report gives each series' least-squares slope (per hour) and its maximum. Process figures
//! cover the whole process (gateway + fleet + goose); DHT figures are the gateway's node.

use serde::Serialize;

/// One sample of the resource series.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// Seconds since the traffic started.
    pub t_s: f64,
    /// Resident memory of the process, MiB (`VmRSS`).
    pub rss_mib: f64,
    /// The anonymous part of it, MiB (`RssAnon`: heap, thread stacks, any allocator's pages;
    /// the rest is the binary and other mapped files). Its distance from
    /// `heap_resident_mib` is memory held outside jemalloc.
    pub rss_anon_mib: f64,
    /// Bytes the program holds from the allocator, MiB (jemalloc's `stats.allocated`; NaN,
    /// `null` in JSON, when the binary was built without feature `jemalloc`).
    pub heap_allocated_mib: f64,
    /// The allocator's resident pages, MiB (jemalloc's `stats.resident`; NaN without it). Its
    /// distance from `heap_allocated_mib` is memory freed but not yet handed back.
    pub heap_resident_mib: f64,
    /// Open file descriptors of the process (`/proc/self/fd`).
    pub open_fds: f64,
    /// Threads of the process (`Threads`: runtime workers and the blocking pool, whose idle
    /// threads exit after 10 s and whose stacks glibc caches).
    pub threads: f64,
    /// Workers in the gateway's view (NaN, `null` in JSON, when it could not be read).
    pub view_workers: f64,
    /// Records in the gateway node's DHT store.
    pub dht_records: f64,
    /// Provider records in the gateway node's DHT store.
    pub dht_providers: f64,
    /// Peers in the gateway node's routing table.
    pub routing_table: f64,
    /// Open connections of the gateway node.
    pub dht_connections: f64,
}

/// One series' trend.
#[derive(Debug, Clone, Serialize)]
pub struct Trend {
    /// Series name (a [`Sample`] field).
    pub series: &'static str,
    /// First value.
    pub first: f64,
    /// Last value.
    pub last: f64,
    /// Largest value.
    pub max: f64,
    /// Least-squares slope, units per hour.
    pub slope_per_hour: f64,
    /// Least-squares slope over the samples after the warm-up ([`WARM_UP_S`]), units per hour:
    /// the figure a leak shows in (the fleet, caches and pools fill during the first minutes).
    /// The whole-run slope where no sample is that late.
    pub slope_after_warm_up_per_hour: f64,
}

/// Seconds of a soak counted as warm-up by [`Trend::slope_after_warm_up_per_hour`].
pub const WARM_UP_S: f64 = 300.0;

/// What a soak run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Workers killed and replaced in all.
    pub churned: usize,
    /// Churn rounds.
    pub rounds: usize,
    /// Seconds between samples.
    pub sample_every_s: f64,
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Each series' trend.
    pub trends: Vec<Trend>,
}

type Field = (&'static str, fn(&Sample) -> f64);

const FIELDS: [Field; 11] = [
    ("rss_mib", |s| s.rss_mib),
    ("rss_anon_mib", |s| s.rss_anon_mib),
    ("heap_allocated_mib", |s| s.heap_allocated_mib),
    ("heap_resident_mib", |s| s.heap_resident_mib),
    ("open_fds", |s| s.open_fds),
    ("threads", |s| s.threads),
    ("view_workers", |s| s.view_workers),
    ("dht_records", |s| s.dht_records),
    ("dht_providers", |s| s.dht_providers),
    ("routing_table", |s| s.routing_table),
    ("dht_connections", |s| s.dht_connections),
];

/// Least-squares slope of `points` (`x` in seconds), per hour; 0 for fewer than two points
/// or no spread in `x`.
pub fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    sxy / sxx * 3600.0
}

/// Every series' trend over `samples`; a series with no reading at all (the allocator's
/// figures in a build without jemalloc) is left out.
pub fn trends(samples: &[Sample]) -> Vec<Trend> {
    FIELDS
        .iter()
        .filter(|(_, get)| samples.iter().any(|s| get(s).is_finite()))
        .map(|(name, get)| {
            // A reading that failed (NaN: the gateway did not answer in time) is left out
            // rather than counted as zero.
            let points: Vec<(f64, f64)> = samples
                .iter()
                .map(|s| (s.t_s, get(s)))
                .filter(|p| p.1.is_finite())
                .collect();
            let late: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|p| p.0 >= WARM_UP_S)
                .collect();
            let slope_after_warm_up_per_hour = if late.len() >= 2 {
                slope_per_hour(&late)
            } else {
                slope_per_hour(&points)
            };
            Trend {
                series: name,
                first: points.first().map_or(0.0, |p| p.1),
                last: points.last().map_or(0.0, |p| p.1),
                max: points.iter().map(|p| p.1).fold(0.0, f64::max),
                slope_per_hour: slope_per_hour(&points),
                slope_after_warm_up_per_hour,
            }
        })
        .collect()
}

/// Figures from one read of `/proc/self/status` (each 0 where `/proc` is unavailable).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcStatus {
    /// Resident memory, MiB (`VmRSS`).
    pub rss_mib: f64,
    /// Anonymous resident memory, MiB (`RssAnon`).
    pub rss_anon_mib: f64,
    /// Threads (`Threads`).
    pub threads: f64,
}

/// Reads this process's [`ProcStatus`].
pub fn proc_status() -> ProcStatus {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    ProcStatus {
        rss_mib: field("VmRSS:") / 1024.0,
        rss_anon_mib: field("RssAnon:") / 1024.0,
        threads: field("Threads:"),
    }
}

/// Resident memory of this process, MiB (0 where `/proc` is unavailable).
pub fn rss_mib() -> f64 {
    proc_status().rss_mib
}

/// The allocator's figures for this process, MiB: (allocated to the program, resident). NaN
/// for both unless the binary runs jemalloc (feature `jemalloc`), whose statistics say how
/// much of the resident memory is live data and how much is freed memory kept by the
/// allocator; glibc's equivalent (`mallinfo2`) needs `unsafe`, which this workspace forbids.
/// A build with both `jemalloc` and `mimalloc` links jemalloc but allocates with mimalloc:
/// jemalloc then holds nothing, and its zeros are not reported as the process's heap.
pub fn allocator_mib() -> (f64, f64) {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        const MIB: f64 = 1024.0 * 1024.0;
        // The statistics are cached until the epoch advances.
        if epoch::advance().is_ok()
            && let (Ok(a), Ok(r)) = (stats::allocated::read(), stats::resident::read())
            && a > 0
        {
            return (a as f64 / MIB, r as f64 / MIB);
        }
    }
    (f64::NAN, f64::NAN)
}

/// Open file descriptors of this process (0 where `/proc` is unavailable).
pub fn open_fds() -> f64 {
    std::fs::read_dir("/proc/self/fd").map_or(0.0, |d| d.count() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_is_per_hour_and_degenerate_inputs_give_zero() {
        // +1 per 10 s = +360 per hour.
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|i| (f64::from(i) * 10.0, f64::from(i)))
            .collect();
        assert!((slope_per_hour(&pts) - 360.0).abs() < 1e-9);
        assert_eq!(slope_per_hour(&pts[..1]), 0.0);
        assert_eq!(slope_per_hour(&[(5.0, 1.0), (5.0, 9.0)]), 0.0);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 7.0)).collect();
        assert_eq!(slope_per_hour(&flat), 0.0);
    }

    #[test]
    fn trends_cover_every_series_with_max() {
        let samples = [
            Sample {
                t_s: 0.0,
                rss_mib: 100.0,
                ..Sample::default()
            },
            Sample {
                t_s: 3600.0,
                rss_mib: 150.0,
                ..Sample::default()
            },
        ];
        let t = trends(&samples);
        assert_eq!(t.len(), FIELDS.len());
        // Without any allocator reading, those series are left out.
        let no_allocator = samples.map(|s| Sample {
            heap_allocated_mib: f64::NAN,
            heap_resident_mib: f64::NAN,
            ..s
        });
        assert_eq!(trends(&no_allocator).len(), FIELDS.len() - 2);
        let rss = t.iter().find(|t| t.series == "rss_mib").expect("rss");
        assert_eq!(rss.max, 150.0);
        assert!((rss.slope_per_hour - 50.0).abs() < 1e-9);
        // Both samples lie past the warm-up, so the late slope is the same.
        assert!((rss.slope_after_warm_up_per_hour - 50.0).abs() < 1e-9);
        // Growth only during the warm-up: the whole-run slope shows it, the late slope is 0.
        let settled =
            [(0.0, 0.0), (WARM_UP_S, 100.0), (WARM_UP_S + 3600.0, 100.0)].map(|(t_s, rss_mib)| {
                Sample {
                    t_s,
                    rss_mib,
                    ..Sample::default()
                }
            });
        let rss = trends(&settled).swap_remove(0);
        assert!(rss.slope_per_hour > 0.0);
        assert_eq!(rss.slope_after_warm_up_per_hour, 0.0);
        // A failed reading (NaN) is skipped, not taken as a drop to zero.
        let gap = [
            Sample {
                t_s: 0.0,
                view_workers: 300.0,
                ..Sample::default()
            },
            Sample {
                t_s: 10.0,
                view_workers: f64::NAN,
                ..Sample::default()
            },
            Sample {
                t_s: 20.0,
                view_workers: 300.0,
                ..Sample::default()
            },
        ];
        let view = trends(&gap)
            .into_iter()
            .find(|t| t.series == "view_workers")
            .expect("view");
        assert_eq!(
            (view.last, view.max, view.slope_per_hour),
            (300.0, 300.0, 0.0)
        );
        assert!(rss_mib() > 0.0, "this process has resident memory");
        let status = proc_status();
        assert!(status.rss_anon_mib > 0.0 && status.rss_anon_mib <= status.rss_mib);
        assert!(status.threads >= 1.0, "this process has a thread");
        assert!(open_fds() > 0.0, "this process has open descriptors");
    }
}
