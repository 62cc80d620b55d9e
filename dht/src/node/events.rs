//! Swarm events: inbound validation (FilterBoth), identify → routing table, dead peers, gossip.

use std::time::{Duration, Instant};

use libp2p::{
    PeerId,
    gossipsub::{self, MessageAcceptance},
    identify,
    kad::{self, InboundRequest, store::RecordStore},
    ping,
    swarm::SwarmEvent,
};

use super::{EventLoop, gate::Verdict};
use crate::{
    behaviour::BehaviourEvent,
    gossip::GossipMessage,
    keys,
    registry::{HeartbeatOutcome, LeaveReason},
    rules::{MAX_PROVIDER_ADDRS, unix_ms},
    signed::SignedRecord,
    validate::RejectReason,
};

/// Consecutive ping failures after which a peer is dropped from the routing table.
const MAX_PING_FAILURES: u32 = 3;
/// Listen addresses taken from one identify message.
const MAX_IDENTIFY_ADDRS: usize = 8;

/// What to do with an inbound record that passed validation.
enum Accepted {
    New(Box<SignedRecord>),
    Duplicate,
}

impl EventLoop {
    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.on_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(e)) => self.on_identify(e),
            SwarmEvent::Behaviour(BehaviourEvent::Ping(e)) => self.on_ping(e),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(e)) => self.on_gossip(e),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::debug!(%address, "listening");
                // A server without an operator-given external address announces what it
                // listens on (loopback and LAN deployments, tests).
                if self.config.role.is_server() && self.config.external.is_empty() {
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    self.metrics.peers.inc();
                }
                self.remote_addrs
                    .insert(peer_id, endpoint.get_remote_address().clone());
                if let Some((_, addr)) = self.seeds.iter().find(|(p, _)| *p == peer_id) {
                    let addr = addr.clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    self.metrics.peers.dec();
                    self.remote_addrs.remove(&peer_id);
                    self.ping_failures.remove(&peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                if !self.swarm.is_connected(&peer) && !self.seeds.iter().any(|(p, _)| *p == peer) {
                    self.swarm.behaviour_mut().kad.remove_peer(&peer);
                }
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => self.on_query_progressed(id, result, stats, step),
            kad::Event::InboundRequest { request } => {
                self.metrics.message("kad_in", 1);
                match request {
                    InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    } => self.on_inbound_record(source, record),
                    InboundRequest::AddProvider {
                        record: Some(record),
                    } => self.on_inbound_provider(record),
                    _ => {}
                }
            }
            kad::Event::RoutingUpdated {
                is_new_peer,
                old_peer,
                ..
            } => {
                if is_new_peer {
                    self.metrics.routing_table.inc();
                }
                if old_peer.is_some() {
                    self.metrics.routing_table.dec();
                }
            }
            kad::Event::ModeChanged { new_mode } => tracing::debug!(?new_mode, "kad mode"),
            other => tracing::trace!(?other, "kad event"),
        }
    }

    /// Validates a record before it may touch the store (`StoreInserts::FilterBoth`).
    fn accept_record(&mut self, record: &kad::Record) -> Result<Accepted, RejectReason> {
        let limits = self.config.sizing.limits;
        let sr = SignedRecord::verify(&record.value, Some(&record.key), &limits, unix_ms())?;
        self.admit(&sr)?;
        self.accept_verified(record.key.clone(), sr, record.expires)
    }

    /// Stores a verified record unless an equal or newer one is held (newest `seq` wins).
    fn accept_verified(
        &mut self,
        key: kad::RecordKey,
        sr: SignedRecord,
        expires: Option<Instant>,
    ) -> Result<Accepted, RejectReason> {
        let held = self.stored_seqs.get(&key).copied().filter(|_| {
            self.swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .get(&key)
                .is_some()
        });
        match held {
            Some(seq) if seq == sr.record.seq => return Ok(Accepted::Duplicate),
            Some(seq) if seq > sr.record.seq => return Err(RejectReason::StaleSeq),
            _ => {}
        }
        if self
            .registry
            .seq_of(&sr.peer_id)
            .is_some_and(|s| s > sr.record.seq)
        {
            return Err(RejectReason::StaleSeq);
        }
        let mut stored = kad::Record::new(key.clone(), sr.bytes.clone());
        stored.publisher = Some(sr.peer_id);
        let left = Duration::from_millis(sr.record.expires_at_ms.saturating_sub(unix_ms()));
        let until = Instant::now() + left;
        stored.expires = Some(expires.map_or(until, |e| e.min(until)));
        self.swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .put(stored)
            .map_err(|_| RejectReason::StoreFull)?;
        self.stored_seqs.insert(key, sr.record.seq);
        Ok(Accepted::New(Box::new(sr)))
    }

    fn on_inbound_record(&mut self, source: PeerId, record: kad::Record) {
        match self.accept_record(&record) {
            Ok(Accepted::New(sr)) => {
                self.metrics.records_stored.inc();
                self.registry.upsert(&sr, Instant::now());
            }
            Ok(Accepted::Duplicate) => {}
            Err(reason) => {
                tracing::debug!(%source, %reason, "inbound record rejected");
                self.metrics.reject("record", reason);
            }
        }
    }

    fn on_inbound_provider(&mut self, record: kad::ProviderRecord) {
        let reason = if !keys::is_provider_key(&record.key, self.config.sizing.service_shards) {
            Some(RejectReason::UnknownNamespace)
        } else if record.addresses.len() > MAX_PROVIDER_ADDRS {
            Some(RejectReason::TooManyAddresses)
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::debug!(provider = %record.provider, %reason, "inbound provider rejected");
            self.metrics.reject("provider", reason);
            return;
        }
        if let Some(record) = self.gate_provider(record) {
            self.store_provider(record);
        }
    }

    /// Stores a checked provider record.
    pub(super) fn store_provider(&mut self, mut record: kad::ProviderRecord) {
        // A NATed (client-mode) worker announces no address and is not in our routing table, so
        // kad would drop it from GET_PROVIDERS replies. Gateways reach workers through their
        // tunnel URL, not libp2p, so the address we saw the connection come from is a fine
        // placeholder that keeps the provider visible.
        if record.addresses.is_empty()
            && let Some(addr) = self.remote_addrs.get(&record.provider)
        {
            record.addresses.push(addr.clone());
        }
        let key = record.key.clone();
        match self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .add_provider(record)
        {
            Ok(()) => {
                if self.provider_keys.len() < self.config.sizing.max_provider_keys {
                    self.provider_keys.insert(key);
                }
            }
            Err(_) => self.metrics.reject("provider", RejectReason::StoreFull),
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id, info, .. } = event else {
            return;
        };
        // `protocol_version` is not checked: the identify spec leaves it to each implementation
        // (js-libp2p cannot set it), so it is no sign of another network. Speaking our kad
        // protocol is: a peer that does not never enters the routing table, and pnet and
        // admission keep outsiders from the wire and the worker view.
        if info.protocols.contains(&keys::KAD_PROTOCOL) {
            for addr in info.listen_addrs.into_iter().take(MAX_IDENTIFY_ADDRS) {
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        } else if self
            .swarm
            .behaviour_mut()
            .kad
            .remove_peer(&peer_id)
            .is_some()
        {
            self.metrics.routing_table.dec();
        }
    }

    fn on_ping(&mut self, event: ping::Event) {
        match event.result {
            Ok(_) => {
                self.ping_failures.remove(&event.peer);
            }
            Err(e) => {
                let n = self.ping_failures.entry(event.peer).or_insert(0);
                *n += 1;
                tracing::debug!(peer = %event.peer, error = %e, failures = *n, "ping failed");
                if *n >= MAX_PING_FAILURES {
                    self.ping_failures.remove(&event.peer);
                    if self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .remove_peer(&event.peer)
                        .is_some()
                    {
                        self.metrics.routing_table.dec();
                    }
                    let _ = self.swarm.disconnect_peer_id(event.peer);
                }
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                self.metrics.message("gossip_in", 1);
                let acceptance = match message.source {
                    Some(source) => self.on_gossip_message(source, &message.data),
                    None => Err(RejectReason::BadSignature),
                };
                let acceptance = match acceptance {
                    Ok(true) => MessageAcceptance::Accept,
                    Ok(false) => MessageAcceptance::Ignore,
                    Err(reason) => {
                        self.metrics.reject("gossip", reason);
                        MessageAcceptance::Reject
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                // The first subscriber unblocks a pending announcement; later ones get it from
                // the gateway mesh, so no re-announce here (that stormed at 2000 workers).
                if topic == self.topic.hash() && self.own.is_some() && !self.announced {
                    self.announce_due = true;
                    self.retry_announce();
                } else if topic == self.topic.hash()
                    && self.own.is_some()
                    && self.seeds.iter().any(|(p, _)| *p == peer_id)
                {
                    // A seed (a gateway) that subscribes again has restarted, perhaps with an
                    // empty view: give it our record now rather than after a heartbeat interval
                    // and a lookup. Bounded: one message per worker per seed reconnection.
                    self.announce_due = true;
                    self.retry_announce();
                }
            }
            other => tracing::trace!(?other, "gossip event"),
        }
    }

    /// Ok(true): accept and forward; Ok(false): ignore (old or duplicate); Err: reject.
    fn on_gossip_message(&mut self, source: PeerId, data: &[u8]) -> Result<bool, RejectReason> {
        let now = Instant::now();
        let msg = GossipMessage::decode(data).ok_or(RejectReason::Malformed)?;
        // Heartbeats and leave notices carry no token: they are judged by the sender's record.
        // From a peer not known yet, they are ignored (not forwarded) while its record is
        // fetched; a record announcement is checked on its own.
        if !matches!(msg, GossipMessage::Record(_)) {
            match self.verdict(&source) {
                Verdict::Admitted => {}
                Verdict::Denied => return Err(RejectReason::NotAdmitted),
                Verdict::Unknown => {
                    if matches!(msg, GossipMessage::Heartbeat(_))
                        && !self.fetching.contains(&source)
                    {
                        self.start_get_record(source, None, None);
                    }
                    return Ok(false);
                }
            }
        }
        match msg {
            GossipMessage::Heartbeat(hb) => {
                let max_expiry = unix_ms() + self.config.sizing.limits.max_ttl.as_millis() as u64;
                if self.registry.heartbeat(source, hb, now, max_expiry)
                    == HeartbeatOutcome::NeedRecord
                    && !self.fetching.contains(&source)
                {
                    self.start_get_record(source, None, None);
                }
                Ok(true)
            }
            GossipMessage::Record(bytes) => {
                let key = keys::worker_key(&source);
                let sr = SignedRecord::verify(
                    &bytes,
                    Some(&key),
                    &self.config.sizing.limits,
                    unix_ms(),
                )?;
                self.admit(&sr)?;
                if !self.registry.upsert(&sr, now) {
                    return Ok(false);
                }
                if self.config.role.is_server() {
                    // Keep a copy so lookups that reach this node are answered too.
                    if let Ok(Accepted::New(_)) = self.accept_verified(key, sr, None) {
                        self.metrics.records_stored.inc();
                    }
                }
                Ok(true)
            }
            GossipMessage::Leave(l) => {
                self.registry
                    .remove(&source, LeaveReason::Withdrawn, Some(l.record_seq));
                Ok(true)
            }
        }
    }
}
