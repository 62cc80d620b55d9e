//! Interoperability with a libp2p that is not rust-libp2p: `interop/js/read-gpumesh.mjs`
//! (js-libp2p, stock transports, kad client mode under `/gpumesh/kad/1.0.0`) dials a gateway,
//! reads and verifies a worker's signed record itself, and finds the worker among the service's
//! providers by CID.
//!
//! Needs `node` and `npm ci --prefix interop/js`. Without them the test fails when `CI` is set
//! and prints a `skipped:` line otherwise.

mod support;

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::Context;
use gpumesh_dht::keys;
use serde_json::Value;

/// Service shards of the test network (`TestnetConfig::default`).
const SHARDS: u32 = 8;

/// The client script, or why it cannot run here.
fn js_client() -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../interop/js");
    let node = std::process::Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Err("`node` is not installed".into());
    }
    if !dir.join("node_modules").is_dir() {
        return Err(format!(
            "{} has no node_modules (run `npm ci --prefix interop/js`)",
            dir.display()
        ));
    }
    Ok(dir.join("read-gpumesh.mjs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_libp2p_reads_records_and_providers() -> anyhow::Result<()> {
    support::init_tracing();
    let script = match js_client() {
        Ok(s) => s,
        Err(why) if std::env::var_os("CI").is_some() => panic!("js interop cannot run: {why}"),
        Err(why) => {
            println!("skipped: js interop: {why}");
            return Ok(());
        }
    };
    let (net, gateway, worker) = support::gateway_with_worker().await?;
    // The worker's provider announcement (under the CID key) has reached the gateway.
    let mut stored = 0;
    for _ in 0..100 {
        stored = gateway.topology().await?.providers_stored;
        if stored >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored >= 1, "providers stored at the gateway: {stored}");

    let run = tokio::process::Command::new("node")
        .arg(&script)
        .args(["--addr", &net.seeds[0].to_string()])
        .args(["--worker", &worker.peer_id().to_string()])
        .args(["--service", "ocr", "--shards", &SHARDS.to_string()])
        .args(["--timeout-ms", "20000"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .context("the js client ran past 30 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("js client output: {stdout}\nstderr: {stderr}"))?;
    println!("js client: {report}");

    let record = &report["record"];
    assert_eq!(
        record["verified"], true,
        "record: {report}\nstderr: {stderr}"
    );
    assert_eq!(record["signer"], worker.peer_id().to_string());
    assert_eq!(record["services"], serde_json::json!(["ocr"]));
    // The js side derived the same CIDs from the service name.
    let shard = keys::shard_of(&worker.peer_id(), SHARDS);
    let cid = keys::service_cid("ocr", shard).to_string();
    assert!(
        report["provider_cids"]
            .as_array()
            .is_some_and(|c| c.iter().any(|v| v == cid.as_str())),
        "{cid} not among {}",
        report["provider_cids"]
    );
    assert_eq!(report["worker_is_provider"], true, "{report}");
    assert_eq!(report["still_connected"], true, "{report}");
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    net.shutdown().await;
    Ok(())
}
