//! The head writers: field lines copied as received, hop-by-hop and nominated fields
//! dropped, framing re-written, extras appended.

use bytes::BytesMut;
use portico_h1::{
    BodyOut, Limits, RequestContext, ResponseParser, is_hop_by_hop, parse_request_bytes,
    write_request_head, write_response_head,
};

fn request(input: &[u8], body: BodyOut, extra: &[(&[u8], &[u8])]) -> String {
    let head = parse_request_bytes(input, &Limits::default())
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    write_request_head(&head, None, body, |_, _| true, extra, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn request_head_drops_hop_by_hop_and_nominated_fields() {
    let got = request(
        b"POST /p?q HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, host\r\nKeep-Alive: 5\r\nX-Secret: s\r\nx-secret: t\r\nTE: trailers\r\nTrailer: x\r\nProxy-Connection: x\r\nContent-Length: 010\r\nX-Kept:  spaced  value\r\nProxy-Authenticate: b\r\nCase-Kept: V\r\n\r\n",
        BodyOut::Length(10),
        &[(b"x-forwarded-for", b"10.0.0.1")],
    );
    assert_eq!(
        got,
        "POST /p?q HTTP/1.1\r\nHost: a\r\nX-Kept:  spaced  value\r\nCase-Kept: V\r\ncontent-length: 10\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
    );
}

#[test]
fn request_head_reframes_bodies() {
    let got = request(
        b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
        BodyOut::Chunked,
        &[],
    );
    assert_eq!(
        got,
        "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let got = request(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        BodyOut::Chunked,
        &[],
    );
    assert_eq!(
        got,
        "POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let got = request(
        b"GET / HTTP/1.1\r\nHost: a\r\nEmpty:\r\n\r\n",
        BodyOut::None,
        &[],
    );
    assert_eq!(got, "GET / HTTP/1.1\r\nHost: a\r\nEmpty:\r\n\r\n");
}

#[test]
fn upgrade_requests_keep_their_handshake() {
    let got = request(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Drop\r\nUpgrade: websocket\r\nX-Drop: 1\r\nSec-WebSocket-Key: k\r\n\r\n",
        BodyOut::None,
        &[],
    );
    assert_eq!(
        got,
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nconnection: upgrade\r\n\r\n"
    );
    // Not an upgrade request (h2c): Upgrade is hop-by-hop like any other.
    let got = request(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        BodyOut::None,
        &[],
    );
    assert_eq!(got, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn the_target_can_be_rewritten_and_fields_filtered() {
    let head = parse_request_bytes(
        b"GET /old HTTP/1.1\r\nHost: a\r\nX-Remove: 1\r\nX-Keep: 2\r\n\r\n",
        &Limits::default(),
    )
    .unwrap()
    .unwrap();
    let mut out = BytesMut::new();
    write_request_head(
        &head,
        Some(b"/new?x=1"),
        BodyOut::None,
        |name, _| !name.eq_ignore_ascii_case(b"x-remove"),
        &[],
        &mut out,
    );
    assert_eq!(
        &out[..],
        b"GET /new?x=1 HTTP/1.1\r\nHost: a\r\nX-Keep: 2\r\n\r\n"
    );
}

fn response(input: &[u8], req: RequestContext, body: BodyOut) -> String {
    let mut buf = BytesMut::from(input);
    let head = ResponseParser::new(Limits::default())
        .parse(&mut buf, req)
        .unwrap()
        .unwrap();
    let mut out = BytesMut::new();
    write_response_head(&head, body, |_, _| true, &[(b"via", b"portico")], &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn response_heads() {
    let get = RequestContext::default();
    assert_eq!(
        response(
            b"HTTP/1.1 200 Fine\r\nServer: x\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n",
            get,
            BodyOut::Chunked
        ),
        "HTTP/1.1 200 Fine\r\nServer: x\r\ntransfer-encoding: chunked\r\nvia: portico\r\n\r\n"
    );
    // A HEAD answer keeps its size, canonical; a 204 never carries one.
    let head = RequestContext { head: true, ..get };
    assert_eq!(
        response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0042\r\n\r\n",
            head,
            BodyOut::None
        ),
        "HTTP/1.1 200 OK\r\ncontent-length: 42\r\nvia: portico\r\n\r\n"
    );
    assert_eq!(
        response(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
            get,
            BodyOut::None
        ),
        "HTTP/1.1 204 No Content\r\nvia: portico\r\n\r\n"
    );
    // A missing reason stays missing.
    assert_eq!(
        response(
            b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n",
            get,
            BodyOut::Length(1)
        ),
        "HTTP/1.1 200\r\ncontent-length: 1\r\nvia: portico\r\n\r\n"
    );
    let up = RequestContext {
        upgrade: true,
        ..get
    };
    assert_eq!(
        response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
            up,
            BodyOut::None
        ),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: a\r\nconnection: upgrade\r\nvia: portico\r\n\r\n"
    );
}

#[test]
fn hop_by_hop_names() {
    for n in [
        &b"Connection"[..],
        b"KEEP-ALIVE",
        b"proxy-connection",
        b"TE",
        b"Trailer",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Content-Length",
        b"Proxy-Authenticate",
    ] {
        assert!(is_hop_by_hop(n), "{}", String::from_utf8_lossy(n));
    }
    for n in [&b"Host"[..], b"Trailers", b"X-Connection", b"te2", b""] {
        assert!(!is_hop_by_hop(n), "{}", String::from_utf8_lossy(n));
    }
}
