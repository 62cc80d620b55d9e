//! Commands from the handle, and this worker's own publication (record, providers, gossip).

use std::time::{Duration, Instant};

use libp2p::{
    gossipsub::PublishError,
    kad::{self, Quorum},
};

use super::{EventLoop, OwnRecord, queries::PendingKind};
use crate::{
    DhtError,
    gossip::{GossipMessage, Heartbeat, Leave},
    handle::{Command, ImportSummary, Reply, Topology},
    keys,
    record::WorkerRecord,
    registry::LeaveReason,
    rules::{DEFAULT_VRAM_STEP_MIB, ServiceName, is_material_change, unix_ms},
    signed::SignedRecord,
};

impl EventLoop {
    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::PublishRecord(record, reply) => self.publish_own(record, Some(reply)),
            Command::Withdraw(reply) => {
                self.withdraw();
                let _ = reply.send(Ok(()));
            }
            Command::Provide(service, reply) => {
                let _ = reply.send(self.provide(&service));
            }
            Command::Unprovide(service, reply) => {
                self.unprovide(&service);
                let _ = reply.send(Ok(()));
            }
            Command::FindWorkers(service, reply) => self.find_workers(service, reply),
            Command::GetRecord(peer, reply) => self.start_get_record(peer, Some(reply), None),
            Command::PublishLoad(sample, reply) => {
                let state_changed = sample
                    .state
                    .is_some_and(|s| self.own.as_ref().is_some_and(|o| o.template.state != s));
                self.last_load = sample;
                if let Some(own) = self.own.as_mut() {
                    own.template.load = sample.load;
                    if let Some(s) = sample.state {
                        own.template.state = s;
                    }
                }
                if state_changed {
                    self.refresh_own();
                }
                let _ = reply.send(self.send_heartbeat_inner());
            }
            Command::Topology(reply) => {
                let _ = reply.send(Ok(self.topology()));
            }
            Command::Dial(addr, reply) => {
                let r = self
                    .swarm
                    .dial(addr)
                    .map_err(|e| DhtError::Transport(e.to_string()));
                let _ = reply.send(r);
            }
            Command::PutRaw(key, value, reply) => {
                // Straight to the routing table's peers, skipping our own store (which would
                // refuse some of what tests want to send).
                let mut peers = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    peers.extend(bucket.iter().map(|e| *e.node.key.preimage()));
                }
                let record = kad::Record::new(key, value);
                let id = self.swarm.behaviour_mut().kad.put_record_to(
                    record,
                    peers.into_iter(),
                    Quorum::One,
                );
                self.track(
                    id,
                    PendingKind::Put {
                        reply: None,
                        seq: 0,
                    },
                );
                let _ = reply.send(Ok(()));
            }
            Command::Disconnect(peer, reply) => {
                let _ = self.swarm.disconnect_peer_id(peer);
                let _ = reply.send(Ok(()));
            }
            Command::ImportRecords(envelopes, reply) => {
                let _ = reply.send(Ok(self.import_records(&envelopes)));
            }
        }
    }

    /// Verifies and merges saved envelopes (see [`crate::DhtHandle::import_records`]).
    fn import_records(&mut self, envelopes: &[Vec<u8>]) -> ImportSummary {
        let limits = self.config.sizing.limits;
        let now = Instant::now();
        let mut summary = ImportSummary::default();
        for bytes in envelopes {
            // Saved records pass the same admission check as records from the network.
            let verified = SignedRecord::verify(bytes, None, &limits, unix_ms())
                .and_then(|sr| self.admit(&sr).map(|()| sr));
            match verified {
                Ok(sr) if sr.peer_id != self.local_peer() => {
                    if self.registry.upsert(&sr, now) {
                        summary.imported += 1;
                    } else {
                        summary.unchanged += 1;
                    }
                }
                Ok(_) => summary.unchanged += 1,
                Err(reason) => {
                    self.metrics.reject("record", reason);
                    summary.rejected += 1;
                }
            }
        }
        tracing::info!(
            imported = summary.imported,
            unchanged = summary.unchanged,
            rejected = summary.rejected,
            "saved records imported"
        );
        summary
    }

    fn topology(&mut self) -> Topology {
        let mut routing_table = Vec::new();
        for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
            for e in bucket.iter() {
                routing_table.push(*e.node.key.preimage());
            }
        }
        let records_stored = {
            use libp2p::kad::store::RecordStore;
            self.swarm.behaviour_mut().kad.store_mut().records().count()
        };
        let providers_stored = {
            use libp2p::kad::store::RecordStore;
            let store = self.swarm.behaviour_mut().kad.store_mut();
            self.provider_keys
                .iter()
                .map(|k| store.providers(k).len())
                .sum()
        };
        let gossip_peers = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, t)| !t.is_empty())
            .count();
        Topology {
            peer_id: self.local_peer(),
            server: self.swarm.behaviour_mut().kad.mode() == kad::Mode::Server,
            listen_addrs: self.swarm.listeners().cloned().collect(),
            connected_peers: self.swarm.connected_peers().copied().collect(),
            connections: self
                .swarm
                .network_info()
                .connection_counters()
                .num_established() as usize,
            routing_table,
            records_stored,
            providers_stored,
            gossip_peers,
            registry_workers: self.registry.len(),
        }
    }

    /// Stamps `template` (the rulebook's [`Stamper`]: fresh seq, issue and expiry times),
    /// signs it, puts it, announces it and provides its services.
    fn publish_own(&mut self, mut template: WorkerRecord, reply: Option<Reply<u64>>) {
        let now = unix_ms();
        let ttl = self.config.timings.record_ttl;
        if template.started_at_ms == 0 {
            template.started_at_ms = self.started_ms;
        }
        let stamp = self.stamper.next(now, ttl);
        let seq = stamp.seq;
        let mut rec = template.clone();
        stamp.apply(&mut rec);
        let token = self.config.admission.token.as_ref();
        if token.is_some_and(|t| t.not_after_ms() <= now) && !self.own_token_expired_logged {
            self.own_token_expired_logged = true;
            tracing::warn!(
                "this worker's admission token has expired: admission-enforcing nodes will \
                 refuse its records; ask the operator for a new one (`gpumesh admit`)"
            );
        }
        let signed = match SignedRecord::sign_admitted(
            &self.key,
            rec,
            token,
            &self.config.sizing.limits,
            now,
        ) {
            Ok(s) => s,
            Err(reason) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(DhtError::Record(reason)));
                }
                return;
            }
        };
        // A newer record supersedes any pending retry of the old one.
        self.put_retry_at = None;
        self.sync_provided(&template);
        let key = keys::worker_key(&self.local_peer());
        let mut record = kad::Record::new(key, signed.bytes.clone());
        record.expires = Some(Instant::now() + ttl);
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            Ok(id) => self.track(id, PendingKind::Put { reply, seq }),
            Err(e) => {
                if let Some(r) = reply {
                    let _ = r.send(Err(DhtError::Query(format!("local store: {e:?}"))));
                }
            }
        }
        let changed = self
            .own
            .as_ref()
            .is_none_or(|o| is_material_change(&o.template, &template, DEFAULT_VRAM_STEP_MIB));
        let content_seq = match &self.own {
            Some(o) if !changed => o.content_seq,
            _ => seq,
        };
        self.own = Some(OwnRecord {
            template,
            seq,
            expires_at_ms: signed.record.expires_at_ms,
            content_seq,
            bytes: signed.bytes,
        });
        if changed {
            self.announced = false;
            self.announce_due = true;
            self.last_announce = Instant::now() - Duration::from_secs(3600);
            self.retry_announce();
        }
    }

    /// Makes the services this node provides match `template`'s: stops providing the ones it
    /// no longer lists and starts providing the new ones.
    fn sync_provided(&mut self, template: &WorkerRecord) {
        let services: std::collections::BTreeSet<String> =
            template.services.iter().map(ToString::to_string).collect();
        let old: Vec<String> = self.provided.difference(&services).cloned().collect();
        for s in old {
            self.unprovide(&s);
        }
        for s in &services {
            if !self.provided.contains(s) {
                let _ = self.provide(s);
            }
        }
    }

    /// Bookkeeping after a put of our own record finished: on failure of the current record,
    /// schedule a retry with jittered exponential backoff (1 s, 2 s, ... up to half the refresh
    /// interval, each × 0.5–1.5) so that a put lost in a start burst does not wait for the next
    /// refresh, and so that retries from many workers spread out instead of returning together.
    pub(super) fn put_finished(&mut self, seq: u64, ok: bool) {
        if self.own.as_ref().is_none_or(|o| o.seq != seq) {
            return;
        }
        if ok {
            self.put_backoff = Duration::ZERO;
            self.put_retry_at = None;
            return;
        }
        let cap = (self.config.timings.refresh_interval / 2).max(Duration::from_millis(100));
        self.put_backoff = if self.put_backoff.is_zero() {
            Duration::from_secs(1)
        } else {
            self.put_backoff * 2
        }
        .min(cap);
        let jitter = 0.5 + (random_u64() % 1000) as f64 / 1000.0;
        self.put_retry_at = Some(Instant::now() + self.put_backoff.mul_f64(jitter));
        self.metrics.message("put_retry", 1);
    }

    /// Re-puts our current record when a retry is due (same signed bytes while they are fresh;
    /// a re-signed record when they are about to expire).
    pub(super) fn retry_put(&mut self) {
        if self.put_retry_at.is_none_or(|t| t > Instant::now()) {
            return;
        }
        self.put_retry_at = None;
        let Some(own) = self.own.as_ref() else {
            return;
        };
        let left_ms = own.expires_at_ms.saturating_sub(unix_ms());
        if left_ms < 5_000 {
            self.refresh_own();
            return;
        }
        let seq = own.seq;
        let key = keys::worker_key(&self.local_peer());
        let mut record = kad::Record::new(key, own.bytes.clone());
        record.expires = Some(Instant::now() + Duration::from_millis(left_ms));
        match self
            .swarm
            .behaviour_mut()
            .kad
            .put_record(record, Quorum::One)
        {
            Ok(id) => self.track(id, PendingKind::Put { reply: None, seq }),
            Err(e) => tracing::debug!(error = ?e, "put retry: local store"),
        }
    }

    pub(super) fn refresh_own(&mut self) {
        if let Some(own) = self.own.as_ref() {
            let template = own.template.clone();
            self.publish_own(template, None);
        }
    }

    fn withdraw(&mut self) {
        let Some(own) = self.own.take() else {
            return;
        };
        let services: Vec<String> = self.provided.iter().cloned().collect();
        for s in services {
            self.unprovide(&s);
        }
        let key = keys::worker_key(&self.local_peer());
        self.swarm.behaviour_mut().kad.remove_record(&key);
        self.announce_due = false;
        let msg = GossipMessage::Leave(Leave {
            record_seq: own.seq,
        });
        let _ = self.publish_gossip(&msg);
        let me = self.local_peer();
        self.registry.remove(&me, LeaveReason::Withdrawn, None);
    }

    /// Provides `service` under this worker's shard's CID key ([`keys::provider_key`]; readers
    /// still look under the legacy key for older agents, see [`keys::LEGACY_PROVIDER_KEYS_UNTIL`]).
    fn provide(&mut self, service: &str) -> Result<(), DhtError> {
        ServiceName::parse(service)?;
        let shard = keys::shard_of(&self.local_peer(), self.config.sizing.service_shards);
        let key = keys::provider_key(service, shard);
        let id = self
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(key)
            .map_err(|e| DhtError::Query(format!("local store: {e:?}")))?;
        self.track(id, PendingKind::Provide);
        self.provided.insert(service.to_owned());
        Ok(())
    }

    fn unprovide(&mut self, service: &str) {
        let shard = keys::shard_of(&self.local_peer(), self.config.sizing.service_shards);
        let key = keys::provider_key(service, shard);
        self.swarm.behaviour_mut().kad.stop_providing(&key);
        self.provided.remove(service);
    }

    pub(super) fn send_heartbeat(&mut self) {
        let _ = self.send_heartbeat_inner();
    }

    fn send_heartbeat_inner(&mut self) -> Result<(), DhtError> {
        let Some(own) = self.own.as_ref() else {
            return Ok(());
        };
        self.heartbeat_seq += 1;
        let hb = Heartbeat {
            seq: self.heartbeat_seq,
            at_ms: unix_ms(),
            record_seq: own.seq,
            record_expires_at_ms: own.expires_at_ms,
            content_seq: own.content_seq,
            state: own.template.state,
            load: self.last_load.load,
            gpu_util_pct: self.last_load.gpu_util_pct,
            vram_free_mib: self.last_load.vram_free_mib,
        };
        self.publish_gossip(&GossipMessage::Heartbeat(hb))
    }

    /// Announces the current record over gossip; retried (at most every 250 ms) until some
    /// subscriber is known, and again whenever a new subscriber appears.
    pub(super) fn retry_announce(&mut self) {
        if !self.announce_due || self.last_announce.elapsed() < Duration::from_millis(250) {
            return;
        }
        let Some(bytes) = self.own.as_ref().map(|o| o.bytes.clone()) else {
            self.announce_due = false;
            return;
        };
        self.last_announce = Instant::now();
        match self.publish_gossip(&GossipMessage::Record(bytes)) {
            Ok(()) => {
                self.announce_due = false;
                self.announced = true;
            }
            // Nobody subscribed yet: retry (and on the first `Subscribed`).
            Err(DhtError::Gossip(e)) if e.contains("NoPeersSubscribed") => {}
            // Queues full or similar: give up; the DHT put and the next change carry it.
            Err(_) => self.announce_due = false,
        }
    }

    fn publish_gossip(&mut self, msg: &GossipMessage) -> Result<(), DhtError> {
        let topic = self.topic.clone();
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, msg.encode())
        {
            Ok(_) => {
                self.metrics.message("gossip_out", 1);
                Ok(())
            }
            Err(PublishError::Duplicate) => Ok(()),
            Err(e) => Err(DhtError::Gossip(e.to_string())),
        }
    }
}

/// A random u64 (std's per-hasher random keys; no RNG state to keep).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
