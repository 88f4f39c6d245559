//! Traffic mirroring (`shadow` on a Mapping): a share of requests is copied, fire and
//! forget, to another upstream with `-shadow` appended to the Host/authority (as Envoy does).
//! The copy's response is discarded; its latency and failures never touch the client's
//! response. At most [`MAX_OUTSTANDING`] copies per Mapping are in flight (more are dropped
//! and counted); bodies over 64 KiB are not mirrored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::BodyExt;
use portico_config::snapshot::{ShadowConf, UpstreamProtocol};

use crate::body::ReqBody;
use crate::telemetry::metrics::RouteMetrics;
use crate::upstream::h1::{self, Release};
use crate::upstream::pool::{self, Conn, ConnectParams, PoolKey};
use crate::upstream::{PickCtx, UpstreamState, Which};

/// Copies in flight per Mapping before further copies are dropped.
pub const MAX_OUTSTANDING: i64 = 100;
/// Largest body mirrored.
pub const MAX_BODY: usize = 64 * 1024;
/// A copy is abandoned after this long.
const COPY_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether this request is picked for mirroring (by `percent`).
pub fn picked(conf: &ShadowConf) -> bool {
    conf.percent >= 100.0 || fastrand::f64() * 100.0 < conf.percent
}

/// The parts of the request the copy is built from.
pub struct Copy {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// `None`: the body was too large to mirror.
    pub body: Option<Bytes>,
}

/// A copy to mirror once its holder is dropped (at the end of the primary exchange).
pub struct Deferred {
    pub up: Arc<UpstreamState>,
    pub metrics: Arc<RouteMetrics>,
    pub copy: Option<Copy>,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            mirror(self.up.clone(), self.metrics.clone(), copy);
        }
    }
}

/// Sends `copy` to `up` in the background (or counts it dropped).
pub fn mirror(up: Arc<UpstreamState>, metrics: Arc<RouteMetrics>, copy: Copy) {
    let Some(body) = copy.body else {
        metrics.shadow_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if metrics.shadow_outstanding.fetch_add(1, Ordering::AcqRel) >= MAX_OUTSTANDING {
        metrics.shadow_outstanding.fetch_sub(1, Ordering::AcqRel);
        metrics.shadow_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    tokio::spawn(async move {
        let ok = tokio::time::timeout(
            COPY_TIMEOUT,
            send(&up, copy.method, copy.uri, copy.headers, body),
        )
        .await
        .unwrap_or(false);
        metrics.shadow_outstanding.fetch_sub(1, Ordering::AcqRel);
        if ok {
            metrics.shadow_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            metrics.shadow_failed.fetch_add(1, Ordering::Relaxed);
        }
    });
}

/// `host` → `host-shadow` (before any port).
fn shadow_host(host: &str) -> String {
    if let Some((h, p)) = host.rsplit_once(':')
        && !p.is_empty()
        && p.bytes().all(|b| b.is_ascii_digit())
        && (!h.contains(':') || h.ends_with(']'))
    {
        return format!("{h}-shadow:{p}");
    }
    format!("{host}-shadow")
}

async fn send(
    up: &UpstreamState,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
) -> bool {
    let Some(ep) = up.pick(&PickCtx::default()) else {
        return false;
    };
    let h2 = matches!(up.conf.protocol, UpstreamProtocol::H2c);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    let shadow = shadow_host(&host);
    let mut req = Request::new(if body.is_empty() {
        ReqBody::Empty
    } else {
        ReqBody::Full(Some(body))
    });
    *req.method_mut() = method;
    if h2 {
        headers.remove(header::HOST);
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        *req.uri_mut() = format!("http://{shadow}{pq}").parse().unwrap_or(uri);
        *req.version_mut() = Version::HTTP_2;
    } else {
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            headers.insert(header::HOST, v);
        }
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
    }
    *req.headers_mut() = headers;
    let key = PoolKey {
        uid: up.uid,
        addr: ep.addr,
    };
    let params = ConnectParams::of(up);
    let conn = match pool::checkout(key, params.protocol, params.connect_timeout).await {
        Some(c) => c,
        None => {
            let Some(slot) = up
                .breakers
                .try_hold(Which::Connections, up.conf.circuit_breakers.max_connections)
            else {
                return false;
            };
            match pool::connect(key, params.clone(), slot).await {
                Ok(c) => c,
                Err(_) => return false,
            }
        }
    };
    // Drain and discard the answer (an HTTP/1 connection goes back to the pool at its end).
    match conn {
        Conn::H1(c) => {
            let release = Release {
                key,
                max_idle: up.conf.max_idle_connections_per_endpoint,
                idle_timeout: up.conf.idle_connection_timeout,
            };
            match h1::exchange(c, req, Some(release)).await {
                Ok(r) => r.into_body().collect().await.is_ok(),
                Err(_) => false,
            }
        }
        Conn::H2(mut tx) => match tx.send_request(req).await {
            Ok(r) => r.into_body().collect().await.is_ok(),
            Err(_) => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_hosts() {
        assert_eq!(shadow_host("api.example.com"), "api.example.com-shadow");
        assert_eq!(
            shadow_host("api.example.com:8080"),
            "api.example.com-shadow:8080"
        );
    }
}
