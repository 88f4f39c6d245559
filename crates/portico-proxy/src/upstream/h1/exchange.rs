//! One request/response exchange on an [`H1Conn`]: the request (`send.rs`) goes out while
//! the response head is read and parsed by `portico-h1` (an upstream may answer early, e.g.
//! 413, before it read the body), interim 1xx answers skipped, the head turned into the
//! `http::Response` the request phases work on (values share the head's bytes), and the body
//! left to [`H1Body`].
//!
//! Hand-written for the reasons `conn.rs` gives: no spawned connection task, no channel hop;
//! the request's own task polls the socket. It also decides what a failure means for a
//! retry: only a reused connection that gave no byte of an answer hands the request back.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use portico_h1::{Framing, H1Error, RequestContext, ResponseHead, ResponseParser};

use super::body::{H1Body, Release};
use super::conn::{H1Conn, limits, poll_fill};
use super::send::{Outgoing, SendError, req_framing, write_head};
use crate::reqbody::{BoxError, ReqBody};

/// Why an exchange gave no response head.
#[derive(Debug)]
pub enum ExchangeError {
    Io(io::Error),
    /// The upstream's answer is not valid HTTP/1.
    Parse(H1Error),
    /// The upstream closed the connection before a whole response head.
    Eof,
    /// The client's request body failed (the client's fault, see `ByteCounter::cut`).
    Body(BoxError),
    /// The request body did not match its `Content-Length`.
    Length,
}

impl std::fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExchangeError::Io(e) => write!(f, "i/o: {e}"),
            ExchangeError::Parse(e) => write!(f, "invalid response: {e}"),
            ExchangeError::Eof => f.write_str("connection closed before the response head"),
            ExchangeError::Body(e) => write!(f, "request body: {e}"),
            ExchangeError::Length => f.write_str("request body does not match its length"),
        }
    }
}

impl std::error::Error for ExchangeError {}

/// A failed exchange; `back` is the request when it may go again on a fresh connection (the
/// connection was reused, no response byte came, and the body can be sent again).
pub struct Failure {
    pub error: ExchangeError,
    pub back: Option<Request<ReqBody>>,
}

/// Whether the request asks for an upgrade (`Connection: upgrade` and `Upgrade`).
fn asks_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
        })
}

/// Sends `req` on `conn` and reads the response head (interim 1xx answers skipped). The
/// response body (and what remains of the request body) is driven by the returned
/// [`H1Body`], which gives the connection to `release` when both ended cleanly.
pub async fn exchange(
    mut conn: H1Conn,
    req: Request<ReqBody>,
    release: Option<Release>,
) -> Result<Response<H1Body>, Failure> {
    let reused = std::mem::replace(&mut conn.reused, true);
    let (parts, body) = req.into_parts();
    let ctx = RequestContext {
        head: parts.method == Method::HEAD,
        connect: parts.method == Method::CONNECT,
        upgrade: asks_upgrade(&parts.headers),
    };
    let framing = req_framing(&parts, &body);
    let mut send = Outgoing::new(body, framing);
    write_head(&parts, framing, &mut send.out);
    let mut parser = ResponseParser::new(limits());
    let mut any_byte = false;
    let mut write_failed: Option<io::Error> = None;
    let head = poll_fn(|cx| {
        if write_failed.is_none() && !send.is_done() {
            match send.poll_send(cx, &mut conn.io) {
                Poll::Ready(Err(SendError::Io(e))) => write_failed = Some(e),
                Poll::Ready(Err(SendError::Body(e))) => {
                    return Poll::Ready(Err(ExchangeError::Body(e)));
                }
                Poll::Ready(Err(SendError::Length)) => {
                    return Poll::Ready(Err(ExchangeError::Length));
                }
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        poll_head(
            cx,
            &mut conn,
            &mut parser,
            ctx,
            &mut any_byte,
            &mut write_failed,
        )
    })
    .await;
    match head {
        Ok(head) => {
            let send = (write_failed.is_none() && !send.is_done()).then_some(send);
            let reusable = write_failed.is_none();
            response(conn, head, send, reusable, release)
                .map_err(|error| Failure { error, back: None })
        }
        Err(error) => {
            let back = (reused && !any_byte)
                .then(|| send.take_back())
                .flatten()
                .map(|b| Request::from_parts(parts, b));
            Err(Failure { error, back })
        }
    }
}

/// Reads until a final response head is parsed.
fn poll_head(
    cx: &mut Context<'_>,
    conn: &mut H1Conn,
    parser: &mut ResponseParser,
    ctx: RequestContext,
    any_byte: &mut bool,
    write_failed: &mut Option<io::Error>,
) -> Poll<Result<ResponseHead, ExchangeError>> {
    loop {
        match parser.parse(&mut conn.buf, ctx) {
            Err(e) => return Poll::Ready(Err(ExchangeError::Parse(e))),
            Ok(Some(h)) if h.is_interim() => continue,
            Ok(Some(h)) => return Poll::Ready(Ok(h)),
            Ok(None) => {}
        }
        match poll_fill(&mut conn.io, &mut conn.buf, cx) {
            Poll::Ready(Ok(0)) => {
                let e = write_failed
                    .take()
                    .map_or(ExchangeError::Eof, ExchangeError::Io);
                return Poll::Ready(Err(e));
            }
            Poll::Ready(Ok(_)) => *any_byte = true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Io(e))),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// The response for the request phases: status, version and fields (values share the
/// head's bytes), with the body reader.
fn response(
    conn: H1Conn,
    head: ResponseHead,
    send: Option<Outgoing>,
    reusable: bool,
    release: Option<Release>,
) -> Result<Response<H1Body>, ExchangeError> {
    let status = StatusCode::from_u16(head.status())
        .map_err(|_| ExchangeError::Parse(H1Error::BadStatusLine))?;
    let fields = head.headers();
    let bytes = head.bytes();
    let mut map = HeaderMap::with_capacity(fields.len());
    for (name, value) in fields.iter() {
        let bad = || ExchangeError::Parse(H1Error::BadHeader);
        let name = HeaderName::from_bytes(name).map_err(|_| bad())?;
        let value = if value.is_empty() {
            HeaderValue::from_static("")
        } else {
            HeaderValue::from_maybe_shared(bytes.slice_ref(value)).map_err(|_| bad())?
        };
        map.append(name, value);
    }
    let version = match head.version() {
        portico_h1::Version::Http10 => Version::HTTP_10,
        portico_h1::Version::Http11 => Version::HTTP_11,
    };
    let framing = head.framing();
    let keep_alive = head.keep_alive() && reusable && framing != Framing::Tunnel;
    let body = H1Body::new(conn, framing, keep_alive, send, release);
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = map;
    Ok(resp)
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
