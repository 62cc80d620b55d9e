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
    /// Open file descriptors of the process (`/proc/self/fd`).
    pub open_fds: f64,
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
}

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

const FIELDS: [Field; 7] = [
    ("rss_mib", |s| s.rss_mib),
    ("open_fds", |s| s.open_fds),
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

/// Every series' trend over `samples`.
pub fn trends(samples: &[Sample]) -> Vec<Trend> {
    FIELDS
        .iter()
        .map(|(name, get)| {
            // A reading that failed (NaN: the gateway did not answer in time) is left out
            // rather than counted as zero.
            let points: Vec<(f64, f64)> = samples
                .iter()
                .map(|s| (s.t_s, get(s)))
                .filter(|p| p.1.is_finite())
                .collect();
            Trend {
                series: name,
                first: points.first().map_or(0.0, |p| p.1),
                last: points.last().map_or(0.0, |p| p.1),
                max: points.iter().map(|p| p.1).fold(0.0, f64::max),
                slope_per_hour: slope_per_hour(&points),
            }
        })
        .collect()
}

/// Resident memory of this process, MiB (0 where `/proc` is unavailable).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
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
        let rss = t.iter().find(|t| t.series == "rss_mib").expect("rss");
        assert_eq!(rss.max, 150.0);
        assert!((rss.slope_per_hour - 50.0).abs() < 1e-9);
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
        assert!(open_fds() > 0.0, "this process has open descriptors");
    }
}
