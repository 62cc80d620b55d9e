//! A real gateway (coordinator-only, `DHT_ENABLED=false`) in front of real fake workers on
//! loopback port 0: routing, streaming, failover, timeouts, in-flight tracking, metrics.

mod support;

use std::time::Duration;

use futures::StreamExt;
use gpumesh_dht::record::GpuInfo;
use gpumesh_gateway::Config;
use gpumesh_gateway::api::types::{ErrorBody, WorkerView};
use reqwest::StatusCode;
use support::{client, config, dead_addr, record, register, start_gateway, start_worker};

#[tokio::test]
async fn registry_worker_routes_and_streams_large_bodies_both_ways() {
    let (w, _stop) = start_worker("alpha").await;
    let gw = start_gateway(config()).await;
    assert_eq!(
        register(&gw, &record("alpha", "echo", &format!("http://{w}/"))).await,
        StatusCode::OK
    );

    // 1 MiB: above the replay buffer, so it streams through (chunked, no Content-Length).
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        payload.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let resp = client()
        .post(gw.url("/api/service/echo/echo/a%20b?x=1"))
        .header("connection", "x-hop")
        .header("x-hop", "must-not-pass")
        .header("authorization", "Bearer end-to-end")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["x-gpumesh-worker"], "alpha");
    assert_eq!(h["x-gpumesh-worker-source"], "registry");
    assert_eq!(h["x-served-by"], "alpha");
    assert_eq!(
        h["x-seen-host"],
        w.to_string().as_str(),
        "Host is the upstream's"
    );
    assert_eq!(h["x-seen-xff"], "127.0.0.1");
    assert_eq!(h["x-seen-xfh"], gw.addr.to_string().as_str());
    assert_eq!(
        h["x-seen-connection-named"], "",
        "headers named in Connection are dropped"
    );
    assert_eq!(
        h["x-seen-auth"], "",
        "client credentials stay at the gateway"
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), payload.as_slice());

    // Small bodies are buffered (re-sendable) and arrive intact too.
    let resp = client()
        .put(gw.url("/api/service/echo/echo/small"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "hello");
}

#[tokio::test]
async fn in_flight_is_held_until_the_response_body_ends() {
    let (w, _stop) = start_worker("slowbody").await;
    let gw = start_gateway(config()).await;
    register(&gw, &record("slowbody", "gen", &format!("http://{w}"))).await;
    let resp = client()
        .get(gw.url("/api/service/gen/stream"))
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(first.as_ref(), b"chunk0;");
    let view: WorkerView = gw.get_json("/api/workers/slowbody").await;
    assert_eq!(
        view.in_flight, 1,
        "headers arrived but the body has not ended"
    );
    client()
        .post(format!("http://{w}/release"))
        .send()
        .await
        .unwrap();
    let rest: Vec<_> = body.collect().await;
    assert_eq!(rest.len(), 1);
    // The gateway releases the slot when the body's end passes through it, which can be a
    // moment after the client has read the last bytes: poll briefly.
    let mut in_flight = u32::MAX;
    for _ in 0..50 {
        let view: WorkerView = gw.get_json("/api/workers/slowbody").await;
        in_flight = view.in_flight;
        if in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        in_flight, 0,
        "the body ended but the request is still in flight"
    );
}

#[tokio::test]
async fn a_dead_workers_requests_fail_over_to_a_live_one() {
    let (w, _stop) = start_worker("live").await;
    let gw = start_gateway(config()).await;
    // The live worker has a slow GPU class and the dead one a fast one, so the scheduler
    // prefers the dead worker first: the first request must fail over.
    let mut live = record("live", "echo", &format!("http://{w}"));
    live.gpus[0] = GpuInfo::new("Tesla T4", "GPU-live", 15_360, 14_000);
    register(&gw, &live).await;
    register(
        &gw,
        &record("dead", "echo", &format!("http://{}", dead_addr())),
    )
    .await;
    for i in 0..20 {
        // POST with a small body: re-sendable, and it never reached the dead worker.
        let resp = client()
            .post(gw.url("/api/service/echo/echo/x"))
            .body(format!("req{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        assert_eq!(resp.headers()["x-gpumesh-worker"], "live");
        assert_eq!(resp.text().await.unwrap(), format!("req{i}"));
    }
    let metrics = gw.get_text("/metrics").await;
    let retries = support_metric(
        &metrics,
        "gpumesh_gateway_retries_total",
        &[("service", "echo")],
    );
    assert!(
        retries >= 1.0,
        "the dead worker was tried at least once: {retries}"
    );
    let ok = support_metric(
        &metrics,
        "gpumesh_gateway_requests_total",
        &[
            ("service", "echo"),
            ("outcome", "ok"),
            ("source", "registry"),
        ],
    );
    assert_eq!(ok, 20.0);
}

/// A worker that reads each request's head and then closes the connection without an
/// answer, as a machine that dies mid-request; counts the requests it received.
async fn start_breaking_worker() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_broken_connection_is_retried_only_when_a_repeat_is_harmless() {
    use std::sync::atomic::Ordering;
    let (live, _stop) = start_worker("live").await;
    let (breaker, hits) = start_breaking_worker().await;
    // The breaking worker has the faster GPU, so a fresh gateway picks it first.
    let setup = || async {
        let gw = start_gateway(config()).await;
        let mut slow = record("live", "echo", &format!("http://{live}"));
        slow.gpus[0] = GpuInfo::new("Tesla T4", "GPU-live", 15_360, 14_000);
        register(&gw, &slow).await;
        register(
            &gw,
            &record("breaker", "echo", &format!("http://{breaker}")),
        )
        .await;
        gw
    };

    // A POST with an Idempotency-Key reached the breaking worker, then went to the live one.
    let gw = setup().await;
    let resp = client()
        .post(gw.url("/api/service/echo/echo/x"))
        .header("idempotency-key", "order-1")
        .body("job")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-gpumesh-worker"], "live");
    assert_eq!(resp.text().await.unwrap(), "job");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the breaking worker saw it once"
    );

    // The same POST without the key is not repeated: the worker may have run it.
    let gw = setup().await;
    let resp = client()
        .post(gw.url("/api/service/echo/echo/x"))
        .body("job")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(
        (err.code.as_str(), err.worker.as_deref()),
        ("worker_failed", Some("breaker")),
        "{err:?}"
    );
    assert!(
        err.message.contains("the connection to the worker broke"),
        "{err:?}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // GET is idempotent: retried without any key.
    let gw = setup().await;
    let resp = client()
        .get(gw.url("/api/service/echo/echo/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-gpumesh-worker"], "live");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn slow_worker_is_504_and_5xx_passes_through() {
    let (w, _stop) = start_worker("sleepy").await;
    let gw = start_gateway(Config {
        upstream_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    register(&gw, &record("sleepy", "gen", &format!("http://{w}"))).await;
    let resp = client()
        .get(gw.url("/api/service/gen/hang"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(
        (err.code.as_str(), err.worker.as_deref()),
        ("worker_timeout", Some("sleepy"))
    );
    // A worker's own 500 is its answer: passed through, not rewritten.
    let resp = client()
        .get(gw.url("/api/service/gen/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.text().await.unwrap(), "boom");
}

#[tokio::test]
async fn private_upstreams_are_refused_by_default_and_never_called() {
    let (w, _stop) = start_worker("private").await;
    let gw = start_gateway(Config {
        allow_private_upstreams: false,
        ..config()
    })
    .await;
    assert_eq!(
        register(&gw, &record("private", "echo", &format!("http://{w}"))).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        register(&gw, &record("private", "echo", &format!("https://{w}"))).await,
        StatusCode::BAD_REQUEST
    );
    let resp = client()
        .get(gw.url("/api/service/echo/echo/x"))
        .send()
        .await
        .unwrap();
    // Nothing entered the view, so no worker is known at all.
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_count_what_happened() {
    let (w, _stop) = start_worker("m").await;
    let gw = start_gateway(config()).await;
    register(&gw, &record("m", "echo", &format!("http://{w}"))).await;
    for _ in 0..3 {
        client()
            .get(gw.url("/api/service/echo/echo/x"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    client()
        .get(gw.url("/api/service/nope/x"))
        .send()
        .await
        .unwrap();
    client()
        .get(gw.url("/api/dht/bootstrap"))
        .send()
        .await
        .unwrap();
    let resp = client().get(gw.url("/metrics")).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    check_exposition_format(&text);
    let m = |name: &str, labels: &[(&str, &str)]| support_metric(&text, name, labels);
    assert_eq!(
        m(
            "gpumesh_gateway_requests_total",
            &[
                ("service", "echo"),
                ("outcome", "ok"),
                ("source", "registry")
            ]
        ),
        3.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_requests_total",
            &[
                ("service", "unknown"),
                ("outcome", "unknown_service"),
                ("source", "none")
            ]
        ),
        1.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_request_duration_seconds_count",
            &[("service", "echo"), ("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_workers",
            &[("source", "registry"), ("state", "online")]
        ),
        1.0
    );
    assert_eq!(
        m("gpumesh_gateway_worker_in_flight", &[("worker", "m")]),
        0.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_registry_requests_total",
            &[("op", "register"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_bootstrap_requests_total",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        m(
            "gpumesh_gateway_http_requests_total",
            &[
                ("route", "/api/service/{service}/{*path}"),
                ("status", "200")
            ]
        ),
        3.0
    );
    assert!(
        !text.contains("/api/service/echo/echo/x"),
        "raw paths never become labels"
    );

    // A departed worker's series goes away.
    let del = client()
        .delete(gw.url("/api/workers/m"))
        .bearer_auth(support::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    let text = gw.get_text("/metrics").await;
    assert!(!text.contains("worker=\"m\""));
}

#[tokio::test]
async fn registry_entries_expire_without_heartbeats() {
    let (w, _stop) = start_worker("brief").await;
    let gw = start_gateway(Config {
        registry_ttl: Duration::from_millis(300),
        ..config()
    })
    .await;
    register(&gw, &record("brief", "echo", &format!("http://{w}"))).await;
    assert_eq!(
        client()
            .get(gw.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let resp = client()
        .get(gw.url("/api/workers/brief"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// Checks the text exposition format line by line: `# TYPE/HELP/UNIT` comments, samples
/// `name{k="v",...} value`, and the closing `# EOF`.
fn check_exposition_format(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split(' ').next().unwrap();
            assert!(
                ["TYPE", "HELP", "UNIT"].contains(&kind),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels: {line}");
            for pair in series[name_end + 1..series.len() - 1]
                .split("\",")
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(
                    k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name: {line}"
                );
                assert!(v.starts_with('"'), "unquoted label value: {line}");
            }
        }
    }
}

/// The value of the sample `name` whose labels include every `(k, v)` in `labels` (0 if none).
fn support_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .filter(|(series, _)| {
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn in_flight_is_released_when_the_client_leaves_before_the_answer() {
    let (w, _stop) = start_worker("hanger").await;
    let gw = start_gateway(config()).await;
    register(&gw, &record("hanger", "gen", &format!("http://{w}"))).await;
    let gone = client()
        .get(gw.url("/api/service/gen/hang"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "the worker never answers");
    let released = support::eventually(Duration::from_secs(5), || async {
        let view: WorkerView = gw.get_json("/api/workers/hanger").await;
        view.in_flight == 0
    })
    .await;
    assert!(released, "the pick ended when the frontend went away");
}
