//! `gateway-restart`: the gateway stops and starts again a third of the way in, on the same
//! addresses and DHT identity (with its saved view file unless `--no-view-file`), and the run
//! times how long until its view holds every worker again.

use std::time::Duration;

use super::{Ctx, Outcome, until_event};
use crate::error::LoadtestError;
use crate::observe::{central, wait_for_workers};

/// How long the restarted gateway gets to see the whole fleet again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// Restarts the gateway and times the view's recovery.
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Result<Outcome, LoadtestError> {
    until_event(ctx.config).await;
    let before = central(ctx.http, ctx.url).await;
    let restarted = ctx.gateway.restart().await?;
    let view_recovery_s = wait_for_workers(ctx.url, ctx.config.workers, RECOVERY_LIMIT)
        .await
        .ok()
        .map(|d| d.as_secs_f64().max(restarted.elapsed().as_secs_f64()));
    Ok(Outcome {
        view_recovery_s,
        central_before_restart: Some(before),
        ..Outcome::default()
    })
}
