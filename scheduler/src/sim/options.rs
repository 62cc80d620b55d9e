//! Parsing and checking the simulator's settings: scenario, policy and distribution names, and
//! the ranges a run stays meaningful (and finishes) in. The field names match the flags of
//! `gpumesh sim`, so each message names the flag at fault.

use std::str::FromStr;

use super::{Scenario, ServiceDist, SimConfig};
use crate::policy::PolicyKind;

/// A simulator setting that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    /// An unknown name; `expected` lists the known ones.
    #[error("--{field}: unknown `{got}` (expected one of: {expected})")]
    UnknownName {
        /// The setting.
        field: &'static str,
        /// What was given.
        got: String,
        /// The accepted names, comma-separated.
        expected: String,
    },
    /// A number outside its range.
    #[error("--{field} must be {range} (got {got})")]
    OutOfRange {
        /// The setting.
        field: &'static str,
        /// The accepted range, in words.
        range: &'static str,
        /// What was given.
        got: String,
    },
}

fn unknown(
    field: &'static str,
    got: &str,
    names: impl Iterator<Item = &'static str>,
) -> SimConfigError {
    SimConfigError::UnknownName {
        field,
        got: got.to_owned(),
        expected: names.collect::<Vec<_>>().join(", "),
    }
}

/// The scenarios `name` selects: one by its name, or every one for `all`.
///
/// # Errors
/// [`SimConfigError::UnknownName`] for any other name.
pub fn parse_scenarios(name: &str) -> Result<Vec<Scenario>, SimConfigError> {
    let name = name.trim();
    if name == "all" {
        return Ok(Scenario::ALL.to_vec());
    }
    Scenario::from_name(name).map(|s| vec![s]).ok_or_else(|| {
        let names = Scenario::ALL.iter().map(|s| s.name());
        unknown("scenario", name, names.chain(["all"]))
    })
}

/// The policies of a comma-separated list of names (`p2c,gpumesh`).
///
/// # Errors
/// [`SimConfigError::UnknownName`] naming the first unknown entry.
pub fn parse_policies(list: &str) -> Result<Vec<PolicyKind>, SimConfigError> {
    list.split(',')
        .map(str::trim)
        .map(|name| {
            PolicyKind::from_name(name)
                .ok_or_else(|| unknown("policy", name, PolicyKind::ALL.iter().map(|k| k.name())))
        })
        .collect()
}

/// `exp`, `lognormal` (σ = 1) or `bimodal` (10 % of requests 20 × longer): the shapes the
/// scenarios compare, with the parameters the published figures use.
impl FromStr for ServiceDist {
    type Err = SimConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "exp" => Ok(ServiceDist::Exponential),
            "lognormal" => Ok(ServiceDist::LogNormal { sigma: 1.0 }),
            "bimodal" => Ok(ServiceDist::Bimodal {
                p_long: 0.1,
                ratio: 20.0,
            }),
            other => Err(unknown(
                "service",
                other,
                ["exp", "lognormal", "bimodal"].into_iter(),
            )),
        }
    }
}

impl SimConfig {
    /// Checks the ranges: load ρ in (0, 2] (beyond 2 the queues only grow), 2 to 100 000
    /// workers, 1 000 to 50 000 000 requests (fewer gives no stable tail, more runs for
    /// hours), 1 to 100 seeds, and at least one policy.
    ///
    /// # Errors
    /// [`SimConfigError::OutOfRange`] naming the first setting out of range.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let out = |field, range, got: String| Err(SimConfigError::OutOfRange { field, range, got });
        if !(self.load.is_finite() && self.load > 0.0 && self.load <= 2.0) {
            return out("load", "a number in (0, 2]", self.load.to_string());
        }
        if let Some(w) = self.workers
            && !(2..=100_000).contains(&w)
        {
            return out("workers", "between 2 and 100000", w.to_string());
        }
        if !(1000..=50_000_000).contains(&self.requests) {
            return out(
                "requests",
                "between 1000 and 50000000",
                self.requests.to_string(),
            );
        }
        if !(1..=100).contains(&self.seeds) {
            return out("seeds", "between 1 and 100", self.seeds.to_string());
        }
        if self.policies.is_empty() {
            return out("policy", "at least one policy", "none".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> SimConfig {
        SimConfig {
            scenario: Scenario::ALL[0],
            load: 0.9,
            workers: None,
            requests: 100_000,
            seed: 1,
            seeds: 1,
            policies: PolicyKind::ALL.to_vec(),
            service: None,
        }
    }

    #[test]
    fn names_parse_and_unknown_names_list_the_known_ones() {
        assert_eq!(parse_scenarios("all").unwrap().len(), Scenario::ALL.len());
        assert_eq!(
            parse_scenarios("hetero").unwrap(),
            [Scenario::from_name("hetero").unwrap()]
        );
        let e = parse_scenarios("nope").unwrap_err().to_string();
        assert!(
            e.starts_with("--scenario: unknown `nope`") && e.contains("all"),
            "{e}"
        );
        assert_eq!(parse_policies(" gpumesh ,random").unwrap().len(), 2);
        let e = parse_policies("gpumesh,bogus").unwrap_err().to_string();
        assert!(e.contains("`bogus`") && e.contains("round-robin"), "{e}");
        assert_eq!(
            "exp".parse::<ServiceDist>().unwrap(),
            ServiceDist::Exponential
        );
        assert!(matches!("bimodal".parse(), Ok(ServiceDist::Bimodal { .. })));
        assert!("uniform".parse::<ServiceDist>().is_err());
    }

    #[test]
    fn validate_names_the_setting_out_of_range() {
        good().validate().unwrap();
        let msg = |c: SimConfig| c.validate().unwrap_err().to_string();
        assert!(
            msg(SimConfig {
                load: 0.0,
                ..good()
            })
            .starts_with("--load")
        );
        assert!(
            msg(SimConfig {
                load: f64::NAN,
                ..good()
            })
            .starts_with("--load")
        );
        assert!(
            msg(SimConfig {
                load: 2.5,
                ..good()
            })
            .starts_with("--load")
        );
        assert!(
            msg(SimConfig {
                workers: Some(1),
                ..good()
            })
            .starts_with("--workers")
        );
        assert!(
            msg(SimConfig {
                requests: 999,
                ..good()
            })
            .starts_with("--requests")
        );
        assert!(msg(SimConfig { seeds: 0, ..good() }).starts_with("--seeds"));
        assert!(
            msg(SimConfig {
                seeds: 101,
                ..good()
            })
            .starts_with("--seeds")
        );
        assert!(
            msg(SimConfig {
                policies: vec![],
                ..good()
            })
            .starts_with("--policy")
        );
        SimConfig {
            load: 2.0,
            workers: Some(2),
            ..good()
        }
        .validate()
        .unwrap();
    }
}
