//! gpumesh-loadtest: the whole system in one process, as its users see it, and measured.
//!
//! Layout:
//! - [`fleet`]: [`Fleet`], N real agents with fake GPUs of mixed classes and mock services.
//! - [`demo`]: [`Demo`], a gateway (also the DHT seed) plus a fleet (`gpumesh demo`).
//! - [`scenario`]: [`Scenario`] and [`LoadtestConfig`], checked before anything starts.
//! - [`traffic`]: goose users driving `/api/service/...` and the hdrhistogram recorder.
//! - [`run`]: one load-test run, [`run::run`] (`gpumesh loadtest`).
//! - `scenarios`: what each scenario does during a run, one module per scenario.
//! - `harness`: the gateway on a runtime of its own (restartable), runtimes, fleet timings,
//!   the open-files budget.
//! - [`observe`]: what the harness reads from a gateway over its HTTP API.
//! - [`chaos`]: how long killed workers kept receiving traffic (`chaos`).
//! - [`soak`]: resource series and their trends (`soak`).
//! - [`liars`]: the lying groups, the run's canary file and its figures (`liars`).
//! - [`report`]: [`Report`] as JSON, markdown and an SVG chart.
//! - [`error`]: the crate's error type, [`LoadtestError`].

pub mod chaos;
pub mod demo;
pub mod error;
pub mod fleet;
mod harness;
pub mod liars;
pub mod observe;
pub mod report;
pub mod run;
pub mod scenario;
mod scenarios;
pub mod soak;
pub mod traffic;

pub use demo::{Demo, DemoConfig};
pub use error::LoadtestError;
pub use fleet::{Fleet, FleetConfig};
pub use report::Report;
pub use scenario::{LoadtestConfig, Scenario};
