//! A mock GPU inference service for demos, fleets and tests.
//!
//! It behaves like an inference server of a given GPU class: `slots` requests run at once, the
//! rest wait in FIFO order (up to `max_queue`, then 503); each request takes
//! `(base_ms + per_kib_ms × KiB) / speed` where `speed` is relative to one A100. Failure modes
//! are switched at run time through `POST /admin/fault` (see [`Fault`]). It reports its
//! in-flight and queue depth to the agent's load endpoint like a real service would, and may
//! lie about its slots ([`MockServiceConfig::claim_slots`]).
//!
//! Every answer is checkable: a work response is JSON with `answer` ([`answer_for`] the
//! request body) and `embedding` ([`embedding_for`]), beside figures that differ per worker
//! (`bytes`, `service_ms`, `queued_ms`). Cross-checks compare `/answer`, not whole bodies.
//!
//! HTTP surface: any path not below is a work request (e.g. `POST /api/service/ocr/run`);
//! `GET /health`; `GET /load` (a [`LoadInfo`], with the claimed slots); `GET /admin/state`
//! (the true figures); `POST /admin/fault` (a [`Fault`] as JSON, e.g. `{"mode":"garbage"}`).

mod answer;
mod liar;
mod server;

use std::net::SocketAddr;
use std::time::Duration;

use gpumesh_dht::record::LoadInfo;
use serde::{Deserialize, Serialize};

pub use answer::{EMBEDDING_DIM, answer_for, embedding_for};
pub use server::MockService;

/// A failure mode of the mock service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Fault {
    /// Healthy.
    #[default]
    None,
    /// Every request takes `factor` times longer.
    Slow {
        /// Slow-down factor (> 0).
        factor: f64,
    },
    /// Every request and `/health` fail with 500.
    Error,
    /// Requests take a slot and never answer.
    Hang,
    /// The fast wrong liar: every request is answered at once (no slot, no service time)
    /// with a well-formed response whose `answer` and `embedding` are wrong.
    Garbage,
    /// Requests are accepted and their bodies read, then nothing is ever sent: no status, no
    /// headers; the connection stays open until the client gives up. Takes no slot, so the
    /// reported load stays low (the liar looks idle).
    BlackHole,
    /// Status 200 and headers at once, then one byte of body every `byte_every_ms` (JSON
    /// whitespace, then the real answer after [`TARPIT_SPAN`]): a head-only deadline passes, a
    /// whole-response deadline does not. Takes no slot.
    Tarpit {
        /// Milliseconds between body bytes (0 counts as 1).
        byte_every_ms: u64,
    },
    /// The server stops: the listener closes, open connections drop without an answer (as
    /// when the machine dies), reports stop. Only
    /// [`MockService::set_fault`] (in-process) brings it back.
    Crash,
}

/// How long a [`Fault::Tarpit`] drips before it sends the answer: far beyond any deadline a
/// gateway would set, yet finite so a forgotten client does not hold a task forever.
pub const TARPIT_SPAN: Duration = Duration::from_secs(3600);

/// Configuration of a mock service.
#[derive(Debug, Clone)]
pub struct MockServiceConfig {
    /// Where to listen (port 0 for any).
    pub listen: SocketAddr,
    /// Concurrency slots.
    pub slots: u32,
    /// Speed relative to one A100 (e.g. `h100x2` = 4.0, `t4` = 0.25).
    pub speed: f64,
    /// Service time of an empty request on an A100, ms.
    pub base_ms: f64,
    /// Extra service time per KiB of request body on an A100, ms.
    pub per_kib_ms: f64,
    /// Requests allowed to wait for a slot; more are refused with 503.
    pub max_queue: u32,
    /// The agent's load endpoint (`http://127.0.0.1:P/load`) to report to, if any.
    pub report_url: Option<String>,
    /// Reports are sent on every change (at most every 50 ms) and at least this often.
    pub report_every: Duration,
    /// The `max_concurrency` the service reports (`/load` and the agent reports); `None`
    /// reports the real `slots`. A value other than `slots` is a lie, the way a volunteer's
    /// record may overstate its capacity.
    pub claim_slots: Option<u32>,
}

impl Default for MockServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            slots: 4,
            speed: 1.0,
            base_ms: 50.0,
            per_kib_ms: 0.5,
            max_queue: 64,
            report_url: None,
            report_every: Duration::from_secs(2),
            claim_slots: None,
        }
    }
}

impl MockServiceConfig {
    /// Checks the figures make sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 {
            return Err("mock service needs at least one slot".into());
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err("mock service speed must be a positive number".into());
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !(non_negative(self.base_ms) && non_negative(self.per_kib_ms)) {
            return Err("mock service times must be non-negative".into());
        }
        Ok(())
    }

    /// The service time of a request of `bytes` under `fault`.
    pub fn service_time(&self, bytes: usize, fault: Fault) -> Duration {
        let kib = bytes as f64 / 1024.0;
        let mut ms = (self.base_ms + self.per_kib_ms * kib) / self.speed;
        if let Fault::Slow { factor } = fault
            && factor.is_finite()
            && factor > 0.0
        {
            ms *= factor;
        }
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }
}

/// What `GET /admin/state` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MockState {
    /// Current load, with the real slots as `max_concurrency` (not the claim).
    pub load: LoadInfo,
    /// Current failure mode.
    pub fault: Fault,
    /// Requests answered 200 so far.
    pub served: u64,
    /// Work requests received so far, whatever became of them (answered, refused, never
    /// answered): what the gateway sent here.
    pub received: u64,
    /// Requests refused or failed so far.
    pub failed: u64,
    /// Whether new work is accepted (false once draining).
    pub accepting: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_time_scales_with_speed_size_and_slowness() {
        let c = MockServiceConfig {
            base_ms: 100.0,
            per_kib_ms: 1.0,
            speed: 2.0,
            ..Default::default()
        };
        assert_eq!(c.service_time(0, Fault::None), Duration::from_millis(50));
        assert_eq!(
            c.service_time(100 * 1024, Fault::None),
            Duration::from_millis(100)
        );
        assert_eq!(
            c.service_time(0, Fault::Slow { factor: 4.0 }),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn fault_json_shape() {
        let f: Fault = serde_json::from_str(r#"{"mode":"slow","factor":3.0}"#).unwrap();
        assert_eq!(f, Fault::Slow { factor: 3.0 });
        let f: Fault = serde_json::from_str(r#"{"mode":"hang"}"#).unwrap();
        assert_eq!(f, Fault::Hang);
        let f: Fault = serde_json::from_str(r#"{"mode":"garbage"}"#).unwrap();
        assert_eq!(f, Fault::Garbage);
        let f: Fault = serde_json::from_str(r#"{"mode":"black_hole"}"#).unwrap();
        assert_eq!(f, Fault::BlackHole);
        let f: Fault = serde_json::from_str(r#"{"mode":"tarpit","byte_every_ms":250}"#).unwrap();
        assert_eq!(f, Fault::Tarpit { byte_every_ms: 250 });
    }
}
