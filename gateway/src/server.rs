//! Assembling and running a gateway: state, sockets, background tasks, graceful shutdown.
//!
//! The HTTP server is hyper-util's auto (HTTP/1.1 and h2c) connection builder driven by our
//! own accept loop rather than `axum::serve`, for two reasons:
//! - slow clients: `axum::serve` gives hyper no timer, so a client that opens a connection and
//!   sends half a request head holds it forever (slowloris). Here hyper gets a timer, a header
//!   read timeout (`--header-read-timeout-secs`) and a bound on the request head
//!   (`--max-header-bytes`);
//! - the hot route: `/api/service/{service}/…` is handed straight to its handler
//!   ([`api::service::forward`]) and counted under the same route templates the router uses,
//!   skipping the router's matching and middleware boxing on every forwarded request. Every
//!   other path goes through the axum router unchanged.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, Response};
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::api::{self, AppState, ClientAddr, Shared};
use crate::config::{Config, MIN_HEADER_BYTES};
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
    let policy = UpstreamPolicy::for_config(&config);
    let seed = u64::from(std::process::id()) ^ gpumesh_dht::rules::unix_ms();
    let directory = Arc::new(Directory::new(policy, metrics.clone(), seed));
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
        } = self;
        let addr = listener.local_addr().map_err(RunError::Serve)?;
        info!(%addr, dht = state.config.dht_enabled, "gateway listening");
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
        accept_loop(listener, app, state, limits, &tracker, &shutdown).await;
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

/// Limits applied by hyper to every connection.
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    header_read_timeout: Duration,
    max_header_bytes: usize,
}

impl HttpLimits {
    fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            max_header_bytes: config.max_header_bytes,
        }
    }

    /// The connection builder: HTTP/1.1 with a header read timeout and a bounded read buffer
    /// (the request head must fit in it: over the limit hyper answers 431), h2c with a bounded
    /// header list, both with a tokio timer.
    fn builder(self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper refuses buffers under 8 KiB; the configuration is checked for that.
            .max_buf_size(self.max_header_bytes.max(MIN_HEADER_BYTES));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            // As `axum::serve` does: the CONNECT protocol for HTTP/2 WebSockets.
            .enable_connect_protocol();
        builder
    }
}

/// Accepts connections until `shutdown`, serving each on its own task (tracked by `tracker`,
/// told to shut down gracefully on `shutdown`).
async fn accept_loop(
    listener: TcpListener,
    app: Router,
    state: AppState,
    limits: HttpLimits,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let builder = Arc::new(limits.builder());
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
        let service = Dispatch {
            router: app.clone(),
            state: state.clone(),
            peer,
        };
        tracker.spawn(serve_connection(
            Arc::clone(&builder),
            stream,
            service,
            shutdown.clone(),
        ));
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

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    service: Dispatch,
    shutdown: CancellationToken,
) {
    // Responses are written in one go; small ones must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let peer = service.peer;
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut conn = pin!(conn);
    let mut cancelled = pin!(shutdown.cancelled());
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancelled.as_mut() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header read timeouts, oversized heads and clients that vanish end up here.
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// One connection's request handler: the forward route directly, the rest via the router.
#[derive(Clone)]
struct Dispatch {
    router: Router,
    state: AppState,
    peer: SocketAddr,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Dispatch {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut req = req.map(Body::new);
        match api::service::forward_route(req.uri().path()) {
            Some(route) => {
                let state = self.state.clone();
                let client = ClientAddr(Some(self.peer));
                Box::pin(async move {
                    let metrics = state.metrics.clone();
                    let response = api::service::forward(State(state), client, req)
                        .await
                        .into_response();
                    metrics.count_http(route, response.status().as_u16());
                    Ok(response)
                })
            }
            None => {
                // What `into_make_service_with_connect_info` provides (the `ClientAddr`
                // extractor reads it); the forward route gets the address directly.
                req.extensions_mut().insert(ConnectInfo(self.peer));
                Box::pin(self.router.clone().oneshot(req))
            }
        }
    }
}

#[cfg(test)]
mod tests;
