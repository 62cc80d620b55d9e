//! Header rules: hop-by-hop headers stripped, `Host` left to the client (set from the
//! upstream URL), `X-Forwarded-*` added.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `Host`, never forwarded as they are.
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

/// Removes hop-by-hop headers, including any named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The headers sent upstream: hop-by-hop and `Host` removed, `X-Forwarded-*` added.
pub fn forward_headers(mut headers: HeaderMap, client: Option<SocketAddr>) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    let host = headers.remove(header::HOST);
    if let Some(addr) = client {
        let ip = addr.ip().to_string();
        let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip,
        };
        // The string's buffer becomes the header value (no copy).
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(host) = host
        && !headers.contains_key("x-forwarded-host")
    {
        headers.insert("x-forwarded-host", host);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
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
}
