//! Typed errors at the crate boundary.

/// Why a mock service could not start (or restart after a crash fault).
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// The figures make no sense (no slots, a non-positive speed, negative times).
    #[error("invalid mock service configuration: {0}")]
    Config(String),
    /// The listener could not be bound.
    #[error("mock service cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Another local I/O error (reading back the bound address).
    #[error("mock service I/O error: {0}")]
    Io(#[from] std::io::Error),
}
