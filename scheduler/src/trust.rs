//! Trust: how much a gateway believes a worker's answers, earned by serving and by passing
//! checks, lost by failing them.
//!
//! A worker is a stranger's machine: its record may lie about its hardware, and its answers
//! may be wrong. The score (0 to 1) scales the worker's sampling weight, so a worker that has
//! not been checked yet gets traffic at once, but little; below [`TrustConfig::floor`] it gets
//! none ("distrusted") until a check passes again.
//!
//! | evidence | effect |
//! |---|---|
//! | a real request succeeds | up by `serve_step` of the gap to `unverified_cap` (serving alone never earns full trust) |
//! | [`Evidence::CanaryPassed`], [`Evidence::CrossCheckAgreed`] | up by `verified_step` of the gap to 1 |
//! | [`Evidence::CanaryFailed`] | a wrong answer to a known question: below the floor at once |
//! | [`Evidence::CrossCheckDisagreed`] | the minority answer of a replayed request: halved |
//! | [`Evidence::DeadlineMissed`] | no answer (or no first byte) in time: × `deadline_factor` |

/// What the gateway learned about a worker's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evidence {
    /// A known-answer request came back right.
    CanaryPassed,
    /// A known-answer request came back wrong.
    CanaryFailed,
    /// A replayed real request matched the other workers' answer.
    CrossCheckAgreed,
    /// A replayed real request disagreed with the other workers' answer.
    CrossCheckDisagreed,
    /// The worker missed the time-to-first-byte or total response deadline.
    DeadlineMissed,
}

impl Evidence {
    /// Every kind, for metric initialisation.
    pub const ALL: [Evidence; 5] = [
        Evidence::CanaryPassed,
        Evidence::CanaryFailed,
        Evidence::CrossCheckAgreed,
        Evidence::CrossCheckDisagreed,
        Evidence::DeadlineMissed,
    ];

    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            Evidence::CanaryPassed => "canary_passed",
            Evidence::CanaryFailed => "canary_failed",
            Evidence::CrossCheckAgreed => "cross_check_agreed",
            Evidence::CrossCheckDisagreed => "cross_check_disagreed",
            Evidence::DeadlineMissed => "deadline_missed",
        }
    }
}

/// A worker's trust, as a gateway saves and restores it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrustState {
    /// 0 (no trust) to 1 (full trust).
    pub score: f64,
    /// Checks passed (canaries and cross-checks).
    pub verified: u32,
    /// Checks failed (wrong answers, disagreements, missed deadlines).
    pub failed: u32,
}

/// How trust moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrustConfig {
    /// A new worker's score.
    pub initial: f64,
    /// Below this a worker gets no real traffic.
    pub floor: f64,
    /// The most that successes alone earn.
    pub unverified_cap: f64,
    /// Share of the gap to `unverified_cap` one success closes.
    pub serve_step: f64,
    /// Share of the gap to 1 one passed check closes.
    pub verified_step: f64,
    /// The score a wrong canary answer leaves at most (below `floor`: distrusted at once).
    pub wrong_answer_score: f64,
    /// Factor applied on a disagreement.
    pub disagree_factor: f64,
    /// Factor applied on a missed deadline.
    pub deadline_factor: f64,
}

impl TrustConfig {
    /// gpumesh's settings (docs/routing.md says why).
    pub const DEFAULT: Self = Self {
        initial: 0.2,
        floor: 0.1,
        unverified_cap: 0.6,
        serve_step: 0.01,
        verified_step: 0.5,
        wrong_answer_score: 0.05,
        disagree_factor: 0.5,
        deadline_factor: 0.7,
    };

    /// Trust plays no part: every worker at full trust, nothing moves it (the reference
    /// policies, which believe every record).
    pub const OFF: Self = Self {
        initial: 1.0,
        floor: 0.0,
        unverified_cap: 1.0,
        serve_step: 0.0,
        verified_step: 0.0,
        wrong_answer_score: 1.0,
        disagree_factor: 1.0,
        deadline_factor: 1.0,
    };
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TrustState {
    /// A new worker's trust.
    pub fn new(cfg: &TrustConfig) -> Self {
        Self {
            score: cfg.initial,
            verified: 0,
            failed: 0,
        }
    }

    /// Below the floor: no real traffic.
    #[inline]
    pub fn is_distrusted(&self, cfg: &TrustConfig) -> bool {
        self.score < cfg.floor
    }

    /// A real request succeeded.
    pub fn on_success(&mut self, cfg: &TrustConfig) {
        if self.score < cfg.unverified_cap {
            self.score += cfg.serve_step * (cfg.unverified_cap - self.score);
        }
    }

    /// One piece of evidence.
    pub fn on_evidence(&mut self, evidence: Evidence, cfg: &TrustConfig) {
        match evidence {
            Evidence::CanaryPassed | Evidence::CrossCheckAgreed => {
                self.verified = self.verified.saturating_add(1);
                self.score += cfg.verified_step * (1.0 - self.score);
            }
            Evidence::CanaryFailed => {
                self.failed = self.failed.saturating_add(1);
                self.score = self.score.min(cfg.wrong_answer_score);
            }
            Evidence::CrossCheckDisagreed => {
                self.failed = self.failed.saturating_add(1);
                self.score *= cfg.disagree_factor;
            }
            Evidence::DeadlineMissed => {
                self.failed = self.failed.saturating_add(1);
                self.score *= cfg.deadline_factor;
            }
        }
        *self = self.sanitized();
    }

    /// A saved state made safe to use (a hand-edited or corrupt view file).
    pub fn sanitized(mut self) -> Self {
        self.score = if self.score.is_finite() {
            self.score.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: TrustConfig = TrustConfig::DEFAULT;

    #[test]
    fn serving_alone_never_earns_full_trust() {
        let mut t = TrustState::new(&C);
        for _ in 0..10_000 {
            t.on_success(&C);
        }
        assert!(t.score <= C.unverified_cap + 1e-9 && t.score > 0.59);
    }

    #[test]
    fn a_wrong_canary_distrusts_at_once_and_checks_bring_it_back() {
        let mut t = TrustState::new(&C);
        for _ in 0..3 {
            t.on_evidence(Evidence::CanaryPassed, &C);
        }
        assert!(t.score > 0.85, "{}", t.score);
        t.on_evidence(Evidence::CanaryFailed, &C);
        assert!(t.is_distrusted(&C));
        t.on_evidence(Evidence::CanaryPassed, &C);
        assert!(!t.is_distrusted(&C));
        assert_eq!((t.verified, t.failed), (4, 1));
    }

    #[test]
    fn corrupt_saved_scores_are_made_safe() {
        let t = TrustState {
            score: f64::NAN,
            verified: 0,
            failed: 0,
        };
        assert_eq!(t.sanitized().score, 0.0);
        let t = TrustState { score: 7.0, ..t };
        assert_eq!(t.sanitized().score, 1.0);
    }
}
