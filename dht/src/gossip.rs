//! Messages on the load topic: heartbeats, record announcements and leave notices.
//!
//! Gossipsub signs every message with the author's libp2p key and, in `Strict` validation mode,
//! verifies it on receipt, so `message.source` is authenticated; a record announcement also
//! carries the worker's own signed envelope, checked like a DHT value.
//!
//! Framing: one tag byte, then the body (`1` heartbeat JSON, `2` record envelope, `3` leave JSON).

use serde::{Deserialize, Serialize};

use crate::record::{LoadInfo, WorkerState};

/// A load heartbeat, sent every `heartbeat_interval` (seconds class).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Heartbeat sequence (monotonic per worker run).
    pub seq: u64,
    /// When the worker measured this, ms since the Unix epoch.
    pub at_ms: u64,
    /// `seq` of the worker's current record.
    pub record_seq: u64,
    /// `expires_at_ms` of the worker's current record: a gateway holding an older record with
    /// the same content keeps it alive until then (refreshes that change only the times are not
    /// re-announced, to keep gossip to one small message per heartbeat).
    pub record_expires_at_ms: u64,
    /// `seq` of the last record whose content changed: a gateway holding an older one fetches it.
    pub content_seq: u64,
    /// Lifecycle state.
    pub state: WorkerState,
    /// Service load.
    pub load: LoadInfo,
    /// Mean GPU utilisation, percent, if known.
    pub gpu_util_pct: Option<u8>,
    /// Free VRAM summed over GPUs, MiB, if known.
    pub vram_free_mib: Option<u64>,
}

/// A leave notice: the worker withdrew its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leave {
    /// `seq` of the withdrawn record.
    pub record_seq: u64,
}

/// One gossip message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GossipMessage {
    Heartbeat(Heartbeat),
    Record(Vec<u8>),
    Leave(Leave),
}

impl GossipMessage {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Self::Heartbeat(h) => (1u8, serde_json::to_vec(h).unwrap_or_default()),
            Self::Record(b) => (2u8, b.clone()),
            Self::Leave(l) => (3u8, serde_json::to_vec(l).unwrap_or_default()),
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (tag, body) = bytes.split_first()?;
        match tag {
            1 => serde_json::from_slice(body).ok().map(Self::Heartbeat),
            2 => Some(Self::Record(body.to_vec())),
            3 => serde_json::from_slice(body).ok().map(Self::Leave),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_rejects_garbage() {
        let h = GossipMessage::Heartbeat(Heartbeat {
            seq: 1,
            at_ms: 2,
            record_seq: 3,
            record_expires_at_ms: 4,
            content_seq: 3,
            state: WorkerState::Online,
            load: LoadInfo::default(),
            gpu_util_pct: Some(5),
            vram_free_mib: None,
        });
        assert_eq!(GossipMessage::decode(&h.encode()), Some(h));
        assert_eq!(GossipMessage::decode(&[]), None);
        assert_eq!(GossipMessage::decode(&[9, 1]), None);
        assert_eq!(GossipMessage::decode(&[1, b'{']), None);
    }
}
