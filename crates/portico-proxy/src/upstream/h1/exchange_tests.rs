//! Exchanges over `tokio::io::duplex` against a scripted upstream.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body::Body;
use http_body_util::BodyExt;
use portico_config::snapshot::UpstreamProtocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::upstream::pool::{self, Conn, PoolKey};

fn pair(buf: usize) -> (H1Conn, DuplexStream) {
    let (a, b) = tokio::io::duplex(buf);
    (H1Conn::new(Box::new(a), None), b)
}

fn req(method: Method, path: &str, body: ReqBody) -> Request<ReqBody> {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = path.parse().unwrap_or_default();
    r.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("up"));
    r
}

/// Reads one request head from the upstream's side.
async fn read_head(s: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => got.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

async fn collect(body: H1Body) -> (Bytes, Option<HeaderMap>) {
    match body.collect().await {
        Ok(c) => {
            let t = c.trailers().cloned();
            (c.to_bytes(), t)
        }
        Err(e) => panic!("body failed: {e}"),
    }
}

fn key(port: u16) -> PoolKey {
    PoolKey {
        uid: 0xfeed,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn release(port: u16) -> Option<Release> {
    Some(Release {
        key: key(port),
        max_idle: 4,
        idle_timeout: Duration::from_secs(30),
    })
}

async fn checkout(port: u16) -> Option<H1Conn> {
    match pool::checkout(key(port), UpstreamProtocol::Http1, Duration::from_secs(1)).await {
        Some(Conn::H1(c)) => Some(c),
        _ => None,
    }
}

#[tokio::test]
async fn keep_alive_connection_goes_back_to_the_pool_and_is_reused() {
    let (conn, mut up) = pair(4096);
    let server = tokio::spawn(async move {
        let first = read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok")
            .await
            .ok();
        let second = read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await.ok();
        (first, second, up)
    });
    let resp = exchange(conn, req(Method::GET, "/a?q=1", ReqBody::Empty), release(1))
        .await
        .map_err(|f| f.error)
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-a"], "1");
    assert_eq!(resp.body().size_hint().exact(), Some(2));
    let (body, _) = collect(resp.into_body()).await;
    assert_eq!(body.as_ref(), b"ok");
    let conn = checkout(1).await.expect("pooled");
    assert!(conn.reused);
    let resp = exchange(conn, req(Method::DELETE, "/b", ReqBody::Empty), release(1))
        .await
        .map_err(|f| f.error)
        .expect("second response");
    assert_eq!(resp.status(), 204);
    assert!(resp.body().is_end_stream());
    let (first, second, _up) = server.await.expect("server");
    assert_eq!(first, "GET /a?q=1 HTTP/1.1\r\nhost: up\r\n\r\n");
    assert_eq!(second, "DELETE /b HTTP/1.1\r\nhost: up\r\n\r\n");
    // The 204 ended the body at once: the connection is back again.
    assert!(checkout(1).await.is_some());
}

#[tokio::test]
async fn close_delimited_body_ends_at_eof_and_is_not_pooled() {
    let (conn, mut up) = pair(4096);
    tokio::spawn(async move {
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\n\r\nhello, ").await.ok();
        up.write_all(b"world").await.ok();
    });
    let resp = exchange(conn, req(Method::GET, "/", ReqBody::Empty), release(2))
        .await
        .map_err(|f| f.error)
        .expect("response");
    let (body, _) = collect(resp.into_body()).await;
    assert_eq!(body.as_ref(), b"hello, world");
    assert!(checkout(2).await.is_none());
}

#[tokio::test]
async fn chunked_body_with_trailers_and_interim_100() {
    let (conn, mut up) = pair(4096);
    let server = tokio::spawn(async move {
        let head = read_head(&mut up).await;
        let mut body = [0u8; 5];
        up.read_exact(&mut body).await.ok();
        up.write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            .await
            .ok();
        up.write_all(b"2\r\nde\r\n0\r\nx-sum: 9\r\ncontent-length: 5\r\n\r\n")
            .await
            .ok();
        (head, body, up)
    });
    let mut r = req(
        Method::POST,
        "/up",
        ReqBody::Full(Some(Bytes::from_static(b"hello"))),
    );
    r.headers_mut()
        .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
    let resp = exchange(conn, r, release(3))
        .await
        .map_err(|f| f.error)
        .expect("response");
    assert_eq!(resp.status(), 200);
    let (body, trailers) = collect(resp.into_body()).await;
    assert_eq!(body.as_ref(), b"abcde");
    let trailers = trailers.expect("trailers");
    assert_eq!(trailers["x-sum"], "9");
    // A framing field may not come in trailers: dropped.
    assert!(!trailers.contains_key("content-length"));
    // The upstream side stays open: the connection is idle, not closed.
    let (head, sent, _up) = server.await.expect("server");
    assert!(head.contains("content-length: 5\r\n"), "{head}");
    assert_eq!(&sent, b"hello");
    assert!(checkout(3).await.is_some());
}

#[tokio::test]
async fn early_answer_while_the_body_is_unsent() {
    // A pipe smaller than the body: the upstream answers 413 after the head alone.
    let (conn, mut up) = pair(1024);
    tokio::spawn(async move {
        read_head(&mut up).await;
        up.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbig",
        )
        .await
        .ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    let big = Bytes::from(vec![b'x'; 256 * 1024]);
    let resp = exchange(
        conn,
        req(Method::PUT, "/f", ReqBody::Full(Some(big))),
        release(4),
    )
    .await
    .map_err(|f| f.error)
    .expect("early response");
    assert_eq!(resp.status(), 413);
    let (body, _) = collect(resp.into_body()).await;
    assert_eq!(body.as_ref(), b"big");
    assert!(checkout(4).await.is_none());
}

#[tokio::test]
async fn a_reused_connection_closed_before_any_answer_gives_the_request_back() {
    let (mut conn, mut up) = pair(4096);
    conn.reused = true;
    tokio::spawn(async move {
        read_head(&mut up).await;
        // Closed without a byte of answer.
    });
    let body = ReqBody::Full(Some(Bytes::from_static(b"again")));
    let f = match exchange(conn, req(Method::POST, "/r", body), None).await {
        Ok(_) => panic!("no answer expected"),
        Err(f) => f,
    };
    assert!(matches!(f.error, ExchangeError::Eof), "{}", f.error);
    let back = f.back.expect("request back");
    assert_eq!(back.uri().path(), "/r");
    let (body, _) = match back.into_body().collect().await {
        Ok(c) => (c.to_bytes(), ()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(body.as_ref(), b"again");

    // A fresh connection gives nothing back.
    let (conn, mut up) = pair(4096);
    tokio::spawn(async move {
        read_head(&mut up).await;
    });
    match exchange(conn, req(Method::GET, "/", ReqBody::Empty), None).await {
        Ok(_) => panic!("no answer expected"),
        Err(f) => assert!(f.back.is_none()),
    }
}

#[tokio::test]
async fn malformed_answers_are_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
    ] {
        let (conn, mut up) = pair(4096);
        tokio::spawn(async move {
            read_head(&mut up).await;
            up.write_all(answer).await.ok();
        });
        match exchange(conn, req(Method::GET, "/", ReqBody::Empty), None).await {
            Ok(r) => panic!(
                "accepted {:?}: {}",
                String::from_utf8_lossy(answer),
                r.status()
            ),
            Err(f) => assert!(matches!(f.error, ExchangeError::Parse(_)), "{}", f.error),
        }
    }
}

#[tokio::test]
async fn head_answer_has_no_body_and_a_cut_body_fails() {
    let (conn, mut up) = pair(4096);
    tokio::spawn(async move {
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
            .await
            .ok();
        read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
            .await
            .ok();
    });
    let resp = exchange(conn, req(Method::HEAD, "/", ReqBody::Empty), release(5))
        .await
        .map_err(|f| f.error)
        .expect("response");
    assert!(resp.body().is_end_stream());
    let conn = checkout(5).await.expect("pooled after HEAD");
    let resp = exchange(conn, req(Method::GET, "/", ReqBody::Empty), release(5))
        .await
        .map_err(|f| f.error)
        .expect("response");
    assert!(resp.into_body().collect().await.is_err());
    assert!(checkout(5).await.is_none());
}

#[tokio::test]
async fn switching_protocols_hands_over_the_connection() {
    let (conn, mut up) = pair(4096);
    let server = tokio::spawn(async move {
        let head = read_head(&mut up).await;
        up.write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nEARLY")
            .await
            .ok();
        let mut got = [0u8; 4];
        up.read_exact(&mut got).await.ok();
        (head, got)
    });
    let mut r = req(Method::GET, "/ws", ReqBody::Empty);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let resp = exchange(conn, r, release(6))
        .await
        .map_err(|f| f.error)
        .expect("response");
    assert_eq!(resp.status(), 101);
    let mut body = resp.into_body();
    let (mut io, early) = body.take_upgrade().expect("upgrade");
    assert_eq!(early.as_ref(), b"EARLY");
    io.write_all(b"ping").await.expect("write");
    let (head, got) = server.await.expect("server");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert_eq!(&got, b"ping");
    assert!(checkout(6).await.is_none());
}
