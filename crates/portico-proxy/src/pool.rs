//! Upstream connections: connecting, and a per-worker pool of idle ones.
//!
//! Written here rather than using hyper-util's legacy `Client` because its pool costs ~25% of
//! the proxy's user-space instructions per request (a SipHash key, a mutex, a spawned task per
//! request; see PERFORMANCE.md). Each worker thread runs a current-thread runtime, so a
//! thread-local pool is a per-worker pool: no lock, no cross-core traffic. The `RefCell` is
//! only borrowed inside synchronous closures, never across an `.await`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portico_config::snapshot::UpstreamProtocol;
use tokio::net::TcpStream;

use crate::body::ReqBody;
use crate::upstream::Held;

/// Identifies one endpoint of one upstream state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub uid: u64,
    pub addr: SocketAddr,
}

struct IdleH1 {
    tx: http1::SendRequest<ReqBody>,
    since: Instant,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Pool {
    h1: HashMap<PoolKey, Vec<IdleH1>, ahash::RandomState>,
    h2: HashMap<PoolKey, http2::SendRequest<ReqBody>, ahash::RandomState>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A connection ready to carry one request.
pub enum Conn {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum ConnectError {
    Timeout,
    Io(std::io::Error),
    Handshake(hyper::Error),
    /// The protocol needs TLS, which this build does not do yet for upstreams.
    Unsupported(&'static str),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Timeout => f.write_str("connect timeout"),
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Handshake(e) => write!(f, "handshake: {e}"),
            ConnectError::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

/// Settings for opening a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectParams {
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
}

/// Takes an idle connection to `key`, if one is usable. `reused` tells the caller that a
/// failure to send on it may be a stale connection.
pub async fn checkout(key: PoolKey, protocol: UpstreamProtocol) -> Option<Conn> {
    match protocol {
        UpstreamProtocol::H2c => {
            let mut tx = POOL.with(|p| {
                let mut p = p.borrow_mut();
                match p.h2.get(&key) {
                    Some(tx) if !tx.is_closed() => Some(tx.clone()),
                    Some(_) => {
                        p.h2.remove(&key);
                        None
                    }
                    None => None,
                }
            })?;
            match tx.ready().await {
                Ok(()) => Some(Conn::H2(tx)),
                Err(_) => None,
            }
        }
        _ => loop {
            let idle = POOL.with(|p| p.borrow_mut().h1.get_mut(&key).and_then(|v| v.pop()))?;
            if idle.tx.is_closed() || idle.since.elapsed() >= idle.idle_timeout {
                continue;
            }
            let mut tx = idle.tx;
            if tx.is_ready() || tx.ready().await.is_ok() {
                return Some(Conn::H1(tx));
            }
        },
    }
}

/// Returns an HTTP/1 connection whose response finished, for the next request.
pub fn release_h1(
    key: PoolKey,
    tx: http1::SendRequest<ReqBody>,
    max_idle: u32,
    idle_timeout: Duration,
) {
    if tx.is_closed() || max_idle == 0 {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let list = p.h1.entry(key).or_default();
        if list.len() < max_idle as usize {
            list.push(IdleH1 {
                tx,
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
            list.retain(|c| !c.tx.is_closed() && c.since.elapsed() < c.idle_timeout);
            !list.is_empty()
        });
        p.h2.retain(|_, tx| !tx.is_closed());
    });
}

/// Opens a new connection to `key.addr`. HTTP/2 connections are shared through the pool.
/// `slot` (the upstream's connection breaker) is held for the connection's life.
pub async fn connect(
    key: PoolKey,
    params: ConnectParams,
    slot: Held,
) -> Result<Conn, ConnectError> {
    if matches!(
        params.protocol,
        UpstreamProtocol::Https | UpstreamProtocol::Auto
    ) {
        return Err(ConnectError::Unsupported("TLS to upstreams"));
    }
    let stream =
        match tokio::time::timeout(params.connect_timeout, TcpStream::connect(key.addr)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    match params.protocol {
        UpstreamProtocol::H2c => {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
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
        }
        _ => {
            let (tx, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(ConnectError::Handshake)?;
            tokio::spawn(async move {
                let _slot = slot;
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            Ok(Conn::H1(tx))
        }
    }
}
