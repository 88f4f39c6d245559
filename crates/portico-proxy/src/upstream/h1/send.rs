//! The request side of an upstream HTTP/1.1 exchange: the request head written in one
//! buffer from the `http::Request` the request phases built, then the body streamed
//! (`Content-Length` passed through, chunked re-encoded with the request trailers as a
//! chunked trailer section), flushed whenever the client makes it wait.
//!
//! Hand-written for the reasons `conn.rs` gives; the head is built from the phases'
//! `http::Request` (the downstream server is still hyper's, so there are no received lines to
//! copy). Hop-by-hop fields were already stripped by `headers.rs`; only the framing fields are
//! Portico's own here.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::Method;
use http::header::{self, HeaderMap};
use http_body::Body;
use portico_h1::encode_chunk_header;
use tokio::io::AsyncWrite;

use super::conn::Io;
use crate::reqbody::{BoxError, ReqBody};

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReqFraming {
    None,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    Chunked,
}

/// The request body's framing: the `Content-Length` the request carries, else the body's
/// exact size, else chunked; a body that is already at its end has none (`content-length: 0`
/// for the methods that expect a body).
pub(crate) fn req_framing(parts: &http::request::Parts, body: &ReqBody) -> ReqFraming {
    if let Some(n) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return ReqFraming::Length(n);
    }
    if body.is_end_stream() {
        let expects_body = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
        return if expects_body {
            ReqFraming::Length(0)
        } else {
            ReqFraming::None
        };
    }
    match body.size_hint().exact() {
        Some(n) => ReqFraming::Length(n),
        None => ReqFraming::Chunked,
    }
}

/// Writes the request head: request line (origin form), the fields as the request phases
/// left them (`Host` from the URI's authority if missing), then Portico's framing field.
pub(crate) fn write_head(parts: &http::request::Parts, framing: ReqFraming, out: &mut BytesMut) {
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let fields: usize = parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    out.reserve(parts.method.as_str().len() + target.len() + fields + 64);
    out.put_slice(parts.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
    {
        out.put_slice(b"host: ");
        out.put_slice(a.as_str().as_bytes());
        out.put_slice(b"\r\n");
    }
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match framing {
        ReqFraming::None => {}
        ReqFraming::Length(n) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        ReqFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// What can be sent again of a request body that failed before any answer.
enum Replay {
    Empty,
    Full(Bytes),
    /// A streamed body, resendable only while nothing was taken from it.
    Stream,
}

/// Why sending stopped.
pub(crate) enum SendError {
    Io(io::Error),
    Body(BoxError),
    Length,
}

/// The request side of an exchange: bytes not yet written and the body still to read.
pub(crate) struct Outgoing {
    pub(crate) out: BytesMut,
    body: Option<ReqBody>,
    framing: ReqFraming,
    replay: Replay,
    /// A frame was taken from a streamed body (it cannot be sent again).
    touched: bool,
    /// Written bytes may sit in a TLS layer's buffer.
    unflushed: bool,
}

impl Outgoing {
    pub(crate) fn new(body: ReqBody, framing: ReqFraming) -> Outgoing {
        let replay = match &body {
            ReqBody::Empty => Replay::Empty,
            ReqBody::Full(b) => Replay::Full(b.clone().unwrap_or_default()),
            ReqBody::Stream { .. } => Replay::Stream,
        };
        let body = (framing != ReqFraming::None || !body.is_end_stream()).then_some(body);
        Outgoing {
            out: BytesMut::new(),
            body,
            framing,
            replay,
            touched: false,
            unflushed: false,
        }
    }

    /// The body again, for a new attempt, if nothing of it is lost.
    pub(crate) fn take_back(self) -> Option<ReqBody> {
        match self.replay {
            Replay::Empty => Some(ReqBody::Empty),
            Replay::Full(b) => Some(ReqBody::Full((!b.is_empty()).then_some(b))),
            Replay::Stream if !self.touched => self.body,
            Replay::Stream => None,
        }
    }

    /// Writes what is pending and pulls the body until it ends (`Ready(Ok)`: all sent and
    /// flushed) or something waits.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Box<dyn Io>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while !self.out.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())));
                    }
                    Poll::Ready(Ok(n)) => {
                        self.out.advance(n);
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Io(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            let Some(body) = self.body.as_mut() else {
                return self.poll_flush(cx, io);
            };
            if matches!(body, ReqBody::Stream { .. }) {
                self.touched = true;
            }
            match Pin::new(body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => self.encode(data)?,
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            self.finish(Some(&t))?;
                        }
                    }
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(SendError::Body(e))),
                Poll::Ready(None) => self.finish(None)?,
                Poll::Pending => {
                    // Waiting on the client: what was written must reach the upstream.
                    if let Poll::Ready(Err(e)) = self.poll_flush(cx, io) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Box<dyn Io>,
    ) -> Poll<Result<(), SendError>> {
        if !self.unflushed {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut **io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(SendError::Io(e))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn encode(&mut self, data: Bytes) -> Result<(), SendError> {
        if data.is_empty() {
            return Ok(());
        }
        match &mut self.framing {
            ReqFraming::Length(left) => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(SendError::Length);
                }
                *left -= n;
                self.out.put_slice(&data);
            }
            ReqFraming::Chunked => {
                encode_chunk_header(data.len() as u64, &mut self.out);
                self.out.put_slice(&data);
                self.out.put_slice(b"\r\n");
            }
            // A body where none was announced: nothing can carry it.
            ReqFraming::None => return Err(SendError::Length),
        }
        Ok(())
    }

    /// The body ended (with `trailers`, sent only in a chunked body).
    fn finish(&mut self, trailers: Option<&HeaderMap>) -> Result<(), SendError> {
        self.body = None;
        match self.framing {
            ReqFraming::Length(0) | ReqFraming::None => Ok(()),
            ReqFraming::Length(_) => Err(SendError::Length),
            ReqFraming::Chunked => {
                self.out.put_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    self.out.put_slice(name.as_str().as_bytes());
                    self.out.put_slice(b": ");
                    self.out.put_slice(value.as_bytes());
                    self.out.put_slice(b"\r\n");
                }
                self.out.put_slice(b"\r\n");
                Ok(())
            }
        }
    }

    /// Whether everything was sent.
    pub(crate) fn is_done(&self) -> bool {
        self.body.is_none() && self.out.is_empty() && !self.unflushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;
    use http::{Method, Request};

    fn head_of(method: Method, headers: &[(&'static str, &'static str)], body: ReqBody) -> String {
        let mut r = Request::new(body);
        *r.method_mut() = method;
        *r.uri_mut() = http::Uri::from_static("http://up:8080/p?q");
        for (n, v) in headers {
            r.headers_mut().append(*n, HeaderValue::from_static(v));
        }
        let (parts, body) = r.into_parts();
        let mut out = BytesMut::new();
        write_head(&parts, req_framing(&parts, &body), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn request_heads_and_their_framing() {
        // Host from the authority when the phases left none; no framing for a bodiless GET.
        assert_eq!(
            head_of(Method::GET, &[("x-a", "1"), ("x-a", "2")], ReqBody::Empty),
            "GET /p?q HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        // A POST without body still says so.
        assert_eq!(
            head_of(Method::POST, &[("host", "h")], ReqBody::Empty),
            "POST /p?q HTTP/1.1\r\nhost: h\r\ncontent-length: 0\r\n\r\n"
        );
        // A received Content-Length is passed through in canonical form; a body read whole
        // gets its size; a received Transfer-Encoding is never copied.
        let full = ReqBody::Full(Some(Bytes::from_static(b"abc")));
        assert_eq!(
            head_of(Method::PUT, &[("host", "h"), ("content-length", "3")], full),
            "PUT /p?q HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\n"
        );
        let full = ReqBody::Full(Some(Bytes::from_static(b"abcd")));
        assert_eq!(
            head_of(
                Method::PUT,
                &[("host", "h"), ("transfer-encoding", "chunked")],
                full
            ),
            "PUT /p?q HTTP/1.1\r\nhost: h\r\ncontent-length: 4\r\n\r\n"
        );
    }

    #[test]
    fn chunked_body_with_trailers_and_length_checks() {
        let mut o = Outgoing::new(ReqBody::Empty, ReqFraming::Chunked);
        assert!(o.encode(Bytes::from_static(b"hello, world")).is_ok());
        assert!(o.encode(Bytes::new()).is_ok());
        let mut t = HeaderMap::new();
        t.insert("x-checksum", HeaderValue::from_static("abc"));
        assert!(o.finish(Some(&t)).is_ok());
        assert_eq!(
            &o.out[..],
            b"c\r\nhello, world\r\n0\r\nx-checksum: abc\r\n\r\n"
        );

        // More or fewer bytes than announced: refused, never sent as another message.
        let mut o = Outgoing::new(ReqBody::Empty, ReqFraming::Length(2));
        assert!(o.encode(Bytes::from_static(b"abc")).is_err());
        let mut o = Outgoing::new(ReqBody::Empty, ReqFraming::Length(2));
        assert!(o.encode(Bytes::from_static(b"a")).is_ok());
        assert!(o.finish(None).is_err());
    }
}
