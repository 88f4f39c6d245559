//! A `Mapping` into a route: path, header and query matches, rewrites, header edits, the
//! action (forward, redirect, direct response), shadowing, timeouts, and its policies.

use http::HeaderName;
use regex::Regex;

use super::Ctx;
use super::order::{Pending, group_key, order_and_group};
use super::parse::{
    anchored, convert_substitution, header_name, header_value, nonzero_ms, p, parse_authority,
    regex_reason,
};
use super::policy::{cors, redirect, retry_policy};
use super::ratelimit::rate_limits;
use super::route_match;
use super::settings::upstream_settings;
use crate::defaults;
use crate::model::{HeaderAddM, MappingSpec, Pairs, Spec, StrList};
use crate::resource::{Diags, MAPPING, Resource};
use crate::snapshot::*;

pub(super) fn header_adds(
    d: &mut Diags,
    r: &Resource,
    field: &str,
    adds: Option<&Pairs<HeaderAddM>>,
) -> Vec<HeaderAdd> {
    let mut out = Vec::new();
    for (name, add) in adds.map(|a| a.0.as_slice()).unwrap_or_default() {
        let path = ["spec", field, name.as_str()];
        let n = match header_name(name) {
            Ok(n) => n,
            Err(m) => {
                r.error_key(d, &path, m);
                continue;
            }
        };
        let Some(value) = &add.value else {
            r.missing(
                d,
                &p(&path, &["value"]),
                format!("missing field `value` for header `{name}`"),
            );
            continue;
        };
        match header_value(value) {
            Ok(v) => out.push(HeaderAdd {
                name: n,
                value: v,
                append: add.append.unwrap_or(defaults::HEADER_APPEND),
            }),
            Err(m) => {
                // `value` of `{ value, append }`, else the plain value.
                r.error(d, &p(&path, &["value"]), m);
            }
        }
    }
    out
}

pub(super) fn header_removes(
    d: &mut Diags,
    r: &Resource,
    field: &str,
    list: Option<&StrList>,
) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, name) in list
        .map(|l| l.0.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match header_name(name) {
            Ok(n) => out.push(n),
            Err(m) => r.error(d, &["spec", field, &i.to_string()], m),
        }
    }
    out
}

impl Ctx<'_> {
    pub(super) fn routes(&mut self, resources: &[Resource], have_rls: bool) -> Vec<Route> {
        let mut pending: Vec<Pending<'_>> = Vec::new();
        for r in resources.iter().filter(|r| r.kind == MAPPING) {
            let Some(Spec::Mapping(m)) = r.spec.as_deref() else {
                continue;
            };
            if let Some(route) = self.mapping(r, m, have_rls) {
                let group_key =
                    group_key(&route, m.case_sensitive.unwrap_or(defaults::CASE_SENSITIVE));
                pending.push(Pending {
                    route,
                    res: r,
                    group_key,
                });
            }
        }
        order_and_group(self.d, pending)
    }

    pub(super) fn mapping(
        &mut self,
        r: &Resource,
        m: &MappingSpec,
        have_rls: bool,
    ) -> Option<Route> {
        let auth = self.route_auth(r, m);
        let d = &mut *self.d;
        let errors_before = d.list.len();
        let route_match::HostMethod {
            hostname,
            method,
            extra,
        } = route_match::compile(r, d, m);
        let path = path_match(d, r, m);
        let headers = header_matches(d, r, m);
        let query = query_matches(d, r, m);
        if let Some(w) = m.weight
            && w > 100
        {
            r.error(d, &["spec", "weight"], format!("weight {w} is over 100"));
        }

        let rewrite = rewrite(d, r, m);
        let host_rewrite = m.host_rewrite.as_ref().and_then(|h| {
            parse_authority(h.trim())
                .and_then(|_| header_value(h.trim()))
                .map_err(|e| r.error(d, &["spec", "host_rewrite"], e))
                .ok()
        });
        let add_request_headers =
            header_adds(d, r, "add_request_headers", m.add_request_headers.as_ref());
        let add_response_headers = header_adds(
            d,
            r,
            "add_response_headers",
            m.add_response_headers.as_ref(),
        );
        let remove_request_headers = header_removes(
            d,
            r,
            "remove_request_headers",
            m.remove_request_headers.as_ref(),
        );
        let remove_response_headers = header_removes(
            d,
            r,
            "remove_response_headers",
            m.remove_response_headers.as_ref(),
        );

        let allow_upgrade = allow_upgrade(d, r, m);
        let retry = m.retry_policy.as_ref().map(|rp| retry_policy(d, r, rp));
        let rate_limits = rate_limits(d, r, m.rate_limits.as_deref().unwrap_or_default(), have_rls);
        let cors = m.cors.as_ref().map(|c| cors(d, r, c));
        let compression = compression(m);
        let grpc = m.grpc.unwrap_or(defaults::GRPC);

        let action = self.action(r, m, grpc);
        let shadow = self.shadow(r, m, grpc);
        let d = &mut *self.d;
        let timeout = nonzero_ms(m.timeout_ms.unwrap_or(defaults::ROUTE_TIMEOUT_MS));
        let idle_timeout = nonzero_ms(m.idle_timeout_ms.unwrap_or(defaults::ROUTE_IDLE_TIMEOUT_MS));
        if let (Some(rt), Some(t)) = (&retry, timeout)
            && rt.per_try_timeout.is_some_and(|pt| pt > t)
        {
            r.warn(
                d,
                &["spec", "retry_policy", "per_try_timeout_ms"],
                "per_try_timeout_ms is longer than timeout_ms",
            );
        }
        if d.list[errors_before..].iter().any(|x| x.is_error()) {
            return None;
        }
        Some(Route {
            id: 0,
            name: r.name.clone(),
            file: r.file.to_string(),
            line: r.root.pos.line,
            hostname,
            path: path?,
            method,
            headers,
            query,
            precedence: m.precedence.unwrap_or(defaults::PRECEDENCE),
            weight: m.weight,
            effective_weight: 100.0,
            group: 0,
            action: action?,
            rewrite,
            host_rewrite,
            add_request_headers,
            remove_request_headers,
            add_response_headers,
            remove_response_headers,
            timeout,
            idle_timeout,
            grpc,
            grpc_timeout_max: m.grpc_timeout_max_ms.and_then(nonzero_ms),
            allow_upgrade,
            retry,
            rate_limits,
            cors,
            shadow,
            compression,
            max_request_body: m.max_request_body_bytes.filter(|&b| b > 0),
            auth,
            extra,
        })
    }

    /// What a Mapping does: redirect, direct response, or forward to its service's upstream
    /// (applying the Mapping's upstream-level settings to it).
    fn action(&mut self, r: &Resource, m: &MappingSpec, grpc: bool) -> Option<RouteAction> {
        let d = &mut *self.d;
        let settings = upstream_settings(
            d,
            r,
            m.load_balancer.as_ref(),
            m.health_checks.as_deref(),
            m.outlier_detection.as_ref(),
            m.circuit_breakers.as_ref(),
            m.connect_timeout_ms,
        );
        match (&m.redirect, &m.direct_response) {
            (Some(_), Some(_)) => {
                r.error_key(
                    d,
                    &["spec", "direct_response"],
                    "set either redirect or direct_response, not both",
                );
                None
            }
            (Some(rd), None) => {
                if m.service.is_some() {
                    r.warn(
                        d,
                        &["spec", "service"],
                        "service is ignored because redirect is set",
                    );
                }
                Some(RouteAction::Redirect(redirect(d, r, rd)))
            }
            (None, Some(dr)) => {
                if m.service.is_some() {
                    r.warn(
                        d,
                        &["spec", "service"],
                        "service is ignored because direct_response is set",
                    );
                }
                let base = ["spec", "direct_response"];
                let status = dr.status.unwrap_or(defaults::DIRECT_RESPONSE_STATUS);
                if !(200..=599).contains(&status) {
                    r.error(
                        d,
                        &p(&base, &["status"]),
                        format!("status {status} out of range (200-599)"),
                    );
                }
                let content_type = dr.content_type.as_ref().and_then(|c| {
                    header_value(c)
                        .map_err(|e| r.error(d, &p(&base, &["content_type"]), e))
                        .ok()
                });
                Some(RouteAction::Direct(DirectResponseConf {
                    status,
                    body: bytes::Bytes::from(dr.body.clone().unwrap_or_default()),
                    content_type,
                }))
            }
            (None, None) => match &m.service {
                None => {
                    r.missing(d, &["spec", "service"], "missing field `service` (required unless redirect or direct_response is set)");
                    None
                }
                Some(s) => {
                    let up = self.service_upstream(r, &["spec", "service"], s, grpc);
                    if let Some(u) = up {
                        // `https` offers only http/1.1 in ALPN (`auto` offers h2 too).
                        if grpc
                            && let Some(c) = self.upstreams.get(u)
                            && self.is_resource[u]
                            && matches!(
                                c.protocol,
                                UpstreamProtocol::Http1 | UpstreamProtocol::Https
                            )
                        {
                            let proto = if c.protocol == UpstreamProtocol::Https {
                                "https (TLS with HTTP/1.1 only)"
                            } else {
                                "http1"
                            };
                            r.warn(
                                self.d,
                                &["spec", "grpc"],
                                format!(
                                    "grpc needs HTTP/2, but this Upstream's protocol is {proto} \
                                     (set protocol: h2c, or auto for TLS, on the Upstream)"
                                ),
                            );
                        }
                        self.apply_settings(r, u, settings);
                    }
                    up.map(|upstream| RouteAction::Forward { upstream })
                }
            },
        }
    }

    fn shadow(&mut self, r: &Resource, m: &MappingSpec, grpc: bool) -> Option<ShadowConf> {
        let d = &mut *self.d;
        match &m.shadow {
            None => None,
            Some(sh) => {
                let percent = sh.percent.unwrap_or(defaults::SHADOW_PERCENT);
                if !(0.0..=100.0).contains(&percent) {
                    r.error(d, &["spec", "shadow", "percent"], "percent must be 0-100");
                }
                match &sh.service {
                    None => {
                        r.missing(
                            d,
                            &["spec", "shadow", "service"],
                            "missing field `service` in shadow",
                        );
                        None
                    }
                    Some(s) => self
                        .service_upstream(r, &["spec", "shadow", "service"], s, grpc)
                        .map(|upstream| ShadowConf {
                            upstream,
                            percent: percent.clamp(0.0, 100.0),
                        }),
                }
            }
        }
    }
}

/// `prefix` (with `prefix_exact`, `prefix_regex`, `case_sensitive`) as a path match.
fn path_match(d: &mut Diags, r: &Resource, m: &MappingSpec) -> Option<PathMatch> {
    let case_sensitive = m.case_sensitive.unwrap_or(defaults::CASE_SENSITIVE);
    let exact = m.prefix_exact.unwrap_or(defaults::PREFIX_EXACT);
    let is_regex = m.prefix_regex.unwrap_or(defaults::PREFIX_REGEX);
    if exact && is_regex {
        r.error_key(
            d,
            &["spec", "prefix_regex"],
            "set either prefix_exact or prefix_regex, not both",
        );
    }
    match &m.prefix {
        None => {
            r.missing(d, &["spec", "prefix"], "missing field `prefix`");
            None
        }
        Some(pfx) if is_regex => match anchored(pfx, !case_sensitive) {
            Ok(regex) => Some(PathMatch::Regex {
                regex,
                source: pfx.clone(),
                case_sensitive,
            }),
            Err(e) => {
                r.error(d, &["spec", "prefix"], e);
                None
            }
        },
        Some(pfx) => {
            if !pfx.starts_with('/') {
                r.error(
                    d,
                    &["spec", "prefix"],
                    format!("prefix `{pfx}` must start with `/`"),
                );
            }
            let stored = if case_sensitive {
                pfx.clone()
            } else {
                pfx.to_ascii_lowercase()
            };
            Some(if exact {
                PathMatch::Exact {
                    path: stored,
                    case_sensitive,
                }
            } else {
                PathMatch::Prefix {
                    prefix: stored,
                    case_sensitive,
                }
            })
        }
    }
}

/// `headers` and `regex_headers` (an `:authority` entry is a host match, see `route_match`).
fn header_matches(d: &mut Diags, r: &Resource, m: &MappingSpec) -> Vec<HeaderMatch> {
    let mut headers = Vec::new();
    let authority = |n: &str| n.eq_ignore_ascii_case(route_match::AUTHORITY);
    for (name, v) in m.headers.iter().flat_map(|h| h.0.iter()) {
        if authority(name) {
            continue;
        }
        match header_name(name) {
            Ok(n) => headers.push(HeaderMatch {
                name: n,
                value: if v.0.is_empty() {
                    ValueMatch::Present
                } else {
                    ValueMatch::Exact(v.0.clone())
                },
            }),
            Err(e) => r.error_key(d, &["spec", "headers", name], e),
        }
    }
    for (name, v) in m.regex_headers.iter().flat_map(|h| h.0.iter()) {
        if authority(name) {
            continue;
        }
        match header_name(name) {
            Ok(n) => match anchored(v, false) {
                Ok(re) => headers.push(HeaderMatch {
                    name: n,
                    value: ValueMatch::Regex(re),
                }),
                Err(e) => r.error(d, &["spec", "regex_headers", name], e),
            },
            Err(e) => r.error_key(d, &["spec", "regex_headers", name], e),
        }
    }
    headers
}

/// `query_parameters` and `regex_query_parameters`.
fn query_matches(d: &mut Diags, r: &Resource, m: &MappingSpec) -> Vec<QueryMatch> {
    let mut query = Vec::new();
    for (name, v) in m.query_parameters.iter().flat_map(|h| h.0.iter()) {
        if name.is_empty() {
            r.error_key(
                d,
                &["spec", "query_parameters", name],
                "query parameter name must not be empty",
            );
            continue;
        }
        let value = if v.0.is_empty() {
            ValueMatch::Present
        } else {
            ValueMatch::Exact(v.0.clone())
        };
        query.push(QueryMatch {
            name: name.clone(),
            value,
        });
    }
    for (name, v) in m.regex_query_parameters.iter().flat_map(|h| h.0.iter()) {
        if name.is_empty() {
            r.error_key(
                d,
                &["spec", "regex_query_parameters", name],
                "query parameter name must not be empty",
            );
            continue;
        }
        match anchored(v, false) {
            Ok(re) => query.push(QueryMatch {
                name: name.clone(),
                value: ValueMatch::Regex(re),
            }),
            Err(e) => r.error(d, &["spec", "regex_query_parameters", name], e),
        }
    }
    query
}

/// `rewrite` or `regex_rewrite`.
fn rewrite(d: &mut Diags, r: &Resource, m: &MappingSpec) -> Rewrite {
    match (&m.rewrite, &m.regex_rewrite) {
        (Some(_), Some(_)) => {
            r.error_key(
                d,
                &["spec", "regex_rewrite"],
                "set either rewrite or regex_rewrite, not both",
            );
            Rewrite::None
        }
        (Some(rw), None) if rw.is_empty() => Rewrite::None,
        (Some(rw), None) => Rewrite::Prefix(rw.clone()),
        (None, Some(rr)) => {
            let base = ["spec", "regex_rewrite"];
            match (&rr.pattern, &rr.substitution) {
                (Some(pat), sub) => match Regex::new(pat) {
                    Ok(regex) => {
                        if sub.is_none() {
                            r.missing(
                                d,
                                &p(&base, &["substitution"]),
                                "missing field `substitution` in regex_rewrite",
                            );
                        }
                        Rewrite::Regex {
                            regex,
                            substitution: convert_substitution(sub.as_deref().unwrap_or("")),
                        }
                    }
                    Err(e) => {
                        r.error(
                            d,
                            &p(&base, &["pattern"]),
                            format!("invalid regex `{pat}`: {}", regex_reason(&e)),
                        );
                        Rewrite::None
                    }
                },
                (None, _) => {
                    r.missing(
                        d,
                        &p(&base, &["pattern"]),
                        "missing field `pattern` in regex_rewrite",
                    );
                    Rewrite::None
                }
            }
        }
        (None, None) => Rewrite::None,
    }
}

/// `allow_upgrade`, lowercased; malformed protocol names are errors.
fn allow_upgrade(d: &mut Diags, r: &Resource, m: &MappingSpec) -> Vec<String> {
    let allow_upgrade: Vec<String> = m
        .allow_upgrade
        .iter()
        .flat_map(|a| a.0.iter())
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (i, a) in allow_upgrade.iter().enumerate() {
        if a.is_empty()
            || !a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/'))
        {
            r.error(
                d,
                &["spec", "allow_upgrade", &i.to_string()],
                format!("invalid upgrade protocol `{a}`"),
            );
        }
    }
    allow_upgrade
}

fn compression(m: &MappingSpec) -> Option<CompressionConf> {
    m.compression.as_ref().map(|c| CompressionConf {
        enabled: c.enabled.unwrap_or(defaults::COMPRESSION_ENABLED),
        min_bytes: c.min_bytes.unwrap_or(defaults::COMPRESSION_MIN_BYTES),
        content_types: c
            .content_types
            .as_ref()
            .map(|l| l.0.clone())
            .unwrap_or_else(|| {
                defaults::COMPRESSION_CONTENT_TYPES
                    .map(String::from)
                    .to_vec()
            }),
    })
}
