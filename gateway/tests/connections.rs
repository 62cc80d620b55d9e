//! The HTTP server's connection deadlines and caps, on real loopback sockets: silent
//! clients, half an h2 preface, idle keep-alive and h2 sessions, stalled request bodies,
//! and connections over the caps.

mod support;

use std::time::{Duration, Instant};

use gpumesh_gateway::{Config, Source};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::{RunningGateway, start_gateway, start_worker};

/// Generous on a loaded 2-core machine: the deadlines under test are far shorter, and
/// without them every connection below stays open for good.
const PATIENCE: Duration = Duration::from_secs(20);

/// The client preface of h2c with prior knowledge, and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// One HEADERS frame on stream 1 (END_STREAM | END_HEADERS): `GET /` over http, the
/// request's fields as HPACK static-table indices (2 `:method GET`, 6 `:scheme http`,
/// 4 `:path /`).
const H2_GET: &[u8] = b"\x00\x00\x03\x01\x05\x00\x00\x00\x01\x82\x86\x84";

/// Deadlines long enough that only the one a test shortens can fire.
fn config() -> Config {
    Config {
        first_byte_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        body_read_timeout: Duration::from_secs(30),
        ..support::config()
    }
}

/// Reads until the gateway closes (or resets) the connection; what it sent, and how long
/// that took.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read_all)
        .await
        .expect("the gateway closes the connection");
    (got, started.elapsed())
}

/// The value of the metric series `series` (name and labels), read once the gateway
/// answers again (a test may have just given back the last place under a cap).
async fn metric(gw: &RunningGateway, series: &str) -> f64 {
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(resp) = support::client().get(gw.url("/metrics")).send().await {
            text = resp.text().await.expect("metrics body");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let gw = start_gateway(Config {
        first_byte_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let (got, _) = read_until_closed(&mut silent).await;
    assert!(got.is_empty(), "nothing is answered to nothing: {got:?}");
    let series = r#"gpumesh_gateway_connections_timed_out_total{phase="first_byte"}"#;
    assert_eq!(metric(&gw, series).await, 1.0);
}

#[tokio::test]
async fn half_an_h2_preface_is_closed_by_the_head_deadline() {
    let gw = start_gateway(Config {
        header_read_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut partial = TcpStream::connect(gw.addr).await.unwrap();
    // 16 of the 24 bytes hyper waits for before it picks a protocol.
    partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    read_until_closed(&mut partial).await;
    // A whole preface and SETTINGS, then no request: the same deadline.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(H2_PREFACE).await.unwrap();
    read_until_closed(&mut idle).await;
    let series = r#"gpumesh_gateway_connections_timed_out_total{phase="head"}"#;
    assert_eq!(metric(&gw, series).await, 2.0);
}

#[tokio::test]
async fn an_h2_session_idle_after_its_request_is_closed() {
    let gw = start_gateway(Config {
        idle_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut session = TcpStream::connect(gw.addr).await.unwrap();
    session.write_all(H2_PREFACE).await.unwrap();
    session.write_all(H2_GET).await.unwrap();
    let (got, _) = read_until_closed(&mut session).await;
    // A HEADERS frame (type 1) on stream 1 came back before the close.
    let answered = got
        .windows(9)
        .any(|f| f[3] == 0x01 && f[5..9] == [0, 0, 0, 1]);
    assert!(answered, "the request was answered: {got:?}");
    let series = r#"gpumesh_gateway_connections_timed_out_total{phase="idle"}"#;
    assert_eq!(metric(&gw, series).await, 1.0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let gw = start_gateway(Config {
        idle_timeout: Duration::from_millis(500),
        ..config()
    })
    .await;
    let mut kept = TcpStream::connect(gw.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut kept).await;
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    let series = r#"gpumesh_gateway_connections_timed_out_total{phase="idle"}"#;
    assert_eq!(metric(&gw, series).await, 1.0);
}

/// Sends a POST head announcing 100 bytes of body, 5 of them, then stalls.
async fn stalled_post(gw: &RunningGateway, path: &str) -> String {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"a\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (got, _) = read_until_closed(&mut stream).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_on_every_path() {
    let gw = start_gateway(Config {
        body_read_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let (worker, _stop) = start_worker("w1").await;
    let record = support::record("w1", "llm", &format!("http://{worker}"));
    support::upsert(&gw.state, record, Source::Registry).unwrap();
    // The registry reads its body before the token check; the forwarder streams or
    // buffers it. Both are cut, and the client is told why.
    for path in ["/api/workers/register", "/api/service/llm/echo/x"] {
        let answer = stalled_post(&gw, path).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.contains(r#""code":"request_body_timeout""#),
            "{answer}"
        );
        assert!(answer.contains(r#""fault":"client""#), "{answer}");
    }
    let series = "gpumesh_gateway_request_body_timeouts_total";
    assert_eq!(metric(&gw, series).await, 2.0);
}

#[tokio::test]
async fn connections_over_the_total_cap_are_closed_at_accept() {
    let gw = start_gateway(Config {
        max_connections: Some(2),
        ..config()
    })
    .await;
    let held = [
        TcpStream::connect(gw.addr).await.unwrap(),
        TcpStream::connect(gw.addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    let (got, took) = read_until_closed(&mut third).await;
    assert!(got.is_empty());
    // Long before any deadline (30 s) could have closed it.
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The places come back once the gateway sees the closes.
    drop(held);
    let series = r#"gpumesh_gateway_connections_refused_total{reason="total_cap"}"#;
    assert!(metric(&gw, series).await >= 1.0);
    // The metrics request itself is the one connection open.
    assert_eq!(metric(&gw, "gpumesh_gateway_connections_open").await, 1.0);
}

#[tokio::test]
async fn one_client_cannot_hold_more_than_its_share() {
    let gw = start_gateway(Config {
        max_connections_per_ip: 1,
        ..config()
    })
    .await;
    let held = TcpStream::connect(gw.addr).await.unwrap();
    let mut second = TcpStream::connect(gw.addr).await.unwrap();
    let (got, took) = read_until_closed(&mut second).await;
    assert!(got.is_empty());
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(held);
    let series = r#"gpumesh_gateway_connections_refused_total{reason="per_client_cap"}"#;
    assert!(metric(&gw, series).await >= 1.0);
}
