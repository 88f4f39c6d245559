//! Limits on downstream input (issue 9, reference §5) and the overload manager, through the real
//! binary: request body size per route (413), URI length (414), header count and size (431, on
//! HTTP/1 and HTTP/2), per-listener connection cap, HTTP/2 concurrent streams, header read and
//! body idle timeouts (slowloris, slow POST → 408 SI), and load shedding on connection count and
//! memory, with its metrics and its recovery.

use crate::common;
use common::*;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn catch_all(up: &Upstream) -> String {
    cfg::catch_all("all", up).build()
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads one HTTP/1.1 response (head, then a `content-length` body). `None` when nothing
/// arrived within `limit` (or the connection closed without a byte).
async fn read_response(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return Some(text);
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) | Ok(Ok(0)) | Ok(Err(_)) => {
                return (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned());
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the peer closes the connection within `limit` (bytes before the close are skipped).
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// Polls `/metrics` until `series` satisfies `want` (5 s at most); returns its last value.
async fn wait_metric(p: &Portico, series: &str, want: impl Fn(f64) -> bool) -> f64 {
    let mut last = f64::NAN;
    eventually(Duration::from_secs(5), async || {
        last = metric(p, series).await.unwrap_or(f64::NAN);
        want(last)
    })
    .await;
    last
}

/// The access-log line with `status`, polled for (the writer is asynchronous).
async fn log_line_with_status(p: &Portico, status: u16) -> serde_json::Value {
    let found = eventually(Duration::from_secs(5), async || {
        p.access_log().iter().any(|l| l["status"] == status)
    })
    .await;
    let lines = p.access_log();
    assert!(found, "no access log line with status {status}: {lines:?}");
    lines
        .into_iter()
        .find(|l| l["status"] == status)
        .unwrap_or_default()
}

// ---------------------------------------------------------------- body size (413)

fn body_limit_docs(up: &Upstream) -> String {
    cfg::docs(&[
        cfg::mapping("small")
            .prefix("/small/")
            .service(up)
            .set("max_request_body_bytes", 1000),
        cfg::mapping("small-retry")
            .prefix("/retry/")
            .service(up)
            .set("max_request_body_bytes", 1000)
            .retry_policy("{ retry_on: 5xx, num_retries: 1 }"),
        cfg::catch_all("free", up),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_over_the_route_limit_gets_413_before_the_upstream() {
    let up = Upstream::start("up").await;
    let p = Portico::start(&body_limit_docs(&up)).await;
    let big = "x".repeat(1001);
    for (path, h2) in [("/small/a", false), ("/retry/a", false), ("/small/b", true)] {
        let r = send(request("POST", &p.url(path), &[], big.clone()), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 413, "{path} h2={h2}: {}", r.text());
        assert_eq!(r.text(), "request body too large\n");
    }
    assert_eq!(up.count(), 0, "a body over the limit reached the upstream");
    // At the limit, and on a route without one, bodies pass.
    let ok = post(&p.url("/small/ok"), &"x".repeat(1000)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(up.last().body.len(), 1000);
    let free = post(&p.url("/free"), &"x".repeat(100_000)).await;
    assert_eq!(free.status, 200);
    assert_eq!(up.last().body.len(), 100_000);
    let line = log_line_with_status(&p, 413).await;
    assert_eq!(line["flags"], "DPE", "{line}");
    assert_eq!(line["route"], "small", "{line}");
}

/// Sends a chunked POST in two 800-byte chunks (over a 1000-byte limit), the second after the
/// first reached Portico, and returns the reply.
async fn chunked_over_limit(port: u16, path: &str) -> String {
    let mut s = connect(port).await;
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let chunk = format!("320\r\n{}\r\n", "y".repeat(800));
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(chunk.as_bytes()).await.expect("write");
    s.flush().await.expect("flush");
    // No signal tells when Portico has read the first chunk: a short pause.
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The connection may already be closed by the 413; a failed write is fine.
    let _ = s.write_all(chunk.as_bytes()).await;
    let _ = s.write_all(b"0\r\n\r\n").await;
    read_response(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chunked_body_over_the_limit_gets_413_and_the_upstream_request_is_aborted() {
    let up = Upstream::start("up").await;
    let p = Portico::start(&body_limit_docs(&up)).await;
    // Streamed to the upstream (no retry policy), and buffered for replay (retry policy).
    for path in ["/small/chunked", "/retry/chunked"] {
        let reply = chunked_over_limit(p.port, path).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{path}: {reply:?}");
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{reply:?}"
        );
    }
    // The upstream may have seen the start of the streamed request, never a whole body.
    for s in up.seen.lock().expect("lock").iter() {
        assert!(
            s.body.len() < 1600,
            "the upstream got the whole body: {s:?}"
        );
    }
    // A chunked body within the limit passes.
    let mut s = connect(p.port).await;
    s.write_all(b"POST /small/fine HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .await
        .expect("write");
    let reply = read_response(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_eq!(up.last().body, "hello");
    let log = p.wait_log_lines(3).await;
    let cut: Vec<_> = log.iter().filter(|l| l["status"] == 413).collect();
    assert_eq!(cut.len(), 2, "{log:?}");
    assert!(cut.iter().all(|l| l["flags"] == "DPE"), "{cut:?}");
}

// ---------------------------------------------------------------- URI (414), headers (431)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_over_the_listener_limit_gets_414() {
    let up = Upstream::start("up").await;
    let small = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("small", small, "HTTP", "max_uri_bytes: 100"),
        &catch_all(&up),
    )
    .await;
    // Default listener: 8 KiB.
    let long = format!("/{}", "a".repeat(8192));
    let r = get(&p.url(&long), &[]).await;
    assert_eq!(r.status, 414, "{}", r.text());
    let fits = format!("/{}", "a".repeat(8191));
    assert_eq!(get(&p.url(&fits), &[]).await.status, 200);
    // Configured: 100 bytes, query included; on HTTP/2 too.
    let url = |path: &str| format!("http://127.0.0.1:{small}{path}");
    let over = format!("/q?{}", "b".repeat(98));
    for h2 in [false, true] {
        let r = send(request("GET", &url(&over), &[], ""), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 414, "h2={h2}");
    }
    let at = format!("/q?{}", "b".repeat(97));
    assert_eq!(get(&url(&at), &[]).await.status, 200);
    assert!(
        up.seen
            .lock()
            .expect("lock")
            .iter()
            .all(|s| s.uri.len() <= 8192),
        "a URI over the limit reached the upstream"
    );
    let line = log_line_with_status(&p, 414).await;
    assert_eq!(line["flags"], "DPE", "{line}");
}

fn headers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_100_headers_get_431_on_http1_and_http2() {
    // Answered by Portico itself: a test upstream (hyper) has its own 100-field limit, and
    // Portico adds x-forwarded-* and x-request-id.
    let up = Upstream::start("up").await;
    let p = Portico::start(
        &cfg::mapping("direct")
            .prefix("/")
            .raw("direct_response", "{ status: 200, body: ok }")
            .build(),
    )
    .await;
    // HTTP/1.1, raw: Host plus 99 = 100 fields pass; Host plus 100 = 101 fields get 431.
    for (extra, want) in [(99, "HTTP/1.1 200"), (100, "HTTP/1.1 431")] {
        let mut req = String::from("GET /h1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        // `Connection` counts too.
        for (k, v) in headers(extra - 1) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut s = connect(p.port).await;
        s.write_all(req.as_bytes()).await.expect("write");
        let reply = read_response(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        assert!(reply.starts_with(want), "{} fields: {reply:?}", extra + 1);
    }
    // HTTP/2 (h2c): 100 regular fields pass, 101 get 431.
    for (n, want) in [(100, 200), (101, 431)] {
        let hs = headers(n);
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = send(request("GET", &p.url("/h2"), &hs, ""), true)
            .await
            .expect("h2 request");
        assert_eq!(r.status, want, "{n} fields over h2: {}", r.text());
    }
    assert_eq!(up.count(), 0);
    let line = log_line_with_status(&p, 431).await;
    assert_eq!(line["flags"], "DPE", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_header_size_and_count_limits_apply() {
    let up = Upstream::start("up").await;
    let tight = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc(
            "tight",
            tight,
            "HTTP",
            "max_request_headers_kb: 8, max_headers_count: 10",
        ),
        &catch_all(&up),
    )
    .await;
    let url = format!("http://127.0.0.1:{tight}/x");
    let big = "z".repeat(8 * 1024);
    let small = "z".repeat(6 * 1024);
    for h2 in [false, true] {
        let r = send(request("GET", &url, &[("x-big", &big)], ""), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 431, "8 KiB header value, h2={h2}");
        let r = send(request("GET", &url, &[("x-big", &small)], ""), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 200, "6 KiB header value, h2={h2}");
        let hs = headers(11);
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = send(request("GET", &url, &hs, ""), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 431, "11 headers, h2={h2}");
    }
    // The default listener keeps the defaults.
    let r = get(&p.url("/x"), &[("x-big", &big)]).await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------- connections and streams

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_max_connections_is_enforced() {
    let up = Upstream::start("up").await;
    let capped = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("capped", capped, "HTTP", "max_connections: 2"),
        &catch_all(&up),
    )
    .await;
    let gauge = "portico_downstream_connections{listener=\"capped\"}";
    let mut a = connect(capped).await;
    let b = connect(capped).await;
    assert_eq!(wait_metric(&p, gauge, |v| v == 2.0).await, 2.0);
    // The third is accepted and closed at once.
    let mut c = connect(capped).await;
    let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut c, Duration::from_secs(3)).await,
        "a connection over max_connections was kept open"
    );
    // The first two are served.
    a.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let reply = read_response(&mut a, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    // A slot frees up: new connections are served again.
    drop(b);
    assert_eq!(wait_metric(&p, gauge, |v| v == 1.0).await, 1.0);
    let r = get(&format!("http://127.0.0.1:{capped}/again"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_concurrent_streams_is_advertised_per_listener() {
    let up = Upstream::start("up").await;
    let few = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("few", few, "HTTP", "max_concurrent_streams: 3"),
        &catch_all(&up),
    )
    .await;
    for (port, want) in [(few, 3), (p.port, 100)] {
        let tcp = connect(port).await;
        let (_client, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let deadline = Instant::now() + Duration::from_secs(5);
        // Drive the connection until the server's SETTINGS have been applied.
        while conn.max_concurrent_send_streams() != want && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(20), &mut conn).await;
        }
        assert_eq!(conn.max_concurrent_send_streams(), want, "port {port}");
    }
}

/// The HTTP/2 flow-control windows a server advertises on a new connection: the stream window
/// (`SETTINGS_INITIAL_WINDOW_SIZE`, 65535 when absent) and the connection window (65535 plus
/// the WINDOW_UPDATEs on stream 0 that follow its SETTINGS).
async fn advertised_windows(port: u16) -> (u32, u32) {
    use common::h2raw::{self, *};
    let mut s = h2raw::open(port).await;
    let mut reader = h2raw::Reader::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream_window = None;
    let mut connection_window: u32 = 65_535;
    let mut increments = 0;
    // The server's first frames are its SETTINGS and, right after, the connection-window
    // WINDOW_UPDATE; read until both arrived (or a short quiet period after the SETTINGS, for
    // a server that sends no update).
    while let Some(f) = reader
        .next(
            &mut s,
            if stream_window.is_some() {
                deadline.min(Instant::now() + Duration::from_millis(500))
            } else {
                deadline
            },
        )
        .await
    {
        match f.ty {
            SETTINGS if f.flags & ACK == 0 => {
                let v = f
                    .settings()
                    .into_iter()
                    .find(|(id, _)| *id == SETTINGS_INITIAL_WINDOW_SIZE)
                    .map_or(65_535, |(_, v)| v);
                stream_window = Some(v);
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
            }
            WINDOW_UPDATE if f.stream == 0 => {
                connection_window += f.word(0).unwrap_or(0) & 0x7fff_ffff;
                increments += 1;
                if stream_window.is_some() {
                    break;
                }
            }
            _ => {}
        }
    }
    let stream_window = stream_window.expect("server SETTINGS");
    eprintln!(
        "port {port}: stream window {stream_window}, connection window {connection_window} ({increments} update(s))"
    );
    (stream_window, connection_window)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_flow_control_windows_are_configurable_per_listener() {
    let up = Upstream::start("up").await;
    let tuned = free_port();
    let minimal = free_port();
    let p = Portico::start_with_listeners(
        &format!(
            "{}---\n{}",
            listener_doc(
                "tuned",
                tuned,
                "HTTP",
                "initial_stream_window_bytes: 131072, initial_connection_window_bytes: 8388608"
            ),
            listener_doc(
                "minimal",
                minimal,
                "HTTP",
                "initial_stream_window_bytes: 65535, initial_connection_window_bytes: 65535"
            ),
        ),
        &catch_all(&up),
    )
    .await;
    // Defaults (1 MiB per stream, 2 MiB per connection), the tuned values, and the RFC minimum
    // (the protocol's initial windows, so nothing to announce beyond them).
    for (port, want) in [
        (p.port, (1_048_576, 2_097_152)),
        (tuned, (131_072, 8_388_608)),
        (minimal, (65_535, 65_535)),
    ] {
        assert_eq!(advertised_windows(port).await, want, "port {port}");
    }
    // A body larger than the tuned stream window still flows (the window is replenished).
    let big = "x".repeat(512 * 1024);
    let r = send(
        request(
            "POST",
            &format!("http://127.0.0.1:{tuned}/up"),
            &[],
            big.clone(),
        ),
        true,
    )
    .await
    .expect("h2c POST");
    assert_eq!(r.status, 200);
    assert_eq!(up.last().body.len(), big.len());
}

// ---------------------------------------------------------------- timeouts

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_post_gets_408_after_the_body_idle_timeout() {
    let up = Upstream::start("up").await;
    let slow = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("slow", slow, "HTTP", "request_body_idle_timeout_ms: 300"),
        &catch_all(&up),
    )
    .await;
    // Ten bytes of a hundred, then nothing.
    let mut s = connect(slow).await;
    let start = Instant::now();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let reply = read_response(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    let took = start.elapsed();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "408 after {took:?}"
    );
    let line = log_line_with_status(&p, 408).await;
    assert_eq!(line["flags"], "SI", "{line}");
    assert_eq!(line["bytes_received"], 10, "{line}");

    // A body that keeps coming (a byte every 100 ms, 1.5 s in all) is not cut.
    let mut s = connect(slow).await;
    s.write_all(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..15 {
        // Pacing (the point): one byte every 100 ms, under the 300 ms idle timeout.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b"t").await.expect("write");
    }
    let reply = read_response(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_eq!(up.last().body, "t".repeat(15));

    // gRPC client streams are exempt: a 600 ms pause is not cut.
    let mut s = connect(slow).await;
    s.write_all(b"POST /grpc.Svc/Up HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nContent-Length: 4\r\n\r\nab")
        .await
        .expect("write");
    // The pause is the point: longer than the idle timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(b"cd").await.expect("write");
    let reply = read_response(&mut s, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_eq!(up.last().body, "abcd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_read_timeout_is_configurable() {
    let up = Upstream::start("up").await;
    let quick = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("quick", quick, "HTTP", "header_read_timeout_ms: 300"),
        &catch_all(&up),
    )
    .await;
    let mut s = connect(quick).await;
    let start = Instant::now();
    s.write_all(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "an unfinished head outlived a 300 ms header read timeout by 5 s"
    );
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(up.count(), 0);
    assert_eq!(get(&p.url("/fine"), &[]).await.status, 200);
}

// ---------------------------------------------------------------- overload manager

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_connection_threshold_stops_accepting_then_recovers() {
    let up = Upstream::start("up").await;
    let p = Portico::start_with(&catch_all(&up), &["--overload-max-connections", "2"]).await;
    let get_on = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Two keep-alive connections, each served once.
    let mut a = connect(p.port).await;
    let mut b = connect(p.port).await;
    for s in [&mut a, &mut b] {
        s.write_all(get_on("/keep").as_bytes())
            .await
            .expect("write");
        let reply = read_response(s, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    }
    let state = "portico_overload_state{resource=\"connections\"}";
    assert_eq!(wait_metric(&p, state, |v| v == 1.0).await, 1.0);
    // A third connection is not accepted: its request waits.
    let mut c = connect(p.port).await;
    c.write_all(get_on("/third").as_bytes())
        .await
        .expect("write");
    assert_eq!(
        read_response(&mut c, Duration::from_millis(500)).await,
        None,
        "served over the connection threshold"
    );
    let stops = metric(
        &p,
        "portico_overload_actions_total{action=\"stop_accepting\"}",
    )
    .await;
    assert!(stops.is_some_and(|v| v >= 1.0), "{stops:?}");
    assert_eq!(
        metric(&p, "portico_downstream_connections_active").await,
        Some(2.0)
    );
    // One closes: the waiting connection is accepted and served.
    drop(a);
    let reply = read_response(&mut c, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert_eq!(up.last().uri, "/third");
    drop(b);
    assert_eq!(wait_metric(&p, state, |v| v == 0.0).await, 0.0);
}

/// Writes a `/proc/self/status`-like file saying RSS is `kb` (atomically).
fn write_rss(path: &std::path::Path, kb: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("Name:\tportico\nVmRSS:\t{kb} kB\n")).expect("write rss");
    std::fs::rename(&tmp, path).expect("rename rss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_memory_threshold_sheds_requests_and_closes_keepalives_then_recovers() {
    let up = Upstream::start("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rss = dir.path().join("status");
    write_rss(&rss, 10 * 1024);
    let rss_arg = rss.display().to_string();
    let p = Portico::start_with(
        &catch_all(&up),
        &[
            "--overload-max-memory-mb",
            "100",
            "--overload-rss-file",
            &rss_arg,
        ],
    )
    .await;
    let state = "portico_overload_state{resource=\"memory\"}";
    assert_eq!(
        wait_metric(&p, "portico_overload_memory_bytes", |v| v
            == 10.0 * 1024.0 * 1024.0)
        .await,
        10.0 * 1024.0 * 1024.0
    );
    assert_eq!(metric(&p, state).await, Some(0.0));
    // An idle keep-alive connection, served once.
    let mut idle = connect(p.port).await;
    idle.write_all(b"GET /before HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let reply = read_response(&mut idle, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let served = up.count();

    // Memory crosses the threshold.
    write_rss(&rss, 150 * 1024);
    assert_eq!(wait_metric(&p, state, |v| v == 1.0).await, 1.0);
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "the idle keep-alive connection was not closed under memory pressure"
    );
    for h2 in [false, true] {
        let r = send(request("GET", &p.url("/during"), &[], ""), h2)
            .await
            .expect("request");
        assert_eq!(r.status, 503, "h2={h2}");
        assert_eq!(r.header("x-portico-overloaded"), Some("true"));
        if !h2 {
            assert_eq!(r.header("connection"), Some("close"));
        }
    }
    assert_eq!(up.count(), served, "a shed request reached the upstream");
    let rejected = metric(
        &p,
        "portico_overload_actions_total{action=\"reject_request\"}",
    )
    .await;
    assert_eq!(rejected, Some(2.0));
    let closed = metric(
        &p,
        "portico_overload_actions_total{action=\"disable_keepalive\"}",
    )
    .await;
    assert!(closed.is_some_and(|v| v >= 1.0), "{closed:?}");
    let line = log_line_with_status(&p, 503).await;
    assert_eq!(line["flags"], "OM", "{line}");

    // Between 90% and 100% of the threshold: still shedding (hysteresis).
    write_rss(&rss, 95 * 1024);
    assert_eq!(
        wait_metric(&p, "portico_overload_memory_bytes", |v| v
            == 95.0 * 1024.0 * 1024.0)
        .await,
        95.0 * 1024.0 * 1024.0
    );
    assert_eq!(metric(&p, state).await, Some(1.0));
    // Below 90%: recovered.
    write_rss(&rss, 50 * 1024);
    assert_eq!(wait_metric(&p, state, |v| v == 0.0).await, 0.0);
    let r = get(&p.url("/after"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/after");
}
