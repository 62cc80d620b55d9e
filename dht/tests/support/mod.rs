//! Shared helpers of the dht integration tests.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::time::Duration;

pub use gpumesh_dht::testnet::{Testnet, TestnetConfig, wait_until};

/// Generous upper bound for "eventually" on a loaded 2-core machine.
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// Logs to the test output when `GPUMESH_LOG` is set.
pub fn init_tracing() {
    if let Ok(filter) = std::env::var("GPUMESH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}
