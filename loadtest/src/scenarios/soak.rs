//! `soak`: a long run with steady churn. Every `churn_every` a share of the live workers die
//! (their services crash) and as many new ones start; every `sample_every` the process's
//! memory, file descriptors and threads, the gateway's view and its DHT node's store sizes are
//! sampled ([`crate::soak`] gives the series and their trends).

use std::time::Instant;

use tracing::{info, warn};

use super::{Ctx, Outcome, pick};
use crate::soak::{Sample, SoakReport};

/// Live positions in the fleet and the next index a replacement takes.
struct Churn {
    alive: Vec<usize>,
    next_index: usize,
    per_round: usize,
    seed: u64,
    churned: usize,
    rounds: usize,
}

/// Churns and samples until the traffic ends.
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Outcome {
    let start = Instant::now();
    let size = ctx.fleet.workers().len();
    let share = (ctx.config.workers as f64 * ctx.config.churn_share).ceil() as usize;
    let mut churn = Churn {
        alive: (0..size).collect(),
        next_index: size,
        per_round: share.max(1),
        seed: 0xC0FF_EE00_D15E_A5E5,
        churned: 0,
        rounds: 0,
    };
    let mut churn_tick = tokio::time::interval(ctx.config.churn_every);
    let mut sample_tick = tokio::time::interval(ctx.config.sample_every);
    churn_tick.reset();
    let mut samples = Vec::new();
    let result = loop {
        tokio::select! {
            r = &mut *ctx.traffic => {
                break r.unwrap_or_else(|e| Err(crate::LoadtestError::Goose(e.to_string())));
            }
            _ = sample_tick.tick() => samples.push(take_sample(start, ctx).await),
            _ = churn_tick.tick() => churn_round(ctx, &mut churn).await,
        }
    };
    samples.push(take_sample(start, ctx).await);
    let trends = crate::soak::trends(&samples);
    Outcome {
        soak: Some(SoakReport {
            churned: churn.churned,
            rounds: churn.rounds,
            sample_every_s: ctx.config.sample_every.as_secs_f64(),
            samples,
            trends,
        }),
        traffic: Some(result),
        ..Outcome::default()
    }
}

/// Kills `per_round` live workers picked at random and starts as many new ones.
async fn churn_round(ctx: &mut Ctx<'_>, churn: &mut Churn) {
    churn.seed = churn
        .seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1);
    let count = churn.per_round.min(churn.alive.len());
    let victims = pick(churn.alive.len(), count, churn.seed);
    let mut positions: Vec<usize> = victims.iter().map(|&v| churn.alive[v]).collect();
    positions.sort_unstable();
    for &p in &positions {
        ctx.fleet.kill(p).await;
    }
    churn.alive.retain(|p| !positions.contains(p));
    for _ in &positions {
        if let Err(e) = ctx.fleet.add_worker(churn.next_index).await {
            warn!(error = %e, "soak: replacement worker not started");
            continue;
        }
        churn.alive.push(ctx.fleet.workers().len() - 1);
        churn.next_index += 1;
    }
    churn.churned += positions.len();
    churn.rounds += 1;
    info!(
        round = churn.rounds,
        replaced = positions.len(),
        "soak churn"
    );
}

async fn take_sample(start: Instant, ctx: &Ctx<'_>) -> Sample {
    let topo = match &ctx.gateway.dht {
        Some(h) => h.topology().await.ok(),
        None => None,
    };
    let view = crate::observe::worker_count(ctx.http, ctx.url).await;
    let (heap_allocated_mib, heap_resident_mib) = crate::soak::allocator_mib();
    let status = crate::soak::proc_status();
    Sample {
        t_s: start.elapsed().as_secs_f64(),
        rss_mib: status.rss_mib,
        rss_anon_mib: status.rss_anon_mib,
        heap_allocated_mib,
        heap_resident_mib,
        open_fds: crate::soak::open_fds(),
        threads: status.threads,
        // NaN (reported as null) when the gateway did not answer: not a view of 0.
        view_workers: view.map_or(f64::NAN, |v| v as f64),
        dht_records: topo.as_ref().map_or(0.0, |t| t.records_stored as f64),
        dht_providers: topo.as_ref().map_or(0.0, |t| t.providers_stored as f64),
        routing_table: topo.as_ref().map_or(0.0, |t| t.routing_table.len() as f64),
        dht_connections: topo.as_ref().map_or(0.0, |t| t.connections as f64),
    }
}
