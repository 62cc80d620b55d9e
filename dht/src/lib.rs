//! gpumesh-dht: the libp2p node that workers and gateways use to find each other.
//!
//! One task owns the Swarm (Kademlia, identify, ping, gossipsub over TCP or memory, Noise, Yamux,
//! optional pnet); everyone else drives it through a cloneable [`DhtHandle`]. Workers publish a
//! signed [`WorkerRecord`] and provide their services in a sharded index; gateways keep a
//! [`RegistryView`] merged from records and signed load heartbeats. See `docs/dht.md`.
//!
//! Layout:
//! - [`rules`]: the rulebook every crate applies to records (names, limits, stamps, clock).
//! - [`record`]: the worker record schema.
//! - [`admission`]: operator-signed admission tokens and the keys that check them.
//! - [`signed`]: signed envelopes around records; verification.
//! - [`request`]: signed registry requests (heartbeats, deregistrations) under admission.
//! - [`validate`]: why inbound data is refused (the limits are the rulebook's).
//! - [`keys`]: protocol names and key namespaces, service shards.
//! - [`config`]: [`NodeConfig`], roles, timings, sizes.
//! - [`identity`]: key files (node identity, pre-shared network key).
//! - [`node`]: the event loop; [`spawn`] and [`run`].
//! - [`handle`]: [`DhtHandle`], the commands it sends.
//! - [`registry`]: the worker view and its events.
//! - [`gossip`]: heartbeat, announcement and leave messages.
//! - [`metrics`]: prometheus-client series.
//! - `testnet` (feature `testkit`): an in-process network of many nodes (tests, bench).
//! - `bench` (feature `testkit`): `gpumesh dht-bench`.
//! - [`wire`]: HTTP shapes agents and gateways share (bootstrap seeds, fallback registry).
//! - `behaviour`, `transport` (private): the composed behaviour and the transport stack.

pub mod admission;
mod behaviour;
#[cfg(feature = "testkit")]
pub mod bench;
pub mod config;
mod error;
pub mod gossip;
pub mod handle;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod request;
pub mod rules;
/// The wire schema of worker records (it lives in the rulebook).
pub use rules::record;
pub mod signed;
#[cfg(feature = "testkit")]
pub mod testnet;
mod transport;
pub mod validate;
pub mod wire;

pub use admission::{Admission, AdmissionToken, OperatorKey};
pub use config::{ConnectionCaps, NodeConfig, Role, Timings, TransportKind};
pub use error::DhtError;
pub use handle::{DhtHandle, LoadSample, Topology};
/// The pre-shared network key type (libp2p pnet), for crates that pass one through.
pub use libp2p::pnet::PreSharedKey;
pub use node::{run, spawn};
pub use record::WorkerRecord;
pub use registry::{RegistryEvent, RegistryView, WorkerEntry};
pub use rules::ServiceName;
pub use signed::SignedRecord;
pub use validate::RejectReason;
