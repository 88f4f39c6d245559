//! Edge authentication as the snapshot carries it (docs/reference.md §9): the compiled
//! `AuthService` ([`AuthServiceConf`]), `JWTProvider`s ([`JwtProviderConf`]) and what a route
//! asks of them ([`RouteAuth`]). Pure data, filled in by `compile/auth.rs`.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The headers Portico always sends to an HTTP auth service (when the request has them).
pub const AUTH_DEFAULT_HEADERS: [&str; 10] = [
    "authorization",
    "cookie",
    "from",
    "proxy-authorization",
    "user-agent",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
    "host",
];

/// The protocol spoken to the auth service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthProto {
    /// Emissary's HTTP protocol: the request's head (and maybe body) forwarded.
    Http,
    /// Envoy's `envoy.service.auth.v3.Authorization/Check`.
    Grpc,
}

/// `include_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IncludeBody {
    pub max_bytes: u64,
    /// true: a longer body is cut to `max_bytes` for the check; false: it is refused (413).
    pub allow_partial: bool,
}

/// The `AuthService` resource, compiled (§9.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthServiceConf {
    pub name: String,
    /// Index in `Snapshot::upstreams` of the auth service.
    pub upstream: usize,
    pub proto: AuthProto,
    /// http: prepended to the request's path (`""` when not set).
    pub path_prefix: String,
    pub timeout: Duration,
    /// http: every header sent to the auth service (the defaults, then
    /// `allowed_request_headers`), lowercase, without duplicates.
    pub request_headers: Vec<HeaderName>,
    /// http: copied from an allowing answer onto the upstream request.
    pub authorization_headers: Vec<HeaderName>,
    pub include_body: Option<IncludeBody>,
    pub failure_mode_allow: bool,
    /// The status of a request whose check failed (default 403).
    pub status_on_error: u16,
    /// Added to every check request (Emissary's `add_auth_headers`).
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JwksSource {
    /// A JWKS document on disk, re-read when it changes.
    File(PathBuf),
    /// An absolute http(s) URL, fetched by Portico's upstream client.
    Uri {
        /// The URL as written (for messages).
        url: String,
        /// Index in `Snapshot::upstreams` of the URL's host.
        upstream: usize,
        /// `host[:port]` sent as the Host.
        authority: String,
        /// Path and query.
        path: String,
    },
}

/// Where a token may be found in a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenHeader {
    pub name: HeaderName,
    /// Stripped from the value (`"Bearer "` by default; case-insensitive); empty: none.
    pub prefix: String,
}

/// A `JWTProvider` resource, compiled (§9.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwtProviderConf {
    pub name: String,
    pub issuer: String,
    /// The token's `aud` must contain one of these (empty: not checked).
    pub audiences: Vec<String>,
    pub keys: JwksSource,
    /// jwks_uri: how often the keys are fetched again.
    pub refresh: Duration,
    pub from_headers: Vec<TokenHeader>,
    pub from_params: Vec<String>,
    /// claim → request header sent upstream.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub clock_skew: Duration,
}

/// `Mapping.jwt`, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteJwt {
    /// Index in `Snapshot::jwt_providers`.
    pub provider: usize,
    /// false: a request without a token passes (an invalid one is still refused).
    pub required: bool,
}

/// What a route asks of edge authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RouteAuth {
    /// `bypass_auth: true`: the `AuthService` is not asked.
    pub bypass: bool,
    /// gRPC auth: the check's `context_extensions`.
    pub context_extensions: Vec<(String, String)>,
    pub jwt: Option<RouteJwt>,
}
