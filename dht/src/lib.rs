//! gpumesh-dht: the libp2p node that workers and gateways use to find each other.
//!
//! Will hold the node (one task owns the Swarm, driven through a cloneable handle), signed worker
//! records and their validation, the sharded service index, load gossip, the worker registry
//! view, and an in-process network of many nodes for tests and `gpumesh dht-bench`.
//!
//! Layout:
//! - [`record`]: the worker record schema.

pub mod record;
