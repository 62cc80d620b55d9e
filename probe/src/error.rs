//! Typed errors at the crate boundary.

use std::path::PathBuf;

/// Errors from the GPU and host probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The NVML library or driver could not be loaded or initialised.
    #[error("NVML is not available ({0}); is the NVIDIA driver installed?")]
    NvmlUnavailable(String),
    /// An NVML call failed for the whole sample (e.g. the device count).
    #[error("NVML call failed: {0}")]
    Nvml(String),
    /// `--gpu-profile` named neither a built-in profile nor a readable file.
    #[error(
        "unknown GPU profile `{0}` (built-in: h100x2, h200x8, a100, rtx3090, t4; or a path to a .toml file)"
    )]
    UnknownProfile(String),
    /// A profile file could not be read.
    #[error("cannot read GPU profile file {path}: {source}")]
    ProfileIo {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A profile file was read but is not a valid profile.
    #[error("bad GPU profile file {path}: {message}")]
    ProfileInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Host statistics are not supported on this platform.
    #[error("host statistics unavailable: {0}")]
    Host(String),
}

/// Errors that stop the agent or one of its parts from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is invalid (the CLI maps this to exit code 64).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The probe could not be set up.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An I/O error outside binding (seed cache, child processes).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The node identity key could not be loaded or created.
    #[error("node identity: {0}")]
    Identity(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
}

impl AgentError {
    /// Whether the error is the operator's configuration (the CLI exits 64 for these).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            AgentError::Config(_)
                | AgentError::Probe(
                    ProbeError::UnknownProfile(_)
                        | ProbeError::ProfileIo { .. }
                        | ProbeError::ProfileInvalid { .. }
                )
        )
    }
}
