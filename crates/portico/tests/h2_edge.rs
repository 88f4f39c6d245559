//! HTTP/2 downstream edge behaviour through the real binary: the rapid-reset guard
//! (CVE-2023-44487) and h2spec-style answers to invalid frames and pseudo-headers.

mod common;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn direct() -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: ok }}\nspec: {{ prefix: /, direct_response: {{ status: 200, body: ok }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_client_is_cut_off_while_others_are_served() {
    let p = Portico::start(&direct()).await;
    let port = p.port;

    // A well-behaved h2c client on its own connection, looping.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let normal = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        tokio::spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect");
            let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
            tokio::spawn(conn);
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(format!("http://127.0.0.1:{port}/normal"))
                    .body(())
                    .expect("req");
                let c = &mut client;
                let r = async move {
                    *c = c.clone().ready().await?;
                    let (resp, _) = c.send_request(req, true)?;
                    let resp = resp.await?;
                    let mut body = resp.into_body();
                    while let Some(chunk) = body.data().await {
                        let chunk = chunk?;
                        let _ = body.flow_control().release_capacity(chunk.len());
                    }
                    Ok::<_, h2::Error>(())
                }
                .await;
                match r {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => bad.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // The attacker: open and immediately reset 1,000 streams on one connection.
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn_task = tokio::spawn(conn);
    let started = Instant::now();
    let mut opened = 0;
    let mut cut_off = false;
    for _ in 0..1000 {
        client = match client.ready().await {
            Ok(c) => c,
            Err(_) => {
                cut_off = true;
                break;
            }
        };
        let req = http::Request::get(format!("http://127.0.0.1:{port}/attack"))
            .body(())
            .expect("req");
        match client.send_request(req, false) {
            Ok((_resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                opened += 1;
            }
            Err(_) => {
                cut_off = true;
                break;
            }
        }
    }
    // The server answers with GOAWAY: the connection ends with an error.
    let end = tokio::time::timeout(Duration::from_secs(5), conn_task)
        .await
        .expect("attacker connection closed by the server")
        .expect("join");
    let reason = match &end {
        Err(e) => e.reason(),
        Ok(()) => None,
    };
    eprintln!(
        "rapid reset: {opened} streams opened+reset in {:?}; cut off: {cut_off}; connection end: {end:?}",
        started.elapsed()
    );
    assert!(end.is_err() || cut_off, "connection must be closed");
    // The GOAWAY may be lost when the server closes while the client is still writing
    // resets (the client then sees a broken pipe): either way the server cut it off.
    let closed_by_server = matches!(&end, Err(e) if e.is_io());
    assert!(
        reason == Some(h2::Reason::ENHANCE_YOUR_CALM) || cut_off || closed_by_server,
        "GOAWAY ENHANCE_YOUR_CALM expected, got {end:?}"
    );

    // Meanwhile the normal client kept getting answers.
    let before = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    normal.await.expect("normal client");
    assert!(
        ok.load(Ordering::Relaxed) > before,
        "normal client still served"
    );
    assert_eq!(bad.load(Ordering::Relaxed), 0, "normal client never failed");
    let r = get(&p.url("/after"), &[]).await;
    assert_eq!(r.status, 200);
}

// ---------------------------------------------------------------- raw frames

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;
const PROTOCOL_ERROR: u32 = 1;
const FRAME_SIZE_ERROR: u32 = 6;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: every field as "literal without indexing, new name", no Huffman.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0);
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn valid_request() -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "h2.test"),
    ]
}

/// What the server sent back first that ends a stream or the connection.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Rst { stream: u32, code: u32 },
    GoAway { code: u32 },
    Headers { stream: u32 },
    Closed,
}

/// Opens a connection, sends the preface, an empty SETTINGS and then `frames`; returns the
/// first RST_STREAM, GOAWAY or response HEADERS.
async fn exchange(port: u16, frames: &[Vec<u8>]) -> Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    s.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let ty = buf[3];
            let flags = buf[4];
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match ty {
                RST_STREAM if payload.len() >= 4 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    return Answer::Rst { stream, code };
                }
                GOAWAY if payload.len() >= 8 => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    return Answer::GoAway { code };
                }
                HEADERS => return Answer::Headers { stream },
                SETTINGS if flags & 1 == 0 => {
                    // Acknowledge the server's SETTINGS.
                    let _ = s.write_all(&frame(SETTINGS, 1, 0, &[])).await;
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Answer::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no answer in time"),
        }
    }
}

fn headers_frame(stream: u32, fields: &[(&str, &str)]) -> Vec<u8> {
    frame(HEADERS, END_HEADERS | END_STREAM, stream, &hpack(fields))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_frames_and_pseudo_headers_get_protocol_errors() {
    let p = Portico::start(&direct()).await;
    let port = p.port;

    // Sanity: the raw writer's valid request is answered.
    assert_eq!(
        exchange(port, &[headers_frame(1, &valid_request())]).await,
        Answer::Headers { stream: 1 }
    );

    let stream_error = |a: &Answer| {
        matches!(
            a,
            Answer::Rst {
                stream: 1,
                code: PROTOCOL_ERROR
            } | Answer::GoAway {
                code: PROTOCOL_ERROR
            }
        )
    };

    // Unknown pseudo-header.
    let mut f = valid_request();
    f.push((":foo", "bar"));
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "unknown pseudo-header: {a:?}");

    // Missing :path.
    let f: Vec<_> = valid_request()
        .into_iter()
        .filter(|(n, _)| *n != ":path")
        .collect();
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "missing :path: {a:?}");

    // Pseudo-header after a regular header.
    let mut f = vec![(":method", "GET"), ("x-a", "1")];
    f.extend([
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "h2.test"),
    ]);
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "pseudo after regular: {a:?}");

    // Uppercase header name.
    let mut f = valid_request();
    f.push(("X-Upper", "1"));
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "uppercase name: {a:?}");

    // Connection-specific header.
    let mut f = valid_request();
    f.push(("connection", "keep-alive"));
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "connection header: {a:?}");

    // Duplicate :path.
    let mut f = valid_request();
    f.push((":path", "/again"));
    let a = exchange(port, &[headers_frame(1, &f)]).await;
    assert!(stream_error(&a), "duplicate :path: {a:?}");

    // DATA on stream 0: connection error PROTOCOL_ERROR.
    let a = exchange(port, &[frame(DATA, 0, 0, b"x")]).await;
    assert_eq!(
        a,
        Answer::GoAway {
            code: PROTOCOL_ERROR
        },
        "DATA on stream 0"
    );

    // HEADERS on an even (server-initiated) stream id.
    let a = exchange(port, &[headers_frame(2, &valid_request())]).await;
    assert_eq!(
        a,
        Answer::GoAway {
            code: PROTOCOL_ERROR
        },
        "even stream id"
    );

    // SETTINGS with a length that is not a multiple of 6.
    // RFC 9113 §6.5 asks for FRAME_SIZE_ERROR; the h2 crate answers PROTOCOL_ERROR. Either
    // way the connection is closed with GOAWAY.
    let a = exchange(port, &[frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0])]).await;
    assert!(
        matches!(
            a,
            Answer::GoAway {
                code: FRAME_SIZE_ERROR | PROTOCOL_ERROR
            }
        ),
        "bad SETTINGS length: {a:?}"
    );

    // WINDOW_UPDATE with a zero increment on the connection.
    let a = exchange(port, &[frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0])]).await;
    assert_eq!(
        a,
        Answer::GoAway {
            code: PROTOCOL_ERROR
        },
        "zero WINDOW_UPDATE"
    );

    // DATA on a stream that was never opened (idle).
    let a = exchange(port, &[frame(DATA, END_STREAM, 5, b"x")]).await;
    assert_eq!(
        a,
        Answer::GoAway {
            code: PROTOCOL_ERROR
        },
        "DATA on idle stream"
    );

    // Portico is still up and serving.
    let r = send(request("GET", &p.url("/ok"), &[], Bytes::new()), true)
        .await
        .expect("h2c after");
    assert_eq!(r.status, 200);
    assert!(!p.stderr().contains("panicked"), "no panic: {}", p.stderr());
}
