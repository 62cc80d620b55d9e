//! The mock service's checkable answers, its liars and its claimed slots over real HTTP on
//! loopback.

use std::time::{Duration, Instant};

use gpumesh_testkit::{Fault, MockService, MockServiceConfig, answer_for, embedding_for};
use serde_json::Value;

const BODY: &str = r#"{"text":"hello"}"#;
/// `printf '%s' '{"text":"hello"}' | sha256sum`
const BODY_SHA256: &str = "cbbbdcd27692344de5dbab3abcaba413fb0f45307267de7081401576df1cb176";

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn spawn(cfg: MockServiceConfig) -> (MockService, String) {
    let svc = MockService::spawn(cfg).await.unwrap();
    let url = format!("{}/api/service/ocr/run", svc.url());
    (svc, url)
}

async fn post_json(url: &str) -> Value {
    let r = client().post(url).body(BODY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[tokio::test]
async fn honest_answers_are_the_bodys_digest_and_embedding() {
    let (_svc, url) = spawn(MockServiceConfig {
        base_ms: 1.0,
        ..MockServiceConfig::default()
    })
    .await;
    let r = post_json(&url).await;
    assert_eq!(r["answer"], BODY_SHA256);
    assert_eq!(answer_for(BODY.as_bytes()), BODY_SHA256);
    assert!(close(
        &floats(&r["embedding"]),
        &embedding_for(BODY.as_bytes())
    ));
    assert_eq!(r["bytes"], BODY.len());
    assert!(r.get("service_ms").is_some() && r.get("queued_ms").is_some());
}

#[tokio::test]
async fn garbage_is_wrong_well_formed_and_instant_even_with_every_slot_taken() {
    // One slot, 3 s per request: an honest answer behind a busy slot takes seconds.
    let (svc, url) = spawn(MockServiceConfig {
        slots: 1,
        base_ms: 3000.0,
        ..MockServiceConfig::default()
    })
    .await;
    let busy = tokio::spawn({
        let url = url.clone();
        async move { client().post(&url).body("x").send().await }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while svc.load().in_flight < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(svc.load().in_flight, 1, "the slot is taken");
    svc.set_fault(Fault::Garbage).await.unwrap();
    let start = Instant::now();
    let r = post_json(&url).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let answer = r["answer"].as_str().unwrap();
    assert_ne!(answer, BODY_SHA256);
    assert_eq!(answer.len(), BODY_SHA256.len());
    let e = floats(&r["embedding"]);
    assert_eq!(e.len(), embedding_for(BODY.as_bytes()).len());
    assert!(!close(&e, &embedding_for(BODY.as_bytes())));
    assert_eq!(r["bytes"], BODY.len());
    busy.abort();
}

#[tokio::test]
async fn black_hole_sends_no_head_and_takes_no_slot() {
    let (svc, url) = spawn(MockServiceConfig::default()).await;
    svc.set_fault(Fault::BlackHole).await.unwrap();
    let err = client()
        .post(&url)
        .body(BODY)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .expect_err("no answer at all");
    assert!(err.is_timeout(), "{err}");
    let load = svc.load();
    assert_eq!((load.in_flight, load.queue_depth), (0, 0), "{load:?}");
    // Health stays fine: only the work is a lie.
    let h = client()
        .get(format!("{}/health", svc.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test]
async fn tarpit_sends_the_head_and_a_byte_at_once_then_never_finishes() {
    let (svc, url) = spawn(MockServiceConfig::default()).await;
    svc.set_fault(Fault::Tarpit { byte_every_ms: 50 })
        .await
        .unwrap();
    let start = Instant::now();
    let mut r = tokio::time::timeout(
        Duration::from_secs(2),
        client().post(&url).body(BODY).send(),
    )
    .await
    .expect("the head arrives at once")
    .unwrap();
    assert_eq!(r.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(2), r.chunk())
        .await
        .expect("the first byte arrives at once")
        .unwrap()
        .expect("a chunk, not the end");
    assert!(!first.is_empty());
    assert!(start.elapsed() < Duration::from_secs(2));
    // More bytes keep coming, and the body does not end.
    let rest = tokio::time::timeout(Duration::from_millis(700), async {
        let mut n = 0usize;
        while let Some(c) = r.chunk().await.unwrap() {
            n += c.len();
        }
        n
    })
    .await;
    assert!(rest.is_err(), "the body ended: {rest:?}");
}

#[tokio::test]
async fn claimed_slots_are_reported_and_the_true_ones_kept() {
    let (svc, _url) = spawn(MockServiceConfig {
        slots: 2,
        claim_slots: Some(u32::MAX),
        ..MockServiceConfig::default()
    })
    .await;
    let reported: Value = client()
        .get(format!("{}/load", svc.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reported["max_concurrency"], u32::MAX);
    assert_eq!(svc.load().max_concurrency, 2);
    assert_eq!(svc.state().load.max_concurrency, 2);
}
