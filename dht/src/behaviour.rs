//! The composed network behaviour: Kademlia, identify, ping, gossipsub, with our settings.

use std::num::NonZeroUsize;

use libp2p::{
    connection_limits, gossipsub, identify,
    identity::Keypair,
    kad::{
        self, BucketInserts, Caching, Mode, StoreInserts, store::MemoryStore,
        store::MemoryStoreConfig,
    },
    ping,
    swarm::NetworkBehaviour,
};

use crate::{DhtError, config::NodeConfig, keys};

/// Largest gossip message: a signed record announcement (≤ 4 KiB) plus framing.
pub(crate) const MAX_GOSSIP_BYTES: usize = 8 * 1024;

/// The behaviours one node runs.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First, so that a connection over a cap is refused before the others see it.
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(config: &NodeConfig, key: &Keypair) -> Result<Self, DhtError> {
        let peer_id = key.public().to_peer_id();
        let t = &config.timings;
        let s = &config.sizing;
        let k = NonZeroUsize::new(s.replication_factor)
            .ok_or_else(|| DhtError::Config("replication_factor must be > 0".into()))?;

        let bucket = if config.role.is_server() {
            s.server_bucket_size
        } else {
            s.client_bucket_size
        };
        let bucket = NonZeroUsize::new(bucket)
            .ok_or_else(|| DhtError::Config("bucket size must be > 0".into()))?;
        let mut kc = kad::Config::new(keys::KAD_PROTOCOL);
        kc.set_kbucket_size(bucket);
        kc.set_replication_factor(k)
            .set_query_timeout(t.query_timeout)
            .set_record_ttl(Some(t.record_ttl))
            // Workers re-sign and re-put their own records; kad must not re-publish stale copies.
            .set_publication_interval(None)
            .set_replication_interval(None)
            .set_provider_record_ttl(Some(t.record_ttl))
            .set_provider_publication_interval(Some(t.refresh_interval))
            .set_record_filtering(StoreInserts::FilterBoth)
            .set_caching(Caching::Disabled)
            .set_kbucket_inserts(BucketInserts::Manual)
            // The event loop bootstraps every `bootstrap_interval` itself, skipping an empty
            // routing table: kad's own timer warns "No known peers" on every tick at a lone
            // gateway or seed (its peers are client-mode workers, never in its table).
            .set_periodic_bootstrap_interval(None)
            .set_max_packet_size(16 * 1024)
            .set_substreams_timeout(t.query_timeout);
        let store = MemoryStore::with_config(
            peer_id,
            MemoryStoreConfig {
                max_records: s.max_records,
                // MemoryStore rejects `len >= max`, so allow one byte over our own cap.
                max_value_bytes: s.limits.max_value_bytes + 1,
                max_providers_per_key: s.max_providers_per_key,
                max_provided_keys: s.max_provider_keys,
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kc);
        kad.set_mode(Some(if config.role.is_server() {
            Mode::Server
        } else {
            Mode::Client
        }));

        let identify = identify::Behaviour::new(
            identify::Config::new(keys::IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(format!("gpumesh/{}", env!("CARGO_PKG_VERSION")))
                .with_interval(t.identify_interval)
                .with_push_listen_addr_updates(true)
                .with_cache_size(0),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(t.ping_interval));

        let gossipsub = gossip(t, key)?;
        let limits = connection_limits(&config.connection_caps);
        Ok(Self {
            limits,
            kad,
            identify,
            ping,
            gossipsub,
        })
    }
}

/// Signed, strictly validated gossip of load heartbeats.
fn gossip(t: &crate::Timings, key: &Keypair) -> Result<gossipsub::Behaviour, DhtError> {
    let gc = gossipsub::ConfigBuilder::default()
        .protocol_id(keys::GOSSIP_PROTOCOL, gossipsub::Version::V1_1)
        .heartbeat_interval(t.gossip_heartbeat)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_GOSSIP_BYTES)
        // Gateways forward to each other: ask mesh peers not to send what already arrived.
        .idontwant_message_size_threshold(200)
        .build()
        .map_err(|e| DhtError::Config(format!("gossipsub: {e}")))?;
    gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gc)
        .map_err(|e| DhtError::Config(format!("gossipsub: {e}")))
}

/// The node's connection caps, enforced by libp2p before a connection is established.
fn connection_limits(c: &crate::ConnectionCaps) -> connection_limits::Behaviour {
    connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_pending_incoming(Some(c.max_pending_incoming))
            .with_max_established_incoming(Some(c.max_established_incoming))
            .with_max_established(Some(c.max_established))
            .with_max_established_per_peer(Some(c.max_established_per_peer)),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{ConnectionCaps, Role, TransportKind};
    use crate::testnet::{Testnet, TestnetConfig};

    /// A gateway capped at two incoming connections keeps two workers and refuses the
    /// rest; without the cap it would hold all four.
    #[tokio::test]
    async fn a_server_refuses_incoming_connections_over_its_cap() {
        let mut net = Testnet::new(TestnetConfig {
            transport: TransportKind::Memory,
            ..TestnetConfig::default()
        });
        let mut config = net.node_config(Role::Gateway, Vec::new());
        config.connection_caps = ConnectionCaps {
            max_established_incoming: 2,
            ..ConnectionCaps::default()
        };
        let gateway = net.add_gateway_with(config).await.unwrap();
        for _ in 0..4 {
            net.spawn_worker(false).await.unwrap();
        }
        // Workers dial their seed at start; give every dial time to settle.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let topology = gateway.topology().await.unwrap();
        assert_eq!(topology.connections, 2, "{topology:?}");
    }
}
