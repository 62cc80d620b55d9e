//! Every metric a Grafana dashboard in `dashboards/` queries is exported by a running gateway,
//! and every panel uses the provisioned datasource uid.

use std::collections::BTreeSet;
use std::path::PathBuf;

use std::time::Duration;

use gpumesh_loadtest::{Demo, DemoConfig};

fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// `gpumesh_*` identifiers in a PromQL expression.
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("gpumesh_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

fn collect(v: &serde_json::Value, names: &mut BTreeSet<String>, uids: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                metric_names(e, names);
            }
            if let Some(ds) = m.get("datasource").and_then(|d| d.get("uid")?.as_str()) {
                uids.insert(ds.to_owned());
            }
            m.values().for_each(|x| collect(x, names, uids));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, names, uids)),
        _ => {}
    }
}

/// Whether `name` (as a query writes it) is in the exposition: a sample line, or the
/// family's `# TYPE` line (a labelled family has no samples until first use).
fn exported(text: &str, name: &str) -> bool {
    if text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|r| r.starts_with(['{', ' ']))
    }) {
        return true;
    }
    let typed = |base: &str, kind: &str| text.contains(&format!("# TYPE {base} {kind}\n"));
    let (base, kind) = if let Some(b) = name.strip_suffix("_total") {
        (b, "counter")
    } else if let Some(b) = name
        .strip_suffix("_bucket")
        .or_else(|| name.strip_suffix("_sum"))
        .or_else(|| name.strip_suffix("_count"))
    {
        (b, "histogram")
    } else {
        (name, "gauge")
    };
    typed(base, kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_metric_is_exported_by_a_running_gateway() {
    let mut names = BTreeSet::new();
    let mut uids = BTreeSet::new();
    let dir = dashboards_dir().join("grafana/dashboards");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards folder") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            collect(&v, &mut names, &mut uids);
            files += 1;
        }
    }
    assert!(
        files >= 3 && names.len() >= 10,
        "dashboards found: {files}, {names:?}"
    );
    let ds = std::fs::read_to_string(
        dashboards_dir().join("grafana/provisioning/datasources/prometheus.yaml"),
    )
    .unwrap();
    for uid in &uids {
        assert!(
            ds.contains(&format!("uid: {uid}")),
            "datasource uid {uid} is not provisioned"
        );
    }

    // A demo with live traffic, so that labelled families have series.
    let demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
    })
    .await
    .expect("demo starts");
    demo.wait_for_workers(2, Duration::from_secs(60))
        .await
        .unwrap();
    let url = demo.url();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for path in ["/api/service/ocr/run", "/api/service/nosuch/run"] {
        let _ = http
            .post(format!("{url}{path}"))
            .body("x")
            .send()
            .await
            .unwrap();
    }
    let _ = http
        .get(format!("{url}/api/dht/bootstrap"))
        .send()
        .await
        .unwrap();
    let _ = http
        .post(format!("{url}/api/workers/register"))
        .bearer_auth("wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    let scrape = || async {
        http.get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut text = scrape().await;
    for _ in 0..50 {
        if names.iter().all(|n| exported(&text, n) || lazy(n)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        text = scrape().await;
    }
    let missing: Vec<_> = names.iter().filter(|n| !exported(&text, n)).collect();
    // Families that only have series after a rare event (a retry, a refused record, a DHT
    // lookup by the gateway itself): those must at least be registered in the source.
    let sources = [
        include_str!("../../gateway/src/metrics.rs"),
        include_str!("../../dht/src/metrics.rs"),
    ]
    .concat();
    for n in &missing {
        assert!(lazy(n), "not exported by a running gateway: {n}\n{text}");
        let base = family(n)
            .trim_start_matches("gpumesh_gateway_")
            .trim_start_matches("gpumesh_dht_");
        assert!(
            sources.contains(&format!("\"{base}\"")),
            "{n} is not a registered family"
        );
        eprintln!("note: {n} has no series yet (rare event); its family is registered");
    }
    demo.shutdown().await.unwrap();
}

/// The family name behind a query name.
fn family(name: &str) -> &str {
    ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Families whose series appear only after a rare event.
fn lazy(name: &str) -> bool {
    [
        "gpumesh_gateway_retries_total",
        "gpumesh_gateway_records_refused_total",
        "gpumesh_dht_records_rejected_total",
        "gpumesh_dht_lookups_total",
        "gpumesh_dht_bootstraps_total",
        // Only a gateway with a canary file sends canaries and cross-checks.
        "gpumesh_gateway_canaries_total",
        "gpumesh_gateway_cross_checks_total",
    ]
    .contains(&name)
}
