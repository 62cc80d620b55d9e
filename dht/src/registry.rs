//! The registry view: every worker this node knows, merged from signed records and heartbeats.
//!
//! Records arrive from the DHT (inbound puts this node stores, lookups) and from gossip
//! announcements; heartbeats from gossip. The event loop is the only writer; readers (the gateway's
//! request path) take a short read lock and never wait on the network. Every change is also sent
//! as a [`RegistryEvent`] on a broadcast channel: a slow subscriber loses the oldest events
//! (`RecvError::Lagged`) and should re-read [`RegistryView::workers`], it never slows the node.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use tokio::sync::broadcast;

use crate::{
    gossip::Heartbeat,
    metrics::DhtMetrics,
    record::{LoadInfo, WorkerRecord},
    signed::SignedRecord,
};

/// The last heartbeat heard from a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatSample {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// When this node received it.
    pub received: Instant,
}

/// One worker as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEntry {
    /// The worker's peer id (the record's verified signer).
    pub peer_id: PeerId,
    /// Its newest valid record.
    pub record: WorkerRecord,
    /// When this node first saw it (in this membership period).
    pub first_seen: Instant,
    /// When this node received the current record.
    pub record_received: Instant,
    /// The newest heartbeat, if any.
    pub heartbeat: Option<HeartbeatSample>,
    /// When the entry expires, ms since the Unix epoch: the record's `expires_at_ms`, extended
    /// by heartbeats that vouch for a newer record with the same content.
    pub expires_at_ms: u64,
    /// The signed envelope the current record came in (the DHT value). A gateway persists these
    /// to restore its view after a restart; they are verified again when read back.
    pub envelope: Arc<[u8]>,
}

/// Load figures with their age, for cost functions that discount old data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadView {
    /// The figures.
    pub load: LoadInfo,
    /// How old they are.
    pub age: Duration,
    /// True when they came from a heartbeat, false when only the record had them.
    pub from_heartbeat: bool,
    /// True when older than the stale threshold.
    pub stale: bool,
    /// Confidence in `[0, 1]`: halves every stale threshold (`0.5^(age / stale_after)`).
    pub weight: f64,
}

impl WorkerEntry {
    /// The freshest load figures and how much to trust them.
    pub fn load(&self, now: Instant, stale_after: Duration) -> LoadView {
        let (load, received, from_heartbeat) = match self.heartbeat {
            Some(h) if h.received >= self.record_received => (h.heartbeat.load, h.received, true),
            _ => (self.record.load, self.record_received, false),
        };
        let age = now.saturating_duration_since(received);
        let half = stale_after.as_secs_f64().max(1e-3);
        LoadView {
            load,
            age,
            from_heartbeat,
            stale: age > stale_after,
            weight: 0.5f64.powf(age.as_secs_f64() / half),
        }
    }

    /// The last time this node heard from the worker (record or heartbeat).
    pub fn last_heard(&self) -> Instant {
        self.heartbeat.map_or(self.record_received, |h| {
            h.received.max(self.record_received)
        })
    }
}

/// Why a worker left the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// Its record expired without a refresh.
    Expired,
    /// It withdrew (a signed leave notice).
    Withdrawn,
    /// Nothing heard (record refresh or heartbeat) within the liveness timeout.
    Silent,
}

/// A change in the registry view.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryEvent {
    /// A worker appeared.
    Joined(WorkerEntry),
    /// A worker published a newer record.
    Updated(WorkerEntry),
    /// A heartbeat arrived.
    Load {
        /// The worker.
        peer_id: PeerId,
        /// The heartbeat.
        heartbeat: Heartbeat,
    },
    /// A worker left.
    Left {
        /// The worker.
        peer_id: PeerId,
        /// Why.
        reason: LeaveReason,
    },
}

/// What a heartbeat told the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeartbeatOutcome {
    /// Merged.
    Merged,
    /// From a worker we hold no (current) record for: fetch it.
    NeedRecord,
}

/// A shared, read-mostly view of the known workers.
#[derive(Debug, Clone)]
pub struct RegistryView {
    inner: Arc<RwLock<HashMap<PeerId, WorkerEntry>>>,
    events: broadcast::Sender<RegistryEvent>,
    metrics: DhtMetrics,
}

impl RegistryView {
    pub(crate) fn new(capacity: usize, metrics: DhtMetrics) -> Self {
        Self {
            inner: Arc::default(),
            events: broadcast::channel(capacity.max(1)).0,
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<PeerId, WorkerEntry>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PeerId, WorkerEntry>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// One worker.
    pub fn get(&self, peer: &PeerId) -> Option<WorkerEntry> {
        self.read().get(peer).cloned()
    }

    /// Whether `peer` is in the view.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.read().contains_key(peer)
    }

    /// Every known worker.
    pub fn workers(&self) -> Vec<WorkerEntry> {
        self.read().values().cloned().collect()
    }

    /// Known workers that offer `service`.
    pub fn workers_for(&self, service: &str) -> Vec<WorkerEntry> {
        self.read()
            .values()
            .filter(|w| w.record.services.iter().any(|s| s == service))
            .cloned()
            .collect()
    }

    /// Number of known workers.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// True when no worker is known.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// The `seq` of the record held for `peer`.
    pub(crate) fn seq_of(&self, peer: &PeerId) -> Option<u64> {
        self.read().get(peer).map(|w| w.record.seq)
    }

    /// Merges a verified record; returns true when it was new or newer.
    pub(crate) fn upsert(&self, sr: &SignedRecord, now: Instant) -> bool {
        let event = {
            let mut map = self.write();
            match map.get_mut(&sr.peer_id) {
                Some(e) if e.record.seq >= sr.record.seq => return false,
                Some(e) => {
                    e.record = sr.record.clone();
                    e.envelope = Arc::from(sr.bytes.as_slice());
                    e.record_received = now;
                    e.expires_at_ms = e.expires_at_ms.max(sr.record.expires_at_ms);
                    RegistryEvent::Updated(e.clone())
                }
                None => {
                    let e = WorkerEntry {
                        peer_id: sr.peer_id,
                        record: sr.record.clone(),
                        first_seen: now,
                        record_received: now,
                        heartbeat: None,
                        expires_at_ms: sr.record.expires_at_ms,
                        envelope: Arc::from(sr.bytes.as_slice()),
                    };
                    map.insert(sr.peer_id, e.clone());
                    self.metrics.registry_workers.inc();
                    RegistryEvent::Joined(e)
                }
            }
        };
        let _ = self.events.send(event);
        true
    }

    /// Merges a heartbeat (authenticated by gossipsub as coming from `peer`). `max_expiry_ms`
    /// bounds how far a heartbeat may extend the entry.
    pub(crate) fn heartbeat(
        &self,
        peer: PeerId,
        hb: Heartbeat,
        now: Instant,
        max_expiry_ms: u64,
    ) -> HeartbeatOutcome {
        let outcome = {
            let mut map = self.write();
            let Some(e) = map.get_mut(&peer) else {
                return HeartbeatOutcome::NeedRecord;
            };
            if e.heartbeat
                .is_some_and(|h| h.heartbeat.seq >= hb.seq && h.heartbeat.at_ms >= hb.at_ms)
            {
                return HeartbeatOutcome::Merged;
            }
            e.heartbeat = Some(HeartbeatSample {
                heartbeat: hb,
                received: now,
            });
            if hb.record_seq >= e.record.seq {
                e.expires_at_ms = e
                    .expires_at_ms
                    .max(hb.record_expires_at_ms.min(max_expiry_ms));
            }
            if hb.content_seq > e.record.seq {
                HeartbeatOutcome::NeedRecord
            } else {
                HeartbeatOutcome::Merged
            }
        };
        let _ = self.events.send(RegistryEvent::Load {
            peer_id: peer,
            heartbeat: hb,
        });
        outcome
    }

    /// Removes `peer` (if `max_seq` is given, only when the held record is not newer).
    pub(crate) fn remove(&self, peer: &PeerId, reason: LeaveReason, max_seq: Option<u64>) {
        let removed = {
            let mut map = self.write();
            match map.get(peer) {
                Some(e) if max_seq.is_none_or(|s| e.record.seq <= s) => map.remove(peer).is_some(),
                _ => false,
            }
        };
        if removed {
            self.metrics.registry_workers.dec();
            let _ = self.events.send(RegistryEvent::Left {
                peer_id: *peer,
                reason,
            });
        }
    }

    /// Drops expired and silent workers.
    /// `liveness` applies only on nodes that receive heartbeats (gateways, seeds).
    pub(crate) fn sweep(&self, now_ms: u64, now: Instant, liveness: Option<Duration>) {
        let gone: Vec<(PeerId, LeaveReason)> = self
            .read()
            .values()
            .filter_map(|e| {
                if e.expires_at_ms <= now_ms {
                    Some((e.peer_id, LeaveReason::Expired))
                } else if liveness
                    .is_some_and(|l| now.saturating_duration_since(e.last_heard()) > l)
                {
                    Some((e.peer_id, LeaveReason::Silent))
                } else {
                    None
                }
            })
            .collect();
        for (peer, reason) in gone {
            self.remove(&peer, reason, None);
        }
    }
}
