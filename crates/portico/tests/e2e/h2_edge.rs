//! HTTP/2 downstream edge behaviour through the real binary: the rapid-reset guard
//! (CVE-2023-44487) and h2spec-style answers to invalid frames and pseudo-headers.

use crate::common;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::h2raw::{self, *};
use tokio::io::AsyncWriteExt;
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

    // The attacker: 1,000 streams, each HEADERS followed at once by RST_STREAM CANCEL, written
    // in batches of 100 pairs (raw frames: a client library would flush HEADERS alone when
    // the machine is loaded, and a stream the server accepted before its reset is ordinary
    // cancellation, not a rapid reset).
    let mut s = h2raw::open(port).await;
    let started = Instant::now();
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/attack"),
        (":authority", "127.0.0.1"),
    ]);
    let mut opened = 0;
    let mut cut_off = false;
    'attack: for batch in 0..10u32 {
        let mut out = Vec::new();
        for i in 0..100u32 {
            let id = 1 + 2 * (batch * 100 + i);
            out.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            out.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        if s.write_all(&out).await.is_err() {
            cut_off = true;
            break 'attack;
        }
        opened += 100;
    }
    // The server answers with GOAWAY ENHANCE_YOUR_CALM and closes the connection.
    let mut reader = h2raw::Reader::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut goaway = None;
    let mut closed = false;
    while Instant::now() < deadline {
        match reader.next(&mut s, deadline).await {
            Some(f) if f.ty == GOAWAY => goaway = f.word(4),
            Some(_) => {}
            None => {
                closed = Instant::now() < deadline;
                break;
            }
        }
    }
    eprintln!(
        "rapid reset: {opened} streams opened+reset in {:?}; write failed: {cut_off}; goaway: {goaway:?}; closed: {closed}",
        started.elapsed()
    );
    assert!(
        closed || cut_off,
        "the server must close the attacker's connection"
    );
    // The GOAWAY may be lost when the server closes while the client is still writing
    // resets (the write then fails): either way the server cut it off.
    assert!(
        goaway == Some(ENHANCE_YOUR_CALM) || cut_off,
        "GOAWAY ENHANCE_YOUR_CALM expected, got {goaway:?}"
    );

    // Meanwhile the normal client kept getting answers.
    let before = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(5),
        "normal client not served after the attack",
        async || ok.load(Ordering::Relaxed) > before,
    )
    .await;
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
    let mut s = h2raw::open(port).await;
    let out: Vec<u8> = frames.concat();
    s.write_all(&out).await.expect("write");
    let mut reader = h2raw::Reader::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let Some(f) = reader.next(&mut s, deadline).await else {
            assert!(Instant::now() < deadline, "no answer in time");
            return Answer::Closed;
        };
        match f.ty {
            RST_STREAM if f.payload.len() >= 4 => {
                return Answer::Rst {
                    stream: f.stream,
                    code: f.word(0).unwrap_or_default(),
                };
            }
            GOAWAY if f.payload.len() >= 8 => {
                return Answer::GoAway {
                    code: f.word(4).unwrap_or_default(),
                };
            }
            HEADERS => return Answer::Headers { stream: f.stream },
            SETTINGS if f.flags & ACK == 0 => {
                // Acknowledge the server's SETTINGS.
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
            }
            _ => {}
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

/// Resident memory of a process in KiB (`VmRSS` in /proc), 0 when unreadable.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_gets_goaway_while_others_are_served() {
    // CVE-2024-27316 class: HEADERS without END_HEADERS, then CONTINUATION frames without end.
    // A server that buffers them until END_HEADERS grows without bound; Portico must cut the
    // connection off after a few frames.
    let p = Portico::start(&direct()).await;
    let port = p.port;
    let pid = p.child.id();

    // A well-behaved h2c client, looping on its own connection throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(AtomicUsize::new(0));
    let normal = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        let url = p.url("/normal");
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match send(request("GET", &url, &[], Bytes::new()), true).await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => bad.fetch_add(1, Ordering::Relaxed),
                };
                tokio::task::yield_now().await;
            }
        })
    };
    // The normal client is up before the attack.
    wait_until(
        Duration::from_secs(5),
        "normal client never served",
        async || ok.load(Ordering::Relaxed) > 0,
    )
    .await;
    let rss_before = rss_kib(pid);

    // The attacker: each CONTINUATION carries ~1 KiB of header fields; up to 20,000 of them
    // (20 MiB) unless the server stops reading.
    const FLOOD: usize = 20_000;
    let s = h2raw::open(port).await;
    let (mut rd, mut wr) = s.into_split();
    let mut first = valid_request();
    first.push(("x-flood", "start"));
    let value = "v".repeat(120);
    let fields: Vec<(&str, &str)> = (0..8).map(|_| ("x-flood", value.as_str())).collect();
    let continuation = frame(CONTINUATION, 0, 1, &hpack(&fields));
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        wr.write_all(&frame(HEADERS, END_STREAM, 1, &hpack(&first)))
            .await
            .map_err(|_| 0usize)?;
        let batch: Vec<u8> = continuation.repeat(16);
        let mut sent = 0usize;
        while sent < FLOOD {
            if wr.write_all(&batch).await.is_err() {
                return Err(sent);
            }
            sent += 16;
        }
        Ok(sent)
    });

    // Read until GOAWAY or close.
    let mut reader = h2raw::Reader::new();
    let read_deadline = Instant::now() + Duration::from_secs(10);
    let mut goaway = None;
    loop {
        let Some(f) = reader.next(&mut rd, read_deadline).await else {
            break;
        };
        if f.ty == GOAWAY {
            goaway = f.word(4);
            break;
        }
    }
    let cut_after = started.elapsed();
    assert!(
        Instant::now() < read_deadline,
        "no GOAWAY or close within 10 s of the flood"
    );
    // The writer stops once the server has closed the connection (or it finishes writing into
    // socket buffers nobody reads: then the server stopped reading, which is a cut-off too).
    let written = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("flood writer ends")
        .expect("join");
    let rss_after = rss_kib(pid);
    eprintln!(
        "continuation flood: cut off after {cut_after:?} with GOAWAY code {goaway:?}; \
         frames written before the writer stopped: {written:?}; RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        written.is_err(),
        "the server must stop the flood before all {FLOOD} frames: {written:?}"
    );
    if let Some(code) = goaway {
        assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY code");
    }
    assert!(
        cut_after < Duration::from_secs(5),
        "cut off quickly: {cut_after:?}"
    );
    // Nothing like the 20 MiB flood was kept.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );

    // The normal client was served during and after the flood, without a failure.
    let served = ok.load(Ordering::Relaxed);
    wait_until(
        Duration::from_secs(5),
        "normal client stalled after the flood",
        async || ok.load(Ordering::Relaxed) >= served + 10,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    normal.await.expect("normal client");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "normal client never failed");
    assert!(!p.stderr().contains("panicked"), "no panic: {}", p.stderr());
}
