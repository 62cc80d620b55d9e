//! The defaults an operator's agent starts from, beyond the plain [`Default`] of
//! [`AgentConfig`]: where state lives, and figures derived from other settings.

use std::path::PathBuf;
use std::time::Duration;

use super::config::AgentConfig;

/// Where the worker id and seed cache live when no state directory is given:
/// `$XDG_STATE_HOME/gpumesh`, else `$HOME/.local/state/gpumesh` (the XDG base-directory
/// default), else `.gpumesh` in the working directory. State, not cache: losing the node key
/// makes the worker a stranger to every gateway.
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .map_or_else(|| PathBuf::from(".gpumesh"), |d| d.join("gpumesh"))
}

/// How old a service's load report may be before the service counts as not reporting: five
/// load periods, and never under 10 s, so that one or two lost reports (or a service that
/// reports on change only and is idle) do not flip the worker to "down".
pub fn report_stale_after(load_every: Duration) -> Duration {
    load_every.max(Duration::from_secs(2)) * 5
}

impl AgentConfig {
    /// The configuration an operator's agent starts from: [`AgentConfig::default`] with the
    /// state directory `state_dir` (or [`default_state_dir`]), the load period `load_every`
    /// and the load-report staleness derived from it ([`report_stale_after`]). Callers then
    /// set what their flags say.
    pub fn with_defaults(state_dir: Option<PathBuf>, load_every: Duration) -> Self {
        Self {
            state_dir: state_dir.unwrap_or_else(default_state_dir),
            load_every,
            report_stale_after: report_stale_after(load_every),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_five_load_periods_and_at_least_ten_seconds() {
        assert_eq!(
            report_stale_after(Duration::from_millis(500)),
            Duration::from_secs(10)
        );
        assert_eq!(
            report_stale_after(Duration::from_secs(4)),
            Duration::from_secs(20)
        );
        let c = AgentConfig::with_defaults(Some("/tmp/x".into()), Duration::from_secs(3));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.report_stale_after, Duration::from_secs(15));
        assert_eq!(c.load_every, Duration::from_secs(3));
        assert_eq!(c.dht_join_timeout, Duration::from_secs(10));
    }
}
