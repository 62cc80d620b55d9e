//! Scenarios and the options of a load-test run, checked before anything starts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::LoadtestError;

/// What happens during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Steady traffic to a steady fleet.
    Steady,
    /// 20% of workers killed at random a third of the way in, as many new ones started.
    Chaos,
    /// 10% of workers turn 10× slow during the middle third.
    SlowWorker,
    /// The gateway restarts a third of the way in; time until its view is whole again.
    GatewayRestart,
    /// `DHT_ENABLED=false` everywhere: agents heartbeat to the gateway's registry.
    CoordinatorOnly,
    /// 5 % of the fleet lies about its hardware or its answers (see [`crate::liars`]).
    Liars,
    /// A long run with steady churn (a few % of workers killed and replaced every minute),
    /// sampling memory, file descriptors, view and DHT store sizes for leaks.
    Soak,
}

impl Scenario {
    /// Every scenario, in the order the CLI lists them.
    pub const ALL: [Scenario; 7] = [
        Scenario::Steady,
        Scenario::Chaos,
        Scenario::SlowWorker,
        Scenario::GatewayRestart,
        Scenario::CoordinatorOnly,
        Scenario::Soak,
        Scenario::Liars,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Chaos => "chaos",
            Scenario::SlowWorker => "slow-worker",
            Scenario::GatewayRestart => "gateway-restart",
            Scenario::CoordinatorOnly => "coordinator-only",
            Scenario::Soak => "soak",
            Scenario::Liars => "liars",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = LoadtestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|x| x.name()).collect();
                LoadtestError::Usage(format!(
                    "unknown scenario `{s}`: use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Largest fleet a run starts.
pub const MAX_WORKERS: usize = 5000;
/// Most goose users.
pub const MAX_USERS: usize = 5000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Shortest `liars` run: the liars join, then a minute passes, then 20 s are measured.
pub const LIARS_MIN_DURATION: Duration = Duration::from_secs(110);

/// Options of one run.
#[derive(Debug, Clone)]
pub struct LoadtestConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// Workers in the fleet.
    pub workers: usize,
    /// Goose users.
    pub users: usize,
    /// Traffic time (after every worker is discovered).
    pub duration: Duration,
    /// Pause between one user's requests.
    pub think: Duration,
    /// How long to wait for the fleet to be discovered before giving up.
    pub discovery_limit: Duration,
    /// Whether the gateway saves its view to a file and reloads it when it restarts
    /// (`gateway-restart`); `false` measures a restart that starts blind.
    pub view_file: bool,
    /// `soak`: how often a share of the workers is killed and replaced.
    pub churn_every: Duration,
    /// `soak`: the share of workers replaced each time (at least one).
    pub churn_share: f64,
    /// `soak`: how often memory, descriptors, view and DHT sizes are sampled.
    pub sample_every: Duration,
}

impl LoadtestConfig {
    /// Defaults for `scenario` with `workers` workers.
    pub fn new(scenario: Scenario, workers: usize) -> Self {
        Self {
            scenario,
            workers,
            users: 50,
            duration: Duration::from_secs(30),
            think: Duration::from_millis(100),
            discovery_limit: Duration::from_secs(30) + Duration::from_millis(300) * workers as u32,
            view_file: true,
            churn_every: Duration::from_secs(60),
            churn_share: 0.03,
            sample_every: Duration::from_secs(10),
        }
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`LoadtestError::Usage`] naming the bad option.
    pub fn validate(&self) -> Result<(), LoadtestError> {
        let bad = |m: String| Err(LoadtestError::Usage(m));
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return bad(format!("--workers must be 1 to {MAX_WORKERS}"));
        }
        if self.users == 0 || self.users > MAX_USERS {
            return bad(format!("--users must be 1 to {MAX_USERS}"));
        }
        if self.duration < Duration::from_secs(3) || self.duration > MAX_DURATION {
            return bad("--duration must be 3s to 1h".to_owned());
        }
        if self.scenario == Scenario::Chaos && self.workers < 5 {
            return bad("chaos needs at least 5 workers".to_owned());
        }
        if self.scenario == Scenario::Liars && self.workers < 20 {
            return bad("liars needs at least 20 workers".to_owned());
        }
        if self.scenario == Scenario::Liars && self.duration < LIARS_MIN_DURATION {
            return bad(format!(
                "liars needs --duration of at least {}s: the liars join after {}s and their \
                 share is measured from 60 s after that",
                LIARS_MIN_DURATION.as_secs(),
                crate::liars::JOIN_AFTER.as_secs()
            ));
        }
        if !(self.churn_share > 0.0 && self.churn_share <= 0.5) {
            return bad("the churn share must be in (0, 0.5]".to_owned());
        }
        if self.churn_every < Duration::from_secs(1) || self.sample_every < Duration::from_secs(1) {
            return bad("churn and sample intervals must be at least 1 s".to_owned());
        }
        Ok(())
    }
}

/// Parses `30s`, `2m`, `1h` or a plain number of seconds.
///
/// # Errors
/// [`LoadtestError::Usage`] for anything else.
pub fn parse_duration(s: &str) -> Result<Duration, LoadtestError> {
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| LoadtestError::Usage(format!("bad duration `{s}`: use e.g. 30s, 2m")))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => {
            return Err(LoadtestError::Usage(format!(
                "bad duration `{s}`: use s, m or h"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_options() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5mins").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!("chaos".parse::<Scenario>().unwrap(), Scenario::Chaos);
        assert!("nope".parse::<Scenario>().is_err());
        let mut c = LoadtestConfig::new(Scenario::Steady, 10);
        c.validate().unwrap();
        c.workers = 0;
        assert!(c.validate().is_err());
        let mut c = LoadtestConfig::new(Scenario::Steady, 10);
        c.duration = Duration::from_secs(1);
        assert!(c.validate().is_err());
    }
}
