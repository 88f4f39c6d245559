//! HTTP filters: the filter chain of every listener's HTTP connection manager, and each route's
//! per-filter settings (`typed_per_filter_config`).
//!
//! Portico's request phases (reference §9: route, CORS preflight, JWT, external authorization,
//! rate limits, upstream) become Envoy HTTP filters in the same order. A filter is in the chain
//! only when some route uses it, and does nothing on a route without its per-route settings:
//!
//! - `cors` → `envoy.filters.http.cors`, with the route's `CorsPolicy`;
//! - `jwt` → `envoy.filters.http.jwt_authn`, the route naming its requirement; the
//!   `AuthService` → `envoy.filters.http.ext_authz`, off on `bypass_auth` routes (module
//!   [`crate::auth`]);
//! - local `rate_limits` → `envoy.filters.http.local_ratelimit`, with one descriptor (and one
//!   token bucket) per rule. Each rule's descriptor starts with the entry
//!   `portico_rule = INDEX`, so two rules on the same key keep two buckets; the key parts follow
//!   with empty values (Envoy's wildcard descriptors: one bucket per distinct value, as Portico
//!   keeps one per key);
//! - global `rate_limits` → `envoy.filters.http.ratelimit` against the `RateLimitService`'s
//!   cluster, the rules as the route's `rate_limits` (one descriptor per rule, the key parts
//!   as entries, exactly those Portico sends);
//! - `max_request_body_bytes` → `envoy.filters.http.buffer` (413 beyond), off on other routes;
//! - `compression` → `envoy.filters.http.compressor` with gzip, off on routes without it.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::core::v3::{
    ApiVersion, GrpcService, RuntimeFractionalPercent, grpc_service,
};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::{RateLimit, rate_limit};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    LocalRateLimitDescriptor, XRateLimitHeadersRfcVersion, rate_limit_descriptor,
};
use envoy_types::pb::envoy::extensions::compression::gzip::compressor::v3::Gzip;
use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{
    Buffer, BufferPerRoute, buffer_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::{
    Compressor, CompressorPerRoute, compressor, compressor_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::RateLimit as GlobalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, TokenBucket, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use portico_config::snapshot::{
    CorsConf, DescriptorPart, OriginMatch, RateLimitConf, RateLimitScope, RateLimitUnit,
    Route as PRoute, Snapshot,
};

use crate::auth;
use crate::common::{Warnings, cluster_name, duration};

/// Filter names, also the keys of `typed_per_filter_config`.
pub const CORS: &str = "envoy.filters.http.cors";
pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
pub const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
pub const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
pub const RATELIMIT: &str = "envoy.filters.http.ratelimit";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const COMPRESSOR: &str = "envoy.filters.http.compressor";
pub const BUFFER: &str = "envoy.filters.http.buffer";

/// The descriptor key that tells a route's rules apart.
pub const RULE_KEY: &str = "portico_rule";

/// Envoy refills a local bucket at most every 50 ms.
const MIN_FILL_INTERVAL: StdDuration = StdDuration::from_millis(50);

/// Keys (distinct values of a wildcard descriptor) kept per rule, as Portico's local limiter
/// keeps (`portico-proxy`'s `DEFAULT_MAX_KEYS`).
const MAX_KEYS: u32 = 1 << 18;

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn local_rules(r: &PRoute) -> impl Iterator<Item = &RateLimitConf> {
    r.rate_limits
        .iter()
        .filter(|rl| rl.scope == RateLimitScope::Local)
}

/// The HTTP filter chain of every HTTP connection manager, in Portico's phase order.
pub fn http_filters(snap: &Snapshot) -> Vec<HttpFilter> {
    let mut out = Vec::new();
    if snap.routes.iter().any(|r| r.cors.is_some()) {
        out.push(filter(CORS, pack_any(Cors::default())));
    }
    if let Some(j) = auth::jwt_authn(snap) {
        out.push(filter(JWT_AUTHN, pack_any(j)));
    }
    if let Some(a) = auth::ext_authz(snap) {
        out.push(filter(EXT_AUTHZ, pack_any(a)));
    }
    if snap.routes.iter().any(|r| local_rules(r).next().is_some()) {
        // Enabled for 0% of requests by default: only routes with their own settings limit.
        out.push(filter(
            LOCAL_RATELIMIT,
            pack_any(LocalRateLimit {
                stat_prefix: "portico_local_ratelimit".to_string(),
                ..Default::default()
            }),
        ));
    }
    if let Some(g) = global_ratelimit(snap) {
        out.push(filter(RATELIMIT, pack_any(g)));
    }
    if let Some(b) = snap.routes.iter().find_map(|r| r.max_request_body) {
        // Off by default; each limited route sets its own size.
        out.push(filter(BUFFER, pack_any(buffer(b))));
    }
    if let Some(c) = compressor(snap) {
        out.push(filter(COMPRESSOR, pack_any(c)));
    }
    out.push(filter(ROUTER, pack_any(Router::default())));
    out
}

fn buffer(max: u64) -> Buffer {
    Buffer {
        max_request_bytes: Some(UInt32Value {
            value: u32::try_from(max).unwrap_or(u32::MAX),
        }),
    }
}

/// A content-type pattern (`text/*`, `application/*+json`, `application/json`) as a matcher of
/// the `content-type` value, parameters allowed.
fn content_type_matcher(pattern: &str) -> StringMatcher {
    let p = pattern.trim().to_ascii_lowercase();
    let esc = |x: &str| regex_syntax_escape(x);
    let body = if let Some(main) = p.strip_suffix("/*") {
        format!("{}/[^;]*", esc(main))
    } else if let Some((main, rest)) = p.split_once("/*+") {
        format!("{}/[^;/]*\\+{}", esc(main), esc(rest))
    } else {
        esc(&p)
    };
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
            regex: format!("(?i)^{body}\\s*(;.*)?$"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Escapes RE2 metacharacters.
fn regex_syntax_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The `compressor` filter (gzip) with the settings of the first route that compresses; the
/// other routes turn it off or on per route.
fn compressing(snap: &Snapshot) -> impl Iterator<Item = &PRoute> {
    snap.routes
        .iter()
        .map(|r| &**r)
        .filter(|r| r.compression.as_ref().is_some_and(|c| c.enabled))
}

/// What the filter chain cannot express, named once per route (`check --target envoy`).
pub fn warn(snap: &Snapshot, w: &mut Warnings) {
    for r in snap.routes.iter().filter(|r| r.max_request_body.is_some()) {
        w.push(
            &r.name,
            "spec.max_request_body_bytes",
            "Envoy's buffer filter holds the whole request body (up to the limit) before forwarding it; Portico streams it",
        );
    }
    let mut on = compressing(snap);
    let Some(first) = on.next() else { return };
    let Some(c) = &first.compression else { return };
    w.push(
        &first.name,
        "spec.compression",
        "Envoy compresses with gzip only (Portico also offers br and zstd)",
    );
    for r in on {
        if let Some(o) = &r.compression
            && (o.min_bytes != c.min_bytes || o.content_types != c.content_types)
        {
            w.push(
                &r.name,
                "spec.compression",
                &format!(
                    "Envoy has one compressor setting: {}'s min_bytes and content_types apply",
                    first.name
                ),
            );
        }
    }
}

fn compressor(snap: &Snapshot) -> Option<Compressor> {
    use compressor::{CommonDirectionConfig, ResponseDirectionConfig};
    let c = compressing(snap).next()?.compression.as_ref()?;
    let patterns: Vec<String> = if c.content_types.is_empty() {
        DEFAULT_COMPRESSED_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect()
    } else {
        c.content_types.clone()
    };
    Some(Compressor {
        compressor_library: Some(TypedExtensionConfig {
            name: "gzip".to_string(),
            typed_config: Some(pack_any(Gzip::default())),
        }),
        response_direction_config: Some(ResponseDirectionConfig {
            common_config: Some(CommonDirectionConfig {
                min_content_length: Some(UInt32Value {
                    value: u32::try_from(c.min_bytes).unwrap_or(u32::MAX),
                }),
                content_type_matcher: patterns.iter().map(|p| content_type_matcher(p)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The types Portico compresses when a route names none (`portico-proxy`'s defaults).
const DEFAULT_COMPRESSED_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-javascript",
    "image/svg+xml",
    "application/*+json",
    "application/*+xml",
];

fn global_rules(r: &PRoute) -> impl Iterator<Item = &RateLimitConf> {
    r.rate_limits
        .iter()
        .filter(|rl| rl.scope == RateLimitScope::Global)
}

/// The `ratelimit` filter asking the `RateLimitService` (its cluster, domain, timeout and
/// failure mode), when some route has a global rule.
pub fn global_ratelimit(snap: &Snapshot) -> Option<GlobalRateLimit> {
    let conf = snap.rate_limit_service.as_ref()?;
    if !snap.routes.iter().any(|r| global_rules(r).next().is_some()) {
        return None;
    }
    let cluster = snap
        .upstreams
        .get(conf.upstream)
        .map(|u| cluster_name(u))
        .unwrap_or_default();
    Some(GlobalRateLimit {
        domain: conf.domain.clone(),
        timeout: Some(duration(conf.timeout)),
        failure_mode_deny: conf.failure_mode_deny,
        rate_limited_as_resource_exhausted: true,
        // `x-ratelimit-*` and `retry-after` from the service's answer, as Portico sends.
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        enable_retry_after_header: true,
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3 as i32,
        }),
        ..Default::default()
    })
}

/// The route's global rules as the route's `rate_limits`: one descriptor per rule, its
/// entries the key parts in order (reference §4.1: the same entries Portico sends).
pub fn global_rate_limits(r: &PRoute, w: &mut Warnings) -> Vec<RateLimit> {
    global_rules(r)
        .map(|rl| RateLimit {
            actions: rl.key.iter().map(|p| part(r, p, w).0).collect(),
            ..Default::default()
        })
        .collect()
}

/// The per-filter settings of route `r` (empty when it uses no filter).
pub fn per_route(snap: &Snapshot, r: &PRoute, w: &mut Warnings) -> HashMap<String, Any> {
    let mut m = HashMap::new();
    if let Some(c) = &r.cors {
        m.insert(CORS.to_string(), pack_any(cors_policy(r, c, w)));
    }
    if let Some(j) = auth::jwt_per_route(snap, r) {
        m.insert(JWT_AUTHN.to_string(), pack_any(j));
    }
    if let Some(a) = auth::ext_authz_per_route(snap, r) {
        m.insert(EXT_AUTHZ.to_string(), pack_any(a));
    }
    if let Some(l) = local_ratelimit(r, w) {
        m.insert(LOCAL_RATELIMIT.to_string(), pack_any(l));
    }
    if snap.routes.iter().any(|o| o.max_request_body.is_some()) {
        let o = match r.max_request_body {
            Some(b) => buffer_per_route::Override::Buffer(buffer(b)),
            None => buffer_per_route::Override::Disabled(true),
        };
        m.insert(
            BUFFER.to_string(),
            pack_any(BufferPerRoute {
                r#override: Some(o),
            }),
        );
    }
    if !r.compression.as_ref().is_some_and(|c| c.enabled)
        && snap
            .routes
            .iter()
            .any(|o| o.compression.as_ref().is_some_and(|c| c.enabled))
    {
        m.insert(
            COMPRESSOR.to_string(),
            pack_any(CompressorPerRoute {
                r#override: Some(compressor_per_route::Override::Disabled(true)),
            }),
        );
    }
    m
}

fn all_requests() -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: 100,
            denominator: fractional_percent::DenominatorType::Hundred as i32,
        }),
        ..Default::default()
    })
}

fn unit(u: RateLimitUnit) -> StdDuration {
    StdDuration::from_secs(match u {
        RateLimitUnit::Second => 1,
        RateLimitUnit::Minute => 60,
        RateLimitUnit::Hour => 3600,
    })
}

/// Envoy's bucket for `burst` tokens refilled at `per_unit` per `unit`: one token every
/// `unit / per_unit`, or, when that is under Envoy's 50 ms minimum, the smallest whole number
/// of tokens whose interval is at least 50 ms (the same rate).
pub fn token_bucket(per_unit: u64, u: RateLimitUnit, burst: u64) -> TokenBucket {
    let unit_ns = unit(u).as_nanos();
    let per_unit = u128::from(per_unit.max(1));
    let min_ns = MIN_FILL_INTERVAL.as_nanos();
    let tokens = if unit_ns / per_unit >= min_ns {
        1
    } else {
        (per_unit * min_ns).div_ceil(unit_ns)
    };
    let interval_ns = unit_ns * tokens / per_unit;
    TokenBucket {
        max_tokens: u32::try_from(burst.max(1)).unwrap_or(u32::MAX),
        tokens_per_fill: Some(UInt32Value {
            value: u32::try_from(tokens).unwrap_or(u32::MAX),
        }),
        fill_interval: Some(duration(StdDuration::from_nanos(
            u64::try_from(interval_ns).unwrap_or(u64::MAX),
        ))),
    }
}

fn action(a: rate_limit::action::ActionSpecifier) -> rate_limit::Action {
    rate_limit::Action {
        action_specifier: Some(a),
    }
}

fn entry(key: &str, value: &str) -> rate_limit_descriptor::Entry {
    rate_limit_descriptor::Entry {
        key: key.to_string(),
        value: value.to_string(),
    }
}

fn request_header(header: &str, key: &str) -> rate_limit::action::ActionSpecifier {
    rate_limit::action::ActionSpecifier::RequestHeaders(rate_limit::action::RequestHeaders {
        header_name: header.to_string(),
        descriptor_key: key.to_string(),
        ..Default::default()
    })
}

/// The descriptor action and the (wildcard) descriptor entry of one key part.
fn part(
    r: &PRoute,
    p: &DescriptorPart,
    w: &mut Warnings,
) -> (rate_limit::Action, rate_limit_descriptor::Entry) {
    use rate_limit::action::{ActionSpecifier as A, GenericKey, RemoteAddress};
    match p {
        DescriptorPart::RemoteAddress => (
            action(A::RemoteAddress(RemoteAddress::default())),
            entry("remote_address", ""),
        ),
        DescriptorPart::Header(name) => (
            action(request_header(name.as_str(), name.as_str())),
            entry(name.as_str(), ""),
        ),
        DescriptorPart::Generic(v) => (
            action(A::GenericKey(GenericKey {
                descriptor_value: v.clone(),
                ..Default::default()
            })),
            entry("generic_key", v),
        ),
        DescriptorPart::Path => {
            w.push(
                &r.name,
                "spec.rate_limits.key",
                "Envoy's path descriptor includes the query string; Portico's is the path alone",
            );
            (action(request_header(":path", "path")), entry("path", ""))
        }
        DescriptorPart::Method => (
            action(request_header(":method", "method")),
            entry("method", ""),
        ),
    }
}

/// The route's local rate limits as Envoy's per-route `LocalRateLimit`; `None` without any.
pub fn local_ratelimit(r: &PRoute, w: &mut Warnings) -> Option<LocalRateLimit> {
    let rules: Vec<&RateLimitConf> = local_rules(r).collect();
    if rules.is_empty() {
        return None;
    }
    let mut descriptors = Vec::with_capacity(rules.len());
    let mut rate_limits = Vec::with_capacity(rules.len());
    for (i, rl) in rules.iter().enumerate() {
        let tag = i.to_string();
        let mut actions = vec![action(rate_limit::action::ActionSpecifier::GenericKey(
            rate_limit::action::GenericKey {
                descriptor_value: tag.clone(),
                descriptor_key: RULE_KEY.to_string(),
                ..Default::default()
            },
        ))];
        let mut entries = vec![entry(RULE_KEY, &tag)];
        for p in &rl.key {
            let (a, e) = part(r, p, w);
            actions.push(a);
            entries.push(e);
        }
        rate_limits.push(RateLimit {
            actions,
            ..Default::default()
        });
        descriptors.push(LocalRateLimitDescriptor {
            entries,
            token_bucket: Some(token_bucket(rl.requests_per_unit, rl.unit, rl.burst)),
            ..Default::default()
        });
    }
    Some(LocalRateLimit {
        stat_prefix: "portico_local_ratelimit".to_string(),
        // Required on a route; requests that match no rule (a missing header key part) take
        // it, and it never runs out.
        token_bucket: Some(TokenBucket {
            max_tokens: u32::MAX,
            tokens_per_fill: Some(UInt32Value { value: u32::MAX }),
            fill_interval: Some(duration(MIN_FILL_INTERVAL)),
        }),
        always_consume_default_token_bucket: Some(BoolValue { value: false }),
        filter_enabled: all_requests(),
        filter_enforced: all_requests(),
        descriptors,
        rate_limits,
        enable_x_ratelimit_headers: XRateLimitHeadersRfcVersion::DraftVersion03 as i32,
        enable_retry_after_header: true,
        rate_limited_as_resource_exhausted: true,
        max_dynamic_descriptors: Some(UInt32Value { value: MAX_KEYS }),
        ..Default::default()
    })
}

fn origin_matcher(o: &OriginMatch) -> StringMatcher {
    use string_matcher::MatchPattern;
    let pattern = match o {
        OriginMatch::Any => MatchPattern::SafeRegex(RegexMatcher {
            regex: ".*".to_string(),
            ..Default::default()
        }),
        OriginMatch::Exact(s) => MatchPattern::Exact(s.clone()),
        OriginMatch::Glob(re) => MatchPattern::SafeRegex(RegexMatcher {
            regex: re.as_str().to_string(),
            ..Default::default()
        }),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        // Portico compares origins without case.
        ignore_case: matches!(o, OriginMatch::Exact(_)),
    }
}

/// The route's CORS settings as Envoy's per-route `CorsPolicy`.
pub fn cors_policy(r: &PRoute, c: &CorsConf, w: &mut Warnings) -> CorsPolicy {
    if c.methods.is_empty() {
        w.push(
            &r.name,
            "spec.cors.methods",
            "without methods Portico allows the method a preflight asks for; Envoy sends no access-control-allow-methods",
        );
    }
    if c.headers.is_empty() {
        w.push(
            &r.name,
            "spec.cors.headers",
            "without headers Portico allows the headers a preflight asks for; Envoy sends no access-control-allow-headers",
        );
    }
    if r.method.is_some() {
        w.push(
            &r.name,
            "spec.method",
            "Portico matches a preflight by the method it asks for; Envoy matches it as OPTIONS, so this route does not see it",
        );
    }
    CorsPolicy {
        allow_origin_string_match: c.origins.iter().map(origin_matcher).collect(),
        allow_methods: c.methods.join(", "),
        allow_headers: c.headers.join(", "),
        expose_headers: c.exposed_headers.join(", "),
        max_age: c.max_age.map(|a| a.to_string()).unwrap_or_default(),
        allow_credentials: c.credentials.then_some(BoolValue { value: true }),
        filter_enabled: all_requests(),
        // Portico answers every preflight on a CORS route; the upstream never sees one.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "filters_tests.rs"]
mod tests;
