//! The answer-check plan: known-answer requests (canaries) per service and the services whose
//! answers may be compared across workers (cross-checks), read from the operator's TOML file
//! (`--canaries FILE`).
//!
//! Everything in the file is checked when it is read: unknown keys, an unknown check kind, a
//! regex that does not compile, a service name that breaks the rulebook, a deadline that does
//! not parse or a share outside [0, [`MAX_SHARE`]] refuse the whole file, with a message that
//! names the entry (`canary 2 ("ocr-known-text"): …`). A gateway with a bad plan does not
//! start. `docs/trust.md` describes the file for operators.
//!
//! This module holds the plan and the [`Check`]s as values; the runner that sends canaries
//! and replays requests is [`crate::verify`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use axum::http::Method;
use gpumesh_dht::rules::ServiceName;
use serde::Deserialize;

mod answer;

pub use answer::{Check, MAX_REGEX_BYTES, compare_value};

/// The largest share of a service's requests that may be replayed for cross-checks.
pub const MAX_SHARE: f64 = 0.01;
/// A cross-checked service's share when the file names none.
pub const DEFAULT_SHARE: f64 = 0.005;
/// The longest canary deadline accepted.
pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);
/// A canary's deadline when the file names none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Why a check plan could not be used. The gateway does not start with one (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum CheckPlanError {
    /// The file could not be read.
    #[error("canary file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or check kind, or a value of the wrong type.
    #[error("canary file: {0}")]
    Parse(String),
    /// One entry is wrong; `entry` names it (`canary 2 ("ocr-known-text")`, `deterministic 1`).
    #[error("{entry}: {reason}")]
    Entry {
        /// Which entry, 1-based as a person counts.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One known-answer request, checked and ready to send.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The service it is sent to, like a real request of that service.
    pub service: String,
    /// Its name in trust reasons and logs (`<service>-<n>` when the file names none).
    pub name: String,
    /// The request method.
    pub method: Method,
    /// The path below `/api/service/{service}/`, without a leading `/`.
    pub path: String,
    /// The request body, sent as is.
    pub body: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// How long the worker has for the whole answer.
    pub deadline: Duration,
    /// What the answer must satisfy.
    pub check: Check,
}

/// A service whose answers are the same on every honest worker, so that a real request may be
/// replayed on another worker and the answers compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Deterministic {
    /// The service.
    pub service: String,
    /// JSON pointer of the compared value; `None`: the whole body.
    pub compare: Option<String>,
    /// Share of the service's successful requests replayed, in [0, [`MAX_SHARE`]].
    pub share: f64,
}

/// The whole plan. The default is empty: no canaries, no cross-checks.
#[derive(Debug, Clone, Default)]
pub struct CheckPlan {
    /// Known-answer requests.
    pub canaries: Vec<Canary>,
    /// Services that may be cross-checked.
    pub deterministic: Vec<Deterministic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    canary: Vec<CanarySpec>,
    #[serde(default)]
    deterministic: Vec<DeterministicSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanarySpec {
    service: String,
    name: Option<String>,
    method: Option<String>,
    path: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    deadline: Option<String>,
    check: answer::CheckSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeterministicSpec {
    service: String,
    compare: Option<String>,
    share: Option<f64>,
}

impl CheckPlan {
    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// A [`CheckPlanError`] naming the file or the entry.
    pub fn load(path: &Path) -> Result<Self, CheckPlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| CheckPlanError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Checks the file's text.
    ///
    /// # Errors
    /// A [`CheckPlanError`] naming the entry.
    pub fn parse(text: &str) -> Result<Self, CheckPlanError> {
        let spec: FileSpec =
            toml::from_str(text).map_err(|e| CheckPlanError::Parse(e.message().to_owned()))?;
        let mut per_service: BTreeMap<String, usize> = BTreeMap::new();
        let mut canaries = Vec::with_capacity(spec.canary.len());
        for (i, c) in spec.canary.into_iter().enumerate() {
            let entry = match &c.name {
                Some(name) => format!("canary {} ({name:?})", i + 1),
                None => format!("canary {}", i + 1),
            };
            let bad = |reason: String| CheckPlanError::Entry {
                entry: entry.clone(),
                reason,
            };
            let n = per_service.entry(c.service.clone()).or_default();
            *n += 1;
            canaries.push(canary(c, *n).map_err(bad)?);
        }
        let mut deterministic = Vec::with_capacity(spec.deterministic.len());
        for (i, d) in spec.deterministic.into_iter().enumerate() {
            let bad = |reason: String| CheckPlanError::Entry {
                entry: format!("deterministic {} ({:?})", i + 1, d.service),
                reason,
            };
            deterministic.push(deterministic_entry(&d).map_err(bad)?);
        }
        Ok(Self {
            canaries,
            deterministic,
        })
    }

    /// Whether the plan checks nothing.
    pub fn is_empty(&self) -> bool {
        self.canaries.is_empty() && self.deterministic.is_empty()
    }
}

fn service_name(name: &str) -> Result<String, String> {
    ServiceName::parse(name)
        .map(|s| s.as_str().to_owned())
        .map_err(|e| e.to_string())
}

fn canary(c: CanarySpec, n: usize) -> Result<Canary, String> {
    let service = service_name(&c.service)?;
    let method = match c.method.as_deref() {
        None => Method::POST,
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("method {m:?} is not an HTTP method"))?,
    };
    let path = c.path.trim_start_matches('/').to_owned();
    if path.contains("..") || path.chars().any(|ch| ch.is_whitespace() || ch == '#') {
        return Err(format!("path {:?} is not a plain path", c.path));
    }
    for (name, value) in &c.headers {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(value).is_err()
        {
            return Err(format!("header {name:?} is not a valid header"));
        }
    }
    let deadline = match c.deadline.as_deref() {
        None => DEFAULT_DEADLINE,
        Some(d) => parse_duration(d)
            .filter(|d| *d <= MAX_DEADLINE)
            .ok_or_else(|| {
                format!(
                    "deadline {d:?} is not a duration of at most an hour such as \"500ms\", \"5s\" or \"2m\""
                )
            })?,
    };
    Ok(Canary {
        name: c.name.unwrap_or_else(|| format!("{service}-{n}")),
        service,
        method,
        path,
        body: c.body,
        headers: c.headers.into_iter().collect(),
        deadline,
        check: Check::from_spec(c.check)?,
    })
}

fn deterministic_entry(d: &DeterministicSpec) -> Result<Deterministic, String> {
    let service = service_name(&d.service)?;
    let share = d.share.unwrap_or(DEFAULT_SHARE);
    if !(0.0..=MAX_SHARE).contains(&share) {
        return Err(format!("share {share} is outside [0, {MAX_SHARE}]"));
    }
    if let Some(p) = &d.compare
        && !(p.is_empty() || p.starts_with('/'))
    {
        return Err(format!("compare {p:?} is not a JSON pointer (\"/answer\")"));
    }
    Ok(Deterministic {
        service,
        compare: d.compare.clone(),
        share,
    })
}

/// `"500ms"`, `"5s"`, `"2m"`, `"1h"`, or a bare number of seconds: a positive duration (the
/// canary file's deadlines and the gateway's deadline flags).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().ok()?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests;
