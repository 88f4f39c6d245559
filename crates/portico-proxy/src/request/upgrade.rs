//! HTTP/1.1 `Upgrade` (WebSocket) through the proxy, for Mappings with `allow_upgrade`.
//!
//! The request path asks [`take`] before it strips hop-by-hop headers:
//! - no upgrade asked (or `Upgrade: h2c`, which is ignored as Envoy and nginx do, so the
//!   request is answered as plain HTTP/1.1): nothing changes;
//! - an upgrade the route allows: `Connection: upgrade` and `Upgrade` are forwarded, and when the
//!   upstream answers `101 Switching Protocols`, [`Upgrade::tunnel`] joins the client's and the
//!   upstream's connections and copies bytes both ways until either side closes, or until no
//!   byte has moved either way for the route's `idle_timeout_ms`. The upstream connection is
//!   never returned to the pool; the route's `timeout_ms` ends at the upgrade (docs/reference.md §2.3.1);
//! - an upgrade the route does not allow (or through an upstream that cannot carry it: an
//!   HTTP/2-only `h2c`/`auto` upstream): **403** `upgrade not allowed`, with `connection: close`
//!   (Envoy also answers 403 to an upgrade it is not configured for). Nothing reaches the
//!   upstream.
//!
//! The access-log line of an upgraded request is written when the 101 is sent; bytes carried
//! by the tunnel are not counted in it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use portico_config::snapshot::{Route, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::body::{RespBody, UpBody};
use crate::downstream::h1::handoff;

/// An allowed upgrade, waiting for the upstream's answer.
pub struct Upgrade {
    /// The client connection, once the `101` is written (from Portico's own HTTP/1 server:
    /// no other server hands over upgrades).
    downstream: tokio::sync::oneshot::Receiver<handoff::Upgraded>,
    protocol: HeaderValue,
}

/// What a request asks for.
pub enum Asked {
    /// No upgrade: proxy as usual.
    No,
    /// An upgrade this route allows.
    Allowed(Upgrade),
    /// An upgrade this route refuses: answer [`refused`].
    Refused,
}

/// Looks at a request's `Connection`/`Upgrade` headers (before hop-by-hop stripping) and, for
/// an allowed upgrade, takes the client connection's upgrade handle out of `parts`.
pub fn take(route: &Route, protocol: UpstreamProtocol, parts: &mut http::request::Parts) -> Asked {
    if parts.version != Version::HTTP_11 {
        return Asked::No;
    }
    // Most requests have no Upgrade header: one lookup and out.
    let Some(value) = parts.headers.get(header::UPGRADE) else {
        return Asked::No;
    };
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !asks {
        return Asked::No;
    }
    // The first protocol offered (`websocket`, possibly with a version after `/`).
    let first = value
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let name = first.split(|&b| b == b'/').next().unwrap_or_default();
    if name.eq_ignore_ascii_case(b"h2c") {
        return Asked::No;
    }
    let allowed = route
        .allow_upgrade
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(name));
    // The upstream must speak HTTP/1.1 for an Upgrade (h2c and auto may be HTTP/2).
    let h1_upstream = matches!(protocol, UpstreamProtocol::Http1 | UpstreamProtocol::Https);
    if !allowed || !h1_upstream {
        return Asked::Refused;
    }
    let Ok(protocol) = HeaderValue::from_bytes(first) else {
        return Asked::Refused;
    };
    let Some(downstream) = parts
        .extensions
        .remove::<handoff::OnUpgrade>()
        .and_then(|o| o.take())
    else {
        return Asked::Refused;
    };
    Asked::Allowed(Upgrade {
        downstream,
        protocol,
    })
}

/// The answer to an upgrade the route does not allow.
pub fn refused() -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full("upgrade not allowed\n"));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    // The client may already be sending the upgraded protocol: end the connection.
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

impl Upgrade {
    /// Puts back the upgrade headers that hop-by-hop stripping removed.
    pub fn restore_request_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// On the upstream's answer: a `101` takes the upstream connection (and any bytes it
    /// sent past the head) out of `body`, starts the tunnel (in its own task) and gets its
    /// upgrade headers back; returns whether it did (the connection is then the tunnel's,
    /// never pooled). Any other answer is proxied as usual.
    pub fn tunnel(
        self,
        resp: &mut http::response::Parts,
        body: &mut UpBody,
        idle: Option<Duration>,
    ) -> bool {
        if resp.status != StatusCode::SWITCHING_PROTOCOLS {
            return false;
        }
        let UpBody::H1(h1) = body else {
            return false;
        };
        let Some((mut up, early)) = h1.take_upgrade() else {
            return false;
        };
        let upgrade_value = self.protocol.clone();
        resp.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        resp.headers.insert(header::UPGRADE, upgrade_value);
        let downstream = self.downstream;
        tokio::spawn(async move {
            let Ok(down) = downstream.await else {
                tracing::debug!("upgrade did not complete");
                return;
            };
            let clock = Arc::new(Clock::new());
            let mut down = Activity {
                inner: down,
                clock: clock.clone(),
            };
            // What the upstream sent right after its 101 goes first.
            if !early.is_empty()
                && let Err(e) = down.write_all(&early).await
            {
                log_end(Err(e));
                return;
            }
            let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
            match idle {
                Some(idle) => tokio::select! {
                    r = copy => log_end(r),
                    () = idle_for(&clock, idle) => {
                        tracing::debug!(idle_ms = idle.as_millis() as u64, "upgraded connection idle; closing");
                    }
                },
                None => log_end(copy.await),
            }
        });
        true
    }
}

fn log_end(r: io::Result<(u64, u64)>) {
    match r {
        Ok((to_up, to_down)) => {
            tracing::debug!(
                to_upstream = to_up,
                to_client = to_down,
                "upgraded connection closed"
            )
        }
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended"),
    }
}

/// When bytes last moved through a tunnel.
struct Clock {
    base: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Returns once nothing has moved for `idle`.
async fn idle_for(clock: &Clock, idle: Duration) {
    loop {
        let until = clock.last() + idle;
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep_until(until).await;
    }
}

/// The client side of a tunnel, noting activity: its reads are client→upstream bytes, its
/// writes upstream→client bytes, so it sees every byte either way.
struct Activity<T> {
    inner: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.clock.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
