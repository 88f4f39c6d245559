//! The compiled, immutable configuration snapshot the data plane runs on.
//!
//! Everything here is resolved at compile time (regexes compiled, header names parsed,
//! upstream references turned into indices, defaults filled in) so the request path never
//! parses or validates anything. A `Snapshot` is built once per reload and shared behind an
//! `Arc`; requests hold the snapshot they started with.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

pub use crate::auth::*;
use crate::defaults;
pub use crate::route::*;
use crate::router::Router;

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    /// Listeners to bind. Never empty: with no `Listener` resource, one HTTP listener on
    /// 0.0.0.0:8080.
    pub listeners: Vec<ListenerConf>,
    /// TLS/host policies, in SNI match order (exact names, then longer wildcard suffixes, then `*`).
    pub hosts: Vec<HostConf>,
    /// Every route, in match order; `Route::id` is the index here.
    pub routes: Vec<Arc<Route>>,
    /// The index used to find a route for a request.
    pub router: Router,
    /// Every upstream a route can reach; `UpstreamConf::id` is the index here.
    pub upstreams: Vec<Arc<UpstreamConf>>,
    /// Every resource read, for `/config`.
    pub resources: Vec<ResourceInfo>,
    /// Defaults from an Emissary `Module` (or built-in), already applied to routes.
    pub access_log: Option<AccessLogConf>,
    /// The global rate limit service (docs/reference.md §4.1), if a `RateLimitService` is configured.
    pub rate_limit_service: Option<RateLimitServiceConf>,
    /// The external authorization service (docs/reference.md §9.1), if an `AuthService` is configured.
    pub auth_service: Option<AuthServiceConf>,
    /// Every `JWTProvider` (docs/reference.md §9.2); `RouteJwt::provider` is the index here.
    pub jwt_providers: Vec<JwtProviderConf>,
}

/// A `RateLimitService` resource, compiled (docs/reference.md §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitServiceConf {
    /// The resource's `metadata.name`.
    pub name: String,
    /// Index in `Snapshot::upstreams` of the rate limit server (gRPC: protocol `H2c`, or `Auto`
    /// for `https://`).
    pub upstream: usize,
    /// The descriptor domain sent to the server (default `portico`).
    pub domain: String,
    /// Deadline of one check (default 20 ms).
    pub timeout: Duration,
    /// true: a failed check rejects the request (429); false (default): it is allowed.
    pub failure_mode_deny: bool,
}

/// Where a resource came from and how it fared, for the admin API.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub kind: String,
    pub name: String,
    pub file: String,
    pub line: u32,
    /// "applied", or "warning: ..." for accepted resources with warnings.
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct AccessLogConf {
    /// `None` = stdout; `Some(path)` = file.
    pub path: Option<PathBuf>,
    pub enabled: bool,
}

// ---------------------------------------------------------------- listeners and hosts

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    Http,
    Https,
    HttpProxy,
    HttpsProxy,
}

impl ListenerProtocol {
    pub fn is_tls(self) -> bool {
        matches!(self, Self::Https | Self::HttpsProxy)
    }
    pub fn proxy_protocol(self) -> bool {
        matches!(self, Self::HttpProxy | Self::HttpsProxy)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerConf {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: ListenerProtocol,
    pub http2: bool,
    /// Also serve HTTP/3 (QUIC) on UDP at the same address and port (HTTPS only).
    pub http3: bool,
    /// QUIC handshakes in progress beyond which new connections must first pass Retry.
    pub http3_max_handshakes: u32,
    pub max_connections: u32,
    pub trust_forwarded: bool,
    pub limits: ListenerLimits,
}

/// Per-listener limits on hostile or oversized downstream input (reference §5 defaults;
/// docs/operations.md "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerLimits {
    /// Request line plus headers, in bytes (HTTP/1 read buffer; HTTP/2 header list). 431 beyond.
    pub max_request_headers_bytes: u32,
    /// Header fields per request. 431 beyond.
    pub max_headers_count: u32,
    /// Request target (path and query) length in bytes. 414 beyond.
    pub max_uri_bytes: u32,
    /// HTTP/2 streams open at once per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 receive window per stream (`SETTINGS_INITIAL_WINDOW_SIZE`): request body bytes
    /// one stream may send before Portico has read them.
    pub initial_stream_window_bytes: u32,
    /// HTTP/2 receive window per connection (raised from 65535 by a WINDOW_UPDATE on stream 0):
    /// request body bytes all streams of a connection together may have unread.
    pub initial_connection_window_bytes: u32,
    /// How long a request head may take to arrive (slowloris guard).
    pub header_read_timeout: Duration,
    /// Longest pause in a request body before the request ends with 408 SI (slow POST guard);
    /// `None` = no limit.
    pub request_body_idle_timeout: Option<Duration>,
    /// A connection with no request in flight (HTTP/1 keep-alive between requests, HTTP/2
    /// with no open stream) for this long is closed (HTTP/2: GOAWAY); `None` = never.
    pub keepalive_timeout: Option<Duration>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_request_headers_bytes: defaults::MAX_REQUEST_HEADERS_KB * 1024,
            max_headers_count: defaults::MAX_HEADERS_COUNT,
            max_uri_bytes: defaults::MAX_URI_BYTES,
            max_concurrent_streams: defaults::MAX_CONCURRENT_STREAMS,
            initial_stream_window_bytes: defaults::INITIAL_STREAM_WINDOW_BYTES,
            initial_connection_window_bytes: defaults::INITIAL_CONNECTION_WINDOW_BYTES,
            header_read_timeout: Duration::from_millis(defaults::HEADER_READ_TIMEOUT_MS),
            request_body_idle_timeout: Some(Duration::from_millis(
                defaults::REQUEST_BODY_IDLE_TIMEOUT_MS,
            )),
            keepalive_timeout: Some(Duration::from_millis(defaults::KEEPALIVE_TIMEOUT_MS)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InsecureAction {
    Redirect,
    Route,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsConf {
    /// Absolute paths (resolved against the config file's directory).
    pub cert_chain_file: PathBuf,
    pub private_key_file: PathBuf,
    pub alpn_protocols: Vec<String>,
    pub min_tls_version: TlsVersion,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HostConf {
    pub name: String,
    pub hostname: HostGlob,
    /// For a Host with `acme`, the certificate paths are empty: the certificate lives in the
    /// state directory (`portico run --state-dir`), which the config does not know.
    pub tls: Option<TlsConf>,
    pub insecure: InsecureAction,
    /// Automatic certificates (`acmeProvider`, §13); only for exact hostnames.
    pub acme: Option<AcmeConf>,
}

/// A Host's `acmeProvider`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AcmeConf {
    /// The RFC 8555 directory URL.
    pub authority: String,
    pub email: Option<String>,
    /// CA that signs the ACME server's own HTTPS (absolute path).
    pub ca_file: Option<PathBuf>,
    pub challenge: AcmeChallenge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcmeChallenge {
    Http01,
    TlsAlpn01,
}

impl AcmeChallenge {
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

// ---------------------------------------------------------------- upstreams

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    H2c,
    Https,
    /// TLS with ALPN h2 or http/1.1.
    Auto,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointConf {
    /// `IP:port` or `host:port` (a host name is resolved by the data plane).
    pub address: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointSource {
    Static(Vec<EndpointConf>),
    /// Every A/AAAA record of `host` is an endpoint on `port`.
    Dns {
        host: String,
        port: u16,
        refresh: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTlsConf {
    pub ca_file: Option<PathBuf>,
    pub sni: Option<String>,
    pub cert_chain_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Ewma,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashOn {
    Header(HeaderName),
    Cookie { name: String, ttl: Option<Duration> },
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LbConf {
    pub policy: LbPolicy,
    pub hash_on: Option<HashOn>,
    /// Percent, default 50.
    pub healthy_panic_threshold: u32,
    pub slow_start_window: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HealthCheckKind {
    Http {
        path: String,
        host: Option<String>,
        /// Inclusive ranges.
        expected_statuses: Vec<(u16, u16)>,
    },
    Grpc {
        service: Option<String>,
    },
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheckConf {
    pub kind: HealthCheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutlierConf {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CircuitBreakerConf {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

impl Default for CircuitBreakerConf {
    fn default() -> Self {
        Self {
            max_connections: defaults::CB_MAX_CONNECTIONS,
            max_pending_requests: defaults::CB_MAX_PENDING_REQUESTS,
            max_requests: defaults::CB_MAX_REQUESTS,
            max_retries: defaults::CB_MAX_RETRIES,
        }
    }
}

/// One upstream (an `Upstream` resource, or the implicit one of a bare `service: host:port`).
/// `PartialEq`/`Hash` over the settings let the data plane keep pools and health state across
/// reloads for upstreams whose settings did not change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamConf {
    /// Index in `Snapshot::upstreams`.
    pub id: usize,
    /// The Upstream's name, or `host:port` of a bare service.
    pub name: String,
    pub endpoints: EndpointSource,
    pub protocol: UpstreamProtocol,
    pub tls: Option<UpstreamTlsConf>,
    pub lb: LbConf,
    pub health_checks: Vec<HealthCheckConf>,
    pub outlier: Option<OutlierConf>,
    pub circuit_breakers: CircuitBreakerConf,
    pub connect_timeout: Duration,
    pub max_idle_connections_per_endpoint: u32,
    pub idle_connection_timeout: Duration,
}
