//! The Emissary `getambassador.io/v3alpha1` resource types (and Kubernetes `v1` `Secret`) as
//! serde reads them, with Emissary's field names, plus the value helpers they share
//! (`EmMatch`, `IntOrStr`, durations). Pure data: no diagnostics, no translation.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, Visitor};

use crate::model::*;

pub(crate) const MODULE: &str = "Module";
pub(crate) const TLS_CONTEXT: &str = "TLSContext";
pub(crate) const SECRET: &str = "Secret";

/// Kinds that only tune Emissary: accepted, ignored, with a warning.
pub(super) const TUNING_KINDS: &[&str] = &[
    "KubernetesServiceResolver",
    "KubernetesEndpointResolver",
    "ConsulResolver",
    "LogService",
    "TracingService",
    "DevPortal",
    "RateLimitService",
];
/// Kinds whose absence would weaken security: errors.
pub(super) const SECURITY_KINDS: &[&str] = &["Filter", "FilterPolicy"];

/// Emissary's default `timeout_ms`.
pub(super) const EMISSARY_TIMEOUT_MS: u64 = 3000;

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
    pub bypass_auth: Option<bool>,
    pub auth_context_extensions: Option<Pairs<String>>,
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

// ---------------------------------------------------------------- AuthService

/// Emissary's `AuthService` (docs/reference.md §9.1), read with its own field names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmAuthService {
    pub auth_service: Option<String>,
    pub proto: Option<AuthProtoM>,
    pub path_prefix: Option<String>,
    pub timeout_ms: Option<u64>,
    pub allowed_request_headers: Option<StrList>,
    pub allowed_authorization_headers: Option<StrList>,
    pub include_body: Option<IncludeBodyM>,
    /// Deprecated in Emissary: `true` is `include_body: { max_bytes: 4096, allow_partial: true }`.
    pub allow_request_body: Option<bool>,
    pub failure_mode_allow: Option<bool>,
    pub status_on_error: Option<StatusOnErrorM>,
    pub add_auth_headers: Option<Pairs<String>>,
    /// `true` (or a TLSContext name): the auth service is reached over TLS.
    pub tls: Option<EmTls>,
    /// `v3` (Emissary's only supported version) or `v2`: both mean Envoy's v3 API here.
    pub protocol_version: Option<String>,
    // Accepted, not applied (a warning names each).
    pub stats_name: Option<IgnoredAny>,
    pub circuit_breakers: Option<IgnoredAny>,
    pub add_linkerd_headers: Option<IgnoredAny>,
    pub ambassador_id: Option<IgnoredAny>,
    #[serde(rename = "v3StatsName")]
    pub v3_stats_name: Option<IgnoredAny>,
}

/// `tls: true` or a TLSContext's name.
#[derive(Debug, Clone, PartialEq)]
pub enum EmTls {
    Bool(bool),
    Context(String),
}

impl<'de> Deserialize<'de> for EmTls {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EmTls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true/false or a TLSContext name")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<EmTls, E> {
                Ok(EmTls::Bool(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EmTls, E> {
                Ok(match s {
                    "true" => EmTls::Bool(true),
                    "false" | "" => EmTls::Bool(false),
                    _ => EmTls::Context(s.to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Emissary's default size of the body sent with `allow_request_body: true`.
pub(super) const EMISSARY_AUTH_BODY_BYTES: u64 = 4096;

impl EmAuthService {
    /// The `portico.dev/v1` spec: a port-less `auth_service` means port 80 (443 with `tls`),
    /// as in Emissary; `tls` turns it into `https://`.
    pub fn into_spec(self) -> AuthServiceSpec {
        let tls = matches!(self.tls, Some(EmTls::Bool(true) | EmTls::Context(_)));
        let auth_service = self.auth_service.map(|s| {
            let s = s.trim();
            let (scheme, rest) = match s.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, s),
            };
            let has_port = rest
                .rsplit_once(':')
                .is_some_and(|(h, p)| !p.is_empty() && (!h.contains(':') || h.ends_with(']')));
            let https = tls || scheme == Some("https");
            let port = if has_port {
                ""
            } else if https {
                ":443"
            } else {
                ":80"
            };
            let scheme = match scheme {
                Some(sc) => format!("{sc}://"),
                None if tls => "https://".to_string(),
                None => String::new(),
            };
            format!("{scheme}{rest}{port}")
        });
        let include_body = self.include_body.or_else(|| {
            (self.allow_request_body == Some(true)).then_some(IncludeBodyM {
                max_bytes: Some(EMISSARY_AUTH_BODY_BYTES),
                allow_partial: Some(true),
            })
        });
        AuthServiceSpec {
            auth_service,
            proto: self.proto,
            path_prefix: self.path_prefix,
            timeout_ms: self.timeout_ms,
            allowed_request_headers: self.allowed_request_headers,
            allowed_authorization_headers: self.allowed_authorization_headers,
            include_body,
            failure_mode_allow: self.failure_mode_allow,
            status_on_error: self.status_on_error,
            add_auth_headers: self.add_auth_headers,
        }
    }
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
pub(super) struct EmModule {
    pub(super) config: Option<EmModuleConfig>,
    pub(super) ambassador_id: Option<IgnoredAny>,
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

pub(super) const GZIP_IGNORED: &[&str] = &[
    "memory_level",
    "compression_level",
    "compression_strategy",
    "window_bits",
    "disable_on_etag_header",
    "remove_accept_encoding_header",
];

/// Emissary's default `gzip.min_content_length`.
pub(super) const EMISSARY_GZIP_MIN_BYTES: u64 = 30;

pub(super) const MODULE_IGNORED: &[&str] = &[
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
    pub email: Option<String>,
    #[serde(rename = "privateKeySecret")]
    pub private_key_secret: Option<IgnoredAny>,
    pub registration: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EmListener {
    pub(super) port: Option<u16>,
    pub(super) protocol: Option<ListenerProtocolM>,
    #[serde(rename = "securityModel")]
    pub(super) security_model: Option<EmSecurityModel>,
    #[serde(rename = "l7Depth")]
    pub(super) l7_depth: Option<u32>,
    #[serde(rename = "hostBinding")]
    pub(super) host_binding: Option<IgnoredAny>,
    #[serde(rename = "statsPrefix")]
    pub(super) stats_prefix: Option<IgnoredAny>,
    pub(super) ambassador_id: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(super) enum EmSecurityModel {
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
