//! A plain rust-libp2p node that is not gpumesh's: stock kad, identify and ping with the
//! identify `protocol_version` and kad protocol name a test chooses. It stands for another
//! implementation (js, go) or another network, and for an agent from before CID provider keys.
//!
//! The swarm is polled only inside its own methods; a test that waits on a gpumesh node in
//! between calls [`Outsider::drive`] so that the connection keeps being served.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::{collections::HashSet, time::Duration};

use anyhow::{Context, bail};
use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, identify,
    identity::Keypair,
    kad::{
        self, GetProvidersOk, GetRecordOk, QueryResult, Quorum, Record, RecordKey,
        store::MemoryStore,
    },
    noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};

/// The outsider's behaviours.
#[derive(NetworkBehaviour)]
pub struct OutsiderBehaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// A foreign libp2p node.
pub struct Outsider {
    /// Its swarm.
    pub swarm: Swarm<OutsiderBehaviour>,
    /// Its key (to sign records as an old agent would).
    pub key: Keypair,
}

impl Outsider {
    /// A node announcing `protocol_version`, speaking kad as `kad_protocol` in `mode`.
    pub fn new(
        protocol_version: &str,
        kad_protocol: &'static str,
        mode: kad::Mode,
    ) -> anyhow::Result<Self> {
        let key = Keypair::generate_ed25519();
        let version = protocol_version.to_owned();
        let swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|key| {
                let peer = key.public().to_peer_id();
                let kc = kad::Config::new(StreamProtocol::new(kad_protocol));
                let mut kad = kad::Behaviour::with_config(peer, MemoryStore::new(peer), kc);
                kad.set_mode(Some(mode));
                OutsiderBehaviour {
                    kad,
                    identify: identify::Behaviour::new(identify::Config::new(
                        version,
                        key.public(),
                    )),
                    ping: ping::Behaviour::default(),
                }
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        Ok(Self { swarm, key })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Dials `addr` (with `/p2p/<id>`), puts it in the kad routing table, and waits until the
    /// identify exchange with it is done.
    pub async fn connect(&mut self, addr: Multiaddr) -> anyhow::Result<PeerId> {
        let peer = gpumesh_dht::rules::peer_of(&addr).context("address without /p2p")?;
        self.swarm
            .behaviour_mut()
            .kad
            .add_address(&peer, addr.clone());
        self.swarm.dial(addr)?;
        self.until(Duration::from_secs(10), |event| match event {
            SwarmEvent::Behaviour(OutsiderBehaviourEvent::Identify(
                identify::Event::Received { peer_id, .. },
            )) if peer_id == peer => Some(()),
            _ => None,
        })
        .await
        .context("no identify exchange")?;
        Ok(peer)
    }

    /// Polls the swarm for `d`, serving whatever comes.
    pub async fn drive(&mut self, d: Duration) {
        let _ = self.until::<()>(d, |_| None).await;
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }

    /// GET_VALUE: the first record found under `key`, if any.
    pub async fn get_record(&mut self, key: RecordKey) -> anyhow::Result<Option<Record>> {
        let id = self.swarm.behaviour_mut().kad.get_record(key);
        let found = self
            .query(id, |result| match result {
                QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(r))) => Some(Some(r.record)),
                QueryResult::GetRecord(_) => Some(None),
                _ => None,
            })
            .await?;
        Ok(found)
    }

    /// GET_PROVIDERS: every provider found under `key`.
    pub async fn get_providers(&mut self, key: RecordKey) -> anyhow::Result<HashSet<PeerId>> {
        let id = self.swarm.behaviour_mut().kad.get_providers(key);
        let mut all = HashSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .context("get_providers timed out")?;
            if let SwarmEvent::Behaviour(OutsiderBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed {
                    id: qid,
                    result: QueryResult::GetProviders(r),
                    step,
                    ..
                },
            )) = event
                && qid == id
            {
                if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r {
                    all.extend(providers);
                }
                if step.last {
                    return Ok(all);
                }
            }
        }
    }

    /// ADD_PROVIDER under `key` to the closest peers; returns once the query finished.
    pub async fn provide(&mut self, key: RecordKey) -> anyhow::Result<()> {
        let id = self.swarm.behaviour_mut().kad.start_providing(key)?;
        match self
            .query(id, |result| match result {
                QueryResult::StartProviding(r) => Some(r.is_ok()),
                _ => None,
            })
            .await?
        {
            // kad reports ADD_PROVIDER done when it queues the requests (they have no reply),
            // so keep polling until they have actually gone out.
            true => {
                self.drive(Duration::from_millis(500)).await;
                Ok(())
            }
            false => bail!("start_providing failed"),
        }
    }

    /// PUT_VALUE of `record` to one peer at least; returns once the query finished.
    pub async fn put_record(&mut self, record: Record) -> anyhow::Result<()> {
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)?;
        match self
            .query(id, |result| match result {
                QueryResult::PutRecord(r) => Some(r.is_ok()),
                _ => None,
            })
            .await?
        {
            true => Ok(()),
            false => bail!("put_record failed"),
        }
    }

    /// Polls until query `id` yields a result `pick` takes (10 s at most).
    async fn query<T>(
        &mut self,
        id: kad::QueryId,
        mut pick: impl FnMut(QueryResult) -> Option<T>,
    ) -> anyhow::Result<T> {
        self.until(Duration::from_secs(10), |event| match event {
            SwarmEvent::Behaviour(OutsiderBehaviourEvent::Kad(
                kad::Event::OutboundQueryProgressed {
                    id: qid, result, ..
                },
            )) if qid == id => pick(result),
            _ => None,
        })
        .await
        .context("kad query timed out")
    }

    /// Polls the swarm until `f` returns `Some` or `timeout` passes.
    async fn until<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(SwarmEvent<OutsiderBehaviourEvent>) -> Option<T>,
    ) -> Option<T> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .ok()?;
            if let Some(t) = f(event) {
                return Some(t);
            }
        }
    }
}
