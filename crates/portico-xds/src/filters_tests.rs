//! Unit tests of the HTTP filter translation: the filter chain, local rate limits (descriptors,
//! token buckets) and CORS policies.

use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, rate_limit};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use portico_config::snapshot::RateLimitUnit;
use prost::Message;

use super::*;
use crate::test_util::{snap, unpack};
use crate::{Translation, translate};

fn mapping(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n"
    )
}

fn route<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a Route {
    rc.virtual_hosts[0]
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn per_filter<T: prost::Message + Default>(r: &Route, filter: &str) -> Option<T> {
    r.typed_per_filter_config
        .get(filter)
        .map(|a| T::decode(a.value.as_slice()).expect("decodes"))
}

fn chain(t: &Translation) -> Vec<String> {
    let l: Listener = unpack(&t.resources.listeners[0]);
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0]
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")
        .expect("hcm")
        .config_type
    else {
        panic!("no hcm")
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
    hcm.http_filters.into_iter().map(|f| f.name).collect()
}

fn warned(t: &Translation, field: &str) -> bool {
    t.warnings.iter().any(|w| w.field == field)
}

#[test]
fn filters_are_in_the_chain_only_when_used_and_in_phase_order() {
    let plain = translate(&snap(&mapping("m", "  prefix: /\n  service: a:80")));
    assert_eq!(chain(&plain), [ROUTER]);
    let t = translate(&snap(&[
        mapping("limited", "  prefix: /l/\n  service: a:80\n  rate_limits: [{ key: [remote_address], requests_per_unit: 5, unit: second }]"),
        mapping("cors", "  prefix: /c/\n  service: a:80\n  cors: { origins: [\"https://app.example\"], methods: [GET], headers: [x-a] }"),
    ].concat()));
    assert_eq!(chain(&t), [CORS, LOCAL_RATELIMIT, ROUTER]);
    // A route without settings gets none.
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    assert!(
        route(&rc, "cors")
            .typed_per_filter_config
            .contains_key(CORS)
    );
    assert!(
        !route(&rc, "cors")
            .typed_per_filter_config
            .contains_key(LOCAL_RATELIMIT)
    );
    assert!(!warned(&t, "spec.cors"));
    assert!(!warned(&t, "spec.rate_limits"));
}

#[test]
fn local_rate_limits_become_one_descriptor_per_rule() {
    let rls = "---\napiVersion: portico.dev/v1\nkind: RateLimitService\nmetadata: { name: rls }\nspec: { service: 127.0.0.1:8081 }\n";
    let t = translate(&snap(&format!(
        "{rls}{}",
        mapping(
            "m",
            "  prefix: /\n  service: a:80\n  rate_limits:\n    - { key: [remote_address], requests_per_unit: 2, unit: minute, burst: 3 }\n    - { key: [\"header:x-user\", \"generic:api\", method], requests_per_unit: 100, unit: second }\n    - { key: [remote_address], requests_per_unit: 7, unit: second, scope: global }",
        )
    )));
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    let l: LocalRateLimit = per_filter(route(&rc, "m"), LOCAL_RATELIMIT).expect("local");
    assert_eq!(l.descriptors.len(), 2, "global rules are not local buckets");
    assert_eq!(l.rate_limits.len(), 2);
    let keys = |i: usize| -> Vec<(String, String)> {
        l.descriptors[i]
            .entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect()
    };
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        keys(0),
        [kv(RULE_KEY, "0"), kv("remote_address", "")],
        "wildcard value: one bucket per client"
    );
    assert_eq!(
        keys(1),
        [
            kv(RULE_KEY, "1"),
            kv("x-user", ""),
            kv("generic_key", "api"),
            kv("method", "")
        ]
    );
    let b = l.descriptors[0].token_bucket.as_ref().expect("bucket");
    assert_eq!(b.max_tokens, 3);
    assert_eq!(b.tokens_per_fill.as_ref().map(|v| v.value), Some(1));
    assert_eq!(b.fill_interval.as_ref().map(|d| d.seconds), Some(30));
    // The actions produce the entries in the same order.
    use rate_limit::action::ActionSpecifier as A;
    let acts = &l.rate_limits[1].actions;
    assert!(
        matches!(&acts[0].action_specifier, Some(A::GenericKey(g)) if g.descriptor_key == RULE_KEY && g.descriptor_value == "1")
    );
    assert!(
        matches!(&acts[1].action_specifier, Some(A::RequestHeaders(h)) if h.header_name == "x-user" && h.descriptor_key == "x-user")
    );
    assert!(
        matches!(&acts[3].action_specifier, Some(A::RequestHeaders(h)) if h.header_name == ":method")
    );
    assert!(l.enable_retry_after_header);
    assert!(l.rate_limited_as_resource_exhausted);
    assert_eq!(
        l.always_consume_default_token_bucket.map(|b| b.value),
        Some(false)
    );
    assert_eq!(
        l.filter_enforced
            .and_then(|f| f.default_value)
            .map(|f| f.numerator),
        Some(100)
    );
    assert!(!warned(&t, "spec.rate_limits.scope"));
}

#[test]
fn global_rate_limits_ask_the_rate_limit_service() {
    let rls = "---\napiVersion: portico.dev/v1\nkind: RateLimitService\nmetadata: { name: rls }\nspec: { service: 127.0.0.1:8081, domain: edge, timeout_ms: 50, failure_mode_deny: true }\n";
    let t = translate(&snap(&format!(
        "{rls}{}{}",
        mapping(
            "m",
            "  prefix: /\n  service: a:80\n  rate_limits: [{ key: [remote_address, \"header:x-user\", \"generic:api\", method], scope: global }]",
        ),
        mapping(
            "d",
            "  prefix: /d/\n  direct_response: { status: 200 }\n  rate_limits: [{ key: [remote_address], scope: global }]",
        )
    )));
    assert_eq!(chain(&t), [RATELIMIT, ROUTER]);
    let g = global_ratelimit(&snap(&format!(
        "{rls}{}",
        mapping(
            "m",
            "  prefix: /\n  service: a:80\n  rate_limits: [{ key: [remote_address], scope: global }]",
        )
    )))
    .expect("filter");
    assert_eq!(g.domain, "edge");
    assert!(g.failure_mode_deny);
    assert!(g.rate_limited_as_resource_exhausted);
    assert_eq!(g.timeout, Some(duration(StdDuration::from_millis(50))));
    let svc = g
        .rate_limit_service
        .and_then(|s| s.grpc_service)
        .expect("grpc");
    assert!(matches!(
        svc.target_specifier,
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if e.cluster_name == "127.0.0.1:8081"
    ));
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    let Some(envoy_types::pb::envoy::config::route::v3::route::Action::Route(a)) =
        &route(&rc, "m").action
    else {
        panic!("route action")
    };
    assert_eq!(a.rate_limits.len(), 1);
    use rate_limit::action::ActionSpecifier as A;
    let acts: Vec<_> = a.rate_limits[0]
        .actions
        .iter()
        .map(|x| x.action_specifier.clone())
        .collect();
    assert!(matches!(acts[0], Some(A::RemoteAddress(_))));
    assert!(matches!(&acts[1], Some(A::RequestHeaders(h)) if h.header_name == "x-user"));
    assert!(
        matches!(&acts[2], Some(A::GenericKey(k)) if k.descriptor_value == "api" && k.descriptor_key.is_empty())
    );
    assert!(matches!(&acts[3], Some(A::RequestHeaders(h)) if h.descriptor_key == "method"));
    // No local bucket for a global rule.
    assert!(
        !route(&rc, "m")
            .typed_per_filter_config
            .contains_key(LOCAL_RATELIMIT)
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.resource == "d" && w.field == "spec.rate_limits.scope")
    );
}

#[test]
fn token_buckets_keep_the_rate_above_envoys_minimum_interval() {
    let b = token_bucket(1, RateLimitUnit::Second, 1);
    assert_eq!(
        (b.tokens_per_fill.map(|v| v.value), b.fill_interval),
        (Some(1), Some(duration(StdDuration::from_secs(1))))
    );
    // 100/s: one token per 10 ms is too often; 5 tokens per 50 ms.
    let b = token_bucket(100, RateLimitUnit::Second, 20);
    assert_eq!(b.max_tokens, 20);
    assert_eq!(b.tokens_per_fill.map(|v| v.value), Some(5));
    assert_eq!(
        b.fill_interval,
        Some(duration(StdDuration::from_millis(50)))
    );
    // 30/s: 2 tokens per 66.67 ms (the same rate, interval over 50 ms).
    let b = token_bucket(30, RateLimitUnit::Second, 30);
    assert_eq!(b.tokens_per_fill.map(|v| v.value), Some(2));
    let d = b.fill_interval.expect("interval");
    assert_eq!((d.seconds, d.nanos), (0, 66_666_666));
    let b = token_bucket(3600, RateLimitUnit::Hour, 5);
    assert_eq!(b.fill_interval, Some(duration(StdDuration::from_secs(1))));
}

#[test]
fn path_keys_are_warned() {
    let t = translate(&snap(&mapping(
        "m",
        "  prefix: /\n  service: a:80\n  rate_limits: [{ key: [path], requests_per_unit: 2, unit: second }]",
    )));
    assert!(warned(&t, "spec.rate_limits.key"));
}

#[test]
fn cors_becomes_the_routes_cors_policy() {
    let t = translate(&snap(&mapping(
        "m",
        "  prefix: /\n  service: a:80\n  cors: { origins: [\"https://app.example.com\", \"https://*.example.org\"], methods: [GET, POST], headers: [content-type, x-a], exposed_headers: [x-b], credentials: true, max_age: 600 }",
    )));
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    let p: CorsPolicy = per_filter(route(&rc, "m"), CORS).expect("cors");
    assert_eq!(p.allow_methods, "GET, POST");
    assert_eq!(p.allow_headers, "content-type, x-a");
    assert_eq!(p.expose_headers, "x-b");
    assert_eq!(p.max_age, "600");
    assert_eq!(p.allow_credentials.map(|b| b.value), Some(true));
    assert_eq!(
        p.forward_not_matching_preflights.map(|b| b.value),
        Some(false)
    );
    assert_eq!(p.allow_origin_string_match.len(), 2);
    assert!(matches!(
        &p.allow_origin_string_match[0].match_pattern,
        Some(MatchPattern::Exact(o)) if o == "https://app.example.com"
    ));
    assert!(p.allow_origin_string_match[0].ignore_case);
    let Some(MatchPattern::SafeRegex(re)) = &p.allow_origin_string_match[1].match_pattern else {
        panic!("glob is a regex")
    };
    // The glob's compiled, anchored pattern (RE2 accepts Portico's syntax here).
    assert!(
        re.regex.contains("example\\.org") && re.regex.ends_with('$'),
        "{}",
        re.regex
    );
    assert!(!warned(&t, "spec.cors.methods"));
}

#[test]
fn cors_without_methods_or_headers_is_warned() {
    let t = translate(&snap(&mapping(
        "m",
        "  prefix: /\n  method: POST\n  service: a:80\n  cors: { origins: [\"*\"] }",
    )));
    assert!(warned(&t, "spec.cors.methods"));
    assert!(warned(&t, "spec.cors.headers"));
    assert!(warned(&t, "spec.method"));
}

#[test]
fn compression_and_body_limits_are_filters_switched_per_route() {
    use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{
        BufferPerRoute, buffer_per_route,
    };
    use envoy_types::pb::envoy::extensions::filters::http::compressor::v3::{
        CompressorPerRoute, compressor_per_route,
    };
    let t = translate(&snap(&[
        mapping("gz", "  prefix: /gz/\n  service: a:80\n  compression: { enabled: true, min_bytes: 100, content_types: [text/*, application/json, \"application/*+json\"] }\n  max_request_body_bytes: 1000"),
        mapping("plain", "  prefix: /\n  service: a:80"),
    ].concat()));
    assert_eq!(chain(&t), [BUFFER, COMPRESSOR, ROUTER]);
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    assert!(
        !route(&rc, "gz")
            .typed_per_filter_config
            .contains_key(COMPRESSOR)
    );
    let off: CompressorPerRoute = per_filter(route(&rc, "plain"), COMPRESSOR).expect("off");
    assert_eq!(
        off.r#override,
        Some(compressor_per_route::Override::Disabled(true))
    );
    let b: BufferPerRoute = per_filter(route(&rc, "gz"), BUFFER).expect("buffer");
    assert!(matches!(
        b.r#override,
        Some(buffer_per_route::Override::Buffer(ref x)) if x.max_request_bytes.map(|v| v.value) == Some(1000)
    ));
    let b: BufferPerRoute = per_filter(route(&rc, "plain"), BUFFER).expect("buffer");
    assert_eq!(
        b.r#override,
        Some(buffer_per_route::Override::Disabled(true))
    );
    assert!(warned(&t, "spec.compression"));
    assert!(warned(&t, "spec.max_request_body_bytes"));
}

#[test]
fn content_type_patterns_become_anchored_matchers() {
    let re = |p: &str| match content_type_matcher(p).match_pattern {
        Some(MatchPattern::SafeRegex(r)) => r.regex,
        other => panic!("{other:?}"),
    };
    assert_eq!(re("text/*"), "(?i)^text/[^;]*\\s*(;.*)?$");
    assert_eq!(
        re("application/*+json"),
        "(?i)^application/[^;/]*\\+json\\s*(;.*)?$"
    );
    assert_eq!(re("image/svg+xml"), "(?i)^image/svg\\+xml\\s*(;.*)?$");
}
