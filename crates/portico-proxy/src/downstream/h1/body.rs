//! The client's request body on Portico's own HTTP/1 server: decoded in place from the
//! connection's read buffer by `portico-h1`'s [`BodyDecoder`] (the same strict decoder that
//! decides framing, so what is checked is what is forwarded).
//!
//! While a request with a body is in flight the body owns the connection's read side
//! ([`ReadSide`]: the stream's read half and its buffer) and reads from the socket itself, in the task
//! that consumes it (the upstream exchange); no channel, no second task. When the body ends,
//! fails or is dropped it hands the read side back through [`Home`], saying whether the body
//! was read to its end; the connection then reads the next request from the same buffer, or
//! closes when the body was left unfinished.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use portico_h1::{BodyDecoder, H1Error, Step};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::handoff::Expect;

/// The connection's read half, type-erased so the body type is not generic.
pub trait ReadIo: AsyncRead + Send + Sync + Unpin + 'static {
    /// The concrete stream or read half back (to rejoin it with its write half).
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
    /// The concrete stream (the connection loop writes through it while it owns the whole
    /// stream, see `conn.rs`).
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

impl<T: AsyncRead + Send + Sync + Unpin + 'static> ReadIo for T {
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Most a read buffer grows to while a body is read (the head limit bounds it for heads).
const READ_CHUNK: usize = 16 * 1024;

/// The read side of a downstream HTTP/1 connection.
pub struct ReadSide {
    pub io: Box<dyn ReadIo>,
    pub buf: BytesMut,
}

impl ReadSide {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(READ_CHUNK);
        }
        let fut = self.io.read_buf(&mut self.buf);
        std::pin::pin!(fut).poll(cx)
    }
}

/// Where a body returns the read side.
#[derive(Default)]
pub struct Home {
    slot: Mutex<Option<(ReadSide, bool)>>,
}

impl Home {
    fn put(&self, side: ReadSide, complete: bool) {
        if let Ok(mut s) = self.slot.lock() {
            *s = Some((side, complete));
        }
    }

    /// The read side, if the body gave it back, and whether the body was read to its end.
    pub fn take(&self) -> Option<(ReadSide, bool)> {
        self.slot.lock().ok().and_then(|mut s| s.take())
    }
}

/// Why the client's body could not be read.
#[derive(Debug)]
pub enum RecvError {
    /// Its framing is invalid (a bad chunk line, a chunk without CRLF, a bad trailer).
    Malformed(H1Error),
    /// The client closed or reset the connection before the body ended.
    Aborted(Option<io::Error>),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Malformed(e) => write!(f, "malformed request body: {e}"),
            RecvError::Aborted(Some(e)) => write!(f, "client connection failed mid-body: {e}"),
            RecvError::Aborted(None) => f.write_str("client closed the connection mid-body"),
        }
    }
}

impl std::error::Error for RecvError {}

/// A request body read from a downstream HTTP/1 connection.
pub struct RecvBody {
    side: Option<ReadSide>,
    decoder: BodyDecoder,
    home: Arc<Home>,
    trailers: Option<HeaderMap>,
    done: bool,
    /// `Expect: 100-continue`: asked for on the first read, then waited for.
    expect: Option<Arc<Expect>>,
}

impl RecvBody {
    pub fn new(
        side: ReadSide,
        decoder: BodyDecoder,
        home: Arc<Home>,
        expect: Option<Arc<Expect>>,
    ) -> Self {
        RecvBody {
            side: Some(side),
            decoder,
            home,
            trailers: None,
            done: false,
            expect,
        }
    }

    fn finish(&mut self, complete: bool) {
        self.done = true;
        if let Some(side) = self.side.take() {
            self.home.put(side, complete);
        }
    }

    fn fail(&mut self, e: RecvError) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        self.finish(false);
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let complete = self.decoder.is_done();
        self.finish(complete);
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = RecvError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        if let Some(e) = &this.expect {
            if e.poll_sent(cx).is_pending() {
                return Poll::Pending;
            }
            this.expect = None;
        }
        loop {
            let Some(side) = this.side.as_mut() else {
                return Poll::Ready(None);
            };
            let (used, step) = match this.decoder.decode(&side.buf) {
                Ok(r) => r,
                Err(e) => return this.fail(RecvError::Malformed(e)),
            };
            match step {
                Step::Data(r) => {
                    let chunk = side.buf.split_to(used).freeze().slice(r);
                    if this.decoder.is_done() {
                        this.finish(true);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Step::Trailer(t) => {
                    if t.forbidden {
                        return this.fail(RecvError::Malformed(H1Error::BadTrailer));
                    }
                    let name = HeaderName::from_bytes(&side.buf[t.name.clone()]);
                    let value = HeaderValue::from_bytes(&side.buf[t.value.clone()]);
                    match (name, value) {
                        (Ok(n), Ok(v)) => {
                            this.trailers.get_or_insert_default().append(n, v);
                        }
                        _ => return this.fail(RecvError::Malformed(H1Error::BadTrailer)),
                    }
                    side.buf.advance(used);
                }
                Step::End => {
                    side.buf.advance(used);
                    this.finish(true);
                    return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                Step::NeedMore => {
                    side.buf.advance(used);
                    match side.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => return this.fail(RecvError::Aborted(None)),
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return this.fail(RecvError::Aborted(Some(e))),
                        Poll::Pending => return Poll::Pending,
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        (self.done || self.decoder.is_done()) && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decoder {
            _ if self.done => SizeHint::with_exact(0),
            BodyDecoder::Length(n) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use portico_h1::{Framing, Limits};
    use tokio::io::AsyncWriteExt;

    fn body_over(first: &[u8], framing: Framing) -> (tokio::io::DuplexStream, RecvBody, Arc<Home>) {
        let (client, server) = tokio::io::duplex(1024);
        let home = Arc::new(Home::default());
        let side = ReadSide {
            io: Box::new(server),
            buf: BytesMut::from(first),
        };
        let decoder = BodyDecoder::new(framing, &Limits::default());
        (
            client,
            RecvBody::new(side, decoder, home.clone(), None),
            home,
        )
    }

    #[tokio::test]
    async fn decodes_in_place_and_hands_the_read_side_back_with_the_next_request() {
        let (mut client, body, home) = body_over(b"5\r\nhel", Framing::Chunked);
        client
            .write_all(b"lo\r\n0\r\nx-t: 1\r\n\r\nGET /next")
            .await
            .unwrap();
        let got = body.collect().await.unwrap();
        assert_eq!(got.trailers().and_then(|t| t.get("x-t")).unwrap(), "1");
        assert_eq!(got.to_bytes(), "hello");
        let (side, complete) = home.take().expect("the read side came back");
        assert!(complete);
        assert_eq!(&side.buf[..], b"GET /next");
    }

    #[tokio::test]
    async fn an_unread_body_comes_back_incomplete_and_a_bad_chunk_fails() {
        let (_client, body, home) = body_over(b"ab", Framing::Length(5));
        drop(body);
        let (_, complete) = home.take().expect("the read side came back");
        assert!(!complete);

        let (_client, body, home) = body_over(b"zz\r\n", Framing::Chunked);
        match body.collect().await {
            Err(RecvError::Malformed(_)) => {}
            other => panic!("{:?}", other.map(|c| c.to_bytes())),
        }
        assert!(matches!(home.take(), Some((_, false))));
    }
}
