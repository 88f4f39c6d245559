//! Body types of the proxy: what goes upstream ([`ReqBody`]) and what goes back to the client
//! ([`RespBody`]). Both stream; neither buffers a whole body. `RespBody` also carries the
//! end-of-request work (access log line, metrics, returning the upstream connection to the
//! pool) and runs it exactly once: when the body ends, fails, or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::downstream::send_watch::{Cut, SendWatch};
use crate::request::compress::Encoder;
use crate::upstream::h1::H1Body;

pub use crate::reqbody::{BodyCut, BoxError, ByteCounter, Inbound, ReqBody, inbound_error};

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
        // Boxed: a response body is moved several times on its way to the writer, and a
        // timer is made only when the upstream makes it wait.
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        idle: Option<Pin<Box<tokio::time::Sleep>>>,
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
    Upstream(UpBody),
    /// The upstream's body through a compressor (`None` once finished).
    Compressed(UpBody, Option<Box<Encoder>>),
}

/// An upstream's response body: from an HTTP/2 upstream (hyper's client) or an HTTP/1.1 one
/// (Portico's own client, `upstream::h1`).
pub enum UpBody {
    H2(Incoming),
    H1(H1Body),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpBody::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|r| r.map(|r| r.map_err(|e| Box::new(e) as BoxError))),
            UpBody::H1(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::H2(b) => b.is_end_stream(),
            UpBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::H2(b) => b.size_hint(),
            UpBody::H1(b) => b.size_hint(),
        }
    }
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
        inner: UpBody,
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
    deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    idle_for: Option<std::time::Duration>,
    idle: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    idle_armed: &mut bool,
) -> Option<Cut> {
    if let Some(at) = deadline_at {
        let d = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if d.as_mut().poll(cx).is_ready() {
            return Some(Cut::Deadline);
        }
    }
    if let Some(d) = idle_for {
        if !*idle_armed {
            let when = tokio::time::Instant::now() + d;
            match idle.as_mut() {
                Some(s) => s.as_mut().reset(when),
                None => *idle = Some(Box::pin(tokio::time::sleep_until(when))),
            }
            *idle_armed = true;
        }
        if let Some(i) = idle.as_mut()
            && i.as_mut().poll(cx).is_ready()
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
        let this = self.project();
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
                    Poll::Ready(Some(Err(err))) => break Some(Err(err)),
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
                        this.deadline,
                        *this.idle_for,
                        this.idle,
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
                    r
                }
                Poll::Pending => match poll_timers(
                    cx,
                    *this.deadline_at,
                    this.deadline,
                    *this.idle_for,
                    this.idle,
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
