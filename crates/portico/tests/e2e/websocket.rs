//! WebSocket (HTTP/1.1 Upgrade) through the real binary: an echo round trip on a Mapping with
//! `allow_upgrade: [websocket]`, 403 on one without it, and the route's idle timeout closing
//! an idle tunnel.

use crate::common;
use common::*;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn mapping(name: &str, prefix: &str, addr: SocketAddr, extra: &str) -> String {
    cfg::mapping(name)
        .prefix(prefix)
        .service(addr)
        .flow_fields(extra)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_round_trip() {
    let (addr, _) = echo_server().await;
    let p = Portico::start(&mapping("ws", "/ws/", addr, ", allow_upgrade: [websocket]")).await;
    let mut ws = ws_connect(p.port, "/ws/echo").await.expect("upgrade");
    ws.send(Message::text("hello through portico"))
        .await
        .expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("message");
    assert_eq!(got, Message::text("hello through portico"));
    // A larger binary message, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("message");
    assert_eq!(got.into_data().as_ref(), big.as_slice());
    ws.close(None).await.expect("close");

    // Plain requests on the same route still work, and the 101 is in the access log.
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["status"], 101, "{log:?}");
    assert_eq!(log[0]["route"], "ws");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refused_403_without_allow_upgrade() {
    let (addr, accepted) = echo_server().await;
    let p = Portico::start(&mapping("plain", "/plain/", addr, "")).await;
    match ws_connect(p.port, "/plain/echo").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
        }
        Err(e) => panic!("expected an HTTP 403, got {e:?}"),
        Ok(_) => panic!("upgrade was allowed"),
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
    // `Upgrade: h2c` (curl --http2 on http://) is not an upgrade Portico refuses: it answers
    // as plain HTTP/1.1.
    let up = Upstream::start("plain").await;
    let p2 = Portico::start(&cfg::catch_all("p", &up).build()).await;
    let r = get(
        &p2.url("/x"),
        &[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!up.last().headers.contains_key("upgrade"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_an_idle_tunnel() {
    let (addr, _) = echo_server().await;
    let p = Portico::start(&mapping(
        "ws",
        "/ws/",
        addr,
        ", allow_upgrade: [websocket], idle_timeout_ms: 400",
    ))
    .await;
    let mut ws = ws_connect(p.port, "/ws/idle").await.expect("upgrade");
    // Activity keeps it open past the idle timeout...
    for i in 0..4 {
        ws.send(Message::text(format!("ping {i}")))
            .await
            .expect("send");
        let got = ws.next().await.expect("open").expect("message");
        assert_eq!(got, Message::text(format!("ping {i}")));
        // Pacing (the point): activity spaced under the idle timeout.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...and silence closes it.
    let start = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("tunnel closed in time");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
}
