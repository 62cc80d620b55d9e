//! gpumesh-loadtest: the whole system in one process, as its users see it, and measured.
//!
//! Layout:
//! - [`fleet`]: [`Fleet`], N real agents with fake GPUs of mixed classes and mock services.
//! - [`demo`]: [`Demo`], a gateway (also the DHT seed) plus a fleet (`gpumesh demo`).
//! - [`error`]: [`LoadtestError`].

pub mod demo;
pub mod error;
pub mod fleet;

pub use demo::{Demo, DemoConfig};
pub use error::LoadtestError;
pub use fleet::{Fleet, FleetConfig};
