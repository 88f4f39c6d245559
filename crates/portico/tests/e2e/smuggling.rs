//! Request-smuggling corpus (issue 9): raw HTTP/1.1 requests in the CL.TE, TE.CL and TE.TE
//! shapes (obfuscated `Transfer-Encoding`, duplicated and look-alike framing headers, bare
//! CR/LF, obs-fold, bad chunk framing, desyncs hidden behind pipelining and fake upgrades),
//! plus the smuggler and http-garden patterns, each sent on a fresh socket through Portico to a
//! counting origin. For every case the client must get the case's answer (400 unless noted),
//! the connection must be closed after a rejection, and the origin must see exactly the
//! requests the client legitimately sent: never the smuggled `GET /smuggled`.
//!
//! The HTTP/2 → HTTP/1 downgrade cases (CR/LF/NUL in values, connection-specific headers,
//! invalid pseudo-headers, `content-length` that disagrees with DATA) use raw h2 frames where
//! the `h2` crate refuses to send the field, and the `h2` client itself otherwise.

use crate::common;
use common::*;

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// What the origin must see, as (method, uri, body).
type Seen3 = (&'static str, &'static str, &'static str);

#[derive(Debug, Clone)]
enum Want {
    /// The reply to the bad request has this status and the connection closes; the origin
    /// sees exactly `before` (the well-formed requests sent ahead of it, in order).
    Reject {
        status: &'static str,
        before: &'static [Seen3],
    },
    /// The head was valid and the body framing is not: no 2xx for it, the connection
    /// closes, and the origin sees at most this request with an incomplete body (the head
    /// may already be on its way when the body turns out bad), never anything after it.
    BadBody {
        uri: &'static str,
        full: &'static str,
    },
    /// Accepted as sent: the origin sees exactly these requests.
    Forward(&'static [Seen3]),
    /// The connection is closed with no 2xx after the bad request and the origin sees exactly
    /// `before`. (hyper drops the pending answer to an HTTP/1.0 keep-alive request when the
    /// next request in its buffer is invalid: the client sees only the close.)
    Cut { before: &'static [Seen3] },
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

const R400: Want = Want::Reject {
    status: "400",
    before: &[],
};

/// `POST /a` with `headers` and `body` (`{len}` in `headers` becomes the body's length).
fn post(headers: &str, body: &str) -> Vec<u8> {
    let headers = headers.replace("{len}", &body.len().to_string());
    format!("POST /a HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n{body}").into_bytes()
}

/// CL.TE: a Content-Length covering a zero chunk and a smuggled request, plus the given
/// Transfer-Encoding line(s).
fn cl_te(te: &str) -> Vec<u8> {
    post(
        &format!("Content-Length: {{len}}\r\n{te}"),
        &format!("0\r\n\r\n{SMUGGLED}"),
    )
}

/// The same body with only the given Transfer-Encoding line(s), no Content-Length.
fn te_only(te: &str) -> Vec<u8> {
    post(te, &format!("0\r\n\r\n{SMUGGLED}"))
}

/// A valid chunked head with a bad chunked body, then the smuggled request.
fn chunked_body(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked", &format!("{body}{SMUGGLED}"))
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const FIRST: &[u8] = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n";
const SEEN_FIRST: &[Seen3] = &[("GET", "/first", "")];

fn http1_cases() -> Vec<Case> {
    let c = |name, bytes, want| Case { name, bytes, want };
    let smuggled_len = SMUGGLED.len();
    vec![
        // ---- CL.TE with every Transfer-Encoding obfuscation (smuggler's "mutations").
        c("cl-te plain", cl_te("Transfer-Encoding: chunked"), R400),
        c("cl-te te-first", post(&format!("Transfer-Encoding: chunked\r\nContent-Length: {}", 5 + smuggled_len), &format!("0\r\n\r\n{SMUGGLED}")), R400),
        c("cl-te xchunked", cl_te("Transfer-Encoding: xchunked"), R400),
        c("cl-te double space", cl_te("Transfer-Encoding:  chunked"), R400),
        c("cl-te tab before value", cl_te("Transfer-Encoding:\tchunked"), R400),
        c("cl-te tab after value", cl_te("Transfer-Encoding: chunked\t"), R400),
        c("cl-te upper value", cl_te("Transfer-Encoding: CHUNKED"), R400),
        c("cl-te upper name", cl_te("TRANSFER-ENCODING: chunked"), R400),
        c("cl-te chunked, identity", cl_te("Transfer-Encoding: chunked, identity"), R400),
        c("cl-te identity, chunked", cl_te("Transfer-Encoding: identity, chunked"), R400),
        c("cl-te chunked, chunked", cl_te("Transfer-Encoding: chunked, chunked"), R400),
        c("cl-te quoted", cl_te("Transfer-Encoding: \"chunked\""), R400),
        c("cl-te space before colon", cl_te("Transfer-Encoding : chunked"), R400),
        c("cl-te tab before colon", cl_te("Transfer-Encoding\t: chunked"), R400),
        c("cl-te vertical tab", cl_te("Transfer-Encoding: \x0bchunked"), R400),
        c("cl-te form feed", cl_te("Transfer-Encoding: \x0cchunked"), R400),
        c("cl-te NUL inside", cl_te("Transfer-Encoding: chu\0nked"), R400),
        c("cl-te obs-text prefix", { let mut b = cl_te("Transfer-Encoding: Xchunked"); let i = b.windows(8).position(|w| w == b"Xchunked").unwrap_or(0); b[i] = 0xff; b }, R400),
        c("cl-te chunked;param", cl_te("Transfer-Encoding: chunked;q=1"), R400),
        c("cl-te two TE lines, identity last", cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"), R400),
        c("cl-te two TE lines, chunked last", cl_te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"), R400),
        c("cl-te underscore name", cl_te("Transfer_Encoding: chunked"), R400),
        c("cl-te bare LF before TE", cl_te("X-A: 1\nTransfer-Encoding: chunked"), R400),
        c("cl-te LF inside name", cl_te("Transfer-Encoding\n: chunked"), R400),
        c("cl-te obs-fold value", cl_te("Transfer-Encoding:\r\n chunked"), R400),
        c("cl-te folded into previous", cl_te("X-A: 1\r\n Transfer-Encoding: chunked"), R400),
        // ---- TE.CL: chunked framing hides a request inside a chunk that a CL reader splits.
        c("te-cl classic", post("Transfer-Encoding: chunked\r\nContent-Length: 4", &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", smuggled_len)), R400),
        c("te-cl content-length first", post("Content-Length: 4\r\nTransfer-Encoding: chunked", &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", smuggled_len)), R400),
        // ---- TE without CL that cannot be framed.
        c("te xchunked alone", te_only("Transfer-Encoding: xchunked"), R400),
        c("te chunked, identity alone", te_only("Transfer-Encoding: chunked, identity"), R400),
        c("te underscore alone", te_only("Transfer_Encoding: chunked"), R400),
        c("te on HTTP/1.0", format!("POST /a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").into_bytes(), R400),
        // ---- Content-Length shapes.
        c("cl differing duplicates", post("Content-Length: 3\r\nContent-Length: 40", &format!("abc{SMUGGLED}")), R400),
        c("cl differing list", post("Content-Length: 3, 40", &format!("abc{SMUGGLED}")), R400),
        c("cl plus sign", post("Content-Length: +3", "abc"), R400),
        c("cl negative", post("Content-Length: -1", "abc"), R400),
        c("cl hex", post("Content-Length: 0x3", "abc"), R400),
        c("cl inner space", post("Content-Length: 1 0", "abcdefghij"), R400),
        c("cl overflow", post("Content-Length: 99999999999999999999", "abc"), R400),
        c("cl empty", post("Content-Length: ", "abc"), R400),
        c("cl trailing garbage", post("Content-Length: 3x", "abc"), R400),
        c("cl underscore name", post("Content_Length: 3", &format!("abc{SMUGGLED}")), R400),
        c("cl space before colon", post("Content-Length : 3", "abc"), R400),
        c("cl obs-fold", post("Content-Length: 3\r\n 4", "abc"), R400),
        // ---- Chunked body framing (http-garden's chunk-size and terminator mutations).
        c("chunk size overflow", chunked_body("fffffffffffffffff1\r\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk size negative", chunked_body("-3\r\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk size 0x prefix", chunked_body("0x3\r\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk size leading space", chunked_body(" 3\r\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk size underscore", chunked_body("1_0\r\nabcdefghijklmnop\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abcdefghijklmnop" }),
        c("chunk data without CRLF", chunked_body("3\r\nabcX\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk size bare LF", chunked_body("3\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("chunk ext bare CR", chunked_body("3;a\rb\r\nabc\r\n0\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("last chunk bare LF", chunked_body("3\r\nabc\r\n0\n\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("trailer obs-fold", chunked_body("3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        c("trailer bare LF", chunked_body("3\r\nabc\r\n0\r\nX-T: a\n\r\n"), Want::BadBody { uri: "/a", full: "abc" }),
        // ---- Head and request-line shapes.
        c("bare LF request line", format!("GET /a HTTP/1.1\nHost: x\r\n\r\n{SMUGGLED}").into_bytes(), R400),
        c("bare LF head end", b"GET /a HTTP/1.1\r\nHost: x\r\n\n".to_vec(), R400),
        c("bare CR in value", b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\rTransfer-Encoding: chunked\r\n\r\n".to_vec(), R400),
        c("obs-fold first header", b"GET /a HTTP/1.1\r\n Host: x\r\n\r\n".to_vec(), R400),
        c("duplicate Host", b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), R400),
        c("NUL in target", b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), R400),
        c("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), R400),
        c("version garbage", b"GET /a HTTP/1.1x\r\nHost: x\r\n\r\n".to_vec(), R400),
        c("lowercase version", b"GET /a http/1.1\r\nHost: x\r\n\r\n".to_vec(), R400),
        c("header without colon", b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding chunked\r\n\r\n".to_vec(), R400),
        // ---- Desyncs behind a well-formed request (pipelining) or a fake upgrade.
        c("pipelined then cl-te", cat(&[FIRST, &cl_te("Transfer-Encoding: chunked")]), Want::Reject { status: "400", before: SEEN_FIRST }),
        c("pipelined body then bare LF", cat(&[b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", b"GET /a HTTP/1.1\nHost: x\n\n"]), Want::Reject { status: "400", before: &[("POST", "/first", "abc")] }),
        c("h2c upgrade then bare LF", cat(&[b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n", b"GET /a HTTP/1.1\nHost: x\n\n"]), Want::Reject { status: "400", before: SEEN_FIRST }),
        c("upgrade without connection then cl-te", cat(&[b"GET /first HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", &cl_te("Transfer-Encoding: chunked")]), Want::Reject { status: "400", before: SEEN_FIRST }),
        c("HTTP/1.0 upgrade then cl-te", cat(&[b"GET /first HTTP/1.0\r\nHost: x\r\nConnection: upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n", &cl_te("Transfer-Encoding: chunked")]), Want::Cut { before: SEEN_FIRST }),
        c("allowed upgrade answered 200 then cl-te", cat(&[b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &cl_te("Transfer-Encoding: chunked")]), Want::Reject { status: "400", before: &[("GET", "/ws", "")] }),
        c("refused upgrade then cl-te", cat(&[b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", &cl_te("Transfer-Encoding: chunked")]), Want::Reject { status: "403", before: &[] }),
        // ---- Accepted as sent (documented): the origin sees exactly what the client sent.
        c("GET with a body that looks like a request", format!("GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: {smuggled_len}\r\nConnection: close\r\n\r\n{SMUGGLED}").into_bytes(), Want::Forward(&[("GET", "/a", SMUGGLED)])),
        c("chunk size leading zeros", post("Transfer-Encoding: chunked\r\nConnection: close", "0003\r\nabc\r\n0\r\n\r\n"), Want::Forward(&[("POST", "/a", "abc")])),
        c("chunk extension", post("Transfer-Encoding: chunked\r\nConnection: close", "3;name=\"v\"\r\nabc\r\n0\r\n\r\n"), Want::Forward(&[("POST", "/a", "abc")])),
        c("identical content-lengths", post("Content-Length: 3\r\nContent-Length: 3\r\nConnection: close", "abc"), Want::Forward(&[("POST", "/a", "abc")])),
        c("empty lines before request line", b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), Want::Forward(&[("GET", "/a", "")])),
    ]
}

/// Writes `bytes` on a fresh connection and reads until the proxy closes or 3 s pass.
async fn raw(port: u16, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Status codes of every response in `reply`, in order.
fn statuses(reply: &str) -> Vec<String> {
    reply
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| reply.get(i + 9..i + 12).map(str::to_string))
        .collect()
}

/// A proxy with a catch-all route and a `/ws` route that allows WebSocket upgrades, both to
/// one counting origin.
async fn setup() -> (Upstream, Portico) {
    let up = Upstream::start("origin").await;
    let p = Portico::start(&format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: ws }}\nspec: {{ prefix: /ws, service: {a}, allow_upgrade: [websocket] }}\n---\n{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {a} }}\n",
        a = up.addr
    ))
    .await;
    (up, p)
}

fn seen(up: &Upstream) -> Vec<(String, String, Bytes)> {
    up.seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| (s.method.clone(), s.uri.clone(), s.body.clone()))
        .collect()
}

fn same(got: &[(String, String, Bytes)], want: &[Seen3]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|((m, u, b), (wm, wu, wb))| m == wm && u == wu && b == wb.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_smuggling_corpus() {
    let (up, p) = setup().await;
    let cases = http1_cases();
    let mut failures = Vec::new();
    for case in &cases {
        up.seen.lock().expect("lock").clear();
        let (reply, closed) = raw(p.port, &case.bytes).await;
        // Give a request that got through time to arrive. (A grace period, not a wait: what
        // is checked is that nothing more arrives.)
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = seen(&up);
        let codes = statuses(&reply);
        let smuggled = got.iter().any(|(_, u, _)| u == "/smuggled");
        let ok = !smuggled
            && match &case.want {
                Want::Reject { status, before } => {
                    closed
                        && codes.len() == before.len() + 1
                        && codes[..before.len()].iter().all(|c| c == "200")
                        && codes.last().is_some_and(|c| c == status)
                        && same(&got, before)
                }
                Want::BadBody { uri, full } => {
                    closed
                        && !codes.iter().any(|c| c.starts_with('2'))
                        && got.len() <= 1
                        && got.iter().all(|(_, u, b)| u == uri && b.len() < full.len())
                }
                Want::Cut { before } => closed && codes.len() <= before.len() && same(&got, before),
                Want::Forward(want) => {
                    codes.len() == want.len()
                        && codes.iter().all(|c| c == "200")
                        && same(&got, want)
                }
            };
        eprintln!(
            "{:<45} {:<4} statuses={codes:?} closed={closed} origin={:?}",
            case.name,
            if ok { "ok" } else { "FAIL" },
            got.iter()
                .map(|(m, u, _)| format!("{m} {u}"))
                .collect::<Vec<_>>()
        );
        if !ok {
            failures.push(format!(
                "{}: want {:?}, got statuses {codes:?}, closed={closed}, origin saw {got:?}",
                case.name, case.want
            ));
        }
    }
    eprintln!("{} HTTP/1 cases, {} failed", cases.len(), failures.len());
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    assert!(failures.is_empty(), "{failures:#?}");
    // Still serving after all of that.
    up.seen.lock().expect("lock").clear();
    let r = get(&p.url("/after"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 1);
    assert!(p.stderr().find("panicked").is_none(), "{}", p.stderr());
}

// ---------------------------------------------------------------- HTTP/2 → HTTP/1 downgrade

use common::h2raw::{
    END_HEADERS, END_STREAM, GOAWAY, HEADERS, PREFACE, RST_STREAM, SETTINGS, frame,
};

/// HPACK "literal without indexing, new name", no Huffman: any bytes at all, which is the
/// point (the `h2` crate and `http` types refuse to build most of these fields).
fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0);
        out.push(n.len() as u8);
        out.extend_from_slice(n);
        out.push(v.len() as u8);
        out.extend_from_slice(v);
    }
    out
}

/// How the server answered stream 1.
#[derive(Debug, PartialEq, Eq)]
enum H2Answer {
    /// Response HEADERS; the status when it could be read (indexed or plain/Huffman digits).
    Status(Option<u16>),
    Rst(u32),
    GoAway(u32),
    Closed,
}

/// The `:status` at the start of a response header block (HPACK static table or a literal
/// whose name is `:status`), if it can be read.
fn status_of(block: &[u8]) -> Option<u16> {
    let mut i = 0;
    // Dynamic table size updates first.
    while block.get(i).is_some_and(|b| b & 0xe0 == 0x20) {
        i += 1;
    }
    let b = *block.get(i)?;
    const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
    if b & 0x80 != 0 {
        let idx = (b & 0x7f) as usize;
        return (8..=14).contains(&idx).then(|| STATIC[idx - 8]);
    }
    let name_idx = if b & 0xc0 == 0x40 { b & 0x3f } else { b & 0x0f };
    if !(8..=14).contains(&name_idx) {
        return None;
    }
    let lb = *block.get(i + 1)?;
    let len = (lb & 0x7f) as usize;
    let v = block.get(i + 2..i + 2 + len)?;
    if lb & 0x80 == 0 {
        return std::str::from_utf8(v).ok()?.parse().ok();
    }
    // Huffman: digits are 0-2 -> 5 bits (00000..00010), 3-9 -> 6 bits (011001..011111).
    let mut bits: u64 = 0;
    let mut nbits = 0;
    for &x in v {
        bits = (bits << 8) | x as u64;
        nbits += 8;
    }
    let mut code = 0u16;
    let mut digits = 0;
    while digits < 3 && nbits >= 5 {
        let top5 = (bits >> (nbits - 5)) & 0x1f;
        let d = if top5 <= 2 {
            nbits -= 5;
            top5 as u16
        } else {
            let top6 = (bits >> (nbits - 6)) & 0x3f;
            nbits -= 6;
            (top6 as u16).checked_sub(0b011001)? + 3
        };
        code = code * 10 + d;
        digits += 1;
    }
    (digits == 3).then_some(code)
}

/// Preface, SETTINGS, one HEADERS frame for stream 1 with `fields`; the first answer.
async fn h2_raw(port: u16, fields: &[(&[u8], &[u8])]) -> H2Answer {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack(fields)));
    s.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (ty, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match ty {
                RST_STREAM if stream == 1 && payload.len() >= 4 => {
                    return H2Answer::Rst(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
                GOAWAY if payload.len() >= 8 => {
                    return H2Answer::GoAway(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                }
                HEADERS if stream == 1 => return H2Answer::Status(status_of(&payload)),
                SETTINGS if flags & 1 == 0 => {
                    let _ = s.write_all(&frame(SETTINGS, 1, 0, &[])).await;
                }
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return H2Answer::Closed,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn base() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/a"),
        (b":authority", b"x"),
    ]
}

fn with(extra: &[(&'static [u8], &'static [u8])]) -> Vec<(&'static [u8], &'static [u8])> {
    let mut f = base();
    f.extend_from_slice(extra);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_downgrade_corpus() {
    let (up, p) = setup().await;
    // Control: the raw writer's request is answered 200 and reaches the origin once.
    let a = h2_raw(p.port, &base()).await;
    assert_eq!(a, H2Answer::Status(Some(200)));
    assert_eq!(up.count(), 1);

    type Fields = Vec<(&'static [u8], &'static [u8])>;
    let cases: Vec<(&str, Fields)> = vec![
        ("CR in value", with(&[(b"x-a", b"1\r2")])),
        ("LF in value", with(&[(b"x-a", b"1\n2")])),
        (
            "CRLF header injection",
            with(&[(b"x-a", b"1\r\nTransfer-Encoding: chunked")]),
        ),
        ("NUL in value", with(&[(b"x-a", b"1\x002")])),
        (
            "CRLF in :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/a HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled"),
                (b":authority", b"x"),
            ],
        ),
        (
            "space in :method",
            vec![
                (b":method", b"GET /smuggled"),
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"x"),
            ],
        ),
        ("connection header", with(&[(b"connection", b"keep-alive")])),
        (
            "transfer-encoding header",
            with(&[(b"transfer-encoding", b"chunked")]),
        ),
        ("keep-alive header", with(&[(b"keep-alive", b"timeout=5")])),
        (
            "proxy-connection header",
            with(&[(b"proxy-connection", b"keep-alive")]),
        ),
        ("upgrade header", with(&[(b"upgrade", b"websocket")])),
        ("te other than trailers", with(&[(b"te", b"gzip")])),
        (
            "uppercase name",
            with(&[(b"Transfer-Encoding", b"chunked")]),
        ),
        ("space in name", with(&[(b"x a", b"1")])),
        ("colon in name", with(&[(b"x:a", b"1")])),
        ("empty name", with(&[(b"", b"1")])),
        ("unknown pseudo-header", with(&[(b":foo", b"1")])),
        (
            "pseudo after regular",
            vec![
                (b":method", b"GET"),
                (b"x-a", b"1"),
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"x"),
            ],
        ),
        (
            "missing :method",
            vec![
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"x"),
            ],
        ),
        (
            "missing :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
            ],
        ),
        (
            "empty :path",
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b""),
                (b":authority", b"x"),
            ],
        ),
        ("duplicate :path", with(&[(b":path", b"/smuggled")])),
        (
            "duplicate :method",
            vec![
                (b":method", b"GET"),
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", b"/a"),
                (b":authority", b"x"),
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, fields) in &cases {
        up.seen.lock().expect("lock").clear();
        let a = h2_raw(p.port, fields).await;
        // Grace period: what is checked is that nothing (more) reaches the upstream.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = seen(&up);
        let ok = got.is_empty()
            && match a {
                H2Answer::Status(Some(s)) => (400..500).contains(&s),
                H2Answer::Status(None) => false,
                H2Answer::Rst(_) | H2Answer::GoAway(_) | H2Answer::Closed => true,
            };
        eprintln!(
            "{name:<28} {:<4} answer={a:?} origin={got:?}",
            if ok { "ok" } else { "FAIL" }
        );
        if !ok {
            failures.push(format!("{name}: {a:?}, origin saw {got:?}"));
        }
    }
    eprintln!("{} raw h2 cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// h2 requests whose `content-length` disagrees with their DATA (the h2.CL desync): the body
/// must never be split into a second HTTP/1 request upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_content_length_mismatch_never_smuggles() {
    let (up, p) = setup().await;
    for (cl, body) in [
        ("0", SMUGGLED.to_string()),
        ("3", format!("abc{SMUGGLED}")),
        ("100", "short".to_string()),
    ] {
        up.seen.lock().expect("lock").clear();
        let tcp = TcpStream::connect(("127.0.0.1", p.port))
            .await
            .expect("connect");
        let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://x/a?cl={cl}"))
            .header("content-length", cl)
            .body(())
            .expect("request");
        let outcome = match client.send_request(req, false) {
            Ok((resp, mut stream)) => {
                let _ = stream.send_data(Bytes::from(body.clone()), true);
                match tokio::time::timeout(Duration::from_secs(5), resp).await {
                    Ok(Ok(r)) => format!("status {}", r.status()),
                    Ok(Err(e)) => format!("error {e}"),
                    Err(_) => "timeout".to_string(),
                }
            }
            Err(e) => format!("send error {e}"),
        };
        // Grace period: what is checked is that nothing (more) reaches the upstream.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = seen(&up);
        eprintln!(
            "h2 content-length {cl} with {} body bytes: {outcome}, origin={got:?}",
            body.len()
        );
        conn.abort();
        assert!(
            !got.iter().any(|(_, u, _)| u == "/smuggled"),
            "smuggled: {got:?}"
        );
        // At most the declared request, with no more body than it declared.
        let declared: usize = cl.parse().expect("cl");
        assert!(got.len() <= 1, "{got:?}");
        for (_, _, b) in &got {
            assert!(
                b.len() <= declared,
                "origin got more body than declared: {got:?}"
            );
            assert!(b.len() == declared || !outcome.starts_with("status 2"));
        }
        if cl == "100" {
            assert!(!outcome.starts_with("status 2"), "{outcome}");
        }
    }
    let r = get(&p.url("/after"), &[]).await;
    assert_eq!(r.status, 200);
}
