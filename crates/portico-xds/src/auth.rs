//! Edge authentication (reference §9) as Envoy HTTP filters: the `AuthService` becomes
//! `envoy.filters.http.ext_authz` (HTTP or gRPC, against the auth service's cluster), the
//! `JWTProvider`s become `envoy.filters.http.jwt_authn` providers with one requirement per
//! provider, and each route says, in its per-filter settings, which requirement applies and
//! whether the auth service is asked (`bypass_auth`, `auth_context_extensions`).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, GrpcService, HeaderValue, HttpUri, data_source, grpc_service, http_uri,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    AuthorizationRequest, AuthorizationResponse, BufferSettings, CheckSettings, ExtAuthz,
    ExtAuthzPerRoute, HttpService, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, PerRouteConfig, RemoteJwks, jwt_provider, jwt_requirement,
    per_route_config,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListStringMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Empty;
use portico_config::snapshot::{
    AuthProto, AuthServiceConf, JwksSource, JwtProviderConf, Route as PRoute, Snapshot,
    UpstreamProtocol,
};

use crate::common::{Warnings, cluster_name, duration};

fn exact_list(names: impl Iterator<Item = String>) -> Option<ListStringMatcher> {
    let patterns: Vec<StringMatcher> = names
        .map(|n| StringMatcher {
            match_pattern: Some(string_matcher::MatchPattern::Exact(n)),
            ignore_case: true,
        })
        .collect();
    (!patterns.is_empty()).then_some(ListStringMatcher { patterns })
}

fn cluster_of(snap: &Snapshot, upstream: usize) -> (String, bool) {
    snap.upstreams
        .get(upstream)
        .map_or((String::new(), false), |u| {
            (cluster_name(u), u.protocol == UpstreamProtocol::Https)
        })
}

/// The `ext_authz` filter of the snapshot's `AuthService`, if there is one.
pub fn ext_authz(snap: &Snapshot) -> Option<ExtAuthz> {
    let a = snap.auth_service.as_ref()?;
    let (cluster, tls) = cluster_of(snap, a.upstream);
    let services = match a.proto {
        AuthProto::Http => ext_authz::Services::HttpService(http_service(a, cluster, tls)),
        AuthProto::Grpc => ext_authz::Services::GrpcService(GrpcService {
            timeout: Some(duration(a.timeout)),
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: cluster,
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
    };
    Some(ExtAuthz {
        services: Some(services),
        transport_api_version: envoy_types::pb::envoy::config::core::v3::ApiVersion::V3 as i32,
        failure_mode_allow: a.failure_mode_allow,
        status_on_error: Some(HttpStatus {
            code: i32::from(a.status_on_error),
        }),
        with_request_body: a.include_body.map(|b| BufferSettings {
            max_request_bytes: u32::try_from(b.max_bytes).unwrap_or(u32::MAX),
            allow_partial_message: b.allow_partial,
            ..Default::default()
        }),
        // HTTP: exactly Portico's list (Envoy adds host, method, path, content-length and
        // authorization itself); gRPC: every header, as Portico sends.
        allowed_headers: match a.proto {
            AuthProto::Http => exact_list(a.request_headers.iter().map(|h| h.as_str().to_string())),
            AuthProto::Grpc => None,
        },
        ..Default::default()
    })
}

fn http_service(a: &AuthServiceConf, cluster: String, tls: bool) -> HttpService {
    let scheme = if tls { "https" } else { "http" };
    HttpService {
        server_uri: Some(HttpUri {
            uri: format!("{scheme}://{cluster}"),
            timeout: Some(duration(a.timeout)),
            http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
        }),
        path_prefix: a.path_prefix.clone(),
        authorization_request: Some(AuthorizationRequest {
            headers_to_add: a
                .add_headers
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: k.as_str().to_string(),
                    value: String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        authorization_response: Some(AuthorizationResponse {
            allowed_upstream_headers: exact_list(
                a.authorization_headers
                    .iter()
                    .map(|h| h.as_str().to_string()),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Route `r`'s `ext_authz` settings: off with `bypass_auth`, the context extensions for a
/// gRPC service; `None` when the defaults apply.
pub fn ext_authz_per_route(snap: &Snapshot, r: &PRoute) -> Option<ExtAuthzPerRoute> {
    snap.auth_service.as_ref()?;
    let o = if r.auth.bypass {
        ext_authz_per_route::Override::Disabled(true)
    } else if !r.auth.context_extensions.is_empty() {
        ext_authz_per_route::Override::CheckSettings(CheckSettings {
            context_extensions: r.auth.context_extensions.iter().cloned().collect(),
            ..Default::default()
        })
    } else {
        return None;
    };
    Some(ExtAuthzPerRoute {
        r#override: Some(o),
    })
}

/// The requirement name of a provider (`optional`: a missing token is let through).
pub fn requirement_name(p: &JwtProviderConf, optional: bool) -> String {
    if optional {
        format!("{}/optional", p.name)
    } else {
        p.name.clone()
    }
}

/// What Envoy does differently, named for `check --target envoy` (once per resource).
pub fn warn(snap: &Snapshot, w: &mut Warnings) {
    if let Some(a) = &snap.auth_service
        && a.proto == AuthProto::Http
    {
        w.push(
            &a.name,
            "spec.allowed_request_headers",
            "Envoy also sends the check request content-length and its own x-envoy-* headers",
        );
    }
    for p in &snap.jwt_providers {
        match &p.keys {
            JwksSource::File(path) => {
                if let Err(e) = std::fs::read(path) {
                    w.push(
                        &p.name,
                        "spec.jwks_file",
                        &format!("cannot read {}: {e}", path.display()),
                    );
                }
            }
            JwksSource::Uri { .. } => {}
        }
    }
}

fn provider(snap: &Snapshot, p: &JwtProviderConf) -> JwtProvider {
    let jwks = match &p.keys {
        // Unreadable: no keys, every token is refused (`warn` names the field).
        JwksSource::File(path) => Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(
                std::fs::read(path).unwrap_or_default(),
            )),
            ..Default::default()
        })),
        JwksSource::Uri { url, upstream, .. } => {
            Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(RemoteJwks {
                http_uri: Some(HttpUri {
                    uri: url.clone(),
                    timeout: Some(duration(std::time::Duration::from_secs(5))),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                        cluster_of(snap, *upstream).0,
                    )),
                }),
                cache_duration: Some(duration(p.refresh)),
                ..Default::default()
            }))
        }
    };
    JwtProvider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.clone(),
        // Portico passes the token on to the upstream.
        forward: true,
        from_headers: p
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.as_str().to_string(),
                value_prefix: h.prefix.clone(),
            })
            .collect(),
        from_params: p.from_params.clone(),
        clock_skew_seconds: u32::try_from(p.clock_skew.as_secs()).unwrap_or(u32::MAX),
        claim_to_headers: p
            .forward_claims
            .iter()
            .map(|(claim, header)| JwtClaimToHeader {
                header_name: header.as_str().to_string(),
                claim_name: claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: jwks,
        ..Default::default()
    }
}

/// The `jwt_authn` filter of the snapshot's providers, if any route uses one.
pub fn jwt_authn(snap: &Snapshot) -> Option<JwtAuthentication> {
    if !snap.routes.iter().any(|r| r.auth.jwt.is_some()) {
        return None;
    }
    let mut providers = HashMap::new();
    let mut requirement_map = HashMap::new();
    for p in &snap.jwt_providers {
        providers.insert(p.name.clone(), provider(snap, p));
        let required = JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(p.name.clone())),
        };
        let optional = JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                JwtRequirementOrList {
                    requirements: vec![
                        required.clone(),
                        JwtRequirement {
                            requires_type: Some(jwt_requirement::RequiresType::AllowMissing(
                                Empty {},
                            )),
                        },
                    ],
                },
            )),
        };
        requirement_map.insert(requirement_name(p, false), required);
        requirement_map.insert(requirement_name(p, true), optional);
    }
    Some(JwtAuthentication {
        providers,
        requirement_map,
        // A preflight answered by the CORS filter never reaches it anyway; one that is
        // forwarded is not checked by Portico either (reference §9: CORS before JWT).
        bypass_cors_preflight: true,
        ..Default::default()
    })
}

/// Route `r`'s JWT requirement, if it opts in.
pub fn jwt_per_route(snap: &Snapshot, r: &PRoute) -> Option<PerRouteConfig> {
    let j = r.auth.jwt.as_ref()?;
    let p = snap.jwt_providers.get(j.provider)?;
    Some(PerRouteConfig {
        requirement_specifier: Some(per_route_config::RequirementSpecifier::RequirementName(
            requirement_name(p, !j.required),
        )),
    })
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
