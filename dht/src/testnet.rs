//! An in-process network of many real nodes, for tests and `gpumesh dht-bench`.
//!
//! Every node is a full [`crate::spawn`]ed node with the real transport stack: TCP on
//! `127.0.0.1` port 0, or libp2p's memory transport (`/memory/0`) for very large networks
//! (no file descriptors); both run Noise + Yamux (and pnet when a network key is set).
//! Gateways double as seeds, as in production: each gateway bootstraps from the gateways started
//! before it, and workers get the whole gateway list, as the HTTP bootstrap endpoint would give.

use std::time::Duration;

use libp2p::{Multiaddr, identity::Keypair, multiaddr::Protocol, pnet::PreSharedKey};
use tokio_util::sync::CancellationToken;

use crate::{
    DhtError, DhtHandle, NodeConfig, Role, Timings, TransportKind, WorkerRecord,
    config::{Identity, Sizing},
    metrics::DhtMetrics,
    rules::ServiceName,
};

/// How to build a test network.
#[derive(Debug, Clone)]
pub struct TestnetConfig {
    /// Transport of every node.
    pub transport: TransportKind,
    /// Timings of every node.
    pub timings: Timings,
    /// Sizes of every node.
    pub sizing: Sizing,
    /// Optional network key given to every node.
    pub network_key: Option<PreSharedKey>,
    /// When set, every node shares these metrics (the bench sums over nodes that way);
    /// otherwise each node gets its own.
    pub shared_metrics: Option<DhtMetrics>,
    /// Services each worker offers.
    pub services: Vec<ServiceName>,
}

impl Default for TestnetConfig {
    fn default() -> Self {
        let sizing = Sizing {
            service_shards: 8,
            ..Sizing::default()
        };
        Self {
            transport: TransportKind::Tcp,
            timings: Timings::fast(),
            sizing,
            network_key: None,
            shared_metrics: None,
            services: vec![ServiceName::parse("ocr").expect("a valid name")],
        }
    }
}

/// A running test network.
#[derive(Debug)]
pub struct Testnet {
    /// The configuration.
    pub config: TestnetConfig,
    /// Gateways (server mode, subscribed to load gossip; also the seeds).
    pub gateways: Vec<DhtHandle>,
    /// Seed addresses of the gateways (`.../p2p/<id>`), in start order.
    pub seeds: Vec<Multiaddr>,
    /// Workers.
    pub workers: Vec<DhtHandle>,
    shutdown: CancellationToken,
    /// Where server-mode nodes (gateways) run; `None`: the current runtime.
    server_runtime: Option<tokio::runtime::Handle>,
}

impl Testnet {
    /// An empty network.
    pub fn new(config: TestnetConfig) -> Self {
        Self {
            config,
            gateways: Vec::new(),
            seeds: Vec::new(),
            workers: Vec::new(),
            shutdown: CancellationToken::new(),
            server_runtime: None,
        }
    }

    /// Runs server-mode nodes started from now on (gateways) on `runtime` instead of the
    /// current one. The bench gives gateways their own threads, as separate processes on their
    /// own machines would have, so that 2000 worker tasks on the same scheduler cannot starve
    /// them. The caller keeps the runtime alive until [`Testnet::shutdown`] returned.
    pub fn set_server_runtime(&mut self, runtime: tokio::runtime::Handle) {
        self.server_runtime = Some(runtime);
    }

    /// Starts a network with `gateways` gateways (no workers yet).
    pub async fn with_gateways(config: TestnetConfig, gateways: usize) -> Result<Self, DhtError> {
        let mut net = Self::new(config);
        for _ in 0..gateways {
            net.add_gateway().await?;
        }
        Ok(net)
    }

    /// The shutdown token every node of this network hangs off.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// A listen address for this network's transport (port chosen by the OS / at random).
    pub fn listen_addr(&self) -> Multiaddr {
        match self.config.transport {
            TransportKind::Tcp => "/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr"),
            TransportKind::Memory => Multiaddr::empty().with(Protocol::Memory(0)),
        }
    }

    /// A node config for `role` with this network's settings and `seeds`.
    pub fn node_config(&self, role: Role, seeds: Vec<Multiaddr>) -> NodeConfig {
        let mut c = NodeConfig::new(role);
        c.transport = self.config.transport;
        c.timings = self.config.timings;
        c.sizing = self.config.sizing;
        c.network_key = self.config.network_key;
        c.seeds = seeds;
        if let Some(m) = &self.config.shared_metrics {
            c.metrics = m.clone();
        }
        if role.is_server() {
            c.listen = vec![self.listen_addr()];
        }
        c
    }

    /// Starts a node from `config` and, for a server, waits until it listens; returns the handle
    /// and its dialable address (`.../p2p/<id>`) if it listens.
    pub async fn start_node(
        &self,
        config: NodeConfig,
    ) -> Result<(DhtHandle, Option<Multiaddr>), DhtError> {
        let listens = !config.listen.is_empty();
        let handle = match &self.server_runtime {
            Some(rt) if config.role.is_server() => {
                let _guard = rt.enter();
                crate::spawn(config, self.shutdown.child_token())?
            }
            _ => crate::spawn(config, self.shutdown.child_token())?,
        };
        if !listens {
            return Ok((handle, None));
        }
        let addr = wait_listen_addr(&handle).await?;
        Ok((handle, Some(addr)))
    }

    /// Starts a gateway seeded with the gateways before it.
    pub async fn add_gateway(&mut self) -> Result<DhtHandle, DhtError> {
        let config = self.node_config(Role::Gateway, self.seeds.clone());
        self.add_gateway_with(config).await
    }

    /// Starts a gateway from a prepared config (e.g. a fixed key and port for restarts).
    pub async fn add_gateway_with(&mut self, config: NodeConfig) -> Result<DhtHandle, DhtError> {
        let (handle, addr) = self.start_node(config).await?;
        if let Some(addr) = addr
            && !self.seeds.contains(&addr)
        {
            self.seeds.push(addr);
        }
        self.gateways.push(handle.clone());
        Ok(handle)
    }

    /// Starts a worker (client mode unless `reachable`) seeded with every gateway, without
    /// publishing anything.
    pub async fn spawn_worker(&mut self, reachable: bool) -> Result<DhtHandle, DhtError> {
        let config = self.node_config(Role::Worker { reachable }, self.seeds.clone());
        let (handle, _) = self.start_node(config).await?;
        self.workers.push(handle.clone());
        Ok(handle)
    }

    /// Starts a worker and publishes its record (returns once a server acknowledged it).
    pub async fn add_worker(&mut self) -> Result<DhtHandle, DhtError> {
        let handle = self.spawn_worker(false).await?;
        let n = self.workers.len();
        handle.publish_record(self.worker_record(n)).await?;
        Ok(handle)
    }

    /// The record the `n`th worker publishes.
    pub fn worker_record(&self, n: usize) -> WorkerRecord {
        WorkerRecord::new(
            self.config.services.clone(),
            format!("https://worker-{n}.example.invalid"),
        )
    }

    /// True when every gateway's view holds every worker in `workers`.
    pub fn all_gateways_see(&self, workers: &[DhtHandle]) -> bool {
        self.gateways
            .iter()
            .all(|g| !g.is_stopped() && workers.iter().all(|w| g.registry().contains(&w.peer_id())))
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for h in self.gateways.iter().chain(self.workers.iter()) {
            h.shutdown().await;
        }
    }
}

/// A fresh node identity (for restarts with the same peer id).
pub fn fresh_identity() -> (Identity, Keypair) {
    let k = Keypair::generate_ed25519();
    (Identity::Key(k.clone()), k)
}

/// Waits (up to 10 s) until `handle` reports a listen address, and returns it with `/p2p/<id>`.
pub async fn wait_listen_addr(handle: &DhtHandle) -> Result<Multiaddr, DhtError> {
    for _ in 0..200 {
        let topo = handle.topology().await?;
        if let Some(a) = topo.listen_addrs.first() {
            return Ok(a.clone().with(Protocol::P2p(handle.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DhtError::Transport("node did not start listening".into()))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
