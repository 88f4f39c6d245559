//! Body types of the proxy: what goes upstream ([`ReqBody`]) and what goes back to the client
//! ([`RespBody`]). Both stream; neither buffers a whole body. `RespBody` also carries the
//! end-of-request work (access log line, metrics, returning the upstream connection to the
//! pool) and runs it exactly once: when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts request body bytes as they stream upstream.
#[derive(Debug, Default)]
pub struct ByteCounter(AtomicU64);

impl ByteCounter {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The body sent upstream.
pub enum ReqBody {
    Empty,
    /// The client's body, streamed, with its byte count.
    Stream {
        inner: Incoming,
        counter: Arc<ByteCounter>,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Stream { inner, counter } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Ok(f)) = &frame
                    && let Some(d) = f.data_ref()
                {
                    counter.add(d.len());
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Stream { inner, .. } => inner.size_hint(),
        }
    }
}

/// How a response body ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was delivered.
    Complete,
    /// The upstream failed mid-body (reset, protocol error, deadline).
    UpstreamError,
    /// The client went away before the end.
    Dropped,
}

/// Work to do once a response is over (logging, metrics, returning the connection).
pub trait Finish: Send {
    fn finish(self: Box<Self>, end: BodyEnd, bytes_sent: u64, at: Instant);
}

pin_project_lite::pin_project! {
    /// The body sent to the client.
    pub struct RespBody {
        kind: Kind,
        bytes_sent: u64,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        finish: Option<Box<dyn Finish>>,
    }

    impl PinnedDrop for RespBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.finish.take() {
                // A body hyper never had to poll (empty, or already at its end) is complete.
                let end = match this.kind {
                    Kind::Full(_) => BodyEnd::Complete,
                    Kind::Upstream(i) if i.is_end_stream() => BodyEnd::Complete,
                    Kind::Upstream(_) => BodyEnd::Dropped,
                };
                f.finish(end, *this.bytes_sent, Instant::now());
            }
        }
    }
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming),
}

/// Error raised when the request deadline passes while the response body streams.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request deadline reached while streaming the response")
    }
}

impl std::error::Error for DeadlineExceeded {}

impl RespBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        RespBody {
            kind: Kind::Full(if b.is_empty() { None } else { Some(b) }),
            bytes_sent: 0,
            deadline: None,
            finish: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub fn upstream(inner: Incoming, deadline: Option<tokio::time::Instant>) -> Self {
        RespBody {
            kind: Kind::Upstream(inner),
            bytes_sent: 0,
            deadline: deadline.map(tokio::time::sleep_until),
            finish: None,
        }
    }

    /// Attaches the end-of-request work; runs exactly once.
    pub fn with_finish(mut self, f: Box<dyn Finish>) -> Self {
        self.finish = Some(f);
        self
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let res: Option<Result<Frame<Bytes>, BoxError>> = match this.kind {
            Kind::Full(b) => b.take().map(|b| Ok(Frame::data(b))),
            Kind::Upstream(inner) => {
                if let Some(d) = this.deadline.as_mut().as_pin_mut()
                    && d.poll(cx).is_ready()
                {
                    Some(Err(Box::new(DeadlineExceeded) as BoxError))
                } else {
                    match Pin::new(inner).poll_frame(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(r) => r.map(|r| r.map_err(|e| Box::new(e) as BoxError)),
                    }
                }
            }
        };
        match &res {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes_sent += d.len() as u64;
                }
            }
            Some(Err(_)) => {
                if let Some(f) = this.finish.take() {
                    f.finish(BodyEnd::UpstreamError, *this.bytes_sent, Instant::now());
                }
            }
            None => {
                if let Some(f) = this.finish.take() {
                    f.finish(BodyEnd::Complete, *this.bytes_sent, Instant::now());
                }
            }
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(i) => i.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(i) => i.size_hint(),
        }
    }
}
