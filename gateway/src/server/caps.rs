//! Caps on open HTTP connections: all clients together, and per client address.
//!
//! A connection over a cap is closed at accept, before hyper sees it: a flood of idle
//! sockets then costs the gateway an `accept` and a `close` each, never a file descriptor
//! held, and upstream connections (which need descriptors too) keep working.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::metrics::{ConnectionMetrics, Refusal};

/// Descriptors kept out of the connection cap for everything else the process opens: the
/// DHT node's connections, upstream connections to workers, files. A quarter of the limit,
/// at most this many.
const RESERVED_FDS: u64 = 1024;
/// Assumed when the open-file limit cannot be read (not Linux): a common soft default.
const FALLBACK_FD_LIMIT: u64 = 1024;

/// The soft open-file limit (`ulimit -n`) of this process, from `/proc/self/limits`.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The default cap on open HTTP connections for an open-file limit of `fd_limit`: what is
/// left after a reserve for the rest of the process (a quarter of the limit, at most 1024),
/// halved because a forwarded request holds a second descriptor upstream while it runs.
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    let limit = fd_limit.unwrap_or(FALLBACK_FD_LIMIT);
    let reserve = (limit / 4).min(RESERVED_FDS);
    usize::try_from(limit.saturating_sub(reserve) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// The address a per-client cap counts under: an IPv4 address, or an IPv6 /64 (one
/// subscriber's prefix: a host can use any address in it).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// The open connections, counted against both caps.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    max_total: usize,
    max_per_client: usize,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    metrics: ConnectionMetrics,
}

impl ConnectionTable {
    pub(crate) fn new(max_total: usize, max_per_client: usize, metrics: ConnectionMetrics) -> Self {
        Self {
            max_total,
            max_per_client,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The cap on open connections, all clients together.
    pub(crate) fn max_total(&self) -> usize {
        self.max_total
    }

    pub(crate) fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

    /// Takes a place for a connection from `ip`, or says (and counts) which cap refuses it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            });
        if taken.is_err() {
            self.metrics.refused(Refusal::Total);
            return Err(Refusal::Total);
        }
        let key = client_key(ip);
        {
            let mut per_client = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
            let held = per_client.entry(key).or_insert(0);
            if *held >= self.max_per_client {
                drop(per_client);
                self.open.fetch_sub(1, Ordering::AcqRel);
                self.metrics.refused(Refusal::PerClient);
                return Err(Refusal::PerClient);
            }
            *held += 1;
        }
        self.metrics.opened();
        Ok(Admitted {
            table: Arc::clone(self),
            key,
        })
    }
}

/// A connection's place in the [`ConnectionTable`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    table: Arc<ConnectionTable>,
    key: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let table = &self.table;
        {
            let mut per_client = table.per_client.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(held) = per_client.get_mut(&self.key) {
                *held -= 1;
                if *held == 0 {
                    // Entries exist only while a connection does: the map never outgrows the
                    // total cap.
                    per_client.remove(&self.key);
                }
            }
        }
        table.open.fetch_sub(1, Ordering::AcqRel);
        table.metrics.closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(total: usize, per_client: usize) -> Arc<ConnectionTable> {
        Arc::new(ConnectionTable::new(
            total,
            per_client,
            ConnectionMetrics::default(),
        ))
    }

    #[test]
    fn caps_refuse_and_places_come_back() {
        let t = table(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = t.admit(a).unwrap();
        let _a2 = t.admit(a).unwrap();
        assert_eq!(t.admit(a).unwrap_err(), Refusal::PerClient);
        let _b1 = t.admit(b).unwrap();
        assert_eq!(t.admit(b).unwrap_err(), Refusal::Total);
        drop(a1);
        let _b2 = t.admit(b).unwrap();
        assert_eq!(t.open.load(Ordering::Acquire), 3);
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_v4_as_v4() {
        let t = table(10, 1);
        let _x = t.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(
            t.admit("2001:db8:1:2:ffff::9".parse().unwrap())
                .unwrap_err(),
            Refusal::PerClient
        );
        let _y = t.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _v4 = t.admit("198.51.100.7".parse().unwrap()).unwrap();
        assert_eq!(
            t.admit("::ffff:198.51.100.7".parse().unwrap()).unwrap_err(),
            Refusal::PerClient
        );
    }

    #[test]
    fn the_default_cap_follows_the_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            65536                524288               files     \n";
        assert_eq!(parse_open_file_limit(limits), Some(65_536));
        assert_eq!(default_max_connections(Some(65_536)), (65_536 - 1024) / 2);
        assert_eq!(default_max_connections(Some(1024)), (1024 - 256) / 2);
        assert_eq!(default_max_connections(None), (1024 - 256) / 2);
        assert!(default_max_connections(Some(u64::MAX)) > 1 << 40);
    }
}
