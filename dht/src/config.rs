//! Node configuration: role, addresses, identity, network key and timings.
//!
//! Defaults are production values for 500–2000 workers (docs/dht.md explains each);
//! [`Timings::fast`] is the preset for tests and the in-process bench.

use std::{path::PathBuf, time::Duration};

use libp2p::{Multiaddr, identity::Keypair, pnet::PreSharedKey};

use crate::{
    DhtError,
    admission::Admission,
    metrics::DhtMetrics,
    rules::{InvalidSeed, RecordLimits, record_ttl},
};

/// How often a worker re-publishes its record unless told otherwise.
const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// What a node is for. Seeds and gateways are DHT servers; workers are DHT clients unless the
/// operator says they are reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A stable bootstrap node: server mode, relays gossip, stores records.
    Seed,
    /// A gateway: server mode, subscribes to load gossip, keeps the registry view.
    Gateway,
    /// A worker: publishes its record, provides its services, sends heartbeats.
    Worker {
        /// True when other nodes can dial this worker (then it runs in server mode).
        reachable: bool,
    },
}

impl Role {
    /// Whether this node answers DHT requests (kad `Mode::Server`).
    pub fn is_server(self) -> bool {
        !matches!(self, Role::Worker { reachable: false })
    }

    /// Whether this node subscribes to the load topic and so keeps a full registry view.
    pub fn subscribes(self) -> bool {
        matches!(self, Role::Seed | Role::Gateway)
    }
}

/// The transport: TCP in production, or libp2p's in-process memory transport for large test
/// networks (no file descriptors, same Noise/Yamux/pnet stack above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// TCP (`/ip4/../tcp/..`).
    Tcp,
    /// In-process memory transport (`/memory/<n>`).
    Memory,
}

/// Where the node's identity comes from.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A protobuf-encoded libp2p keypair file; created (mode 0600) if missing.
    File(PathBuf),
    /// A key in memory (tests, bench).
    Key(Keypair),
}

/// Timings. Every duration bounds something: see docs/dht.md for the reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Lifetime of a published worker record (and of its provider records); normally
    /// [`crate::rules::record_ttl`] of `refresh_interval` ([`Timings::with_refresh`]).
    pub record_ttl: Duration,
    /// How often a worker re-signs and re-publishes its record (and re-announces providers).
    pub refresh_interval: Duration,
    /// How often a worker sends a load heartbeat over gossip.
    pub heartbeat_interval: Duration,
    /// After this long without a heartbeat or refresh, a gateway drops a worker it heard from.
    pub liveness_timeout: Duration,
    /// Load figures older than this are reported as stale.
    pub load_stale_after: Duration,
    /// Deadline of every DHT query.
    pub query_timeout: Duration,
    /// How often expired records and providers are swept, and the registry aged.
    pub sweep_interval: Duration,
    /// How often a node checks it still has a seed connection (and re-dials seeds if not).
    pub seed_check_interval: Duration,
    /// Kademlia periodic bootstrap (skipped while the routing table is empty).
    pub bootstrap_interval: Duration,
    /// Idle connections are closed after this long.
    pub idle_connection_timeout: Duration,
    /// Gossipsub heartbeat (mesh maintenance).
    pub gossip_heartbeat: Duration,
    /// Identify re-run interval.
    pub identify_interval: Duration,
    /// Ping interval (dead-peer detection).
    pub ping_interval: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            record_ttl: record_ttl(DEFAULT_REFRESH),
            refresh_interval: DEFAULT_REFRESH,
            heartbeat_interval: Duration::from_secs(10),
            liveness_timeout: Duration::from_secs(45),
            load_stale_after: Duration::from_secs(30),
            query_timeout: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(5),
            seed_check_interval: Duration::from_secs(15),
            bootstrap_interval: Duration::from_secs(300),
            idle_connection_timeout: Duration::from_secs(120),
            gossip_heartbeat: Duration::from_secs(1),
            identify_interval: Duration::from_secs(300),
            ping_interval: Duration::from_secs(30),
        }
    }
}

impl Timings {
    /// These timings with records refreshed every `refresh` and living the rulebook's
    /// [`record_ttl`] of it.
    #[must_use]
    pub fn with_refresh(self, refresh: Duration) -> Self {
        Self {
            refresh_interval: refresh,
            record_ttl: record_ttl(refresh),
            ..self
        }
    }

    /// Short timings for tests and in-process networks: a record lives 8 s and is refreshed
    /// every 2 s, one refresh more than [`record_ttl`] gives, so that a loaded 2-core machine
    /// running debug builds does not see records expire between refreshes.
    pub fn fast() -> Self {
        Self {
            record_ttl: Duration::from_secs(8),
            refresh_interval: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(2),
            liveness_timeout: Duration::from_secs(7),
            load_stale_after: Duration::from_secs(4),
            query_timeout: Duration::from_secs(8),
            sweep_interval: Duration::from_millis(500),
            seed_check_interval: Duration::from_secs(1),
            bootstrap_interval: Duration::from_secs(60),
            idle_connection_timeout: Duration::from_secs(60),
            gossip_heartbeat: Duration::from_millis(300),
            identify_interval: Duration::from_secs(60),
            ping_interval: Duration::from_secs(2),
        }
    }
}

/// Sizes of the DHT and of the local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizing {
    /// Kademlia replication factor k (all nodes must agree).
    pub replication_factor: usize,
    /// Routing-table bucket size of DHT servers (seeds, gateways, reachable workers).
    pub server_bucket_size: usize,
    /// Routing-table bucket size of client-mode workers. libp2p-kad preallocates all 256
    /// buckets (about 40 KiB per entry of bucket size), and a client only needs enough servers
    /// to start its lookups from, so this is the main lever on per-worker memory.
    pub client_bucket_size: usize,
    /// Shards per service in the service index (all nodes must agree).
    pub service_shards: u32,
    /// Distinct record keys the store holds.
    pub max_records: usize,
    /// Provider records kept per key (above k so expired entries never block newcomers).
    pub max_providers_per_key: usize,
    /// Distinct provider keys the store holds.
    pub max_provider_keys: usize,
    /// Records cap.
    pub limits: RecordLimits,
}

impl Default for Sizing {
    fn default() -> Self {
        Self {
            replication_factor: 20,
            server_bucket_size: 20,
            client_bucket_size: 2,
            service_shards: 256,
            max_records: 8192,
            max_providers_per_key: 40,
            max_provider_keys: 16384,
            limits: RecordLimits::default(),
        }
    }
}

/// Caps on the node's libp2p connections (`libp2p::connection_limits`); a connection over
/// one is refused during its handshake. Sized for a server node of a 2000-worker network:
/// client-mode workers hold one or two connections to each server they use, so incoming
/// connections at a gateway or seed grow with the fleet; the caps stop an outsider from
/// opening sockets until the process runs out of file descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Connections still in their handshake (pnet, Noise, Yamux), from other nodes.
    pub max_pending_incoming: u32,
    /// Established connections other nodes opened.
    pub max_established_incoming: u32,
    /// Established connections in all, both directions.
    pub max_established: u32,
    /// Established connections to or from one peer (a simultaneous dial makes two).
    pub max_established_per_peer: u32,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            max_pending_incoming: 256,
            max_established_incoming: 4096,
            max_established: 4608,
            max_established_per_peer: 4,
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Role.
    pub role: Role,
    /// Transport.
    pub transport: TransportKind,
    /// Addresses to listen on (empty for a NATed worker: it only dials out).
    pub listen: Vec<Multiaddr>,
    /// Seeds as `/ip4/../tcp/../p2p/<peer_id>` (the `/p2p` part is required).
    pub seeds: Vec<Multiaddr>,
    /// Addresses to announce as confirmed external addresses (a reachable node's public address).
    pub external: Vec<Multiaddr>,
    /// Node identity.
    pub identity: Identity,
    /// Optional pre-shared network key: peers without it cannot connect at all.
    pub network_key: Option<PreSharedKey>,
    /// Operator-signed admission: this node's own token, and the operators it trusts (none:
    /// not enforced). See [`crate::admission`].
    pub admission: Admission,
    /// Timings.
    pub timings: Timings,
    /// DHT and store sizes.
    pub sizing: Sizing,
    /// Metrics handles (register them into your registry with [`DhtMetrics::register`]).
    pub metrics: DhtMetrics,
    /// Capacity of the command queue and of the registry event channel.
    pub channel_capacity: usize,
    /// Caps on libp2p connections.
    pub connection_caps: ConnectionCaps,
}

impl NodeConfig {
    /// A config with production timings for `role`, a fresh in-memory identity, TCP, no
    /// listen address and no seeds.
    pub fn new(role: Role) -> Self {
        Self {
            role,
            transport: TransportKind::Tcp,
            listen: Vec::new(),
            seeds: Vec::new(),
            external: Vec::new(),
            identity: Identity::Key(Keypair::generate_ed25519()),
            network_key: None,
            admission: Admission::default(),
            timings: Timings::default(),
            sizing: Sizing::default(),
            metrics: DhtMetrics::default(),
            channel_capacity: 1024,
            connection_caps: ConnectionCaps::default(),
        }
    }

    /// Checks the configuration before any socket is opened.
    pub fn validate(&self) -> Result<(), DhtError> {
        let t = &self.timings;
        let bad = |m: &str| Err(DhtError::Config(m.to_owned()));
        if t.record_ttl.is_zero() || t.record_ttl > self.sizing.limits.max_ttl {
            return bad("record_ttl must be > 0 and <= the record max_ttl");
        }
        if t.refresh_interval.is_zero() || t.refresh_interval >= t.record_ttl {
            return bad("refresh_interval must be > 0 and shorter than record_ttl");
        }
        if t.heartbeat_interval.is_zero() || t.query_timeout.is_zero() || t.sweep_interval.is_zero()
        {
            return bad("heartbeat_interval, query_timeout and sweep_interval must be > 0");
        }
        if self.sizing.replication_factor == 0
            || self.sizing.service_shards == 0
            || self.sizing.server_bucket_size == 0
            || self.sizing.client_bucket_size == 0
        {
            return bad("replication_factor, bucket sizes and service_shards must be > 0");
        }
        if self.sizing.service_shards > crate::keys::MAX_SHARDS {
            return bad("service_shards must be <= 4096");
        }
        if self.role.is_server() && self.listen.is_empty() {
            return bad("seeds, gateways and reachable workers need at least one listen address");
        }
        for seed in &self.seeds {
            if crate::rules::peer_of(seed).is_none() {
                return Err(InvalidSeed::NoPeerId(seed.to_string()).into());
            }
        }
        if self.channel_capacity == 0 {
            return bad("channel_capacity must be > 0");
        }
        Ok(())
    }
}
