//! Every default of the `portico.dev/v1` schema, in one place: what a field means when it is
//! not written. The compiler (`compile`) fills these in; the snapshot's `Default` impls
//! (`ListenerLimits`, `CircuitBreakerConf`) read them too. Times are in milliseconds, sizes in
//! bytes unless the name says otherwise. `docs/configuration.md` documents the same values.
//!
//! Emissary's own defaults (`timeout_ms: 3000`, `rewrite: "/"`, ...) are a different schema's
//! and live with its translation in `emissary`.

use crate::model::{
    InsecureActionM, LbPolicyM, ListenerProtocolM, RateScopeM, RateUnitM, TlsVersionM,
    UpstreamProtocolM,
};

// ---------------------------------------------------------------- Listener

/// The listener used when the config has none, and the address of a Listener without one.
pub const LISTENER_NAME: &str = "default";
pub const LISTENER_ADDRESS: [u8; 4] = [0, 0, 0, 0];
pub const LISTENER_PORT: u16 = 8080;
pub const LISTENER_PROTOCOL: ListenerProtocolM = ListenerProtocolM::Http;
pub const LISTENER_HTTP2: bool = true;
/// `Listener.http3`: HTTP/3 over QUIC on the same port (HTTPS listeners only).
pub const LISTENER_HTTP3: bool = false;
/// `Listener.http3_max_handshakes`: QUIC handshakes in progress beyond which new ones are
/// answered with Retry (address validation).
pub const LISTENER_HTTP3_MAX_HANDSHAKES: u32 = 1_000;
pub const LISTENER_MAX_CONNECTIONS: u32 = 100_000;
pub const LISTENER_TRUST_FORWARDED: bool = false;
pub const MAX_REQUEST_HEADERS_KB: u32 = 60;
pub const MAX_HEADERS_COUNT: u32 = 100;
pub const MAX_URI_BYTES: u32 = 8 * 1024;
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
pub const INITIAL_STREAM_WINDOW_BYTES: u32 = 1024 * 1024;
pub const INITIAL_CONNECTION_WINDOW_BYTES: u32 = 2 * 1024 * 1024;
pub const HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// 0 turns the timeout off.
pub const REQUEST_BODY_IDLE_TIMEOUT_MS: u64 = 30_000;
/// 0 turns keep-alive off.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 75_000;

// ---------------------------------------------------------------- Host

pub const TLS_ALPN_PROTOCOLS: &str = "h2,http/1.1";
pub const TLS_MIN_VERSION: TlsVersionM = TlsVersionM::V12;
pub const INSECURE_ACTION: InsecureActionM = InsecureActionM::Redirect;

// ---------------------------------------------------------------- Upstream

pub const UPSTREAM_PROTOCOL: UpstreamProtocolM = UpstreamProtocolM::Http1;
pub const CONNECT_TIMEOUT_MS: u64 = 3000;
pub const MAX_IDLE_CONNECTIONS_PER_ENDPOINT: u32 = 64;
pub const IDLE_CONNECTION_TIMEOUT_MS: u64 = 60_000;
/// Also the refresh of an implicit upstream whose host is a name.
pub const DNS_REFRESH_MS: u64 = 5000;
pub const ENDPOINT_WEIGHT: u32 = 1;
pub const INSECURE_SKIP_VERIFY: bool = false;

pub const LB_POLICY: LbPolicyM = LbPolicyM::RoundRobin;
/// Percent of healthy endpoints under which the balancer ignores health.
pub const HEALTHY_PANIC_THRESHOLD: u32 = 50;

pub const HEALTH_CHECK_INTERVAL_MS: u64 = 5000;
pub const HEALTH_CHECK_TIMEOUT_MS: u64 = 1000;
pub const UNHEALTHY_THRESHOLD: u32 = 3;
pub const HEALTHY_THRESHOLD: u32 = 2;
/// The statuses an HTTP health check accepts.
pub const HEALTH_CHECK_EXPECTED_STATUSES: (u16, u16) = (200, 399);

pub const OUTLIER_CONSECUTIVE_5XX: u32 = 5;
pub const OUTLIER_CONSECUTIVE_GATEWAY_FAILURE: u32 = 5;
pub const OUTLIER_INTERVAL_MS: u64 = 10_000;
pub const OUTLIER_BASE_EJECTION_TIME_MS: u64 = 30_000;
pub const OUTLIER_MAX_EJECTION_TIME_MS: u64 = 300_000;
pub const OUTLIER_MAX_EJECTION_PERCENT: u32 = 10;

pub const CB_MAX_CONNECTIONS: u32 = 1024;
pub const CB_MAX_PENDING_REQUESTS: u32 = 1024;
pub const CB_MAX_REQUESTS: u32 = 1024;
pub const CB_MAX_RETRIES: u32 = 3;

// ---------------------------------------------------------------- Mapping

pub const CASE_SENSITIVE: bool = true;
pub const PREFIX_EXACT: bool = false;
pub const PREFIX_REGEX: bool = false;
pub const PRECEDENCE: i32 = 0;
pub const GRPC: bool = false;
/// 0 turns the timeout off.
pub const ROUTE_TIMEOUT_MS: u64 = 15_000;
/// 0 turns the timeout off.
pub const ROUTE_IDLE_TIMEOUT_MS: u64 = 300_000;
/// `append` of an `add_*_headers` entry.
pub const HEADER_APPEND: bool = true;
pub const REDIRECT_RESPONSE_CODE: u16 = 301;
pub const REDIRECT_HTTPS: bool = false;
pub const DIRECT_RESPONSE_STATUS: u16 = 200;
pub const SHADOW_PERCENT: f64 = 100.0;

/// `retry_on` when a `retry_policy` does not say.
pub const RETRY_ON: &str = "5xx,connect-failure,reset";
pub const NUM_RETRIES: u32 = 1;
pub const RETRY_BUDGET_PERCENT: f64 = 20.0;
pub const MIN_RETRY_CONCURRENCY: u32 = 3;

pub const CORS_CREDENTIALS: bool = false;

pub const COMPRESSION_ENABLED: bool = true;
pub const COMPRESSION_MIN_BYTES: u64 = 1024;
pub const COMPRESSION_CONTENT_TYPES: [&str; 5] = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
];

pub const RATE_LIMIT_UNIT: RateUnitM = RateUnitM::Second;
pub const RATE_LIMIT_SCOPE: RateScopeM = RateScopeM::Local;

// ---------------------------------------------------------------- RateLimitService

pub const RLS_DOMAIN: &str = "portico";
pub const RLS_TIMEOUT_MS: u64 = 20;
pub const RLS_FAILURE_MODE_DENY: bool = false;

// ---------------------------------------------------------------- AuthService, JWTProvider (§9)

pub const AUTH_TIMEOUT_MS: u64 = 5000;
pub const AUTH_STATUS_ON_ERROR: u16 = 403;
pub const AUTH_FAILURE_MODE_ALLOW: bool = false;
pub const AUTH_INCLUDE_BODY_ALLOW_PARTIAL: bool = false;
pub const JWKS_REFRESH_MS: u64 = 300_000;
pub const JWT_CLOCK_SKEW_MS: u64 = 60_000;
pub const JWT_FROM_HEADER: &str = "authorization";
pub const JWT_FROM_HEADER_PREFIX: &str = "Bearer ";
pub const JWT_REQUIRED: bool = true;
