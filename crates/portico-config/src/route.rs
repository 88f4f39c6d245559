//! A compiled route and its parts: what it matches (hostname glob, path, headers, query,
//! the rarer `ExtraMatch`) and what it does (forward, redirect, direct response, with
//! rewrites, retries, rate limits, CORS, shadowing, compression).
//!
//! Kept apart from [`crate::snapshot`] so the route index ([`crate::router`]), which the
//! snapshot holds, depends only on routes and not on the snapshot.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

pub use crate::auth::RouteAuth;

/// A hostname glob: `*`, `*.example.com` or an exact name (stored lowercase).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostGlob {
    Any,
    /// `*.example.com` stored as `.example.com` (the suffix, with its leading dot).
    Suffix(String),
    Exact(String),
}

impl HostGlob {
    pub fn parse(s: &str) -> HostGlob {
        let s = s.trim().to_ascii_lowercase();
        if s == "*" || s.is_empty() {
            HostGlob::Any
        } else if let Some(rest) = s.strip_prefix('*') {
            HostGlob::Suffix(rest.to_string())
        } else {
            HostGlob::Exact(s)
        }
    }

    /// `host` must already be lowercase with the port stripped.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostGlob::Any => true,
            HostGlob::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
            HostGlob::Exact(name) => host == name,
        }
    }

    /// Higher is more specific: exact, then longer wildcard suffix, then `*`.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostGlob::Exact(n) => (2, n.len()),
            HostGlob::Suffix(s) => (1, s.len()),
            HostGlob::Any => (0, 0),
        }
    }
}

impl std::fmt::Display for HostGlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostGlob::Any => f.write_str("*"),
            HostGlob::Suffix(s) => write!(f, "*{s}"),
            HostGlob::Exact(s) => f.write_str(s),
        }
    }
}

// ---------------------------------------------------------------- routes

#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Path starts with `prefix`. When not case sensitive, `prefix` is stored lowercase.
    Prefix {
        prefix: String,
        case_sensitive: bool,
    },
    /// Path equals `path`. When not case sensitive, `path` is stored lowercase.
    Exact { path: String, case_sensitive: bool },
    /// The regex must match the whole path (it is compiled anchored: `^(?:...)$`).
    /// `case_sensitive: false` is compiled into `regex` (not visible in its `as_str()`); kept
    /// here for translations that rebuild the pattern elsewhere (Envoy, portico-xds).
    Regex {
        regex: Regex,
        source: String,
        case_sensitive: bool,
    },
}

impl PathMatch {
    /// The length that orders routes ("longer prefix first"); a regex counts its pattern.
    pub fn order_len(&self) -> usize {
        match self {
            PathMatch::Prefix { prefix, .. } => prefix.len(),
            PathMatch::Exact { path, .. } => path.len(),
            PathMatch::Regex { source, .. } => source.len(),
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Prefix {
                prefix,
                case_sensitive: true,
            } => path.starts_with(prefix.as_str()),
            PathMatch::Prefix {
                prefix,
                case_sensitive: false,
            } => {
                path.len() >= prefix.len()
                    && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            PathMatch::Exact {
                path: p,
                case_sensitive: true,
            } => path == p,
            PathMatch::Exact {
                path: p,
                case_sensitive: false,
            } => path.eq_ignore_ascii_case(p),
            PathMatch::Regex { regex, .. } => regex.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    /// The header/parameter must be present (config value `""`).
    Present,
    Exact(String),
    /// Compiled anchored: must match the whole value.
    Regex(Regex),
}

impl ValueMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Exact(v) => v == value,
            ValueMatch::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Debug, Clone)]
pub enum Rewrite {
    /// Path unchanged.
    None,
    /// Replace the matched prefix (the whole path for exact and regex matches).
    Prefix(String),
    /// `Regex::replace` on the path; `substitution` already converted from `\1` to `${1}`.
    Regex { regex: Regex, substitution: String },
}

#[derive(Debug, Clone)]
pub struct HeaderAdd {
    pub name: HeaderName,
    pub value: HeaderValue,
    /// true: appended (default, as in Emissary); false: replaces existing values.
    pub append: bool,
}

#[derive(Debug, Clone)]
pub struct RedirectConf {
    pub https: bool,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the matched prefix.
    pub prefix: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    pub code: u16,
}

#[derive(Debug, Clone)]
pub struct DirectResponseConf {
    pub status: u16,
    pub body: bytes::Bytes,
    pub content_type: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Proxy to `Snapshot::upstreams[upstream]`.
    Forward {
        upstream: usize,
    },
    Redirect(RedirectConf),
    Direct(DirectResponseConf),
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Parsed `retry_on` conditions.
    pub retry_on: RetryOn,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub retriable_status_codes: Vec<u16>,
    pub budget_percent: f64,
    pub min_retry_concurrency: u32,
}

/// Bit set of `retry_on` conditions (docs/reference.md §3.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub bits: u32,
}

impl RetryOn {
    pub const FIVE_XX: u32 = 1 << 0;
    pub const GATEWAY_ERROR: u32 = 1 << 1;
    pub const CONNECT_FAILURE: u32 = 1 << 2;
    pub const RESET: u32 = 1 << 3;
    pub const RETRIABLE_4XX: u32 = 1 << 4;
    pub const REFUSED_STREAM: u32 = 1 << 5;
    pub const RETRIABLE_STATUS_CODES: u32 = 1 << 6;
    pub const GRPC_CANCELLED: u32 = 1 << 7;
    pub const GRPC_DEADLINE_EXCEEDED: u32 = 1 << 8;
    pub const GRPC_INTERNAL: u32 = 1 << 9;
    pub const GRPC_RESOURCE_EXHAUSTED: u32 = 1 << 10;
    pub const GRPC_UNAVAILABLE: u32 = 1 << 11;

    /// Parses one `retry_on` item; `None` for an unknown value.
    pub fn flag(name: &str) -> Option<u32> {
        Some(match name.trim() {
            "5xx" => Self::FIVE_XX,
            "gateway-error" => Self::GATEWAY_ERROR,
            "connect-failure" => Self::CONNECT_FAILURE,
            "reset" => Self::RESET,
            "retriable-4xx" => Self::RETRIABLE_4XX,
            "refused-stream" => Self::REFUSED_STREAM,
            "retriable-status-codes" => Self::RETRIABLE_STATUS_CODES,
            "cancelled" => Self::GRPC_CANCELLED,
            "deadline-exceeded" => Self::GRPC_DEADLINE_EXCEEDED,
            "internal" => Self::GRPC_INTERNAL,
            "resource-exhausted" => Self::GRPC_RESOURCE_EXHAUSTED,
            "unavailable" => Self::GRPC_UNAVAILABLE,
            _ => return None,
        })
    }

    pub fn has(self, flag: u32) -> bool {
        self.bits & flag != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitUnit {
    Second,
    Minute,
    Hour,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DescriptorPart {
    RemoteAddress,
    Header(HeaderName),
    Generic(String),
    Path,
    Method,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitScope {
    Local,
    Global,
}

#[derive(Debug, Clone)]
pub struct RateLimitConf {
    pub key: Vec<DescriptorPart>,
    pub requests_per_unit: u64,
    pub unit: RateLimitUnit,
    pub burst: u64,
    pub scope: RateLimitScope,
}

#[derive(Debug, Clone)]
pub enum OriginMatch {
    Any,
    Exact(String),
    /// Glob like `https://*.example.com`, compiled to an anchored regex.
    Glob(Regex),
}

#[derive(Debug, Clone)]
pub struct CorsConf {
    pub origins: Vec<OriginMatch>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    pub credentials: bool,
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ShadowConf {
    pub upstream: usize,
    pub percent: f64,
}

#[derive(Debug, Clone)]
pub struct CompressionConf {
    pub enabled: bool,
    pub min_bytes: u64,
    /// Patterns like `text/*` or `application/json`.
    pub content_types: Vec<String>,
}

/// One Mapping, compiled.
#[derive(Debug)]
pub struct Route {
    /// Index in `Snapshot::routes` (match order).
    pub id: usize,
    /// The Mapping's `metadata.name`.
    pub name: String,
    /// Source position, for `/routes` and `explain`.
    pub file: String,
    pub line: u32,
    pub hostname: HostGlob,
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub precedence: i32,
    /// Explicit canary weight, if any (docs/reference.md §2.5).
    pub weight: Option<u32>,
    /// The effective share of its canary group, in percent (100 when alone).
    pub effective_weight: f64,
    /// Id of the first route of this route's canary group (docs/reference.md §2.5): routes with an
    /// identical match are adjacent in match order; `group == id` for the first (or only) one.
    pub group: usize,
    pub action: RouteAction,
    pub rewrite: Rewrite,
    pub host_rewrite: Option<HeaderValue>,
    pub add_request_headers: Vec<HeaderAdd>,
    pub remove_request_headers: Vec<HeaderName>,
    pub add_response_headers: Vec<HeaderAdd>,
    pub remove_response_headers: Vec<HeaderName>,
    /// Whole request, retries included; `None` = no limit (config 0).
    pub timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub grpc: bool,
    /// Cap on a client's grpc-timeout; `None` = the route timeout is the cap.
    pub grpc_timeout_max: Option<Duration>,
    /// Lowercase upgrade protocols allowed (e.g. "websocket").
    pub allow_upgrade: Vec<String>,
    pub retry: Option<RetryPolicy>,
    pub rate_limits: Vec<RateLimitConf>,
    pub cors: Option<CorsConf>,
    pub shadow: Option<ShadowConf>,
    pub compression: Option<CompressionConf>,
    /// Largest request body accepted, in bytes (413 beyond); `None` = no limit (config 0).
    pub max_request_body: Option<u64>,
    /// JWT, external authorization (docs/reference.md §9).
    pub auth: RouteAuth,
    /// Rarer predicates (Emissary's hostname port, `host_regex`, `method_regex`,
    /// `:authority` header); `None` for most routes, so the common path checks one pointer.
    pub extra: Option<Box<ExtraMatch>>,
}

/// Route predicates beyond hostname glob, path, method, headers and query.
#[derive(Debug, Clone, Default)]
pub struct ExtraMatch {
    /// The port the request's authority must carry (hostname `quote.local:8500`). A request
    /// whose authority has no port never matches.
    pub port: Option<u16>,
    /// `host_regex: true`: the host (lowercase, port stripped) must match this anchored regex;
    /// the route's `hostname` glob is then `*`.
    pub host_regex: Option<Regex>,
    /// `method_regex: true`: the method must match this anchored regex.
    pub method_regex: Option<Regex>,
    /// `headers`/`regex_headers` on `:authority`: matched against the authority as sent
    /// (with its port, if any); exact matches ignore ASCII case.
    pub authority: Option<ValueMatch>,
}

impl ExtraMatch {
    /// The port of an authority (`host:port`, `[v6]:port`), if it carries one.
    pub fn port_of(authority: &str) -> Option<u16> {
        let (_, port) = authority.rsplit_once(':')?;
        if authority.starts_with('[')
            && !authority[..authority.len() - port.len() - 1].ends_with(']')
        {
            return None;
        }
        port.parse().ok()
    }

    /// Whether the request passes every predicate (the lookup's check: no allocation).
    pub fn matches(&self, host: &str, authority: &str, method: &Method) -> bool {
        self.port
            .is_none_or(|p| Self::port_of(authority) == Some(p))
            && self.host_regex.as_ref().is_none_or(|re| re.is_match(host))
            && self
                .method_regex
                .as_ref()
                .is_none_or(|re| re.is_match(method.as_str()))
            && self
                .authority
                .as_ref()
                .is_none_or(|v| authority_matches(v, authority))
    }

    /// `None` when the request passes every predicate, else the first reason it does not
    /// (for `explain`).
    pub fn reject(&self, host: &str, authority: &str, method: &Method) -> Option<String> {
        if let Some(p) = self.port
            && Self::port_of(authority) != Some(p)
        {
            return Some(format!("authority {authority} does not carry port {p}"));
        }
        if let Some(re) = &self.host_regex
            && !re.is_match(host)
        {
            return Some(format!("host {host} does not match regex {}", re.as_str()));
        }
        if let Some(re) = &self.method_regex
            && !re.is_match(method.as_str())
        {
            return Some(format!(
                "method {method} does not match regex {}",
                re.as_str()
            ));
        }
        if let Some(v) = &self.authority
            && !authority_matches(v, authority)
        {
            return Some(format!("header :authority: {authority:?} does not match"));
        }
        None
    }
}

fn authority_matches(v: &ValueMatch, authority: &str) -> bool {
    match v {
        ValueMatch::Present => !authority.is_empty(),
        ValueMatch::Exact(want) => authority.eq_ignore_ascii_case(want),
        ValueMatch::Regex(re) => re.is_match(authority),
    }
}

impl Route {
    pub fn upstream(&self) -> Option<usize> {
        match self.action {
            RouteAction::Forward { upstream } => Some(upstream),
            _ => None,
        }
    }
}
