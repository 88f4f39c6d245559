//! The request body sent upstream ([`ReqBody`]) and what it is read from: the client's body
//! as Portico reads it ([`Inbound`]: counted, capped, cut when idle), with [`ByteCounter`]
//! and [`BodyCut`], why reading it stopped early. Apart from `body.rs` (which re-exports it
//! all) so that the upstream HTTP/1 client, which sends a `ReqBody`, and the response body,
//! which wraps that client's body, do not depend on each other.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::downstream::h1::body::{RecvBody, RecvError};
use crate::downstream::h3::body::{RecvBody as H3Body, RecvError as H3Error};
/// The error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts request body bytes as they are read from the client, and records why Portico
/// stopped reading early (if it did).
#[derive(Debug, Default)]
pub struct ByteCounter {
    bytes: AtomicU64,
    cut: AtomicU8,
    /// The upstream's response head has arrived: the body idle timeout no longer applies
    /// (the route's `idle_timeout_ms` governs the stream from there).
    responded: AtomicBool,
    /// A streamed body is being read from the client (set when reading starts) and has not
    /// ended yet (cleared at its end): while so, a stalled exchange may be the client's doing.
    pending: AtomicBool,
}

impl ByteCounter {
    pub fn add(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Why the request body was cut short by Portico, if it was.
    pub fn cut(&self) -> Option<BodyCut> {
        match self.cut.load(Ordering::Relaxed) {
            1 => Some(BodyCut::TooLarge),
            2 => Some(BodyCut::Idle),
            3 => Some(BodyCut::Malformed),
            4 => Some(BodyCut::Aborted),
            _ => None,
        }
    }
    /// Whether the client's body is still arriving (started and neither ended nor failed):
    /// a timeout now cannot be blamed on the upstream alone.
    pub fn body_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }
    /// The response has started (ends the request body idle timeout).
    pub fn mark_responded(&self) {
        self.responded.store(true, Ordering::Relaxed);
    }
    fn set_cut(&self, c: BodyCut) {
        let v = match c {
            BodyCut::TooLarge => 1,
            BodyCut::Idle => 2,
            BodyCut::Malformed => 3,
            BodyCut::Aborted => 4,
        };
        self.cut.store(v, Ordering::Relaxed);
    }
}

/// Why a client's request body ended early. Every one of these is the client's doing (or
/// Portico's limit on the client): it never counts against the upstream, whose request merely
/// fails along with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCut {
    /// The body crossed the route's `max_request_body_bytes` (413, flag DPE).
    TooLarge,
    /// The client sent nothing for the listener's `request_body_idle_timeout_ms` (408, flag SI).
    Idle,
    /// The body's framing is invalid: a bad chunk size or chunk line, a chunk not followed by
    /// CRLF, a bad trailer (RFC 9112 §7.1), or an HTTP/2 stream that broke its own framing
    /// (400, flag DPE).
    Malformed,
    /// The client closed or reset its connection (or stream) before the body ended (flag DC).
    Aborted,
}

impl std::fmt::Display for BodyCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyCut::TooLarge => f.write_str("request body too large"),
            BodyCut::Idle => f.write_str("request body idle timeout"),
            BodyCut::Malformed => f.write_str("malformed request body"),
            BodyCut::Aborted => f.write_str("client closed before the request body ended"),
        }
    }
}

impl std::error::Error for BodyCut {}

/// The client's request body as the server connection hands it over: hyper's (HTTP/2) or
/// Portico's own HTTP/1 server's (`downstream::h1`).
pub enum ClientBody {
    Hyper(Incoming),
    /// Boxed: the request (and its body) is moved between the phases; most have no body.
    H1(Box<RecvBody>),
    /// No body (an HTTP/1 request without one).
    Empty,
    /// An HTTP/3 request stream's body (`downstream::h3`).
    H3(Box<H3Body>),
}

/// Why a client's body failed (always the client's doing) and the underlying error.
type ClientBodyError = (BodyCut, BoxError);

impl ClientBody {
    /// Polls the next frame; an error says why the body failed (always the client's doing).
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self {
            ClientBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| (inbound_error(&e), Box::new(e) as BoxError)),
            ClientBody::H1(b) => Pin::new(&mut **b).poll_frame(cx).map_err(|e| {
                let cut = match e {
                    RecvError::Malformed(_) => BodyCut::Malformed,
                    RecvError::Aborted(_) => BodyCut::Aborted,
                };
                (cut, Box::new(e) as BoxError)
            }),
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H3(b) => b.poll_client(cx).map_err(|e| {
                let cut = match e {
                    H3Error::Malformed(_) => BodyCut::Malformed,
                    H3Error::Aborted(_) => BodyCut::Aborted,
                };
                (cut, Box::new(e) as BoxError)
            }),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().poll_client(cx).map_err(|(_, e)| e)
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::H1(b) => b.is_end_stream(),
            ClientBody::Empty => true,
            ClientBody::H3(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::H1(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H3(b) => b.size_hint(),
        }
    }
}

/// The client's request body as Portico reads it: counted, capped at the route's size limit
/// and cut when the client pauses longer than the listener's body idle timeout. The idle timer
/// runs only while Portico is waiting on the client (not while the upstream is slow to read)
/// and only until the response starts; it is allocated only the first time the client makes
/// Portico wait.
pub struct Inbound {
    inner: ClientBody,
    limit: Option<u64>,
    idle_for: Option<std::time::Duration>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    counter: Arc<ByteCounter>,
}

impl Inbound {
    pub fn new(
        inner: ClientBody,
        limit: Option<u64>,
        idle_for: Option<std::time::Duration>,
        counter: Arc<ByteCounter>,
    ) -> Self {
        counter
            .pending
            .store(!inner.is_end_stream(), Ordering::Relaxed);
        Inbound {
            inner,
            limit,
            idle_for,
            idle: None,
            waiting: false,
            counter,
        }
    }

    fn fail(&mut self, c: BodyCut) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.counter.set_cut(c);
        self.counter.pending.store(false, Ordering::Relaxed);
        self.idle = None;
        Poll::Ready(Some(Err(Box::new(c))))
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(c) = this.counter.cut() {
            // Never a clean end after a cut: the upstream must not take a truncated body.
            return Poll::Ready(Some(Err(Box::new(c))));
        }
        match this.inner.poll_client(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(d) = frame.data_ref() {
                    this.counter.add(d.len());
                    if this.limit.is_some_and(|l| this.counter.get() > l) {
                        return this.fail(BodyCut::TooLarge);
                    }
                } else if let Some(t) = frame.trailers_ref()
                    && let Err(why) = crate::downstream::field_rules::check_trailers(t)
                {
                    tracing::debug!(reason = why, "request trailers refused");
                    return this.fail(BodyCut::Malformed);
                }
                // The reader may stop at the last frame without asking for the end.
                if this.inner.is_end_stream() {
                    this.counter.pending.store(false, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err((cut, e)))) => {
                // The client's body failed (it could not be decoded, or the client went
                // away): recorded as the client's fault before the upstream request sees it.
                tracing::debug!(error = %e, reason = %cut, "request body failed");
                this.fail(cut)
            }
            Poll::Ready(None) => {
                this.waiting = false;
                this.counter.pending.store(false, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Pending => {
                let Some(d) = this.idle_for else {
                    return Poll::Pending;
                };
                if this.counter.responded.load(Ordering::Relaxed) {
                    this.idle = None;
                    this.idle_for = None;
                    return Poll::Pending;
                }
                let deadline = tokio::time::Instant::now() + d;
                let timer = match &mut this.idle {
                    Some(t) => {
                        if !this.waiting {
                            t.as_mut().reset(deadline);
                        }
                        t
                    }
                    None => this
                        .idle
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                this.waiting = true;
                if timer.as_mut().poll(cx).is_ready() {
                    return this.fail(BodyCut::Idle);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.counter.cut().is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why reading a client's body failed: invalid framing (hyper's decoder reports it as
/// `InvalidInput`/`InvalidData`, as for the byte the HTTP/1 gate substitutes for a bad chunk
/// line; an HTTP/2 stream error Portico's side raised) or a client that went away (end of
/// stream mid-body, a reset, any other I/O error).
pub fn inbound_error(e: &hyper::Error) -> BodyCut {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                    BodyCut::Malformed
                }
                _ => BodyCut::Aborted,
            };
        }
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            let ours = !h.is_remote() && !h.is_io() && !h.is_go_away();
            return if ours && h.reason() == Some(h2::Reason::PROTOCOL_ERROR) {
                BodyCut::Malformed
            } else {
                BodyCut::Aborted
            };
        }
        source = s.source();
    }
    BodyCut::Aborted
}

/// The body sent upstream.
pub enum ReqBody {
    Empty,
    /// A body read whole beforehand (so it can be sent again on a retry).
    Full(Option<Bytes>),
    /// The client's body, streamed; `prefix` was read before streaming started (while
    /// deciding whether the body fits the replay buffer).
    Stream {
        prefix: Option<Bytes>,
        inner: Inbound,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Stream { prefix, inner } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(inner).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream {
                prefix: Some(_), ..
            } => false,
            ReqBody::Stream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream { prefix, inner } => {
                let p = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let h = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(h.lower() + p);
                if let Some(u) = h.upper() {
                    out.set_upper(u + p);
                }
                out
            }
        }
    }
}
