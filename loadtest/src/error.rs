//! The crate's error type.

/// Why a demo, fleet or load test could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// A bad option (the CLI maps it to exit code 64).
    #[error("{0}")]
    Usage(String),
    /// The gateway could not start or failed.
    #[error("gateway: {0}")]
    Gateway(#[from] gpumesh_gateway::RunError),
    /// An agent could not start.
    #[error("agent: {0}")]
    Agent(#[from] gpumesh_probe::AgentError),
    /// A worker's mock service could not start or restart.
    #[error("mock service: {0}")]
    Service(#[from] gpumesh_testkit::MockError),
    /// A local file or socket problem.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP client problem (building the client, reaching the gateway).
    #[error("HTTP: {0}")]
    Http(String),
    /// Something did not happen in time (the target could not be reached, workers missing).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The load generator failed.
    #[error("load generator: {0}")]
    Goose(String),
}
