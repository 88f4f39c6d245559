//! Upstream connections: connecting, and a per-worker pool of idle ones.
//!
//! Written here rather than using hyper-util's legacy `Client` because its pool costs ~25% of
//! the proxy's user-space instructions per request (a SipHash key, a mutex, a spawned task per
//! request; see docs/benchmarks.md). Each worker thread runs a current-thread runtime, so a
//! thread-local pool is a per-worker pool: no lock, no cross-core traffic. The `RefCell` is
//! only borrowed inside synchronous closures, never across an `.await`.
//!
//! HTTP/1.1 connections are Portico's own (`upstream::h1`): an idle one is a socket and its
//! buffer, checked with a non-blocking read when taken (one the upstream closed is dropped
//! there), and handed back by its response body. HTTP/2 connections are hyper's, shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Uri, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_config::snapshot::UpstreamProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::reqbody::ReqBody;
use crate::upstream::h1::H1Conn;
use crate::upstream::tls::UpstreamTls;
use crate::upstream::{Held, UpstreamState};

// Backpressure: what Portico reads from an upstream ahead of the client is bounded per
// response, so a slow reader holds back its upstream instead of pinning memory.

/// HTTP/1 upstreams: the largest read, response chunk in flight and response head.
pub use crate::upstream::h1::conn::UPSTREAM_H1_MAX_BUF;
/// HTTP/2 upstreams: the stream window Portico advertises (response bytes an upstream may
/// send ahead of the client), and the connection window shared by the streams.
pub const UPSTREAM_H2_STREAM_WINDOW: u32 = 64 * 1024;
pub const UPSTREAM_H2_CONN_WINDOW: u32 = 4 * 1024 * 1024;

/// Identifies one endpoint of one upstream state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub uid: u64,
    pub addr: SocketAddr,
}

struct IdleH1 {
    conn: H1Conn,
    since: Instant,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Pool {
    h1: HashMap<PoolKey, Vec<IdleH1>, ahash::RandomState>,
    h2: HashMap<PoolKey, http2::SendRequest<ReqBody>, ahash::RandomState>,
    /// Connections being opened that may become shared HTTP/2 ones (`h2c`, `auto`), by id:
    /// requests arriving meanwhile wait for that one instead of each opening their own (40
    /// requests at once to a cold h2 upstream would otherwise open 40 connections). The
    /// receiver's `changed()` ends when the opener finishes, whatever the outcome.
    connecting: HashMap<PoolKey, (u64, watch::Receiver<()>), ahash::RandomState>,
    next_connecting: u64,
    /// `auto` endpoints whose last TLS handshake chose HTTP/1.1 by ALPN: their connects are
    /// not announced for sharing (waiting for them would serialise a burst's connects).
    alpn_http1: std::collections::HashSet<PoolKey, ahash::RandomState>,
}

/// Marks a connection to `key` as being opened; unmarks it (and wakes the waiters) when
/// dropped, i.e. when `connect` returns or its caller gives up.
struct Connecting {
    key: PoolKey,
    id: u64,
    _done: watch::Sender<()>,
}

impl Connecting {
    fn register(key: PoolKey) -> Connecting {
        let (tx, rx) = watch::channel(());
        let id = POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.next_connecting += 1;
            let id = p.next_connecting;
            p.connecting.insert(key, (id, rx));
            id
        });
        Connecting { key, id, _done: tx }
    }
}

impl Drop for Connecting {
    fn drop(&mut self) {
        // Runs before `_done` is dropped: woken waiters find the entry gone.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.connecting
                .get(&self.key)
                .is_some_and(|(id, _)| *id == self.id)
            {
                p.connecting.remove(&self.key);
            }
        });
    }
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A connection ready to carry one request.
pub enum Conn {
    /// Portico's own HTTP/1.1 client connection (`upstream::h1`), driven by the request.
    H1(H1Conn),
    H2(http2::SendRequest<ReqBody>),
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, no common ALPN...).
    Tls(std::io::Error),
    /// The upstream's TLS settings could not be loaded (logged when the config was applied).
    Unsupported(&'static str),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timeout"),
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
            ConnectError::Tls(e) => write!(f, "TLS handshake: {e}"),
            ConnectError::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

/// Settings for opening a connection.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    /// The upstream's TLS client settings (`https`/`auto`), built once per upstream state.
    pub tls: Option<Arc<UpstreamTls>>,
}

impl ConnectParams {
    /// The connect settings of `up` (cheap: a reference count).
    pub fn of(up: &UpstreamState) -> ConnectParams {
        ConnectParams {
            protocol: up.conf.protocol,
            connect_timeout: up.conf.connect_timeout,
            tls: up.tls.clone(),
        }
    }
}

/// Puts `req` in the form its connection needs, for TLS upstreams whose HTTP version is only
/// known once ALPN has picked it (`protocol: auto`): HTTP/2 takes an absolute URI and no
/// `Host`; HTTP/1.1 the origin form and `Host`. A no-op for the other protocols (the request path
/// already built the right form) and when the form already fits.
pub fn fit_form(req: &mut Request<ReqBody>, h2: bool, protocol: UpstreamProtocol) {
    if !matches!(protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto) {
        return;
    }
    let is_h2 = req.version() == Version::HTTP_2;
    if h2 && !is_h2 {
        let auth = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| h.to_str().ok().and_then(|h| h.parse::<Authority>().ok()))
            .unwrap_or_else(|| Authority::from_static("upstream"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = Some(auth);
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
    } else if !h2 && is_h2 {
        if let Some(a) = req.uri().authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let pq = req.uri().path_and_query().cloned();
        *req.uri_mut() = pq.map(Uri::from).unwrap_or_else(|| Uri::from_static("/"));
        *req.version_mut() = Version::HTTP_11;
    }
}

/// The shared HTTP/2 connection to `key`, if there is a live one.
fn shared_h2(key: PoolKey) -> Option<http2::SendRequest<ReqBody>> {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        match p.h2.get(&key) {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                p.h2.remove(&key);
                None
            }
            None => None,
        }
    })
}

/// Takes an idle connection to `key`, if one is usable. For `h2c`/`auto`, when a connection to
/// `key` is being opened, waits (up to `wait`, the connect timeout) for it to be shared rather
/// than having the caller open another.
pub async fn checkout(key: PoolKey, protocol: UpstreamProtocol, wait: Duration) -> Option<Conn> {
    // HTTP/2 first: always for h2c, and for `auto` when ALPN picked h2 on an earlier connection.
    if matches!(protocol, UpstreamProtocol::H2c | UpstreamProtocol::Auto) {
        let mut shared = shared_h2(key);
        if shared.is_none() {
            let pending = POOL.with(|p| p.borrow().connecting.get(&key).map(|(_, rx)| rx.clone()));
            if let Some(mut rx) = pending {
                // Ends when the opener finishes (its sender is dropped), however it went.
                let _ = tokio::time::timeout(wait, rx.changed()).await;
                shared = shared_h2(key);
            }
        }
        if let Some(mut tx) = shared
            && tx.ready().await.is_ok()
        {
            return Some(Conn::H2(tx));
        }
        // No shared connection (none yet, the opener failed, or ALPN picked HTTP/1.1): the
        // caller opens one.
        if protocol == UpstreamProtocol::H2c {
            return None;
        }
    }
    loop {
        let mut idle = POOL.with(|p| p.borrow_mut().h1.get_mut(&key).and_then(|v| v.pop()))?;
        // One the upstream closed while it was idle is dropped here, before any request.
        if idle.since.elapsed() < idle.idle_timeout && idle.conn.idle_usable() {
            return Some(Conn::H1(idle.conn));
        }
    }
}

/// Returns an HTTP/1 connection whose response finished, for the next request.
pub fn release_h1(key: PoolKey, mut conn: H1Conn, max_idle: u32, idle_timeout: Duration) {
    if max_idle == 0 {
        return;
    }
    portico_h1::io::shrink_idle(&mut conn.buf, portico_h1::io::READ_CHUNK);
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1.entry(key).or_default();
        if list.len() < max_idle as usize {
            list.push(IdleH1 {
                conn,
                since: Instant::now(),
                idle_timeout,
            });
        }
    });
}

/// Drops idle connections past their idle timeout (called periodically by each worker).
pub fn sweep() {
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.h1.retain(|_, list| {
            list.retain_mut(|c| c.since.elapsed() < c.idle_timeout && c.conn.idle_usable());
            !list.is_empty()
        });
        p.h2.retain(|_, tx| !tx.is_closed());
    });
}

/// Opens a new connection to `key.addr` (TCP, then TLS for `https`/`auto`). HTTP/2
/// connections are shared through the pool. `connect_timeout` covers TCP and TLS together.
/// `slot` (the upstream's connection breaker) is held for the connection's life.
pub async fn connect(
    key: PoolKey,
    params: ConnectParams,
    slot: Held,
) -> Result<Conn, ConnectError> {
    // Registered before the first await: on a worker's current-thread runtime no other request
    // can run between a `checkout` that found nothing and this line.
    let shareable = match params.protocol {
        UpstreamProtocol::H2c => true,
        UpstreamProtocol::Auto => POOL.with(|p| !p.borrow().alpn_http1.contains(&key)),
        _ => false,
    };
    let mut connecting = shareable.then(|| Connecting::register(key));
    let until = tokio::time::Instant::now() + params.connect_timeout;
    let stream = match tokio::time::timeout_at(until, TcpStream::connect(key.addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    match params.protocol {
        UpstreamProtocol::H2c => handshake(key, stream, true, slot).await,
        UpstreamProtocol::Http1 => handshake(key, stream, false, slot).await,
        UpstreamProtocol::Https | UpstreamProtocol::Auto => {
            let Some(tls) = params.tls else {
                return Err(ConnectError::Unsupported("upstream TLS settings unusable"));
            };
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let name = tls.server_name(key.addr);
            let stream = match tokio::time::timeout_at(until, connector.connect(name, stream)).await
            {
                Err(_) => return Err(ConnectError::Timeout),
                Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                Ok(Ok(s)) => s,
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if params.protocol == UpstreamProtocol::Auto {
                POOL.with(|p| {
                    let set = &mut p.borrow_mut().alpn_http1;
                    if h2 {
                        set.remove(&key)
                    } else {
                        set.insert(key)
                    }
                });
                if !h2 {
                    // Nothing to share: let the waiters open their own now.
                    connecting = None;
                }
            }
            let result = handshake(key, stream, h2, slot).await;
            drop(connecting);
            result
        }
    }
}

/// The HTTP handshake on an open stream.
async fn handshake<S>(key: PoolKey, stream: S, h2: bool, slot: Held) -> Result<Conn, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let io = TokioIo::new(stream);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(UPSTREAM_H2_STREAM_WINDOW)
            .initial_connection_window_size(UPSTREAM_H2_CONN_WINDOW)
            .handshake(io)
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        POOL.with(|p| p.borrow_mut().h2.insert(key, tx.clone()));
        Ok(Conn::H2(tx))
    } else {
        Ok(Conn::H1(H1Conn::new(Box::new(stream), Some(slot))))
    }
}
