//! gpumesh-scheduler: pure worker selection, and (feature `sim`) the policy simulator.
//!
//! The gateway keeps one [`Scheduler`]: it feeds it [`WorkerView`]s from the DHT
//! ([`Scheduler::upsert_worker`], [`Scheduler::update_load`], [`Scheduler::remove_worker`]),
//! asks it for a worker per request ([`Scheduler::pick`] with validated [`Requirements`]),
//! and reports each response's end ([`Scheduler::on_finish`]). When nothing fits, the
//! [`NoEligible`] error says why. No I/O: the clock (`now: Duration`) and the RNG are
//! injected, so the simulator runs the very same code deterministically.
//!
//! # Layout
//! - [`worker`]: the worker view (services, GPUs, published load, state, health).
//! - [`gpu`]: GPU speed classes (throughput relative to an H100).
//! - [`requirements`]: per-request requirements, validated.
//! - [`error`]: [`InvalidRequirements`] and [`NoEligible`].
//! - [`ewma`]: the peak-EWMA latency estimate (Finagle, tower, linkerd2-proxy).
//! - [`ejection`]: outlier ejection with backoff.
//! - [`trust`]: trust in a worker's answers, from checks and serving.
//! - [`capacity`]: slots and speed learned from serving (a record's claim is a ceiling).
//! - `bound`: an O(1)-maintained bound on sampling weights, for rejection sampling.
//! - [`config`]: [`SchedulerConfig`] (gpumesh's settings and tower's).
//! - `table`: worker slots, id map and per-service index.
//! - [`candidates`]: the eligible set of one pick; allocation-free sampling and scans.
//! - [`scheduler`]: the [`Scheduler`] API.
//! - [`policy`]: the [`Policy`] trait, gpumesh's cost and the reference policies.
//! - `sim` (feature `sim`): the discrete-event simulator behind `gpumesh sim`. A harness that
//!   runs this crate's own code against simulated fleets; the gateway does not carry it.

mod bound;
pub mod candidates;
pub mod capacity;
pub mod config;
pub mod ejection;
pub mod error;
pub mod ewma;
pub mod gpu;
pub mod policy;
pub mod requirements;
pub mod scheduler;
#[cfg(feature = "sim")]
pub mod sim;
mod table;
pub mod trust;
pub mod worker;

pub use candidates::Candidates;
pub use capacity::CapacityConfig;
pub use config::SchedulerConfig;
pub use error::{InvalidRequirements, NoEligible};
pub use gpu::speed_factor;
pub use policy::{Policy, PolicyKind};
pub use requirements::Requirements;
pub use scheduler::{Outcome, Pick, Scheduler, WorkerSnapshot};
pub use table::{WorkerEntry, WorkerKey};
pub use trust::{Evidence, TrustConfig, TrustState};
pub use worker::{Gpu, PublishedLoad, WorkerState, WorkerView};
