//! What Portico's own HTTP/1 server hands to the request path besides the request itself:
//! the client connection after a `101` ([`OnUpgrade`], for the upgrade tunnel), and the
//! `100 Continue` handshake ([`Expect`]).
//!
//! Upgrade: a request that asks for one (`RequestHead::upgrade`) carries an [`OnUpgrade`] in
//! its extensions; when its answer is a `101`, the connection writes it, rejoins the socket's
//! halves, puts the bytes it already read in front ([`Prefixed`]) and sends the result. Any
//! other answer drops the sender: the connection stays HTTP/1 and parsed.
//!
//! Expect: the body asks for `100 Continue` the first time it is read; the connection, which
//! owns the write side, writes it and lets the body go on. A request answered without reading
//! its body never gets one (and its connection closes, the body being unread).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, oneshot};

pub use crate::downstream::proxy_protocol::Prefixed;

/// An upgraded client connection.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> UpgradedIo for T {}

/// The client connection once a `101` was written: the socket with the bytes already read
/// from it in front.
pub type Upgraded = Box<dyn UpgradedIo>;

/// The client connection of an upgrade request, once it is answered `101` (a request
/// extension; extensions must be `Clone`, the receiver is taken once).
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub fn new(rx: oneshot::Receiver<Upgraded>) -> OnUpgrade {
        OnUpgrade(Arc::new(Mutex::new(Some(rx))))
    }

    /// The receiver (once).
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        self.0.lock().ok().and_then(|mut r| r.take())
    }
}

const IDLE: u8 = 0;
const WANTED: u8 = 1;
const SENT: u8 = 2;

/// The `100 Continue` handshake of one request, shared by its body and its connection.
#[derive(Default)]
pub struct Expect {
    state: AtomicU8,
    /// Wakes the connection when the body asks.
    pub asked: Notify,
    body: Mutex<Option<Waker>>,
}

impl Expect {
    /// The body's side: `Ready` once `100 Continue` is out (asking for it the first time).
    pub fn poll_sent(&self, cx: &mut Context<'_>) -> Poll<()> {
        match self.state.load(Ordering::Acquire) {
            SENT => return Poll::Ready(()),
            IDLE => {
                self.state.store(WANTED, Ordering::Release);
                self.asked.notify_one();
            }
            _ => {}
        }
        if let Ok(mut w) = self.body.lock() {
            *w = Some(cx.waker().clone());
        }
        // Sent between the load and the registration: no wake-up will come.
        if self.state.load(Ordering::Acquire) == SENT {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// The connection's side: whether the body asked and is waiting.
    pub fn wanted(&self) -> bool {
        self.state.load(Ordering::Acquire) == WANTED
    }

    /// The connection wrote `100 Continue` (or gave up on it): the body goes on.
    pub fn mark_sent(&self) {
        self.state.store(SENT, Ordering::Release);
        if let Some(w) = self.body.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn expect_asks_once_and_goes_on_when_sent() {
        let x = Arc::new(Expect::default());
        assert!(!x.wanted());
        // The body's first read asks and waits.
        let body = {
            let x = x.clone();
            tokio::spawn(async move { std::future::poll_fn(|cx| x.poll_sent(cx)).await })
        };
        x.asked.notified().await;
        assert!(x.wanted());
        x.mark_sent();
        tokio::time::timeout(std::time::Duration::from_secs(5), body)
            .await
            .expect("the body went on")
            .expect("task");
        assert!(!x.wanted());
        // Later reads do not ask again.
        let waker = futures_util::task::noop_waker();
        assert!(x.poll_sent(&mut Context::from_waker(&waker)).is_ready());
    }

    #[test]
    fn on_upgrade_gives_its_receiver_once() {
        let (_tx, rx) = oneshot::channel();
        let u = OnUpgrade::new(rx);
        let copy = u.clone();
        assert!(copy.take().is_some());
        assert!(u.take().is_none());
    }
}
