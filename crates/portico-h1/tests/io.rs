//! The async helpers over in-memory pipes (`tokio::io::duplex`): heads read in pieces,
//! bodies streamed and re-framed, a tunnel, and one proxied exchange end to end.

use bytes::BytesMut;
use portico_h1::io::{
    ConnError, CopyOptions, ForbiddenTrailers, copy_body, read_request_head, read_response_head,
    shrink_idle, tunnel,
};
use portico_h1::{
    BodyDecoder, BodyOut, Framing, H1Error, Limits, RequestParser, ResponseParser,
    write_request_head, write_response_head,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

/// Writes `parts` into a pipe with a yield between them, then closes it.
fn client(parts: Vec<&'static [u8]>) -> tokio::io::DuplexStream {
    let (mut a, b) = duplex(1024);
    tokio::spawn(async move {
        for p in parts {
            a.write_all(p).await.unwrap();
            tokio::task::yield_now().await;
        }
        a.shutdown().await.unwrap();
    });
    b
}

#[tokio::test]
async fn pipelined_requests_arrive_in_pieces() {
    let mut io = client(vec![
        b"GET /a HT",
        b"TP/1.1\r\nHost: a\r\n",
        b"\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhe",
        b"lloGET /c HTTP/1.1\r\nHost: a\r\n\r\n",
    ]);
    let mut buf = BytesMut::new();
    let mut parser = RequestParser::new(Limits::default());
    let h = read_request_head(&mut io, &mut buf, &mut parser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.target(), b"/a");
    let h = read_request_head(&mut io, &mut buf, &mut parser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.framing(), Framing::Length(5));
    let mut body = Vec::new();
    let n = copy_body(
        &mut io,
        &mut buf,
        BodyDecoder::new(h.framing(), &Limits::default()),
        &mut body,
        CopyOptions::new(BodyOut::Length(5), ForbiddenTrailers::Reject),
    )
    .await
    .unwrap();
    assert_eq!((n, body.as_slice()), (5, &b"hello"[..]));
    let h = read_request_head(&mut io, &mut buf, &mut parser)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(h.target(), b"/c");
    assert!(
        read_request_head(&mut io, &mut buf, &mut parser)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_head_cut_short_or_refused() {
    let mut io = client(vec![b"GET / HTTP/1.1\r\nHo"]);
    let mut buf = BytesMut::new();
    let mut parser = RequestParser::new(Limits::default());
    let r = read_request_head(&mut io, &mut buf, &mut parser).await;
    assert!(matches!(r, Err(ConnError::Eof)), "{r:?}");
    let mut io = client(vec![b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"]);
    let mut buf = BytesMut::new();
    let r = read_request_head(
        &mut io,
        &mut buf,
        &mut RequestParser::new(Limits::default()),
    )
    .await;
    assert!(
        matches!(r, Err(ConnError::Parse(H1Error::DuplicateHost))),
        "{r:?}"
    );
}

#[tokio::test]
async fn chunked_bodies_are_re_encoded() {
    let mut io = client(vec![
        b"5;ext=1\r\nhel",
        b"lo\r\n3\r\n",
        b" wo\r\n0\r\nX-Sum: 1\r\nCookie: c\r\n\r\nNEXT",
    ]);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let n = copy_body(
        &mut io,
        &mut buf,
        BodyDecoder::new(Framing::Chunked, &Limits::default()),
        &mut out,
        CopyOptions::new(BodyOut::Chunked, ForbiddenTrailers::Drop),
    )
    .await
    .unwrap();
    assert_eq!(n, 8);
    // Chunk boundaries follow the reads; extensions are not forwarded; the forbidden
    // trailer is dropped.
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("0\r\nX-Sum: 1\r\n\r\n"), "{text:?}");
    let mut dec = Vec::new();
    let mut again = BytesMut::from(text.as_bytes());
    copy_body(
        &mut tokio::io::empty(),
        &mut again,
        BodyDecoder::new(Framing::Chunked, &Limits::default()),
        &mut dec,
        CopyOptions::new(BodyOut::Length(8), ForbiddenTrailers::Reject),
    )
    .await
    .unwrap();
    assert_eq!(dec, b"hello wo");
    // What follows the body stays for the next message (the pipe may still hold some).
    assert!(b"NEXT".starts_with(&buf[..]));

    // A client's forbidden trailer refuses the body.
    let mut io = client(vec![b"0\r\nContent-Length: 5\r\n\r\n"]);
    let r = copy_body(
        &mut io,
        &mut BytesMut::new(),
        BodyDecoder::new(Framing::Chunked, &Limits::default()),
        &mut Vec::new(),
        CopyOptions::new(BodyOut::Chunked, ForbiddenTrailers::Reject),
    )
    .await;
    assert!(
        matches!(r, Err(ConnError::Parse(H1Error::BadTrailer))),
        "{r:?}"
    );
}

#[tokio::test]
async fn bodies_that_end_early() {
    let mut io = client(vec![b"abc"]);
    let r = copy_body(
        &mut io,
        &mut BytesMut::new(),
        BodyDecoder::new(Framing::Length(10), &Limits::default()),
        &mut Vec::new(),
        CopyOptions::new(BodyOut::Length(10), ForbiddenTrailers::Reject),
    )
    .await;
    assert!(
        matches!(r, Err(ConnError::Parse(H1Error::IncompleteBody))),
        "{r:?}"
    );
    // A close-delimited body ends with the stream; re-framed as chunked it gets its end.
    let mut io = client(vec![b"ab", b"cd"]);
    let mut out = Vec::new();
    let n = copy_body(
        &mut io,
        &mut BytesMut::new(),
        BodyDecoder::new(Framing::CloseDelimited, &Limits::default()),
        &mut out,
        CopyOptions::new(BodyOut::Chunked, ForbiddenTrailers::Drop),
    )
    .await
    .unwrap();
    assert_eq!(n, 4);
    assert!(out.ends_with(b"0\r\n\r\n"));
}

/// One exchange through the helpers as a proxy would run it: client request in, upstream
/// request out, upstream response in, client response out, no task per request.
#[tokio::test]
async fn one_proxied_exchange() {
    let limits = Limits::default();
    let (mut downstream_client, mut downstream) = duplex(4096);
    let (mut upstream, mut origin) = duplex(4096);
    let origin_task = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let mut parser = RequestParser::new(Limits::default());
        let head = read_request_head(&mut origin, &mut buf, &mut parser)
            .await
            .unwrap()
            .unwrap();
        let mut body = Vec::new();
        copy_body(
            &mut origin,
            &mut buf,
            BodyDecoder::new(head.framing(), &Limits::default()),
            &mut body,
            CopyOptions::new(BodyOut::Length(0), ForbiddenTrailers::Reject),
        )
        .await
        .unwrap();
        assert_eq!(head.headers().get(b"connection"), None);
        assert_eq!(
            head.headers().get(b"x-forwarded-for"),
            Some(&b"192.0.2.1"[..])
        );
        origin
            .write_all(b"HTTP/1.1 200 OK\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            .await
            .unwrap();
        body
    });
    downstream_client
        .write_all(
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody",
        )
        .await
        .unwrap();

    let mut dbuf = BytesMut::new();
    let mut parser = RequestParser::new(limits);
    let req = read_request_head(&mut downstream, &mut dbuf, &mut parser)
        .await
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    let body_out = match req.framing() {
        Framing::Length(n) => BodyOut::Length(n),
        Framing::Chunked => BodyOut::Chunked,
        _ => BodyOut::None,
    };
    write_request_head(
        &req,
        None,
        body_out,
        |_, _| true,
        &[(b"x-forwarded-for", b"192.0.2.1")],
        &mut out,
    );
    upstream.write_all(&out).await.unwrap();
    copy_body(
        &mut downstream,
        &mut dbuf,
        BodyDecoder::new(req.framing(), &limits),
        &mut upstream,
        CopyOptions::new(body_out, ForbiddenTrailers::Reject),
    )
    .await
    .unwrap();

    let mut ubuf = BytesMut::new();
    let resp = read_response_head(
        &mut upstream,
        &mut ubuf,
        &mut ResponseParser::new(limits),
        req.context(),
    )
    .await
    .unwrap();
    out.clear();
    let close: &[(&[u8], &[u8])] = if req.keep_alive() {
        &[]
    } else {
        &[(b"connection", b"close")]
    };
    write_response_head(&resp, BodyOut::Chunked, |_, _| true, close, &mut out);
    downstream.write_all(&out).await.unwrap();
    copy_body(
        &mut upstream,
        &mut ubuf,
        BodyDecoder::new(resp.framing(), &limits),
        &mut downstream,
        CopyOptions::new(BodyOut::Chunked, ForbiddenTrailers::Drop),
    )
    .await
    .unwrap();
    drop(downstream);

    assert_eq!(origin_task.await.unwrap(), b"body");
    let mut got = Vec::new();
    downstream_client.read_to_end(&mut got).await.unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
}

#[tokio::test]
async fn tunnels_forward_what_was_already_read() {
    let (mut c_peer, mut c) = duplex(1024);
    let (mut u, mut u_peer) = duplex(1024);
    let mut cbuf = BytesMut::from(&b"early-client"[..]);
    let mut ubuf = BytesMut::from(&b"early-upstream"[..]);
    let relay = tokio::spawn(async move { tunnel(&mut c, &mut cbuf, &mut u, &mut ubuf).await });
    let mut got = [0u8; 12];
    u_peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"early-client");
    let mut got = [0u8; 14];
    c_peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"early-upstream");
    c_peer.write_all(b"ping").await.unwrap();
    c_peer.shutdown().await.unwrap();
    let mut got = [0u8; 4];
    u_peer.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    u_peer.shutdown().await.unwrap();
    let (a, b) = relay.await.unwrap().unwrap();
    assert_eq!((a, b), (16, 14));
}

#[test]
fn idle_buffers_shrink() {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    shrink_idle(&mut buf, 16 * 1024);
    assert_eq!(buf.capacity(), 0);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    buf.extend_from_slice(b"x");
    shrink_idle(&mut buf, 16 * 1024);
    assert!(
        buf.capacity() >= 64 * 1024,
        "a buffer holding bytes is kept"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let mut io = client(vec![b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"]);
    let r = copy_body(
        &mut io,
        &mut BytesMut::new(),
        BodyDecoder::new(Framing::Chunked, &Limits::default()),
        &mut Vec::new(),
        CopyOptions::new(BodyOut::Chunked, ForbiddenTrailers::Reject).max_len(8),
    )
    .await;
    assert!(
        matches!(r, Err(ConnError::Parse(H1Error::BodyTooLarge))),
        "{r:?}"
    );
    assert_eq!(H1Error::BodyTooLarge.status(), 413);
    let mut io = client(vec![b"hello"]);
    let n = copy_body(
        &mut io,
        &mut BytesMut::new(),
        BodyDecoder::new(Framing::Length(5), &Limits::default()),
        &mut Vec::new(),
        CopyOptions::new(BodyOut::Length(5), ForbiddenTrailers::Reject).max_len(5),
    )
    .await
    .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn upstream_answers_interim_then_final_or_closes() {
    let ctx = portico_h1::RequestContext::default();
    let mut io = client(vec![
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 20",
        b"0 OK\r\nContent-Length: 0\r\n\r\n",
    ]);
    let mut buf = BytesMut::new();
    let mut parser = ResponseParser::new(Limits::default());
    let h = read_response_head(&mut io, &mut buf, &mut parser, ctx)
        .await
        .unwrap();
    assert!(h.is_interim());
    let h = read_response_head(&mut io, &mut buf, &mut parser, ctx)
        .await
        .unwrap();
    assert_eq!((h.status(), h.framing()), (200, Framing::Length(0)));
    // Closed before a byte (retryable) versus inside a head.
    let r = read_response_head(&mut io, &mut buf, &mut parser, ctx).await;
    assert!(matches!(r, Err(ConnError::Closed)), "{r:?}");
    let mut io = client(vec![b"HTTP/1.1 200 OK\r\n"]);
    let r = read_response_head(&mut io, &mut BytesMut::new(), &mut parser, ctx).await;
    assert!(matches!(r, Err(ConnError::Eof)), "{r:?}");
}
