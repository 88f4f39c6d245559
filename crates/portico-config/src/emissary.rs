//! Emissary-ingress compatibility (CONTRACT §2.6): the `getambassador.io/v3alpha1` schema and
//! Kubernetes `v1` `Secret`s, translated into the `portico.dev/v1` model.
//!
//! Two steps. [`EmissaryV3::parse_spec`] deserializes each document with Emissary's field
//! names (unknown fields are errors naming the field) into [`EmSpec`]. After every file is
//! read, [`resolve`] translates them with the whole config in view: the `ambassador`
//! `Module`'s defaults, then Emissary's own defaults (`rewrite: "/"`, `timeout_ms: 3000`,
//! `hostname: "*"`), `shadow: true` Mappings folded into the Mapping they mirror, `Host`
//! TLS from `tlsSecret`/`tlsContext`, and `TLSContext.hosts` without a `Host` turned into
//! Hosts. What stays an [`EmSpec`] (Module, TLSContext, Secret, tuning kinds) compiles to
//! nothing.
//!
//! Choices where Emissary's behaviour cannot be reproduced exactly are listed in
//! `docs/migrating-from-emissary.md`. Notably: a bare `service: name` (no port, no scheme)
//! means `name:80` as in Emissary, unless a `portico.dev/v1` `Upstream` has that name;
//! `Secret` PEM data is written to a private directory (`$TMPDIR/portico-secrets-UID`, 0700,
//! files 0600, named by a hash of their content) because the TLS layer reads files.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};

use crate::load::{self, Diags, HOST, LISTENER, MAPPING, Parsed, Resource, Schema, UPSTREAM};
use crate::model::*;
use crate::node::{self, Deserialized, Node, Pos};

pub(crate) const MODULE: &str = "Module";
pub(crate) const TLS_CONTEXT: &str = "TLSContext";
pub(crate) const SECRET: &str = "Secret";

/// Kinds that only tune Emissary: accepted, ignored, with a warning.
const TUNING_KINDS: &[&str] = &[
    "KubernetesServiceResolver",
    "KubernetesEndpointResolver",
    "ConsulResolver",
    "LogService",
    "TracingService",
    "DevPortal",
    "RateLimitService",
];
/// Kinds whose absence would weaken security: errors.
const SECURITY_KINDS: &[&str] = &["AuthService", "Filter", "FilterPolicy"];

/// Emissary's default `timeout_ms`.
const EMISSARY_TIMEOUT_MS: u64 = 3000;

/// A parsed Emissary document, before [`resolve`].
#[derive(Debug, Clone)]
pub enum EmSpec {
    Mapping(Box<EmMapping>),
    Host(Box<EmHost>),
    Module(Box<EmModuleConfig>),
    TlsContext(EmTlsContext),
    Secret(EmSecret),
    /// Accepted and ignored (tuning kinds, or a Mapping folded into another one).
    Ignored,
}

// ---------------------------------------------------------------- value helpers

/// An exact header/query match: a string, `true` or empty/null for "present".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmMatch(pub MatchStr);

impl<'de> Deserialize<'de> for EmMatch {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EmMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or true/null for \"present\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EmMatch, E> {
                Ok(EmMatch(MatchStr(s.to_string())))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<EmMatch, E> {
                if b {
                    Ok(EmMatch(MatchStr(String::new())))
                } else {
                    Err(E::custom("`false` is not a header match (use a string)"))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<EmMatch, E> {
                Ok(EmMatch(MatchStr(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<EmMatch, E> {
                Ok(EmMatch(MatchStr(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<EmMatch, E> {
                Ok(EmMatch(MatchStr(String::new())))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer written as a number or a string (Emissary's `cors.max_age` is a string).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IntOrStr(pub u64);

impl<'de> Deserialize<'de> for IntOrStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = IntOrStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer (or one in a string)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
                Ok(IntOrStr(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
                u64::try_from(v)
                    .map(IntOrStr)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IntOrStr, E> {
                s.trim()
                    .parse()
                    .map(IntOrStr)
                    .map_err(|_| E::custom(format!("`{s}` is not a non-negative integer")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as Emissary writes it: `"0.5s"`, `"250ms"`, `"1m"`, `"1h"` (or a bare number
/// of seconds). Milliseconds, rounded.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (t, 1000.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok((v * mult).round() as u64),
        _ => Err(format!(
            "invalid duration `{s}` (expected e.g. \"0.5s\", \"250ms\", \"1m\")"
        )),
    }
}

// ---------------------------------------------------------------- Mapping

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmMapping {
    pub prefix: Option<String>,
    pub prefix_regex: Option<bool>,
    pub prefix_exact: Option<bool>,
    pub case_sensitive: Option<bool>,
    pub method: Option<String>,
    pub headers: Option<Pairs<EmMatch>>,
    pub regex_headers: Option<Pairs<String>>,
    pub query_parameters: Option<Pairs<EmMatch>>,
    pub regex_query_parameters: Option<Pairs<String>>,
    pub precedence: Option<i32>,
    pub service: Option<String>,
    pub weight: Option<u32>,
    pub rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewriteM>,
    pub host_rewrite: Option<String>,
    pub add_request_headers: Option<Pairs<HeaderAddM>>,
    pub remove_request_headers: Option<StrList>,
    pub add_response_headers: Option<Pairs<HeaderAddM>>,
    pub remove_response_headers: Option<StrList>,
    pub timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub grpc: Option<bool>,
    pub allow_upgrade: Option<StrList>,
    pub retry_policy: Option<EmRetryPolicy>,
    pub circuit_breakers: Option<Vec<EmCircuitBreaker>>,
    pub load_balancer: Option<EmLoadBalancer>,
    pub cors: Option<EmCors>,
    pub shadow: Option<bool>,
    pub host_redirect: Option<bool>,
    pub path_redirect: Option<String>,
    pub prefix_redirect: Option<String>,
    pub redirect_response_code: Option<u16>,
    pub hostname: Option<String>,
    pub host: Option<String>,
    pub host_regex: Option<bool>,
    pub method_regex: Option<bool>,
    pub use_websocket: Option<bool>,
    pub auto_host_rewrite: Option<bool>,
    // Accepted, not applied (a warning names each).
    pub resolver: Option<IgnoredAny>,
    pub stats_name: Option<IgnoredAny>,
    pub enable_ipv4: Option<IgnoredAny>,
    pub enable_ipv6: Option<IgnoredAny>,
    pub add_linkerd_headers: Option<IgnoredAny>,
    pub error_response_overrides: Option<IgnoredAny>,
    pub labels: Option<IgnoredAny>,
    pub ambassador_id: Option<IgnoredAny>,
    pub docs: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmRetryPolicy {
    pub retry_on: Option<String>,
    pub num_retries: Option<u32>,
    pub per_try_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmCircuitBreaker {
    pub priority: Option<String>,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmLoadBalancer {
    pub policy: Option<String>,
    pub header: Option<String>,
    pub cookie: Option<EmCookie>,
    pub source_ip: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmCookie {
    pub name: Option<String>,
    pub ttl: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmCors {
    pub origins: Option<StrList>,
    pub methods: Option<StrList>,
    pub headers: Option<StrList>,
    pub exposed_headers: Option<StrList>,
    pub credentials: Option<bool>,
    pub max_age: Option<IntOrStr>,
}

// ---------------------------------------------------------------- Module

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmModule {
    config: Option<EmModuleConfig>,
    ambassador_id: Option<IgnoredAny>,
}

/// `Module ambassador` `spec.config`: the defaults Portico applies, plus settings accepted
/// and ignored (with a warning).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmModuleConfig {
    pub cluster_request_timeout_ms: Option<u64>,
    pub retry_policy: Option<EmRetryPolicy>,
    pub cors: Option<EmCors>,
    pub load_balancer: Option<EmLoadBalancer>,
    pub circuit_breakers: Option<Vec<EmCircuitBreaker>>,
    /// Applied as `compression` on every Mapping that sets none.
    pub gzip: Option<EmGzip>,
    // Accepted, ignored with a warning (they tune Envoy itself).
    pub cluster_idle_timeout_ms: Option<IgnoredAny>,
    pub cluster_max_connection_lifetime_ms: Option<IgnoredAny>,
    pub listener_idle_timeout_ms: Option<IgnoredAny>,
    pub diagnostics: Option<IgnoredAny>,
    pub use_remote_address: Option<IgnoredAny>,
    pub xff_num_trusted_hops: Option<IgnoredAny>,
    pub server_name: Option<IgnoredAny>,
    pub enable_grpc_web: Option<IgnoredAny>,
    pub enable_http10: Option<IgnoredAny>,
    pub envoy_log_type: Option<IgnoredAny>,
    pub envoy_log_format: Option<IgnoredAny>,
}

/// `Module ambassador` `config.gzip`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmGzip {
    pub enabled: Option<bool>,
    pub min_content_length: Option<u64>,
    pub content_type: Option<StrList>,
    // Tune zlib or Envoy's filter: accepted, ignored with a warning.
    pub memory_level: Option<IgnoredAny>,
    pub compression_level: Option<IgnoredAny>,
    pub compression_strategy: Option<IgnoredAny>,
    pub window_bits: Option<IgnoredAny>,
    pub disable_on_etag_header: Option<IgnoredAny>,
    pub remove_accept_encoding_header: Option<IgnoredAny>,
}

const GZIP_IGNORED: &[&str] = &[
    "memory_level",
    "compression_level",
    "compression_strategy",
    "window_bits",
    "disable_on_etag_header",
    "remove_accept_encoding_header",
];

/// Emissary's default `gzip.min_content_length`.
const EMISSARY_GZIP_MIN_BYTES: u64 = 30;

const MODULE_IGNORED: &[&str] = &[
    "cluster_idle_timeout_ms",
    "cluster_max_connection_lifetime_ms",
    "listener_idle_timeout_ms",
    "diagnostics",
    "use_remote_address",
    "xff_num_trusted_hops",
    "server_name",
    "enable_grpc_web",
    "enable_http10",
    "envoy_log_type",
    "envoy_log_format",
];

// ---------------------------------------------------------------- Host, Listener, TLSContext, Secret

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmHost {
    pub hostname: Option<String>,
    #[serde(rename = "tlsSecret")]
    pub tls_secret: Option<EmRef>,
    #[serde(rename = "tlsContext")]
    pub tls_context: Option<EmRef>,
    pub tls: Option<EmHostTls>,
    #[serde(rename = "requestPolicy")]
    pub request_policy: Option<EmRequestPolicy>,
    #[serde(rename = "acmeProvider")]
    pub acme_provider: Option<EmAcme>,
    #[serde(rename = "mappingSelector")]
    pub mapping_selector: Option<IgnoredAny>,
    pub selector: Option<IgnoredAny>,
    pub ambassador_id: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmRef {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmHostTls {
    pub alpn_protocols: Option<String>,
    pub min_tls_version: Option<TlsVersionM>,
    pub ca_secret: Option<String>,
    pub cert_required: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmRequestPolicy {
    pub insecure: Option<EmInsecure>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmInsecure {
    pub action: Option<InsecureActionM>,
    #[serde(rename = "additionalPort")]
    pub additional_port: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmAcme {
    pub authority: Option<String>,
    pub email: Option<IgnoredAny>,
    #[serde(rename = "privateKeySecret")]
    pub private_key_secret: Option<IgnoredAny>,
    pub registration: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmListener {
    port: Option<u16>,
    protocol: Option<ListenerProtocolM>,
    #[serde(rename = "securityModel")]
    security_model: Option<EmSecurityModel>,
    #[serde(rename = "l7Depth")]
    l7_depth: Option<u32>,
    #[serde(rename = "hostBinding")]
    host_binding: Option<IgnoredAny>,
    #[serde(rename = "statsPrefix")]
    stats_prefix: Option<IgnoredAny>,
    ambassador_id: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum EmSecurityModel {
    #[serde(rename = "XFP")]
    Xfp,
    #[serde(rename = "SECURE")]
    Secure,
    #[serde(rename = "INSECURE")]
    Insecure,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmTlsContext {
    pub hosts: Option<Vec<String>>,
    pub secret: Option<String>,
    pub alpn_protocols: Option<String>,
    pub min_tls_version: Option<TlsVersionM>,
    pub ca_secret: Option<String>,
    pub cert_required: Option<bool>,
    pub secret_namespacing: Option<IgnoredAny>,
    pub redirect_cleartext_from: Option<IgnoredAny>,
    pub ambassador_id: Option<IgnoredAny>,
}

/// A Kubernetes `Secret` (its top-level `type`/`data`/`stringData`, moved under `spec` by the
/// loader).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmSecret {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub data: Option<Pairs<String>>,
    #[serde(rename = "stringData")]
    pub string_data: Option<Pairs<String>>,
}

// ---------------------------------------------------------------- schema

/// `getambassador.io/v3alpha1`.
pub(crate) struct EmissaryV3;
/// Kubernetes `v1` (only `Secret`).
pub(crate) struct KubeV1;

const EMISSARY_KINDS: &[&str] = &[MAPPING, HOST, LISTENER, TLS_CONTEXT, MODULE];

fn typed<T: serde::de::DeserializeOwned>(
    spec: &mut Node,
    wrap: impl FnOnce(T) -> Parsed,
) -> Deserialized<Parsed> {
    let r = node::deserialize_all::<T>(spec, 64);
    Deserialized {
        value: r.value.map(wrap),
        errors: r.errors,
        removed: r.removed,
    }
}

fn em(s: EmSpec) -> Parsed {
    Parsed::Emissary(Box::new(s))
}

/// Positions of fields that are accepted but ignored (for warnings).
fn ignored_fields(spec: &Node, fields: &[&str], why: &str, warns: &mut Vec<(Pos, String)>) {
    ignored_at(spec, &[], fields, why, warns);
}

/// [`ignored_fields`] for fields nested under `under` (e.g. `requestPolicy.insecure`); the
/// warning names the full dotted path of each field.
fn ignored_at(
    spec: &Node,
    under: &[&str],
    fields: &[&str],
    why: &str,
    warns: &mut Vec<(Pos, String)>,
) {
    let mut node = spec;
    for k in under {
        match node.get(k) {
            Some(n) => node = n,
            None => return,
        }
    }
    for f in fields {
        if let Some((k, _)) = node.entry(f) {
            let mut path = under.join(".");
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(f);
            warns.push((k.pos, format!("`{path}` is ignored by Portico ({why})")));
        }
    }
}

impl Schema for EmissaryV3 {
    fn kinds(&self) -> &'static [&'static str] {
        EMISSARY_KINDS
    }

    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)> {
        ignored_fields(
            spec,
            &["ambassador_id"],
            "one Portico serves one config",
            warns,
        );
        Some(match kind {
            MAPPING => {
                ignored_fields(
                    spec,
                    &["labels"],
                    "rate-limit descriptors; use portico.dev/v1 rate_limits",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["docs"],
                    "developer-portal metadata; Portico has no developer portal",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["resolver"],
                    "it only tunes service discovery; Portico resolves `service` by DNS",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["stats_name"],
                    "metrics are labelled with the Mapping's name",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["enable_ipv4", "enable_ipv6"],
                    "every A and AAAA record of a service is used",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["add_linkerd_headers"],
                    "add `l5d-dst-override` with add_request_headers if the mesh needs it",
                    warns,
                );
                ignored_fields(
                    spec,
                    &["error_response_overrides"],
                    "not applied: upstream error bodies reach the client unchanged",
                    warns,
                );
                if spec.get("auto_host_rewrite").and_then(|v| match &v.value {
                    node::Value::Bool(b) => Some(*b),
                    _ => None,
                }) == Some(false)
                {
                    ignored_fields(
                        spec,
                        &["auto_host_rewrite"],
                        "false is the default: the client's Host is forwarded",
                        warns,
                    );
                }
                (
                    MAPPING,
                    typed::<EmMapping>(spec, |m| em(EmSpec::Mapping(Box::new(m)))),
                )
            }
            HOST => {
                ignored_fields(
                    spec,
                    &["mappingSelector", "selector"],
                    "every Mapping is served on every Host",
                    warns,
                );
                ignored_at(
                    spec,
                    &["requestPolicy", "insecure"],
                    &["additionalPort"],
                    "declare a Listener on that port; Host requestPolicy applies on every Listener",
                    warns,
                );
                ignored_at(
                    spec,
                    &["acmeProvider"],
                    &["email", "privateKeySecret", "registration"],
                    "Portico does no ACME; certificates come from tlsSecret",
                    warns,
                );
                (
                    HOST,
                    typed::<EmHost>(spec, |h| em(EmSpec::Host(Box::new(h)))),
                )
            }
            LISTENER => {
                ignored_fields(
                    spec,
                    &["hostBinding", "statsPrefix", "securityModel"],
                    "every Host is bound to every Listener; x-forwarded-proto is set by Portico",
                    warns,
                );
                (
                    LISTENER,
                    typed::<EmListener>(spec, |l| {
                        let _ = (
                            l.security_model,
                            l.host_binding,
                            l.stats_prefix,
                            l.ambassador_id,
                        );
                        Parsed::Spec(Spec::Listener(ListenerSpec {
                            address: None,
                            port: l.port,
                            protocol: l.protocol,
                            http2: None,
                            max_connections: None,
                            trust_forwarded: l.l7_depth.map(|d| d > 0),
                            ..ListenerSpec::default()
                        }))
                    }),
                )
            }
            TLS_CONTEXT => {
                ignored_fields(
                    spec,
                    &["secret_namespacing", "redirect_cleartext_from"],
                    "see the Host's requestPolicy",
                    warns,
                );
                (
                    TLS_CONTEXT,
                    typed::<EmTlsContext>(spec, |t| em(EmSpec::TlsContext(t))),
                )
            }
            MODULE => {
                if let Some(cfg) = spec.get("config") {
                    ignored_fields(cfg, MODULE_IGNORED, "it tunes Envoy itself", warns);
                    ignored_at(cfg, &["gzip"], GZIP_IGNORED, "it tunes zlib", warns);
                    if let Some((k, _)) = cfg.entry("gzip") {
                        warns.push((
                            k.pos,
                            "`gzip` is applied as `compression` (gzip, br or zstd by \
                             accept-encoding) on every Mapping that sets none"
                                .to_string(),
                        ));
                    }
                }
                (
                    MODULE,
                    typed::<EmModule>(spec, |m| {
                        let _ = m.ambassador_id;
                        em(EmSpec::Module(Box::new(m.config.unwrap_or_default())))
                    }),
                )
            }
            k if TUNING_KINDS.contains(&k) => {
                let kind = TUNING_KINDS.iter().copied().find(|t| *t == k)?;
                warns.push((
                    spec.pos,
                    format!("{kind} only tunes Emissary; Portico accepts and ignores it"),
                ));
                (
                    kind,
                    Deserialized {
                        value: Some(em(EmSpec::Ignored)),
                        errors: Vec::new(),
                        removed: Vec::new(),
                    },
                )
            }
            k if SECURITY_KINDS.contains(&k) => {
                let kind = SECURITY_KINDS.iter().copied().find(|t| *t == k)?;
                (
                    kind,
                    Deserialized {
                        value: None,
                        errors: vec![(
                            spec.pos,
                            format!(
                                "{kind} is not supported: ignoring it would serve traffic \
                                 without the authentication/filtering it asks for"
                            ),
                        )],
                        removed: Vec::new(),
                    },
                )
            }
            _ => return None,
        })
    }
}

impl Schema for KubeV1 {
    fn kinds(&self) -> &'static [&'static str] {
        &[SECRET]
    }

    fn parse_spec(
        &self,
        kind: &str,
        spec: &mut Node,
        _warns: &mut Vec<(Pos, String)>,
    ) -> Option<(&'static str, Deserialized<Parsed>)> {
        (kind == SECRET).then(|| (SECRET, typed::<EmSecret>(spec, |s| em(EmSpec::Secret(s)))))
    }
}

// ---------------------------------------------------------------- translation

fn spec_of(r: &Resource) -> Option<&EmSpec> {
    r.emissary.as_deref()
}

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

fn translate(resources: &mut Vec<Resource>, d: &mut Diags) {
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
            r.emissary = Some(Box::new(EmSpec::Ignored));
            continue;
        }
        let spec = mapping(r, d, &m, &module, &upstream_names);
        r.spec = spec.map(|s| Spec::Mapping(Box::new(s)));
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
        let spec = host(&resources[i], d, &h, resources, &secrets, &contexts);
        resources[i].spec = spec.map(Spec::Host);
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
        context_tls(&resources[ci], d, t, resources, &secrets);
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
            let tls = context_tls(r, d, t, resources, &secrets);
            let Some(tls) = tls else { continue };
            let local_name = if hosts.len() == 1 {
                name.clone()
            } else {
                format!("{name}-{n}")
            };
            extra.push(load::Resource {
                kind: HOST,
                name: load::display_name(r.namespace.as_deref(), &local_name),
                namespace: r.namespace.clone(),
                local_name,
                file: r.file.clone(),
                base_dir: r.base_dir.clone(),
                root: r.root.clone(),
                spec: Some(Spec::Host(HostSpec {
                    hostname: Some(hn.clone()),
                    tls: Some(tls),
                    request_policy: None,
                })),
                emissary: None,
                removed: Vec::new(),
                order: r.order,
            });
        }
    }
    resources.extend(extra);
}

/// The identity key of a namespaced resource in the lookup maps.
fn ident(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// `service` in Emissary's spelling to Portico's: a bare name means port 80.
fn service(s: &str, upstreams: &HashSet<String>) -> String {
    let s = s.trim();
    if s.contains("://") || s.contains(':') || upstreams.contains(s) {
        s.to_string()
    } else {
        format!("{s}:80")
    }
}

fn retry(r: &Resource, d: &mut Diags, path: &[&str], rp: &EmRetryPolicy) -> RetryPolicyM {
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

fn circuit_breakers(
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

fn load_balancer(r: &Resource, d: &mut Diags, path: &[&str], lb: &EmLoadBalancer) -> LoadBalancerM {
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

fn cors(c: &EmCors) -> CorsM {
    CorsM {
        origins: c.origins.clone(),
        methods: c.methods.clone(),
        headers: c.headers.clone(),
        exposed_headers: c.exposed_headers.clone(),
        credentials: c.credentials,
        max_age: c.max_age.map(|m| m.0),
    }
}

fn match_pairs(p: &Option<Pairs<EmMatch>>) -> Option<Pairs<MatchStr>> {
    p.as_ref()
        .map(|p| Pairs(p.0.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()))
}

/// One Emissary Mapping to a `portico.dev/v1` one, with the Module's and Emissary's defaults.
fn mapping(
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
    })
}

/// `auto_host_rewrite: true`: the Host sent upstream is the service's host (no scheme, no
/// port), as Emissary does.
fn auto_host(service: &str) -> Option<String> {
    let s = service.trim();
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let host = match s.strip_prefix('[') {
        Some(rest) => return rest.split_once(']').map(|(h, _)| format!("[{h}]")),
        None => s.rsplit_once(':').map_or(s, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// Folds a `shadow: true` Mapping into the Mappings with the same match.
fn fold_shadow(
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
        let Some(Spec::Mapping(m)) = &mut r.spec else {
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

/// Decodes a Secret's `tls.crt`/`tls.key` (or another key) to a private file.
fn secret_file(
    r: &Resource,
    d: &mut Diags,
    field: &[&str],
    resources: &[Resource],
    secrets: &HashMap<String, usize>,
    name: &str,
    key: &str,
) -> Option<String> {
    secret_file_in(r, d, field, resources, secrets, None, name, key)
}

/// [`secret_file`] with the Secret's namespace given (`None`: the referring resource's; a
/// `name.namespace` reference, Emissary's spelling, is also understood).
#[allow(clippy::too_many_arguments)]
fn secret_file_in(
    r: &Resource,
    d: &mut Diags,
    field: &[&str],
    resources: &[Resource],
    secrets: &HashMap<String, usize>,
    namespace: Option<&str>,
    name: &str,
    key: &str,
) -> Option<String> {
    let ns = namespace.unwrap_or(r.namespace_or_default());
    let found = secrets.get(&ident(ns, name)).or_else(|| {
        name.rsplit_once('.')
            .filter(|_| namespace.is_none())
            .and_then(|(n, sns)| secrets.get(&ident(sns, n)))
    });
    let Some(&si) = found else {
        if namespace.is_some() || r.namespace.is_some() {
            r.error(
                d,
                field,
                format!("no Secret named `{name}` in namespace `{ns}`"),
            );
        } else {
            r.error(d, field, format!("no Secret named `{name}`"));
        }
        return None;
    };
    let sr = &resources[si];
    let Some(EmSpec::Secret(s)) = spec_of(sr) else {
        return None;
    };
    if let Some(t) = &s.kind
        && t != "kubernetes.io/tls"
        && t != "Opaque"
    {
        sr.error(
            d,
            &["spec", "type"],
            format!("Secret type `{t}` is not supported (expected kubernetes.io/tls)"),
        );
        return None;
    }
    let find = |p: &Option<Pairs<String>>| {
        p.as_ref()
            .and_then(|p| p.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
    };
    let bytes = if let Some(b64) = find(&s.data) {
        match base64_decode(&b64) {
            Some(b) => b,
            None => {
                sr.error(
                    d,
                    &["spec", "data", key],
                    format!("`{key}` is not valid base64"),
                );
                return None;
            }
        }
    } else if let Some(text) = find(&s.string_data) {
        text.into_bytes()
    } else {
        sr.error_key(
            d,
            &["spec", "data"],
            format!("Secret `{name}` has no `{key}`"),
        );
        return None;
    };
    match write_private(&bytes, key) {
        Ok(p) => Some(p.display().to_string()),
        Err(e) => {
            sr.error(
                d,
                &["metadata", "name"],
                format!("cannot write the decoded secret: {e}"),
            );
            None
        }
    }
}

/// Writes `bytes` to `$TMPDIR/portico-secrets-UID/HASH-KEY` (dir 0700, file 0600); the
/// same content always gives the same file.
fn write_private(bytes: &[u8], key: &str) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("portico-secrets-{uid}"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    // FNV-1a: a stable name per content.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let path = dir.join(format!("{h:016x}-{}", key.replace('/', "_")));
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(path);
    }
    // Unique per call: two loads in one process (a reload racing `/explain`, parallel tests)
    // may write the same content at once, and must not rename each other's temp file away.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{h:016x}.{}.{seq}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Standard or URL-safe base64 (whitespace ignored, padding optional), as Kubernetes tools
/// write `Secret` data.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    STANDARD
        .decode(&compact)
        .or_else(|_| URL_SAFE.decode(&compact))
        .ok()
}

/// The client-CA file of `ca_secret` (mTLS), under Portico's rule that a CA means client
/// certificates are required. Emissary's `cert_required: false` (verify a certificate only if
/// one is presented) has no equivalent: written explicitly it is an error, left unset a
/// warning; `cert_required: true` without a `ca_secret` is an error. `at` is the object
/// holding the two fields (`["spec"]` or `["spec", "tls"]`).
#[allow(clippy::too_many_arguments)]
fn client_ca(
    r: &Resource,
    d: &mut Diags,
    at: &[&str],
    ca_secret: Option<&String>,
    cert_required: Option<bool>,
    resources: &[Resource],
    secrets: &HashMap<String, usize>,
) -> Option<String> {
    let path = |f: &'static str| {
        let mut p = at.to_vec();
        p.push(f);
        p
    };
    let Some(ca) = ca_secret else {
        if cert_required == Some(true) {
            r.error_key(
                d,
                &path("cert_required"),
                "`cert_required: true` needs a `ca_secret` to verify client certificates against",
            );
        }
        return None;
    };
    match cert_required {
        Some(false) => {
            r.error_key(
                d,
                &path("cert_required"),
                "`cert_required: false` (optional client certificates) is not supported: with a \
                 ca_secret Portico requires a client certificate; set `cert_required: true`",
            );
            return None;
        }
        None => r.warn(
            d,
            &path("ca_secret"),
            "client certificates are required (Portico does not verify optional ones); \
             set `cert_required: true` to say so",
        ),
        Some(true) => {}
    }
    secret_file(r, d, &path("ca_secret"), resources, secrets, ca, "tls.crt")
}

fn context_tls(
    r: &Resource,
    d: &mut Diags,
    t: &EmTlsContext,
    resources: &[Resource],
    secrets: &HashMap<String, usize>,
) -> Option<HostTlsM> {
    let Some(secret) = &t.secret else {
        r.missing(d, &["spec", "secret"], "a TLSContext needs a secret");
        return None;
    };
    let at = ["spec", "secret"];
    let cert = secret_file(r, d, &at, resources, secrets, secret, "tls.crt")?;
    let key = secret_file(r, d, &at, resources, secrets, secret, "tls.key")?;
    let ca = client_ca(
        r,
        d,
        &["spec"],
        t.ca_secret.as_ref(),
        t.cert_required,
        resources,
        secrets,
    );
    Some(HostTlsM {
        cert_chain_file: Some(cert),
        private_key_file: Some(key),
        alpn_protocols: t.alpn_protocols.clone(),
        min_tls_version: t.min_tls_version,
        ca_file: ca,
    })
}

fn host(
    r: &Resource,
    d: &mut Diags,
    h: &EmHost,
    resources: &[Resource],
    secrets: &HashMap<String, usize>,
    contexts: &HashMap<String, usize>,
) -> Option<HostSpec> {
    if let Some(a) = &h.acme_provider
        && a.authority.as_deref().is_some_and(|a| a != "none")
    {
        r.error(
            d,
            &["spec", "acmeProvider", "authority"],
            "ACME is not supported: set `authority: none` and give a tlsSecret",
        );
    }
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
                let cert = secret_file_in(r, d, &at, resources, secrets, ns, name, "tls.crt");
                let key = secret_file_in(r, d, &at, resources, secrets, ns, name, "tls.key");
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
                            resources,
                            secrets,
                        );
                        Some(b)
                    } else {
                        context_tls(&resources[ci], d, &t, resources, secrets)
                    };
                    tls = base;
                }
            }
        }
    }
    if let Some(t) = &h.tls {
        match &mut tls {
            None if secret_failed => {}
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
                        resources,
                        secrets,
                    );
                }
            }
        }
    }
    Some(HostSpec {
        // Emissary: a Host without hostname is `*`.
        hostname: Some(h.hostname.clone().unwrap_or_else(|| "*".to_string())),
        tls,
        request_policy: h.request_policy.as_ref().map(|p| RequestPolicyM {
            insecure: p.insecure.as_ref().map(|i| InsecureM { action: i.action }),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0.5s"), Ok(500));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1m"), Ok(60_000));
        assert_eq!(parse_duration_ms("2"), Ok(2000));
        assert!(parse_duration_ms("fast").is_err());
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(base64_decode("aGVs\nbG8").as_deref(), Some(&b"hello"[..]));
        assert!(base64_decode("a*b").is_none());
    }

    #[test]
    fn services() {
        let none = HashSet::new();
        assert_eq!(service("quote", &none), "quote:80");
        assert_eq!(service("quote:8080", &none), "quote:8080");
        assert_eq!(service("https://quote", &none), "https://quote");
        let ups: HashSet<String> = ["quote".to_string()].into();
        assert_eq!(service("quote", &ups), "quote");
    }

    fn load(text: &str) -> crate::LoadResult {
        crate::load(&[crate::ConfigSource::Inline {
            name: "e.yaml".into(),
            text: text.into(),
            base_dir: std::env::temp_dir(),
        }])
    }

    const EM: &str = "apiVersion: getambassador.io/v3alpha1";

    #[test]
    fn emissary_and_module_defaults() {
        let r = load(&format!(
            "{EM}\nkind: Module\nmetadata: {{ name: ambassador }}\nspec: {{ config: {{ retry_policy: {{ retry_on: 5xx, num_retries: 4 }} }} }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: a }}\nspec: {{ prefix: /a/, service: quote, host: x.example.com }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: b }}\nspec: {{ prefix: /b/, service: quote, timeout_ms: 0, rewrite: /v2/, retry_policy: {{ num_retries: 1 }} }}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: s }}\nspec: {{ prefix: /a/, service: other:81, shadow: true, weight: 10, host: x.example.com }}\n"
        ));
        let snap = r.snapshot.expect("loads");
        let a = snap.routes.iter().find(|r| r.name == "a").expect("a");
        let b = snap.routes.iter().find(|r| r.name == "b").expect("b");
        assert_eq!(snap.routes.len(), 2, "the shadow Mapping is folded");
        assert_eq!(a.timeout, Some(std::time::Duration::from_millis(3000)));
        assert!(matches!(&a.rewrite, crate::snapshot::Rewrite::Prefix(p) if p == "/"));
        assert_eq!(a.hostname.to_string(), "x.example.com");
        assert_eq!(a.retry.as_ref().map(|r| r.num_retries), Some(4));
        assert_eq!(b.retry.as_ref().map(|r| r.num_retries), Some(1));
        assert_eq!(b.timeout, None);
        let sh = a.shadow.as_ref().expect("shadow");
        assert_eq!(snap.upstreams[sh.upstream].name, "other:81");
        assert_eq!(sh.percent, 10.0);
        assert_eq!(snap.upstreams[a.upstream().expect("fwd")].name, "quote:80");
    }

    #[test]
    fn redirects_and_errors() {
        let r = load(&format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: r }}\nspec: {{ prefix: /r/, host_redirect: true, service: https://new.example.com, redirect_response_code: 308 }}\n"
        ));
        let snap = r.snapshot.expect("loads");
        match &snap.routes[0].action {
            crate::snapshot::RouteAction::Redirect(rd) => {
                assert!(rd.https);
                assert_eq!(rd.host.as_deref(), Some("new.example.com"));
                assert_eq!(rd.code, 308);
            }
            other => panic!("{other:?}"),
        }
        let r = load(&format!(
            "{EM}\nkind: Filter\nmetadata: {{ name: f }}\nspec: {{}}\n---\n\
             {EM}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: a, retry_policy: {{ per_try_timeout: soon }} }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: a.example.com, tlsSecret: {{ name: missing }} }}\n"
        ));
        let msgs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("Filter/f: Filter is not supported")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("invalid duration `soon`")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("no Secret named `missing`")),
            "{msgs:?}"
        );
    }

    /// A kubernetes.io/tls Secret `name` in clear (`stringData`): cert text `crt`.
    fn secret(name: &str, crt: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: \"{crt}\"\n  tls.key: \"key of {name}\"\n"
        )
    }

    fn messages(r: &crate::LoadResult) -> Vec<String> {
        r.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn tls_context_applies_to_the_hosts_it_names() {
        let r = load(&format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: ctx }}\nspec:\n  hosts: [a.test, b.test]\n  secret: site\n  min_tls_version: v1.3\n  alpn_protocols: http/1.1\n  ca_secret: clients\n  cert_required: true\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: ha }}\nspec: {{ hostname: a.test }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: other }}\nspec: {{ hostname: c.test, tlsSecret: {{ name: own }} }}\n---\n\
             {}---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CLIENT CA"),
            secret("own", "OWN"),
        ));
        assert!(r.diagnostics.is_empty(), "{:?}", messages(&r));
        let snap = r.snapshot.expect("loads");
        let host = |name: &str| {
            snap.hosts
                .iter()
                .find(|h| h.name == name)
                .unwrap_or_else(|| panic!("no Host {name}: {:?}", snap.hosts))
        };
        let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("secret file");
        // The Host listed in hosts, and a Host made for the name no Host covers.
        for (name, hostname) in [("ha", "a.test"), ("ctx", "b.test")] {
            let h = host(name);
            assert_eq!(h.hostname.to_string(), hostname);
            let t = h.tls.as_ref().expect("tls");
            assert_eq!(read(&t.cert_chain_file), "SITE");
            assert_eq!(read(&t.private_key_file), "key of site");
            assert_eq!(t.alpn_protocols, ["http/1.1"]);
            assert_eq!(t.min_tls_version, crate::snapshot::TlsVersion::V1_3);
            assert_eq!(t.ca_file.as_deref().map(read).as_deref(), Some("CLIENT CA"));
        }
        // A Host the context does not name keeps its own defaults.
        let t = host("other").tls.as_ref().expect("tls");
        assert_eq!(read(&t.cert_chain_file), "OWN");
        assert_eq!(t.min_tls_version, crate::snapshot::TlsVersion::V1_2);
        assert_eq!(t.alpn_protocols, ["h2", "http/1.1"]);
        assert!(t.ca_file.is_none());
        assert_eq!(snap.hosts.len(), 3);
    }

    #[test]
    fn tls_context_unsupported_settings_are_errors_naming_the_field() {
        let ctx = |name: &str, extra: &str| {
            format!(
                "{EM}\nkind: TLSContext\nmetadata: {{ name: {name} }}\nspec:\n  hosts: [{name}.test]\n  secret: site\n{extra}---\n"
            )
        };
        let r = load(&format!(
            "{}{}{}{}{}---\n{}",
            ctx("maxv", "  max_tls_version: v1.3\n"),
            ctx("optional", "  ca_secret: clients\n  cert_required: false\n"),
            ctx("noca", "  cert_required: true\n"),
            ctx("implicit", "  ca_secret: clients\n"),
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        let has = |needle: &str| msgs.iter().any(|m| m.contains(needle));
        assert!(
            has("TLSContext/maxv: unknown field `max_tls_version`"),
            "{msgs:?}"
        );
        assert!(
            has(
                "TLSContext/optional: `cert_required: false` (optional client certificates) is not supported"
            ),
            "{msgs:?}"
        );
        assert!(
            has("TLSContext/noca: `cert_required: true` needs a `ca_secret`"),
            "{msgs:?}"
        );
        assert!(
            has("TLSContext/implicit: warning: client certificates are required"),
            "{msgs:?}"
        );
        assert!(r.snapshot.is_none(), "errors reject the config");
        // A context used for several hosts reports its problem once.
        let r = load(&format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: two }}\nspec: {{ hosts: [a.test, b.test], secret: site, ca_secret: clients }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: a }}\nspec: {{ hostname: a.test }}\n---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        assert_eq!(
            msgs.iter()
                .filter(|m| m.contains("client certificates are required"))
                .count(),
            1,
            "{msgs:?}"
        );
        // The same on a Host's own tls block.
        let r = load(&format!(
            "{EM}\nkind: Host\nmetadata: {{ name: h }}\nspec: {{ hostname: h.test, tlsSecret: {{ name: site }}, tls: {{ ca_secret: clients, cert_required: false }} }}\n---\n{}---\n{}",
            secret("site", "SITE"),
            secret("clients", "CA"),
        ));
        let msgs = messages(&r);
        assert!(
            msgs.iter()
                .any(|m| m.contains("Host/h: `cert_required: false`")),
            "{msgs:?}"
        );
    }

    #[test]
    fn dropped_fields_are_warnings_naming_them() {
        let r = load(&format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: m }}\nspec:\n  prefix: /m/\n  service: quote\n  docs: {{ path: /docs/openapi.json }}\n---\n\
             {EM}\nkind: Host\nmetadata: {{ name: h }}\nspec:\n  hostname: h.test\n  acmeProvider: {{ authority: none, email: ops@example.com, privateKeySecret: {{ name: acme-key }}, registration: x }}\n  requestPolicy: {{ insecure: {{ action: Route, additionalPort: 8080 }} }}\n"
        ));
        let msgs = messages(&r);
        assert!(r.snapshot.is_some(), "{msgs:?}");
        let want = [
            "e.yaml:7:3: Mapping/m: warning: `docs` is ignored by Portico",
            "Host/h: warning: `acmeProvider.email` is ignored by Portico",
            "Host/h: warning: `acmeProvider.privateKeySecret` is ignored by Portico",
            "Host/h: warning: `acmeProvider.registration` is ignored by Portico",
            "Host/h: warning: `requestPolicy.insecure.additionalPort` is ignored by Portico (declare a Listener",
        ];
        for w in want {
            assert!(msgs.iter().any(|m| m.contains(w)), "{w}: {msgs:?}");
        }
        assert_eq!(msgs.len(), want.len(), "{msgs:?}");
    }
}
