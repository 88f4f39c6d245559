//! The log phase: what the access log and the route's metrics need about one request,
//! gathered along the way ([`Record`]), written once when the request ends — right away for a
//! local reply, or when the response body ends or is dropped ([`Done`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;
use http::Response;
use portico_config::snapshot::Route;

use super::attempt::ActiveGuard;
use super::head::{ConnInfo, Head};
use crate::body::{BodyCut, BodyEnd, ByteCounter, Finish, RespBody};
use crate::headers;
use crate::local_reply::{Flag, Flags, LocalReply, is_grpc};
use crate::state::Proxy;
use crate::telemetry::access_log::{Entry, rfc3339_millis};
use crate::telemetry::metrics::RouteMetrics;
use crate::upstream::{Held, UpstreamState};

/// What the access log needs about one request, gathered along the way.
pub(crate) struct Record {
    pub start: Instant,
    pub grpc: bool,
    /// The request came over HTTP/2 (no `connection` header on replies).
    pub http2: bool,
    pub flags: Flags,
    pub status: u16,
    pub route: Option<Arc<Route>>,
    pub upstream: Option<Arc<UpstreamState>>,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_start: Option<Instant>,
    pub attempts: u32,
    pub received: Arc<ByteCounter>,
    pub request_id: Option<HeaderValue>,
    pub client: IpAddr,
    /// The route's metrics (or the no-route family).
    pub metrics: Option<Arc<RouteMetrics>>,
    /// Only filled when the access log is on.
    log: Option<LogFields>,
}

struct LogFields {
    /// When the request started (wall clock; read only when logging).
    wall: SystemTime,
    /// The client address as logged.
    client: HeaderValue,
    /// The verified mTLS client identity (the `x-forwarded-client-cert` value); shares the
    /// connection's bytes, no copy.
    client_cert: Option<HeaderValue>,
    method: http::Method,
    authority: String,
    path: String,
    protocol: &'static str,
}

impl Record {
    pub fn new(proxy: &Proxy, conn: &ConnInfo, head: &Head<'_>, start: Instant) -> Record {
        let client = if conn.listener.trust_forwarded {
            headers::last_forwarded_for(head.headers).unwrap_or(conn.peer.ip())
        } else {
            conn.peer.ip()
        };
        let log = proxy.access_log.enabled().then(|| LogFields {
            wall: SystemTime::now(),
            client: if client == conn.peer.ip() {
                conn.peer_ip.clone()
            } else {
                headers::ip_value(client)
            },
            client_cert: conn.client_cert.clone(),
            method: head.method.clone(),
            authority: head.authority.to_owned(),
            path: head.path_and_query().to_owned(),
            protocol: match (head.http3, head.http2) {
                (true, _) => "HTTP/3",
                (false, true) => "HTTP/2",
                _ => "HTTP/1.1",
            },
        });
        Record {
            start,
            grpc: is_grpc(head.headers),
            http2: head.http2,
            flags: Flags::default(),
            status: 0,
            route: None,
            upstream: None,
            upstream_addr: None,
            upstream_start: None,
            attempts: 0,
            received: Arc::new(ByteCounter::default()),
            request_id: head.headers.get(&headers::X_REQUEST_ID).cloned(),
            client,
            metrics: None,
            log,
        }
    }

    /// Records `flag` and answers with its own local reply.
    pub fn fail(self, proxy: &Proxy, flag: Flag) -> Response<RespBody> {
        self.reply(proxy, LocalReply::of(flag))
    }

    /// Records the reply's flag, counts it where it has a counter, logs the request and
    /// answers with the reply.
    pub fn reply(mut self, proxy: &Proxy, reply: LocalReply) -> Response<RespBody> {
        self.flags.insert(reply.flag);
        match reply.flag {
            Flag::OM => {
                proxy.overload.actions.reject_request.fetch_add(1, Relaxed);
            }
            Flag::UO => {
                proxy.counters.overflows.fetch_add(1, Relaxed);
            }
            // Before routing: `portico_downstream_rejected_total`, like hyper's rejections.
            Flag::DPE if self.route.is_none() => proxy.metrics.rejected.add(reply.status.as_u16()),
            _ => {}
        }
        if reply.flag == Flag::SI || (reply.flag == Flag::DPE && self.route.is_some()) {
            tracing::info!(client = %self.client, reason = reply.message, "request answered locally");
        }
        let resp = reply.render(self.grpc, self.http2);
        self.local(proxy, resp)
    }

    /// The rate limit service failed: flag RLSE and count it.
    pub fn rate_limit_service_failed(&mut self, proxy: &Proxy) {
        self.flags.insert(Flag::RLSE);
        proxy
            .counters
            .rate_limit_service_errors
            .fetch_add(1, Relaxed);
    }

    /// Logs a locally answered request and returns the reply.
    pub fn local(mut self, proxy: &Proxy, resp: Response<RespBody>) -> Response<RespBody> {
        self.status = resp.status().as_u16();
        let size = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        self.finish(proxy, size, Instant::now());
        resp
    }

    /// Metrics and the access log line, once per request.
    fn finish(&self, proxy: &Proxy, bytes_sent: u64, end: Instant) {
        let m = self.metrics.as_deref().unwrap_or(&proxy.metrics.no_route);
        m.requests.add(self.status);
        m.duration.observe(end.duration_since(self.start));
        m.bytes_sent.fetch_add(bytes_sent, Relaxed);
        m.bytes_received.fetch_add(self.received.get(), Relaxed);
        if self.metrics.is_some() {
            m.active.fetch_sub(1, Relaxed);
        }
        self.write(proxy, bytes_sent, end);
    }

    fn write(&self, proxy: &Proxy, bytes_sent: u64, end: Instant) {
        let Some(log) = &self.log else { return };
        let mut flags = String::new();
        self.flags.write_to(&mut flags);
        let ts = rfc3339_millis(log.wall);
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let entry = Entry {
            ts: &ts,
            method: log.method.as_str(),
            authority: &log.authority,
            path: &log.path,
            protocol: log.protocol,
            status: self.status,
            flags: &flags,
            route: self.route.as_ref().map(|r| r.name.as_str()),
            upstream: self.upstream.as_ref().map(|u| u.conf.name.as_str()),
            upstream_addr: self.upstream_addr,
            attempts: self.attempts,
            bytes_received: self.received.get(),
            bytes_sent,
            duration_ms: millis(end.duration_since(self.start)),
            upstream_duration_ms: self.upstream_start.map(|s| millis(end.duration_since(s))),
            request_id,
            client: log.client.to_str().unwrap_or("-"),
            client_cert: log.client_cert.as_ref().and_then(|v| v.to_str().ok()),
            error: None,
        };
        proxy.access_log.write(&entry);
    }
}

/// Logs a request that the HTTP layer rejected before it reached the request path (flag DPE):
/// the access log line (with the connection's `protocol`) and the rejection metric.
pub fn log_rejected(proxy: &Proxy, conn: &ConnInfo, status: u16, detail: &str, protocol: &str) {
    proxy.metrics.rejected.add(status);
    if !proxy.access_log.enabled() {
        return;
    }
    let mut flags = Flags::default();
    flags.insert(Flag::DPE);
    let mut f = String::new();
    flags.write_to(&mut f);
    let ts = rfc3339_millis(SystemTime::now());
    let entry = Entry {
        ts: &ts,
        method: "-",
        authority: "-",
        path: "-",
        protocol,
        status,
        flags: &f,
        route: None,
        upstream: None,
        upstream_addr: None,
        attempts: 0,
        bytes_received: 0,
        bytes_sent: 0,
        duration_ms: 0.0,
        upstream_duration_ms: None,
        request_id: "-",
        client: conn.peer_ip.to_str().unwrap_or("-"),
        client_cert: conn.client_cert.as_ref().and_then(|v| v.to_str().ok()),
        error: Some(detail),
    };
    proxy.access_log.write(&entry);
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The log phase of a forwarded request: runs when the response body ends or is dropped.
/// (An HTTP/1 upstream connection goes back to the pool from its body, `upstream::h1`.)
pub(crate) struct Done {
    pub proxy: Arc<Proxy>,
    pub rec: Record,
    pub _active: ActiveGuard,
    /// Breaker slots (request, retry) held until the response ends.
    pub _held: (Held, Option<Held>),
}

impl Finish for Done {
    fn finish(mut self: Box<Self>, end: BodyEnd, bytes_sent: u64, at: Instant) {
        match end {
            BodyEnd::Complete => {}
            BodyEnd::UpstreamError => match self.rec.received.cut() {
                // The upstream request was aborted because the client's body failed.
                Some(BodyCut::TooLarge | BodyCut::Malformed) => self.rec.flags.insert(Flag::DPE),
                Some(BodyCut::Idle) => self.rec.flags.insert(Flag::SI),
                Some(BodyCut::Aborted) => self.rec.flags.insert(Flag::DC),
                None => self.rec.flags.insert(Flag::UC),
            },
            BodyEnd::DeadlineExceeded => self.rec.flags.insert(Flag::UT),
            BodyEnd::IdleTimeout => self.rec.flags.insert(Flag::SI),
            BodyEnd::Dropped => self.rec.flags.insert(Flag::DC),
        }
        self.rec.finish(&self.proxy, bytes_sent, at);
    }
}
