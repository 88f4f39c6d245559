//! Body types of the proxy: what goes upstream ([`ReqBody`]) and what goes back to the client
//! ([`RespBody`]). Both stream; neither buffers a whole body. `RespBody` also carries the
//! end-of-request work (access log line, metrics, returning the upstream connection to the
//! pool) and runs it exactly once: when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::downstream::send_watch::{Cut, SendWatch};
use crate::request::compress::Encoder;

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

/// The client's request body as Portico reads it: counted, capped at the route's size limit
/// and cut when the client pauses longer than the listener's body idle timeout. The idle timer
/// runs only while Portico is waiting on the client (not while the upstream is slow to read)
/// and only until the response starts; it is allocated only the first time the client makes
/// Portico wait.
pub struct Inbound {
    inner: Incoming,
    limit: Option<u64>,
    idle_for: Option<std::time::Duration>,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
    counter: Arc<ByteCounter>,
}

impl Inbound {
    pub fn new(
        inner: Incoming,
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
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
            Poll::Ready(Some(Err(e))) => {
                // The client's body failed (hyper could not decode it, or the client went
                // away): recorded as the client's fault before the upstream request sees it.
                let cut = inbound_error(&e);
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

/// How a response body ended, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was delivered.
    Complete,
    /// The upstream failed mid-body (reset, protocol error).
    UpstreamError,
    /// The request's deadline passed mid-body.
    DeadlineExceeded,
    /// No bytes for the route's idle timeout.
    IdleTimeout,
    /// The client went away before the end.
    Dropped,
}

/// Work to do once a response is over (logging, metrics, returning the connection).
pub trait Finish: Send {
    fn finish(self: Box<Self>, end: BodyEnd, bytes_sent: u64, at: Instant);
}

pin_project_lite::pin_project! {
    /// The body sent to the client.
    ///
    /// Its timers are made only when the upstream body actually makes it wait: most responses
    /// are already in hand when first polled, and a timer costs a clock read and a timer-wheel
    /// entry.
    pub struct RespBody {
        kind: Kind,
        bytes_sent: u64,
        deadline_at: Option<tokio::time::Instant>,
        #[pin]
        deadline: Option<tokio::time::Sleep>,
        #[pin]
        idle: Option<tokio::time::Sleep>,
        idle_for: Option<std::time::Duration>,
        // Whether `idle` counts from the last wait (cleared when bytes come).
        idle_armed: bool,
        // Send-side bounds, checked by the connection's or stream's watchdog (`send_watch`).
        watch: Option<Arc<SendWatch>>,
        finish: Option<Box<dyn Finish>>,
    }

    impl PinnedDrop for RespBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.finish.take() {
                // A body hyper never had to poll (empty, or already at its end) is complete;
                // one dropped because the watchdog cut it ends for the watchdog's reason.
                let end = match (this.kind, this.watch.as_ref().and_then(|w| w.cut())) {
                    (_, Some(Cut::Deadline)) => BodyEnd::DeadlineExceeded,
                    (_, Some(Cut::Idle)) => BodyEnd::IdleTimeout,
                    (Kind::Full(_), None) => BodyEnd::Complete,
                    (Kind::Upstream(i), None) if i.is_end_stream() => BodyEnd::Complete,
                    (Kind::Upstream(_) | Kind::Compressed(..), None) => BodyEnd::Dropped,
                };
                if let Some(w) = this.watch.as_ref() {
                    w.done();
                }
                f.finish(end, *this.bytes_sent, Instant::now());
            }
        }
    }
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(Incoming),
    /// The upstream's body through a compressor (`None` once finished).
    Compressed(Incoming, Option<Box<Encoder>>),
}

impl RespBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let b: Bytes = bytes.into();
        RespBody {
            kind: Kind::Full(if b.is_empty() { None } else { Some(b) }),
            bytes_sent: 0,
            deadline_at: None,
            deadline: None,
            idle: None,
            idle_for: None,
            idle_armed: false,
            watch: None,
            finish: None,
        }
    }

    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    /// The upstream's body, cut when `deadline` passes or when no bytes come for `idle`.
    pub fn upstream(
        inner: Incoming,
        deadline: Option<tokio::time::Instant>,
        idle: Option<std::time::Duration>,
    ) -> Self {
        RespBody {
            kind: Kind::Upstream(inner),
            bytes_sent: 0,
            deadline_at: deadline,
            deadline: None,
            idle: None,
            idle_for: idle,
            idle_armed: false,
            watch: SendWatch::new(deadline, idle),
            finish: None,
        }
    }

    /// Compresses the upstream body with `enc` from here on.
    pub fn compressed(mut self, enc: Encoder) -> Self {
        if let Kind::Upstream(inner) = std::mem::replace(&mut self.kind, Kind::Full(None)) {
            self.kind = Kind::Compressed(inner, Some(Box::new(enc)));
        }
        self
    }

    /// The send-side bounds of this body, for the watchdog of whatever writes it.
    pub fn send_watch(&self) -> Option<&Arc<SendWatch>> {
        self.watch.as_ref()
    }

    /// Attaches the end-of-request work; runs exactly once.
    pub fn with_finish(mut self, f: Box<dyn Finish>) -> Self {
        self.finish = Some(f);
        self
    }
}

/// The upstream body made us wait: arms the deadline (once) and the idle timer (from now,
/// unless armed since the last bytes) and polls them.
fn poll_timers(
    cx: &mut Context<'_>,
    deadline_at: Option<tokio::time::Instant>,
    mut deadline: Pin<&mut Option<tokio::time::Sleep>>,
    idle_for: Option<std::time::Duration>,
    mut idle: Pin<&mut Option<tokio::time::Sleep>>,
    idle_armed: &mut bool,
) -> Option<Cut> {
    if let Some(at) = deadline_at {
        if deadline.is_none() {
            deadline.set(Some(tokio::time::sleep_until(at)));
        }
        if let Some(d) = deadline.as_mut().as_pin_mut()
            && d.poll(cx).is_ready()
        {
            return Some(Cut::Deadline);
        }
    }
    if let Some(d) = idle_for {
        if !*idle_armed {
            let when = tokio::time::Instant::now() + d;
            match idle.as_mut().as_pin_mut() {
                Some(s) => s.reset(when),
                None => idle.set(Some(tokio::time::sleep_until(when))),
            }
            *idle_armed = true;
        }
        if let Some(i) = idle.as_mut().as_pin_mut()
            && i.poll(cx).is_ready()
        {
            return Some(Cut::Idle);
        }
    }
    None
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
            Kind::Compressed(inner, enc) => loop {
                let Some(e) = enc.as_mut() else { break None };
                match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        *this.idle_armed = false;
                        // Trailers are dropped: a compressed body is plain content.
                        let Ok(data) = frame.into_data() else {
                            continue;
                        };
                        match e.push(&data) {
                            Ok(out) if out.is_empty() => continue,
                            Ok(out) => break Some(Ok(Frame::data(out))),
                            Err(err) => break Some(Err(Box::new(err) as BoxError)),
                        }
                    }
                    Poll::Ready(Some(Err(err))) => break Some(Err(Box::new(err) as BoxError)),
                    Poll::Ready(None) => {
                        let last = enc.take().map(|e| e.finish());
                        match last {
                            Some(Ok(out)) if !out.is_empty() => break Some(Ok(Frame::data(out))),
                            Some(Err(err)) => break Some(Err(Box::new(err) as BoxError)),
                            _ => break None,
                        }
                    }
                    Poll::Pending => match poll_timers(
                        cx,
                        *this.deadline_at,
                        this.deadline.as_mut(),
                        *this.idle_for,
                        this.idle.as_mut(),
                        this.idle_armed,
                    ) {
                        Some(cut) => break Some(Err(Box::new(cut) as BoxError)),
                        None => return Poll::Pending,
                    },
                }
            },
            Kind::Upstream(inner) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(r) => {
                    // Bytes came: the idle timer counts from the next wait.
                    *this.idle_armed = false;
                    r.map(|r| r.map_err(|e| Box::new(e) as BoxError))
                }
                Poll::Pending => match poll_timers(
                    cx,
                    *this.deadline_at,
                    this.deadline.as_mut(),
                    *this.idle_for,
                    this.idle.as_mut(),
                    this.idle_armed,
                ) {
                    Some(cut) => Some(Err(Box::new(cut) as BoxError)),
                    None => return Poll::Pending,
                },
            },
        };
        match &res {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    *this.bytes_sent += d.len() as u64;
                    if let Some(w) = this.watch.as_ref() {
                        w.progress(d.len());
                    }
                }
            }
            Some(Err(e)) => {
                let end = match e.downcast_ref::<Cut>() {
                    Some(Cut::Deadline) => BodyEnd::DeadlineExceeded,
                    Some(Cut::Idle) => BodyEnd::IdleTimeout,
                    None => BodyEnd::UpstreamError,
                };
                if let Some(w) = this.watch.as_ref() {
                    w.done();
                }
                if let Some(f) = this.finish.take() {
                    f.finish(end, *this.bytes_sent, Instant::now());
                }
            }
            None => {
                if let Some(w) = this.watch.as_ref() {
                    w.done();
                }
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
            Kind::Compressed(_, enc) => enc.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(i) => i.size_hint(),
            Kind::Compressed(..) => SizeHint::default(),
        }
    }
}
