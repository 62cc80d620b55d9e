//! Request metrics, recorded in one place: every forwarded or refused service request ends
//! here exactly once, with its service label, outcome and source.
//!
//! Labels stay bounded: the service is named only when some worker offers it (anything else
//! is `unknown`), outcomes come from fixed lists. The `ok` series, the hot path, are cached
//! per service and source so a successful request neither allocates label strings nor hashes
//! them into the families.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::directory::Directory;
use crate::error::GatewayError;
use crate::metrics::{Metrics, RequestLabels};
use crate::sources::Source;

/// The request metric families and the cache of their `ok` series.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    metrics: Metrics,
    ok: Arc<OkSeries>,
}

impl RequestMetrics {
    /// Records into `metrics`' request families.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            ok: Arc::default(),
        }
    }

    /// A request refused or failed before a worker answered: counted under the error's code.
    /// `source` is the provenance of the worker that failed, `None` when none was chosen.
    pub fn error(
        &self,
        directory: &Directory,
        service: &str,
        err: &GatewayError,
        source: Option<Source>,
        started: Instant,
    ) {
        let service = if directory.knows_service(service) {
            service
        } else {
            "unknown"
        };
        self.record(service, err.code(), source, started);
    }

    /// The handles a forwarded request's end is recorded with (see [`Ending`]).
    pub(super) fn ending(&self, service: &str, source: Source) -> Ending {
        let series = self.ok.get(service);
        Ending {
            ok: series.ok(&self.metrics, source),
            service: Arc::clone(&series.service),
            source,
            metrics: self.clone(),
        }
    }

    fn record(&self, service: &str, outcome: &str, source: Option<Source>, started: Instant) {
        let l = RequestLabels {
            service: service.to_owned(),
            outcome: outcome.to_owned(),
            source: source.map_or("none", Source::as_str).to_owned(),
        };
        self.metrics.requests.get_or_create(&l).inc();
        self.metrics
            .request_duration
            .get_or_create(&l)
            .observe(started.elapsed().as_secs_f64());
    }
}

/// How a forwarded request whose worker answered is recorded when its body ends.
pub(super) struct Ending {
    ok: (Counter, Histogram),
    service: Arc<str>,
    source: Source,
    metrics: RequestMetrics,
}

impl Ending {
    /// `None`: the body ended cleanly with a non-5xx status; else the outcome label
    /// (`upstream_5xx`, `body_failed`, `client_gone`).
    pub(super) fn record(&self, outcome: Option<&str>, started: Instant) {
        match outcome {
            None => {
                self.ok.0.inc();
                self.ok.1.observe(started.elapsed().as_secs_f64());
            }
            Some(outcome) => {
                self.metrics
                    .record(&self.service, outcome, Some(self.source), started);
            }
        }
    }
}

/// Cached handles of the `outcome="ok"` series, per service and source. Services here are
/// only those a worker was picked for (bounded like the labels themselves).
#[derive(Debug, Default)]
struct OkSeries(RwLock<HashMap<String, Arc<ServiceSeries>>>);

#[derive(Debug)]
struct ServiceSeries {
    service: Arc<str>,
    by_source: [OnceLock<(Counter, Histogram)>; 2],
}

impl OkSeries {
    fn get(&self, service: &str) -> Arc<ServiceSeries> {
        if let Some(s) = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
        {
            return Arc::clone(s);
        }
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(service.to_owned()).or_insert_with(|| {
            Arc::new(ServiceSeries {
                service: Arc::from(service),
                by_source: [OnceLock::new(), OnceLock::new()],
            })
        }))
    }
}

impl ServiceSeries {
    fn ok(&self, metrics: &Metrics, source: Source) -> (Counter, Histogram) {
        let slot = match source {
            Source::Dht => 0,
            Source::Registry => 1,
        };
        self.by_source[slot]
            .get_or_init(|| {
                let l = RequestLabels {
                    service: self.service.to_string(),
                    outcome: "ok".to_owned(),
                    source: source.as_str().to_owned(),
                };
                (
                    metrics.requests.get_or_create(&l).clone(),
                    metrics.request_duration.get_or_create(&l).clone(),
                )
            })
            .clone()
    }
}
