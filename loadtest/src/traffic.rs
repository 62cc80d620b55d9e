//! Traffic: goose users driving `/api/service/...`, and a recorder of every answer.
//!
//! Goose drives the load (users, ramp-up, run time); each transaction times its own request
//! and records it here, in one hdrhistogram for the whole run and one per second for the
//! chart, so percentiles and the timeline come from the same measurements.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goose::config::GooseConfiguration;
use goose::prelude::*;
use hdrhistogram::Histogram;

use crate::error::LoadtestError;

/// One second of the run, for the chart.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Second {
    /// Seconds since the traffic started.
    pub t: u64,
    /// Successful answers.
    pub ok: u64,
    /// Failed answers.
    pub failed: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

#[derive(Debug)]
struct Inner {
    all: Histogram<u64>,
    /// Finished seconds, reduced to their figures. One full histogram per second (~220 KB at
    /// these bounds) grew a 30-minute soak by ~10 MiB a minute, so only the current second
    /// keeps one.
    seconds: Vec<Second>,
    /// The second being recorded: its index, ok, failed, latencies.
    current: (usize, u64, u64, Histogram<u64>),
    errors: BTreeMap<String, u64>,
    unclear: u64,
    /// 2xx answers whose `answer` was checked, and those that were wrong.
    answers: u64,
    garbage: u64,
}

/// Every answer of a run: latency (µs) and outcome.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    inner: Mutex<Inner>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds are valid")
}

/// Whole-run figures.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Answers recorded.
    pub requests: u64,
    /// Successful answers (2xx).
    pub ok: u64,
    /// Failed answers.
    pub failed: u64,
    /// Latency percentiles, ms: p50, p95, p99, p99.9, max.
    pub latency_ms: BTreeMap<String, f64>,
    /// Failures by error code (the gateway's JSON `code`, `http_<status>` or `transport`).
    pub errors: BTreeMap<String, u64>,
    /// Failures whose answer did not carry the documented JSON error body (`code`,
    /// `message`, `fault` ∈ client/worker/gateway): transport errors, timeouts, bare statuses.
    pub failures_without_error_body: u64,
    /// 2xx answers delivered to clients (each checked against the request's known answer).
    pub answers_delivered: u64,
    /// 2xx answers whose `answer` field was wrong or missing: garbage that reached a client.
    pub garbage_answers_delivered: u64,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            inner: Mutex::new(Inner {
                all: histogram(),
                seconds: Vec::new(),
                current: (0, 0, 0, histogram()),
                errors: BTreeMap::new(),
                unclear: 0,
                answers: 0,
                garbage: 0,
            }),
        })
    }

    /// Records one answer; `error` is `None` on success.
    pub fn record(&self, latency: Duration, error: Option<String>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let sec = self.start.elapsed().as_secs() as usize;
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = g.all.record(us.min(120_000_000));
        while g.current.0 < sec {
            let done = reduce(&g.current);
            g.seconds.push(done);
            let next = g.current.0 + 1;
            g.current.0 = next;
            g.current.1 = 0;
            g.current.2 = 0;
            g.current.3.reset();
        }
        let slot = &mut g.current;
        match &error {
            None => slot.1 += 1,
            Some(_) => slot.2 += 1,
        }
        let _ = slot.3.record(us.min(120_000_000));
        if let Some(code) = error {
            *g.errors.entry(code).or_default() += 1;
        }
    }

    /// Counts a 2xx answer delivered to a client; `right`: its `answer` was the known one.
    pub fn record_answer(&self, right: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.answers += 1;
        if !right {
            g.garbage += 1;
        }
    }

    /// Counts a failure whose answer lacked the documented JSON error body.
    pub fn record_unclear(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).unclear += 1;
    }

    /// Failures recorded so far.
    pub fn failures(&self) -> u64 {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.seconds.iter().map(|s| s.failed).sum::<u64>() + g.current.2
    }

    /// The whole-run figures.
    pub fn summary(&self) -> Summary {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ok: u64 = g.seconds.iter().map(|s| s.ok).sum::<u64>() + g.current.1;
        let failed: u64 = g.seconds.iter().map(|s| s.failed).sum::<u64>() + g.current.2;
        let ms = |q: f64| g.all.value_at_quantile(q) as f64 / 1000.0;
        let latency_ms = [
            ("p50", ms(0.5)),
            ("p95", ms(0.95)),
            ("p99", ms(0.99)),
            ("p999", ms(0.999)),
            ("max", g.all.max() as f64 / 1000.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Summary {
            requests: ok + failed,
            ok,
            failed,
            latency_ms,
            errors: g.errors.clone(),
            failures_without_error_body: g.unclear,
            answers_delivered: g.answers,
            garbage_answers_delivered: g.garbage,
        }
    }

    /// The per-second timeline.
    pub fn timeline(&self) -> Vec<Second> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = g.seconds.clone();
        all.push(reduce(&g.current));
        all
    }
}

/// One second's figures from its counters and histogram.
fn reduce((t, ok, failed, h): &(usize, u64, u64, Histogram<u64>)) -> Second {
    Second {
        t: *t as u64,
        ok: *ok,
        failed: *failed,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// Options of the goose part of a run.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The gateway's base URL.
    pub url: String,
    /// Concurrent users.
    pub users: usize,
    /// Run time after ramp-up.
    pub duration: Duration,
    /// Pause between one user's requests.
    pub think: Duration,
}

async fn one_request(user: &mut GooseUser, rec: &Recorder, n: usize) -> TransactionResult {
    let service = match n % 10 {
        0..=5 => "ocr",
        6..=8 => "embed",
        _ => "llm",
    };
    let path = format!("/api/service/{service}/run");
    // Every body differs, so every answer is checked against its own known answer.
    let body = request_body(n);
    let expected = gpumesh_testkit::answer_for(&body);
    // OCR, embeddings and inference are pure functions: the users say so with an
    // Idempotency-Key (unique per request), so the gateway may repeat a request whose worker
    // died mid-request on another worker.
    let key = format!("lt-{}-{n}", std::process::id());
    let request = match user.get_request_builder(&GooseMethod::Post, &path) {
        Ok(b) => GooseRequest::builder()
            .method(GooseMethod::Post)
            .path(path.as_str())
            .set_request_builder(b.header("idempotency-key", key).body(body))
            .build(),
        Err(e) => {
            rec.record_unclear();
            rec.record(Duration::ZERO, Some(format!("goose: {e}")));
            return Ok(());
        }
    };
    let started = Instant::now();
    let answer = user.request(request).await;
    let error = match answer {
        Err(e) => Some(format!("goose: {e}")),
        Ok(r) => match r.response {
            Err(e) if e.is_timeout() => Some("timeout".to_owned()),
            Err(_) => Some("transport".to_owned()),
            Ok(resp) if resp.status().is_success() => match resp.bytes().await {
                Ok(bytes) => {
                    rec.record_answer(is_right(&bytes, &expected));
                    None
                }
                // The status came but the body broke off (a deadline cut a tarpit).
                Err(_) => Some("body".to_owned()),
            },
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body = resp.json::<serde_json::Value>().await.ok();
                let code = body.as_ref().and_then(documented_code);
                if code.is_none() {
                    rec.record_unclear();
                }
                Some(code.unwrap_or_else(|| format!("http_{status}")))
            }
        },
    };
    if matches!(error.as_deref(), Some("timeout" | "transport" | "body"))
        || error.as_ref().is_some_and(|e| e.starts_with("goose: "))
    {
        rec.record_unclear();
    }
    rec.record(started.elapsed(), error);
    Ok(())
}

/// The 256-byte body of request `n`: its number, padded.
fn request_body(n: usize) -> Vec<u8> {
    let mut body = format!("request {n:012} ").into_bytes();
    body.resize(256, b'x');
    body
}

/// Whether an answer's `answer` field is `expected`.
fn is_right(bytes: &[u8], expected: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("answer")?.as_str().map(|a| a == expected))
        .unwrap_or(false)
}

/// The error `code` when `body` has the gateway's documented error shape: a non-empty
/// `code` and `message`, and `fault` one of `client`, `worker`, `gateway`.
pub fn documented_code(body: &serde_json::Value) -> Option<String> {
    let text = |k: &str| body.get(k)?.as_str().filter(|s| !s.trim().is_empty());
    let fault = text("fault")?;
    if !matches!(fault, "client" | "worker" | "gateway") {
        return None;
    }
    text("message")?;
    text("code").map(str::to_owned)
}

/// Runs goose users against the gateway for the configured time, recording into `rec`.
///
/// # Errors
/// [`LoadtestError::Goose`] when goose cannot start or fails.
pub async fn drive(config: &TrafficConfig, rec: Arc<Recorder>) -> Result<(), LoadtestError> {
    let goose_err = |e: GooseError| LoadtestError::Goose(e.to_string());
    let counter = Arc::new(AtomicUsize::new(0));
    let tx = Transaction::new(Arc::new(move |user: &mut GooseUser| {
        let rec = Arc::clone(&rec);
        let n = counter.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { one_request(user, &rec, n).await })
    }));
    let think = config.think;
    let scenario = scenario!("service")
        .set_wait_time(think / 2, think + think / 2)
        .map_err(goose_err)?
        .register_transaction(tx);
    let users = config.users.max(1);
    let rate = format!("{}", users.max(10));
    GooseAttack::initialize_with_config(GooseConfiguration::default())
        .map_err(goose_err)?
        .register_scenario(scenario)
        .set_default(GooseDefault::Host, config.url.as_str())
        .map_err(goose_err)?
        .set_default(GooseDefault::Users, users)
        .map_err(goose_err)?
        .set_default(GooseDefault::IncreaseRate, rate.as_str())
        .map_err(goose_err)?
        .set_default(
            GooseDefault::RunTime,
            config.duration.as_secs().max(1) as usize,
        )
        .map_err(goose_err)?
        .set_default(GooseDefault::NoTelnet, true)
        .map_err(goose_err)?
        .set_default(GooseDefault::NoPrintMetrics, true)
        .map_err(goose_err)?
        .set_default(GooseDefault::NoErrorSummary, true)
        .map_err(goose_err)?
        .set_default(GooseDefault::Quiet, 1)
        .map_err(goose_err)?
        .execute()
        .await
        .map_err(goose_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_error_shape_counts_as_clear() {
        let ok = serde_json::json!({"code": "no_eligible_worker", "message": "No worker.", "fault": "gateway"});
        assert_eq!(documented_code(&ok).as_deref(), Some("no_eligible_worker"));
        for bad in [
            serde_json::json!({"code": "x", "message": "m"}),
            serde_json::json!({"code": "x", "message": "", "fault": "worker"}),
            serde_json::json!({"code": "x", "message": "m", "fault": "nobody"}),
            serde_json::json!({"error": "x"}),
            serde_json::json!("text"),
        ] {
            assert_eq!(documented_code(&bad), None, "{bad}");
        }
        let rec = Recorder::new();
        rec.record(Duration::from_millis(3), Some("transport".into()));
        rec.record_unclear();
        rec.record(Duration::from_millis(3), None);
        let s = rec.summary();
        assert_eq!(
            (s.requests, s.failed, s.failures_without_error_body),
            (2, 1, 1)
        );
    }

    #[test]
    fn answers_are_checked_against_their_own_body() {
        let (a, b) = (request_body(1), request_body(2));
        assert_eq!(a.len(), 256);
        assert_ne!(a, b);
        let right = serde_json::json!({"answer": gpumesh_testkit::answer_for(&a)}).to_string();
        assert!(is_right(right.as_bytes(), &gpumesh_testkit::answer_for(&a)));
        assert!(!is_right(
            right.as_bytes(),
            &gpumesh_testkit::answer_for(&b)
        ));
        assert!(!is_right(b"not json", "x"));
        let rec = Recorder::new();
        rec.record_answer(true);
        rec.record_answer(false);
        let s = rec.summary();
        assert_eq!((s.answers_delivered, s.garbage_answers_delivered), (2, 1));
    }
}
