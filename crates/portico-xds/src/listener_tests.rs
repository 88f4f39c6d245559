//! Unit tests of the listener and secret translation: HTTP listener with RDS over ADS, HTTPS
//! with one SNI filter chain per Host and SDS secrets, PROXY protocol.

use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};

use crate::test_util::{snap, snap_in, unpack};
use crate::translate;

fn hcm_of(l: &Listener, chain: usize) -> HttpConnectionManager {
    let hcm = l.filter_chains[chain]
        .filters
        .iter()
        .find(|f| f.name == "envoy.filters.network.http_connection_manager")
        .expect("hcm");
    match &hcm.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            prost::Message::decode(any.value.as_slice()).expect("decodes")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn http_listener_uses_rds_over_ads() {
    let t = translate(&snap(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: web }\nspec: { address: 127.0.0.1, port: 8081, protocol: HTTPPROXY }\n",
    ));
    assert_eq!(t.resources.listeners.len(), 1);
    let l: Listener = unpack(&t.resources.listeners[0]);
    assert_eq!(l.name, "web");
    assert_eq!(l.filter_chains.len(), 1);
    assert_eq!(
        l.listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["envoy.filters.listener.proxy_protocol"]
    );
    let h = hcm_of(&l, 0);
    match h.route_specifier {
        Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
            assert_eq!(rds.route_config_name, "portico");
            assert!(
                rds.config_source
                    .is_some_and(|c| c.config_source_specifier.is_some())
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        h.http_filters.last().map(|f| f.name.as_str()),
        Some("envoy.filters.http.router")
    );
    assert_eq!(
        h.strip_port_mode,
        Some(http_connection_manager::StripPortMode::StripAnyHostPort(
            true
        ))
    );
}

#[test]
fn https_listener_has_sni_chains_and_secrets() {
    let dir = std::env::temp_dir().join(format!("portico-xds-listener-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["a.crt", "a.key", "b.crt", "b.key", "ca.pem"] {
        std::fs::write(dir.join(f), format!("PEM {f}")).expect("write");
    }
    let y = "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: tls }\nspec: { port: 8443, protocol: HTTPS }\n---\napiVersion: portico.dev/v1\nkind: Host\nmetadata: { name: a }\nspec: { hostname: a.example, tls: { cert_chain_file: a.crt, private_key_file: a.key } }\n---\napiVersion: portico.dev/v1\nkind: Host\nmetadata: { name: b }\nspec: { hostname: \"*.b.example\", tls: { cert_chain_file: b.crt, private_key_file: b.key, ca_file: ca.pem } }\n";
    let s = snap_in(y, &dir);
    let t = translate(&s);
    let l: Listener = unpack(&t.resources.listeners[0]);
    assert!(
        l.listener_filters
            .iter()
            .any(|f| f.name == "envoy.filters.listener.tls_inspector")
    );
    let mut sni: Vec<Vec<String>> = l
        .filter_chains
        .iter()
        .map(|c| {
            c.filter_chain_match
                .clone()
                .map(|m| m.server_names)
                .unwrap_or_default()
        })
        .collect();
    sni.sort();
    assert_eq!(
        sni,
        [
            vec!["*.b.example".to_string()],
            vec!["a.example".to_string()]
        ]
    );
    assert!(l.filter_chains.iter().all(|c| c.transport_socket.is_some()));
    let secrets: Vec<Secret> = t.resources.secrets.iter().map(unpack).collect();
    let mut names: Vec<&str> = secrets.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["host/a/cert", "host/b/ca", "host/b/cert"]);
    let a = secrets.iter().find(|s| s.name == "host/a/cert").expect("a");
    match &a.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
            assert_eq!(
                c.certificate_chain.clone().and_then(|d| d.specifier),
                Some(Specifier::InlineBytes(b"PEM a.crt".to_vec()))
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn max_connections_becomes_the_connection_limit_filter() {
    use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
    let t = translate(&snap(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: web }\nspec: { port: 8081, protocol: HTTP, max_connections: 64 }\n",
    ));
    let l: Listener = unpack(&t.resources.listeners[0]);
    let f = &l.filter_chains[0].filters;
    assert_eq!(f[0].name, "envoy.filters.network.connection_limit");
    assert_eq!(f[1].name, "envoy.filters.network.http_connection_manager");
    let Some(filter::ConfigType::TypedConfig(any)) = &f[0].config_type else {
        panic!("typed")
    };
    let c: ConnectionLimit = prost::Message::decode(any.value.as_slice()).expect("decodes");
    assert_eq!(c.max_connections.map(|v| v.value), Some(64));
    assert!(!t.warnings.iter().any(|w| w.field == "spec.max_connections"));
}

#[test]
fn insecure_policies_give_cleartext_listeners_their_own_routes() {
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route};
    let dir = std::env::temp_dir().join(format!("portico-xds-insecure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["a.crt", "a.key"] {
        std::fs::write(dir.join(f), format!("PEM {f}")).expect("write");
    }
    let host = |name: &str, glob: &str, action: &str| {
        format!(
            "---\napiVersion: portico.dev/v1\nkind: Host\nmetadata: {{ name: {name} }}\nspec: {{ hostname: \"{glob}\", tls: {{ cert_chain_file: a.crt, private_key_file: a.key }}, requestPolicy: {{ insecure: {{ action: {action} }} }} }}\n"
        )
    };
    let y = [
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: web }\nspec: { port: 8080, protocol: HTTP }\n---\napiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: tls }\nspec: { port: 8443, protocol: HTTPS }\n".to_string(),
        host("red", "*.example", "Redirect"),
        host("ok", "open.example", "Route"),
        host("no", "no.example", "Reject"),
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: api }\nspec: { hostname: api.example, prefix: /, service: 127.0.0.1:80 }\n".to_string(),
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: any }\nspec: { prefix: /, service: 127.0.0.1:80 }\n".to_string(),
    ]
    .concat();
    let t = translate(&snap_in(&y, &dir));
    let rds = |i: usize| {
        let l: Listener = unpack(&t.resources.listeners[i]);
        match hcm_of(&l, 0).route_specifier {
            Some(http_connection_manager::RouteSpecifier::Rds(r)) => r.route_config_name,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rds(0), "portico/cleartext");
    assert_eq!(rds(1), "portico");
    let names: Vec<&str> = t.resources.routes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["portico", "portico/cleartext"]);
    let clear: RouteConfiguration = unpack(&t.resources.routes[1]);
    let vh = |d: &str| {
        clear
            .virtual_hosts
            .iter()
            .find(|v| v.domains == [d])
            .unwrap_or_else(|| panic!("no {d}"))
    };
    // api.example is a route glob, covered by the *.example Host: redirected, as Portico does.
    for d in ["api.example", "*.example"] {
        assert!(
            matches!(&vh(d).routes[..], [r] if matches!(&r.action, Some(route::Action::Redirect(rd)) if rd.scheme_rewrite_specifier.is_some())),
            "{d}: {:?}",
            vh(d).routes
        );
    }
    assert!(matches!(
        &vh("no.example").routes[..],
        [r] if matches!(&r.action, Some(route::Action::DirectResponse(d)) if d.status == 403)
    ));
    // Route: the ordinary routes; no Host: the ordinary routes.
    assert_eq!(vh("open.example").routes[0].name, "any");
    assert_eq!(vh("*").routes[0].name, "any");
}

#[test]
fn inlined_files_are_every_tls_file_the_config_names() {
    let dir = std::env::temp_dir().join(format!("portico-xds-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["a.crt", "a.key", "ca.pem", "jwks.json"] {
        std::fs::write(dir.join(f), "x").expect("write");
    }
    let y = "apiVersion: portico.dev/v1\nkind: Host\nmetadata: { name: a }\nspec: { hostname: a.example, tls: { cert_chain_file: a.crt, private_key_file: a.key, ca_file: ca.pem } }\n---\napiVersion: portico.dev/v1\nkind: JWTProvider\nmetadata: { name: j }\nspec: { issuer: \"https://i\", jwks_file: jwks.json }\n";
    let files = crate::inlined_files(&snap_in(y, &dir));
    let names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(names, ["a.crt", "a.key", "ca.pem", "jwks.json"]);
}

#[test]
fn client_certificates_are_forwarded_like_portico() {
    let plain = translate(&snap(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: web }\nspec: { port: 8081, protocol: HTTP }\n",
    ));
    let l: Listener = unpack(&plain.resources.listeners[0]);
    let h = hcm_of(&l, 0);
    assert_eq!(
        h.forward_client_cert_details,
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32
    );
    let d = h.set_current_client_cert_details.expect("details");
    assert!(d.subject.is_some_and(|b| b.value) && d.uri && d.dns && !d.cert);
    let trusted = translate(&snap(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: { name: web }\nspec: { port: 8081, protocol: HTTP, trust_forwarded: true }\n",
    ));
    let l: Listener = unpack(&trusted.resources.listeners[0]);
    assert_eq!(
        hcm_of(&l, 0).forward_client_cert_details,
        http_connection_manager::ForwardClientCertDetails::AppendForward as i32
    );
}
