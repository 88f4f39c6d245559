//! HTTP/1.1 upgrades whose request carries a body, on Portico's own HTTP/1 server (no hyper
//! HTTP/1 fallback): the body is forwarded by its framing (Content-Length or chunked, with
//! `Expect: 100-continue` answered), and only then does a `101` turn the connection into a
//! tunnel; an upstream that answers anything else keeps the connection HTTP/1 and parsed;
//! a `101` that comes before the body was forwarded is not honoured (it is passed on with
//! `connection: close` and the connection closes, no tunnel); a route without
//! `allow_upgrade` answers 403 as for any upgrade.
//!
//! The upstream is a raw socket server written here: it records each request head and its
//! decoded body, then answers as its mode says and, after a `101`, echoes what it gets
//! prefixed with `echo:`.

use crate::common;
use common::*;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Read the whole body, answer 101, echo.
    Switch,
    /// Read the whole body, answer `200 ok` and keep serving HTTP/1.
    Refuse,
    /// Answer 101 as soon as the head is in, before the body.
    EarlySwitch,
}

/// What the upstream saw: each request's head (lowercased) and decoded body.
type Seen = mpsc::UnboundedReceiver<(String, Vec<u8>)>;

async fn upstream(mode: Mode) -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, mode, tx.clone()));
        }
    });
    (addr, rx)
}

/// Reads until `buf` holds `\r\n\r\n`; returns the head's length.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> Option<()> {
    while buf.len() < want {
        let mut tmp = [0u8; 4096];
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(())
}

/// Decodes a chunked body from the front of `buf` (no extensions, no trailers: what
/// Portico's client writes), removing it.
async fn read_chunked(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            let have = buf.len();
            fill(s, buf, have + 1).await?;
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?, 16).ok()?;
        buf.drain(..line_end + 2);
        fill(s, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
        if size == 0 {
            return Some(body);
        }
    }
}

async fn serve(mut s: TcpStream, mode: Mode, seen: mpsc::UnboundedSender<(String, Vec<u8>)>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_head(&mut s, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end);
        if mode == Mode::EarlySwitch {
            let _ = seen.send((head, Vec::new()));
            let _ = s
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n")
                .await;
            // Whatever comes now is dropped.
            let mut sink = [0u8; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    return;
                }
            }
            return;
        }
        let body = if head.contains("transfer-encoding: chunked") {
            match read_chunked(&mut s, &mut buf).await {
                Some(b) => b,
                None => return,
            }
        } else {
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if fill(&mut s, &mut buf, len).await.is_none() {
                return;
            }
            buf.drain(..len).collect()
        };
        let _ = seen.send((head, body));
        if mode == Mode::Refuse {
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        if s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: test\r\n\r\n",
        )
        .await
        .is_err()
        {
            return;
        }
        // The tunnel: echo, each read prefixed.
        if !buf.is_empty() {
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf);
            let _ = s.write_all(&out).await;
        }
        let mut tmp = [0u8; 4096];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut out = b"echo:".to_vec();
                    out.extend_from_slice(&tmp[..n]);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

async fn start(mode: Mode, allow: bool) -> (Portico, Seen) {
    let (addr, seen) = upstream(mode).await;
    let extra = if allow { ", allow_upgrade: [test]" } else { "" };
    let p = Portico::start(
        &cfg::mapping("up")
            .prefix("/")
            .service(addr)
            .flow_fields(extra)
            .build(),
    )
    .await;
    (p, seen)
}

async fn connect(p: &Portico) -> TcpStream {
    TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect("connect")
}

/// Reads until `want` appears in what came (or the connection ends); returns everything.
async fn read_until(s: &mut TcpStream, want: &str) -> String {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut tmp = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(want) {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until the connection ends (or the wait is over: then `None`).
async fn read_to_end(s: &mut TcpStream) -> Option<String> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&got).into_owned())
}

async fn next_seen(seen: &mut Seen) -> (String, Vec<u8>) {
    tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("the upstream saw a request in time")
        .expect("upstream running")
}

const UPGRADE: &str = "Host: x\r\nConnection: upgrade\r\nUpgrade: test\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_body_is_forwarded_then_the_connection_tunnels() {
    let (p, mut seen) = start(Mode::Switch, true).await;
    let mut s = connect(&p).await;
    let req = format!("POST /up HTTP/1.1\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello");
    s.write_all(req.as_bytes()).await.expect("write");
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    assert!(head.to_lowercase().contains("upgrade: test"), "{head:?}");
    let (up_head, body) = next_seen(&mut seen).await;
    assert!(up_head.starts_with("post /up http/1.1"), "{up_head:?}");
    assert!(up_head.contains("upgrade: test"), "{up_head:?}");
    assert_eq!(body, b"hello");
    // Now a tunnel: bytes that look like HTTP pass through unparsed.
    s.write_all(b"GET /not-http HTTP/1.1\nbare LF\n\n")
        .await
        .expect("write");
    let echoed = read_until(&mut s, "bare LF").await;
    assert!(
        echoed.contains("echo:GET /not-http HTTP/1.1\nbare LF"),
        "{echoed:?}"
    );
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["status"], 101, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_with_expect_continue_is_forwarded_then_the_connection_tunnels() {
    let (p, mut seen) = start(Mode::Switch, true).await;
    let mut s = connect(&p).await;
    let head = format!(
        "PUT /up HTTP/1.1\r\n{UPGRADE}Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let cont = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        cont.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{cont:?}"
    );
    // The body in two chunks, with an extension, then the first tunnel bytes right behind
    // the last chunk (early: they must reach the tunnel once the 101 came, not the HTTP/1
    // parser).
    s.write_all(b"3;x=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /ping HTTP/1.1\n\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "echo:GET /ping").await;
    assert!(resp.starts_with("HTTP/1.1 101"), "{resp:?}");
    assert!(resp.contains("echo:GET /ping HTTP/1.1\n"), "{resp:?}");
    let (up_head, body) = next_seen(&mut seen).await;
    assert!(
        up_head.contains("transfer-encoding: chunked"),
        "{up_head:?}"
    );
    assert_eq!(body, b"abcde");
    s.write_all(b"pong").await.expect("write");
    let echoed = read_until(&mut s, "echo:pong").await;
    assert!(echoed.contains("echo:pong"), "{echoed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_body_answered_200_stays_http1_and_parsed() {
    let (p, mut seen) = start(Mode::Refuse, true).await;
    let mut s = connect(&p).await;
    // The upgrade with a body, then (pipelined) a plain request, then a CL.TE request that
    // must be refused: after a non-101 answer the connection is still parsed as HTTP/1.
    let reqs = format!(
        "POST /first HTTP/1.1\r\n{UPGRADE}Content-Length: 3\r\n\r\nabc\
         GET /second HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    s.write_all(reqs.as_bytes()).await.expect("write");
    let all = read_to_end(&mut s).await.expect("the connection closes");
    let statuses: Vec<&str> = all
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &all[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{all:?}");
    let (h1, b1) = next_seen(&mut seen).await;
    assert!(h1.starts_with("post /first"), "{h1:?}");
    assert_eq!(b1, b"abc");
    let (h2, _) = next_seen(&mut seen).await;
    assert!(h2.starts_with("get /second"), "{h2:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err(),
        "the CL.TE request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_before_the_body_was_forwarded_is_not_honoured() {
    let (p, mut seen) = start(Mode::EarlySwitch, true).await;
    let mut s = connect(&p).await;
    // The head only: the body is still to come when the upstream switches.
    let head = format!("POST /early HTTP/1.1\r\n{UPGRADE}Content-Length: 5\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let (up_head, _) = next_seen(&mut seen).await;
    assert!(up_head.starts_with("post /early"), "{up_head:?}");
    // The answer comes while the body is still owed; only then does the client send it.
    let head = read_until(&mut s, "\r\n\r\n").await;
    let _ = s.write_all(b"hello").await;
    let rest = read_to_end(&mut s).await.expect("the connection closes");
    // No tunnel: nothing is echoed, and a 101 said it closes the connection.
    assert!(!rest.contains("echo:"), "{rest:?}");
    if head.starts_with("HTTP/1.1 101") {
        assert!(
            head.to_lowercase().contains("connection: close"),
            "{head:?}"
        );
    } else {
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 5"),
            "{head:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_body_on_a_route_without_allow_upgrade_is_403() {
    let (p, mut seen) = start(Mode::Switch, false).await;
    let mut s = connect(&p).await;
    let req = format!("POST /up HTTP/1.1\r\n{UPGRADE}Content-Length: 5\r\n\r\nhello");
    s.write_all(req.as_bytes()).await.expect("write");
    let all = read_to_end(&mut s).await.expect("the connection closes");
    assert!(all.starts_with("HTTP/1.1 403"), "{all:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen.recv())
            .await
            .is_err(),
        "the refused upgrade reached the upstream"
    );
}
