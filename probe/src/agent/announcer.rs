//! Where the record goes: the DHT when it can be joined, else the gateway registry; back to
//! the DHT as soon as it recovers.
//!
//! One failed DHT write does not move the record: while the last record the DHT accepted is
//! still valid, the worker stays on the DHT for up to [`MAX_MISSED_DHT_WRITES`] failed write in
//! a row (the TTL spans three refreshes, so after one lost refresh the record still has a full
//! refresh interval to live, and the next write can still fall back in time). Leaving on the
//! first timeout made a loaded network flap between the DHT and the registry and sent every
//! such worker to the central endpoint.

use gpumesh_dht::record::WorkerRecord;
use tracing::{info, warn};

/// Failed DHT writes in a row tolerated while the previous record is still valid.
pub(crate) const MAX_MISSED_DHT_WRITES: u32 = 1;

use super::dht_link::DhtLink;
use super::registry_link::RegistryLink;

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
    /// `expires_at_ms` of the last record the DHT accepted.
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
        if let Some(dht) = &mut self.dht
            && dht.ensure_joined().await
            && dht.publish(record).await
        {
            if let Some(reg) = &mut self.registry
                && reg.is_registered()
            {
                reg.withdraw().await;
            }
            self.dht_held_until_ms = record.expires_at_ms;
            self.dht_missed = 0;
            self.set_route(Route::Dht);
            return true;
        }
        if self.route == Route::Dht && self.dht.is_some() {
            self.dht_missed += 1;
            if self.dht_missed <= MAX_MISSED_DHT_WRITES
                && record.issued_at_ms < self.dht_held_until_ms
            {
                warn!(
                    missed = self.dht_missed,
                    held_until_ms = self.dht_held_until_ms,
                    "DHT write failed; the previous record is still valid, staying on the DHT"
                );
                return true;
            }
        }
        if let Some(reg) = &mut self.registry
            && (if refresh_only && reg.is_registered() {
                reg.beat(record).await
            } else {
                reg.publish(record).await
            })
        {
            self.set_route(Route::Registry);
            return true;
        }
        self.set_route(Route::Nowhere);
        false
    }

    /// Publishes on the current route only, never joining anything (used by the drain).
    pub(crate) async fn publish_on_route(&mut self, record: &WorkerRecord) -> bool {
        match self.route {
            Route::Dht => match &mut self.dht {
                Some(dht) => dht.publish(record).await,
                None => false,
            },
            Route::Registry => match &mut self.registry {
                Some(reg) => reg.publish(record).await,
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
