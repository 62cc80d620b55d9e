//! The HTTP server's connection figures: open connections, refusals at accept, and
//! connections or request bodies ended by a deadline.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The gateway holds as many connections as it may.
    Total,
    /// This client address holds as many connections as one client may.
    PerClient,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Total => "total_cap",
            Self::PerClient => "per_client_cap",
        }
    }
}

/// Which deadline closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nothing arrived within the first-byte timeout.
    FirstByte,
    /// Bytes arrived but no complete request head within the header read timeout.
    Head,
    /// No request in flight for the idle timeout.
    Idle,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Self::FirstByte => "first_byte",
            Self::Head => "head",
            Self::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

/// Handles on the connection metrics (cheap to clone).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionMetrics {
    open: Gauge,
    refused: Family<ReasonLabel, Counter>,
    timed_out: Family<PhaseLabel, Counter>,
    body_timeouts: Counter,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them under `gpumesh_gateway_` in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("gpumesh_gateway");
        r.register(
            "connections_open",
            "HTTP connections open now",
            m.open.clone(),
        );
        r.register(
            "connections_refused",
            "HTTP connections closed at accept, by the cap that refused them",
            m.refused.clone(),
        );
        r.register(
            "connections_timed_out",
            "HTTP connections closed by a deadline, by the phase that missed it",
            m.timed_out.clone(),
        );
        r.register(
            "request_body_timeouts",
            "Requests answered 408 because their body stalled past the body read timeout",
            m.body_timeouts.clone(),
        );
        m
    }

    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    pub(crate) fn closed(&self) {
        self.open.dec();
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: why.label(),
            })
            .inc();
    }

    pub(crate) fn timed_out(&self, phase: Phase) {
        self.timed_out
            .get_or_create(&PhaseLabel {
                phase: phase.label(),
            })
            .inc();
    }

    pub(crate) fn body_timed_out(&self) {
        self.body_timeouts.inc();
    }
}
