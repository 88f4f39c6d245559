//! Edge framing and Host rules over raw sockets (issue 14): a client's malformed request body
//! is the client's fault (400 DPE, connection closed, the upstream's health untouched), and
//! the Host rules of RFC 9112 §3.2 / RFC 9110 §7.2 (Host required on HTTP/1.1, no userinfo,
//! `Connection` never strips Host), canonical `Content-Length`, `chunked` applied once.

use crate::common;
use common::*;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `bytes` on a fresh connection and reads until the proxy closes or 5 s pass:
/// (what came back, whether the proxy closed).
async fn raw(port: u16, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn status_of(reply: &str) -> Option<&str> {
    reply.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3))
}

/// Access log lines for `path`, waiting until there are at least `n` of them.
async fn log_lines_for(p: &Portico, path: &str, n: usize) -> Vec<serde_json::Value> {
    let lines = || -> Vec<_> {
        p.access_log()
            .into_iter()
            .filter(|l| l["path"] == path)
            .collect()
    };
    eventually(Duration::from_secs(10), async || lines().len() >= n).await;
    lines()
}

/// The bad chunk-size lines of issue 14, each followed by a chunk and the last chunk.
const BAD_CHUNKS: &[&str] = &[
    "ZZZ\r\nhello\r\n",
    "0x5\r\nhello\r\n",
    "0_2e\r\nhello\r\n",
    "FFFFFFFFFFFFFFFFFF\r\nhello\r\n",
    " 5\r\nhello\r\n",
    "  5\r\nhello\r\n",
    "5\rX\r\nhello\r\n",
    "5\nhello\r\n",
    "5;a\rb\r\nhello\r\n",
    "5\r\nhelloXY\r\n",
];

fn chunked_post(path: &str, chunks: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\n\r\n"
    )
    .into_bytes()
}

/// Two recording endpoints in one Upstream whose outlier detection ejects after three
/// gateway failures; `/p1` streams bodies, `/r1` has a retry policy (so bodies are buffered
/// for replay first), `/t1` has a 300 ms timeout.
async fn pool() -> (Upstream, Upstream, Portico) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = Portico::start(&cfg::docs(&[
        cfg::upstream("pool").endpoints(&[&a, &b]).raw(
            "outlier_detection",
            "{ consecutive_5xx: 3, consecutive_gateway_failure: 3, base_ejection_time_ms: 60000, max_ejection_percent: 100 }",
        ),
        cfg::mapping("retried")
            .prefix("/r1")
            .service("pool")
            .retry_policy(r#"{ retry_on: "5xx,reset,connect-failure", num_retries: 3 }"#),
        cfg::mapping("short").prefix("/t1").service("pool").timeout_ms(300),
        cfg::catch_all("streamed", "pool"),
    ]))
    .await;
    (a, b, p)
}

async fn assert_pool_healthy(p: &Portico) {
    let states = endpoint_states(p, "pool").await;
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.iter().all(|(_, s, e)| s == "healthy" && *e == 0),
        "a client's bad bodies changed the upstream's state: {states:?}"
    );
    assert_eq!(
        metric(p, "portico_outlier_ejections_total{upstream=\"pool\"}").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_the_clients_fault() {
    let (a, b, p) = pool().await;
    let mut sent = 0;
    // Each input twice, on both paths: every endpoint gets far more than three in a row.
    for path in ["/p1", "/r1"] {
        for round in 0..2 {
            for chunks in BAD_CHUNKS {
                let (reply, closed) = raw(p.port, &chunked_post(path, chunks)).await;
                sent += 1;
                assert_eq!(
                    status_of(&reply),
                    Some("400"),
                    "{path} {chunks:?} (round {round}): {reply:?}"
                );
                assert!(closed, "{path} {chunks:?}: the connection stayed open");
                assert!(
                    !reply.contains("\r\n\r\nHTTP/"),
                    "{path} {chunks:?}: a second answer: {reply:?}"
                );
            }
        }
        let lines = log_lines_for(&p, path, BAD_CHUNKS.len() * 2).await;
        assert_eq!(lines.len(), BAD_CHUNKS.len() * 2, "{lines:?}");
        for l in &lines {
            assert_eq!(l["status"], 400, "{l}");
            assert_eq!(l["flags"], "DPE", "{l}");
            assert_eq!(l["method"], "POST", "{l}");
            // Never retried.
            assert!(l["attempts"].as_u64().unwrap_or(0) <= 1, "{l}");
        }
    }
    eprintln!(
        "{sent} bad bodies; upstreams saw {} + {} requests",
        a.count(),
        b.count()
    );
    // No request the upstream saw has the bad body in full (it may have seen the head).
    for up in [&a, &b] {
        for s in up.seen.lock().expect("lock").iter() {
            assert_ne!(&s.body[..], b"hello", "{s:?}");
        }
    }
    assert_pool_healthy(&p).await;
    assert_eq!(
        metric(
            &p,
            "portico_requests_total{route=\"streamed\",code=\"4xx\"}"
        )
        .await,
        Some(BAD_CHUNKS.len() as f64 * 2.0)
    );
    assert_eq!(
        metric(&p, "portico_retries_total{route=\"retried\"}").await,
        Some(0.0)
    );
    // And good requests still go through, to both endpoints.
    for path in ["/p1", "/r1", "/p1", "/r1"] {
        let (reply, _) = raw(
            p.port,
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status_of(&reply), Some("200"), "{reply:?}");
    }
    let good: Vec<_> = [&a, &b]
        .iter()
        .flat_map(|u| u.seen.lock().expect("lock").clone())
        .filter(|s| &s.body[..] == b"hello")
        .collect();
    assert_eq!(good.len(), 4);
    assert!(p.stderr().find("panicked").is_none(), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_body_is_not_an_upstream_failure() {
    let (_a, _b, p) = pool().await;
    for i in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", p.port))
            .await
            .expect("connect");
        let path = if i % 2 == 0 { "/p1" } else { "/r1" };
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
        // Give the head time to be forwarded (streamed path), then leave. (No signal: the
        // upstream records a request only once its body is complete.)
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    let lines = log_lines_for(&p, "/p1", 4).await;
    let mut all = lines.clone();
    all.extend(log_lines_for(&p, "/r1", 4).await);
    assert_eq!(all.len(), 8, "{all:?}");
    for l in &all {
        assert_eq!(l["flags"], "DC", "{l}");
    }
    assert_pool_healthy(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reached_while_the_client_still_sends_is_not_an_upstream_failure() {
    let (_a, _b, p) = pool().await;
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(("127.0.0.1", p.port))
            .await
            .expect("connect");
        // Half a chunk, then nothing: the route's deadline passes with the body unfinished.
        s.write_all(b"POST /t1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
            .await
            .expect("write");
        held.push(s);
    }
    let lines = log_lines_for(&p, "/t1", 8).await;
    assert_eq!(lines.len(), 8, "{lines:?}");
    for l in &lines {
        assert_eq!(l["flags"], "UT", "{l}");
    }
    assert_pool_healthy(&p).await;
    drop(held);
}

/// One catch-all route to a recording upstream.
async fn single() -> (Upstream, Portico) {
    let up = Upstream::start("up").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    ))
    .await;
    (up, p)
}

/// Sends `bytes`; asserts 400, a closed connection, a DPE log line, and that the upstream saw
/// nothing.
async fn assert_refused(p: &Portico, up: &Upstream, what: &str, bytes: &[u8]) {
    let before = up.count();
    let lines_before = p.access_log().len();
    let (reply, closed) = raw(p.port, bytes).await;
    assert_eq!(status_of(&reply), Some("400"), "{what}: {reply:?}");
    assert!(closed, "{what}: the connection stayed open");
    let lines = p.wait_log_lines(lines_before + 1).await;
    let last = lines.last().expect("a log line");
    assert_eq!(last["status"], 400, "{what}: {last}");
    assert_eq!(last["flags"], "DPE", "{what}: {last}");
    // Give a request that got through time to arrive. (A grace period, not a wait: what is
    // checked is that nothing arrives.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(up.count(), before, "{what}: the upstream saw it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_rules() {
    let (up, p) = single().await;
    let cases: &[(&str, &[u8])] = &[
        ("no Host", b"GET /p1 HTTP/1.1\r\nX: y\r\n\r\n"),
        (
            "absolute-form, no Host",
            b"GET http://a.example/p1 HTTP/1.1\r\nX: y\r\n\r\n",
        ),
        (
            "userinfo in the target",
            b"GET http://a@evil.example/p1 HTTP/1.1\r\nHost: a\r\n\r\n",
        ),
        (
            "userinfo and password in the target",
            b"GET http://u:p@evil.example/p1 HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        ),
        (
            "userinfo in Host",
            b"GET /p1 HTTP/1.1\r\nHost: a@evil.example\r\n\r\n",
        ),
        ("path in Host", b"GET /p1 HTTP/1.1\r\nHost: a/b\r\n\r\n"),
        ("bad port in Host", b"GET /p1 HTTP/1.1\r\nHost: a:8x\r\n\r\n"),
        (
            "chunked twice in one line",
            b"POST /p1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "chunked on two lines",
            b"POST /p1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        assert_refused(&p, &up, what, bytes).await;
    }

    // HTTP/1.0 may omit Host.
    let (reply, _) = raw(p.port, b"GET /p1 HTTP/1.0\r\n\r\n").await;
    assert_eq!(reply.get(9..12), Some("200"), "{reply:?}");
    assert_eq!(up.last().uri, "/p1");

    // `Connection: host` does not remove Host (nor does it remove Content-Length).
    let (reply, _) = raw(
        p.port,
        b"POST /p1 HTTP/1.1\r\nHost: keep.example\r\nConnection: close, host, content-length, x-gone\r\nX-Gone: 1\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let seen = up.last();
    assert_eq!(seen.headers["host"], "keep.example");
    assert_eq!(seen.headers["content-length"], "5");
    assert!(!seen.headers.contains_key("x-gone"));
    assert_eq!(&seen.body[..], b"hello");

    // Content-Length in canonical form.
    let (reply, _) = raw(
        p.port,
        b"POST /p1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 010\r\n\r\n0123456789",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let seen = up.last();
    let cl: Vec<_> = seen.headers.get_all("content-length").iter().collect();
    assert_eq!(cl, ["10"]);
    assert_eq!(&seen.body[..], b"0123456789");

    // A coding before chunked is still accepted.
    let (reply, _) = raw(
        p.port,
        b"POST /p1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(p.stderr().find("panicked").is_none(), "{}", p.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_connection_header_never_strips_content_length() {
    // An upstream naming content-length in its Connection header: the HEAD answer keeps
    // its size (it has no body to take it from).
    let up = Upstream::with(
        "up",
        std::sync::Arc::new(|_s: &Seen| {
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            r.headers_mut()
                .insert("connection", "content-length, x-hop".parse().expect("v"));
            r.headers_mut()
                .insert("content-length", "42".parse().expect("v"));
            r.headers_mut().insert("x-hop", "1".parse().expect("v"));
            r
        }),
    )
    .await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    ))
    .await;
    let (reply, _) = raw(
        p.port,
        b"HEAD /p1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    let lower = reply.to_ascii_lowercase();
    assert!(lower.contains("content-length: 42\r\n"), "{reply:?}");
    assert!(!lower.contains("x-hop"), "{reply:?}");
}

/// The own HTTP/1.1 server: requests pipelined on one connection (with a `Content-Length`
/// body, a chunked body, a HEAD, a 204) are answered in order, each body reaching the upstream
/// whole; HEAD and 204 answers carry no body bytes; `Connection: close` on the last request
/// ends the connection after its answer, which says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_bodies_are_answered_in_order() {
    use bytes::Bytes;
    use http_body_util::Full;
    let echo: Behavior = std::sync::Arc::new(|s: &Seen| {
        let text = format!("[{} {}]", s.uri, String::from_utf8_lossy(&s.body));
        let mut r = http::Response::new(Full::new(Bytes::from(text)));
        if s.uri == "/nothing" {
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            *r.body_mut() = Full::new(Bytes::new());
        }
        r
    });
    let up = Upstream::with("echo", echo).await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    ))
    .await;
    let requests: &[&[u8]] = &[
        b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n2\r\n!!\r\n0\r\n\r\n",
        b"HEAD /three HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ];
    let (reply, closed) = raw(p.port, &requests.concat()).await;
    assert!(closed, "the connection stayed open: {reply:?}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 5, "{reply:?}");
    let at = |needle: &str| {
        reply
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in {reply:?}"))
    };
    let order = [
        at("[/one abc]"),
        at("[/two hello!!]"),
        at("HTTP/1.1 204"),
        at("[/four ]"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{reply:?}");
    assert!(
        !reply.contains("[/three"),
        "a HEAD answer carried a body: {reply:?}"
    );
    let last_head = &reply[reply.rfind("HTTP/1.1 ").unwrap_or(0)..];
    assert!(
        last_head.to_ascii_lowercase().contains("connection: close"),
        "{last_head:?}"
    );
    assert_eq!(up.count(), 5);
}

/// A request answered before its body was read (no route: 404) leaves the body unread: the
/// answer says `connection: close` and the connection closes, so nothing of the unread body is
/// ever taken for a next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_body_closes_the_connection() {
    let up = Upstream::start("up").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: only }}\nspec: {{ prefix: /only/, service: {} }}\n",
        up.addr
    ))
    .await;
    // The body (which looks like a request) is never sent as one: the head promises 40 bytes
    // and only the answer is awaited.
    let (reply, closed) = raw(
        p.port,
        b"POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\nGET /only/x HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), Some("404"), "{reply:?}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply:?}"
    );
    assert!(closed, "the connection stayed open: {reply:?}");
    assert_eq!(reply.matches("HTTP/1.1 ").count(), 1, "{reply:?}");
    assert_eq!(up.count(), 0);
}
