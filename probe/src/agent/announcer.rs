//! Where the record goes: the DHT when it can be joined, else the gateway registry; back to
//! the DHT as soon as it recovers.
//!
//! One failed DHT write does not move the record: while the last record the DHT accepted is
//! still valid, the worker stays on the DHT for up to [`MAX_MISSED_DHT_WRITES`] failed write in
//! a row (a record lives the rulebook's [`gpumesh_dht::rules::record_ttl`], three refreshes,
//! so after one lost refresh it still has a full refresh interval to live, and the next write
//! can still fall back in time). Leaving on the first timeout made a loaded network flap
//! between the DHT and the registry and sent every such worker to the central endpoint.
//!
//! A DHT write can also count as failed (too few of the closest nodes answered in time) and
//! still reach the gateway. The registry then answers 409 `stale_record` (it holds this record
//! or a newer one, from the DHT); the worker takes that as "the gateway has it" and stays on
//! the DHT instead of retrying the registration with back-off — each retry was a central call
//! that could not succeed (667 of them in one 60-minute soak).

use gpumesh_dht::record::WorkerRecord;
use gpumesh_dht::rules::unix_ms;
use tracing::{info, warn};

/// Failed DHT writes in a row tolerated while the previous record is still valid.
pub(crate) const MAX_MISSED_DHT_WRITES: u32 = 1;

use super::dht_link::DhtLink;
use super::registry_link::{Outcome, RegistryLink};

/// Which channel carries the record now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Published in the DHT.
    Dht,
    /// Registered with the gateway's HTTP registry.
    Registry,
    /// Not published anywhere (no URL yet, or every channel is failing).
    Nowhere,
}

#[derive(Debug)]
pub(crate) struct Announcer {
    pub(crate) dht: Option<DhtLink>,
    pub(crate) registry: Option<RegistryLink>,
    route: Route,
    /// When the last record the DHT accepted expires (at the latest: the node stamps it after
    /// the publication starts, so this errs early).
    dht_held_until_ms: u64,
    /// DHT writes that failed since the last success.
    dht_missed: u32,
}

impl Announcer {
    pub(crate) fn new(dht: Option<DhtLink>, registry: Option<RegistryLink>) -> Self {
        Self {
            dht,
            registry,
            route: Route::Nowhere,
            dht_held_until_ms: 0,
            dht_missed: 0,
        }
    }

    pub(crate) fn route(&self) -> Route {
        self.route
    }

    fn set_route(&mut self, r: Route) {
        if r != self.route {
            info!(from = ?self.route, to = ?r, "record route changed");
            self.route = r;
        }
    }

    /// Publishes the full record. Tries the DHT first (joining if needed, within its backoff);
    /// on success leaves the registry. `refresh_only` says nothing material changed: the
    /// registry then gets a heartbeat instead of a new registration. Returns whether some
    /// channel holds the record.
    pub(crate) async fn publish(&mut self, record: &WorkerRecord, refresh_only: bool) -> bool {
        let now = unix_ms();
        if let Some(dht) = &mut self.dht
            && dht.ensure_joined().await
            && dht.publish(record).await
        {
            if let Some(reg) = &mut self.registry
                && reg.is_registered()
            {
                reg.withdraw().await;
            }
            self.held_via_dht(now);
            return true;
        }
        if self.route == Route::Dht && self.dht.is_some() {
            self.dht_missed += 1;
            if self.dht_missed <= MAX_MISSED_DHT_WRITES && now < self.dht_held_until_ms {
                warn!(
                    missed = self.dht_missed,
                    held_until_ms = self.dht_held_until_ms,
                    "DHT write failed; the previous record is still valid, staying on the DHT"
                );
                return true;
            }
        }
        if let Some(reg) = &mut self.registry {
            let outcome = if refresh_only && reg.is_registered() {
                reg.beat(record).await
            } else {
                reg.publish(record).await
            };
            match outcome {
                Outcome::Held => {
                    self.set_route(Route::Registry);
                    return true;
                }
                Outcome::HeldViaDht => {
                    // The DHT write counted as failed reached this gateway after all (its
                    // registry answered 409 `stale_record`): stay on the DHT rather than
                    // retry a central call that cannot succeed.
                    if self.dht.is_some() {
                        self.held_via_dht(now);
                    }
                    return true;
                }
                Outcome::Failed => {}
            }
        }
        self.set_route(Route::Nowhere);
        false
    }

    /// The DHT holds a record its node stamped after `now_ms`: it is valid for the node's
    /// record TTL from then.
    fn held_via_dht(&mut self, now_ms: u64) {
        let ttl = self.dht.as_ref().map_or(0, |d| {
            u64::try_from(d.record_ttl().as_millis()).unwrap_or(u64::MAX)
        });
        self.dht_held_until_ms = now_ms.saturating_add(ttl);
        self.dht_missed = 0;
        self.set_route(Route::Dht);
    }

    /// Publishes on the current route only, never joining anything (used by the drain).
    pub(crate) async fn publish_on_route(&mut self, record: &WorkerRecord) -> bool {
        match self.route {
            Route::Dht => match &mut self.dht {
                Some(dht) => dht.publish(record).await,
                None => false,
            },
            Route::Registry => match &mut self.registry {
                Some(reg) => reg.publish(record).await.held(),
                None => false,
            },
            Route::Nowhere => false,
        }
    }

    /// A load heartbeat on the current route.
    pub(crate) async fn heartbeat(&mut self, record: &WorkerRecord) {
        match self.route {
            Route::Dht => {
                if let Some(dht) = &mut self.dht {
                    dht.heartbeat(record).await;
                }
            }
            Route::Registry => {
                if let Some(reg) = &mut self.registry {
                    reg.heartbeat(record).await;
                }
            }
            Route::Nowhere => {}
        }
    }

    /// Withdraws the record everywhere.
    pub(crate) async fn withdraw(&mut self) {
        if let Some(dht) = &mut self.dht
            && dht.is_joined()
        {
            dht.withdraw().await;
        }
        if let Some(reg) = &mut self.registry {
            reg.withdraw().await;
        }
        self.set_route(Route::Nowhere);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};
    use gpumesh_dht::Timings;
    use tokio_util::sync::CancellationToken;

    use super::super::dht_link::DhtSettings;
    use super::*;
    use crate::bootstrap::Bootstrapper;
    use crate::coordinator::Coordinator;
    use crate::tunnel::Secret;

    /// A registry on loopback answering every registration with `status` and error `code`.
    async fn registry(status: StatusCode, code: &'static str) -> String {
        let answer = move || async move {
            let body = serde_json::json!({"code": code, "fault": "client", "message": "test"});
            (status, Json(body))
        };
        let app = Router::new().route("/api/workers/register", post(answer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// A DHT link that cannot join (no bootstrap URL, no cache) beside the registry at `url`.
    fn announcer(url: &str) -> Announcer {
        let settings = DhtSettings {
            key_path: "unused-node.key".into(),
            port: 0,
            timings: Timings::fast(),
            join_timeout: Duration::from_millis(100),
            shutdown: CancellationToken::new(),
            admission: None,
            network_key: None,
        };
        let dht = DhtLink::new(Bootstrapper::new(None, None).unwrap(), settings);
        let registry = RegistryLink::new(
            Coordinator::new(url, Secret::new("t")).unwrap(),
            Duration::from_secs(90),
        );
        Announcer::new(Some(dht), Some(registry))
    }

    fn calls(a: &Announcer) -> u64 {
        a.registry.as_ref().map_or(0, RegistryLink::calls)
    }

    #[tokio::test]
    async fn stale_record_keeps_the_worker_on_the_dht_without_back_off() {
        let mut a = announcer(&registry(StatusCode::CONFLICT, "stale_record").await);
        let record = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
        assert!(
            a.publish(&record, false).await,
            "the gateway holds the record"
        );
        assert_eq!(a.route(), Route::Dht);
        assert!(!a.registry.as_ref().unwrap().is_registered());
        // The record the DHT node stamped is still valid: one more failed DHT write is
        // tolerated without a central call.
        assert!(a.publish(&record, false).await);
        assert_eq!(calls(&a), 1);
        // Not a failure: the next publication that falls back is not held back by a back-off.
        assert!(a.publish(&record, false).await);
        assert_eq!(calls(&a), 2);
    }

    #[tokio::test]
    async fn a_failed_registration_backs_off() {
        let mut a = announcer(&registry(StatusCode::INTERNAL_SERVER_ERROR, "internal").await);
        let record = WorkerRecord::new(vec!["ocr".parse().unwrap()], "https://w.example.org");
        assert!(!a.publish(&record, false).await);
        assert_eq!(a.route(), Route::Nowhere);
        assert!(!a.publish(&record, false).await);
        assert_eq!(
            calls(&a),
            1,
            "the second registration waits for the back-off"
        );
    }
}
