//! Downstream keep-alive idle timeout (the Listener's `keepalive_timeout_ms`): a connection
//! with no request in flight for that long is told to finish, as a drain does (HTTP/2:
//! GOAWAY, then the connection closes; HTTP/1: closed between requests). Streams in flight are
//! never cut by it.
//!
//! A request is in flight from the moment its head is handed to the service until its
//! response body is done (sent, failed or dropped by hyper): [`Streams::open`] hands out a
//! guard that the response body carries ([`Tracked`]). The watcher ([`idle`]) holds one timer
//! per connection and reads two atomics when it fires; a request costs two atomic updates and
//! one clock read.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};

use crate::upstream::clock::now_ms;

/// The requests in flight on one downstream connection.
#[derive(Debug)]
pub struct Streams {
    open: AtomicUsize,
    /// `clock::now_ms()` when the connection last became idle (or was accepted).
    idle_since: AtomicU64,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            open: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now_ms()),
        }
    }
}

impl Streams {
    /// A request arrived: it is in flight until the guard drops.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(self.clone())
    }

    /// How long the connection has been idle at `now`; `None` while a request is in flight.
    fn idle_for(&self, now: u64) -> Option<u64> {
        if self.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(now.saturating_sub(self.idle_since.load(Ordering::Acquire)))
    }
}

/// One request in flight.
#[derive(Debug)]
pub struct StreamGuard(Arc<Streams>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Written before the count drops, by every request: a watcher that sees 0 in flight
        // never reads a time older than the last request's end.
        self.0.idle_since.store(now_ms(), Ordering::Release);
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves once the connection has had no request in flight for `timeout`.
pub async fn idle(streams: &Streams, timeout: Duration) {
    let limit = timeout.as_millis().max(1) as u64;
    loop {
        let wait = match streams.idle_for(now_ms()) {
            Some(idle) if idle >= limit => return,
            Some(idle) => limit - idle,
            None => limit,
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is dropped.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: StreamGuard,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        Tracked {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_request_to_end() {
        let streams = Arc::new(Streams::default());
        let g = streams.open();
        let watcher = idle(&streams, Duration::from_millis(50));
        tokio::pin!(watcher);
        // Busy: never idle, however long.
        assert!(
            tokio::time::timeout(Duration::from_millis(150), &mut watcher)
                .await
                .is_err()
        );
        drop(g);
        let ended = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .expect("idle after the request ended");
        let took = ended.elapsed();
        assert!(took >= Duration::from_millis(49), "{took:?}");
    }
}
