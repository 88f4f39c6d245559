//! Active health checks (docs/reference.md §3.2): HTTP, gRPC (grpc.health.v1) and TCP probes.
//!
//! One task per configured check and upstream state, on the control runtime. It holds only
//! a `Weak<UpstreamState>`, so it ends when the upstream goes away, and reloads the endpoint
//! set every round, so it follows DNS and reload changes. Each round probes every endpoint
//! concurrently (each probe bounded by `timeout`), then sleeps `interval` ± 10% (measured
//! from the round's start). `unhealthy_threshold` consecutive failures set the check's bit
//! in `Endpoint::hc_down`; `healthy_threshold` consecutive passes clear it. Endpoints start
//! healthy. An endpoint taken over by a newer state of the same upstream (a reload that
//! changed its settings) is left to that state's checks. TLS upstreams (`https`, `auto`)
//! are probed over TLS with the upstream's own TLS settings (CA, SNI, client certificate,
//! ALPN): a failed handshake fails the probe, and HTTP/gRPC checks then run over the TLS
//! stream (HTTP/2 when ALPN picked `h2`; gRPC always speaks HTTP/2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::{Buf, Bytes};
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_config::snapshot::{HealthCheckConf, HealthCheckKind, UpstreamProtocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::upstream::UpstreamState;
use crate::upstream::clock::now_ms;
use crate::upstream::tls::UpstreamTls;

/// Starts the health-check tasks of a new upstream state (at most 32 checks).
pub fn spawn(state: &Arc<UpstreamState>) {
    for (i, check) in state.conf.health_checks.iter().enumerate().take(32) {
        let weak = Arc::downgrade(state);
        let check = check.clone();
        tokio::spawn(run(weak, i as u32, check));
    }
}

async fn run(weak: Weak<UpstreamState>, bit: u32, check: HealthCheckConf) {
    let mask = 1u32 << bit;
    // Consecutive (passes, failures) per endpoint address.
    let mut streaks: HashMap<SocketAddr, (u32, u32)> = HashMap::new();
    loop {
        let round = tokio::time::Instant::now();
        let (set, host, protocol, uid, tls) = {
            let Some(state) = weak.upgrade() else { break };
            (
                state.endpoints.load_full(),
                state.conf.name.clone(),
                state.conf.protocol,
                state.uid,
                state.tls.clone(),
            )
        };
        let probes = set.endpoints.iter().map(|e| {
            let host = host.as_str();
            let check = &check;
            let tls = tls.as_deref();
            async move {
                tokio::time::timeout(check.timeout, probe(e.addr, check, host, protocol, tls))
                    .await
                    .unwrap_or(false)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for (e, ok) in set.endpoints.iter().zip(results) {
            if e.owner.load(Ordering::Relaxed) != uid {
                continue; // taken over by a newer state of this upstream
            }
            let s = streaks.entry(e.addr).or_insert((0, 0));
            if ok {
                *s = (s.0.saturating_add(1), 0);
                if s.0 >= check.healthy_threshold && e.hc_down.load(Ordering::Relaxed) & mask != 0 {
                    let before = e.hc_down.fetch_and(!mask, Ordering::AcqRel);
                    if before == mask {
                        // Back in rotation: slow start from now.
                        e.since.store(now_ms(), Ordering::Relaxed);
                        tracing::info!(upstream = %host, endpoint = %e.addr, "endpoint healthy again");
                    }
                }
            } else {
                *s = (0, s.1.saturating_add(1));
                if s.1 >= check.unhealthy_threshold
                    && e.hc_down.fetch_or(mask, Ordering::AcqRel) & mask == 0
                {
                    tracing::warn!(upstream = %host, endpoint = %e.addr, "endpoint failed its health check");
                }
            }
        }
        streaks.retain(|a, _| set.endpoints.iter().any(|e| e.addr == *a));
        drop(set);
        tokio::time::sleep_until(round + jittered(check.interval)).await;
    }
}

/// The wait until the next round: `interval` ±10%, so the checks of many proxies (and of many
/// upstreams in one) do not fall into step against the same endpoints.
fn jittered(interval: std::time::Duration) -> std::time::Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// One probe; `true` when it passes.
async fn probe(
    addr: SocketAddr,
    check: &HealthCheckConf,
    upstream: &str,
    p: UpstreamProtocol,
    tls: Option<&UpstreamTls>,
) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.set_nodelay(true);
    if !matches!(p, UpstreamProtocol::Https | UpstreamProtocol::Auto) {
        return check_on(
            stream,
            addr,
            check,
            upstream,
            p == UpstreamProtocol::H2c,
            "http",
        )
        .await;
    }
    // TLS settings that could not be built fail every connect (logged when the state was
    // made): the probe fails too, as a request would.
    let Some(tls) = tls else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let Ok(stream) = connector.connect(tls.server_name(addr), stream).await else {
        return false;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    check_on(stream, addr, check, upstream, h2, "https").await
}

/// The check itself on an open stream (plain TCP or TLS); `h2`: speak HTTP/2 (with
/// `:scheme` `scheme`).
async fn check_on<S>(
    stream: S,
    addr: SocketAddr,
    check: &HealthCheckConf,
    upstream: &str,
    h2: bool,
    scheme: &str,
) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match &check.kind {
        HealthCheckKind::Tcp => true,
        HealthCheckKind::Http {
            path,
            host,
            expected_statuses,
        } => {
            let host = host.as_deref().unwrap_or(upstream);
            match http_status(stream, path, host, h2, scheme).await {
                Some(s) => expected_statuses
                    .iter()
                    .any(|&(lo, hi)| (lo..=hi).contains(&s)),
                None => false,
            }
        }
        HealthCheckKind::Grpc { service } => {
            grpc_serving(stream, addr, service.as_deref().unwrap_or(""), scheme).await
        }
    }
}

async fn http_status<S>(stream: S, path: &str, host: &str, h2: bool, scheme: &str) -> Option<u16>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let resp = if h2 {
        let (mut tx, conn) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
        tokio::spawn(conn);
        let req = Request::get(format!("{scheme}://{host}{path}"))
            .header(header::USER_AGENT, "portico-health-check")
            .body(Empty::<Bytes>::new())
            .ok()?;
        tx.send_request(req).await.ok()?
    } else {
        let (mut tx, conn) = http1::handshake(io).await.ok()?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, host)
            .header(header::USER_AGENT, "portico-health-check")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .ok()?;
        tx.send_request(req).await.ok()?
    };
    Some(resp.status().as_u16())
}

/// The gRPC frame of `HealthCheckRequest { service }` (field 1, length-delimited).
pub fn grpc_check_request(service: &str) -> Bytes {
    let mut msg = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(msg.len() + 5);
    frame.push(0); // not compressed
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    Bytes::from(frame)
}

/// Whether a gRPC response body holds `HealthCheckResponse { status: SERVING (1) }`.
pub fn grpc_response_serving(mut body: Bytes) -> bool {
    if body.len() < 5 || body[0] != 0 {
        return false;
    }
    body.advance(1);
    let len = body.get_u32() as usize;
    if body.len() < len {
        return false;
    }
    let mut msg = body.slice(..len);
    let mut status = 0u64; // UNKNOWN when absent
    while msg.has_remaining() {
        let Some(tag) = varint(&mut msg) else {
            return false;
        };
        match (tag >> 3, tag & 7) {
            (1, 0) => match varint(&mut msg) {
                Some(v) => status = v,
                None => return false,
            },
            (_, 0) => {
                if varint(&mut msg).is_none() {
                    return false;
                }
            }
            (_, 2) => {
                let Some(l) = varint(&mut msg) else {
                    return false;
                };
                if (msg.remaining() as u64) < l {
                    return false;
                }
                msg.advance(l as usize);
            }
            (_, 1) if msg.remaining() >= 8 => msg.advance(8),
            (_, 5) if msg.remaining() >= 4 => msg.advance(4),
            _ => return false,
        }
    }
    status == 1
}

fn varint(b: &mut Bytes) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if !b.has_remaining() {
            return None;
        }
        let byte = b.get_u8();
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

async fn grpc_serving<S>(stream: S, addr: SocketAddr, service: &str, scheme: &str) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(stream);
    let Ok((mut tx, conn)) = http2::handshake(TokioExecutor::new(), io).await else {
        return false;
    };
    tokio::spawn(conn);
    let Ok(req) = Request::post(format!("{scheme}://{addr}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "portico-health-check")
        .body(Full::new(grpc_check_request(service)))
    else {
        return false;
    };
    let Ok(resp) = tx.send_request(req).await else {
        return false;
    };
    if resp.status() != http::StatusCode::OK {
        return false;
    }
    let head_status = resp.headers().get("grpc-status").cloned();
    let Ok(collected) = resp.into_body().collect().await else {
        return false;
    };
    let grpc_status = head_status.or_else(|| {
        collected
            .trailers()
            .and_then(|t| t.get("grpc-status").cloned())
    });
    if grpc_status.as_ref().map(|v| v.as_bytes()) != Some(b"0") {
        return false;
    }
    grpc_response_serving(collected.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rounds_are_jittered_within_ten_percent() {
        let interval = Duration::from_millis(1000);
        let waits: Vec<Duration> = (0..2000).map(|_| jittered(interval)).collect();
        let (min, max) = (
            waits.iter().min().copied().unwrap_or_default(),
            waits.iter().max().copied().unwrap_or_default(),
        );
        assert!(min >= Duration::from_millis(900), "{min:?}");
        assert!(max <= Duration::from_millis(1100), "{max:?}");
        // Spread over the range, not one fixed offset.
        assert!(min < Duration::from_millis(920), "{min:?}");
        assert!(max > Duration::from_millis(1080), "{max:?}");
    }

    #[test]
    fn encodes_request() {
        assert_eq!(&grpc_check_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_check_request("ab")[..],
            &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        let long = "x".repeat(200);
        let f = grpc_check_request(&long);
        assert_eq!(&f[5..8], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn decodes_response() {
        assert!(grpc_response_serving(Bytes::from_static(&[
            0, 0, 0, 0, 2, 0x08, 1
        ])));
        assert!(!grpc_response_serving(Bytes::from_static(&[
            0, 0, 0, 0, 2, 0x08, 2
        ])));
        assert!(!grpc_response_serving(Bytes::from_static(&[0, 0, 0, 0, 0])));
        assert!(!grpc_response_serving(Bytes::from_static(&[
            0, 0, 0, 0, 3, 0x08
        ])));
        // Unknown fields are skipped.
        assert!(grpc_response_serving(Bytes::from_static(&[
            0, 0, 0, 0, 5, 0x12, 1, b'z', 0x08, 1
        ])));
    }
}
