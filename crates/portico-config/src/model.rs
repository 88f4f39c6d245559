//! The typed resource model of `apiVersion: portico.dev/v1` (reference §2.1–2.5, §4.1).
//!
//! Every field is optional at the serde level: serde only checks names and types (unknown
//! fields are rejected), while required fields, ranges and cross-references are checked
//! afterwards by `compile` with positioned errors. A later schema (Emissary's
//! `getambassador.io/v3alpha1`, reference §2.6) translates its own structs into these.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};

/// `metadata` of every resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Option<String>,
    /// Part of a resource's identity (namespace, kind, name); `default` when absent.
    pub namespace: Option<String>,
    pub labels: Option<Pairs<String>>,
    // Kubernetes bookkeeping, as `kubectl get -o yaml` exports it: accepted and ignored.
    pub annotations: Option<de::IgnoredAny>,
    #[serde(rename = "creationTimestamp")]
    pub creation_timestamp: Option<de::IgnoredAny>,
    pub generation: Option<de::IgnoredAny>,
    #[serde(rename = "resourceVersion")]
    pub resource_version: Option<de::IgnoredAny>,
    pub uid: Option<de::IgnoredAny>,
    #[serde(rename = "managedFields")]
    pub managed_fields: Option<de::IgnoredAny>,
    #[serde(rename = "selfLink")]
    pub self_link: Option<de::IgnoredAny>,
    #[serde(rename = "ownerReferences")]
    pub owner_references: Option<de::IgnoredAny>,
    pub finalizers: Option<de::IgnoredAny>,
    #[serde(rename = "deletionTimestamp")]
    pub deletion_timestamp: Option<de::IgnoredAny>,
    #[serde(rename = "deletionGracePeriodSeconds")]
    pub deletion_grace_period_seconds: Option<de::IgnoredAny>,
}

/// A YAML mapping kept in document order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pairs<V>(pub Vec<(String, V)>);

impl<V> Default for Pairs<V> {
    fn default() -> Self {
        Pairs(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Pairs(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, V>()? {
                    out.push((k, v));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// A list given as a YAML sequence or as one comma-separated string (as Emissary allows).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings or a comma-separated string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrList, E> {
                Ok(StrList(
                    s.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect(),
                ))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// An exact-match value of `headers`/`query_parameters`: a string, or empty/null for
/// "must be present".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MatchStr(pub String);

impl<'de> Deserialize<'de> for MatchStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MatchStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string (empty or null: the header/parameter must be present)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MatchStr, E> {
                Ok(MatchStr(s.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MatchStr, E> {
                Ok(MatchStr(String::new()))
            }
            fn visit_none<E: de::Error>(self) -> Result<MatchStr, E> {
                Ok(MatchStr(String::new()))
            }
        }
        d.deserialize_string(V)
    }
}

// ---------------------------------------------------------------- Listener (§2.1)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub protocol: Option<ListenerProtocolM>,
    pub http2: Option<bool>,
    pub http3: Option<bool>,
    pub http3_max_handshakes: Option<u32>,
    pub max_connections: Option<u32>,
    pub trust_forwarded: Option<bool>,
    pub max_request_headers_kb: Option<u32>,
    pub max_headers_count: Option<u32>,
    pub max_uri_bytes: Option<u32>,
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_bytes: Option<u32>,
    pub initial_connection_window_bytes: Option<u32>,
    pub header_read_timeout_ms: Option<u64>,
    pub request_body_idle_timeout_ms: Option<u64>,
    pub keepalive_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ListenerProtocolM {
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "HTTPS")]
    Https,
    #[serde(rename = "HTTPPROXY")]
    HttpProxy,
    #[serde(rename = "HTTPSPROXY")]
    HttpsProxy,
}

// ---------------------------------------------------------------- Host (§2.2)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub hostname: Option<String>,
    pub tls: Option<HostTlsM>,
    #[serde(rename = "requestPolicy")]
    pub request_policy: Option<RequestPolicyM>,
    /// Automatic certificates (docs/reference.md §13).
    #[serde(rename = "acmeProvider")]
    pub acme_provider: Option<Box<AcmeM>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeM {
    pub authority: Option<String>,
    pub email: Option<String>,
    pub ca_file: Option<String>,
    pub challenge: Option<AcmeChallengeM>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AcmeChallengeM {
    #[serde(rename = "http-01")]
    Http01,
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTlsM {
    pub cert_chain_file: Option<String>,
    pub private_key_file: Option<String>,
    pub alpn_protocols: Option<String>,
    pub min_tls_version: Option<TlsVersionM>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersionM {
    #[serde(rename = "v1.2")]
    V12,
    #[serde(rename = "v1.3")]
    V13,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPolicyM {
    pub insecure: Option<InsecureM>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsecureM {
    pub action: Option<InsecureActionM>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum InsecureActionM {
    Redirect,
    Route,
    Reject,
}

// ---------------------------------------------------------------- Mapping (§2.3)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    pub hostname: Option<String>,
    /// true: `hostname` is a regex over the host (lowercase, port stripped).
    pub host_regex: Option<bool>,
    pub prefix: Option<String>,
    pub prefix_exact: Option<bool>,
    pub prefix_regex: Option<bool>,
    pub case_sensitive: Option<bool>,
    pub method: Option<String>,
    /// true: `method` is a regex over the method.
    pub method_regex: Option<bool>,
    pub headers: Option<Pairs<MatchStr>>,
    pub regex_headers: Option<Pairs<String>>,
    pub query_parameters: Option<Pairs<MatchStr>>,
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
    pub grpc_timeout_max_ms: Option<u64>,
    pub allow_upgrade: Option<StrList>,
    pub retry_policy: Option<RetryPolicyM>,
    pub circuit_breakers: Option<CircuitBreakersM>,
    pub load_balancer: Option<LoadBalancerM>,
    pub health_checks: Option<Vec<HealthCheckM>>,
    pub outlier_detection: Option<OutlierM>,
    pub rate_limits: Option<Vec<RateLimitM>>,
    pub cors: Option<CorsM>,
    pub redirect: Option<RedirectM>,
    pub direct_response: Option<DirectResponseM>,
    pub shadow: Option<ShadowM>,
    pub compression: Option<CompressionM>,
    pub max_request_body_bytes: Option<u64>,
    /// true: the `AuthService` is not asked about this Mapping's requests (§9.1).
    pub bypass_auth: Option<bool>,
    /// Sent to a gRPC `AuthService` as the check's `context_extensions` (§9.1).
    pub auth_context_extensions: Option<Pairs<String>>,
    /// JWT validation by a `JWTProvider` (§9.2).
    pub jwt: Option<MappingJwtM>,
}

/// `Mapping.jwt`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingJwtM {
    pub provider: Option<String>,
    pub required: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewriteM {
    pub pattern: Option<String>,
    pub substitution: Option<String>,
}

/// `value` or `{ value, append }`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaderAddM {
    pub value: Option<String>,
    pub append: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderAddObj {
    value: Option<String>,
    append: Option<bool>,
}

impl<'de> Deserialize<'de> for HeaderAddM {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderAddM;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a header value or { value, append }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HeaderAddM, E> {
                Ok(HeaderAddM {
                    value: Some(s.to_string()),
                    append: None,
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HeaderAddM, E> {
                Ok(HeaderAddM {
                    value: Some(v.to_string()),
                    append: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HeaderAddM, A::Error> {
                let o = HeaderAddObj::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(HeaderAddM {
                    value: o.value,
                    append: o.append,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicyM {
    pub retry_on: Option<String>,
    pub num_retries: Option<u32>,
    pub per_try_timeout_ms: Option<u64>,
    pub retriable_status_codes: Option<Vec<u16>>,
    pub retry_budget: Option<RetryBudgetM>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetM {
    pub budget_percent: Option<f64>,
    pub min_retry_concurrency: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakersM {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerM {
    pub policy: Option<LbPolicyM>,
    pub header: Option<String>,
    pub cookie: Option<CookieM>,
    pub source_ip: Option<bool>,
    pub healthy_panic_threshold: Option<u32>,
    pub slow_start_window_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicyM {
    RoundRobin,
    LeastRequest,
    Ewma,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieM {
    pub name: Option<String>,
    pub ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckM {
    pub path: Option<String>,
    pub host: Option<String>,
    pub expected_statuses: Option<Vec<StatusRangeM>>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub grpc: Option<GrpcCheckM>,
    pub tcp: Option<TcpCheckM>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcCheckM {
    pub service: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpCheckM {}

/// `200` or `"200-399"`.
#[derive(Debug, Clone, PartialEq)]
pub enum StatusRangeM {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for StatusRangeM {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StatusRangeM;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status code or a range like \"200-399\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusRangeM, E> {
                Ok(StatusRangeM::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusRangeM, E> {
                Ok(StatusRangeM::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StatusRangeM, E> {
                Ok(StatusRangeM::Text(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierM {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub interval_ms: Option<u64>,
    pub base_ejection_time_ms: Option<u64>,
    pub max_ejection_time_ms: Option<u64>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitM {
    pub key: Option<StrList>,
    pub requests_per_unit: Option<u64>,
    pub unit: Option<RateUnitM>,
    pub burst: Option<u64>,
    pub scope: Option<RateScopeM>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateUnitM {
    Second,
    Minute,
    Hour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateScopeM {
    Local,
    Global,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsM {
    pub origins: Option<StrList>,
    pub methods: Option<StrList>,
    pub headers: Option<StrList>,
    pub exposed_headers: Option<StrList>,
    pub credentials: Option<bool>,
    pub max_age: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectM {
    pub https: Option<bool>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub response_code: Option<u16>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseM {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowM {
    pub service: Option<String>,
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionM {
    pub enabled: Option<bool>,
    pub min_bytes: Option<u64>,
    pub content_types: Option<StrList>,
}

// ---------------------------------------------------------------- Upstream (§2.4)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub endpoints: Option<Vec<EndpointM>>,
    pub dns: Option<String>,
    pub dns_refresh_ms: Option<u64>,
    pub protocol: Option<UpstreamProtocolM>,
    pub tls: Option<UpstreamTlsM>,
    pub load_balancer: Option<LoadBalancerM>,
    pub health_checks: Option<Vec<HealthCheckM>>,
    pub outlier_detection: Option<OutlierM>,
    pub circuit_breakers: Option<CircuitBreakersM>,
    pub connect_timeout_ms: Option<u64>,
    pub max_idle_connections_per_endpoint: Option<u32>,
    pub idle_connection_timeout_ms: Option<u64>,
}

/// `"host:port"` or `{ address, weight }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointM {
    pub address: Option<String>,
    pub weight: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointObj {
    address: Option<String>,
    weight: Option<u32>,
}

impl<'de> Deserialize<'de> for EndpointM {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointM;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port\" or { address, weight }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<EndpointM, E> {
                Ok(EndpointM {
                    address: Some(s.to_string()),
                    weight: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointM, A::Error> {
                let o = EndpointObj::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(EndpointM {
                    address: o.address,
                    weight: o.weight,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocolM {
    Http1,
    H2c,
    Https,
    Auto,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsM {
    pub ca_file: Option<String>,
    pub sni: Option<String>,
    pub cert_chain_file: Option<String>,
    pub private_key_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
}

// ---------------------------------------------------------------- RateLimitService (§4.1)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitServiceSpec {
    pub service: Option<String>,
    pub domain: Option<String>,
    pub timeout_ms: Option<u64>,
    pub failure_mode_deny: Option<bool>,
}

// ---------------------------------------------------------------- AuthService (§9.1)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServiceSpec {
    pub auth_service: Option<String>,
    pub proto: Option<AuthProtoM>,
    pub path_prefix: Option<String>,
    pub timeout_ms: Option<u64>,
    pub allowed_request_headers: Option<StrList>,
    pub allowed_authorization_headers: Option<StrList>,
    pub include_body: Option<IncludeBodyM>,
    pub failure_mode_allow: Option<bool>,
    pub status_on_error: Option<StatusOnErrorM>,
    /// Headers added to every check request (Emissary's `add_auth_headers`).
    pub add_auth_headers: Option<Pairs<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthProtoM {
    Http,
    Grpc,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncludeBodyM {
    pub max_bytes: Option<u64>,
    pub allow_partial: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusOnErrorM {
    pub code: Option<u16>,
}

// ---------------------------------------------------------------- JWTProvider (§9.2)

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderSpec {
    pub issuer: Option<String>,
    pub audiences: Option<StrList>,
    pub jwks_file: Option<String>,
    pub jwks_uri: Option<String>,
    pub jwks_refresh_ms: Option<u64>,
    pub from_headers: Option<Vec<JwtFromHeaderM>>,
    pub from_params: Option<StrList>,
    pub forward_claims: Option<Pairs<String>>,
    pub clock_skew_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtFromHeaderM {
    pub name: Option<String>,
    pub prefix: Option<String>,
}

/// One typed resource spec of any schema.
#[derive(Debug, Clone)]
pub enum Spec {
    Listener(ListenerSpec),
    Host(HostSpec),
    Mapping(Box<MappingSpec>),
    Upstream(Box<UpstreamSpec>),
    RateLimitService(RateLimitServiceSpec),
    AuthService(Box<AuthServiceSpec>),
    JWTProvider(Box<JwtProviderSpec>),
}
