//! HTTP/2 field rules (RFC 9113 §8.2, §8.3) through the real binary, with raw frames and
//! literal HPACK (the `h2` client refuses to send most of these). Every malformed request must
//! be refused (400, RST_STREAM PROTOCOL_ERROR, or GOAWAY for a connection error), reach no
//! upstream, and leave an access log line with flag DPE and a count in
//! `portico_downstream_rejected_total`.

use crate::common;
use common::h2raw::{self, *};
use common::*;

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

/// Two routes: `admin` only for `x-role: admin`, `public` for everything else. A value the
/// first does not match but an HTTP/1 origin reads as `admin` would be a bypass.
fn docs(admin: &Upstream, public: &Upstream) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: admin }}\nspec: {{ prefix: /p, headers: {{ x-role: admin }}, service: {} }}\n---\n{API}\nkind: Mapping\nmetadata: {{ name: public }}\nspec: {{ prefix: /, service: {} }}\n",
        admin.addr, public.addr
    )
}

#[derive(Debug, PartialEq)]
enum Answer {
    /// A response HEADERS frame on stream 1 whose status is 400 (HPACK static index 12).
    Status400,
    /// Another response.
    Status(u8),
    Reset(u32),
    GoAway(u32),
    Nothing,
}

/// Sends one request's header block (and optional extra frames) on a fresh connection and
/// returns Portico's answer for stream 1.
async fn exchange(port: u16, block: &[u8], end_stream: bool, extra: &[Vec<u8>]) -> Answer {
    let mut s = h2raw::open(port).await;
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    let mut out = frame(HEADERS, flags, 1, block);
    for f in extra {
        out.extend_from_slice(f);
    }
    s.write_all(&out).await.expect("write");
    let mut r = Reader::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(f) = r.next(&mut s, deadline).await {
        match f.ty {
            HEADERS if f.stream == 1 => {
                return match f.payload.first() {
                    Some(0x8c) => Answer::Status400,
                    Some(b) => Answer::Status(*b),
                    None => Answer::Nothing,
                };
            }
            RST_STREAM if f.stream == 1 => return Answer::Reset(f.word(0).unwrap_or(0)),
            GOAWAY => {
                let code = f.word(4).unwrap_or(0);
                if code != 0 {
                    return Answer::GoAway(code);
                }
            }
            _ => {}
        }
    }
    Answer::Nothing
}

const REQ: [(&str, &str); 4] = [
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "a.test"),
    (":path", "/p"),
];

/// The request pseudo-headers followed by `fields`.
fn with(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut all: Vec<(&str, &str)> = REQ.to_vec();
    all.extend_from_slice(fields);
    hpack(&all)
}

fn dpe_lines(p: &Portico) -> usize {
    p.access_log()
        .iter()
        .filter(|l| l["flags"].as_str().is_some_and(|f| f.contains("DPE")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_are_refused_logged_and_never_forwarded() {
    let admin = Upstream::start("admin").await;
    let public = Upstream::start("public").await;
    let p = Portico::start(&docs(&admin, &public)).await;

    // Well-formed: routed by the header as usual.
    assert_eq!(
        exchange(p.port, &with(&[("x-role", "admin")]), true, &[]).await,
        Answer::Status(0x88)
    );
    assert_eq!(admin.count(), 1);
    assert_eq!(public.count(), 0);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        // §8.2.1: leading or trailing SP/HTAB.
        ("leading HTAB", with(&[("x-role", "\tadmin")])),
        ("trailing HTAB", with(&[("x-role", "admin\t")])),
        ("leading SP", with(&[("x-role", " admin")])),
        ("trailing SP", with(&[("x-role", "admin ")])),
        ("whitespace-only value", with(&[("x-role", " ")])),
        // §8.2.1: NUL, CR, LF.
        ("NUL in value", with(&[("x-role", "ad\0min")])),
        ("CR in value", with(&[("x-role", "ad\rmin")])),
        ("LF in value", with(&[("x-a", "b\nx-role: admin")])),
        // §8.2: names.
        ("uppercase name", with(&[("X-Role", "admin")])),
        ("space in name", with(&[("x role", "admin")])),
        ("colon in name", with(&[("x:role", "admin")])),
        ("empty name", with(&[("", "admin")])),
        // §8.2.2: connection-specific fields and te.
        ("connection", with(&[("connection", "close")])),
        ("keep-alive", with(&[("keep-alive", "timeout=5")])),
        (
            "proxy-connection",
            with(&[("proxy-connection", "keep-alive")]),
        ),
        (
            "transfer-encoding",
            with(&[("transfer-encoding", "chunked")]),
        ),
        ("upgrade", with(&[("upgrade", "websocket")])),
        ("te gzip", with(&[("te", "gzip")])),
        ("te trailers, gzip", with(&[("te", "trailers, gzip")])),
        // §8.3: pseudo-header fields.
        ("unknown pseudo", with(&[(":foo", "bar")])),
        (
            "pseudo after regular",
            hpack(&[
                (":method", "GET"),
                (":scheme", "http"),
                ("x-a", "b"),
                (":path", "/p"),
            ]),
        ),
        ("duplicated :path", with(&[(":path", "/q")])),
        ("response pseudo", with(&[(":status", "200")])),
        (
            "missing :method",
            hpack(&[
                (":scheme", "http"),
                (":authority", "a.test"),
                (":path", "/p"),
            ]),
        ),
        (
            "missing :scheme",
            hpack(&[
                (":method", "GET"),
                (":authority", "a.test"),
                (":path", "/p"),
            ]),
        ),
        (
            "missing :path",
            hpack(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "a.test"),
            ]),
        ),
        (
            "empty :path",
            hpack(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "a.test"),
                (":path", ""),
            ]),
        ),
        (
            ":path not origin-form",
            hpack(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "a.test"),
                (":path", "p"),
            ]),
        ),
        (
            "userinfo in :authority",
            hpack(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "u@a.test"),
                (":path", "/p"),
            ]),
        ),
        ("host differs from :authority", with(&[("host", "b.test")])),
    ];

    let rejected = "portico_downstream_rejected_total{code=\"4xx\"}";
    let mut failures = Vec::new();
    for (name, block) in &cases {
        let logged = dpe_lines(&p);
        let counted = metric(&p, rejected).await.unwrap_or(0.0);
        let answer = exchange(p.port, block, true, &[]).await;
        eprintln!("{name}: {answer:?}");
        let refused = matches!(
            answer,
            Answer::Status400 | Answer::Reset(PROTOCOL_ERROR) | Answer::GoAway(PROTOCOL_ERROR | 9)
        );
        // The log line and the metric may trail the answer a little.
        eventually(Duration::from_secs(5), async || dpe_lines(&p) > logged).await;
        let now_logged = dpe_lines(&p);
        let now_counted = metric(&p, rejected).await.unwrap_or(0.0);
        if !refused || now_logged <= logged || now_counted <= counted {
            failures.push(format!(
                "{name}: answer {answer:?}, DPE lines {logged} -> {now_logged}, rejected {counted} -> {now_counted}"
            ));
        }
    }
    assert_eq!(admin.count(), 1, "the admin origin saw a malformed request");
    assert_eq!(
        public.count(),
        0,
        "the public origin saw a malformed request"
    );
    assert!(
        failures.is_empty(),
        "not refused, logged and counted:\n{}",
        failures.join("\n")
    );
}

/// Request trailers follow the same field rules, and fields that decide framing or routing may
/// not come late: such a request is refused (400 or a reset, DPE), and the upstream never gets
/// the complete body with the bad trailer. Good trailers still pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_trailers_are_refused() {
    let admin = Upstream::start("admin").await;
    let public = Upstream::start("public").await;
    let p = Portico::start(&docs(&admin, &public)).await;
    let post = hpack(&[
        (":method", "POST"),
        (":scheme", "http"),
        (":authority", "a.test"),
        (":path", "/t"),
    ]);
    let send = |trailer: (&'static str, &'static str)| {
        let post = post.clone();
        async move {
            exchange(
                p.port,
                &post,
                false,
                &[
                    frame(DATA, 0, 1, b"hello"),
                    frame(HEADERS, END_HEADERS | END_STREAM, 1, &hpack(&[trailer])),
                ],
            )
            .await
        }
    };

    // A good trailer: the body arrives whole.
    assert_eq!(send(("x-sum", "abc")).await, Answer::Status(0x88));
    assert_eq!(public.count(), 1);
    assert_eq!(&public.seen.lock().expect("lock")[0].body[..], b"hello");

    let before = dpe_lines(&p);
    let bad = [
        ("x-sum", " abc"),
        ("x-sum", "abc\t"),
        ("content-length", "5"),
        ("host", "evil.example"),
        ("authorization", "Bearer x"),
    ];
    for (i, t) in bad.iter().enumerate() {
        let a = send(*t).await;
        assert!(
            a == Answer::Status400 || matches!(a, Answer::Reset(_)),
            "{t:?}: {a:?}"
        );
        wait_until(
            Duration::from_secs(10),
            &format!("a DPE line for trailer {t:?}"),
            async || dpe_lines(&p) > before + i,
        )
        .await;
    }
    // Whatever reached the upstream before the trailer came, it never got the whole message.
    let complete = public
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|s| &s.body[..] == b"hello")
        .count();
    assert_eq!(
        complete, 1,
        "a request with a bad trailer reached the upstream whole"
    );
}
