//! The pooled upstream client: hyper-util's pooled client over hyper-rustls (http/1.1 and h2 by
//! ALPN), no system proxy, and a DNS resolver that applies the upstream policy to every
//! resolved address (the SSRF guard holds at connect time, not only when a record arrives).

use std::time::Duration;

use axum::body::Body;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Config;
use crate::policy::{GuardedResolver, UpstreamPolicy};

/// The pooled upstream client.
pub(super) type UpstreamClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, Body>;

/// Builds the client `config` asks for.
pub(super) fn build(config: &Config) -> UpstreamClient {
    let policy =
        UpstreamPolicy::new(config.allow_private_upstreams).with_own_hosts(&config.public_names);
    let mut http = HttpConnector::new_with_resolver(GuardedResolver::new(policy));
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(config.connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(config.upstream_idle_per_host)
        .pool_timer(TokioTimer::new())
        .build(https)
}
