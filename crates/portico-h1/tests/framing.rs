//! RFC 9112 §6.3 (message body length) for responses and requests, and the keep-alive
//! decision (§9.3), as tables.

use bytes::BytesMut;
use portico_h1::drive::run_response;
use portico_h1::{
    Framing, H1Error, Limits, RequestContext, RequestParser, ResponseParser, parse_request_bytes,
};

const GET: RequestContext = RequestContext {
    head: false,
    connect: false,
    upgrade: false,
};
const HEAD: RequestContext = RequestContext {
    head: true,
    connect: false,
    upgrade: false,
};
const CONNECT: RequestContext = RequestContext {
    head: false,
    connect: true,
    upgrade: false,
};
const UPGRADE: RequestContext = RequestContext {
    head: false,
    connect: false,
    upgrade: true,
};

fn response(input: &[u8], req: RequestContext) -> Result<(u16, Framing, bool), H1Error> {
    let mut buf = BytesMut::from(input);
    let head = ResponseParser::new(Limits::default())
        .parse(&mut buf, req)?
        .ok_or(H1Error::IncompleteBody)?;
    Ok((head.status(), head.framing(), head.keep_alive()))
}

/// Input, the request it answers, and the expected framing and keep-alive (or error).
type Case = (
    &'static [u8],
    RequestContext,
    Result<(Framing, bool), H1Error>,
);

#[test]
fn response_framing_table() {
    use Framing::*;
    let cases: &[Case] = &[
        // Item 1: HEAD, 1xx, 204, 304: no body whatever the fields say.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            HEAD,
            Ok((None, true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            HEAD,
            Ok((None, true)),
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", GET, Ok((None, true))),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            GET,
            Ok((None, true)),
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n", GET, Ok((None, true))),
        (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            GET,
            Ok((None, true)),
        ),
        // 101 only to an upgrade request.
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\n\r\n",
            UPGRADE,
            Ok((Tunnel, false)),
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            GET,
            Err(H1Error::UnexpectedSwitch),
        ),
        // Item 2: CONNECT 2xx is a tunnel; a refused CONNECT has a body as usual.
        (
            b"HTTP/1.1 200 Connection established\r\n\r\n",
            CONNECT,
            Ok((Tunnel, false)),
        ),
        (
            b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n",
            CONNECT,
            Ok((Length(0), true)),
        ),
        // Item 3: CL with TE is refused from upstreams.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            GET,
            Err(H1Error::ContentLengthAndTransferEncoding),
        ),
        // Item 4: chunked last, or read until close.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            GET,
            Ok((Chunked, true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            GET,
            Ok((Chunked, true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            GET,
            Ok((CloseDelimited, false)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            GET,
            Err(H1Error::BadTransferEncoding),
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            GET,
            Err(H1Error::BadTransferEncoding),
        ),
        // Item 5/6: Content-Length, valid and agreeing.
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            GET,
            Ok((Length(5), true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            GET,
            Ok((Length(5), true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            GET,
            Err(H1Error::BadContentLength),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            GET,
            Err(H1Error::BadContentLength),
        ),
        // Item 8: no length: until close, and the connection is not reused.
        (b"HTTP/1.1 200 OK\r\n\r\n", GET, Ok((CloseDelimited, false))),
        (b"HTTP/1.0 200 OK\r\n\r\n", GET, Ok((CloseDelimited, false))),
        // Keep-alive.
        (
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            GET,
            Ok((Length(0), false)),
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            GET,
            Ok((Length(0), false)),
        ),
        (
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
            GET,
            Ok((Length(0), true)),
        ),
        // The lenient side: a bare LF ends lines from upstreams; obs-fold and bare CR do not pass.
        (
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\n",
            GET,
            Ok((Length(2), true)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
            GET,
            Err(H1Error::ObsFold),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            GET,
            Err(H1Error::BareCarriageReturn),
        ),
        (
            b"HTTP/1.1 999 Nope\r\n\r\n",
            GET,
            Err(H1Error::BadStatusLine),
        ),
        (b"HTTP/2 200 OK\r\n\r\n", GET, Err(H1Error::BadVersion)),
    ];
    for (input, req, want) in cases {
        let got = response(input, *req).map(|(_, f, k)| (f, k));
        assert_eq!(&got, want, "for {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn interim_answers_come_before_the_final_one() {
    let t = run_response(
        &[b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1"],
        GET,
        &Limits::default(),
    );
    assert_eq!(
        t.heads,
        vec![(100, Framing::None, true), (200, Framing::Length(2), true)]
    );
    assert_eq!(t.body, b"ok");
    assert!(t.complete);
    assert_eq!(t.rest, 8);
    // A close-delimited body ends with the input.
    let t = run_response(
        &[b"HTTP/1.1 200 OK\r\n\r\nab", b"cd"],
        GET,
        &Limits::default(),
    );
    assert_eq!(t.body, b"abcd");
    assert_eq!(t.error, None);
    // A Content-Length body cut short is an error.
    let t = run_response(
        &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"],
        GET,
        &Limits::default(),
    );
    assert_eq!(t.error, Some(H1Error::IncompleteBody));
}

#[test]
fn response_reason_and_status() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 404 Not  Found\r\nContent-Length: 0\r\n\r\nrest"[..]);
    let head = ResponseParser::new(Limits::default())
        .parse(&mut buf, GET)
        .unwrap()
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_eq!(head.reason(), b"Not  Found");
    assert_eq!(&buf[..], b"rest");
}

#[test]
fn request_framing_and_keep_alive() {
    let cases: &[(&[u8], Framing, bool)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", Framing::None, true),
        (
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            Framing::None,
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nConnection: foo, CLOSE\r\n\r\n",
            Framing::None,
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", Framing::None, false),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            Framing::None,
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            Framing::Length(0),
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 010\r\n\r\n",
            Framing::Length(10),
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
            Framing::Length(7),
            true,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n",
            Framing::Chunked,
            true,
        ),
    ];
    for (input, framing, keep_alive) in cases {
        let head = parse_request_bytes(input, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(
            head.framing(),
            *framing,
            "{:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            head.keep_alive(),
            *keep_alive,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn request_head_view() {
    let mut buf = BytesMut::from(
        &b"\r\nPOST /a/b?q=1 HTTP/1.1\r\nHost: example.com\r\nX-Multi: 1\r\nx-multi:  2 \r\nEmpty:\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhiGET"[..],
    );
    let mut parser = RequestParser::new(Limits::default());
    let head = parser.parse(&mut buf).unwrap().unwrap();
    assert_eq!(head.method(), b"POST");
    assert_eq!(head.target(), b"/a/b?q=1");
    assert_eq!(head.host(), Some(&b"example.com"[..]));
    assert!(head.expect_continue());
    let h = head.headers();
    assert_eq!(h.get(b"HOST"), Some(&b"example.com"[..]));
    assert_eq!(
        h.get_all(b"x-multi").collect::<Vec<_>>(),
        vec![&b"1"[..], &b"2"[..]]
    );
    assert_eq!(h.get(b"empty"), Some(&b""[..]));
    assert_eq!(h.get(b"missing"), None);
    assert_eq!(h.len(), 6);
    assert_eq!(head.context(), RequestContext::default());
    assert_eq!(&buf[..], b"hiGET");
    // Fed one byte at a time, the same head comes out, and only when its last byte came.
    let input = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::new();
    for (i, b) in input.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let got = parser.parse(&mut buf).unwrap();
        assert_eq!(got.is_some(), i + 1 == input.len());
        if let Some(h) = got {
            assert_eq!(h.target(), b"/x");
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn response_transcripts_do_not_depend_on_splits() {
    // From the `response` fuzz target: a HEAD answer with bytes after it counted them only
    // up to the read that completed it.
    let cases: &[(&[u8], RequestContext)] = &[
        (b"HTTP/1.0 200 OK\r\n\r\nclose delimited", HEAD),
        (b"HTTP/1.0 200 OK\r\n\r\nclose delimited", GET),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200",
            GET,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nA: b\r\n\r\nxy",
            GET,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching\r\n\r\nframes",
            UPGRADE,
        ),
    ];
    for (input, req) in cases {
        let whole = run_response(&[input], *req, &Limits::default());
        for i in 0..=input.len() {
            let split = run_response(&[&input[..i], &input[i..]], *req, &Limits::default());
            assert_eq!(
                split,
                whole,
                "split at {i} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let ones: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run_response(&ones, *req, &Limits::default()), whole);
    }
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_scanned_once() {
    // Slowloris shape: a head just under the limit, one byte per read. Rescanning from the
    // start on every read would be ~1.8e9 byte visits (minutes in a debug build); the
    // scanner keeps its place, so this is linear.
    let mut input = b"GET / HTTP/1.1\r\nX: ".to_vec();
    input.resize(60 * 1024 - 4, b'a');
    input.extend_from_slice(b"\r\n\r\n");
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::with_capacity(input.len());
    let start = std::time::Instant::now();
    let mut done = false;
    for b in &input {
        buf.extend_from_slice(&[*b]);
        done = parser.parse(&mut buf).unwrap().is_some();
    }
    assert!(done);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    // The same with a method that never ends: refused at the limit, also linear.
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::new();
    let start = std::time::Instant::now();
    let mut result = Ok(None);
    for _ in 0..60 * 1024 {
        buf.extend_from_slice(b"A");
        result = parser.parse(&mut buf);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result.err(), Some(H1Error::HeadTooLarge));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}
