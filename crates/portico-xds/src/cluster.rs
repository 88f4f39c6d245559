//! Clusters: one Envoy `Cluster` per Portico upstream, with its `ClusterLoadAssignment`.
//!
//! Static endpoints that are all IP addresses become an EDS cluster whose endpoints are served
//! over ADS (so an endpoint change pushes one small resource); endpoints naming hosts, and DNS
//! upstreams, become `STRICT_DNS` clusters with the endpoints inline (Envoy resolves them, as
//! Portico does). Connect timeout, load balancer (and slow start), panic threshold, circuit
//! breakers (and the routes' retry budget), active health checks, outlier detection, upstream
//! HTTP/2 and TLS are carried over.

use std::collections::HashMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection,
    circuit_breakers::{Thresholds, thresholds::RetryBudget},
    cluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, HealthCheck,
    RuntimeDouble, SocketAddress, TransportSocket, address, config_source, data_source,
    health_check, socket_address, transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, TlsCertificate, UpstreamTlsContext,
    common_tls_context,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::v3::{Int64Range, Percent};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;
use portico_config::snapshot::{
    EndpointConf, EndpointSource, HealthCheckConf, HealthCheckKind, LbPolicy, UpstreamConf,
    UpstreamProtocol, UpstreamTlsConf,
};

use crate::common::{Warnings, cluster_name, duration};

/// Where Envoy finds a CA bundle when an upstream names none (Portico uses its built-in web
/// PKI roots; Envoy needs a file on its own machine: Debian/Ubuntu's bundle).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The config source "over the ADS stream this Envoy already has".
pub fn ads_source() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// An IP endpoint as an Envoy address; `None` for a host name.
fn ip_address(addr: &str) -> Option<Address> {
    let sa: SocketAddr = addr.parse().ok()?;
    Some(socket(&sa.ip().to_string(), sa.port()))
}

pub(crate) fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A `host:port` endpoint (no IP) as an Envoy address for a DNS cluster.
fn host_address(addr: &str) -> Option<Address> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(socket(host.trim_matches(['[', ']']), port))
}

fn lb_endpoint(address: Address, weight: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(address),
            ..Default::default()
        })),
        load_balancing_weight: u32v(weight.max(1)),
        ..Default::default()
    }
}

fn load_assignment(name: &str, endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn discovery(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

/// The cluster of one upstream, and its load assignment when it is an EDS cluster.
pub fn cluster(u: &UpstreamConf, w: &mut Warnings) -> (Cluster, Option<ClusterLoadAssignment>) {
    let name = cluster_name(u);
    let mut c = Cluster {
        name: name.clone(),
        connect_timeout: Some(duration(u.connect_timeout)),
        lb_policy: lb_policy(u, w) as i32,
        circuit_breakers: Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                max_connections: u32v(u.circuit_breakers.max_connections),
                max_pending_requests: u32v(u.circuit_breakers.max_pending_requests),
                max_requests: u32v(u.circuit_breakers.max_requests),
                max_retries: u32v(u.circuit_breakers.max_retries),
                ..Default::default()
            }],
            ..Default::default()
        }),
        common_lb_config: Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent {
                value: f64::from(u.lb.healthy_panic_threshold),
            }),
            ..Default::default()
        }),
        health_checks: u.health_checks.iter().map(health_check).collect(),
        outlier_detection: u.outlier.as_ref().map(|o| OutlierDetection {
            consecutive_5xx: u32v(o.consecutive_5xx),
            consecutive_gateway_failure: u32v(o.consecutive_gateway_failure),
            // Envoy enforces gateway failures at 0% unless told otherwise; Portico ejects.
            enforcing_consecutive_gateway_failure: u32v(100),
            interval: Some(duration(o.interval)),
            base_ejection_time: Some(duration(o.base_ejection_time)),
            max_ejection_time: Some(duration(o.max_ejection_time)),
            max_ejection_percent: u32v(o.max_ejection_percent),
            ..Default::default()
        }),
        ..Default::default()
    };
    c.lb_config = slow_start(u, w);
    protocol(u, &mut c, w);
    let cla = match &u.endpoints {
        EndpointSource::Static(eps) => {
            let ips: Option<Vec<LbEndpoint>> = eps
                .iter()
                .map(|e| ip_address(&e.address).map(|a| lb_endpoint(a, e.weight)))
                .collect();
            match ips {
                Some(ips) => {
                    c.cluster_discovery_type = discovery(cluster::DiscoveryType::Eds);
                    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                        eds_config: Some(ads_source()),
                        service_name: name.clone(),
                    });
                    Some(load_assignment(&name, ips))
                }
                None => {
                    c.cluster_discovery_type = discovery(cluster::DiscoveryType::StrictDns);
                    c.load_assignment = Some(load_assignment(&name, dns_endpoints(u, eps, w)));
                    None
                }
            }
        }
        EndpointSource::Dns {
            host,
            port,
            refresh,
        } => {
            c.cluster_discovery_type = discovery(cluster::DiscoveryType::StrictDns);
            // Deprecated in favour of the DnsCluster extension, still honoured by Envoy 1.40.
            #[allow(deprecated)]
            {
                c.dns_refresh_rate = Some(duration(*refresh));
            }
            c.load_assignment = Some(load_assignment(
                &name,
                vec![lb_endpoint(socket(host, *port), 1)],
            ));
            None
        }
    };
    (c, cla)
}

fn dns_endpoints(u: &UpstreamConf, eps: &[EndpointConf], w: &mut Warnings) -> Vec<LbEndpoint> {
    eps.iter()
        .filter_map(|e| {
            let a = ip_address(&e.address).or_else(|| host_address(&e.address));
            if a.is_none() {
                w.push(
                    &u.name,
                    "spec.endpoints",
                    &format!("endpoint {} is not host:port: left out", e.address),
                );
            }
            a.map(|a| lb_endpoint(a, e.weight))
        })
        .collect()
}

/// Slow start: Envoy's ramp with the defaults Portico uses (linear, from 10% of the weight).
fn slow_start(u: &UpstreamConf, w: &mut Warnings) -> Option<cluster::LbConfig> {
    let window = u.lb.slow_start_window?;
    let cfg = Some(cluster::SlowStartConfig {
        slow_start_window: Some(duration(window)),
        aggression: Some(RuntimeDouble {
            default_value: 1.0,
            ..Default::default()
        }),
        min_weight_percent: Some(Percent { value: 10.0 }),
    });
    match u.lb.policy {
        LbPolicy::RoundRobin => Some(cluster::LbConfig::RoundRobinLbConfig(
            cluster::RoundRobinLbConfig {
                slow_start_config: cfg,
            },
        )),
        LbPolicy::LeastRequest | LbPolicy::Ewma => Some(cluster::LbConfig::LeastRequestLbConfig(
            cluster::LeastRequestLbConfig {
                slow_start_config: cfg,
                ..Default::default()
            },
        )),
        LbPolicy::Random | LbPolicy::RingHash | LbPolicy::Maglev => {
            w.push(
                &u.name,
                "spec.load_balancer.slow_start_window",
                "Envoy ramps new endpoints only with round_robin and least_request: not translated",
            );
            None
        }
    }
}

/// The retry budget of the routes to `u` as the cluster's (Envoy's budgets are per cluster;
/// Portico's per route): the first route's, with a warning when routes to `u` differ.
pub fn retry_budget(
    snap: &portico_config::snapshot::Snapshot,
    u: &UpstreamConf,
    w: &mut Warnings,
) -> Option<RetryBudget> {
    let budgets: Vec<(&str, Option<(f64, u32)>)> = snap
        .routes
        .iter()
        .filter(|r| r.upstream() == Some(u.id))
        .map(|r| {
            let b = r
                .retry
                .as_ref()
                .filter(|p| p.budget_percent > 0.0)
                .map(|p| (p.budget_percent, p.min_retry_concurrency));
            (r.name.as_str(), b)
        })
        .collect();
    let (first, b) = budgets.iter().find_map(|(n, b)| b.map(|b| (*n, b)))?;
    if budgets.iter().any(|(_, o)| *o != Some(b)) {
        w.push(
            first,
            "spec.retry_policy.retry_budget",
            "Envoy's retry budget is per cluster: this route's applies to every route to its service",
        );
    }
    Some(RetryBudget {
        budget_percent: Some(Percent { value: b.0 }),
        min_retry_concurrency: u32v(b.1),
        ..Default::default()
    })
}

fn lb_policy(u: &UpstreamConf, w: &mut Warnings) -> cluster::LbPolicy {
    use cluster::LbPolicy as L;
    match u.lb.policy {
        LbPolicy::RoundRobin => L::RoundRobin,
        LbPolicy::LeastRequest => L::LeastRequest,
        LbPolicy::Ewma => {
            w.push(
                &u.name,
                "spec.load_balancer.policy",
                "Envoy has no ewma balancer: least_request is used",
            );
            L::LeastRequest
        }
        LbPolicy::Random => L::Random,
        LbPolicy::RingHash => L::RingHash,
        LbPolicy::Maglev => L::Maglev,
    }
}

fn health_check(h: &HealthCheckConf) -> HealthCheck {
    let checker = match &h.kind {
        HealthCheckKind::Http {
            path,
            host,
            expected_statuses,
        } => health_check::HealthChecker::HttpHealthCheck(health_check::HttpHealthCheck {
            path: path.clone(),
            host: host.clone().unwrap_or_default(),
            // Portico's ranges are inclusive; Envoy's end is exclusive.
            expected_statuses: expected_statuses
                .iter()
                .map(|(lo, hi)| Int64Range {
                    start: i64::from(*lo),
                    end: i64::from(*hi) + 1,
                })
                .collect(),
            ..Default::default()
        }),
        HealthCheckKind::Grpc { service } => {
            health_check::HealthChecker::GrpcHealthCheck(health_check::GrpcHealthCheck {
                service_name: service.clone().unwrap_or_default(),
                ..Default::default()
            })
        }
        HealthCheckKind::Tcp => {
            health_check::HealthChecker::TcpHealthCheck(health_check::TcpHealthCheck::default())
        }
    };
    HealthCheck {
        timeout: Some(duration(h.timeout)),
        interval: Some(duration(h.interval)),
        unhealthy_threshold: u32v(h.unhealthy_threshold),
        healthy_threshold: u32v(h.healthy_threshold),
        health_checker: Some(checker),
        ..Default::default()
    }
}

/// The HTTP protocol options extension's key in `typed_extension_protocol_options`.
const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn protocol(u: &UpstreamConf, c: &mut Cluster, w: &mut Warnings) {
    use http_protocol_options::{
        AutoHttpConfig, ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config,
    };
    let opts = match u.protocol {
        UpstreamProtocol::Http1 | UpstreamProtocol::Https => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                    Default::default(),
                )),
            })
        }
        UpstreamProtocol::H2c => UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                Default::default(),
            )),
        }),
        UpstreamProtocol::Auto => UpstreamProtocolOptions::AutoConfig(AutoHttpConfig {
            http2_protocol_options: Some(Default::default()),
            ..Default::default()
        }),
    };
    let mut m: HashMap<String, Any> = HashMap::new();
    m.insert(
        HTTP_OPTIONS.to_string(),
        pack_any(HttpProtocolOptions {
            // Pooled connections idle this long are closed, in both proxies.
            common_http_protocol_options: Some(
                envoy_types::pb::envoy::config::core::v3::HttpProtocolOptions {
                    idle_timeout: Some(duration(u.idle_connection_timeout)),
                    ..Default::default()
                },
            ),
            upstream_protocol_options: Some(opts),
            ..Default::default()
        }),
    );
    c.typed_extension_protocol_options = m;
    if matches!(u.protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto) {
        let alpn = if u.protocol == UpstreamProtocol::Auto {
            vec!["h2".to_string(), "http/1.1".to_string()]
        } else {
            Vec::new()
        };
        let tls = u.tls.clone().unwrap_or(UpstreamTlsConf {
            ca_file: None,
            sni: None,
            cert_chain_file: None,
            private_key_file: None,
            insecure_skip_verify: false,
        });
        c.transport_socket = Some(upstream_tls(u, &tls, alpn, w));
    }
}

/// A file's contents inline (the Envoy may run elsewhere); `None` with a warning on failure.
pub(crate) fn inline_file(
    path: &std::path::Path,
    resource: &str,
    field: &str,
    w: &mut Warnings,
) -> Option<DataSource> {
    match std::fs::read(path) {
        Ok(bytes) => Some(DataSource {
            specifier: Some(data_source::Specifier::InlineBytes(bytes)),
            ..Default::default()
        }),
        Err(e) => {
            w.push(
                resource,
                field,
                &format!("cannot read {}: {e}", path.display()),
            );
            None
        }
    }
}

fn upstream_tls(
    u: &UpstreamConf,
    tls: &UpstreamTlsConf,
    alpn: Vec<String>,
    w: &mut Warnings,
) -> TransportSocket {
    let mut common = CommonTlsContext {
        alpn_protocols: alpn,
        ..Default::default()
    };
    if !tls.insecure_skip_verify {
        let trusted_ca = match &tls.ca_file {
            Some(p) => inline_file(p, &u.name, "spec.tls.ca_file", w),
            None => Some(DataSource {
                specifier: Some(data_source::Specifier::Filename(
                    SYSTEM_CA_BUNDLE.to_string(),
                )),
                ..Default::default()
            }),
        };
        common.validation_context_type = Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    trusted_ca,
                    ..Default::default()
                },
            ),
        );
    }
    if let (Some(cert), Some(key)) = (&tls.cert_chain_file, &tls.private_key_file) {
        common.tls_certificates = vec![TlsCertificate {
            certificate_chain: inline_file(cert, &u.name, "spec.tls.cert_chain_file", w),
            private_key: inline_file(key, &u.name, "spec.tls.private_key_file", w),
            ..Default::default()
        }];
    }
    let sni = tls.sni.clone().unwrap_or_else(|| match &u.endpoints {
        EndpointSource::Dns { host, .. } => host.clone(),
        EndpointSource::Static(eps) => eps
            .first()
            .and_then(|e| e.address.rsplit_once(':'))
            .map(|(h, _)| h.to_string())
            .filter(|h| h.parse::<std::net::IpAddr>().is_err())
            .unwrap_or_default(),
    });
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                common_tls_context: Some(common),
                sni,
                ..Default::default()
            },
        ))),
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
