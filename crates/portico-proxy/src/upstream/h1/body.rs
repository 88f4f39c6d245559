//! An upstream HTTP/1.1 response body as an `http_body::Body`: frames decoded by
//! `portico-h1`'s `BodyDecoder` straight out of the connection's buffer (data frames are
//! split off it, not copied), response trailers passed on (those that may not come in
//! trailers dropped), a close-delimited body ended by the upstream's close.
//!
//! Hand-written because the body is where the connection is driven: each `poll_frame` reads
//! at most one bounded buffer from the socket (backpressure: nothing is read ahead of the
//! client), keeps sending what is left of the request body (an upstream may answer before it
//! read it all), and, once the response and the request both ended cleanly on a keep-alive
//! connection, gives the connection back to the worker's pool — no task of its own.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use portico_h1::{BodyDecoder, Framing, H1Error, Step};

use super::conn::{H1Conn, Io, limits, poll_fill};
use super::send::{Outgoing, SendError};
use crate::reqbody::BoxError;
use crate::upstream::pool::{self, PoolKey};

/// Where a connection goes once its exchange ended cleanly.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub key: PoolKey,
    pub max_idle: u32,
    pub idle_timeout: Duration,
}

/// A response body from an HTTP/1.1 upstream.
pub struct H1Body {
    /// `None` once the body ended (the connection went back to the pool or was closed).
    conn: Option<H1Conn>,
    decoder: BodyDecoder,
    tunnel: bool,
    keep_alive: bool,
    /// The rest of the request body, when the upstream answered before it was all sent.
    /// (Boxed, as the trailers: both are rare, and the body lives in every response.)
    send: Option<Box<Outgoing>>,
    release: Option<Release>,
    /// Trailers gathered from a chunked body, handed out as the last frame.
    trailers: Option<Box<HeaderMap>>,
    done: bool,
}

/// Why a response body failed.
#[derive(Debug)]
pub enum H1BodyError {
    Io(std::io::Error),
    Parse(H1Error),
    /// The client's request body failed while it was still being sent.
    Request(BoxError),
}

impl std::fmt::Display for H1BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1BodyError::Io(e) => write!(f, "upstream body: {e}"),
            H1BodyError::Parse(e) => write!(f, "upstream body: {e}"),
            H1BodyError::Request(e) => write!(f, "request body: {e}"),
        }
    }
}

impl std::error::Error for H1BodyError {}

impl H1Body {
    pub(crate) fn new(
        conn: H1Conn,
        framing: Framing,
        keep_alive: bool,
        send: Option<Outgoing>,
        release: Option<Release>,
    ) -> H1Body {
        let mut body = H1Body {
            conn: Some(conn),
            decoder: BodyDecoder::new(framing, &limits()),
            tunnel: framing == Framing::Tunnel,
            keep_alive,
            send: send.map(Box::new),
            release,
            trailers: None,
            done: false,
        };
        if framing.is_empty() {
            body.end();
        }
        body
    }

    /// After a `101`: the raw connection and the bytes the upstream already sent past the
    /// head, for the tunnel. `None` for any other answer.
    pub fn take_upgrade(&mut self) -> Option<(Box<dyn Io>, BytesMut)> {
        if !self.tunnel {
            return None;
        }
        self.done = true;
        let conn = self.conn.take()?;
        Some((conn.io, conn.buf))
    }

    /// The body ended cleanly: the connection goes back to the pool when nothing forbids it.
    fn end(&mut self) {
        self.done = true;
        let Some(conn) = self.conn.take() else {
            return;
        };
        let request_done = self.send.as_ref().is_none_or(|s| s.is_done());
        if self.keep_alive
            && request_done
            && conn.buf.is_empty()
            && !self.tunnel
            && let Some(r) = self.release
        {
            pool::release_h1(r.key, conn, r.max_idle, r.idle_timeout);
        }
    }

    fn fail(&mut self, e: H1BodyError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.conn = None;
        Poll::Ready(Some(Err(Box::new(e))))
    }

    /// Keeps sending the request body; a write failure only stops the sending (the upstream
    /// may have closed its reading side after answering).
    fn drive_send(&mut self, cx: &mut Context<'_>) -> Result<(), H1BodyError> {
        let (Some(send), Some(conn)) = (self.send.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match send.poll_send(cx, &mut conn.io) {
            Poll::Ready(Ok(())) => self.send = None,
            Poll::Ready(Err(SendError::Body(e))) => return Err(H1BodyError::Request(e)),
            Poll::Ready(Err(SendError::Io(_) | SendError::Length)) => {
                self.keep_alive = false;
                self.send = None;
            }
            Poll::Pending => {}
        }
        Ok(())
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
        }
        if let Err(e) = this.drive_send(cx) {
            return this.fail(e);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let (used, step) = match this.decoder.decode(&conn.buf) {
                Ok(r) => r,
                Err(e) => return this.fail(H1BodyError::Parse(e)),
            };
            match step {
                Step::Data(r) => {
                    let chunk = conn.buf.split_to(used).freeze().slice(r);
                    if this.decoder.is_done() {
                        this.end();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Step::Trailer(t) => {
                    if !t.forbidden {
                        let name = HeaderName::from_bytes(&conn.buf[t.name.clone()]);
                        let value = HeaderValue::from_bytes(&conn.buf[t.value.clone()]);
                        if let (Ok(n), Ok(v)) = (name, value) {
                            this.trailers.get_or_insert_default().append(n, v);
                        }
                    }
                    conn.buf.advance(used);
                }
                Step::End => {
                    conn.buf.advance(used);
                    this.end();
                    return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                }
                Step::NeedMore => {
                    conn.buf.advance(used);
                    match poll_fill(&mut conn.io, &mut conn.buf, cx) {
                        Poll::Ready(Ok(0)) => match this.decoder.finish() {
                            Ok(()) => {
                                // A close-delimited body ended with the connection.
                                this.keep_alive = false;
                                this.end();
                                return Poll::Ready(None);
                            }
                            Err(e) => return this.fail(H1BodyError::Parse(e)),
                        },
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return this.fail(H1BodyError::Io(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decoder {
            _ if self.done => SizeHint::with_exact(0),
            BodyDecoder::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
