//! The admission gate: which peers this node has seen a valid operator token for.
//!
//! Records carry the token, so they are checked directly. Provider records and gossip carry
//! none: they are judged by what the node learnt from the sender's record. A peer whose record
//! was refused is *denied* (its providers and gossip are refused and counted); a peer the node
//! knows nothing about yet is *unknown*: its heartbeats are ignored (not forwarded) and its
//! provider records held back while the node fetches its record, because a worker's first
//! provider announcement often arrives before its record does.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{
    PeerId,
    kad::{self, store::RecordStore},
};

use super::EventLoop;
use crate::{
    keys, registry::LeaveReason, rules::unix_ms, signed::SignedRecord, validate::RejectReason,
};

/// Most peers remembered as denied (older entries are forgotten first when full).
const MAX_DENIED: usize = 4096;
/// How long a denial is remembered (a new, valid record lifts it at once).
const DENY_MEMORY: Duration = Duration::from_secs(600);
/// Most peers with provider records held back while their record is fetched.
const MAX_PENDING_PEERS: usize = 1024;
/// Most held-back provider records per peer (one per service it offers).
const MAX_PENDING_PER_PEER: usize = 32;

/// What the gate knows about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A valid token was seen and has not expired.
    Admitted,
    /// Its record was refused (or its token expired).
    Denied,
    /// Nothing known yet.
    Unknown,
}

/// Admission state of one node (empty and unused unless admission is enforced).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Admitted peers and their token's `not_after`, ms since the Unix epoch.
    admitted: HashMap<PeerId, u64>,
    /// Denied peers and when they were denied.
    denied: HashMap<PeerId, Instant>,
    /// Provider records held back until the provider's record is seen.
    pending: HashMap<PeerId, (Instant, Vec<kad::ProviderRecord>)>,
}

impl EventLoop {
    fn enforced(&self) -> bool {
        self.config.admission.enforced()
    }

    /// Checks a verified record's admission token (no-op unless enforced). On success the
    /// peer is admitted and its held-back providers are stored; on failure it is denied.
    pub(super) fn admit(&mut self, sr: &SignedRecord) -> Result<(), RejectReason> {
        if !self.enforced() {
            return Ok(());
        }
        let verdict = match &sr.admission {
            Some(t) => t.check(&sr.peer_id, &self.config.admission.trusted, unix_ms()),
            None => Err(crate::admission::AdmissionError::Missing),
        };
        match verdict {
            Ok(()) => {
                let not_after = sr.admission.as_ref().map_or(0, |t| t.not_after_ms());
                self.gate.admitted.insert(sr.peer_id, not_after);
                self.gate.denied.remove(&sr.peer_id);
                if let Some((_, held)) = self.gate.pending.remove(&sr.peer_id) {
                    for record in held {
                        self.store_provider(record);
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::debug!(peer = %sr.peer_id, error = %e, "record not admitted");
                self.deny(sr.peer_id);
                Err(RejectReason::NotAdmitted)
            }
        }
    }

    /// What the gate knows about `peer` (always `Admitted` when admission is not enforced).
    pub(super) fn verdict(&self, peer: &PeerId) -> Verdict {
        if !self.enforced() {
            return Verdict::Admitted;
        }
        match self.gate.admitted.get(peer) {
            Some(not_after) if *not_after > unix_ms() => Verdict::Admitted,
            Some(_) => Verdict::Denied,
            None if self.gate.denied.contains_key(peer) => Verdict::Denied,
            None => Verdict::Unknown,
        }
    }

    /// Marks `peer` denied; its held-back providers are refused and counted.
    fn deny(&mut self, peer: PeerId) {
        self.gate.admitted.remove(&peer);
        if let Some((_, held)) = self.gate.pending.remove(&peer) {
            for _ in held {
                self.metrics.reject("provider", RejectReason::NotAdmitted);
            }
        }
        if self.gate.denied.len() >= MAX_DENIED
            && let Some(oldest) = self
                .gate
                .denied
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(p, _)| *p)
        {
            self.gate.denied.remove(&oldest);
        }
        self.gate.denied.insert(peer, Instant::now());
    }

    /// Gates an inbound provider record: `Some` to store it now; `None` when it was refused
    /// (and counted) or held back until the provider's record has been checked.
    pub(super) fn gate_provider(
        &mut self,
        record: kad::ProviderRecord,
    ) -> Option<kad::ProviderRecord> {
        let peer = record.provider;
        match self.verdict(&peer) {
            Verdict::Admitted => Some(record),
            Verdict::Denied => {
                tracing::debug!(provider = %peer, "provider not admitted");
                self.metrics.reject("provider", RejectReason::NotAdmitted);
                None
            }
            Verdict::Unknown => {
                let full = self.gate.pending.len() >= MAX_PENDING_PEERS
                    && !self.gate.pending.contains_key(&peer);
                let held_now = self.gate.pending.get(&peer).map_or(0, |(_, v)| v.len());
                if full || held_now >= MAX_PENDING_PER_PEER {
                    self.metrics.reject("provider", RejectReason::NotAdmitted);
                    return None;
                }
                let held = &mut self
                    .gate
                    .pending
                    .entry(peer)
                    .or_insert_with(|| (Instant::now(), Vec::new()))
                    .1;
                held.retain(|r| r.key != record.key);
                held.push(record);
                if !self.fetching.contains(&peer) {
                    self.start_get_record(peer, None, None);
                }
                None
            }
        }
    }

    /// Expires admissions whose token ran out (the worker leaves the view and the store) and
    /// forgets old denials and held-back providers whose record never came.
    pub(super) fn sweep_gate(&mut self) {
        if !self.enforced() {
            return;
        }
        let now_ms = unix_ms();
        let expired: Vec<PeerId> = self
            .gate
            .admitted
            .iter()
            .filter(|(_, not_after)| **not_after <= now_ms)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            tracing::info!(%peer, "admission token expired; dropping the worker");
            self.deny(peer);
            self.registry.remove(&peer, LeaveReason::Expired, None);
            let key = keys::worker_key(&peer);
            self.swarm.behaviour_mut().kad.store_mut().remove(&key);
            self.stored_seqs.remove(&key);
        }
        let now = Instant::now();
        self.gate
            .denied
            .retain(|_, at| now.saturating_duration_since(*at) < DENY_MEMORY);
        let hold = self.config.timings.query_timeout * 2;
        self.gate
            .pending
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < hold);
    }
}
