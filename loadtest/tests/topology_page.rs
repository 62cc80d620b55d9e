//! The topology page in headless Chromium against a running demo: the worker rows appear.
//! Skipped (with a message) where `/usr/bin/chromium` is not installed.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gpumesh_loadtest::{Demo, DemoConfig};

const CHROMIUM: &str = "/usr/bin/chromium";

async fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("gpumesh-chromium-{}", std::process::id()));
    let child = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finishes in time")
        .expect("chromium output");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_page_lists_the_workers_in_headless_chromium() {
    if !Path::new(CHROMIUM).exists() {
        eprintln!("SKIPPED: {CHROMIUM} is not installed (apt-get install -y chromium)");
        return;
    }
    let demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 4,
    })
    .await
    .expect("demo starts");
    demo.wait_for_workers(4, Duration::from_secs(60))
        .await
        .expect("all workers visible");

    let mut rows = 0;
    let mut dom = String::new();
    for _ in 0..3 {
        dom = dump_dom(&format!("{}/", demo.url())).await;
        rows = demo
            .fleet()
            .workers()
            .iter()
            .filter(|w| dom.contains(&format!("data-worker=\"{}\"", w.id)))
            .count();
        if rows == 4 {
            break;
        }
    }
    assert_eq!(rows, 4, "every worker has a row; DOM was:\n{dom}");
    assert!(dom.contains("<svg"), "the topology graph is drawn");
    demo.shutdown().await.expect("clean shutdown");
}
