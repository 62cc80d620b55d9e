//! `slow-worker`: a tenth of the workers turn ten times slower during the middle third of the
//! run, then heal. The latency timeline shows how fast the gateway's latency estimates move
//! traffic off them and back.

use gpumesh_testkit::Fault;
use tracing::warn;

use super::{Ctx, Outcome, pick, until_event};
use crate::error::LoadtestError;

/// How much slower a slow worker serves.
const SLOWDOWN: f64 = 10.0;

/// Slows a tenth of the workers a third of the way in, heals them a third later.
pub(crate) async fn during(ctx: &mut Ctx<'_>) -> Result<Outcome, LoadtestError> {
    until_event(ctx.config).await;
    let n = ctx.config.workers;
    let slow = pick(n, (n / 10).max(1), 0x5151_0BAD_F00D_0001);
    set(ctx, &slow, Fault::Slow { factor: SLOWDOWN }).await;
    tokio::time::sleep(ctx.config.duration / 3).await;
    set(ctx, &slow, Fault::None).await;
    Ok(Outcome::default())
}

async fn set(ctx: &Ctx<'_>, workers: &[usize], fault: Fault) {
    for &i in workers {
        if let Err(e) = ctx.fleet.set_fault(i, fault).await {
            warn!(worker = i, error = %e, "fault not applied");
        }
    }
}
