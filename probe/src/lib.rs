//! gpumesh-probe: the worker agent.
//!
//! A volunteer runs `gpumesh agent` beside a GPU service. The agent measures the machine,
//! gets a public URL, and announces the worker (DHT, or the gateway's HTTP registry as a
//! fallback) until it is told to drain.
//!
//! Layout:
//! - [`gpu`]: the `GpuSource` seam (NVML, fake profiles, none).
//! - [`host`]: host CPU/memory/load figures (sysinfo, cgroup-aware).
//! - [`sampler`]: GPU + host sampling off the async runtime.
//! - [`record`]: building worker records and deciding what is a material change.
//! - [`load`]: the local endpoint the service reports its in-flight/queue to.
//! - [`tunnel`]: the public URL: fixed, or a supervised `cloudflared`.
//! - [`backoff`]: jittered exponential backoff.
//! - [`bootstrap`]: seed list fetching and the on-disk seed cache.
//! - [`coordinator`]: the gateway's HTTP worker registry client (fallback mode).
//! - [`http`]: bounded reads of HTTP answers.
//! - [`agent`]: configuration and the agent loop, `run(config, shutdown)`.
//! - [`error`]: the crate's error types.

pub mod agent;
pub mod backoff;
pub mod bootstrap;
pub mod coordinator;
pub mod error;
pub mod gpu;
pub mod host;
pub mod http;
pub mod load;
pub mod record;
pub mod sampler;
pub mod tunnel;

pub use agent::{AgentConfig, run};
pub use error::{AgentError, ProbeError};
pub use gpu::{GpuChoice, GpuSource};
