//! The agent's main loop: probe, decide the state, publish on change and on the heartbeat,
//! send load heartbeats, and drain on shutdown.

use std::time::{Duration, Instant};

use gpumesh_dht::record::{LoadInfo, WorkerRecord};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::announcer::{Announcer, Route};
use super::config::AgentConfig;
use crate::load::{LoadReport, fresh};
use crate::record::{RecordBuilder, worker_state};
use crate::sampler::{Sample, Sampler};
use crate::tunnel::TunnelStatus;
use gpumesh_dht::rules::is_material_change;

/// What the agent did, returned by [`super::run`] after a drain (tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// Calls to the bootstrap endpoint.
    pub bootstrap_calls: u64,
    /// Calls to the gateway registry.
    pub registry_calls: u64,
    /// Full-record publications that some channel accepted.
    pub publications: u64,
    /// Whether the drain finished before the grace period ran out.
    pub drained_clean: bool,
}

pub(crate) struct EventLoop {
    pub(crate) cfg: AgentConfig,
    pub(crate) sampler: Sampler,
    pub(crate) builder: RecordBuilder,
    pub(crate) announcer: Announcer,
    pub(crate) tunnel: watch::Receiver<TunnelStatus>,
    pub(crate) load: watch::Receiver<Option<LoadReport>>,
    pub(crate) health_url: String,
    pub(crate) http: reqwest::Client,
}

/// Whether the local service answers its health URL with anything below 500.
pub(crate) async fn service_up(http: &reqwest::Client, url: &str) -> bool {
    match http.get(url).send().await {
        Ok(r) => !r.status().is_server_error(),
        Err(e) => {
            debug!(error = %e, "local service health check failed");
            false
        }
    }
}

struct Live {
    sample: Sample,
    service_up: bool,
    published: Option<WorkerRecord>,
    publications: u64,
}

impl EventLoop {
    fn current_load(&self) -> LoadInfo {
        fresh(*self.load.borrow(), self.cfg.report_stale_after).unwrap_or(LoadInfo {
            in_flight: 0,
            queue_depth: 0,
            max_concurrency: self.cfg.max_concurrency,
        })
    }

    async fn service_up(&self) -> bool {
        service_up(&self.http, &self.health_url).await
    }

    /// The record the agent would publish now, or `None` when it has no usable URL.
    fn next_record(&mut self, live: &Live, draining: bool) -> Option<WorkerRecord> {
        let status = self.tunnel.borrow().clone();
        let url = status.usable_url()?.to_owned();
        let state = worker_state(
            draining,
            true,
            live.service_up,
            live.sample.gpu_error.is_none(),
        );
        let load = self.current_load();
        Some(self.builder.build(state, &url, &live.sample, load))
    }

    /// Publishes when forced or when the record changed materially; withdraws when the URL is
    /// gone (a record must never point at a URL the agent cannot stand behind).
    ///
    /// A publication (which may be a DHT join of several seconds) gives way to `interrupt`, so
    /// a shutdown signal is never stuck behind a slow join.
    async fn reconcile(
        &mut self,
        live: &mut Live,
        force: bool,
        draining: bool,
        interrupt: &CancellationToken,
    ) {
        let Some(next) = self.next_record(live, draining) else {
            if live.published.take().is_some() {
                warn!("public URL lost; withdrawing the record");
                self.announcer.withdraw().await;
            }
            return;
        };
        let material = live
            .published
            .as_ref()
            .is_none_or(|p| is_material_change(p, &next, self.cfg.vram_step_mib));
        if !(force || material) {
            return;
        }
        let published = if draining {
            self.announcer.publish_on_route(&next).await
        } else {
            tokio::select! {
                ok = self.announcer.publish(&next, !material) => ok,
                () = interrupt.cancelled() => false,
            }
        };
        if published {
            debug!(state = ?next.state, route = ?self.announcer.route(), "record published");
            live.publications += 1;
            live.published = Some(next);
        }
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) -> AgentReport {
        let mut live = Live {
            sample: self.sampler.sample().await,
            service_up: self.service_up().await,
            published: None,
            publications: 0,
        };
        let mut refresh = tokio::time::interval(self.cfg.refresh_every);
        let mut beat = tokio::time::interval(self.cfg.load_every);
        let mut probe = tokio::time::interval(self.cfg.probe_every);
        for t in [&mut refresh, &mut beat, &mut probe] {
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        let mut tunnel = self.tunnel.clone();
        let mut tunnel_open = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = refresh.tick() => self.reconcile(&mut live, true, false, &shutdown).await,
                _ = probe.tick() => {
                    live.sample = self.sampler.sample().await;
                    live.service_up = self.service_up().await;
                    self.reconcile(&mut live, false, false, &shutdown).await;
                }
                _ = beat.tick() => {
                    if let Some(p) = &live.published {
                        let mut r = p.clone();
                        r.load = self.current_load();
                        self.announcer.heartbeat(&r).await;
                    }
                }
                changed = tunnel.changed(), if tunnel_open => {
                    // A closed channel means the supervisor is gone: stop watching it.
                    tunnel_open = changed.is_ok();
                    self.reconcile(&mut live, false, false, &shutdown).await;
                }
            }
        }
        let drained_clean = self.drain(&mut live).await;
        AgentReport {
            bootstrap_calls: self
                .announcer
                .dht
                .as_ref()
                .map_or(0, |d| d.bootstrap_calls()),
            registry_calls: self.announcer.registry.as_ref().map_or(0, |r| r.calls()),
            publications: live.publications,
            drained_clean,
        }
    }

    /// Publishes `draining`, stops new work, waits for in-flight work up to the grace period,
    /// then withdraws. Returns whether the work finished in time.
    async fn drain(&mut self, live: &mut Live) -> bool {
        info!(grace = ?self.cfg.drain_grace, "draining");
        if live.published.is_some() {
            self.reconcile(live, true, true, &CancellationToken::new())
                .await;
        }
        let deadline = Instant::now() + self.cfg.drain_grace;
        let clean = loop {
            let load = self.current_load();
            if load.in_flight == 0 && load.queue_depth == 0 {
                break true;
            }
            if Instant::now() >= deadline {
                warn!(
                    in_flight = load.in_flight,
                    queued = load.queue_depth,
                    "drain grace period over"
                );
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if live.published.take().is_some() || self.announcer.route() != Route::Nowhere {
            self.announcer.withdraw().await;
        }
        info!(clean, "drained");
        clean
    }
}
