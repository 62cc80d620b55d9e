//! The simulator's event queue entries: what happens, and when, ordered so that a
//! `BinaryHeap` pops the earliest first.

use std::cmp::Ordering;

use crate::trust::Evidence;

/// Something that happens at a simulated instant.
#[derive(Debug, Clone, Copy)]
pub(super) enum Event {
    Arrival,
    Done { worker: u32, req: u32, ok: bool },
    Timeout { req: u32 },
    Publish { worker: u32 },
    Join { worker: u32 },
    Speed { worker: u32, factor: f64 },
    Fail { worker: u32 },
    Evidence { worker: u32, evidence: Evidence },
}

/// An [`Event`] with its time and a sequence number that breaks ties in scheduling order.
#[derive(Debug)]
pub(super) struct Timed {
    pub(super) at: f64,
    pub(super) seq: u64,
    pub(super) event: Event,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    // Min-heap on (time, sequence).
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.total_cmp(&self.at).then(o.seq.cmp(&self.seq))
    }
}
