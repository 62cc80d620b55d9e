//! Upstream policy: which URLs taken from worker records the gateway will ever call.
//!
//! A worker record names a URL the gateway calls on behalf of frontends, so a hostile record
//! could point it at the gateway's own host, its private network or a cloud metadata service
//! (SSRF). By default only `https` URLs to public addresses pass. The check runs twice: on the
//! URL when a record enters the directory, and on every address DNS returns at connect time
//! ([`GuardedResolver`]), so a public name that resolves to a private address is refused too.
//!
//! The gateway's own public names and addresses (`--public-name`) are refused in both checks,
//! whatever else is allowed: a record naming the gateway would make every request to its
//! service call the gateway again (the `Via` check in the forwarder stops such a loop after
//! one hop; this stops it before the first).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::Name;
use url::{Host, Url};

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a URL.
    #[error("not a valid URL")]
    Invalid,
    /// A scheme other than https (or http when private upstreams are allowed).
    #[error("scheme `{0}` is not allowed (https only)")]
    Scheme(String),
    /// User info, a query or a fragment: a tunnel URL is a plain base.
    #[error("the URL must not carry credentials, a query or a fragment")]
    Extras,
    /// A loopback, private, link-local, metadata or otherwise non-public address.
    #[error("address {0} is not public")]
    PrivateAddress(IpAddr),
    /// `localhost` and friends.
    #[error("host `{0}` is local")]
    LocalName(String),
    /// One of the gateway's own public names or addresses.
    #[error("host `{0}` is this gateway's own")]
    OwnHost(String),
}

/// The upstream policy: `https` to public addresses, unless private upstreams are allowed,
/// and never to the gateway's own names or addresses.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    allow_private: bool,
    own: Arc<OwnHosts>,
}

/// The gateway's own public names (lower case, no trailing dot) and addresses.
#[derive(Debug, Default)]
struct OwnHosts {
    names: Vec<String>,
    addrs: Vec<IpAddr>,
}

/// Parses a host name or address as a URL would carry it (`gw.example.org`, `203.0.113.5`,
/// `[2001:db8::1]`); `None` when it is neither.
pub fn parse_host(raw: &str) -> Option<Host> {
    let host = Host::parse(raw.trim()).ok()?;
    match host {
        Host::Domain(d) if d.is_empty() || d.contains(['/', ':', '@']) => None,
        Host::Domain(d) => Some(Host::Domain(d.trim_end_matches('.').to_ascii_lowercase())),
        other => Some(other),
    }
}

impl UpstreamPolicy {
    /// A policy; `allow_private` admits loopback/private targets and plain http (demo, tests).
    pub fn new(allow_private: bool) -> Self {
        Self {
            allow_private,
            own: Arc::default(),
        }
    }

    /// Refuses the hosts in `hosts` (names or addresses; unparsable entries are skipped,
    /// `Config::validate` refuses them first).
    #[must_use]
    pub fn with_own_hosts(mut self, hosts: &[String]) -> Self {
        let mut own = OwnHosts::default();
        for host in hosts.iter().filter_map(|h| parse_host(h)) {
            match host {
                Host::Domain(name) => own.names.push(name),
                Host::Ipv4(ip) => own.addrs.push(IpAddr::V4(ip)),
                Host::Ipv6(ip) => own.addrs.push(IpAddr::V6(ip)),
            }
        }
        self.own = Arc::new(own);
        self
    }

    /// Whether private upstreams are allowed.
    pub fn allows_private(&self) -> bool {
        self.allow_private
    }

    /// Parses and checks a tunnel URL, returning it without a trailing slash in the path.
    ///
    /// # Errors
    /// The [`PolicyError`] that refuses it.
    pub fn check_url(&self, raw: &str) -> Result<Url, PolicyError> {
        let url = Url::parse(raw).map_err(|_| PolicyError::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            other => return Err(PolicyError::Scheme(other.to_owned())),
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(PolicyError::Extras);
        }
        match url.host() {
            None => return Err(PolicyError::Invalid),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                if self.own.names.contains(&lower) {
                    return Err(PolicyError::OwnHost(lower));
                }
                let local = lower == "localhost"
                    || lower.ends_with(".localhost")
                    || lower.ends_with(".local")
                    || lower.ends_with(".internal")
                    || lower == "metadata";
                if local && !self.allow_private {
                    return Err(PolicyError::LocalName(lower));
                }
            }
        }
        Ok(url)
    }

    /// Checks one resolved address.
    ///
    /// # Errors
    /// [`PolicyError::OwnHost`] for one of the gateway's own addresses;
    /// [`PolicyError::PrivateAddress`] when the address is not public and that is not allowed.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), PolicyError> {
        let unmapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        if self.own.addrs.contains(&unmapped) {
            return Err(PolicyError::OwnHost(ip.to_string()));
        }
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(PolicyError::PrivateAddress(ip))
        }
    }
}

/// Whether an address is a public unicast address (not loopback, private, link-local, CGNAT,
/// metadata, documentation, multicast, broadcast or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, _, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata service
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64 can reach private v4
}

/// A DNS resolver for the forwarding client that drops addresses the policy refuses, so a
/// record naming a public-looking host that resolves to a private address is never called.
/// IP-literal hosts never reach it (hyper-util's connector skips DNS for them); those were
/// checked when the record entered the directory.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: UpstreamPolicy,
}

impl GuardedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: UpstreamPolicy) -> Self {
        Self { policy }
    }
}

/// What [`GuardedResolver`] resolves to.
pub type ResolvedAddrs = std::vec::IntoIter<SocketAddr>;

impl tower::Service<Name> for GuardedResolver {
    type Response = ResolvedAddrs;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<ResolvedAddrs, std::io::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
                .await?
                .filter(|addr| policy.check_ip(addr.ip()).is_ok())
                .collect();
            if resolved.is_empty() {
                return Err(std::io::Error::other(format!(
                    "`{host}` resolves to no allowed address"
                )));
            }
            Ok(resolved.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_refuses_private_and_plain_http() {
        let p = UpstreamPolicy::new(false);
        assert!(p.check_url("https://w1.example.com").is_ok());
        assert!(p.check_url("https://203.0.113.9:8443/base").is_err()); // documentation range
        assert!(p.check_url("https://8.8.8.8").is_ok());
        for bad in [
            "http://w1.example.com",
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://192.168.0.1",
            "https://172.16.4.4",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1",
            "https://[::1]",
            "https://[fe80::1]",
            "https://[fd00::1]",
            "https://[::ffff:10.0.0.1]",
            "https://localhost:8443",
            "https://x.localhost",
            "https://0.0.0.0",
            "https://user:pw@w1.example.com",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(p.check_url(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn own_names_and_addresses_are_refused_even_when_private_is_allowed() {
        let own = [
            "GW.example.org.".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ];
        let p = UpstreamPolicy::new(true).with_own_hosts(&own);
        for bad in [
            "https://gw.example.org/api/service/x",
            "https://Gw.Example.Org.:8443",
            "http://127.0.0.1:9000",
            "http://[::1]:9000",
        ] {
            assert!(
                matches!(p.check_url(bad), Err(PolicyError::OwnHost(_))),
                "{bad} should be refused"
            );
        }
        assert!(p.check_url("https://w1.example.org").is_ok());
        assert!(p.check_url("http://127.0.0.2:9000").is_ok());
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(p.check_ip(mapped).is_err(), "resolved to our own address");
        // Without own names nothing changes.
        assert!(
            UpstreamPolicy::new(true)
                .check_url("http://127.0.0.1:1")
                .is_ok()
        );
    }

    #[test]
    fn allow_private_admits_loopback_http() {
        let p = UpstreamPolicy::new(true);
        assert!(p.check_url("http://127.0.0.1:9000").is_ok());
        assert!(p.check_url("ftp://127.0.0.1").is_err());
    }
}
