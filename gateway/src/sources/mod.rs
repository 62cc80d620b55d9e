//! Worker sources: where this gateway hears about workers.
//!
//! Each source turns what it hears into [`Change`]s and applies them to the one
//! [`Directory`](crate::directory::Directory) table, tagging each with its provenance
//! ([`Source`]). The shape follows iroh's discovery sources and linkerd's pool updates:
//! sources only add, refresh and remove; the directory alone decides what the table holds.
//!
//! - [`dht`]: the gateway's DHT node. Its view ([`gpumesh_dht::RegistryView`]) verifies
//!   records and owns their lease (extended by gossip heartbeats); the directory trusts its
//!   `Left` events and keeps no second expiry for DHT workers.
//! - [`registry`]: the HTTP fallback registry (`/api/workers/register`, heartbeat,
//!   deregister): its handlers, its admission store and the lease it grants.

pub mod dht;
pub mod registry;

pub use crate::directory::{Change, Refresh, Source};
