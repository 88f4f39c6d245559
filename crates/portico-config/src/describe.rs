//! Flat descriptions of compiled resources and lints over a compiled [`Snapshot`].
//!
//! [`route`], [`upstream`], [`host`], [`auth_service`] and [`jwt_provider`] render a compiled Route/Upstream/Host as a
//! `BTreeMap<field, value>` of everything that changes behaviour (names of upstreams rather
//! than indices; no source positions), so `portico diff` can compare two configs field by
//! field. [`lint`] finds Mappings that can never be taken (reference §1 `check` warnings):
//!
//! - **shadowed**: an earlier route in match order has no method/header/query condition, a
//!   hostname glob covering this route's (same glob, or `*`, or a wildcard suffix containing
//!   an exact name or a longer suffix), and a prefix path match (same case sensitivity) that is
//!   a prefix of this route's prefix or exact path. Regex routes are never judged. Members of
//!   one canary group do not shadow each other.
//! - **unreceivable**: every Listener is HTTPS (or HTTPSPROXY), there is no `*` Host with TLS,
//!   and the route's exact hostname matches no Host with TLS: the TLS handshake for that name
//!   fails, so no request for it ever arrives. Wildcard route hostnames are not judged.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::diag::{Diagnostic, Severity};
use crate::snapshot::*;

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_string(), |d| d.as_millis().to_string())
}

fn value_match(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Present => "present".to_string(),
        ValueMatch::Exact(s) => format!("= {s:?}"),
        ValueMatch::Regex(r) => format!("~ {:?}", r.as_str()),
    }
}

fn upstream_name(s: &Snapshot, i: usize) -> String {
    s.upstreams
        .get(i)
        .map_or_else(|| format!("#{i}"), |u| u.name.clone())
}

/// A route's fields.
pub fn route(s: &Snapshot, r: &Route) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("hostname", r.hostname.to_string());
    match &r.path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => {
            put("match.prefix", prefix.clone());
            put("match.case_sensitive", case_sensitive.to_string());
        }
        PathMatch::Exact {
            path,
            case_sensitive,
        } => {
            put("match.exact", path.clone());
            put("match.case_sensitive", case_sensitive.to_string());
        }
        PathMatch::Regex { source, regex, .. } => {
            put("match.regex", source.clone());
            // The compiled regex carries the case flag.
            put("match.regex_compiled", regex.as_str().to_string());
        }
    }
    if let Some(method) = &r.method {
        put("match.method", method.to_string());
    }
    for h in &r.headers {
        put(&format!("match.header.{}", h.name), value_match(&h.value));
    }
    for q in &r.query {
        put(&format!("match.query.{}", q.name), value_match(&q.value));
    }
    put("precedence", r.precedence.to_string());
    if let Some(w) = r.weight {
        put("weight", w.to_string());
    }
    put("effective_weight", format!("{}", r.effective_weight));
    match &r.action {
        RouteAction::Forward { upstream } => put("upstream", upstream_name(s, *upstream)),
        RouteAction::Redirect(rd) => put("redirect", format!("{rd:?}")),
        RouteAction::Direct(dr) => {
            put("direct_response.status", dr.status.to_string());
            put(
                "direct_response.body",
                String::from_utf8_lossy(&dr.body).into_owned(),
            );
            if let Some(ct) = &dr.content_type {
                put(
                    "direct_response.content_type",
                    ct.to_str().unwrap_or("?").to_string(),
                );
            }
        }
    }
    match &r.rewrite {
        Rewrite::None => {}
        Rewrite::Prefix(p) => put("rewrite", p.clone()),
        Rewrite::Regex {
            regex,
            substitution,
        } => put(
            "regex_rewrite",
            format!("{:?} -> {substitution:?}", regex.as_str()),
        ),
    }
    if let Some(h) = &r.host_rewrite {
        put("host_rewrite", h.to_str().unwrap_or("?").to_string());
    }
    for (key, list) in [
        ("add_request_headers", &r.add_request_headers),
        ("add_response_headers", &r.add_response_headers),
    ] {
        for h in list {
            put(
                &format!("{key}.{}", h.name),
                format!(
                    "{}{}",
                    h.value.to_str().unwrap_or("?"),
                    if h.append { "" } else { " (replace)" }
                ),
            );
        }
    }
    for (key, list) in [
        ("remove_request_headers", &r.remove_request_headers),
        ("remove_response_headers", &r.remove_response_headers),
    ] {
        if !list.is_empty() {
            put(
                key,
                list.iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    put("timeout_ms", ms(r.timeout));
    put("idle_timeout_ms", ms(r.idle_timeout));
    if r.grpc {
        put("grpc", "true".into());
    }
    if r.grpc_timeout_max.is_some() {
        put("grpc_timeout_max_ms", ms(r.grpc_timeout_max));
    }
    if !r.allow_upgrade.is_empty() {
        put("allow_upgrade", r.allow_upgrade.join(","));
    }
    if let Some(rp) = &r.retry {
        put("retry_policy", format!("{rp:?}"));
    }
    if !r.rate_limits.is_empty() {
        put("rate_limits", format!("{:?}", r.rate_limits));
    }
    if let Some(c) = &r.cors {
        put("cors", format!("{c:?}"));
    }
    if let Some(sh) = &r.shadow {
        put(
            "shadow",
            format!("{} {}%", upstream_name(s, sh.upstream), sh.percent),
        );
    }
    if let Some(c) = &r.compression {
        put("compression", format!("{c:?}"));
    }
    if r.auth.bypass {
        put("bypass_auth", "true".into());
    }
    if !r.auth.context_extensions.is_empty() {
        put(
            "auth_context_extensions",
            format!("{:?}", r.auth.context_extensions),
        );
    }
    if let Some(j) = &r.auth.jwt {
        let name = s
            .jwt_providers
            .get(j.provider)
            .map_or_else(|| format!("#{}", j.provider), |p| p.name.clone());
        put("jwt", format!("{name} (required: {})", j.required));
    }
    m
}

/// The `AuthService`'s fields (reference §9.1), upstream named.
pub fn auth_service(s: &Snapshot, a: &AuthServiceConf) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("auth_service", upstream_name(s, a.upstream));
    put("proto", format!("{:?}", a.proto).to_lowercase());
    put("path_prefix", a.path_prefix.clone());
    put("timeout_ms", ms(Some(a.timeout)));
    let names = |l: &[http::HeaderName]| {
        l.iter()
            .map(|h| h.as_str().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    put("allowed_request_headers", names(&a.request_headers));
    put(
        "allowed_authorization_headers",
        names(&a.authorization_headers),
    );
    if let Some(b) = &a.include_body {
        put("include_body", format!("{b:?}"));
    }
    put("failure_mode_allow", a.failure_mode_allow.to_string());
    put("status_on_error", a.status_on_error.to_string());
    if !a.add_headers.is_empty() {
        put("add_auth_headers", format!("{:?}", a.add_headers));
    }
    m
}

/// A `JWTProvider`'s fields (reference §9.2).
pub fn jwt_provider(s: &Snapshot, p: &JwtProviderConf) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("issuer", p.issuer.clone());
    put("audiences", p.audiences.join(","));
    match &p.keys {
        JwksSource::File(f) => put("jwks_file", f.display().to_string()),
        JwksSource::Uri { url, upstream, .. } => {
            put(
                "jwks_uri",
                format!("{url} ({})", upstream_name(s, *upstream)),
            );
            put("jwks_refresh_ms", ms(Some(p.refresh)));
        }
    }
    put("from_headers", format!("{:?}", p.from_headers));
    if !p.from_params.is_empty() {
        put("from_params", p.from_params.join(","));
    }
    if !p.forward_claims.is_empty() {
        put("forward_claims", format!("{:?}", p.forward_claims));
    }
    put("clock_skew_ms", ms(Some(p.clock_skew)));
    m
}

/// An upstream's fields.
pub fn upstream(u: &UpstreamConf) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    match &u.endpoints {
        EndpointSource::Static(eps) => put(
            "endpoints",
            eps.iter()
                .map(|e| {
                    if e.weight == 1 {
                        e.address.clone()
                    } else {
                        format!("{} (weight {})", e.address, e.weight)
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        EndpointSource::Dns {
            host,
            port,
            refresh,
        } => put(
            "dns",
            format!("{host}:{port} (refresh {} ms)", refresh.as_millis()),
        ),
    }
    put("protocol", format!("{:?}", u.protocol));
    if let Some(t) = &u.tls {
        put("tls", format!("{t:?}"));
    }
    put("load_balancer", format!("{:?}", u.lb));
    if !u.health_checks.is_empty() {
        put("health_checks", format!("{:?}", u.health_checks));
    }
    if let Some(o) = &u.outlier {
        put("outlier_detection", format!("{o:?}"));
    }
    put("circuit_breakers", format!("{:?}", u.circuit_breakers));
    put("connect_timeout_ms", ms(Some(u.connect_timeout)));
    put(
        "max_idle_connections_per_endpoint",
        u.max_idle_connections_per_endpoint.to_string(),
    );
    put(
        "idle_connection_timeout_ms",
        ms(Some(u.idle_connection_timeout)),
    );
    m
}

/// A host's fields.
pub fn host(h: &HostConf) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("hostname".into(), h.hostname.to_string());
    m.insert("insecure".into(), format!("{:?}", h.insecure));
    if let Some(a) = &h.acme {
        m.insert("acme.authority".into(), a.authority.clone());
        m.insert("acme.challenge".into(), a.challenge.as_str().into());
        if let Some(e) = &a.email {
            m.insert("acme.email".into(), e.clone());
        }
        if let Some(ca) = &a.ca_file {
            m.insert("acme.ca_file".into(), ca.display().to_string());
        }
    }
    if let Some(t) = &h.tls {
        // An ACME Host's certificate is in the state directory, not in the config.
        if h.acme.is_none() {
            m.insert(
                "tls.cert_chain_file".into(),
                t.cert_chain_file.display().to_string(),
            );
            m.insert(
                "tls.private_key_file".into(),
                t.private_key_file.display().to_string(),
            );
        }
        m.insert("tls.alpn_protocols".into(), t.alpn_protocols.join(","));
        m.insert(
            "tls.min_tls_version".into(),
            format!("{:?}", t.min_tls_version),
        );
        if let Some(ca) = &t.ca_file {
            m.insert("tls.ca_file".into(), ca.display().to_string());
        }
    }
    m
}

/// Whether glob `a` matches every host `b` matches.
fn host_covers(a: &HostGlob, b: &HostGlob) -> bool {
    match (a, b) {
        (HostGlob::Any, _) => true,
        (HostGlob::Suffix(sa), HostGlob::Suffix(sb)) => sb.ends_with(sa.as_str()),
        (HostGlob::Suffix(_), HostGlob::Exact(n)) => a.matches(n),
        (HostGlob::Exact(x), HostGlob::Exact(y)) => x == y,
        _ => false,
    }
}

/// Whether route `a`'s path match accepts every path route `b`'s does.
fn path_covers(a: &PathMatch, b: &PathMatch) -> bool {
    let PathMatch::Prefix {
        prefix: pa,
        case_sensitive: ca,
    } = a
    else {
        return false;
    };
    let (pb, cb) = match b {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => (prefix, case_sensitive),
        PathMatch::Exact {
            path,
            case_sensitive,
        } => (path, case_sensitive),
        PathMatch::Regex { .. } => return false,
    };
    if *ca {
        // Case-sensitive `a` covers `b` only if `b` is case-sensitive too.
        *cb && pb.starts_with(pa.as_str())
    } else {
        pb.len() >= pa.len() && pb.as_bytes()[..pa.len()].eq_ignore_ascii_case(pa.as_bytes())
    }
}

fn warning(r: &Route, message: String) -> Diagnostic {
    Diagnostic {
        file: r.file.clone(),
        line: r.line.max(1),
        column: 1,
        kind: "Mapping".into(),
        name: r.name.clone(),
        severity: Severity::Warning,
        message,
    }
}

/// Warnings about Mappings that can never be taken (see the module doc).
pub fn lint(s: &Snapshot) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (j, r) in s.routes.iter().enumerate() {
        let shadowing = s.routes[..j].iter().find(|e| {
            e.group != r.group
                && e.method.is_none()
                && e.headers.is_empty()
                && e.query.is_empty()
                && host_covers(&e.hostname, &r.hostname)
                && path_covers(&e.path, &r.path)
        });
        if let Some(e) = shadowing {
            out.push(warning(
                r,
                format!(
                    "never matches: Mapping `{}` ({}:{}) comes first in match order and matches every request this one does",
                    e.name, e.file, e.line
                ),
            ));
        }
    }
    let all_tls = !s.listeners.is_empty() && s.listeners.iter().all(|l| l.protocol.is_tls());
    let tls_hosts: Vec<&HostConf> = s.hosts.iter().filter(|h| h.tls.is_some()).collect();
    if all_tls && !tls_hosts.iter().any(|h| h.hostname == HostGlob::Any) {
        for r in s.routes.iter() {
            if let HostGlob::Exact(name) = &r.hostname
                && !tls_hosts.iter().any(|h| h.hostname.matches(name))
            {
                out.push(warning(
                    r,
                    format!(
                        "never receives traffic: every Listener is HTTPS and no Host with TLS matches hostname `{name}`"
                    ),
                ));
            }
        }
    }
    out.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    out
}
