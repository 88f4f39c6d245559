//! The old HTTP/1 gate's smuggling table (its tests, before the gate was removed), ported: every case is
//! read whole, split at every point, one byte at a time and in random pieces, and must give
//! the same transcript every way.

use portico_h1::drive::{Transcript, run_requests};
use portico_h1::{Framing, H1Error, Limits};

/// Reads `input` every way and checks all agree; returns the error (or None).
fn run(input: &[u8]) -> Option<H1Error> {
    run_with(input, &Limits::default()).error
}

fn run_with(input: &[u8], limits: &Limits) -> Transcript {
    let whole = run_requests(&[input], limits);
    for split in 0..=input.len() {
        let t = run_requests(&[&input[..split], &input[split..]], limits);
        assert_eq!(
            t,
            whole,
            "split at {split} differs for {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(
        run_requests(&bytes, limits),
        whole,
        "byte-at-a-time differs"
    );
    let mut rng = fastrand::Rng::with_seed(input.len() as u64);
    for _ in 0..20 {
        let mut parts = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = rng.usize(1..=rest.len().min(7));
            parts.push(&rest[..n]);
            rest = &rest[n..];
        }
        assert_eq!(run_requests(&parts, limits), whole, "random split differs");
    }
    whole
}

#[test]
fn accepts_well_formed_traffic() {
    assert_eq!(run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), None);
    let t = run_with(
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
        &Limits::default(),
    );
    assert_eq!(t.error, None);
    assert_eq!(t.heads.len(), 2);
    assert_eq!(t.heads[1].1, b"/b");
    let t = run_with(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe\nloGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        &Limits::default(),
    );
    assert_eq!(t.error, None);
    assert_eq!(t.bodies[0].0, b"he\nlo");
    assert_eq!(t.heads.len(), 2);
    let t = run_with(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhe\nlo\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        &Limits::default(),
    );
    assert_eq!(t.error, None);
    assert_eq!(t.bodies[0].0, b"he\nlo");
    assert_eq!(t.bodies[0].1, vec![b"T: 1".to_vec()]);
    assert_eq!(t.heads[0].2, Framing::Chunked);
    assert_eq!(t.heads.len(), 2);
}

#[test]
fn the_http2_preface_is_not_http1() {
    // The connection layer checks the preface before HTTP/1 parsing (`downstream/versions.rs`);
    // to the codec it is a request line with an unsupported version.
    assert_eq!(
        run(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        Some(H1Error::BadVersion)
    );
}

#[test]
fn rejects_smuggling_shapes() {
    let cases: &[(&[u8], H1Error)] = &[
        (b"GET / HTTP/1.1\nHost: a\r\n\r\n", H1Error::BareLineFeed),
        (b"\x16\x03\x01\x00\xff", H1Error::BadRequestLine),
        (b"GET / HTTP/1.1\r\nHost: a\n\r\n", H1Error::BareLineFeed),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", H1Error::BareCarriageReturn),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", H1Error::ObsFold),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            H1Error::ContentLengthAndTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            H1Error::ContentLengthAndTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            H1Error::BadContentLength,
        ),
        (b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", H1Error::BadContentLength),
        (b"POST / HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n", H1Error::BadContentLength),
        (b"POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n", H1Error::BadContentLength),
        (b"POST / HTTP/1.1\r\nContent-Length: 3 3\r\n\r\n", H1Error::BadContentLength),
        (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", H1Error::BadContentLength),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1234567890123456789\r\n\r\n",
            H1Error::BadContentLength,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            H1Error::BadTransferEncoding,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", H1Error::BadTransferEncoding),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n", H1Error::BadTransferEncoding),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            H1Error::BadTransferEncoding,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            H1Error::BadTransferEncoding,
        ),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", H1Error::BadTransferEncoding),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", H1Error::DuplicateHost),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", H1Error::BadChunk),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            H1Error::BadChunk,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", H1Error::BadChunk),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n", H1Error::BareLineFeed),
        // Beyond the gate: the trailer and chunk-extension rules.
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n x: 1\r\n\r\n",
            H1Error::ObsFold,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n",
            H1Error::BadTrailer,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;=x\r\na\r\n0\r\n\r\n",
            H1Error::BadChunk,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 1\r\na\r\n0\r\n\r\n",
            H1Error::BadChunk,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n",
            H1Error::BadChunk,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\na\r\n0\r\n\r\n",
            H1Error::BadChunk,
        ),
        // Invalid field syntax httparse refuses (hyper did too).
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", H1Error::BadHeader),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", H1Error::BadHeader),
        (b"GET / HTTP/1.1\r\n: a\r\n\r\n", H1Error::BadHeader),
        (b"GET / HTTP/1.2\r\n\r\n", H1Error::BadVersion),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n", H1Error::BadHeader),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\x00\r\n\r\n", H1Error::BadHeader),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", H1Error::BadRequestLine),
        (b"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", H1Error::BadHeader),
        (b"GET  / HTTP/1.1\r\n\r\n", H1Error::BadRequestLine),
    ];
    for (input, want) in cases {
        assert_eq!(
            run(input),
            Some(*want),
            "for {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn a_coding_before_chunked_is_well_formed() {
    let t = run_with(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        &Limits::default(),
    );
    assert_eq!(t.error, None);
    assert_eq!(t.heads[0].2, Framing::Chunked);
}

#[test]
fn reason_does_not_depend_on_where_a_bad_line_is_split() {
    assert_eq!(
        run(b"GET / HTTP/\r.1oH1\nst: a\r\n\r\n"),
        Some(H1Error::BareCarriageReturn)
    );
    assert_eq!(
        run(b"GET / HTTP/1.1\r\nA: \rb\n\r\n"),
        Some(H1Error::BareCarriageReturn)
    );
    assert_eq!(
        run(b"POSHTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"),
        Some(H1Error::BadRequestLine)
    );
    assert_eq!(
        run(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\x16\x03\x01"),
        Some(H1Error::BadRequestLine)
    );
    assert_eq!(
        run(b"PO\x05ST /a HTTP/1.1\r\nHost: a\r\nX: chunked\r?\n\r\n"),
        Some(H1Error::BadRequestLine)
    );
}

#[test]
fn rejects_framing_header_lookalikes() {
    assert_eq!(
        run(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"),
        Some(H1Error::BadTransferEncoding)
    );
    assert_eq!(
        run(b"POST / HTTP/1.1\r\nHost: a\r\ncontent_LENGTH: 5\r\n\r\n"),
        Some(H1Error::BadContentLength)
    );
    assert_eq!(
        run(b"GET / HTTP/1.1\r\nHost: a\r\nX_Other_Header: 1\r\n\r\n"),
        None
    );
}

#[test]
fn what_follows_a_refused_upgrade_is_still_checked() {
    let t = run_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        &Limits::default(),
    );
    assert!(t.heads[0].4, "the first request asks for an upgrade");
    assert_eq!(t.error, Some(H1Error::ContentLengthAndTransferEncoding));
    // `Upgrade: h2c`, or no `Connection: upgrade`: plain requests.
    let t = run_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n",
        &Limits::default(),
    );
    assert!(!t.heads[0].4);
    assert_eq!(t.error, Some(H1Error::BareLineFeed));
    let t = run_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        &Limits::default(),
    );
    assert!(!t.heads[0].4);
    assert_eq!(t.error, Some(H1Error::DuplicateHost));
    // HTTP/1.0 cannot upgrade.
    let t = run_with(
        b"GET / HTTP/1.0\r\nConnection: upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n",
        &Limits::default(),
    );
    assert!(!t.heads[0].4);
}

#[test]
fn nothing_is_read_after_a_last_request() {
    let t = run_with(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET / HTTP/1.1\nHost: a\r\n\r\n",
        &Limits::default(),
    );
    assert_eq!(t.error, None);
    assert!(t.stopped);
    assert_eq!(t.heads.len(), 1);
}

#[test]
fn head_limits() {
    let limits = Limits {
        max_head: 64,
        max_headers: 3,
        max_target: 10,
        ..Limits::default()
    };
    // Exactly at the limit passes, one byte more is 431, whatever the split.
    let mut at = b"GET / HTTP/1.1\r\nX: ".to_vec();
    at.resize(64 - 4, b'a');
    at.extend_from_slice(b"\r\n\r\n");
    assert_eq!(at.len(), 64);
    assert_eq!(run_with(&at, &limits).error, None);
    let mut over = b"GET / HTTP/1.1\r\nX: ".to_vec();
    over.resize(65 - 4, b'a');
    over.extend_from_slice(b"\r\n\r\n");
    let t = run_with(&over, &limits);
    assert_eq!(t.error, Some(H1Error::HeadTooLarge));
    assert_eq!(H1Error::HeadTooLarge.status(), 431);
    // Never ending: 431 once the limit is reached, not held forever.
    assert_eq!(
        run_with(&[b'A'; 100], &limits).error,
        Some(H1Error::HeadTooLarge)
    );
    assert_eq!(
        run_with(
            b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n",
            &limits
        )
        .error,
        Some(H1Error::TooManyHeaders)
    );
    assert_eq!(
        run_with(b"GET /0123456789 HTTP/1.1\r\n\r\n", &limits).error,
        Some(H1Error::UriTooLong)
    );
    assert_eq!(H1Error::UriTooLong.status(), 414);
    assert_eq!(
        run_with(b"GET /012345678 HTTP/1.1\r\n\r\n", &limits).error,
        None
    );
}
