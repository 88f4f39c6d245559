//! Listeners and secrets: one Envoy `Listener` per Portico listener, with an HTTP connection
//! manager whose routes come over ADS (RDS, [`crate::routes::ROUTE_CONFIG_NAME`]).
//!
//! An HTTPS listener gets one filter chain per Host with `tls`, matched by SNI
//! (`server_names` is the Host's glob; a `*` Host is the chain without a name), whose
//! certificate and key, and client CA for mTLS, are SDS secrets served over the same ADS stream
//! (a certificate rotation pushes a new secret; the listener is unchanged). The file contents
//! go inline into the secrets so Envoys on other machines need no copies.

use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::proxy_protocol::v3::ProxyProtocol;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::connection_limit::v3::ConnectionLimit;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters, common_tls_context, secret, tls_parameters,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value, UInt64Value};
use envoy_types::util::pack_any;
use portico_config::snapshot::{HostConf, HostGlob, ListenerConf, Snapshot, TlsVersion};

use crate::cluster::{ads_source, inline_file, socket};
use crate::common::{Warnings, duration};
use crate::filters;
use crate::routes::{CLEARTEXT_ROUTE_CONFIG_NAME, ROUTE_CONFIG_NAME, needs_cleartext};

/// SDS name of a Host's certificate and key.
pub fn cert_secret_name(h: &HostConf) -> String {
    format!("host/{}/cert", h.name)
}

/// SDS name of a Host's client CA (mTLS).
pub fn ca_secret_name(h: &HostConf) -> String {
    format!("host/{}/ca", h.name)
}

/// The secrets of every Host with TLS whose files could be read.
pub fn secrets(snap: &Snapshot, w: &mut Warnings) -> Vec<Secret> {
    let mut out = Vec::new();
    for h in &snap.hosts {
        let Some(tls) = &h.tls else { continue };
        let chain = inline_file(&tls.cert_chain_file, &h.name, "spec.tls", w);
        let key = inline_file(&tls.private_key_file, &h.name, "spec.tls", w);
        if chain.is_none() || key.is_none() {
            continue;
        }
        out.push(Secret {
            name: cert_secret_name(h),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: chain,
                private_key: key,
                ..Default::default()
            })),
        });
        if let Some(ca) = &tls.ca_file
            && let Some(ca) = inline_file(ca, &h.name, "spec.tls.ca_secret", w)
        {
            out.push(Secret {
                name: ca_secret_name(h),
                r#type: Some(secret::Type::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(ca),
                        ..Default::default()
                    },
                )),
            });
        }
    }
    out
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads_source()),
    }
}

/// The network filters of one filter chain: the connection limit (Portico's `max_connections`,
/// beyond which Envoy closes new connections), then the HTTP connection manager.
fn filters(l: &ListenerConf, snap: &Snapshot) -> Vec<Filter> {
    let mut out = Vec::with_capacity(2);
    if l.max_connections > 0 {
        out.push(Filter {
            name: "envoy.filters.network.connection_limit".to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack_any(ConnectionLimit {
                stat_prefix: l.name.clone(),
                max_connections: Some(UInt64Value {
                    value: u64::from(l.max_connections),
                }),
                ..Default::default()
            }))),
        });
    }
    out.push(hcm(l, snap));
    out
}

fn hcm(l: &ListenerConf, snap: &Snapshot) -> Filter {
    let m = HttpConnectionManager {
        stat_prefix: l.name.clone(),
        codec_type: 0, // AUTO: HTTP/1.1, and h2 by ALPN or prior knowledge.
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: if !l.protocol.is_tls() && needs_cleartext(snap) {
                CLEARTEXT_ROUTE_CONFIG_NAME
            } else {
                ROUTE_CONFIG_NAME
            }
            .to_string(),
        })),
        http_filters: filters::http_filters(snap),
        // Portico matches hostnames with the port stripped (reference §2.3.1).
        strip_port_mode: Some(http_connection_manager::StripPortMode::StripAnyHostPort(
            true,
        )),
        use_remote_address: Some(BoolValue { value: true }),
        // A verified client certificate becomes `x-forwarded-client-cert`
        // (`Hash=..;Subject="..";URI=..;DNS=..`), a client's own header is dropped: as Portico.
        // Behind a trusted proxy (`trust_forwarded`) the forwarded header is kept.
        forward_client_cert_details: if l.trust_forwarded {
            http_connection_manager::ForwardClientCertDetails::AppendForward
        } else {
            http_connection_manager::ForwardClientCertDetails::SanitizeSet
        } as i32,
        set_current_client_cert_details: Some(
            http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(BoolValue { value: true }),
                uri: true,
                dns: true,
                ..Default::default()
            },
        ),
        xff_num_trusted_hops: 0,
        max_request_headers_kb: Some(UInt32Value {
            value: l.limits.max_request_headers_bytes.div_ceil(1024),
        }),
        request_headers_timeout: Some(duration(l.limits.header_read_timeout)),
        common_http_protocol_options: Some(
            envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
                idle_timeout: l.limits.keepalive_timeout.map(duration),
                max_headers_count: Some(UInt32Value {
                    value: l.limits.max_headers_count,
                }),
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack_any(m))),
    }
}

fn tls_socket(l: &ListenerConf, h: &HostConf, have_ca: bool) -> Option<TransportSocket> {
    let tls = h.tls.as_ref()?;
    let mut alpn = tls.alpn_protocols.clone();
    if alpn.is_empty() {
        alpn = if l.http2 {
            vec!["h2".to_string(), "http/1.1".to_string()]
        } else {
            vec!["http/1.1".to_string()]
        };
    }
    let min = match tls.min_tls_version {
        TlsVersion::V1_2 => tls_parameters::TlsProtocol::TlSv12,
        TlsVersion::V1_3 => tls_parameters::TlsProtocol::TlSv13,
    };
    let ctx = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: min as i32,
                ..Default::default()
            }),
            alpn_protocols: alpn,
            tls_certificate_sds_secret_configs: vec![sds(cert_secret_name(h))],
            validation_context_type: have_ca.then(|| {
                common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(sds(
                    ca_secret_name(h),
                ))
            }),
            ..Default::default()
        }),
        require_client_certificate: have_ca.then_some(BoolValue { value: true }),
        ..Default::default()
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    })
}

/// The Envoy listener of one Portico listener. `secrets`: those [`secrets`] produced (a Host
/// whose files could not be read gets no filter chain).
pub fn listener(
    l: &ListenerConf,
    snap: &Snapshot,
    secrets: &[Secret],
    w: &mut Warnings,
) -> Listener {
    let mut out = Listener {
        name: l.name.clone(),
        address: Some(socket(&l.address.to_string(), l.port)),
        stat_prefix: l.name.clone(),
        ..Default::default()
    };
    if l.protocol.proxy_protocol() {
        out.listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.proxy_protocol".to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
                ProxyProtocol::default(),
            ))),
            ..Default::default()
        });
    }
    if l.max_connections > 0
        && l.protocol.is_tls()
        && snap.hosts.iter().filter(|h| h.tls.is_some()).count() > 1
    {
        w.push(
            &l.name,
            "spec.max_connections",
            "Envoy counts connections per filter chain: each Host's chain gets the whole limit",
        );
    }
    if l.trust_forwarded
        && l.protocol.is_tls()
        && snap
            .hosts
            .iter()
            .any(|h| h.tls.as_ref().is_some_and(|t| t.ca_file.is_some()))
    {
        w.push(
            &l.name,
            "spec.trust_forwarded",
            "with a client certificate, Envoy appends its details to a forwarded x-forwarded-client-cert (Portico replaces it)",
        );
    }
    if !l.protocol.is_tls() {
        out.filter_chains.push(FilterChain {
            filters: filters(l, snap),
            ..Default::default()
        });
        return out;
    }
    out.listener_filters.push(ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack_any(
            TlsInspector::default(),
        ))),
        ..Default::default()
    });
    for h in &snap.hosts {
        let has = |name: String| secrets.iter().any(|s| s.name == name);
        if h.tls.is_none() || !has(cert_secret_name(h)) {
            continue;
        }
        let Some(ts) = tls_socket(l, h, has(ca_secret_name(h))) else {
            continue;
        };
        let server_names = match &h.hostname {
            HostGlob::Any => Vec::new(),
            g => vec![g.to_string()],
        };
        out.filter_chains.push(FilterChain {
            name: format!("host/{}", h.name),
            filter_chain_match: Some(FilterChainMatch {
                server_names,
                ..Default::default()
            }),
            filters: filters(l, snap),
            transport_socket: Some(ts),
            ..Default::default()
        });
    }
    if out.filter_chains.is_empty() {
        w.push(
            &l.name,
            "spec.protocol",
            "an HTTPS listener with no Host certificate: Envoy gets no filter chain (Portico serves a self-signed one)",
        );
    }
    out
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
