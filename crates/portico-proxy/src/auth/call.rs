//! One side request through Portico's own upstream client: an endpoint picked by the
//! upstream's balancer, a pooled (or new) connection from the worker's pool (`upstream::pool`:
//! Portico's HTTP/1.1 client, or hyper's HTTP/2 client for h2c/ALPN h2, with the upstream's
//! TLS settings), the request, and the answer read whole up to a limit, all under one
//! timeout. The external authorization check and the JWKS fetch go through here.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Limited};

use crate::body::ReqBody;
use crate::upstream::h1::{self, Release};
use crate::upstream::pool::{self, Conn, ConnectParams, PoolKey};
use crate::upstream::{PickCtx, UpstreamState, Which};

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailers, when the answer had any (gRPC's `grpc-status`).
    pub trailers: Option<HeaderMap>,
}

/// Why a side request gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No healthy endpoint, or a breaker refused a new connection.
    NoEndpoint,
    /// No connection could be made.
    Connect,
    /// The exchange failed (reset, protocol error, body over the limit).
    Exchange,
    Timeout,
}

impl CallError {
    pub fn as_str(self) -> &'static str {
        match self {
            CallError::NoEndpoint => "no healthy endpoint",
            CallError::Connect => "connect failure",
            CallError::Exchange => "exchange failed",
            CallError::Timeout => "timed out",
        }
    }
}

/// Sends `req` (origin-form URI; `authority` is the Host / `:authority`) to `up` and reads
/// the answer (at most `max_body` bytes of body), all within `timeout`.
pub async fn call(
    up: &UpstreamState,
    authority: &HeaderValue,
    req: Request<ReqBody>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, CallError> {
    match tokio::time::timeout(timeout, exchange(up, authority, req, max_body)).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    }
}

async fn exchange(
    up: &UpstreamState,
    authority: &HeaderValue,
    mut req: Request<ReqBody>,
    max_body: usize,
) -> Result<Answer, CallError> {
    let ep = up.pick(&PickCtx::default()).ok_or(CallError::NoEndpoint)?;
    let key = PoolKey {
        uid: up.uid,
        addr: ep.addr,
    };
    let params = ConnectParams::of(up);
    let conn = match pool::checkout(key, params.protocol, params.connect_timeout).await {
        Some(c) => c,
        None => {
            let slot = up
                .breakers
                .try_hold(Which::Connections, up.conf.circuit_breakers.max_connections)
                .ok_or(CallError::NoEndpoint)?;
            pool::connect(key, params.clone(), slot)
                .await
                .map_err(|_| CallError::Connect)?
        }
    };
    let (status, headers, body) = match conn {
        Conn::H1(c) => {
            *req.version_mut() = Version::HTTP_11;
            req.headers_mut().insert(header::HOST, authority.clone());
            let release = Release {
                key,
                max_idle: up.conf.max_idle_connections_per_endpoint,
                idle_timeout: up.conf.idle_connection_timeout,
            };
            let resp = h1::exchange(c, req, Some(release))
                .await
                .map_err(|_| CallError::Exchange)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|_| CallError::Exchange)?;
            (parts.status, parts.headers, body)
        }
        Conn::H2(mut tx) => {
            *req.version_mut() = Version::HTTP_2;
            req.headers_mut().remove(header::HOST);
            let scheme = if up.tls.is_some() { "https" } else { "http" };
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let auth = authority.to_str().unwrap_or("localhost");
            *req.uri_mut() = format!("{scheme}://{auth}{pq}")
                .parse()
                .map_err(|_| CallError::Exchange)?;
            let resp = tx
                .send_request(req)
                .await
                .map_err(|_| CallError::Exchange)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|_| CallError::Exchange)?;
            (parts.status, parts.headers, body)
        }
    };
    let trailers = body.trailers().cloned();
    Ok(Answer {
        status,
        headers,
        body: body.to_bytes(),
        trailers,
    })
}
