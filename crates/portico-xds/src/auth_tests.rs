//! Unit tests of the edge authentication translation: ext_authz (HTTP and gRPC, bypass,
//! context extensions) and jwt_authn (providers, requirements, per-route names).

use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration};
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3::{
    ExtAuthzPerRoute, ext_authz, ext_authz_per_route,
};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    PerRouteConfig, jwt_provider, jwt_requirement, per_route_config,
};

use super::*;
use crate::filters::{EXT_AUTHZ, JWT_AUTHN};
use crate::test_util::{snap_in, unpack};
use crate::translate;

const V1: &str = "apiVersion: portico.dev/v1";

fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!("---\n{V1}\nkind: {kind}\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n")
}

fn route<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a Route {
    rc.virtual_hosts[0]
        .routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no route {name}"))
}

fn per<T: prost::Message + Default>(r: &Route, f: &str) -> Option<T> {
    r.typed_per_filter_config
        .get(f)
        .map(|a| T::decode(a.value.as_slice()).expect("decodes"))
}

#[test]
fn http_auth_service_becomes_ext_authz_with_its_header_lists() {
    let dir = tempfile_dir();
    let s = snap_in(
        &[
            doc(
                "AuthService",
                "auth",
                "  auth_service: 127.0.0.1:3000\n  path_prefix: /extauth\n  timeout_ms: 700\n  allowed_request_headers: [x-tenant]\n  allowed_authorization_headers: [x-user-id]\n  include_body: { max_bytes: 4096, allow_partial: true }\n  status_on_error: { code: 503 }\n  failure_mode_allow: true",
            ),
            doc("Mapping", "app", "  prefix: /\n  service: 127.0.0.1:8080"),
            doc(
                "Mapping",
                "open",
                "  prefix: /open/\n  service: 127.0.0.1:8080\n  bypass_auth: true",
            ),
        ]
        .concat(),
        &dir,
    );
    let a = ext_authz(&s).expect("ext_authz");
    let Some(ext_authz::Services::HttpService(h)) = &a.services else {
        panic!("http service")
    };
    assert_eq!(h.path_prefix, "/extauth");
    let uri = h.server_uri.as_ref().expect("uri");
    assert_eq!(
        uri.http_upstream_type,
        Some(http_uri::HttpUpstreamType::Cluster("127.0.0.1:3000".into()))
    );
    assert_eq!(
        uri.timeout,
        Some(duration(std::time::Duration::from_millis(700)))
    );
    let allowed: Vec<String> = a
        .allowed_headers
        .as_ref()
        .expect("allowed")
        .patterns
        .iter()
        .filter_map(|p| match &p.match_pattern {
            Some(string_matcher::MatchPattern::Exact(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert!(allowed.contains(&"x-tenant".to_string()), "{allowed:?}");
    assert!(allowed.contains(&"cookie".to_string()), "{allowed:?}");
    let up = h
        .authorization_response
        .as_ref()
        .and_then(|r| r.allowed_upstream_headers.as_ref())
        .expect("upstream headers");
    assert_eq!(up.patterns.len(), 1);
    assert_eq!(a.status_on_error.as_ref().map(|s| s.code), Some(503));
    assert!(a.failure_mode_allow);
    let b = a.with_request_body.expect("body");
    assert_eq!((b.max_request_bytes, b.allow_partial_message), (4096, true));

    let t = translate(&s);
    let rc: RouteConfiguration = unpack(&t.resources.routes[0]);
    assert!(per::<ExtAuthzPerRoute>(route(&rc, "app"), EXT_AUTHZ).is_none());
    let open: ExtAuthzPerRoute = per(route(&rc, "open"), EXT_AUTHZ).expect("bypass");
    assert_eq!(
        open.r#override,
        Some(ext_authz_per_route::Override::Disabled(true))
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.field == "spec.allowed_request_headers")
    );
}

#[test]
fn grpc_auth_service_gets_the_cluster_and_context_extensions() {
    let dir = tempfile_dir();
    let s = snap_in(
        &[
            doc(
                "AuthService",
                "auth",
                "  auth_service: 127.0.0.1:3000\n  proto: grpc",
            ),
            doc(
                "Mapping",
                "app",
                "  prefix: /\n  service: 127.0.0.1:8080\n  auth_context_extensions: { team: quotes }",
            ),
        ]
        .concat(),
        &dir,
    );
    let a = ext_authz(&s).expect("ext_authz");
    let Some(ext_authz::Services::GrpcService(g)) = &a.services else {
        panic!("grpc service")
    };
    assert!(matches!(
        &g.target_specifier,
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) if e.cluster_name == "127.0.0.1:3000"
    ));
    assert!(
        a.allowed_headers.is_none(),
        "gRPC checks carry every header"
    );
    let rc: RouteConfiguration = unpack(&translate(&s).resources.routes[0]);
    let p: ExtAuthzPerRoute = per(route(&rc, "app"), EXT_AUTHZ).expect("per route");
    let Some(ext_authz_per_route::Override::CheckSettings(cs)) = p.r#override else {
        panic!("check settings")
    };
    assert_eq!(
        cs.context_extensions.get("team").map(String::as_str),
        Some("quotes")
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("portico-xds-auth-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("dir");
    std::fs::write(d.join("jwks.json"), br#"{"keys":[]}"#).expect("jwks");
    d
}

#[test]
fn jwt_providers_become_jwt_authn_with_required_and_optional_requirements() {
    let dir = tempfile_dir();
    let s = snap_in(
        &[
            doc(
                "JWTProvider",
                "main",
                "  issuer: https://issuer.example\n  audiences: [api]\n  jwks_file: jwks.json\n  forward_claims: { sub: x-user-id }\n  from_params: [token]\n  clock_skew_ms: 30000",
            ),
            doc(
                "Mapping",
                "must",
                "  prefix: /must/\n  service: 127.0.0.1:8080\n  jwt: { provider: main, required: true }",
            ),
            doc(
                "Mapping",
                "may",
                "  prefix: /may/\n  service: 127.0.0.1:8080\n  jwt: { provider: main, required: false }",
            ),
            doc("Mapping", "none", "  prefix: /\n  service: 127.0.0.1:8080"),
        ]
        .concat(),
        &dir,
    );
    let j = jwt_authn(&s).expect("jwt_authn");
    let p = &j.providers["main"];
    assert_eq!(p.issuer, "https://issuer.example");
    assert_eq!(p.audiences, ["api"]);
    assert!(p.forward, "the token goes on upstream, as with Portico");
    assert_eq!(p.clock_skew_seconds, 30);
    assert_eq!(p.from_params, ["token"]);
    assert_eq!(p.from_headers[0].name, "authorization");
    assert_eq!(p.from_headers[0].value_prefix, "Bearer ");
    assert_eq!(p.claim_to_headers[0].claim_name, "sub");
    assert_eq!(p.claim_to_headers[0].header_name, "x-user-id");
    assert!(matches!(
        &p.jwks_source_specifier,
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(d))
            if matches!(&d.specifier, Some(data_source::Specifier::InlineBytes(b)) if b == br#"{"keys":[]}"#)
    ));
    assert!(matches!(
        &j.requirement_map["main"].requires_type,
        Some(jwt_requirement::RequiresType::ProviderName(n)) if n == "main"
    ));
    assert!(matches!(
        &j.requirement_map["main/optional"].requires_type,
        Some(jwt_requirement::RequiresType::RequiresAny(l)) if l.requirements.len() == 2
    ));
    let rc: RouteConfiguration = unpack(&translate(&s).resources.routes[0]);
    let name = |r: &str| {
        per::<PerRouteConfig>(route(&rc, r), JWT_AUTHN).and_then(|p| p.requirement_specifier)
    };
    assert_eq!(
        name("must"),
        Some(per_route_config::RequirementSpecifier::RequirementName(
            "main".into()
        ))
    );
    assert_eq!(
        name("may"),
        Some(per_route_config::RequirementSpecifier::RequirementName(
            "main/optional".into()
        ))
    );
    assert_eq!(name("none"), None);
}

#[test]
fn no_auth_no_filters() {
    let dir = tempfile_dir();
    let s = snap_in(
        &doc("Mapping", "m", "  prefix: /\n  service: 127.0.0.1:8080"),
        &dir,
    );
    assert!(ext_authz(&s).is_none());
    assert!(jwt_authn(&s).is_none());
}
