//! `liars`: 5 % of the fleet joins a little after the traffic starts and lies (see
//! [`crate::liars`]). Measures each group's traffic share from its join, from 30 s and from
//! 60 s after it, whether any honest worker was ejected or distrusted meanwhile, and what the
//! gateway's checks cost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Ctx, Outcome};
use crate::error::LoadtestError;
use crate::fleet::Fleet;
use crate::liars::{
    GroupReport, JOIN_AFTER, LiarGroup, LiarsReport, Received, groups, liar_count, share_between,
};
use crate::observe::{checks_sent, honest_workers_out};

/// How often the gateway's worker list is read for ejected or distrusted honest workers.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Starts the liars, then watches until the traffic ends.
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Result<Outcome, LoadtestError> {
    let checks_at_start = checks_sent(ctx.http, ctx.url).await;
    let at_start = received(ctx.fleet);
    tokio::time::sleep(JOIN_AFTER).await;
    let first = ctx.fleet.workers().len();
    let plan = groups(liar_count(ctx.config.workers));
    let checks_before = checks_sent(ctx.http, ctx.url).await;
    let at_join = received(ctx.fleet);
    for (k, group) in plan.iter().enumerate() {
        ctx.fleet.add_liar(first + k, *group).await?;
    }
    let joined = Instant::now();
    info!(liars = plan.len(), "liars joined");
    let liar_ids: BTreeSet<String> = ctx.fleet.workers()[first..]
        .iter()
        .map(|w| w.id.clone())
        .collect();
    let (mut after_30, mut after_60) = (None, None);
    let mut out = BTreeSet::new();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    let traffic = loop {
        tokio::select! {
            r = &mut *ctx.traffic => {
                break r.unwrap_or_else(|e| Err(LoadtestError::Goose(e.to_string())));
            }
            _ = tick.tick() => {
                let age = joined.elapsed();
                if after_30.is_none() && age >= Duration::from_secs(30) {
                    after_30 = Some(received(ctx.fleet));
                }
                if after_60.is_none() && age >= Duration::from_secs(60) {
                    after_60 = Some(received(ctx.fleet));
                }
                out.extend(honest_workers_out(ctx.http, ctx.url, &liar_ids).await);
            }
        }
    };
    let end = received(ctx.fleet);
    let checks_at_end = checks_sent(ctx.http, ctx.url).await;
    let checks = checks_at_end - checks_before;
    let whole = checks_at_end - checks_at_start;
    if after_60.is_none() {
        warn!("the run ended less than 60 s after the liars joined");
    }
    let since = |mark: Option<Received>| mark.unwrap_or(end);
    let report = LiarsReport {
        honest_success_ratio: 0.0,
        liar_groups: LiarGroup::ALL
            .iter()
            .map(|&g| {
                let figures = GroupReport {
                    workers: plan.iter().filter(|&&x| x == g).count(),
                    traffic_share: share_between(&at_join, &end, g),
                    true_capacity_share: true_capacity_share(ctx.fleet, g),
                    share_after_30s: share_between(&since(after_30), &end, g),
                    share_after_60s: share_between(&since(after_60), &end, g),
                };
                (g.name().to_owned(), figures)
            })
            .collect(),
        honest_workers_ejected: out.len(),
        canary_share_of_capacity: checks
            / (end.total().saturating_sub(at_join.total())).max(1) as f64,
        canary_share_whole_run: whole
            / (end.total().saturating_sub(at_start.total())).max(1) as f64,
    };
    Ok(Outcome {
        liars: Some(report),
        traffic: Some(traffic),
        ..Outcome::default()
    })
}

/// Work requests received so far, by group.
fn received(fleet: &Fleet) -> Received {
    let mut r = Received::default();
    for (i, w) in fleet.workers().iter().enumerate() {
        r.add(w.liar, fleet.received(i));
    }
    r
}

/// `group`'s share of the fleet's true capacity: speed × slots of the workers whose answers
/// are useful (a liar that answers wrongly or never has none).
fn true_capacity_share(fleet: &Fleet, group: LiarGroup) -> f64 {
    let useful = |w: &&crate::fleet::FleetWorker| w.liar.is_none_or(LiarGroup::serves);
    let all: f64 = fleet.workers().iter().filter(useful).map(|w| w.speed).sum();
    let mine: f64 = fleet
        .workers()
        .iter()
        .filter(useful)
        .filter(|w| w.liar == Some(group))
        .map(|w| w.speed)
        .sum();
    // An empty sum is −0.0; a group with no useful capacity has a share of plain 0.
    if all > 0.0 && mine > 0.0 {
        mine / all
    } else {
        0.0
    }
}
