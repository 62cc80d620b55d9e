//! Prometheus metrics of a node (prometheus-client 0.25, as libp2p-metrics uses).
//!
//! [`DhtMetrics`] is cheap to clone (every series is shared), so several nodes may share one
//! (the bench sums them that way) and a caller registers it once into its own `Registry`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels of `records_rejected`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RejectLabels {
    /// `record`, `provider` or `gossip`.
    pub kind: &'static str,
    /// [`crate::RejectReason::as_str`].
    pub reason: &'static str,
}

/// Labels of `lookups`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LookupLabels {
    /// `get_record`, `get_providers`, `put_record`, `provide`, `bootstrap`.
    pub kind: &'static str,
    /// `ok`, `not_found`, `timeout`, `error`.
    pub outcome: &'static str,
}

/// Labels of `messages`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MessageLabels {
    /// `kad_in` (requests answered), `kad_out` (requests sent), `gossip_in`, `gossip_out`.
    pub kind: &'static str,
}

/// Metrics of one or more nodes.
#[derive(Debug, Clone)]
pub struct DhtMetrics {
    /// DHT queries by kind and outcome.
    pub lookups: Family<LookupLabels, Counter>,
    /// DHT query duration, seconds.
    pub lookup_seconds: Histogram,
    /// Inbound records accepted into the store.
    pub records_stored: Counter,
    /// Inbound records, providers and gossip messages refused, by reason.
    pub records_rejected: Family<RejectLabels, Counter>,
    /// Connected peers.
    pub peers: Gauge,
    /// Peers in the routing table.
    pub routing_table: Gauge,
    /// Bootstraps run, by outcome.
    pub bootstraps: Family<LookupLabels, Counter>,
    /// Messages by kind (request/response exchanges and gossip deliveries).
    pub messages: Family<MessageLabels, Counter>,
    /// Workers in the registry view.
    pub registry_workers: Gauge,
}

impl Default for DhtMetrics {
    fn default() -> Self {
        Self {
            lookups: Family::default(),
            lookup_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            records_stored: Counter::default(),
            records_rejected: Family::default(),
            peers: Gauge::default(),
            routing_table: Gauge::default(),
            bootstraps: Family::default(),
            messages: Family::default(),
            registry_workers: Gauge::default(),
        }
    }
}

impl DhtMetrics {
    /// Registers every series under the `gpumesh_dht` prefix of `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gpumesh_dht");
        r.register(
            "lookups",
            "DHT queries by kind and outcome",
            self.lookups.clone(),
        );
        r.register(
            "lookup_seconds",
            "DHT query duration",
            self.lookup_seconds.clone(),
        );
        r.register(
            "records_stored",
            "Inbound records accepted",
            self.records_stored.clone(),
        );
        r.register(
            "records_rejected",
            "Inbound records, providers and gossip messages refused, by reason",
            self.records_rejected.clone(),
        );
        r.register("peers", "Connected peers", self.peers.clone());
        r.register(
            "routing_table_peers",
            "Peers in the Kademlia routing table",
            self.routing_table.clone(),
        );
        r.register(
            "bootstraps",
            "Bootstraps by outcome",
            self.bootstraps.clone(),
        );
        r.register(
            "messages",
            "DHT and gossip messages by kind",
            self.messages.clone(),
        );
        r.register(
            "registry_workers",
            "Workers in the registry view",
            self.registry_workers.clone(),
        );
    }

    pub(crate) fn reject(&self, kind: &'static str, reason: crate::RejectReason) {
        self.records_rejected
            .get_or_create(&RejectLabels {
                kind,
                reason: reason.as_str(),
            })
            .inc();
    }

    /// How many items of `kind` were rejected for `reason` (tests and the bench read this).
    pub fn rejected(&self, kind: &'static str, reason: crate::RejectReason) -> u64 {
        self.records_rejected
            .get_or_create(&RejectLabels {
                kind,
                reason: reason.as_str(),
            })
            .get()
    }

    pub(crate) fn message(&self, kind: &'static str, n: u64) {
        self.messages
            .get_or_create(&MessageLabels { kind })
            .inc_by(n);
    }

    /// Messages counted for `kind` (see [`MessageLabels`]).
    pub fn message_count(&self, kind: &'static str) -> u64 {
        self.messages.get_or_create(&MessageLabels { kind }).get()
    }

    pub(crate) fn lookup(&self, kind: &'static str, outcome: &'static str, secs: f64) {
        self.lookups
            .get_or_create(&LookupLabels { kind, outcome })
            .inc();
        self.lookup_seconds.observe(secs);
    }
}
