//! Assembling and running a gateway: state, sockets, background tasks, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, AppState, Shared};
use crate::config::{Config, ConfigError};
use crate::dht::{self, DhtSnapshot, DhtStatus};
use crate::directory::Directory;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::policy::UpstreamPolicy;
use crate::ratelimit::RateLimiter;
use gpumesh_dht::DhtHandle;

/// How long in-flight requests may take to finish after shutdown starts.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Why the gateway could not start or stopped with an error (the operator's or host's fault).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The forwarding client could not be built (TLS initialisation).
    #[error("cannot build the forwarding client: {0}")]
    Client(#[from] crate::forward::ClientError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    /// The DHT node failed to start.
    #[error("DHT node failed: {0}")]
    Dht(String),
}

/// Builds the shared state (no sockets). `registry` receives the gateway's metrics; the DHT
/// node registers its own into the same registry before it is frozen here.
///
/// # Errors
/// [`RunError::Config`] or [`RunError::Client`].
pub fn build_state(config: Config, mut registry: Registry) -> Result<AppState, RunError> {
    config.validate()?;
    let metrics = Metrics::register(&mut registry);
    let policy = UpstreamPolicy::new(config.allow_private_upstreams);
    let seed = u64::from(std::process::id()) ^ crate::directory::unix_ms();
    let directory = Arc::new(Directory::new(policy, metrics.clone(), seed));
    let forwarder = Forwarder::new(&config, metrics.clone())?;
    Ok(AppState::new(Shared {
        bootstrap_limiter: Arc::new(RateLimiter::per_minute(config.bootstrap_rate_per_min)),
        registry_limiter: Arc::new(RateLimiter::per_minute(config.registry_rate_per_min)),
        dht: Arc::new(DhtStatus::new(config.dht_enabled)),
        config: Arc::new(config),
        directory,
        forwarder,
        metrics,
        registry: Arc::new(registry),
    }))
}

/// A gateway bound to its HTTP port (and running its DHT node), not yet serving.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    state: AppState,
    dht: Option<DhtHandle>,
    dht_shutdown: CancellationToken,
}

impl Gateway {
    /// Validates the configuration, starts the DHT node (when enabled), builds the state,
    /// then binds the HTTP port.
    ///
    /// # Errors
    /// A [`RunError`]; configuration errors come before any socket opens.
    pub async fn bind(config: Config) -> Result<Self, RunError> {
        config.validate()?;
        let addr = config.listen;
        let mut registry = Registry::default();
        let dht_shutdown = CancellationToken::new();
        let dht = if config.dht_enabled {
            Some(dht::start(&config, &mut registry, dht_shutdown.clone())?)
        } else {
            None
        };
        let state = build_state(config, registry)?;
        if let Some(handle) = &dht {
            let peer_id = Some(handle.peer_id().to_base58());
            state.dht.set(DhtSnapshot {
                peer_id,
                ..DhtSnapshot::default()
            });
        }
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(source) => {
                dht_shutdown.cancel();
                return Err(RunError::Bind { addr, source });
            }
        };
        Ok(Self {
            listener,
            state,
            dht,
            dht_shutdown,
        })
    }

    /// The bound HTTP address (the real port when configured with port 0).
    ///
    /// # Errors
    /// When the OS cannot say.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (for tests and embedding: feed the directory, read metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The DHT node's handle, when one runs.
    pub fn dht(&self) -> Option<&DhtHandle> {
        self.dht.as_ref()
    }

    /// Serves until `shutdown` is cancelled, then drains for at most [`DRAIN_GRACE`].
    ///
    /// # Errors
    /// [`RunError::Serve`] when the server fails.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Self {
            listener,
            state,
            dht,
            dht_shutdown,
        } = self;
        let addr = listener.local_addr().map_err(RunError::Serve)?;
        info!(%addr, dht = state.config.dht_enabled, "gateway listening");
        let sweeper = tokio::spawn(sweep(Arc::clone(&state.directory), shutdown.clone()));
        let feeder = dht.clone().map(|handle| {
            let has_seeds = !state.config.seeds.is_empty();
            let (directory, status) = (Arc::clone(&state.directory), Arc::clone(&state.dht));
            tokio::spawn(dht::feed(
                handle,
                directory,
                status,
                has_seeds,
                shutdown.clone(),
            ))
        });
        let app: Router = api::router(state);
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_GRACE).await;
        };
        let result = tokio::select! {
            r = server => r.map_err(RunError::Serve),
            () = deadline => {
                warn!("drain grace period expired; dropping open connections");
                Ok(())
            }
        };
        sweeper.abort();
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        dht_shutdown.cancel();
        if let Some(handle) = dht
            && tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
                .await
                .is_err()
        {
            warn!("DHT node did not stop within 5 s");
        }
        info!("gateway stopped");
        result
    }
}

/// Runs a gateway until `shutdown` is cancelled.
///
/// # Errors
/// A [`RunError`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    Gateway::bind(config).await?.serve(shutdown).await
}

/// Drops expired registry entries and records once a second.
async fn sweep(directory: Arc<Directory>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => { directory.expire(Instant::now()); }
        }
    }
}
