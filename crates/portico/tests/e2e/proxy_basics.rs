//! End-to-end basics: proxying over HTTP/1.1 and h2c, forwarding headers, local replies.

use crate::common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_http1_and_h2c_with_forwarding_headers() {
    let up = Upstream::start("a").await;
    let p = Portico::start(&cfg::mapping("quote").prefix("/quote/").service(&up).build()).await;

    let r = get(&p.url("/quote/x?y=1"), &[("x-forwarded-for", "10.1.1.1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream a");
    let seen = up.last();
    assert_eq!(seen.uri, "/quote/x?y=1");
    assert_eq!(seen.headers["x-forwarded-for"], "10.1.1.1, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["host"], format!("127.0.0.1:{}", p.port));
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(seen.headers.contains_key("x-portico-expected-timeout-ms"));

    // h2c prior knowledge downstream, HTTP/1.1 upstream.
    let r = send(request("GET", &p.url("/quote/h2"), &[], ""), true)
        .await
        .expect("h2c");
    assert_eq!(r.status, 200);
    assert_eq!(up.last().uri, "/quote/h2");
    assert_eq!(up.last().version, http::Version::HTTP_11);

    // No route: 404 with a one-line body, flag NR in the access log.
    let r = get(&p.url("/nothing"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route\n");
    let log = p.wait_log_lines(3).await;
    let nr = log
        .iter()
        .find(|l| l["path"] == "/nothing")
        .expect("log line");
    assert_eq!(nr["flags"], "NR");
    assert_eq!(nr["status"], 404);
    let ok = log
        .iter()
        .find(|l| l["path"] == "/quote/x?y=1")
        .expect("log line");
    assert_eq!(ok["route"], "quote");
    assert_eq!(ok["upstream"], up.addr.to_string());
    assert_eq!(ok["upstream_addr"], up.addr.to_string());
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["client"], "127.0.0.1");
    assert_eq!(ok["bytes_sent"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_by_scheme_and_by_grpc_flag() {
    let up = Upstream::start("h2").await;
    let p = Portico::start(&cfg::docs(&[
        cfg::mapping("h2")
            .prefix("/h2/")
            .service(format!("h2c://{}", up.addr)),
        cfg::mapping("g").prefix("/g/").service(&up).grpc(true),
    ]))
    .await;
    // HTTP/1.1 downstream -> HTTP/2 upstream.
    for path in ["/h2/a", "/g/b"] {
        let r = get(&p.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(up.last().version, http::Version::HTTP_2);
        assert_eq!(
            up.last()
                .uri
                .rsplit_once(&format!("{}", p.port))
                .map(|x| x.1)
                .unwrap_or(&up.last().uri),
            path
        );
    }
    // Many requests share few upstream connections (multiplexed).
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = p.url(&format!("/h2/{i}"));
        tasks.push(tokio::spawn(async move {
            http_get(&url, &[]).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), Ok(200));
    }
}

/// An upstream that counts the connections it accepts, records request headers, and answers
/// with hop-by-hop headers of its own (`connection: x-up-hop`, `x-up-hop`, `keep-alive`).
async fn hop_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen: std::sync::Arc<std::sync::Mutex<Vec<http::HeaderMap>>> = Default::default();
    let (c2, s2) = (conns.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().expect("lock").push(req.headers().clone());
                        async move {
                            let r = http::Response::builder()
                                .header("connection", "x-up-hop")
                                .header("x-up-hop", "secret")
                                .header("keep-alive", "timeout=5")
                                .header("x-up-keep", "yes")
                                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, conns, seen)
}

/// Hop-by-hop headers are dropped both ways (those named by `connection` too); a client's
/// `x-request-id` is kept and its `x-forwarded-proto` overwritten; upstream connections are
/// pooled and reused across requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_request_id_and_pooled_upstream_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, conns, seen) = hop_upstream().await;
    let p = Portico::start(&cfg::catch_all("hop", addr).build()).await;

    // A raw request, so the client library adds or drops nothing.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect("connect");
    s.write_all(
        b"GET /hop HTTP/1.1\r\nhost: example.test\r\nconnection: keep-alive, x-foo\r\nx-foo: drop-me\r\n\
          keep-alive: timeout=300\r\nproxy-connection: keep-alive\r\nx-request-id: client-id-1\r\n\
          x-forwarded-proto: https\r\nx-kept: yes\r\n\r\n",
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nx-up-keep: yes"), "{head}");
    for gone in ["x-up-hop", "keep-alive:"] {
        assert!(!head.contains(gone), "response kept {gone}: {head}");
    }

    let h = seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("upstream saw the request");
    for gone in ["x-foo", "keep-alive", "proxy-connection"] {
        assert!(!h.contains_key(gone), "upstream got {gone}: {h:?}");
    }
    if let Some(c) = h.get("connection") {
        assert!(!c.to_str().unwrap_or("").contains("x-foo"), "{h:?}");
    }
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(
        h["x-forwarded-proto"], "http",
        "a client's value is overwritten"
    );

    // Pooling: 30 more requests reuse the upstream connections instead of opening one each
    // (at most one per worker, and the raw connection's).
    for i in 0..30 {
        let r = get(&p.url(&format!("/pool/{i}")), &[]).await;
        assert_eq!(r.status, 200);
    }
    let opened = conns.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(seen.lock().expect("lock").len(), 31);
    assert!(opened <= 3, "{opened} upstream connections for 31 requests");
}
