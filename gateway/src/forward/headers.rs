//! Header rules: hop-by-hop headers stripped, `Host` left to the client (set from the
//! upstream URL), `X-Forwarded-*` added.
//!
//! These run twice per forwarded request (request and response), so they are written to cost
//! one pass over the (usually few) headers and no allocation when there is nothing to remove:
//! names are compared as [`HeaderName`]s (standard names compare by tag, no hashing or string
//! parsing) and a header is only looked up by hash when it is actually present.

use std::io::Write as _;
use std::net::SocketAddr;

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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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

/// The headers sent upstream: hop-by-hop and `Host` removed, `X-Forwarded-*` added.
pub fn forward_headers(mut headers: HeaderMap, client: Option<SocketAddr>) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    let host = headers.remove(header::HOST);
    if let Some(addr) = client {
        // An IPv6 address is at most 45 bytes; a prior chain may be longer (then it is
        // written into a growable buffer).
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
    if let Some(host) = host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_host_are_replaced() {
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
            HeaderValue::from_static("Bearer end-to-end"),
        );
        let out = forward_headers(h, Some(SocketAddr::from(([192, 0, 2, 7], 5555))));
        assert!(out.get(header::HOST).is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("x-secret").is_none());
        assert!(out.get(header::TE).is_none());
        assert_eq!(out["x-forwarded-for"], "198.51.100.1, 192.0.2.7");
        assert_eq!(out["x-forwarded-host"], "gw.example");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out[header::AUTHORIZATION], "Bearer end-to-end");
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
        let v6 = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0xdead, 0xbeef], 443));
        let out = forward_headers(HeaderMap::new(), Some(v6));
        assert_eq!(out["x-forwarded-for"], "2001:db8::dead:beef");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert!(out.get("x-forwarded-host").is_none());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let out = forward_headers(h, Some(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(out["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(out["x-forwarded-proto"], "https");
        let out = forward_headers(HeaderMap::new(), None);
        assert!(out.get("x-forwarded-for").is_none());
    }
}
