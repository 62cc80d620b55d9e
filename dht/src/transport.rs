//! Transport and swarm construction: TCP or memory, optional pnet, Noise, Yamux.
//!
//! pnet wraps the raw socket below Noise (as in rust-libp2p `examples/ipfs-private`), so a peer
//! without the key fails the very first bytes of the handshake and never reaches Noise.

use std::time::Duration;

use libp2p::{
    PeerId, Swarm, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    identity::Keypair,
    noise,
    pnet::{PnetConfig, PreSharedKey},
    swarm, tcp, yamux,
};

use crate::{
    DhtError,
    behaviour::Behaviour,
    config::{NodeConfig, TransportKind},
};

/// Builds the boxed transport for `kind`, with pnet when `psk` is set.
pub(crate) fn build_transport(
    key: &Keypair,
    kind: TransportKind,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, DhtError> {
    let noise = noise::Config::new(key).map_err(|e| DhtError::Transport(e.to_string()))?;
    let timeout = Duration::from_secs(20);
    let t = match (kind, psk) {
        (TransportKind::Tcp, None) => {
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(timeout)
                .boxed()
        }
        (TransportKind::Tcp, Some(psk)) => {
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(yamux::Config::default())
                .timeout(timeout)
                .boxed()
        }
        (TransportKind::Memory, None) => MemoryTransport::default()
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .boxed(),
        (TransportKind::Memory, Some(psk)) => MemoryTransport::default()
            .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .timeout(timeout)
            .boxed(),
    };
    Ok(t)
}

/// Builds the swarm for `config` with identity `key`.
pub(crate) fn build_swarm(
    config: &NodeConfig,
    key: &Keypair,
) -> Result<Swarm<Behaviour>, DhtError> {
    let transport = build_transport(key, config.transport, config.network_key)?;
    let behaviour = Behaviour::new(config, key)?;
    let swarm_config = swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(config.timings.idle_connection_timeout);
    Ok(Swarm::new(
        transport,
        behaviour,
        key.public().to_peer_id(),
        swarm_config,
    ))
}
