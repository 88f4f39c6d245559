//! Routes: Portico's compiled routes to one Envoy `RouteConfiguration`.
//!
//! Portico matches a request against every route whose hostname glob matches its host, in one
//! global match order (reference §2.3.1: precedence first, then hostname specificity, ...).
//! Envoy first picks the most specific virtual host by domain, then walks that virtual host's
//! routes in order. The translation makes both agree: one virtual host per distinct hostname
//! glob `G` (plus `*`), holding, in Portico's global order, every route whose glob matches all
//! the hosts `G` matches. For a request host `h`, Envoy's most specific domain matching `h` is
//! the most specific route glob matching `h`, and every route glob matching `h` covers it, so
//! the virtual host holds exactly the routes Portico would consider, in Portico's order.
//!
//! A canary group (routes with an identical match, adjacent in match order) becomes one Envoy
//! route with weighted clusters.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy as EnvoyRetry, Route,
    RouteAction as EnvoyAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route, route_action, route_match, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};
use portico_config::snapshot::{
    DirectResponseConf, HashOn, HeaderAdd, HostConf, HostGlob, InsecureAction, PathMatch,
    RateLimitScope, RedirectConf, RetryOn, RetryPolicy, Rewrite, Route as PRoute, RouteAction,
    Snapshot, ValueMatch,
};

use crate::common::{Warnings, cluster_name, duration};
use crate::filters;

/// The name of the one route configuration every listener's HTTP connection manager uses.
pub const ROUTE_CONFIG_NAME: &str = "portico";

/// The route configuration of cleartext listeners when a TLS Host redirects or rejects
/// plain-HTTP requests (`requestPolicy.insecure`); HTTPS listeners use [`ROUTE_CONFIG_NAME`].
pub const CLEARTEXT_ROUTE_CONFIG_NAME: &str = "portico/cleartext";

/// Whether cleartext listeners need their own route configuration: some TLS Host's
/// `requestPolicy.insecure` is not `Route`.
pub fn needs_cleartext(snap: &Snapshot) -> bool {
    snap.hosts
        .iter()
        .any(|h| h.tls.is_some() && h.insecure != InsecureAction::Route)
}

/// Builds the route configurations for `snap`: [`ROUTE_CONFIG_NAME`], and
/// [`CLEARTEXT_ROUTE_CONFIG_NAME`] when [`needs_cleartext`].
pub fn route_configurations(snap: &Snapshot, w: &mut Warnings) -> Vec<RouteConfiguration> {
    let envoy_routes: Vec<(HostGlob, Route)> = groups(snap)
        .into_iter()
        .filter_map(|group| {
            let r = group[0];
            route_for_group(snap, &group, w).map(|er| (r.hostname.clone(), er))
        })
        .collect();
    let mut globs: Vec<HostGlob> = vec![HostGlob::Any];
    for r in &snap.routes {
        if !globs.contains(&r.hostname) {
            globs.push(r.hostname.clone());
        }
    }
    let mut out = vec![config(
        snap,
        ROUTE_CONFIG_NAME,
        virtual_hosts(&globs, &envoy_routes, None),
    )];
    if needs_cleartext(snap) {
        // Every Host glob is a domain too: Envoy's most specific domain for a host is then
        // covered by the most specific Host matching it, the Host Portico applies.
        for h in snap.hosts.iter().filter(|h| h.tls.is_some()) {
            if !globs.contains(&h.hostname) {
                globs.push(h.hostname.clone());
            }
        }
        out.push(config(
            snap,
            CLEARTEXT_ROUTE_CONFIG_NAME,
            virtual_hosts(&globs, &envoy_routes, Some(snap)),
        ));
        if snap.listeners.iter().any(|l| l.trust_forwarded) {
            w.push(
                &snap.listeners[0].name,
                "spec.trust_forwarded",
                "Envoy redirects or rejects plain-HTTP requests per Host even with x-forwarded-proto: https",
            );
        }
    }
    out
}

/// One virtual host per glob holding the routes whose glob covers it; with `insecure`, a
/// glob whose Host redirects or rejects plain HTTP holds that answer instead.
fn virtual_hosts(
    globs: &[HostGlob],
    envoy_routes: &[(HostGlob, Route)],
    insecure: Option<&Snapshot>,
) -> Vec<VirtualHost> {
    globs
        .iter()
        .map(|g| {
            let host = insecure.and_then(|snap| {
                snap.hosts
                    .iter()
                    .filter(|h| h.tls.is_some() && covers(&h.hostname, g))
                    .max_by_key(|h| h.hostname.specificity())
            });
            let routes = match host.map(|h| (h, h.insecure)) {
                Some((h, InsecureAction::Redirect)) => vec![insecure_route(h, true)],
                Some((h, InsecureAction::Reject)) => vec![insecure_route(h, false)],
                _ => envoy_routes
                    .iter()
                    .filter(|(rg, _)| covers(rg, g))
                    .map(|(_, er)| er.clone())
                    .collect(),
            };
            VirtualHost {
                name: format!("portico/{g}"),
                domains: vec![g.to_string()],
                routes,
                ..Default::default()
            }
        })
        .collect()
}

/// A Host's answer to plain HTTP: 301 to https (same host without port, path and query), or
/// 403.
fn insecure_route(h: &HostConf, redirect: bool) -> Route {
    let action = if redirect {
        route::Action::Redirect(RedirectAction {
            scheme_rewrite_specifier: Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(
                true,
            )),
            response_code: redirect_action::RedirectResponseCode::MovedPermanently as i32,
            ..Default::default()
        })
    } else {
        route::Action::DirectResponse(
            envoy_types::pb::envoy::config::route::v3::DirectResponseAction {
                status: 403,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(
                        "insecure request rejected: use https\n".to_string(),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    };
    Route {
        name: format!("host/{}/insecure", h.name),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
            ..Default::default()
        }),
        action: Some(action),
        ..Default::default()
    }
}

fn config(snap: &Snapshot, name: &str, virtual_hosts: Vec<VirtualHost>) -> RouteConfiguration {
    // Envoy refuses direct response bodies over 4 KiB unless told the largest one.
    let largest_body = snap
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            RouteAction::Direct(d) => Some(d.body.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts,
        max_direct_response_body_size_bytes: (largest_body > 4096).then(|| UInt32Value {
            value: u32::try_from(largest_body).unwrap_or(u32::MAX),
        }),
        ..Default::default()
    }
}

/// Whether every host `inner` matches is also matched by `outer`.
pub fn covers(outer: &HostGlob, inner: &HostGlob) -> bool {
    match (outer, inner) {
        (HostGlob::Any, _) => true,
        (_, HostGlob::Any) => false,
        (HostGlob::Suffix(s), HostGlob::Suffix(t)) => t.ends_with(s.as_str()),
        (HostGlob::Suffix(_), HostGlob::Exact(h)) => outer.matches(h),
        (HostGlob::Exact(a), HostGlob::Exact(b)) => a == b,
        (HostGlob::Exact(_), HostGlob::Suffix(_)) => false,
    }
}

/// Routes in match order, canary groups together (a group's routes are adjacent).
fn groups(snap: &Snapshot) -> Vec<Vec<&PRoute>> {
    let mut out: Vec<Vec<&PRoute>> = Vec::new();
    for r in &snap.routes {
        match out.last_mut() {
            Some(g) if r.group != r.id && g[0].id == r.group => g.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}

fn route_for_group(snap: &Snapshot, group: &[&PRoute], w: &mut Warnings) -> Option<Route> {
    let r = group[0];
    let Some(matcher) = route_match(r, w) else {
        w.push(
            &r.name,
            "spec.host_regex",
            "Envoy cannot match a host regex without the port; the route is left out",
        );
        return None;
    };
    let mut out = Route {
        name: r.name.clone(),
        r#match: Some(matcher),
        request_headers_to_add: header_adds(&r.add_request_headers),
        request_headers_to_remove: r
            .remove_request_headers
            .iter()
            .map(|h| h.to_string())
            .collect(),
        response_headers_to_add: header_adds(&r.add_response_headers),
        response_headers_to_remove: r
            .remove_response_headers
            .iter()
            .map(|h| h.to_string())
            .collect(),
        typed_per_filter_config: filters::per_route(snap, r, w),
        ..Default::default()
    };
    out.action = Some(match &r.action {
        RouteAction::Forward { .. } => route::Action::Route(forward(snap, group, w)),
        RouteAction::Redirect(rd) => route::Action::Redirect(redirect(r, rd)),
        RouteAction::Direct(dr) => {
            if let Some(ct) = &dr.content_type {
                out.response_headers_to_add.push(header_option(
                    "content-type",
                    ct.to_str().unwrap_or_default(),
                    false,
                ));
            }
            route::Action::DirectResponse(direct(dr))
        }
    });
    if group.len() > 1 && group.iter().any(|g| g.upstream().is_none()) {
        w.push(
            &r.name,
            "spec",
            "a canary group mixing redirects or direct responses with services: Envoy takes the first route's action only",
        );
    }
    warn_unexpressed(r, w);
    Some(out)
}

/// Settings with no Envoy route-level equivalent (yet): named so `check --target envoy` can warn.
fn warn_unexpressed(r: &PRoute, w: &mut Warnings) {
    if r.upstream().is_none()
        && r.rate_limits
            .iter()
            .any(|rl| rl.scope == RateLimitScope::Global)
    {
        w.push(
            &r.name,
            "spec.rate_limits.scope",
            "Envoy asks the rate limit service only for routes to a service, not for redirects or direct responses",
        );
    }
    if r.timeout.is_some() {
        w.push(
            &r.name,
            "spec.timeout_ms",
            "Envoy does not rewrite the x-portico-expected-timeout-ms deadline header",
        );
    }
}

fn string_exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_string())),
        ..Default::default()
    }
}

fn regex_matcher(pattern: &str) -> RegexMatcher {
    RegexMatcher {
        regex: pattern.to_string(),
        ..Default::default()
    }
}

fn string_regex(pattern: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(
            pattern,
        ))),
        ..Default::default()
    }
}

fn header_matcher(name: &str, spec: HeaderMatchSpecifier) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn value_spec(v: &ValueMatch) -> HeaderMatchSpecifier {
    match v {
        ValueMatch::Present => HeaderMatchSpecifier::PresentMatch(true),
        ValueMatch::Exact(s) => HeaderMatchSpecifier::StringMatch(string_exact(s)),
        ValueMatch::Regex(re) => HeaderMatchSpecifier::StringMatch(string_regex(re.as_str())),
    }
}

/// The Envoy match of one route; `None` when it cannot be expressed without matching more.
fn route_match(r: &PRoute, w: &mut Warnings) -> Option<RouteMatch> {
    let (path_specifier, case_sensitive) = match &r.path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => (
            route_match::PathSpecifier::Prefix(prefix.clone()),
            *case_sensitive,
        ),
        PathMatch::Exact {
            path,
            case_sensitive,
        } => (
            route_match::PathSpecifier::Path(path.clone()),
            *case_sensitive,
        ),
        PathMatch::Regex {
            regex,
            case_sensitive,
            ..
        } => {
            // The compiled pattern is anchored; RE2 accepts `^(?:...)$` and `(?i)`.
            let pattern = if *case_sensitive {
                regex.as_str().to_string()
            } else {
                format!("(?i){}", regex.as_str())
            };
            (
                route_match::PathSpecifier::SafeRegex(regex_matcher(&pattern)),
                true,
            )
        }
    };
    let mut headers: Vec<HeaderMatcher> = r
        .headers
        .iter()
        .map(|h| header_matcher(h.name.as_str(), value_spec(&h.value)))
        .collect();
    if let Some(m) = &r.method {
        headers.push(header_matcher(
            ":method",
            HeaderMatchSpecifier::StringMatch(string_exact(m.as_str())),
        ));
    }
    if let Some(x) = &r.extra {
        if x.host_regex.is_some() {
            return None;
        }
        if let Some(re) = &x.method_regex {
            headers.push(header_matcher(
                ":method",
                HeaderMatchSpecifier::StringMatch(string_regex(re.as_str())),
            ));
        }
        if let Some(port) = x.port {
            headers.push(header_matcher(
                ":authority",
                HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Suffix(format!(":{port}"))),
                    ..Default::default()
                }),
            ));
        }
        if let Some(v) = &x.authority {
            let spec = match v {
                ValueMatch::Exact(s) => HeaderMatchSpecifier::StringMatch(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(s.clone())),
                    ignore_case: true,
                }),
                other => value_spec(other),
            };
            headers.push(header_matcher(":authority", spec));
        }
        if x.port.is_some() {
            w.push(
                &r.name,
                "spec.hostname",
                "the hostname's port is matched on :authority as sent",
            );
        }
    }
    let query_parameters = r
        .query
        .iter()
        .map(|q| QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(match &q.value {
                ValueMatch::Present => QueryParameterMatchSpecifier::PresentMatch(true),
                ValueMatch::Exact(s) => QueryParameterMatchSpecifier::StringMatch(string_exact(s)),
                ValueMatch::Regex(re) => {
                    QueryParameterMatchSpecifier::StringMatch(string_regex(re.as_str()))
                }
            }),
        })
        .collect();
    Some(RouteMatch {
        path_specifier: Some(path_specifier),
        case_sensitive: Some(BoolValue {
            value: case_sensitive,
        }),
        headers,
        query_parameters,
        ..Default::default()
    })
}

fn header_option(name: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: if append {
            HeaderAppendAction::AppendIfExistsOrAdd as i32
        } else {
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        },
        ..Default::default()
    }
}

fn header_adds(adds: &[HeaderAdd]) -> Vec<HeaderValueOption> {
    adds.iter()
        .map(|h| {
            header_option(
                h.name.as_str(),
                &String::from_utf8_lossy(h.value.as_bytes()),
                h.append,
            )
        })
        .collect()
}

/// Portico writes regex substitutions as `${1}`; Envoy (RE2) as `\1`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(j) if j > 0 && after[..j].bytes().all(|b| b.is_ascii_digit()) => {
                out.push('\\');
                out.push_str(&after[..j]);
                rest = &after[j + 1..];
            }
            _ => {
                out.push_str("${");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn forward(snap: &Snapshot, group: &[&PRoute], w: &mut Warnings) -> EnvoyAction {
    let r = group[0];
    let mut a = EnvoyAction {
        // Portico's `timeout_ms: 0` means no limit; Envoy's default would be 15 s.
        timeout: Some(duration(r.timeout.unwrap_or(StdDuration::ZERO))),
        idle_timeout: r.idle_timeout.map(duration),
        retry_policy: r.retry.as_ref().map(retry_policy),
        rate_limits: filters::global_rate_limits(r, w),
        max_stream_duration: r.grpc_timeout_max.map(|d| route_action::MaxStreamDuration {
            grpc_timeout_header_max: Some(duration(d)),
            ..Default::default()
        }),
        ..Default::default()
    };
    match &r.rewrite {
        Rewrite::None => {}
        Rewrite::Prefix(p) => match &r.path {
            PathMatch::Regex { .. } => {
                a.regex_rewrite = Some(RegexMatchAndSubstitute {
                    pattern: Some(regex_matcher("^.*$")),
                    substitution: p.clone(),
                });
            }
            _ => a.prefix_rewrite = p.clone(),
        },
        Rewrite::Regex {
            regex,
            substitution,
        } => {
            a.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(regex.as_str())),
                substitution: envoy_substitution(substitution),
            });
        }
    }
    if let Some(h) = &r.host_rewrite {
        a.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            String::from_utf8_lossy(h.as_bytes()).into_owned(),
        ));
    }
    a.upgrade_configs = r
        .allow_upgrade
        .iter()
        .map(|p| route_action::UpgradeConfig {
            upgrade_type: p.clone(),
            ..Default::default()
        })
        .collect();
    if let Some(sh) = &r.shadow
        && let Some(u) = snap.upstreams.get(sh.upstream)
    {
        a.request_mirror_policies
            .push(route_action::RequestMirrorPolicy {
                cluster: cluster_name(u),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(FractionalPercent {
                        // Parts per million keeps fractional percents.
                        numerator: (sh.percent * 10_000.0).round().clamp(0.0, 1e6) as u32,
                        denominator: fractional_percent::DenominatorType::Million as i32,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
    }
    if let Some(u) = r.upstream().and_then(|u| snap.upstreams.get(u))
        && let Some(h) = &u.lb.hash_on
    {
        a.hash_policy.push(hash_policy(h));
    }
    let forwards: Vec<(&PRoute, usize)> = group
        .iter()
        .filter_map(|g| g.upstream().map(|u| (*g, u)))
        .collect();
    if forwards.len() <= 1 {
        let upstream = r.upstream().unwrap_or(0);
        a.cluster_specifier = Some(route_action::ClusterSpecifier::Cluster(
            snap.upstreams
                .get(upstream)
                .map(|u| cluster_name(u))
                .unwrap_or_default(),
        ));
    } else {
        // Effective weights are percents (f64); Envoy wants integers: hundredths of a percent.
        let clusters = forwards
            .iter()
            .map(|(g, u)| {
                if !same_forwarding(r, g) {
                    w.push(
                        &g.name,
                        "spec",
                        "a canary route's rewrite, timeout or retry differs from the first route of its group: Envoy uses the first route's (headers and host rewrite are kept per canary)",
                    );
                }
                ClusterWeight {
                    name: snap
                        .upstreams
                        .get(*u)
                        .map(|u| cluster_name(u))
                        .unwrap_or_default(),
                    weight: Some(UInt32Value {
                        value: (g.effective_weight * 100.0).round().max(0.0) as u32,
                    }),
                    host_rewrite_specifier: g.host_rewrite.as_ref().map(|h| {
                        envoy_types::pb::envoy::config::route::v3::weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral(
                            String::from_utf8_lossy(h.as_bytes()).into_owned(),
                        )
                    }),
                    ..Default::default()
                }
            })
            .collect();
        a.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters,
                ..Default::default()
            },
        ));
    }
    a
}

/// Ring hash and Maglev hash on what the upstream's `load_balancer` names; Envoy puts the
/// hash key on the route.
fn hash_policy(h: &HashOn) -> route_action::HashPolicy {
    use route_action::hash_policy::{ConnectionProperties, Cookie, Header, PolicySpecifier};
    let spec = match h {
        HashOn::Header(name) => PolicySpecifier::Header(Header {
            header_name: name.to_string(),
            ..Default::default()
        }),
        HashOn::Cookie { name, ttl } => PolicySpecifier::Cookie(Cookie {
            name: name.clone(),
            ttl: ttl.map(duration),
            path: "/".to_string(),
            ..Default::default()
        }),
        HashOn::SourceIp => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
    };
    route_action::HashPolicy {
        policy_specifier: Some(spec),
        ..Default::default()
    }
}

fn same_forwarding(a: &PRoute, b: &PRoute) -> bool {
    let rw = |r: &PRoute| match &r.rewrite {
        Rewrite::None => String::new(),
        Rewrite::Prefix(p) => format!("p{p}"),
        Rewrite::Regex {
            regex,
            substitution,
        } => format!("r{}{substitution}", regex.as_str()),
    };
    rw(a) == rw(b)
        && a.timeout == b.timeout
        && a.idle_timeout == b.idle_timeout
        && a.retry.is_some() == b.retry.is_some()
}

fn retry_on(on: RetryOn) -> String {
    const NAMES: [(u32, &str); 12] = [
        (RetryOn::FIVE_XX, "5xx"),
        (RetryOn::GATEWAY_ERROR, "gateway-error"),
        (RetryOn::CONNECT_FAILURE, "connect-failure"),
        (RetryOn::RESET, "reset"),
        (RetryOn::RETRIABLE_4XX, "retriable-4xx"),
        (RetryOn::REFUSED_STREAM, "refused-stream"),
        (RetryOn::RETRIABLE_STATUS_CODES, "retriable-status-codes"),
        (RetryOn::GRPC_CANCELLED, "cancelled"),
        (RetryOn::GRPC_DEADLINE_EXCEEDED, "deadline-exceeded"),
        (RetryOn::GRPC_INTERNAL, "internal"),
        (RetryOn::GRPC_RESOURCE_EXHAUSTED, "resource-exhausted"),
        (RetryOn::GRPC_UNAVAILABLE, "unavailable"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| on.has(*bit))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn retry_policy(p: &RetryPolicy) -> EnvoyRetry {
    EnvoyRetry {
        retry_on: retry_on(p.retry_on),
        num_retries: Some(UInt32Value {
            value: p.num_retries,
        }),
        per_try_timeout: p.per_try_timeout.map(duration),
        retriable_status_codes: p
            .retriable_status_codes
            .iter()
            .map(|c| u32::from(*c))
            .collect(),
        ..Default::default()
    }
}

fn redirect(r: &PRoute, rd: &RedirectConf) -> RedirectAction {
    use redirect_action::RedirectResponseCode as C;
    let code = match rd.code {
        302 => C::Found,
        303 => C::SeeOther,
        307 => C::TemporaryRedirect,
        308 => C::PermanentRedirect,
        _ => C::MovedPermanently,
    };
    let path_rewrite_specifier = if let Some(p) = &rd.path {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(
            p.clone(),
        ))
    } else if let Some(p) = &rd.prefix {
        match &r.path {
            // The matched "prefix" of an exact or regex match is the whole path.
            PathMatch::Prefix { .. } => Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                p.clone(),
            )),
            _ => Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                p.clone(),
            )),
        }
    } else {
        None
    };
    RedirectAction {
        host_redirect: rd.host.clone().unwrap_or_default(),
        port_redirect: rd.port.map_or(0, u32::from),
        response_code: code as i32,
        strip_query: false,
        scheme_rewrite_specifier: rd
            .https
            .then_some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)),
        path_rewrite_specifier,
    }
}

fn direct(
    dr: &DirectResponseConf,
) -> envoy_types::pb::envoy::config::route::v3::DirectResponseAction {
    envoy_types::pb::envoy::config::route::v3::DirectResponseAction {
        status: u32::from(dr.status),
        body: (!dr.body.is_empty()).then(|| DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(dr.body.to_vec())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "routes_tests.rs"]
mod tests;
