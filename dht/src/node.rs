//! The node: one task owns the Swarm; [`spawn`] returns the [`DhtHandle`] that drives it.
//!
//! Model: rust-libp2p `examples/file-sharing/src/network.rs`, changed so that nothing inside the
//! loop ever awaits a channel (replies are oneshots; events go out on a broadcast channel),
//! every query carries a deadline, query results accumulate across steps, and unknown events
//! are logged rather than fatal.

mod commands;
mod events;
mod gate;
mod queries;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    gossipsub::IdentTopic,
    identity::Keypair,
    kad::{QueryId, RecordKey},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    DhtError,
    behaviour::Behaviour,
    config::{Identity, NodeConfig},
    handle::{Command, DhtHandle, LoadSample},
    identity::load_or_create_keypair,
    keys,
    metrics::DhtMetrics,
    record::WorkerRecord,
    registry::RegistryView,
    rules::{Stamper, peer_of, unix_ms},
    transport::build_swarm,
};

use self::queries::{FindJob, Pending};

/// The last 6 characters of a peer id, for logs.
fn short(peer: &PeerId) -> String {
    let s = peer.to_base58();
    s[s.len().saturating_sub(6)..].to_owned()
}

/// The node's keypair from its configured identity, warning when the configured admission
/// token names another peer.
fn node_key(config: &NodeConfig) -> Result<Keypair, DhtError> {
    let key = match &config.identity {
        Identity::File(path) => load_or_create_keypair(path)?,
        Identity::Key(k) => k.clone(),
    };
    if let Some(token) = &config.admission.token {
        // Not fatal here (the agent refuses such a token before it starts a node): the records
        // are still published, and admission-enforcing nodes count and refuse them.
        let me = key.public().to_peer_id();
        if token.peer_id() != me {
            tracing::warn!(token_peer = %token.peer_id(), peer = %me,
                "the admission token is for another peer; enforcing nodes will refuse this node");
        }
    }
    Ok(key)
}

/// Builds the swarm, opens its listeners, adds its external addresses and, for roles that
/// follow load, subscribes to the load topic (returned for later publishing).
fn open_swarm(
    config: &NodeConfig,
    key: &Keypair,
) -> Result<(Swarm<Behaviour>, IdentTopic), DhtError> {
    let mut swarm = build_swarm(config, key)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| DhtError::Transport(format!("listen on {addr}: {e}")))?;
    }
    for addr in &config.external {
        swarm.add_external_address(addr.clone());
    }
    let topic = IdentTopic::new(keys::LOAD_TOPIC);
    if config.role.subscribes() {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|e| DhtError::Config(format!("subscribe: {e}")))?;
    }
    Ok((swarm, topic))
}

/// Starts a node on the current tokio runtime. It runs until `shutdown` is cancelled (or
/// [`DhtHandle::shutdown`] is called). Configuration is validated and the listeners are open
/// before this returns.
pub fn spawn(config: NodeConfig, shutdown: CancellationToken) -> Result<DhtHandle, DhtError> {
    config.validate()?;
    let key = node_key(&config)?;
    let (swarm, topic) = open_swarm(&config, &key)?;
    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let (stopped_tx, stopped_rx) = watch::channel(false);
    let metrics = config.metrics.clone();
    let registry = RegistryView::new(config.channel_capacity, metrics.clone());
    let cancel = shutdown.child_token();
    let handle = DhtHandle {
        tx,
        peer_id: key.public().to_peer_id(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        cancel: cancel.clone(),
        stopped: stopped_rx,
        deadline: config.timings.query_timeout * 2 + Duration::from_secs(1),
    };
    let seeds = config
        .seeds
        .iter()
        .filter_map(|a| Some((peer_of(a)?, a.clone())))
        .filter(|(p, _)| *p != handle.peer_id)
        .collect();
    let mut el = EventLoop {
        swarm,
        key,
        config,
        commands: rx,
        registry,
        metrics,
        topic,
        seeds,
        remote_addrs: HashMap::new(),
        ping_failures: HashMap::new(),
        queries: HashMap::new(),
        jobs: HashMap::new(),
        next_job: 0,
        own: None,
        provided: BTreeSet::new(),
        heartbeat_seq: 0,
        last_load: LoadSample::default(),
        announce_due: false,
        announced: false,
        last_announce: Instant::now(),
        fetching: HashSet::new(),
        provider_keys: HashSet::new(),
        stamper: Stamper::new(),
        started_ms: unix_ms(),
        stored_seqs: HashMap::new(),
        put_retry_at: None,
        put_backoff: Duration::ZERO,
        gate: gate::Gate::default(),
        own_token_expired_logged: false,
    };
    el.dial_seeds();
    let span = tracing::debug_span!("dht", peer = %short(&el.local_peer()));
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            el.run(cancel).await;
            let _ = stopped_tx.send(true);
        },
        span,
    ));
    Ok(handle)
}

/// Runs a node until `shutdown` is cancelled (the `run(config, shutdown)` entry point of a
/// stand-alone seed).
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> Result<(), DhtError> {
    let handle = spawn(config, shutdown.clone())?;
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

/// This worker's own published record.
struct OwnRecord {
    template: WorkerRecord,
    seq: u64,
    expires_at_ms: u64,
    /// `seq` of the last record whose content changed (announced over gossip).
    content_seq: u64,
    bytes: Vec<u8>,
}

/// The task that owns the Swarm.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    config: NodeConfig,
    commands: mpsc::Receiver<Command>,
    registry: RegistryView,
    metrics: DhtMetrics,
    topic: IdentTopic,
    seeds: Vec<(PeerId, Multiaddr)>,
    /// The address each connected peer reached us from / we reached it at.
    remote_addrs: HashMap<PeerId, Multiaddr>,
    ping_failures: HashMap<PeerId, u32>,
    queries: HashMap<QueryId, Pending>,
    jobs: HashMap<u64, FindJob>,
    next_job: u64,
    own: Option<OwnRecord>,
    provided: BTreeSet<String>,
    heartbeat_seq: u64,
    last_load: LoadSample,
    announce_due: bool,
    /// True once the current record content reached at least one subscriber.
    announced: bool,
    last_announce: Instant,
    /// Workers whose record is being fetched (deduplicates heartbeat-triggered lookups).
    fetching: HashSet<PeerId>,
    /// Provider keys held locally, swept for expired providers.
    provider_keys: HashSet<RecordKey>,
    /// Stamps this worker's records (`seq`, issue and expiry times).
    stamper: Stamper,
    started_ms: u64,
    /// `seq` of each record in the store (so newest-wins needs no second signature check).
    stored_seqs: HashMap<RecordKey, u64>,
    /// When a failed put of our own record is retried (jittered exponential backoff), instead
    /// of waiting for the next refresh: a start burst makes first puts time out.
    put_retry_at: Option<Instant>,
    /// The last retry delay (zero after a successful put).
    put_backoff: Duration,
    /// Admission state (admitted, denied and unknown peers).
    gate: gate::Gate,
    /// Whether the expiry of this node's own admission token has been logged.
    own_token_expired_logged: bool,
}

impl EventLoop {
    async fn run(&mut self, cancel: CancellationToken) {
        let t = self.config.timings;
        let mut refresh = tokio::time::interval(t.refresh_interval);
        let mut heartbeat = tokio::time::interval(t.heartbeat_interval);
        let mut sweep = tokio::time::interval(t.sweep_interval);
        let mut seed_check = tokio::time::interval(t.seed_check_interval);
        let mut bootstrap = tokio::time::interval(t.bootstrap_interval);
        // Query deadlines and announce/put retries: 250 ms is precise enough, and each tick polls
        // the whole swarm (at 2000 nodes in one process, 100 ms ticks alone cost ~20k polls/s).
        let mut deadlines = tokio::time::interval(Duration::from_millis(250));
        for i in [
            &mut refresh,
            &mut heartbeat,
            &mut sweep,
            &mut seed_check,
            &mut bootstrap,
            &mut deadlines,
        ] {
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        refresh.reset();
        heartbeat.reset();
        bootstrap.reset();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = refresh.tick() => self.refresh_own(),
                _ = heartbeat.tick() => self.send_heartbeat(),
                _ = sweep.tick() => self.sweep(),
                _ = seed_check.tick() => self.check_seeds(),
                _ = bootstrap.tick() => self.periodic_bootstrap(),
                _ = deadlines.tick() => {
                    self.expire_queries();
                    self.retry_announce();
                    self.retry_put();
                }
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "dht node stopped");
    }

    fn local_peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Puts the seeds into the routing table and bootstraps; kad dials them (one connection
    /// each; dialling here as well would open duplicates).
    fn dial_seeds(&mut self) {
        for (peer, addr) in &self.seeds {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(peer, addr.clone());
        }
        if !self.seeds.is_empty()
            && let Err(e) = self.swarm.behaviour_mut().kad.bootstrap()
        {
            tracing::debug!(error = %e, "bootstrap");
        }
    }

    /// Refreshes the routing table (a kad bootstrap) unless it is empty: then there is nobody
    /// to ask, and seeds are [`Self::check_seeds`]'s job.
    fn periodic_bootstrap(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        if kad.kbuckets().all(|b| b.num_entries() == 0) {
            return;
        }
        if let Err(e) = kad.bootstrap() {
            tracing::debug!(error = %e, "periodic bootstrap");
        }
    }

    /// Re-dials the seeds when no seed is connected (a seed restarted, or we were cut off).
    fn check_seeds(&mut self) {
        if self.seeds.is_empty() {
            return;
        }
        let connected = self.seeds.iter().any(|(p, _)| self.swarm.is_connected(p));
        if !connected {
            self.dial_seeds();
            // A bootstrap walks towards our own id and may never contact a seed (in a big
            // network it finds closer peers first), so a restarted seed would wait for some
            // later query to reach it. Dial the seeds themselves; the condition prevents a
            // second connection when kad dials one too.
            for (peer, addr) in self.seeds.clone() {
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(libp2p::swarm::dial_opts::PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, error = %e, "seed re-dial");
                }
            }
        }
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .retain(|_, r| !r.is_expired(now));
        {
            use libp2p::kad::store::RecordStore;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            self.stored_seqs.retain(|k, _| store.get(k).is_some());
        }
        let keys: Vec<RecordKey> = self.provider_keys.iter().cloned().collect();
        for key in keys {
            use libp2p::kad::store::RecordStore;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            let providers = store.providers(&key);
            let mut live = 0;
            for p in providers {
                if p.is_expired(now) {
                    store.remove_provider(&key, &p.provider);
                } else {
                    live += 1;
                }
            }
            if live == 0 {
                self.provider_keys.remove(&key);
            }
        }
        let liveness = self
            .config
            .role
            .subscribes()
            .then_some(self.config.timings.liveness_timeout);
        self.registry.sweep(unix_ms(), now, liveness);
        self.sweep_gate();
    }
}
