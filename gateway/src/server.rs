//! Assembling and running a gateway: state, sockets, background tasks, graceful shutdown.
//!
//! The HTTP server is hyper-util's auto (HTTP/1.1 and h2c) connection builder driven by our
//! own accept loop rather than `axum::serve`, for two reasons:
//! - slow and idle clients: `axum::serve` gives hyper no timer, so a client that opens a
//!   connection and sends nothing, half a request head or half an h2 preface holds it
//!   forever (slowloris). Here every connection has a deadline in each phase of its life
//!   (first byte, first request head, idle, request body: [`conn`], [`body`]), and the accept
//!   loop caps open connections in all and per client ([`caps`]) so that a flood of sockets
//!   cannot exhaust the file descriptors upstream connections need;
//! - the hot route: `/api/service/{service}/…` is handed straight to its handler
//!   ([`api::service::forward`]) and counted under the same route templates the router uses,
//!   skipping the router's matching and middleware boxing on every forwarded request. Every
//!   other path goes through the axum router unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, Response};
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::api::{self, AppState, ClientAddr, Shared};
use crate::config::Config;
use crate::directory::{AttemptLogs, Directory};
pub use crate::error::RunError;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::policy::UpstreamPolicy;
use crate::ratelimit::RateLimiter;
use crate::sources::dht::{self, DhtSnapshot, DhtStatus};
use crate::sources::registry::RegistrySource;
use crate::verify::Verifier;
use gpumesh_dht::DhtHandle;

mod body;
mod caps;
mod conn;
mod metrics;

use caps::ConnectionTable;
pub use caps::{default_max_connections, open_file_limit};
use conn::{Activity, HttpLimits, TrackedBody, serve_connection};
use metrics::ConnectionMetrics;

/// How long in-flight requests may take to finish after shutdown starts.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Builds the shared state (no sockets). `registry` receives the gateway's metrics; the DHT
/// node registers its own into the same registry before it is frozen here.
///
/// # Errors
/// [`RunError::Config`] or [`RunError::Client`].
pub fn build_state(config: Config, mut registry: Registry) -> Result<AppState, RunError> {
    config.validate()?;
    let metrics = Metrics::register(&mut registry);
    let policy =
        UpstreamPolicy::new(config.allow_private_upstreams).with_own_hosts(&config.public_names);
    let seed = u64::from(std::process::id()) ^ gpumesh_dht::rules::unix_ms();
    let limits = gpumesh_dht::rules::ClaimLimits {
        max_concurrency: config.max_claimed_slots,
        ..gpumesh_dht::rules::ClaimLimits::default()
    };
    let directory =
        Arc::new(Directory::new(policy, metrics.clone(), seed).with_claim_limits(limits));
    let forwarder = Forwarder::new(&config, metrics.clone())?;
    let (verifier, forwarder) = if config.checks.is_empty() {
        (None, forwarder)
    } else {
        let (verifier, tap) = Verifier::new(
            Arc::clone(&config.checks),
            Arc::clone(&directory),
            forwarder.clone(),
            metrics.clone(),
            seed.rotate_left(17),
        );
        (Some(verifier), forwarder.with_tap(tap))
    };
    let workers_registry = RegistrySource::new(&config, Arc::clone(&directory), metrics.clone());
    Ok(AppState::new(Shared {
        bootstrap_limiter: Arc::new(RateLimiter::per_minute(config.bootstrap_rate_per_min)),
        registry: Arc::new(workers_registry),
        dht: Arc::new(DhtStatus::new(config.dht_enabled)),
        config: Arc::new(config),
        directory,
        forwarder,
        verifier,
        metrics,
        metrics_registry: Arc::new(registry),
    }))
}

/// A gateway bound to its HTTP port (and running its DHT node), not yet serving.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    state: AppState,
    dht: Option<DhtHandle>,
    /// The view-file saver ([`dht::start`]): awaited at shutdown for its last write.
    view_saver: Option<JoinHandle<()>>,
    dht_shutdown: CancellationToken,
    connections: Arc<ConnectionTable>,
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
        let (dht, saved_trust) = if config.dht_enabled {
            let (handle, trust) = dht::start(&config, &mut registry, dht_shutdown.clone()).await?;
            (Some(handle), trust)
        } else {
            (None, Vec::new())
        };
        let max_connections = config
            .max_connections
            .unwrap_or_else(|| default_max_connections(open_file_limit()));
        let connections = Arc::new(ConnectionTable::new(
            max_connections,
            config.max_connections_per_ip,
            ConnectionMetrics::register(&mut registry),
        ));
        let state = build_state(config, registry)?;
        let mut view_saver = None;
        if let Some(handle) = &dht {
            // A reloaded view, and the trust saved with it, are in the directory before the
            // first request.
            state.directory.restore_trust(saved_trust);
            dht::resync(handle, &state.directory);
            if let Some(path) = &state.config.dht_view_file {
                view_saver = Some(tokio::spawn(dht::view_file::keep(
                    handle.clone(),
                    Arc::clone(&state.directory),
                    path.clone(),
                    dht_shutdown.clone(),
                )));
            }
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
                if let Some(saver) = view_saver {
                    saver.abort();
                }
                return Err(RunError::Bind { addr, source });
            }
        };
        Ok(Self {
            listener,
            state,
            dht,
            view_saver,
            dht_shutdown,
            connections,
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

    /// A read-only handle on what this gateway sent to each worker and how it went, kept
    /// after a worker leaves the view (load tests read it to time a killed worker's exit).
    pub fn attempt_logs(&self) -> AttemptLogs {
        AttemptLogs::new(Arc::clone(&self.state.directory))
    }

    /// The DHT node's handle, when one runs.
    pub fn dht(&self) -> Option<&DhtHandle> {
        self.dht.as_ref()
    }

    /// Serves until `shutdown` is cancelled, then drains for at most [`DRAIN_GRACE`].
    ///
    /// # Errors
    /// [`RunError::Serve`] when the listener's address cannot be read.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let Self {
            listener,
            state,
            dht,
            view_saver,
            dht_shutdown,
            connections,
        } = self;
        let addr = listener.local_addr().map_err(RunError::Serve)?;
        info!(%addr, dht = state.config.dht_enabled, max_connections = connections.max_total(),
            "gateway listening");
        let sweeper = tokio::spawn(sweep(Arc::clone(&state.directory), shutdown.clone()));
        let checks = state
            .verifier
            .clone()
            .map(|v| tokio::spawn(v.run(shutdown.clone())));
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
        let limits = HttpLimits::from_config(&state.config);
        let app: Router = api::router(state.clone());
        let tracker = TaskTracker::new();
        let server = Server {
            app,
            state,
            limits,
            connections,
        };
        server.accept_loop(listener, &tracker, &shutdown).await;
        // Stop accepting (the listener is gone), let open requests finish, then give up.
        tracker.close();
        if tokio::time::timeout(DRAIN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("drain grace period expired; dropping open connections");
        }
        sweeper.abort();
        if let Some(checks) = checks {
            checks.abort();
        }
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        dht_shutdown.cancel();
        // The saver writes the view once more on cancellation; a detached task would be cut
        // off when the process (or an embedding runtime) ends right after this returns.
        if let Some(saver) = view_saver
            && tokio::time::timeout(Duration::from_secs(5), saver)
                .await
                .is_err()
        {
            warn!("worker view not saved within 5 s of shutdown");
        }
        if let Some(handle) = dht
            && tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
                .await
                .is_err()
        {
            warn!("DHT node did not stop within 5 s");
        }
        info!("gateway stopped");
        Ok(())
    }
}

/// Runs a gateway until `shutdown` is cancelled.
///
/// # Errors
/// A [`RunError`].
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    Gateway::bind(config).await?.serve(shutdown).await
}

/// Drops entries whose source's lease ended and recounts the trust gauges, once a second.
async fn sweep(directory: Arc<Directory>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                directory.expire(gpumesh_dht::rules::unix_ms());
                directory.count_trust();
            }
        }
    }
}

/// What the accept loop hands each connection.
struct Server {
    app: Router,
    state: AppState,
    limits: HttpLimits,
    connections: Arc<ConnectionTable>,
}

impl Server {
    /// Accepts connections until `shutdown`, serving each admitted one on its own task
    /// (tracked by `tracker`, told to shut down gracefully on `shutdown`). A connection over
    /// a cap is closed at once: accepting it keeps the backlog from filling with sockets
    /// nobody will serve.
    async fn accept_loop(
        self,
        listener: TcpListener,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let builder = Arc::new(self.limits.builder());
        loop {
            let accepted = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed; pausing for 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let place = match self.connections.admit(peer.ip()) {
                Ok(place) => place,
                Err(cap) => {
                    debug!(%peer, ?cap, "connection refused at accept");
                    continue;
                }
            };
            let service = Dispatch {
                router: self.app.clone(),
                state: self.state.clone(),
                peer,
                activity: Activity::new(),
                connections: self.connections.metrics().clone(),
                body_read_timeout: self.limits.body_read_timeout,
            };
            tracker.spawn(serve_connection(
                Arc::clone(&builder),
                stream,
                service,
                place,
                self.limits,
                shutdown.clone(),
            ));
        }
    }
}

/// Errors of one connection that must not stop the accept loop (as hyper's and axum's own
/// accept loops treat them).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

/// One connection's request handler: the forward route directly, the rest via the router.
/// Every request body gets the read deadline; every request counts as in flight on its
/// connection until its response body ends.
#[derive(Clone)]
struct Dispatch {
    router: Router,
    state: AppState,
    peer: SocketAddr,
    activity: Arc<Activity>,
    connections: ConnectionMetrics,
    body_read_timeout: Duration,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let gap = self.body_read_timeout;
        let (parts, incoming) = req.into_parts();
        let (body, stalled) = body::with_deadline(incoming, gap);
        let mut req = Request::from_parts(parts, body);
        let connections = self.connections.clone();
        // A handler that met a stalled body answered whatever its read error maps to; the
        // client is told what happened instead.
        let settle = move |response: Response<Body>| {
            let response = if stalled.as_ref().is_some_and(body::Stalled::is_set) {
                connections.body_timed_out();
                body::stalled_response(gap)
            } else {
                response
            };
            response.map(|inner| {
                Body::new(TrackedBody {
                    inner,
                    _in_flight: in_flight,
                })
            })
        };
        match api::service::forward_route(req.uri().path()) {
            Some(route) => {
                let state = self.state.clone();
                let client = ClientAddr(Some(self.peer));
                Box::pin(async move {
                    let metrics = state.metrics.clone();
                    let response = api::service::forward(State(state), client, req)
                        .await
                        .into_response();
                    let response = settle(response);
                    metrics.count_http(route, response.status().as_u16());
                    Ok(response)
                })
            }
            None => {
                // What `into_make_service_with_connect_info` provides (the `ClientAddr`
                // extractor reads it); the forward route gets the address directly.
                req.extensions_mut().insert(ConnectInfo(self.peer));
                let router = self.router.clone();
                Box::pin(async move {
                    let Ok(response) = router.oneshot(req).await;
                    Ok(settle(response))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
