//! What the harness reads from a gateway, over its public HTTP API as any client would: the
//! seed list, the worker count and listing, and the central-call counters in `/metrics`.

use std::time::{Duration, Instant};

use gpumesh_dht::record::WorkerState;
use gpumesh_dht::wire::BootstrapResponse;
use serde::Deserialize;
use tracing::warn;

use crate::error::LoadtestError;

/// The fields of `GET /healthz` the harness reads.
#[derive(Debug, Deserialize)]
struct Health {
    workers: usize,
}

/// The fields of `GET /api/workers` the harness reads.
#[derive(Debug, Deserialize)]
struct WorkersPage {
    workers: Vec<ListedWorker>,
}

/// One worker of `GET /api/workers`, as far as the harness reads it.
#[derive(Debug, Deserialize)]
struct ListedWorker {
    id: String,
    state: WorkerState,
}

/// An HTTP client for loopback reads (no proxy; a 5 s limit, since a gateway busy with
/// thousands of agents can be slow to answer).
///
/// # Errors
/// [`LoadtestError::Http`] when the client cannot be built.
pub fn client() -> Result<reqwest::Client, LoadtestError> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| LoadtestError::Http(e.to_string()))
}

async fn get_json<T: serde::de::DeserializeOwned>(http: &reqwest::Client, url: &str) -> Option<T> {
    http.get(url).send().await.ok()?.json().await.ok()
}

/// Waits until `GET /api/dht/bootstrap` lists at least one seed.
///
/// # Errors
/// [`LoadtestError::Timeout`] when the gateway cannot be reached or lists no seed.
pub async fn wait_for_bootstrap(url: &str, limit: Duration) -> Result<(), LoadtestError> {
    let http = client()?;
    let deadline = Instant::now() + limit;
    loop {
        let seeds: Option<BootstrapResponse> =
            get_json(&http, &format!("{url}/api/dht/bootstrap")).await;
        if seeds.is_some_and(|s| s.count > 0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LoadtestError::Timeout(format!(
                "{url}/api/dht/bootstrap listed no seed within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many workers the gateway's view holds (`GET /healthz`'s `workers`, the count
/// `/api/workers` lists, without serialising every worker: at 2000 workers that listing is
/// megabytes per poll), `None` when the gateway cannot be reached.
pub async fn worker_count(http: &reqwest::Client, url: &str) -> Option<usize> {
    get_json::<Health>(http, &format!("{url}/healthz"))
        .await
        .map(|h| h.workers)
}

/// Waits until the gateway lists at least `n` workers; returns how long it took.
///
/// # Errors
/// [`LoadtestError::Timeout`] with the count reached.
pub async fn wait_for_workers(
    url: &str,
    n: usize,
    limit: Duration,
) -> Result<Duration, LoadtestError> {
    let http = client()?;
    let start = Instant::now();
    let mut seen = 0;
    loop {
        seen = worker_count(&http, url).await.unwrap_or(seen);
        if seen >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            return Err(LoadtestError::Timeout(format!(
                "{seen} of {n} workers visible at {url} after {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ids of the workers `GET /api/workers` lists as online; `None` when unreadable.
pub async fn online_ids(http: &reqwest::Client, url: &str) -> Option<Vec<String>> {
    let page: WorkersPage = get_json(http, &format!("{url}/api/workers")).await?;
    Some(
        page.workers
            .into_iter()
            .filter(|w| w.state == WorkerState::Online)
            .map(|w| w.id)
            .collect(),
    )
}

/// Sums every sample of the families whose name starts with `prefix` in Prometheus text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bootstrap and registry calls (the central endpoints) and DHT messages, from `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Central {
    /// Bootstrap plus registry requests.
    pub calls: f64,
    /// DHT messages the gateway's node sent and received.
    pub dht_messages: f64,
}

/// The central-call counters; `NaN` when `/metrics` could not be read in five tries (a busy
/// gateway can miss the 5 s client timeout), so that a failed read shows as `null` in the
/// report instead of a zero that would make the difference negative.
pub async fn central(http: &reqwest::Client, url: &str) -> Central {
    for _ in 0..5 {
        if let Some(text) = metrics_text(http, url).await {
            return Central {
                calls: metric_sum(&text, "gpumesh_gateway_bootstrap_requests_total")
                    + metric_sum(&text, "gpumesh_gateway_registry_requests_total"),
                dht_messages: metric_sum(&text, "gpumesh_dht_messages_total"),
            };
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    warn!("gateway /metrics unreadable; central-call figures unknown");
    Central {
        calls: f64::NAN,
        dht_messages: f64::NAN,
    }
}

/// The gateway's `/metrics` page, if it answered.
async fn metrics_text(http: &reqwest::Client, url: &str) -> Option<String> {
    http.get(format!("{url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Canary and cross-check requests the gateway has sent (NaN when `/metrics` is unreadable).
pub async fn checks_sent(http: &reqwest::Client, url: &str) -> f64 {
    match metrics_text(http, url).await {
        Some(text) => metric_sum(&text, CANARIES_METRIC) + metric_sum(&text, CROSS_CHECKS_METRIC),
        None => f64::NAN,
    }
}

/// The gateway's counter of canaries sent.
const CANARIES_METRIC: &str = "gpumesh_gateway_canaries_total";
/// The gateway's counter of cross-check replays sent.
const CROSS_CHECKS_METRIC: &str = "gpumesh_gateway_cross_checks_total";

/// The ids of workers not in `liars` that the gateway lists as ejected or distrusted now.
pub async fn honest_workers_out(
    http: &reqwest::Client,
    url: &str,
    liars: &std::collections::BTreeSet<String>,
) -> Vec<String> {
    let Some(page) = get_json::<serde_json::Value>(http, &format!("{url}/api/workers")).await
    else {
        return Vec::new();
    };
    page.get("workers")
        .and_then(|w| w.as_array())
        .into_iter()
        .flatten()
        .filter(|w| is_out(w))
        .filter_map(|w| w.get("id")?.as_str())
        .filter(|id| !liars.contains(*id))
        .map(str::to_owned)
        .collect()
}

/// Whether a worker of `/api/workers` is ejected or distrusted.
fn is_out(worker: &serde_json::Value) -> bool {
    let distrusted = worker
        .pointer("/trust/distrusted")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let ejected = worker.get("ejected_for_s").is_some_and(|v| !v.is_null());
    distrusted || ejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metric_families_and_reads_the_worker_listing() {
        let text =
            "# HELP x\ngpumesh_x_total{a=\"1\"} 3\ngpumesh_x_total{a=\"2\"} 4.5\ngpumesh_y 9\n";
        assert_eq!(metric_sum(text, "gpumesh_x_total"), 7.5);
        let page: WorkersPage = serde_json::from_str(
            r#"{"workers":[{"id":"a","state":"online","source":"dht"},{"id":"b","state":"draining"}],"count":2}"#,
        )
        .unwrap();
        assert_eq!(page.workers[0].state, WorkerState::Online);
        assert_eq!(page.workers[1].id, "b");
    }
}
