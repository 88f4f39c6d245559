//! Hostile and malformed HTTP/1.1 input over a raw TCP connection (docs/reference.md §5): obs-fold,
//! bare LF, CL+TE together and differing Content-Lengths are rejected with 400 and the
//! connection closed; garbage gets 400 (or a close); the proxy keeps serving afterwards and the
//! upstream never sees the bad request.

use crate::common;
use common::*;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Raw {
    /// Everything the proxy sent back before closing (or before the read timeout).
    reply: String,
    /// Whether the proxy closed the connection (EOF or reset) within the timeout.
    closed: bool,
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes or 3 s pass.
async fn raw(port: u16, bytes: &[u8]) -> Raw {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Raw {
        reply: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// A proxy with one catch-all route to a recording upstream.
async fn setup() -> (Upstream, Portico) {
    let up = Upstream::start("up").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    ))
    .await;
    (up, p)
}

/// Sends `bytes`, asserts a 400 and a closed connection, that the upstream saw nothing, and that
/// the proxy still serves a normal request.
async fn assert_rejected(bytes: &[u8]) {
    let (up, p) = setup().await;
    let r = raw(p.port, bytes).await;
    eprintln!(
        "reply to {:?}: {:?} closed={}",
        String::from_utf8_lossy(bytes),
        r.reply,
        r.closed
    );
    assert!(
        r.reply.starts_with("HTTP/1.1 400"),
        "expected 400, got {:?} (closed={})",
        r.reply,
        r.closed
    );
    assert!(r.closed, "connection must be closed after a 400");
    assert_eq!(
        up.count(),
        0,
        "the upstream must not see a malformed request"
    );
    still_serving(&up, &p).await;
}

async fn still_serving(up: &Upstream, p: &Portico) {
    let r = get(&p.url("/after"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_raw_request_is_proxied() {
    // Control case: the raw client works.
    let (up, p) = setup().await;
    let r = raw(
        p.port,
        b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.reply.starts_with("HTTP/1.1 200"), "{:?}", r.reply);
    assert!(r.closed);
    assert_eq!(up.last().uri, "/ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_line_gets_400() {
    assert_rejected(b"HELLO WORLD THIS IS NOT HTTP\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_garbage_gets_400_or_close_and_proxy_survives() {
    let (up, p) = setup().await;
    let r = raw(
        p.port,
        &[
            0x16, 0x03, 0x01, 0x00, 0xff, 0x01, 0x00, 0x00, 0x00, b'\r', b'\n',
        ],
    )
    .await;
    eprintln!("binary garbage: {:?} closed={}", r.reply, r.closed);
    assert!(
        r.reply.is_empty() || r.reply.starts_with("HTTP/1.1 400"),
        "{:?}",
        r.reply
    );
    assert!(r.closed);
    assert_eq!(up.count(), 0);
    still_serving(&up, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_gets_400() {
    assert_rejected(b"GET /bare HTTP/1.1\nHost: x\n\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_inside_headers_gets_400() {
    assert_rejected(b"GET /bare HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obs_fold_gets_400() {
    assert_rejected(b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_gets_400() {
    assert_rejected(
        b"POST /clte HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_content_lengths_get_400() {
    assert_rejected(
        b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_header_name_gets_400() {
    assert_rejected(b"GET /h HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431() {
    let (up, p) = setup().await;
    let mut req = String::from("GET /many HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        req.push_str(&format!("x-h{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let r = raw(p.port, req.as_bytes()).await;
    assert!(r.reply.starts_with("HTTP/1.1 431"), "{:?}", r.reply);
    assert_eq!(up.count(), 0);
    still_serving(&up, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (up, p) = setup().await;
    let big = "a".repeat(70 * 1024);
    let req = format!("GET /big HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\n\r\n");
    let r = raw(p.port, req.as_bytes()).await;
    assert!(r.reply.starts_with("HTTP/1.1 431"), "{:?}", r.reply);
    assert_eq!(up.count(), 0);
    still_serving(&up, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_gets_an_access_log_line_with_dpe() {
    let (up, p) = setup().await;
    let r = raw(
        p.port,
        b"GET /fold HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  b\r\n\r\n",
    )
    .await;
    assert!(r.reply.starts_with("HTTP/1.1 400"), "{:?}", r.reply);
    still_serving(&up, &p).await;
    let log = p.wait_log_lines(2).await;
    let dpe = log.iter().find(|l| l["status"] == 400);
    assert!(dpe.is_some(), "no access log line for the 400: {log:?}");
    assert_eq!(dpe.unwrap()["flags"], "DPE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_cr_in_header_gets_400() {
    assert_rejected(b"GET /cr HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_get_400() {
    // RFC 9112 §3.2: a request with more than one Host field line gets 400.
    assert_rejected(b"GET /hosts HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_not_ending_in_chunked_gets_400() {
    // RFC 9112 §6.3: a request whose final transfer coding is not chunked cannot be framed.
    assert_rejected(b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_size_gets_400() {
    let (up, p) = setup().await;
    let r = raw(
        p.port,
        b"POST /chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // The head is valid, so the request may already be on its way upstream when the body
    // turns out bad: the client gets 400 or the connection closed, never a 2xx.
    eprintln!("bad chunk: {:?} closed={}", r.reply, r.closed);
    assert!(!r.reply.starts_with("HTTP/1.1 2"), "{:?}", r.reply);
    assert!(r.closed);
    if let Some(s) = up.seen.lock().unwrap().iter().find(|s| s.uri == "/chunk") {
        assert!(
            s.body.is_empty() || s.body != "hello",
            "a bad chunk reached the upstream whole"
        );
    }
    still_serving(&up, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_request_after_cl_te_never_reaches_upstream() {
    // The classic CL.TE desync: a proxy using Content-Length forwards the smuggled GET as body,
    // one using chunked sees it as a second request. Either way it must never reach upstream.
    let (up, p) = setup().await;
    let r = raw(
        p.port,
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nX: y\r\n\r\n",
    )
    .await;
    eprintln!("CL.TE smuggling: {:?} closed={}", r.reply, r.closed);
    // Grace period: what is checked is that no smuggled request reaches the upstream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let uris: Vec<String> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.uri.clone())
        .collect();
    assert!(
        !uris.iter().any(|u| u == "/smuggled"),
        "smuggled request reached the upstream: {uris:?}"
    );
    assert!(r.closed);
    still_serving(&up, &p).await;
}

/// Opens a connection, sends `bytes` and waits up to `limit` for the proxy to close it.
/// Returns the reply and the time it took, or None if the connection was still open.
async fn closes_within(
    port: u16,
    bytes: &'static [u8],
    limit: Duration,
) -> Option<(String, Duration)> {
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(start + limit, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&out).into_owned(), start.elapsed()));
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn incomplete_head_is_closed_by_the_header_read_timeout() {
    // reference §5: header read timeout 10 s. A client that never finishes its head (slowloris)
    // is cut off (408 or a plain close) soon after; allow 13 s.
    let (up, p) = setup().await;
    let limit = Duration::from_secs(13);
    let (a, b) = tokio::join!(
        closes_within(p.port, b"GET /slow HTTP/1.1\r\nHost: x\r\n", limit),
        closes_within(p.port, b"HELLO WORLD\r\n", limit),
    );
    eprintln!("partial head: {a:?}\nshort garbage: {b:?}");
    assert_eq!(up.count(), 0);
    still_serving(&up, &p).await;
    let a = a.expect("a partial request head kept the connection open for 13 s");
    assert!(a.0.is_empty() || a.0.starts_with("HTTP/1.1 408"), "{a:?}");
    let b = b.expect(
        "13 bytes of garbage (shorter than the h2 preface) kept the connection open for 13 s",
    );
    assert!(b.0.is_empty() || b.0.starts_with("HTTP/1.1 4"), "{b:?}");
}
