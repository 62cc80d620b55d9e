//! Security claims of docs/SECURITY.md that no other test proves, against a real gateway on
//! loopback port 0: every registry call needs the token, rate limits cannot be dodged with
//! forwarding headers, a worker's redirect is handed back and never followed, and a name that
//! resolves to a private address is refused when the gateway connects.

mod support;

use std::str::FromStr;
use std::sync::atomic::Ordering;

use axum::Router;
use gpumesh_gateway::Config;
use gpumesh_gateway::api::types::{ErrorBody, WorkersResponse};
use gpumesh_gateway::policy::{GuardedResolver, UpstreamPolicy};
use hyper_util::client::legacy::connect::dns::Name;
use reqwest::StatusCode;
use support::{
    TOKEN, client, config, record, register, start_counting_worker, start_gateway, start_worker,
};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// Headers a client might use to pose as someone else; the gateway must ignore them all.
const SPOOFS: [(&str, &str); 4] = [
    ("x-forwarded-for", "198.51.100.7"),
    ("x-real-ip", "198.51.100.8"),
    ("forwarded", "for=198.51.100.9"),
    ("true-client-ip", "198.51.100.10"),
];

async fn error_body(resp: reqwest::Response) -> (StatusCode, ErrorBody) {
    let status = resp.status();
    let body = resp.json::<ErrorBody>().await.expect("JSON error body");
    (status, body)
}

#[tokio::test]
async fn every_registry_call_needs_the_token_and_errors_never_echo_it() {
    let (w, _stop) = start_worker("sec").await;
    let gw = start_gateway(config()).await;
    assert_eq!(
        register(&gw, &record("sec", "echo", &format!("http://{w}"))).await,
        StatusCode::OK
    );
    let heartbeat = gw.url("/api/workers/sec/heartbeat");
    let entry = gw.url("/api/workers/sec");
    let wrong = "not-the-token";
    for (auth, want, code) in [
        (None, StatusCode::UNAUTHORIZED, "unauthorized"),
        (Some(wrong), StatusCode::FORBIDDEN, "forbidden"),
        // A token that merely starts like the real one is still wrong.
        (
            Some("test-token-and-more"),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        for req in [client().post(&heartbeat), client().delete(&entry)] {
            let req = match auth {
                Some(t) => req.bearer_auth(t),
                None => req,
            };
            let resp = req.send().await.expect("gateway answers");
            let (status, body) = error_body(resp).await;
            assert_eq!((status, body.code.as_str()), (want, code));
            assert_eq!(body.fault, "client");
            let text = serde_json::to_string(&body).unwrap();
            assert!(
                !text.contains(TOKEN) && !text.contains(wrong),
                "an error body repeats a token: {text}"
            );
        }
    }
    // None of the refused calls touched the entry.
    let view: WorkersResponse = gw.get_json("/api/workers").await;
    assert_eq!(view.count, 1);
    // The token is nowhere in what the gateway publishes about itself.
    for path in [
        "/metrics",
        "/api/workers",
        "/api/dht/topology",
        "/openapi.json",
    ] {
        assert!(
            !gw.get_text(path).await.contains(TOKEN),
            "{path} shows the token"
        );
    }
    let resp = client()
        .delete(&entry)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn registry_rate_limit_holds_before_the_token_and_ignores_forwarding_headers() {
    let gw = start_gateway(Config {
        registry_rate_per_min: 3,
        ..config()
    })
    .await;
    let url = gw.url("/api/workers/register");
    let body = record("rl", "echo", "http://127.0.0.1:9");
    // Unauthenticated calls spend the budget too: a flood is cut off before any token check.
    for _ in 0..3 {
        let resp = client().post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    let (status, err) = error_body(resp).await;
    assert_eq!(
        (status, err.code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    for (name, value) in SPOOFS {
        let resp = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .header(name, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "`{name}` bypassed the limit"
        );
    }
    // Nothing was registered past the limit.
    let view: WorkersResponse = gw.get_json("/api/workers").await;
    assert_eq!(view.count, 0);
}

#[tokio::test]
async fn bootstrap_rate_limit_ignores_forwarding_headers() {
    let gw = start_gateway(Config {
        bootstrap_rate_per_min: 2,
        seeds: vec![
            "/ip4/203.0.113.5/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .into(),
        ],
        ..config()
    })
    .await;
    let url = gw.url("/api/dht/bootstrap");
    for _ in 0..2 {
        assert_eq!(
            client().get(&url).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    for (name, value) in SPOOFS {
        let resp = client().get(&url).header(name, value).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "`{name}` bypassed the limit"
        );
    }
}

/// A worker that answers every request with a redirect to `target`.
async fn start_redirecting_worker(target: String) -> (std::net::SocketAddr, CancellationToken) {
    let app = Router::new().fallback(move || {
        let target = target.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(reqwest::header::LOCATION, target)],
                "go elsewhere",
            )
        }
    });
    let (addr, stop) = support::serve(app).await;
    (addr, stop)
}

#[tokio::test]
async fn a_workers_redirect_is_never_followed_and_a_cross_host_one_is_dropped() {
    // Stands in for an internal service (a metadata endpoint) the worker points at.
    let (internal, hits, _stop_internal) = start_counting_worker("internal").await;
    let (w, _stop) = start_redirecting_worker(format!("http://{internal}/latest/meta-data/")).await;
    let gw = start_gateway(config()).await;
    assert_eq!(
        register(&gw, &record("redir", "echo", &format!("http://{w}"))).await,
        StatusCode::OK
    );
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_follow
        .get(gw.url("/api/service/echo/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert!(
        resp.headers().get(reqwest::header::LOCATION).is_none(),
        "a Location to another host is not served from the gateway's origin"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the gateway followed the redirect"
    );
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_at_connect_time() {
    // `localhost` resolves to loopback on every Linux host (/etc/hosts): the connect-time
    // check alone must refuse it, whatever the URL check said.
    let name = Name::from_str("localhost").unwrap();
    let mut strict = GuardedResolver::new(UpstreamPolicy::new(false));
    let refused = strict.call(name.clone()).await;
    assert!(
        refused.is_err(),
        "resolved to {:?}",
        refused.map(Vec::from_iter)
    );
    let mut lax = GuardedResolver::new(UpstreamPolicy::new(true));
    let addrs: Vec<_> = lax.call(name).await.expect("localhost resolves").collect();
    assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
}
