//! Shared helpers for the probe's integration tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod fake_cloudflared;
pub mod fake_gateway;

use std::path::PathBuf;

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gpumesh-probe-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
