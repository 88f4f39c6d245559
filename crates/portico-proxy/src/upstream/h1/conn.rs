//! One HTTP/1.1 connection to an upstream: its byte stream (TCP or TLS, boxed behind one
//! trait) and its read buffer, which outlives each exchange so that a keep-alive connection
//! keeps its allocation, plus the breaker slot it holds for its life.
//!
//! Hand-written (with `portico-h1`) instead of hyper's `client::conn::http1` because hyper's
//! client needs a spawned task per connection and a channel hop per request, which was a
//! large share of the per-request cost; here the request's own task drives the connection.
//! The liveness check of an idle pooled connection is a non-blocking read with a no-op waker:
//! an upstream that closed (or wrote something unasked) while the connection was idle is seen
//! before a request is written to it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use portico_h1::Limits;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::upstream::Held;

/// Largest read from an HTTP/1 upstream, and so the largest response chunk in flight (also
/// the upstream's response head limit). Backpressure: what Portico reads from an upstream
/// ahead of the client is bounded per response, so a slow reader holds back its upstream
/// instead of pinning memory.
pub const UPSTREAM_H1_MAX_BUF: usize = 16 * 1024;

/// What an upstream connection runs over: a TCP stream, a TLS stream, or (in tests) a pipe.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// An HTTP/1.1 client connection between exchanges.
pub struct H1Conn {
    pub(crate) io: Box<dyn Io>,
    /// Bytes read from the upstream and not yet consumed (empty between exchanges).
    pub(crate) buf: BytesMut,
    /// The connection breaker slot, released when the connection is dropped.
    _slot: Option<Held>,
    /// Whether this connection already carried an exchange (a failure before any response
    /// byte may then be a close that raced the request: retried on a fresh connection).
    pub(crate) reused: bool,
}

impl H1Conn {
    pub fn new(io: Box<dyn Io>, slot: Option<Held>) -> H1Conn {
        H1Conn {
            io,
            buf: BytesMut::new(),
            _slot: slot,
            reused: false,
        }
    }

    /// Whether an idle connection can carry a request: the upstream has neither closed it
    /// nor sent anything unasked. Never waits (a read polled with a no-op waker).
    pub fn idle_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut rb = ReadBuf::new(&mut probe);
        // Ready means end of stream, an error, or bytes nobody asked for: not usable.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut rb)
            .is_pending()
    }
}

/// Response head limits: the head must fit the bounded read buffer (as with hyper's
/// `max_buf_size` before).
pub(crate) fn limits() -> Limits {
    Limits {
        max_head: UPSTREAM_H1_MAX_BUF,
        ..Limits::default()
    }
}

/// Reads into `buf` once (up to what its spare capacity allows; it grows by 8 KiB steps and
/// stays within `UPSTREAM_H1_MAX_BUF` as consumed bytes are split off).
pub(crate) fn poll_fill(
    io: &mut Box<dyn Io>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        let room = (UPSTREAM_H1_MAX_BUF - buf.len().min(UPSTREAM_H1_MAX_BUF)).max(1024);
        buf.reserve(room.min(portico_h1::io::READ_CHUNK));
    }
    let fut = io.read_buf(buf);
    std::pin::pin!(fut).poll(cx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn idle_check_sees_close_and_stray_bytes() {
        let (a, b) = tokio::io::duplex(64);
        let mut c = H1Conn::new(Box::new(a), None);
        assert!(c.idle_usable());
        drop(b);
        assert!(!c.idle_usable());

        let (a, mut b) = tokio::io::duplex(64);
        let mut c = H1Conn::new(Box::new(a), None);
        b.write_all(b"x").await.ok();
        assert!(!c.idle_usable());
    }
}
