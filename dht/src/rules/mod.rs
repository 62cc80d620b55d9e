//! The rulebook: every rule about worker records that more than one crate applies.
//!
//! The probe, the DHT node, the gateway's registry and its request path all call these; none
//! re-implements them.
//!
//! Layout:
//! - [`clock`]: the one wall clock (ms since the Unix epoch) records are stamped and checked with.

pub mod clock;

pub use clock::unix_ms;
