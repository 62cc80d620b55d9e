//! The mock GPU service over real HTTP on loopback.

use std::time::{Duration, Instant};

use gpumesh_probe::load::{LoadEndpoint, fresh};
use gpumesh_testkit::{Fault, MockService, MockServiceConfig};
use tokio_util::sync::CancellationToken;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn spawn(slots: u32, base_ms: f64, speed: f64) -> MockService {
    MockService::spawn(MockServiceConfig {
        slots,
        base_ms,
        per_kib_ms: 0.0,
        speed,
        max_queue: 4,
        ..MockServiceConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn slots_queue_in_fifo_order_and_service_time_follows_speed() {
    // 400 ms per request (800 ms at speed 2) and arrivals 100 ms apart: wide margins, so the
    // order and the queue are defined even on a loaded machine.
    let svc = spawn(1, 800.0, 2.0).await;
    let url = format!("{}/api/service/ocr/run", svc.url());
    let c = client();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 100)).await;
            let r = c.post(&url).body("x").send().await.unwrap();
            assert_eq!(r.status(), 200);
            (i, start.elapsed())
        }));
    }
    // While the first request holds the only slot, the others queue.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut load = svc.load();
    while load.queue_depth < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        load = svc.load();
    }
    assert_eq!(load.max_concurrency, 1);
    assert_eq!(load.in_flight, 1, "{load:?}");
    assert!(load.queue_depth >= 1, "{load:?}");
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    done.sort_by_key(|d| d.1);
    assert_eq!(
        done.iter().map(|d| d.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "FIFO"
    );
    assert!(
        done[2].1 >= Duration::from_millis(1200),
        "three 400 ms jobs in series"
    );
    assert_eq!(svc.load().in_flight, 0);
    assert_eq!(svc.state().served, 3);
}

#[tokio::test]
async fn queue_bound_refuses_with_503() {
    let svc = spawn(1, 300.0, 1.0).await;
    let url = format!("{}/run", svc.url());
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            c.post(&url).send().await.unwrap().status()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap().as_u16());
    }
    assert!(codes.contains(&503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
}

#[tokio::test]
async fn faults_switch_over_the_admin_endpoint() {
    let svc = spawn(2, 20.0, 1.0).await;
    let c = client();
    let work = format!("{}/api/service/ocr/x", svc.url());
    let admin = format!("{}/admin/fault", svc.url());

    c.post(&admin).json(&Fault::Error).send().await.unwrap();
    assert_eq!(c.post(&work).send().await.unwrap().status(), 500);
    assert_eq!(
        c.get(format!("{}/health", svc.url()))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );

    c.post(&admin)
        .json(&serde_json::json!({"mode": "slow", "factor": 10.0}))
        .send()
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.post(&work).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));

    c.post(&admin).json(&Fault::Hang).send().await.unwrap();
    let hung = c
        .post(&work)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.is_err(), "hang never answers");

    // A request still running when the machine dies gets no answer at all: the connection
    // breaks (no polite 502 from a dead machine).
    let in_flight = tokio::spawn({
        let (c, work) = (c.clone(), work.clone());
        async move { c.post(&work).timeout(Duration::from_secs(5)).send().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.post(&admin).json(&Fault::Crash).send().await.unwrap();
    let broken = in_flight.await.unwrap();
    match broken {
        Err(e) => assert!(!e.is_timeout(), "broken, not timed out: {e}"),
        Ok(r) => panic!("a crashed service answered {}", r.status()),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        c.get(format!("{}/health", svc.url())).send().await.is_err(),
        "crashed"
    );
    svc.set_fault(Fault::None).await.unwrap();
    assert_eq!(
        c.post(&work).send().await.unwrap().status(),
        200,
        "restarted"
    );
}

#[tokio::test]
async fn reports_load_to_the_agent_endpoint() {
    let stop = CancellationToken::new();
    let ep = LoadEndpoint::bind("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    let svc = MockService::spawn(MockServiceConfig {
        slots: 3,
        base_ms: 400.0,
        report_url: Some(ep.report_url()),
        ..MockServiceConfig::default()
    })
    .await
    .unwrap();
    let mut rx = ep.subscribe();
    let c = client();
    let url = format!("{}/run", svc.url());
    let req = tokio::spawn(async move { c.post(url).send().await.unwrap().status() });
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        rx.changed().await.unwrap();
        let load = fresh(*rx.borrow(), Duration::from_secs(5));
        if load.is_some_and(|l| l.in_flight == 1 && l.max_concurrency == 3) {
            break;
        }
        assert!(Instant::now() < deadline, "no in-flight report");
    }
    assert_eq!(req.await.unwrap(), 200);
    stop.cancel();
}
