//! The `chaos` scenario's measurement: how long killed workers kept receiving traffic.
//!
//! The goal: killed workers stop receiving traffic within 1 s of their first failure. For each
//! killed worker the gateway's attempt log ([`AttemptLog`], kept after the worker leaves the
//! view) gives the first failed request and the last request routed to it; the difference is
//! that worker's traffic-stop time. Killed workers that no request reached after the kill have no
//! failure and are counted apart (nothing was routed to them, so nothing had to stop).

use gpumesh_gateway::AttemptLog;
use serde::Serialize;

/// What the chaos kill measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    /// Workers killed.
    pub killed: usize,
    /// Killed workers with at least one failed request after the kill.
    pub killed_with_failures: usize,
    /// Killed workers that had failed before the kill (should be 0; a check on the data).
    pub failed_before_kill: usize,
    /// Failed requests to killed workers (each retried elsewhere when it never reached them).
    pub failed_attempts: u64,
    /// Per killed worker with failures: last attempt − first failure, seconds (sorted).
    pub traffic_stop_s: Vec<f64>,
    /// Median of `traffic_stop_s`.
    pub traffic_stop_p50_s: Option<f64>,
    /// Largest of `traffic_stop_s` (the figure the goal is about: ≤ 1 s).
    pub traffic_stop_max_s: Option<f64>,
    /// Seconds from the kill until no killed worker was listed `online` (the earlier, weaker
    /// measure: a worker can be listed and yet get no traffic because it is ejected).
    pub out_of_online_view_s: Option<f64>,
}

/// Summarises the attempt logs of the killed workers (`None`: the gateway never sent the worker
/// anything). `killed_at_ms` is when the kill began (ms since the Unix epoch).
pub fn summarize(killed_at_ms: u64, logs: &[Option<AttemptLog>]) -> ChaosReport {
    let mut r = ChaosReport {
        killed: logs.len(),
        ..ChaosReport::default()
    };
    for log in logs.iter().flatten() {
        let Some(first) = log.first_failure_ms else {
            continue;
        };
        if first < killed_at_ms {
            r.failed_before_kill += 1;
            continue;
        }
        r.killed_with_failures += 1;
        r.failed_attempts += log.failures;
        let last = log.last_attempt_ms.unwrap_or(first);
        r.traffic_stop_s
            .push(last.saturating_sub(first) as f64 / 1000.0);
    }
    r.traffic_stop_s.sort_by(f64::total_cmp);
    let n = r.traffic_stop_s.len();
    if n > 0 {
        r.traffic_stop_p50_s = Some(r.traffic_stop_s[n / 2]);
        r.traffic_stop_max_s = Some(r.traffic_stop_s[n - 1]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(last: u64, first: Option<u64>, failures: u64) -> Option<AttemptLog> {
        Some(AttemptLog {
            last_attempt_ms: Some(last),
            first_failure_ms: first,
            failures,
        })
    }

    #[test]
    fn stop_time_is_last_attempt_minus_first_failure() {
        let logs = [
            log(10_400, Some(10_100), 2), // 0.3 s
            log(10_050, Some(10_060), 1), // the failing attempt was the last: 0
            log(12_600, Some(10_100), 5), // 2.5 s
            log(9_000, None, 0),          // nothing routed after the kill
            None,                         // never routed at all
            log(10_500, Some(9_500), 1),  // failed before the kill: flagged, not counted
        ];
        let r = summarize(10_000, &logs);
        assert_eq!(r.killed, 6);
        assert_eq!(r.killed_with_failures, 3);
        assert_eq!(r.failed_before_kill, 1);
        assert_eq!(r.failed_attempts, 8);
        assert_eq!(r.traffic_stop_s, vec![0.0, 0.3, 2.5]);
        assert_eq!(r.traffic_stop_p50_s, Some(0.3));
        assert_eq!(r.traffic_stop_max_s, Some(2.5));
        assert_eq!(summarize(0, &[]).traffic_stop_max_s, None);
    }
}
