//! The coordinator registry under operator admission: a real gateway enforcing an
//! operator key on loopback refuses registrations that the DHT's admission gate would refuse
//! (no token, a token for another peer, expired, another operator, a copied token without the
//! worker's key: all 403 `not_admitted`), routes to an admitted worker and ends its lease with
//! its token; and the registry applies the DHT's record limits (at most `MAX_GPUS` GPUs) to
//! records and heartbeats.
//! Last, real agents with the DHT disabled: one with a token registers and is routed to, one
//! without is refused and told why.

mod support;

use std::time::Duration;

use gpumesh_dht::admission::hex_encode;
use gpumesh_dht::record::{GpuInfo, WorkerRecord};
use gpumesh_dht::request;
use gpumesh_dht::rules::unix_ms;
use gpumesh_dht::rules::{MAX_GPUS, RecordLimits};
use gpumesh_dht::{AdmissionToken, OperatorKey, SignedRecord};
use gpumesh_gateway::api::types::{ErrorBody, WorkersResponse};
use gpumesh_gateway::{Config, api::types::RegisterResponse};
use libp2p::identity::Keypair;
use reqwest::StatusCode;
use serde_json::Value;
use support::{RunningGateway, TOKEN, client, eventually, record, start_gateway, start_worker};

/// A gateway (registry only) that trusts `operator`'s tokens.
fn enforcing(operator: &Keypair) -> Config {
    Config {
        dht_admission_operators: vec![OperatorKey::of(operator).expect("ed25519")],
        ..support::config()
    }
}

/// A worker: its key and a record offering `ocr` at `url`.
fn worker(url: &str) -> (Keypair, WorkerRecord) {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id().to_base58();
    (key, record(&id, "ocr", url))
}

fn token(operator: &Keypair, key: &Keypair, from_ms: u64, to_ms: u64) -> AdmissionToken {
    AdmissionToken::issue(operator, key.public().to_peer_id(), from_ms, to_ms).expect("token")
}

/// The register body: `record`'s fields plus, if given, `signed_record`.
fn body(record: &WorkerRecord, signed: Option<&SignedRecord>) -> Value {
    let mut v = serde_json::to_value(record).expect("record JSON");
    if let Some(s) = signed {
        v["signed_record"] = Value::String(hex_encode(&s.bytes));
    }
    v
}

/// `record` signed by `key` with `token` inside, as the agent sends it.
fn signed(key: &Keypair, record: &WorkerRecord, token: Option<&AdmissionToken>) -> SignedRecord {
    SignedRecord::sign_admitted(
        key,
        record.clone(),
        token,
        &RecordLimits::default(),
        unix_ms(),
    )
    .expect("signs")
}

/// Sends `req` with the registry token; the status and the body text.
async fn answer(req: reqwest::RequestBuilder) -> (StatusCode, String) {
    let resp = req
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("gateway answers");
    let status = resp.status();
    (status, resp.text().await.expect("body"))
}

async fn post(gw: &RunningGateway, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, text) = answer(client().post(gw.url(path)).json(body)).await;
    (status, serde_json::from_str(&text).expect("JSON body"))
}

/// A heartbeat (`Some(body)`) or deregistration (`None`) for worker `id`, signed by `key` at
/// `at_ms` when given; the answer's status and JSON body (`null` when empty).
async fn signed_call(
    gw: &RunningGateway,
    id: &str,
    body: Option<&Value>,
    key: Option<(&Keypair, u64)>,
) -> (StatusCode, Value) {
    let (action, bytes, req) = match body {
        Some(b) => (
            "heartbeat",
            serde_json::to_vec(b).expect("JSON"),
            client()
                .post(gw.url(&format!("/api/workers/{id}/heartbeat")))
                .header("content-type", "application/json"),
        ),
        None => (
            "deregister",
            Vec::new(),
            client().delete(gw.url(&format!("/api/workers/{id}"))),
        ),
    };
    let req = match key {
        Some((key, at_ms)) => req
            .header(request::SIGNED_AT_HEADER, at_ms.to_string())
            .header(
                request::SIGNATURE_HEADER,
                request::sign(key, action, at_ms, &bytes).expect("signs"),
            ),
        None => req,
    };
    let (status, text) = answer(req.body(bytes)).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Asserts a documented 403 `not_admitted` error whose message contains `why`.
fn assert_not_admitted(what: &str, (status, body): &(StatusCode, Value), why: &str) {
    assert_eq!(*status, StatusCode::FORBIDDEN, "{what}: {body}");
    let e: ErrorBody = serde_json::from_value(body.clone()).expect("documented error shape");
    assert_eq!(e.code, "not_admitted", "{what}: {body}");
    assert_eq!(e.fault, "client", "{what}");
    assert!(
        e.message.contains(why),
        "{what}: `{}` lacks `{why}`",
        e.message
    );
}

async fn workers(gw: &RunningGateway) -> Vec<String> {
    let view: WorkersResponse = gw.get_json("/api/workers").await;
    view.workers.into_iter().map(|w| w.id).collect()
}

async fn metrics(gw: &RunningGateway) -> String {
    gw.get_text("/metrics").await
}

/// The value of the metric line that starts with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_refuses_what_the_dht_gate_refuses_and_routes_an_admitted_worker() {
    let operator = Keypair::generate_ed25519();
    let stranger_operator = Keypair::generate_ed25519();
    let gw = start_gateway(enforcing(&operator)).await;
    let (addr, _stop) = start_worker("admitted").await;
    let url = format!("http://{addr}");
    let (key, rec) = worker(&url);
    let now = unix_ms();
    let hour = 3_600_000;
    let register = "/api/workers/register";

    let plain = post(&gw, register, &body(&rec, None)).await;
    assert_not_admitted("a plain record", &plain, "signed_record");
    let no_token = post(&gw, register, &body(&rec, Some(&signed(&key, &rec, None)))).await;
    assert_not_admitted("no token", &no_token, "no admission token");
    let other_peer = token(&operator, &Keypair::generate_ed25519(), now, now + hour);
    let wrong_peer = post(
        &gw,
        register,
        &body(&rec, Some(&signed(&key, &rec, Some(&other_peer)))),
    )
    .await;
    assert_not_admitted("a token for another peer", &wrong_peer, "is for peer");
    let old = token(&operator, &key, now - 2 * hour, now - hour);
    let expired = post(
        &gw,
        register,
        &body(&rec, Some(&signed(&key, &rec, Some(&old)))),
    )
    .await;
    assert_not_admitted("an expired token", &expired, "expired");
    let foreign = token(&stranger_operator, &key, now, now + hour);
    let untrusted = post(
        &gw,
        register,
        &body(&rec, Some(&signed(&key, &rec, Some(&foreign)))),
    )
    .await;
    assert_not_admitted("another operator's token", &untrusted, "does not trust");

    // Tokens are public: an attacker that copies the victim's token but lacks its key can
    // only sign its own record, which does not name the victim.
    let good = token(&operator, &key, now, now + hour);
    let (attacker, attacker_rec) = worker("http://127.0.0.1:9");
    let mut hijack = rec.clone();
    hijack.tunnel_url = attacker_rec.tunnel_url.clone();
    let (status, answer) = post(
        &gw,
        register,
        &body(
            &hijack,
            Some(&signed(&attacker, &attacker_rec, Some(&good))),
        ),
    )
    .await;
    assert_not_admitted("a copied token", &(status, answer), "does not verify");
    assert!(
        workers(&gw).await.is_empty(),
        "nothing refused entered the view"
    );
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "gpumesh_gateway_registry_requests_total{op=\"register\",outcome=\"not_admitted\"}"
        ),
        6.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "gpumesh_gateway_records_refused_total{source=\"registry\",reason=\"not_admitted\"}"
        ),
        5.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "gpumesh_gateway_records_refused_total{source=\"registry\",reason=\"signer_mismatch\"}"
        ),
        1.0,
        "{m}"
    );

    // The admitted worker registers, is routed to, and heartbeats.
    let (status, answer) = post(
        &gw,
        register,
        &body(&rec, Some(&signed(&key, &rec, Some(&good)))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = rec.peer_id.clone();
    assert_eq!(workers(&gw).await, vec![id.clone()]);
    let resp = client()
        .get(gw.url("/api/service/ocr/echo/hi"))
        .send()
        .await
        .expect("routed");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-served-by"], "admitted");
    let (status, beat) = signed_call(
        &gw,
        &id,
        Some(&serde_json::json!({})),
        Some((&key, unix_ms())),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
}

/// An enforcing gateway with one worker registered under a token valid for `valid_ms` more.
struct Admitted {
    gw: RunningGateway,
    /// The worker's service; it stops when this is dropped.
    _service: tokio_util::sync::DropGuard,
    key: Keypair,
    rec: WorkerRecord,
    token: AdmissionToken,
    /// The register answer.
    answer: Value,
}

async fn admitted(name: &'static str, valid_ms: u64) -> Admitted {
    let operator = Keypair::generate_ed25519();
    let gw = start_gateway(enforcing(&operator)).await;
    let (addr, stop) = start_worker(name).await;
    let (key, rec) = worker(&format!("http://{addr}"));
    let now = unix_ms();
    let token = token(&operator, &key, now - 1_000, now + valid_ms);
    let (status, answer) = post(
        &gw,
        "/api/workers/register",
        &body(&rec, Some(&signed(&key, &rec, Some(&token)))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    Admitted {
        gw,
        _service: stop.drop_guard(),
        key,
        rec,
        token,
        answer,
    }
}

/// The registry token is shared by every agent, so under admission it does not let one worker
/// speak for another: heartbeats and deregistrations must be signed by the worker's own key,
/// once (no replay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_deregistrations_need_the_workers_own_signature() {
    let Admitted {
        gw,
        _service,
        key,
        rec,
        ..
    } = admitted("victim", 3_600_000).await;
    let id = rec.peer_id.clone();
    let busy = serde_json::json!({
        "load": { "in_flight": 99, "queue_depth": 500, "max_concurrency": 4 }
    });
    let attacker = Keypair::generate_ed25519();

    // Unsigned, signed by another key, or signed too long ago: refused, nothing changes.
    let unsigned = signed_call(&gw, &id, Some(&busy), None).await;
    assert_not_admitted("an unsigned heartbeat", &unsigned, "not signed");
    let forged = signed_call(&gw, &id, Some(&busy), Some((&attacker, unix_ms()))).await;
    assert_not_admitted(
        "a heartbeat signed by another key",
        &forged,
        "does not verify",
    );
    let stale = unix_ms() - request::MAX_SKEW_MS - 5_000;
    let old = signed_call(&gw, &id, Some(&busy), Some((&key, stale))).await;
    assert_not_admitted(
        "a heartbeat signed long ago",
        &old,
        "from the gateway's clock",
    );
    let view: Value = gw.get_json(&format!("/api/workers/{id}")).await;
    assert_eq!(
        view["load"]["queue_depth"], 0,
        "a refused heartbeat changed the load: {view}"
    );

    // The worker's own heartbeat is taken; the same request again is a replay.
    let at = unix_ms();
    let (status, answer) = signed_call(&gw, &id, Some(&busy), Some((&key, at))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let view: Value = gw.get_json(&format!("/api/workers/{id}")).await;
    assert_eq!(view["load"]["queue_depth"], 500, "{view}");
    let again = signed_call(&gw, &id, Some(&busy), Some((&key, at))).await;
    assert_not_admitted(
        "a replayed heartbeat",
        &again,
        "not after the last accepted",
    );

    // Nobody else can deregister it; it can.
    let unsigned = signed_call(&gw, &id, None, None).await;
    assert_not_admitted("an unsigned deregistration", &unsigned, "not signed");
    let forged = signed_call(&gw, &id, None, Some((&attacker, unix_ms()))).await;
    assert_not_admitted("a forged deregistration", &forged, "does not verify");
    assert_eq!(workers(&gw).await, vec![id.clone()]);
    let (status, _) = signed_call(&gw, &id, None, Some((&key, unix_ms() + 1))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(workers(&gw).await.is_empty());

    let m = metrics(&gw).await;
    for (reason, n) in [
        ("unsigned", 2.0),
        ("bad_signature", 2.0),
        ("skewed", 1.0),
        ("replayed", 1.0),
    ] {
        let line = format!(
            "gpumesh_gateway_records_refused_total{{source=\"registry\",reason=\"{reason}\"}}"
        );
        assert_eq!(metric(&m, &line), n, "{reason}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_lease_ends_with_the_admission_token() {
    let Admitted {
        gw,
        _service,
        key,
        rec,
        token: short,
        answer,
    } = admitted("short", 3_000).await;
    let lease: RegisterResponse = serde_json::from_value(answer).expect("register answer");
    assert!(
        lease.expires_at_ms <= short.not_after_ms(),
        "the lease ({}) outlives the token ({})",
        lease.expires_at_ms,
        short.not_after_ms()
    );
    // Heartbeats keep it only until the token ends; then they are refused and it leaves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let empty = serde_json::json!({});
    let mut last = signed_call(&gw, &rec.peer_id, Some(&empty), Some((&key, unix_ms()))).await;
    while last.0 == StatusCode::OK && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = signed_call(&gw, &rec.peer_id, Some(&empty), Some((&key, unix_ms()))).await;
    }
    let refused = last.0 != StatusCode::OK;
    assert!(refused, "heartbeats were accepted past the token's expiry");
    assert_not_admitted("a heartbeat after expiry", &last, "expired");
    assert!(workers(&gw).await.is_empty());
}

fn gpus(n: usize) -> Vec<GpuInfo> {
    (0..n)
        .map(|i| GpuInfo::new("NVIDIA T4", format!("GPU-{i}"), 16_384, 16_000))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_applies_the_dht_record_limits() {
    let gw = start_gateway(support::config()).await;
    let (_, mut rec) = worker("http://127.0.0.1:9");
    rec.gpus = gpus(MAX_GPUS + 1);
    let (status, answer) = post(&gw, "/api/workers/register", &body(&rec, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["code"], "bad_request");
    assert!(workers(&gw).await.is_empty());
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "gpumesh_gateway_records_refused_total{source=\"registry\",reason=\"schema\"}"
        ),
        1.0,
        "{m}"
    );

    // Without admission a plain record at the limit is still taken (behaviour unchanged)...
    rec.gpus = gpus(MAX_GPUS);
    let (status, answer) = post(&gw, "/api/workers/register", &body(&rec, None)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // ...but a heartbeat cannot raise it past the limit.
    let beat = format!("/api/workers/{}/heartbeat", rec.peer_id);
    let over = serde_json::json!({ "gpus": gpus(MAX_GPUS + 1) });
    let (status, answer) = post(&gw, &beat, &over).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let view: Value = gw.get_json(&format!("/api/workers/{}", rec.peer_id)).await;
    assert_eq!(view["gpus"].as_array().map(Vec::len), Some(MAX_GPUS));
}

mod agents {
    //! Real agents (DHT disabled, coordinator registry only) against the enforcing gateway.

    use gpumesh_dht::rules::unix_ms;
    use gpumesh_probe::AgentConfig;
    use gpumesh_probe::agent::worker_id;
    use gpumesh_probe::coordinator::{Coordinator, CoordinatorError};
    use gpumesh_probe::gpu::GpuChoice;
    use gpumesh_probe::tunnel::{Secret, TunnelConfig};

    use super::*;

    /// A fresh state directory path (not created: the agent creates its own).
    fn state_dir(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "gpumesh-registry-admission-{name}-{}-{}",
            std::process::id(),
            unix_ms()
        ))
    }

    fn agent(gw: &RunningGateway, url: &str, dir: std::path::PathBuf) -> AgentConfig {
        AgentConfig {
            services: vec!["ocr".parse().unwrap()],
            gpu: GpuChoice::Profile("t4".into()),
            tunnel: TunnelConfig::PublicUrl(url.to_owned()),
            // The test worker at `url` is the agent's service too: it answers the health check.
            upstream: url.to_owned(),
            report_listen: "127.0.0.1:0".parse().expect("addr"),
            dht_enabled: false,
            registry_url: Some(gw.url("")),
            registry_token: Some(Secret::new(TOKEN)),
            state_dir: dir,
            refresh_every: Duration::from_secs(1),
            load_every: Duration::from_millis(300),
            probe_every: Duration::from_millis(300),
            ..AgentConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agent_with_a_token_registers_and_one_without_is_refused() {
        let operator = Keypair::generate_ed25519();
        // A 3 s lease: the agents heartbeat every second (a third of it).
        let gw = start_gateway(Config {
            registry_ttl: Duration::from_secs(3),
            ..enforcing(&operator)
        })
        .await;
        let (addr, _stop) = start_worker("agent").await;
        let url = format!("http://{addr}");

        // Without a token: refused, and the client error says what to do.
        let bare_dir = state_dir("bare");
        let bare_id = worker_id(&bare_dir).expect("id");
        let client = Coordinator::new(&gw.url(""), Secret::new(TOKEN))
            .expect("client")
            .with_signing_key(&gpumesh_probe::agent::key_path(&bare_dir), None)
            .expect("key");
        let (_, bare_rec) = worker(&url);
        let mut bare_rec = bare_rec;
        bare_rec.peer_id.clone_from(&bare_id);
        match client.register(&bare_rec).await {
            Err(e @ CoordinatorError::NotAdmitted(_)) => {
                let text = e.to_string();
                assert!(text.contains("no admission token"), "{text}");
                assert!(text.contains("--admission FILE"), "{text}");
            }
            other => panic!("expected not_admitted, got {other:?}"),
        }

        // A running agent without a token (and a state directory it has to create) tries,
        // is refused, and never enters the view.
        let stop_bare = tokio_util::sync::CancellationToken::new();
        let bare = tokio::spawn(gpumesh_probe::run(
            agent(&gw, &url, state_dir("bare-agent")),
            stop_bare.clone(),
        ));
        let refused_twice = eventually(Duration::from_secs(60), || async {
            let m = metrics(&gw).await;
            metric(
                &m,
                "gpumesh_gateway_registry_requests_total{op=\"register\",outcome=\"not_admitted\"}",
            ) >= 2.0
        })
        .await;
        assert!(refused_twice, "the bare agent never tried to register");

        // With a token: registered (source registry) and routed to.
        let dir = state_dir("admitted");
        let id = worker_id(&dir).expect("id");
        let now = unix_ms();
        let mut cfg = agent(&gw, &url, dir);
        cfg.admission = Some(
            AdmissionToken::issue(
                &operator,
                id.parse().expect("peer id"),
                now,
                now + 3_600_000,
            )
            .expect("token"),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let admitted = tokio::spawn(gpumesh_probe::run(cfg, stop.clone()));
        let joined = eventually(Duration::from_secs(60), || async {
            workers(&gw).await.contains(&id)
        })
        .await;
        assert!(joined, "the admitted agent did not register");
        let routed = eventually(Duration::from_secs(30), || async {
            client_get(&gw, "/api/service/ocr/echo/x").await == StatusCode::OK
        })
        .await;
        assert!(routed, "the admitted agent was not routed to");
        assert_eq!(
            workers(&gw).await,
            vec![id],
            "only the admitted agent is in the view"
        );
        // Its heartbeats are signed and taken (an unsigned one would be refused), and on
        // drain its signed deregistration removes it at once, not at the lease's end.
        let ok = |op: &'static str| {
            let gw = &gw;
            async move {
                let m = metrics(gw).await;
                metric(
                    &m,
                    &format!(
                        "gpumesh_gateway_registry_requests_total{{op=\"{op}\",outcome=\"ok\"}}"
                    ),
                )
            }
        };
        let beating = eventually(Duration::from_secs(30), || async {
            ok("heartbeat").await >= 2.0
        })
        .await;
        assert!(beating, "the admitted agent's heartbeats were not taken");
        stop.cancel();
        let _ = admitted.await;
        assert_eq!(ok("deregister").await, 1.0, "the drain did not deregister");
        assert!(workers(&gw).await.is_empty());

        stop_bare.cancel();
        let _ = bare.await;
    }

    async fn client_get(gw: &RunningGateway, path: &str) -> StatusCode {
        super::client()
            .get(gw.url(path))
            .send()
            .await
            .map_or(StatusCode::BAD_GATEWAY, |r| r.status())
    }
}
