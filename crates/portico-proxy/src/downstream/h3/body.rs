//! The request body of an HTTP/3 stream as the request pipeline reads it ([`RecvBody`]): DATA
//! frames, then the trailers (checked with the shared trailer field rules). A body longer or
//! shorter than its `content-length` is malformed (RFC 9114 §4.1.2). Failures are a
//! [`RecvError`], which `reqbody` turns into the pipeline's `BodyCut`.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Frame, SizeHint};

/// The receiving half of a request stream.
pub type RecvSide = RequestStream<h3_quinn::RecvStream, Bytes>;

enum State {
    Data,
    Trailers,
    Done,
}

/// The request body of an HTTP/3 stream: DATA frames, then the trailers if any. The
/// `content-length` a request declared must match the bytes it sends.
pub struct RecvBody {
    stream: RecvSide,
    declared: Option<u64>,
    received: u64,
    state: State,
}

/// Why an HTTP/3 request body failed; always the client's doing.
#[derive(Debug)]
pub enum RecvError {
    /// The body broke the protocol: its length differs from `content-length`, its trailers
    /// break the field rules, or the stream broke HTTP/3 framing.
    Malformed(String),
    /// The client reset the stream or closed the connection before the body ended.
    Aborted(h3::error::StreamError),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Malformed(why) => write!(f, "malformed HTTP/3 request body: {why}"),
            RecvError::Aborted(e) => write!(f, "HTTP/3 request body aborted: {e}"),
        }
    }
}

impl std::error::Error for RecvError {}

fn cut(why: &str) -> RecvError {
    RecvError::Malformed(why.to_string())
}

fn stream_cut(e: h3::error::StreamError) -> RecvError {
    match &e {
        h3::error::StreamError::StreamError { .. }
        | h3::error::StreamError::HeaderTooBig { .. } => RecvError::Malformed(e.to_string()),
        _ => RecvError::Aborted(e),
    }
}

impl RecvBody {
    /// Polls the next frame; an error says why the body failed (always the client's doing).
    pub fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RecvError>>> {
        loop {
            match self.state {
                State::Data => match ready!(self.stream.poll_recv_data(cx)) {
                    Ok(Some(mut buf)) => {
                        let data = buf.copy_to_bytes(buf.remaining());
                        self.received += data.len() as u64;
                        if self.declared.is_some_and(|d| self.received > d) {
                            self.state = State::Done;
                            return Poll::Ready(Some(Err(cut("body longer than content-length"))));
                        }
                        if data.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(None) => {
                        if self.declared.is_some_and(|d| self.received != d) {
                            self.state = State::Done;
                            return Poll::Ready(Some(Err(cut("body shorter than content-length"))));
                        }
                        self.state = State::Trailers;
                    }
                    Err(e) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(stream_cut(e))));
                    }
                },
                State::Trailers => {
                    let r = ready!(self.stream.poll_recv_trailers(cx));
                    self.state = State::Done;
                    return match r {
                        Ok(Some(t)) => match crate::downstream::field_rules::check_trailers(&t) {
                            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                            Err(why) => Poll::Ready(Some(Err(cut(why)))),
                        },
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(stream_cut(e)))),
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }

    /// A request stream's body; `declared` is its `content-length`, if any.
    pub fn new(stream: RecvSide, declared: Option<u64>) -> RecvBody {
        RecvBody {
            stream,
            declared,
            received: 0,
            state: State::Data,
        }
    }

    pub fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done) || self.declared == Some(0)
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(n) => SizeHint::with_exact(n.saturating_sub(self.received)),
            None => SizeHint::default(),
        }
    }
}
