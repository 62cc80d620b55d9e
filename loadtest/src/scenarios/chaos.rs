//! `chaos`: a fifth of the workers, picked at random, die at once a third of the way in (their
//! services crash, as when volunteers' machines die) and as many new workers start. The run
//! measures how long the killed workers stayed listed online and, from the gateway's attempt
//! logs, how long each kept receiving traffic after its first failure ([`crate::chaos`]).

use std::time::{Duration, Instant};

use super::{Ctx, Outcome, join_traffic, pick, until_event};
use crate::chaos::{ChaosReport, summarize};
use crate::error::LoadtestError;
use crate::observe::online_ids;

/// How long the killed workers get to leave the online listing.
const LISTING_LIMIT: Duration = Duration::from_secs(60);

/// Kills a fifth of the fleet, starts replacements, and measures until the traffic ends.
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Result<Outcome, LoadtestError> {
    until_event(ctx.config).await;
    let n = ctx.config.workers;
    let victims = pick(n, (n / 5).max(1), 0x9E37_79B9_7F4A_7C15);
    let ids: Vec<String> = victims
        .iter()
        .map(|&i| ctx.fleet.workers()[i].id.clone())
        .collect();
    let killed_at = Instant::now();
    let killed_at_ms = gpumesh_dht::rules::unix_ms();
    for &i in &victims {
        ctx.fleet.kill(i).await;
    }
    for k in 0..victims.len() {
        ctx.fleet.add_worker(n + k).await?;
    }
    let out_of_online_view_s = left_listing(ctx, &ids, killed_at).await;
    // A killed worker "stops receiving traffic" only if nothing reaches it until the end.
    let traffic = join_traffic(ctx.traffic).await;
    let logs: Vec<_> = ids
        .iter()
        .map(|id| ctx.gateway.attempt_logs.get(id))
        .collect();
    Ok(Outcome {
        chaos: Some(ChaosReport {
            out_of_online_view_s,
            ..summarize(killed_at_ms, &logs)
        }),
        traffic: Some(traffic),
        ..Outcome::default()
    })
}

/// Seconds from the kill until none of `ids` is listed online (`None`: not within the limit).
async fn left_listing(ctx: &Ctx<'_>, ids: &[String], killed_at: Instant) -> Option<f64> {
    while killed_at.elapsed() < LISTING_LIMIT {
        if let Some(online) = online_ids(ctx.http, ctx.url).await
            && !online.iter().any(|id| ids.contains(id))
        {
            return Some(killed_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
