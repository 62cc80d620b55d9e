//! `GET /api/workers`, `GET /api/workers/{id}` and `GET /api/dht/topology`: read-only views.

use std::collections::BTreeSet;
use std::time::Instant;

use axum::extract::State;
use axum::response::Response;

use super::bootstrap::seed_parts;
use super::types::{TopologyEdge, TopologyNode, TopologyResponse, WorkersResponse};
use super::{AppState, PathParam, json};
use crate::directory::state_name;
use crate::error::GatewayError;

/// `GET /api/workers`.
pub async fn list(State(state): State<AppState>) -> Response {
    let workers = state.directory.views(Instant::now());
    json(WorkersResponse {
        count: workers.len(),
        workers,
    })
}

/// `GET /api/workers/{id}`.
///
/// # Errors
/// 404 `unknown_worker`.
pub async fn get_worker(
    State(state): State<AppState>,
    PathParam(id): PathParam,
) -> Result<Response, GatewayError> {
    state
        .directory
        .view(&id, Instant::now())
        .map(json)
        .ok_or(GatewayError::UnknownWorker(id))
}

/// `GET /api/dht/topology`: this gateway, configured seeds and workers as nodes; the
/// gateway's DHT connections as edges.
pub async fn topology(State(state): State<AppState>) -> Response {
    let snapshot = state.dht.snapshot();
    let me = snapshot
        .peer_id
        .clone()
        .unwrap_or_else(|| "gateway".to_owned());
    let mut nodes = vec![TopologyNode {
        id: me.clone(),
        role: "gateway".into(),
        state: "online".into(),
        source: None,
        gpu: None,
        load: None,
        trust: None,
        distrusted: None,
    }];
    let mut seen: BTreeSet<String> = BTreeSet::from([me.clone()]);
    for (peer, _) in state.config.seeds.iter().filter_map(|s| seed_parts(s)) {
        if seen.insert(peer.clone()) {
            nodes.push(TopologyNode {
                id: peer,
                role: "seed".into(),
                state: "online".into(),
                source: None,
                gpu: None,
                load: None,
                trust: None,
                distrusted: None,
            });
        }
    }
    for w in state.directory.views(Instant::now()) {
        if !seen.insert(w.id.clone()) {
            continue;
        }
        let slots = f64::from(w.load.max_concurrency.max(1));
        nodes.push(TopologyNode {
            id: w.id,
            role: "worker".into(),
            state: state_name(w.state).into(),
            source: Some(w.source),
            gpu: w.gpus.first().map(|g| g.model.clone()),
            load: Some(f64::from(w.load.in_flight.saturating_add(w.load.queue_depth)) / slots),
            trust: Some(w.trust.score),
            distrusted: Some(w.trust.distrusted),
        });
    }
    let edges = snapshot
        .connected
        .iter()
        .filter(|peer| seen.contains(*peer))
        .map(|peer| TopologyEdge {
            from: me.clone(),
            to: peer.clone(),
        })
        .collect();
    json(TopologyResponse { nodes, edges })
}
