//! Who stamps a record's `seq` and lifetime, and how long a record lives.
//!
//! A record is stamped once, by whoever signs it: the DHT node for the records it publishes
//! (and re-publishes on its own refresh timer), the agent's registry link for the records it
//! registers over HTTP. Both use a [`Stamper`], so both follow the same two rules:
//!
//! - `seq` is the issue time in ms, bumped past the previous one when the clock stood still or
//!   went back. Being a time, it stays monotonic across restarts (no state to keep), and a
//!   record registered over HTTP after one published in the DHT carries a newer `seq`.
//! - a record lives [`record_ttl`] of its refresh period.

use std::time::Duration;

use super::limits::MAX_RECORD_TTL;
use super::record::WorkerRecord;

/// The one TTL rule: a record lives three refresh periods (at most [`MAX_RECORD_TTL`]).
///
/// Three, not two: after one lost refresh the record still has a full refresh period to live,
/// so the next refresh (or the fall-back to the registry) lands before it expires, and a
/// loaded network does not make workers flap in and out of gateways' views.
pub fn record_ttl(refresh: Duration) -> Duration {
    refresh.saturating_mul(3).min(MAX_RECORD_TTL)
}

/// The three stamped fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Monotonic sequence number: the newest record wins.
    pub seq: u64,
    /// When the record was issued, ms since the Unix epoch.
    pub issued_at_ms: u64,
    /// When it stops being valid, ms since the Unix epoch.
    pub expires_at_ms: u64,
}

impl Stamp {
    /// Writes the stamp into `record`.
    pub fn apply(self, record: &mut WorkerRecord) {
        record.seq = self.seq;
        record.issued_at_ms = self.issued_at_ms;
        record.expires_at_ms = self.expires_at_ms;
    }
}

/// Issues [`Stamp`]s with a strictly increasing `seq`.
#[derive(Debug, Clone, Default)]
pub struct Stamper {
    last_seq: u64,
}

impl Stamper {
    /// A stamper that has issued nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next stamp: `seq = max(now_ms, last seq + 1)`, issued at `now_ms`, expiring `ttl`
    /// later.
    pub fn next(&mut self, now_ms: u64, ttl: Duration) -> Stamp {
        let seq = now_ms.max(self.last_seq.saturating_add(1));
        self.last_seq = seq;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        Stamp {
            seq,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        }
    }

    /// The last `seq` issued (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_the_time_and_stays_monotonic_when_the_clock_stalls_or_goes_back() {
        let ttl = Duration::from_secs(60);
        let mut s = Stamper::new();
        let a = s.next(1_000, ttl);
        assert_eq!(
            a,
            Stamp {
                seq: 1_000,
                issued_at_ms: 1_000,
                expires_at_ms: 61_000
            }
        );
        let b = s.next(1_000, ttl);
        let c = s.next(500, ttl);
        assert!(a.seq < b.seq && b.seq < c.seq, "{a:?} {b:?} {c:?}");
        assert_eq!(
            c.issued_at_ms, 500,
            "the issue time is the clock's, not the seq"
        );
        assert_eq!(s.next(9_000, ttl).seq, 9_000);
        assert_eq!(s.last_seq(), 9_000);
    }

    #[test]
    fn apply_writes_the_three_fields() {
        let mut r = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
        Stamper::new()
            .next(5, Duration::from_millis(10))
            .apply(&mut r);
        assert_eq!((r.seq, r.issued_at_ms, r.expires_at_ms), (5, 5, 15));
    }

    #[test]
    fn a_record_lives_three_refreshes_up_to_the_cap() {
        assert_eq!(record_ttl(Duration::from_secs(30)), Duration::from_secs(90));
        assert_eq!(record_ttl(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(record_ttl(Duration::from_secs(3600)), MAX_RECORD_TTL);
        assert_eq!(record_ttl(Duration::MAX), MAX_RECORD_TTL);
    }
}
