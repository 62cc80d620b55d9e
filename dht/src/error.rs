//! Errors at the crate boundary.

use crate::{
    rules::{InvalidSeed, InvalidServiceName},
    validate::RejectReason,
};

/// What can go wrong when configuring, starting or driving a node.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The configuration is invalid (a usage error: the caller should exit with code 64).
    #[error("invalid dht configuration: {0}")]
    Config(String),
    /// A service name breaks the rulebook's rule (a usage error, like [`DhtError::Config`]).
    #[error(transparent)]
    Service(#[from] InvalidServiceName),
    /// A seed address is not `/…/p2p/<peer id>` (a usage error, like [`DhtError::Config`]).
    #[error("invalid dht configuration: {0}")]
    Seed(#[from] InvalidSeed),
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file exists but its contents are not a valid key.
    #[error("key file {path}: {reason}")]
    BadKey {
        /// The file.
        path: std::path::PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Building the transport or listening failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The node has stopped (its task ended or shut down).
    #[error("the dht node has stopped")]
    Stopped,
    /// The node is too busy to take the command (its command queue is full).
    #[error("the dht node is busy (command queue full)")]
    Busy,
    /// A query did not finish before its deadline.
    #[error("dht query timed out")]
    Timeout,
    /// A query finished without the wanted result.
    #[error("dht query failed: {0}")]
    Query(String),
    /// Our own record could not be signed or failed our own validation.
    #[error("record refused: {0}")]
    Record(RejectReason),
    /// Publishing a gossip message failed.
    #[error("gossip publish failed: {0}")]
    Gossip(String),
}
