//! Translation of parsed Emissary documents into `portico.dev/v1` resources, with the whole
//! config in view (see the module doc of [`super`]): the `ambassador` Module's defaults,
//! Emissary's own defaults, shadow folding, Hosts and their TLS.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::*;
use crate::resource::{self, Diags, HOST, MAPPING, Resource, UPSTREAM};

use super::schema::*;
use super::secrets::{SecretStore, client_ca, context_tls, ident, secret_file_in, spec_of};

// ---------------------------------------------------------------- translation

/// Translates every Emissary resource (see the module doc). Runs after all files are read.
pub(crate) fn resolve(resources: &mut Vec<Resource>, d: &mut Diags) {
    if !resources.iter().any(|r| spec_of(r).is_some()) {
        return;
    }
    let first = d.list.len();
    translate(resources, d);
    // A TLSContext (or Secret) used by several Hosts is translated once per Host: report
    // each of its problems once.
    let mut seen = HashSet::new();
    let mut i = first;
    while i < d.list.len() {
        if seen.insert(d.list[i].clone()) {
            i += 1;
        } else {
            d.list.remove(i);
        }
    }
}

pub(super) fn translate(resources: &mut Vec<Resource>, d: &mut Diags) {
    // The ambassador Module.
    let mut module = EmModuleConfig::default();
    for r in resources.iter().filter(|r| r.kind == MODULE) {
        if let Some(EmSpec::Module(m)) = spec_of(r) {
            if r.local_name == "ambassador" {
                module = (**m).clone();
            } else {
                r.error(
                    d,
                    &["metadata", "name"],
                    format!(
                        "Module `{}` is not supported (only the `ambassador` Module is)",
                        r.name
                    ),
                );
            }
        }
    }
    let upstream_names: HashSet<String> = resources
        .iter()
        .filter(|r| r.kind == UPSTREAM)
        .map(|r| r.name.clone())
        .collect();
    let secrets: HashMap<String, usize> = resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == SECRET)
        .map(|(i, r)| (ident(r.namespace_or_default(), &r.local_name), i))
        .collect();
    let contexts: HashMap<String, usize> = resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == TLS_CONTEXT)
        .map(|(i, r)| (ident(r.namespace_or_default(), &r.local_name), i))
        .collect();

    // Mappings.
    let mut shadows: Vec<(usize, EmMapping)> = Vec::new();
    for (i, r) in resources.iter_mut().enumerate() {
        let Some(EmSpec::Mapping(m)) = spec_of(r) else {
            continue;
        };
        let m = (**m).clone();
        if m.shadow == Some(true) {
            shadows.push((i, m));
            r.emissary = Some(Arc::new(EmSpec::Ignored));
            continue;
        }
        let spec = mapping(r, d, &m, &module, &upstream_names);
        r.spec = spec.map(|s| Arc::new(Spec::Mapping(Box::new(s))));
        r.emissary = None;
    }
    for (i, s) in shadows {
        fold_shadow(resources, d, i, &s, &upstream_names);
    }

    // Hosts (and TLSContext hosts without a Host).
    let mut covered: HashSet<String> = HashSet::new();
    for i in 0..resources.len() {
        let Some(EmSpec::Host(h)) = spec_of(&resources[i]) else {
            continue;
        };
        let h = (**h).clone();
        let hostname = h.hostname.clone().unwrap_or_else(|| "*".to_string());
        covered.insert(hostname.clone());
        let spec = host(
            &resources[i],
            d,
            &h,
            SecretStore {
                resources,
                index: &secrets,
            },
            &contexts,
        );
        resources[i].spec = spec.map(|h| Arc::new(Spec::Host(h)));
        resources[i].emissary = None;
    }
    let mut extra = Vec::new();
    let mut names: Vec<(&String, &usize)> = contexts.iter().collect();
    names.sort();
    for (_, &ci) in names {
        let Some(EmSpec::TlsContext(t)) = spec_of(&resources[ci]) else {
            continue;
        };
        // A TLSContext no Host uses is still checked (a missing Secret is an error).
        context_tls(
            &resources[ci],
            d,
            t,
            SecretStore {
                resources,
                index: &secrets,
            },
        );
        let name = &resources[ci].local_name;
        let hosts: Vec<String> = t
            .hosts
            .iter()
            .flatten()
            .filter(|h| !covered.contains(*h))
            .cloned()
            .collect();
        for (n, hn) in hosts.iter().enumerate() {
            let r = &resources[ci];
            let tls = context_tls(
                r,
                d,
                t,
                SecretStore {
                    resources,
                    index: &secrets,
                },
            );
            let Some(tls) = tls else { continue };
            let local_name = if hosts.len() == 1 {
                name.clone()
            } else {
                format!("{name}-{n}")
            };
            extra.push(resource::Resource {
                kind: HOST,
                name: resource::display_name(r.namespace.as_deref(), &local_name),
                namespace: r.namespace.clone(),
                local_name,
                file: r.file.clone(),
                base_dir: r.base_dir.clone(),
                root: r.root.clone(),
                spec: Some(Arc::new(Spec::Host(HostSpec {
                    hostname: Some(hn.clone()),
                    tls: Some(tls),
                    request_policy: None,
                    acme_provider: None,
                }))),
                emissary: None,
                removed: Vec::new(),
                order: r.order,
            });
        }
    }
    resources.extend(extra);
}

/// The identity key of a namespaced resource in the lookup maps.
/// `service` in Emissary's spelling to Portico's: a bare name means port 80.
pub(super) fn service(s: &str, upstreams: &HashSet<String>) -> String {
    let s = s.trim();
    if s.contains("://") || s.contains(':') || upstreams.contains(s) {
        s.to_string()
    } else {
        format!("{s}:80")
    }
}

pub(super) fn retry(
    r: &Resource,
    d: &mut Diags,
    path: &[&str],
    rp: &EmRetryPolicy,
) -> RetryPolicyM {
    let per_try = rp
        .per_try_timeout
        .as_deref()
        .and_then(|t| match parse_duration_ms(t) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut p = path.to_vec();
                p.push("per_try_timeout");
                r.error(d, &p, e);
                None
            }
        });
    RetryPolicyM {
        retry_on: rp.retry_on.clone(),
        num_retries: rp.num_retries,
        per_try_timeout_ms: per_try,
        retriable_status_codes: None,
        retry_budget: None,
    }
}

pub(super) fn circuit_breakers(
    r: &Resource,
    d: &mut Diags,
    path: &[&str],
    list: &[EmCircuitBreaker],
) -> Option<CircuitBreakersM> {
    let mut out = None;
    for (i, cb) in list.iter().enumerate() {
        match cb.priority.as_deref().unwrap_or("default") {
            "default" => {
                out = Some(CircuitBreakersM {
                    max_connections: cb.max_connections,
                    max_pending_requests: cb.max_pending_requests,
                    max_requests: cb.max_requests,
                    max_retries: cb.max_retries,
                });
            }
            "high" => {
                let idx = i.to_string();
                let mut p = path.to_vec();
                p.extend([idx.as_str(), "priority"]);
                r.warn(
                    d,
                    &p,
                    "priority `high` circuit breakers are ignored (Portico has one priority)",
                );
            }
            other => {
                let idx = i.to_string();
                let mut p = path.to_vec();
                p.extend([idx.as_str(), "priority"]);
                r.error(
                    d,
                    &p,
                    format!("unknown priority `{other}` (expected default or high)"),
                );
            }
        }
    }
    out
}

pub(super) fn load_balancer(
    r: &Resource,
    d: &mut Diags,
    path: &[&str],
    lb: &EmLoadBalancer,
) -> LoadBalancerM {
    let at = |f: &'static str| {
        let mut p = path.to_vec();
        p.push(f);
        p
    };
    let policy = match lb.policy.as_deref() {
        None => None,
        Some("round_robin") => Some(LbPolicyM::RoundRobin),
        Some("least_request") => Some(LbPolicyM::LeastRequest),
        Some("ring_hash") => Some(LbPolicyM::RingHash),
        Some("maglev") => Some(LbPolicyM::Maglev),
        Some("random") => Some(LbPolicyM::Random),
        Some(other) => {
            r.error(
                d,
                &at("policy"),
                format!(
                    "unknown load_balancer policy `{other}` (expected round_robin, least_request, ring_hash or maglev)"
                ),
            );
            None
        }
    };
    let cookie = lb.cookie.as_ref().map(|c| {
        if c.path.is_some() {
            r.warn(d, &at("cookie"), "cookie `path` is ignored");
        }
        CookieM {
            name: c.name.clone(),
            ttl_ms: c.ttl.as_deref().and_then(|t| match parse_duration_ms(t) {
                Ok(v) => Some(v),
                Err(e) => {
                    r.error(d, &at("cookie"), e);
                    None
                }
            }),
        }
    });
    LoadBalancerM {
        policy,
        header: lb.header.clone(),
        cookie,
        source_ip: lb.source_ip,
        healthy_panic_threshold: None,
        slow_start_window_ms: None,
    }
}

pub(super) fn cors(c: &EmCors) -> CorsM {
    CorsM {
        origins: c.origins.clone(),
        methods: c.methods.clone(),
        headers: c.headers.clone(),
        exposed_headers: c.exposed_headers.clone(),
        credentials: c.credentials,
        max_age: c.max_age.map(|m| m.0),
    }
}

pub(super) fn match_pairs(p: &Option<Pairs<EmMatch>>) -> Option<Pairs<MatchStr>> {
    p.as_ref()
        .map(|p| Pairs(p.0.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()))
}

/// One Emissary Mapping to a `portico.dev/v1` one, with the Module's and Emissary's defaults.
pub(super) fn mapping(
    r: &Resource,
    d: &mut Diags,
    m: &EmMapping,
    module: &EmModuleConfig,
    upstreams: &HashSet<String>,
) -> Option<MappingSpec> {
    if m.host.is_some() && m.hostname.is_some() {
        r.error_key(
            d,
            &["spec", "host"],
            "set hostname or the deprecated host, not both",
        );
    }
    let redirecting =
        m.host_redirect == Some(true) || m.path_redirect.is_some() || m.prefix_redirect.is_some();
    let redirect = redirecting.then(|| {
        let (https, host) = match (m.host_redirect, m.service.as_deref()) {
            (Some(true), Some(s)) => {
                let s = s.trim();
                if let Some(h) = s.strip_prefix("https://") {
                    (Some(true), Some(h.to_string()))
                } else {
                    (None, Some(s.trim_start_matches("http://").to_string()))
                }
            }
            _ => (None, None),
        };
        RedirectM {
            https,
            host,
            port: None,
            path: m.path_redirect.clone(),
            prefix: m.prefix_redirect.clone(),
            response_code: m.redirect_response_code,
        }
    });
    if m.redirect_response_code.is_some() && !redirecting {
        r.warn(
            d,
            &["spec", "redirect_response_code"],
            "redirect_response_code without host_redirect/path_redirect/prefix_redirect is ignored",
        );
    }
    let rewrite = match (&m.rewrite, &m.regex_rewrite, redirecting) {
        (Some(rw), _, _) => Some(rw.clone()),
        (None, None, false) => Some("/".to_string()),
        _ => None,
    };
    let retry_policy = match (&m.retry_policy, &module.retry_policy) {
        (Some(rp), _) => Some(retry(r, d, &["spec", "retry_policy"], rp)),
        (None, Some(rp)) => Some(retry(r, d, &["spec"], rp)),
        (None, None) => None,
    };
    let circuit_breakers = match (&m.circuit_breakers, &module.circuit_breakers) {
        (Some(cb), _) => circuit_breakers(r, d, &["spec", "circuit_breakers"], cb),
        (None, Some(cb)) => circuit_breakers(r, d, &["spec"], cb),
        (None, None) => None,
    };
    let load_balancer = m
        .load_balancer
        .as_ref()
        .map(|lb| load_balancer(r, d, &["spec", "load_balancer"], lb))
        .or_else(|| {
            module
                .load_balancer
                .as_ref()
                .map(|lb| load_balancer(r, d, &["spec"], lb))
        });
    let mut allow_upgrade = m.allow_upgrade.clone();
    if m.use_websocket == Some(true) {
        let list = allow_upgrade.get_or_insert_with(|| StrList(Vec::new()));
        if !list.0.iter().any(|p| p.eq_ignore_ascii_case("websocket")) {
            list.0.push("websocket".to_string());
        }
    }
    let host_rewrite = match (&m.host_rewrite, m.auto_host_rewrite, m.service.as_deref()) {
        (Some(h), _, _) => Some(h.clone()),
        (None, Some(true), Some(svc)) => auto_host(svc),
        _ => None,
    };
    let compression = module.gzip.as_ref().map(|g| CompressionM {
        enabled: Some(g.enabled.unwrap_or(true)),
        min_bytes: Some(g.min_content_length.unwrap_or(EMISSARY_GZIP_MIN_BYTES)),
        content_types: g.content_type.clone(),
    });
    Some(MappingSpec {
        hostname: m.hostname.clone().or_else(|| m.host.clone()),
        host_regex: m.host_regex,
        method_regex: m.method_regex,
        prefix: m.prefix.clone(),
        prefix_exact: m.prefix_exact,
        prefix_regex: m.prefix_regex,
        case_sensitive: m.case_sensitive,
        method: m.method.clone(),
        headers: match_pairs(&m.headers),
        regex_headers: m.regex_headers.clone(),
        query_parameters: match_pairs(&m.query_parameters),
        regex_query_parameters: m.regex_query_parameters.clone(),
        precedence: m.precedence,
        service: if redirecting {
            None
        } else {
            m.service.as_deref().map(|s| service(s, upstreams))
        },
        weight: m.weight,
        rewrite,
        regex_rewrite: m.regex_rewrite.clone(),
        host_rewrite,
        add_request_headers: m.add_request_headers.clone(),
        remove_request_headers: m.remove_request_headers.clone(),
        add_response_headers: m.add_response_headers.clone(),
        remove_response_headers: m.remove_response_headers.clone(),
        timeout_ms: Some(
            m.timeout_ms
                .or(module.cluster_request_timeout_ms)
                .unwrap_or(EMISSARY_TIMEOUT_MS),
        ),
        idle_timeout_ms: m.idle_timeout_ms,
        connect_timeout_ms: m.connect_timeout_ms,
        grpc: m.grpc,
        grpc_timeout_max_ms: None,
        allow_upgrade,
        retry_policy,
        circuit_breakers,
        load_balancer,
        health_checks: None,
        outlier_detection: None,
        rate_limits: None,
        cors: m.cors.as_ref().or(module.cors.as_ref()).map(cors),
        redirect,
        direct_response: None,
        shadow: None,
        compression,
        max_request_body_bytes: None,
        bypass_auth: m.bypass_auth,
        auth_context_extensions: m.auth_context_extensions.clone(),
        jwt: None,
    })
}

/// `auto_host_rewrite: true`: the Host sent upstream is the service's host (no scheme, no
/// port), as Emissary does.
pub(super) fn auto_host(service: &str) -> Option<String> {
    let s = service.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let host = match s.strip_prefix('[') {
        Some(rest) => return rest.split_once(']').map(|(h, _)| format!("[{h}]")),
        None => s.rsplit_once(':').map_or(s, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Folds a `shadow: true` Mapping into the Mappings with the same match.
pub(super) fn fold_shadow(
    resources: &mut [Resource],
    d: &mut Diags,
    i: usize,
    s: &EmMapping,
    upstreams: &HashSet<String>,
) {
    let Some(svc) = s.service.as_deref() else {
        resources[i].missing(d, &["spec", "service"], "a shadow Mapping needs a service");
        return;
    };
    let key = |hostname: &Option<String>,
               prefix: &Option<String>,
               rx: Option<bool>,
               ex: Option<bool>,
               method: &Option<String>| {
        (
            hostname.clone().unwrap_or_else(|| "*".into()),
            prefix.clone().unwrap_or_default(),
            rx.unwrap_or(false),
            ex.unwrap_or(false),
            method.clone().unwrap_or_default().to_ascii_uppercase(),
        )
    };
    let want = key(
        &s.hostname.clone().or_else(|| s.host.clone()),
        &s.prefix,
        s.prefix_regex,
        s.prefix_exact,
        &s.method,
    );
    let mut hit = 0;
    for (j, r) in resources.iter_mut().enumerate() {
        if j == i || r.kind != MAPPING {
            continue;
        }
        let Some(Spec::Mapping(m)) = r.spec.as_deref() else {
            continue;
        };
        if key(
            &m.hostname,
            &m.prefix,
            m.prefix_regex,
            m.prefix_exact,
            &m.method,
        ) != want
        {
            continue;
        }
        // Copied only here: the spec may be shared with the parse cache.
        let Some(Spec::Mapping(m)) = r.spec.as_mut().map(Arc::make_mut) else {
            continue;
        };
        m.shadow = Some(ShadowM {
            service: Some(service(svc, upstreams)),
            percent: Some(f64::from(s.weight.unwrap_or(100).min(100))),
        });
        hit += 1;
    }
    if hit == 0 {
        resources[i].warn(
            d,
            &["spec", "shadow"],
            "this shadow Mapping mirrors no Mapping (none has the same hostname, prefix and method)",
        );
    }
}

pub(super) fn host(
    r: &Resource,
    d: &mut Diags,
    h: &EmHost,
    store: SecretStore<'_>,
    contexts: &HashMap<String, usize>,
) -> Option<HostSpec> {
    let resources = store.resources;
    // `authority: none` (or no acmeProvider) means no ACME; any other authority is ordered
    // from, unless a tlsSecret (or a TLSContext, below) gives the certificate.
    let authority = h
        .acme_provider
        .as_ref()
        .and_then(|a| a.authority.as_deref())
        .map(str::trim);
    let mut acme_provider = h.acme_provider.as_ref().and_then(|a| {
        let authority = authority?;
        if authority.eq_ignore_ascii_case("none") {
            return None;
        }
        Some(Box::new(AcmeM {
            authority: Some(authority.to_string()),
            email: a.email.clone(),
            ca_file: None,
            challenge: None,
        }))
    });
    let mut tls = None;
    // Set when tlsSecret is given but unusable (already reported at tlsSecret).
    let mut secret_failed = false;
    if let Some(s) = &h.tls_secret {
        let at = ["spec", "tlsSecret", "name"];
        secret_failed = true;
        let ns = s.namespace.as_deref();
        match &s.name {
            None => r.missing(d, &at, "tlsSecret needs a name"),
            Some(name) => {
                let cert = secret_file_in(r, d, &at, store, ns, name, "tls.crt");
                let key = secret_file_in(r, d, &at, store, ns, name, "tls.key");
                if let (Some(cert), Some(key)) = (cert, key) {
                    secret_failed = false;
                    tls = Some(HostTlsM {
                        cert_chain_file: Some(cert),
                        private_key_file: Some(key),
                        alpn_protocols: None,
                        min_tls_version: None,
                        ca_file: None,
                    });
                }
            }
        }
    }
    // A TLSContext named by the Host, or listing its hostname.
    let ctx = h
        .tls_context
        .as_ref()
        .and_then(|c| {
            let ns = c.namespace.as_deref().unwrap_or(r.namespace_or_default());
            c.name.as_ref().map(|n| (ident(ns, n), n.clone()))
        })
        .map(|(key, n)| (key, n, true))
        .or_else(|| {
            let hn = h.hostname.as_deref().unwrap_or("*");
            // In name order, so the choice does not depend on hashing.
            let mut listing: Vec<&String> = contexts
                .iter()
                .filter(|(_, ci)| {
                    matches!(spec_of(&resources[**ci]), Some(EmSpec::TlsContext(t))
                        if t.hosts.iter().flatten().any(|x| x == hn))
                })
                .map(|(key, _)| key)
                .collect();
            listing.sort();
            let shown = |key: &str| {
                contexts
                    .get(key)
                    .map_or_else(|| key.to_string(), |&ci| resources[ci].name.clone())
            };
            if listing.len() > 1 {
                r.error(
                    d,
                    &["spec", "hostname"],
                    format!(
                        "TLSContexts {} all list `{hn}` in their hosts: keep it in one",
                        listing
                            .iter()
                            .map(|n| format!("`{}`", shown(n)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
            listing
                .first()
                .map(|key| ((*key).clone(), shown(key), false))
        });
    if let Some((key, name, named)) = ctx {
        match contexts.get(&key) {
            None if named => r.error(
                d,
                &["spec", "tlsContext", "name"],
                format!("no TLSContext named `{name}`"),
            ),
            None => {}
            Some(&ci) => {
                if let Some(EmSpec::TlsContext(t)) = spec_of(&resources[ci]) {
                    let t = t.clone();
                    let base = if tls.is_some() {
                        // tlsSecret gives the certificate; the context the settings.
                        let mut b = tls.take().unwrap_or_default();
                        b.alpn_protocols = t.alpn_protocols.clone();
                        b.min_tls_version = t.min_tls_version;
                        b.ca_file = client_ca(
                            &resources[ci],
                            d,
                            &["spec"],
                            t.ca_secret.as_ref(),
                            t.cert_required,
                            store,
                        );
                        Some(b)
                    } else {
                        context_tls(&store.resources[ci], d, &t, store)
                    };
                    tls = base;
                }
            }
        }
    }
    if let Some(t) = &h.tls {
        match &mut tls {
            None if secret_failed => {}
            None if acme_provider.is_some() => {
                tls = Some(HostTlsM {
                    alpn_protocols: t.alpn_protocols.clone(),
                    min_tls_version: t.min_tls_version,
                    ..Default::default()
                });
            }
            None => r.error_key(
                d,
                &["spec", "tls"],
                "tls settings need a certificate: set tlsSecret",
            ),
            Some(b) => {
                if t.alpn_protocols.is_some() {
                    b.alpn_protocols = t.alpn_protocols.clone();
                }
                if t.min_tls_version.is_some() {
                    b.min_tls_version = t.min_tls_version;
                }
                if t.ca_secret.is_some() || t.cert_required.is_some() {
                    b.ca_file = client_ca(
                        r,
                        d,
                        &["spec", "tls"],
                        t.ca_secret.as_ref(),
                        t.cert_required,
                        store,
                    );
                }
            }
        }
    }
    match (&tls, &acme_provider) {
        (Some(t), Some(_)) if t.cert_chain_file.is_some() => {
            r.warn(
                d,
                &["spec", "acmeProvider", "authority"],
                "the certificate comes from tlsSecret or a TLSContext: acmeProvider.authority is not used",
            );
            acme_provider = None;
        }
        (None, None) if !secret_failed && authority.is_none() => r.warn(
            d,
            &["spec", "hostname"],
            "this Host has neither tlsSecret nor acmeProvider.authority: it is cleartext-only \
             (Portico contacts no certificate authority unless acmeProvider.authority names one)",
        ),
        _ => {}
    }
    Some(HostSpec {
        // Emissary: a Host without hostname is `*`.
        hostname: Some(h.hostname.clone().unwrap_or_else(|| "*".to_string())),
        tls,
        request_policy: h.request_policy.as_ref().map(|p| RequestPolicyM {
            insecure: p.insecure.as_ref().map(|i| InsecureM { action: i.action }),
        }),
        acme_provider,
    })
}
