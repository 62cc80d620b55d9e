//! The gateway's Prometheus metrics (prometheus-client; one registry shared with libp2p's).
//!
//! Labels are bounded: services known to the directory (anything else is `unknown`), route
//! templates (never raw paths), outcomes from fixed lists, and worker ids whose series are
//! removed when the worker leaves.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a forwarded (or refused) service request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Service name, or `unknown`.
    pub service: String,
    /// `ok`, `upstream_5xx`, or an error code such as `worker_failed`.
    pub outcome: String,
    /// `dht`, `registry`, or `none` when no worker was chosen.
    pub source: String,
}

/// Labels with a service only.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: String,
}

/// Labels of the worker-count gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerCountLabels {
    /// `dht` or `registry`.
    pub source: String,
    /// `joining`, `online` or `draining`.
    pub state: String,
}

/// Labels of the workers-by-GPU gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuCountLabels {
    /// The speed class of the worker's first GPU (`h100`, `a100`, …, `other`; `none` when
    /// it publishes no GPU): a bounded set, never the raw model string.
    pub gpu: String,
    /// `joining`, `online` or `draining`.
    pub state: String,
}

/// Labels naming one worker.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// Worker id.
    pub worker: String,
}

/// Labels of a refused record.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `dht` or `registry`.
    pub source: String,
    /// Why: `upstream_policy`, `invalid`, `stale`, an implausible claim (`too_many_gpus`,
    /// `vram_beyond_class`, `free_above_total`) for refusals; what was cut (`concurrency`,
    /// `in_flight`, `queue_depth`) for clamps.
    pub reason: String,
}

/// Labels with an outcome only.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `rate_limited`, an error code, …
    pub outcome: String,
}

/// Labels of a registry call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    /// `register`, `heartbeat` or `deregister`.
    pub op: String,
    /// `ok` or an error code.
    pub outcome: String,
}

/// Labels of every HTTP request the gateway answers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template (`/api/service/{service}/{*path}`) or `unmatched`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels with a bounded kind only (evidence kinds, deadline kinds).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// From a fixed list: `canary_passed`, … for evidence; `ttfb` or `total` for deadlines.
    pub kind: String,
}

/// Labels of an answer check (a canary or a cross-check).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// The service checked (only services named in the operator's check plan).
    pub service: String,
    /// Canaries: `passed`, `failed`, `deadline`, `unreachable`. Cross-checks: `agreed`,
    /// `disagreed`, `no_quorum`, `failed`.
    pub result: String,
}

/// Labels of the workers-by-trust gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BandLabels {
    /// `<0.1`, `0.1-0.5`, `0.5-0.9` or `>=0.9`.
    pub band: String,
}

/// The trust bands of `workers_by_trust`, lowest first, with their lower bounds.
pub const TRUST_BANDS: [(&str, f64); 4] = [
    ("<0.1", 0.0),
    ("0.1-0.5", 0.1),
    ("0.5-0.9", 0.5),
    (">=0.9", 0.9),
];

/// A histogram family with the gateway's latency buckets.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// All gateway metric families. Cheap to clone (each family is an `Arc`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Service requests by service, outcome and worker source.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from request to the end of the response body, by service and outcome.
    pub request_duration: HistogramFamily<RequestLabels>,
    /// Requests re-sent to another worker after the first could not be reached.
    pub retries: Family<ServiceLabels, Counter>,
    /// Workers in the view by source and state.
    pub workers: Family<WorkerCountLabels, Gauge>,
    /// Workers in the view by GPU class and state.
    pub workers_by_gpu: Family<GpuCountLabels, Gauge>,
    /// Requests in flight per worker (series removed when the worker leaves).
    pub worker_in_flight: Family<WorkerLabels, Gauge>,
    /// Records refused before entering the view.
    pub records_refused: Family<RefusedLabels, Counter>,
    /// Records and load reports whose claims were cut to a ceiling, by source and what was cut.
    pub records_clamped: Family<RefusedLabels, Counter>,
    /// Bootstrap requests by outcome.
    pub bootstrap_requests: Family<OutcomeLabels, Counter>,
    /// Coordinator registry requests by operation and outcome.
    pub registry_requests: Family<RegistryLabels, Counter>,
    /// Every HTTP answer by route template and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Trust evidence fed to the scheduler, by kind.
    pub trust_evidence: Family<KindLabels, Counter>,
    /// Canaries sent, by service and result.
    pub canaries: Family<CheckLabels, Counter>,
    /// Cross-checks run, by service and result.
    pub cross_checks: Family<CheckLabels, Counter>,
    /// Workers below the trust floor (no real traffic).
    pub workers_distrusted: Gauge,
    /// Workers by trust band.
    pub workers_by_trust: Family<BandLabels, Gauge>,
    /// Responses ended by a deadline, by kind (`ttfb`, `total`).
    pub deadline_misses: Family<KindLabels, Counter>,
    /// Cached `http_requests` handles by status and route template (the hot path builds no
    /// label strings).
    http_cache: Arc<RwLock<HashMap<u16, HashMap<String, Counter>>>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    /// Creates the families and registers them under `gpumesh_gateway_` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            workers: Family::default(),
            workers_by_gpu: Family::default(),
            worker_in_flight: Family::default(),
            records_refused: Family::default(),
            records_clamped: Family::default(),
            bootstrap_requests: Family::default(),
            registry_requests: Family::default(),
            http_requests: Family::default(),
            trust_evidence: Family::default(),
            canaries: Family::default(),
            cross_checks: Family::default(),
            workers_distrusted: Gauge::default(),
            workers_by_trust: Family::default(),
            deadline_misses: Family::default(),
            http_cache: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("gpumesh_gateway");
        r.register(
            "requests",
            "Service requests by outcome and worker source",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Service request time until the response body ends",
            m.request_duration.clone(),
        );
        r.register(
            "retries",
            "Requests re-sent to another worker",
            m.retries.clone(),
        );
        r.register(
            "workers",
            "Workers in the view by source and state",
            m.workers.clone(),
        );
        r.register(
            "workers_by_gpu",
            "Workers in the view by GPU class (first GPU) and state",
            m.workers_by_gpu.clone(),
        );
        r.register(
            "worker_in_flight",
            "Requests in flight per worker",
            m.worker_in_flight.clone(),
        );
        r.register(
            "records_refused",
            "Worker records refused",
            m.records_refused.clone(),
        );
        r.register(
            "records_clamped",
            "Worker claims cut to a ceiling (concurrency, in-flight, queue depth)",
            m.records_clamped.clone(),
        );
        r.register(
            "bootstrap_requests",
            "Bootstrap requests",
            m.bootstrap_requests.clone(),
        );
        r.register(
            "registry_requests",
            "Fallback registry requests",
            m.registry_requests.clone(),
        );
        r.register(
            "http_requests",
            "HTTP answers by route and status",
            m.http_requests.clone(),
        );
        m.register_trust(r);
        m
    }

    fn register_trust(&self, r: &mut Registry) {
        r.register(
            "trust_evidence",
            "Trust evidence about workers' answers, by kind",
            self.trust_evidence.clone(),
        );
        r.register(
            "canaries",
            "Known-answer requests sent to workers, by service and result",
            self.canaries.clone(),
        );
        r.register(
            "cross_checks",
            "Real requests replayed on other workers and compared, by service and result",
            self.cross_checks.clone(),
        );
        r.register(
            "workers_distrusted",
            "Workers below the trust floor (no real traffic until a check passes)",
            self.workers_distrusted.clone(),
        );
        r.register(
            "workers_by_trust",
            "Workers by trust band",
            self.workers_by_trust.clone(),
        );
        r.register(
            "deadline_misses",
            "Responses ended by a deadline, by kind (ttfb, total)",
            self.deadline_misses.clone(),
        );
        for evidence in gpumesh_scheduler::Evidence::ALL {
            let _ = self.trust_evidence.get_or_create(&KindLabels {
                kind: evidence.label().to_owned(),
            });
        }
        for kind in ["ttfb", "total"] {
            let _ = self.deadline_misses.get_or_create(&KindLabels {
                kind: kind.to_owned(),
            });
        }
    }

    /// Counts one check result (`canaries` or `cross_checks` family).
    pub fn check(family: &Family<CheckLabels, Counter>, service: &str, result: &str) {
        family
            .get_or_create(&CheckLabels {
                service: service.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one HTTP answer by route template (or `unmatched`) and status.
    pub fn count_http(&self, route: &str, status: u16) {
        let cached = self
            .http_cache
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&status)
            .and_then(|by_route| by_route.get(route))
            .cloned();
        let counter = cached.unwrap_or_else(|| {
            let counter = self
                .http_requests
                .get_or_create(&HttpLabels {
                    route: route.to_owned(),
                    status,
                })
                .clone();
            self.http_cache
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(status)
                .or_default()
                .insert(route.to_owned(), counter.clone());
            counter
        });
        counter.inc();
    }

    /// Counts a registry call.
    pub fn registry_call(&self, op: &str, outcome: &str) {
        self.registry_requests
            .get_or_create(&RegistryLabels {
                op: op.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
