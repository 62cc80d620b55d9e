//! The `liars` run's groups, its gateway's checks and its figures.
//!
//! 5 % of the fleet lies, in four groups that join once the honest fleet is serving. Every
//! liar claims eight H200s and 4 096 slots (the biggest claim the rulebook lets through is
//! clamped, the rest is up to the gateway's estimator); what it really does differs:
//!
//! | group | really |
//! |---|---|
//! | `inflated` | serves right, at T4 speed with 4 slots |
//! | `garbage` | answers at once, wrongly |
//! | `blackhole` | accepts requests and never answers |
//! | `tarpit` | sends the head, then one body byte every 500 ms |
//!
//! A group's traffic share is the share of the work requests the whole fleet received that
//! reached its workers (canaries and cross-checks included: they are what the gateway sent).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use gpumesh_testkit::{Fault, answer_for};
use serde::Serialize;

use crate::error::LoadtestError;

/// When the liars join, after the traffic started: into a running fleet whose gateway has
/// already checked the workers it found at its start (see `docs/trust.md`).
pub const JOIN_AFTER: Duration = Duration::from_secs(30);
/// Share of the fleet that lies.
pub const LIAR_SHARE: f64 = 0.05;
/// The hardware every liar claims.
pub const CLAIMED_PROFILE: &str = "h200x8";
/// The slots every liar claims.
pub const CLAIMED_SLOTS: u32 = 4096;
/// What the inflated group really is.
pub const TRUE_PROFILE: &str = "t4";
/// How often a tarpit sends one byte.
pub const TARPIT_BYTE_EVERY_MS: u64 = 500;
/// The services the fleet offers that canaries check (every one of them).
pub const CHECKED_SERVICES: [&str; 3] = ["ocr", "embed", "llm"];
/// Share of real requests replayed on a second worker for each service.
pub const CROSS_CHECK_SHARE: f64 = 0.005;

/// One kind of liar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LiarGroup {
    /// Claims far more than it has; serves right but slowly.
    Inflated,
    /// Fast wrong answers.
    Garbage,
    /// Never answers.
    Blackhole,
    /// Answers one byte at a time.
    Tarpit,
}

impl LiarGroup {
    /// Every group, in report order.
    pub const ALL: [LiarGroup; 4] = [
        LiarGroup::Inflated,
        LiarGroup::Garbage,
        LiarGroup::Blackhole,
        LiarGroup::Tarpit,
    ];

    /// The report's key.
    pub fn name(self) -> &'static str {
        match self {
            LiarGroup::Inflated => "inflated",
            LiarGroup::Garbage => "garbage",
            LiarGroup::Blackhole => "blackhole",
            LiarGroup::Tarpit => "tarpit",
        }
    }

    /// The mock service's behaviour.
    pub fn fault(self) -> Fault {
        match self {
            LiarGroup::Inflated => Fault::None,
            LiarGroup::Garbage => Fault::Garbage,
            LiarGroup::Blackhole => Fault::BlackHole,
            LiarGroup::Tarpit => Fault::Tarpit {
                byte_every_ms: TARPIT_BYTE_EVERY_MS,
            },
        }
    }

    /// Whether its answers are useful work (only the inflated group's are).
    pub fn serves(self) -> bool {
        self == LiarGroup::Inflated
    }
}

/// How many of `workers` lie (at least one per group).
pub fn liar_count(workers: usize) -> usize {
    ((workers as f64 * LIAR_SHARE).round() as usize).max(LiarGroup::ALL.len())
}

/// The group of each liar, round-robin so that every group has `count / 4` or one more.
pub fn groups(count: usize) -> Vec<LiarGroup> {
    (0..count)
        .map(|i| LiarGroup::ALL[i % LiarGroup::ALL.len()])
        .collect()
}

/// One group's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    /// Workers in the group.
    pub workers: usize,
    /// Its share of the work requests the fleet received from its join to the end.
    pub traffic_share: f64,
    /// Its share of the fleet's true capacity (0 for groups whose answers are worthless).
    pub true_capacity_share: f64,
    /// Its traffic share from 30 s after it joined to the end.
    pub share_after_30s: f64,
    /// Its traffic share from 60 s after it joined to the end.
    pub share_after_60s: f64,
}

/// The `liars` run's own figures (flattened into the report's JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LiarsReport {
    /// Client requests answered 2xx, over all client requests.
    pub honest_success_ratio: f64,
    /// Per group, keyed `inflated`, `garbage`, `blackhole`, `tarpit`.
    pub liar_groups: BTreeMap<String, GroupReport>,
    /// Honest workers the gateway ejected or distrusted at any time during the run.
    pub honest_workers_ejected: usize,
    /// Canary and cross-check requests over all work requests the fleet received, from the
    /// liars' join to the end.
    pub canary_share_of_capacity: f64,
    /// The same over the whole traffic window, the gateway's checks of the fleet it found at
    /// its start included.
    pub canary_share_whole_run: f64,
}

impl LiarsReport {
    /// With the share of client requests answered 2xx (known only once the traffic ended).
    pub fn with_success(mut self, ok: u64, requests: u64) -> Self {
        self.honest_success_ratio = ok as f64 / requests.max(1) as f64;
        self
    }
}

/// Work requests received, per group and by honest workers, at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// By honest workers.
    pub honest: u64,
    /// By each group, in [`LiarGroup::ALL`] order.
    pub groups: [u64; 4],
}

impl Received {
    /// Everything received.
    pub fn total(&self) -> u64 {
        self.honest + self.groups.iter().sum::<u64>()
    }

    /// Adds `n` requests to `group` (or to the honest workers).
    pub fn add(&mut self, group: Option<LiarGroup>, n: u64) {
        match group {
            None => self.honest += n,
            Some(g) => self.groups[g as usize] += n,
        }
    }
}

/// `group`'s share of what was received between `from` and `to`.
pub fn share_between(from: &Received, to: &Received, group: LiarGroup) -> f64 {
    let i = group as usize;
    let got = to.groups[i].saturating_sub(from.groups[i]);
    let all = to.total().saturating_sub(from.total());
    if all == 0 {
        0.0
    } else {
        got as f64 / all as f64
    }
}

/// The canary file the run's gateway reads: one known-answer request per service, checked on
/// the `answer` field, and every service marked deterministic (answers are a function of the
/// request body), cross-checked on the same field.
pub fn canary_file(path: &Path) -> Result<(), LoadtestError> {
    let mut s = String::from("# Written by gpumesh loadtest --scenario liars.\n");
    for service in CHECKED_SERVICES {
        let body = format!("canary for {service}: the quick brown fox");
        let answer = answer_for(body.as_bytes());
        s.push_str(&format!(
            "\n[[canary]]\nservice = \"{service}\"\nname = \"{service}-known\"\npath = \"run\"\n\
             body = \"{body}\"\ndeadline = \"5s\"\n\
             check = {{ json = {{ pointer = \"/answer\", equals = \"{answer}\" }} }}\n\
             \n[[deterministic]]\nservice = \"{service}\"\ncompare = \"/answer\"\n\
             share = {CROSS_CHECK_SHARE}\n"
        ));
    }
    std::fs::write(path, s)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_percent_lie_in_four_groups() {
        assert_eq!(liar_count(500), 25);
        assert_eq!(liar_count(20), 4, "at least one per group");
        let g = groups(25);
        let count = |x| g.iter().filter(|&&y| y == x).count();
        assert_eq!(count(LiarGroup::Inflated), 7);
        assert_eq!(count(LiarGroup::Tarpit), 6);
    }

    #[test]
    fn shares_are_of_the_window_only() {
        let mut a = Received::default();
        a.add(None, 1000);
        a.add(Some(LiarGroup::Garbage), 500);
        let mut b = a;
        b.add(None, 99);
        b.add(Some(LiarGroup::Garbage), 1);
        assert!((share_between(&a, &b, LiarGroup::Garbage) - 0.01).abs() < 1e-12);
        assert_eq!(share_between(&a, &a, LiarGroup::Garbage), 0.0);
    }

    #[test]
    fn the_canary_file_names_every_service_with_its_known_answer() {
        let dir = crate::fleet::unique_temp_dir("gpumesh-canary-test");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("canaries.toml");
        canary_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for service in CHECKED_SERVICES {
            let body = format!("canary for {service}: the quick brown fox");
            assert!(text.contains(&answer_for(body.as_bytes())), "{text}");
        }
        assert_eq!(text.matches("[[deterministic]]").count(), 3);
    }
}
