//! `GET /api/dht/bootstrap`: the DHT seed list (this gateway and configured stable nodes).
//!
//! Agents call it once at start and cache the answer; the `ttl_secs` field and
//! `Cache-Control: max-age` say for how long. Rate limited per client IP.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use super::types::{BootstrapResponse, Seed};
use super::{AppState, ClientAddr, json, rate_limit};
use crate::error::GatewayError;
use crate::metrics::OutcomeLabels;

/// `GET /api/dht/bootstrap`: this gateway's own DHT addresses and the configured seeds.
///
/// # Errors
/// 429 when the client is over its rate.
pub async fn bootstrap(
    State(state): State<AppState>,
    client: ClientAddr,
) -> Result<Response, GatewayError> {
    if let Err(e) = rate_limit(&state.bootstrap_limiter, client) {
        state
            .metrics
            .bootstrap_requests
            .get_or_create(&OutcomeLabels {
                outcome: "rate_limited".into(),
            })
            .inc();
        return Err(e);
    }
    let answer = seeds(&state);
    state
        .metrics
        .bootstrap_requests
        .get_or_create(&OutcomeLabels {
            outcome: "ok".into(),
        })
        .inc();
    let ttl = answer.ttl_secs;
    let mut response = json(answer);
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={ttl}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    Ok(response)
}

/// The seed list: this gateway's node first, then configured seeds grouped by peer id.
pub fn seeds(state: &AppState) -> BootstrapResponse {
    let mut seeds = Vec::new();
    let snapshot = state.dht.snapshot();
    if let Some(me) = &snapshot.peer_id {
        let announced = if state.config.dht_external_addrs.is_empty() {
            snapshot
                .listen_addrs
                .iter()
                .filter(|a| dialable(a))
                .cloned()
                .collect::<Vec<_>>()
        } else {
            state.config.dht_external_addrs.clone()
        };
        let suffix = format!("/p2p/{me}");
        let multiaddrs: Vec<String> = announced
            .into_iter()
            .map(|a| {
                if a.ends_with(&suffix) {
                    a
                } else {
                    format!("{a}{suffix}")
                }
            })
            .collect();
        if !multiaddrs.is_empty() {
            seeds.push(Seed {
                peer_id: me.clone(),
                multiaddrs,
                role: "gateway".into(),
            });
        }
    }
    let mut configured: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (peer, addr) in state.config.seeds.iter().filter_map(|s| seed_parts(s)) {
        if snapshot.peer_id.as_deref() != Some(peer.as_str()) {
            configured.entry(peer).or_default().push(addr);
        }
    }
    seeds.extend(configured.into_iter().map(|(peer_id, multiaddrs)| Seed {
        peer_id,
        multiaddrs,
        role: "seed".into(),
    }));
    BootstrapResponse {
        count: seeds.len(),
        seeds,
        ttl_secs: state.config.bootstrap_ttl.as_secs(),
    }
}

/// A listen address someone else could dial (not `0.0.0.0` / `::`).
/// A configured seed as `(peer id, multiaddr)` strings, by the rulebook's seed parser (seeds
/// were checked with it when the configuration was validated).
pub(crate) fn seed_parts(seed: &str) -> Option<(String, String)> {
    let (peer, addr) = gpumesh_dht::rules::parse_seed(seed).ok()?;
    Some((peer.to_base58(), addr.to_string()))
}

fn dialable(addr: &str) -> bool {
    !(addr.starts_with("/ip4/0.0.0.0/") || addr.starts_with("/ip6/::/"))
}
