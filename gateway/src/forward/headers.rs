//! Header rules: hop-by-hop headers stripped, `Host` left to the client (set from the
//! upstream URL), `X-Forwarded-*` and `Via` added, credentials kept from workers, and worker
//! headers that would act on the gateway's origin dropped.
//!
//! Workers are volunteers: a client's `Authorization`, `Cookie` and `Proxy-*` headers (an
//! API key for the fleet, a session) never reach them unless the operator allow-lists the
//! header (`--forward-header`). A worker's answer is served from the gateway's own origin,
//! which also serves the topology page, so `Set-Cookie`, `Strict-Transport-Security` and a
//! `Location` that may lead to another host are dropped, and every proxied answer is marked
//! `X-Content-Type-Options: nosniff` and `Content-Security-Policy: sandbox` (a worker's HTML
//! cannot run script with the gateway's origin).
//!
//! These run twice per forwarded request (request and response), so they are written to cost
//! one pass over the (usually few) headers and no allocation when there is nothing to remove:
//! names are compared as [`HeaderName`]s (standard names compare by tag, no hashing or string
//! parsing) and a header is only looked up by hash when it is actually present.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded as they are.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Worker response headers that would act on the gateway's origin.
const ORIGIN_BOUND: [HeaderName; 2] = [header::SET_COOKIE, header::STRICT_TRANSPORT_SECURITY];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// How a gateway rewrites headers on the way to a worker and back.
#[derive(Debug, Clone)]
pub struct HeaderRules {
    /// This gateway's name in `Via` (its received-by token).
    via_name: Arc<str>,
    /// `1.1 <via_name>`, the entry this gateway appends to `Via`.
    via_entry: HeaderValue,
    /// Credential headers the operator lets through to workers.
    allowed: Arc<[HeaderName]>,
    /// Whether the client's address goes to workers in `X-Forwarded-For`.
    forwarded_for: bool,
}

impl HeaderRules {
    /// Rules for a gateway named `via_name` (an RFC 9110 token), letting the credential
    /// headers in `allowed` through and, with `forwarded_for`, telling workers the client's
    /// address.
    ///
    /// # Errors
    /// When `via_name` cannot be a header value.
    pub fn new(
        via_name: &str,
        allowed: Vec<HeaderName>,
        forwarded_for: bool,
    ) -> Result<Self, header::InvalidHeaderValue> {
        Ok(Self {
            via_entry: HeaderValue::from_str(&format!("1.1 {via_name}"))?,
            via_name: Arc::from(via_name),
            allowed: allowed.into(),
            forwarded_for,
        })
    }

    /// This gateway's name in `Via`.
    pub fn via_name(&self) -> &str {
        &self.via_name
    }

    /// Whether a request already passed through this gateway: a `Via` entry names it
    /// (RFC 9110 §7.6.3: `received-protocol received-by [comment]`, comma-separated, in one
    /// or several header lines).
    pub fn is_loop(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|entry| entry.split_whitespace().nth(1))
            .any(|by| by.eq_ignore_ascii_case(&self.via_name))
    }

    /// The headers sent upstream: hop-by-hop, `Host` and credentials removed,
    /// `X-Forwarded-*` and `Via` added.
    pub fn request(&self, mut headers: HeaderMap, client: Option<SocketAddr>) -> HeaderMap {
        strip_hop_by_hop(&mut headers);
        self.strip_credentials(&mut headers);
        let host = headers.remove(header::HOST);
        if self.forwarded_for {
            if let Some(addr) = client {
                append_forwarded_for(&mut headers, addr);
            }
        } else {
            // A front proxy's chain would tell workers the client's address just as well.
            headers.remove(&X_FORWARDED_FOR);
            headers.remove(header::FORWARDED);
        }
        if let Some(host) = host
            && !headers.contains_key(&X_FORWARDED_HOST)
        {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        headers.append(header::VIA, self.via_entry.clone());
        headers
    }

    /// A worker's response headers made safe to serve from the gateway's origin.
    pub fn response(&self, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        for name in &ORIGIN_BOUND {
            headers.remove(name);
        }
        let may_leave = headers
            .get_all(header::LOCATION)
            .iter()
            .any(|v| !is_relative_reference(v.as_bytes()));
        if may_leave {
            headers.remove(header::LOCATION);
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }

    /// Removes `Authorization`, `Cookie` and `Proxy-*` unless allow-listed.
    fn strip_credentials(&self, headers: &mut HeaderMap) {
        let is_credential = |name: &HeaderName| {
            (name == header::AUTHORIZATION
                || name == header::COOKIE
                || name.as_str().starts_with("proxy-"))
                && !self.allowed.contains(name)
        };
        if !headers.keys().any(is_credential) {
            return;
        }
        let found: Vec<HeaderName> = headers
            .keys()
            .filter(|n| is_credential(n))
            .cloned()
            .collect();
        for name in &found {
            headers.remove(name);
        }
    }
}

/// Whether a `Location` value is a relative reference without an authority (`/path`,
/// `next?x=1`): resolved against the gateway's URL, it stays on the gateway's host. An
/// absolute URL (`scheme:`) or a network-path reference (`//host`, which browsers also
/// accept spelled with backslashes) may lead anywhere.
fn is_relative_reference(v: &[u8]) -> bool {
    if matches!(v, [b'/' | b'\\', b'/' | b'\\', ..]) {
        return false;
    }
    // A scheme is whatever comes before the first `:` when no `/`, `?` or `#` precedes it.
    !v.iter()
        .take_while(|b| !matches!(b, b'/' | b'?' | b'#'))
        .any(|b| *b == b':')
}

/// Appends the client's address to `X-Forwarded-For`.
fn append_forwarded_for(headers: &mut HeaderMap, addr: SocketAddr) {
    // An IPv6 address is at most 45 bytes; a prior chain may be longer (then it is written
    // into a growable buffer).
    let mut ip = [0u8; 48];
    let ip_len = {
        let mut cursor = std::io::Cursor::new(&mut ip[..]);
        let _ = write!(cursor, "{}", addr.ip());
        usize::try_from(cursor.position()).unwrap_or(0)
    };
    let ip = &ip[..ip_len];
    let value = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => {
            let prior = prior.as_bytes();
            let mut v = Vec::with_capacity(prior.len() + 2 + ip.len());
            v.extend_from_slice(prior);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(axum::body::Bytes::from(v))
        }
        None => HeaderValue::from_bytes(ip),
    };
    if let Ok(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass to learn whether there is anything to do (the common case: nothing).
    let mut found = false;
    let mut connection = false;
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) {
            found = true;
            connection |= name == header::CONNECTION;
        }
    }
    if !found {
        return;
    }
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allowed: Vec<HeaderName>, forwarded_for: bool) -> HeaderRules {
        HeaderRules::new("gw-test", allowed, forwarded_for).unwrap()
    }

    #[test]
    fn hop_by_hop_host_and_credentials_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("gw.example"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer fleet-key"),
        );
        h.insert(header::COOKIE, HeaderValue::from_static("sid=1"));
        h.insert("proxy-anything", HeaderValue::from_static("1"));
        h.insert(header::VIA, HeaderValue::from_static("1.1 front"));
        let out =
            rules(Vec::new(), true).request(h, Some(SocketAddr::from(([192, 0, 2, 7], 5555))));
        for gone in [
            "host",
            "connection",
            "x-secret",
            "te",
            "authorization",
            "cookie",
            "proxy-anything",
        ] {
            assert!(out.get(gone).is_none(), "{gone} passed");
        }
        assert_eq!(out["x-forwarded-for"], "198.51.100.1, 192.0.2.7");
        assert_eq!(out["x-forwarded-host"], "gw.example");
        assert_eq!(out["x-forwarded-proto"], "http");
        let via: Vec<_> = out.get_all(header::VIA).iter().collect();
        assert_eq!(via, ["1.1 front", "1.1 gw-test"]);
    }

    #[test]
    fn allow_listed_credentials_pass_and_forwarded_for_can_be_off() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert(header::COOKIE, HeaderValue::from_static("sid=1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        let out = rules(vec![header::AUTHORIZATION], false)
            .request(h, Some(SocketAddr::from(([192, 0, 2, 7], 1))));
        assert_eq!(out[header::AUTHORIZATION], "Bearer k");
        assert!(out.get(header::COOKIE).is_none());
        assert!(out.get("x-forwarded-for").is_none());
        assert!(out.get(header::FORWARDED).is_none());
    }

    #[test]
    fn own_via_entry_is_a_loop_anywhere_in_the_chain() {
        let r = rules(Vec::new(), true);
        let mut h = HeaderMap::new();
        assert!(!r.is_loop(&h));
        h.append(
            header::VIA,
            HeaderValue::from_static("1.0 fred, 1.1 other (x)"),
        );
        assert!(!r.is_loop(&h));
        h.append(
            header::VIA,
            HeaderValue::from_static("2 a, 1.1 GW-TEST (gpumesh)"),
        );
        assert!(r.is_loop(&h));
        // What this gateway sends on is recognised when it comes back.
        assert!(r.is_loop(&r.request(HeaderMap::new(), None)));
    }

    #[test]
    fn worker_headers_cannot_act_on_the_gateways_origin() {
        let r = rules(Vec::new(), true);
        for (location, kept) in [
            ("/api/service/x/next", true),
            ("next?a=b:c", true),
            ("https://phish.example/", false),
            ("//phish.example/", false),
            ("/\\phish.example/", false),
            ("javascript:alert(1)", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
            h.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=1"),
            );
            h.insert(header::LOCATION, HeaderValue::from_str(location).unwrap());
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src *"),
            );
            r.response(&mut h);
            assert_eq!(h.get(header::LOCATION).is_some(), kept, "{location}");
            assert!(h.get(header::SET_COOKIE).is_none());
            assert!(h.get(header::STRICT_TRANSPORT_SECURITY).is_none());
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
        }
    }

    #[test]
    fn headers_without_hop_by_hop_pass_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("x-custom", HeaderValue::from_static("1"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        let mut h = HeaderMap::new();
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h["x-custom"], "1");
    }

    #[test]
    fn forwarded_for_is_set_or_appended_for_both_families() {
        let r = rules(Vec::new(), true);
        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0xdead, 0xbeef], 443));
        let out = r.request(HeaderMap::new(), Some(v6));
        assert_eq!(out["x-forwarded-for"], "2001:db8::dead:beef");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert!(out.get("x-forwarded-host").is_none());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let out = r.request(h, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "https");
        let out = r.request(HeaderMap::new(), None);
        assert!(out.get("x-forwarded-for").is_none());
    }
}
