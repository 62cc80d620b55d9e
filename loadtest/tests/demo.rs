//! The demo end to end: a gateway and real agents on loopback; every worker shows up in
//! `/api/workers` and a request routes through `/api/service/ocr/...`.

use std::time::Duration;

use gpumesh_loadtest::{Demo, DemoConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_discovers_every_worker_and_routes_a_request() {
    let demo = Demo::start(DemoConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 4,
    })
    .await
    .expect("demo starts");
    demo.wait_for_workers(4, Duration::from_secs(60))
        .await
        .expect("all workers visible");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut ok = false;
    for _ in 0..50 {
        let r = http
            .post(format!("{}/api/service/ocr/run", demo.url()))
            .body("hello")
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "a request routed through the gateway");

    let bad_flags = DemoConfig {
        workers: 0,
        ..DemoConfig::default()
    };
    assert!(bad_flags.validate().is_err());
    tokio::time::timeout(Duration::from_secs(60), demo.shutdown())
        .await
        .expect("shutdown in time")
        .expect("clean shutdown");
}
