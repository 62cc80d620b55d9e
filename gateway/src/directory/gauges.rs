//! The `workers` and `workers_by_gpu` gauges: where each worker counts.

use gpumesh_dht::record::{WorkerRecord, WorkerState};

use super::Source;
use super::worker::state_name;
use crate::metrics::{GpuCountLabels, Metrics, WorkerCountLabels};

/// The `gpu` label of a worker that publishes no GPU.
const NO_GPU: &str = "none";

/// The states the worker gauges report (a series for each from the start).
const COUNTED_STATES: [WorkerState; 3] = [
    WorkerState::Joining,
    WorkerState::Online,
    WorkerState::Draining,
];

/// Where a worker counts in the gauges. They are kept by moving one worker between series on
/// each change (O(1)); recounting the whole view on every join cost O(n²) while 2000 workers
/// joined at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    source: Source,
    state: WorkerState,
    /// Speed class of the first GPU (`gpumesh_scheduler::gpu::gpu_class`), or `none`.
    class: &'static str,
}

impl Tally {
    pub(super) fn of(record: &WorkerRecord, source: Source) -> Self {
        Self {
            source,
            state: record.state,
            class: record
                .gpus
                .first()
                .map_or(NO_GPU, |g| gpumesh_scheduler::gpu::gpu_class(&g.model)),
        }
    }
}

/// Creates every series at 0, so an empty class or state reads 0 rather than missing; the
/// label sets are bounded (sources × states, classes × states).
pub(super) fn init(metrics: &Metrics) {
    let classes = gpumesh_scheduler::gpu::SPEED_CLASSES
        .iter()
        .map(|(c, _)| *c)
        .chain([gpumesh_scheduler::gpu::OTHER_CLASS, NO_GPU]);
    for state in COUNTED_STATES {
        for source in [Source::Dht, Source::Registry] {
            metrics
                .workers
                .get_or_create(&WorkerCountLabels {
                    source: source.as_str().into(),
                    state: state_name(state).into(),
                })
                .inc_by(0);
        }
        for class in classes.clone() {
            metrics
                .workers_by_gpu
                .get_or_create(&GpuCountLabels {
                    gpu: class.to_owned(),
                    state: state_name(state).into(),
                })
                .inc_by(0);
        }
    }
}

/// Moves one worker between gauge series (`None`: not in the view).
pub(super) fn recount(metrics: &Metrics, from: Option<Tally>, to: Option<Tally>) {
    if from == to {
        return;
    }
    for (tally, delta) in [(from, -1), (to, 1)] {
        let Some(t) = tally else { continue };
        let state = state_name(t.state);
        metrics
            .workers
            .get_or_create(&WorkerCountLabels {
                source: t.source.as_str().into(),
                state: state.into(),
            })
            .inc_by(delta);
        metrics
            .workers_by_gpu
            .get_or_create(&GpuCountLabels {
                gpu: t.class.to_owned(),
                state: state.into(),
            })
            .inc_by(delta);
    }
}
