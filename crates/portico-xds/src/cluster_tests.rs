//! Unit tests of the cluster translation: EDS vs DNS, load balancers, circuit breakers, health
//! checks, outlier detection, upstream HTTP/2 and TLS.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{address, health_check, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};

use crate::test_util::{snap, unpack};
use crate::translate;

fn upstream(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: m-{name} }}\nspec: {{ prefix: /{name}/, service: {name} }}\n"
    )
}

fn clusters(
    yaml: &str,
) -> (
    Vec<Cluster>,
    Vec<ClusterLoadAssignment>,
    Vec<crate::Warning>,
) {
    let t = translate(&snap(yaml));
    (
        t.resources.clusters.iter().map(unpack).collect(),
        t.resources.endpoints.iter().map(unpack).collect(),
        t.warnings,
    )
}

fn endpoint_addrs(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32)> {
    cla.endpoints
        .iter()
        .flat_map(|l| l.lb_endpoints.iter())
        .filter_map(|e| {
            let w = e.load_balancing_weight.map_or(0, |w| w.value);
            match &e.host_identifier {
                Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => {
                    match ep.address.as_ref()?.address.as_ref()? {
                        address::Address::SocketAddress(sa) => {
                            let port = match sa.port_specifier {
                                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                                _ => 0,
                            };
                            Some((sa.address.clone(), port, w))
                        }
                        _ => None,
                    }
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn static_ips_are_eds_with_weights() {
    let (cs, eps, _) = clusters(&upstream(
        "quote",
        "  endpoints: [\"10.0.0.1:8080\", { address: \"10.0.0.2:8081\", weight: 3 }]\n  connect_timeout_ms: 1500",
    ));
    let c = cs.iter().find(|c| c.name == "quote").expect("cluster");
    assert_eq!(
        c.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    assert_eq!(
        c.eds_cluster_config
            .as_ref()
            .map(|e| e.service_name.as_str()),
        Some("quote")
    );
    let ct = c.connect_timeout.expect("connect timeout");
    assert_eq!((ct.seconds, ct.nanos), (1, 500_000_000));
    let cla = eps
        .iter()
        .find(|e| e.cluster_name == "quote")
        .expect("assignment");
    assert_eq!(
        endpoint_addrs(cla),
        [
            ("10.0.0.1".to_string(), 8080, 1),
            ("10.0.0.2".to_string(), 8081, 3)
        ]
    );
}

#[test]
fn host_names_and_dns_are_strict_dns() {
    let y = [
        upstream("named", "  endpoints: [\"localhost:9000\"]"),
        upstream("dns", "  dns: quote.internal:8080\n  dns_refresh_ms: 2000"),
    ]
    .concat();
    let (cs, eps, _) = clusters(&y);
    assert!(
        eps.iter()
            .all(|e| e.cluster_name != "named" && e.cluster_name != "dns")
    );
    for n in ["named", "dns"] {
        let c = cs.iter().find(|c| c.name == n).expect("cluster");
        assert_eq!(
            c.cluster_discovery_type,
            Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32
            )),
            "{n}"
        );
    }
    let dns = cs.iter().find(|c| c.name == "dns").expect("dns");
    #[allow(deprecated)]
    let refresh = dns.dns_refresh_rate.map(|d| d.seconds);
    assert_eq!(refresh, Some(2));
    assert_eq!(
        endpoint_addrs(dns.load_assignment.as_ref().expect("inline")),
        [("quote.internal".to_string(), 8080, 1)]
    );
}

#[test]
fn policies_breakers_checks_outliers() {
    let y = [
        upstream(
            "a",
            "  endpoints: [\"10.0.0.1:80\"]\n  load_balancer: { policy: least_request, healthy_panic_threshold: 30 }\n  circuit_breakers: { max_connections: 7, max_pending_requests: 8, max_requests: 9, max_retries: 2 }\n  health_checks:\n    - { path: /healthz, host: h.example, expected_statuses: [\"200-299\", 418], interval_ms: 2000, timeout_ms: 500, unhealthy_threshold: 4, healthy_threshold: 1 }\n    - { tcp: {} }\n  outlier_detection: { consecutive_5xx: 3, consecutive_gateway_failure: 2, interval_ms: 1000, base_ejection_time_ms: 5000, max_ejection_time_ms: 60000, max_ejection_percent: 50 }",
        ),
        upstream("e", "  endpoints: [\"10.0.0.1:80\"]\n  load_balancer: { policy: ewma }"),
        upstream("m", "  endpoints: [\"10.0.0.1:80\"]\n  load_balancer: { policy: maglev, header: x-user }"),
    ]
    .concat();
    let (cs, _, warnings) = clusters(&y);
    let get = |n: &str| cs.iter().find(|c| c.name == n).expect("cluster").clone();
    let a = get("a");
    assert_eq!(a.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert_eq!(
        a.common_lb_config
            .and_then(|c| c.healthy_panic_threshold)
            .map(|p| p.value),
        Some(30.0)
    );
    let t = &a.circuit_breakers.expect("breakers").thresholds[0];
    assert_eq!(
        [
            &t.max_connections,
            &t.max_pending_requests,
            &t.max_requests,
            &t.max_retries
        ]
        .map(|v| v.map_or(0, |v| v.value)),
        [7, 8, 9, 2]
    );
    assert_eq!(a.health_checks.len(), 2);
    let h = &a.health_checks[0];
    assert_eq!(h.interval.map(|d| d.seconds), Some(2));
    assert_eq!(h.unhealthy_threshold.map(|v| v.value), Some(4));
    match &h.health_checker {
        Some(health_check::HealthChecker::HttpHealthCheck(hc)) => {
            assert_eq!(hc.path, "/healthz");
            assert_eq!(hc.host, "h.example");
            let r: Vec<(i64, i64)> = hc
                .expected_statuses
                .iter()
                .map(|r| (r.start, r.end))
                .collect();
            assert_eq!(
                r,
                [(200, 300), (418, 419)],
                "Envoy's range end is exclusive"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.health_checks[1].health_checker,
        Some(health_check::HealthChecker::TcpHealthCheck(_))
    ));
    let o = a.outlier_detection.expect("outlier");
    assert_eq!(o.consecutive_5xx.map(|v| v.value), Some(3));
    assert_eq!(o.consecutive_gateway_failure.map(|v| v.value), Some(2));
    assert_eq!(
        o.enforcing_consecutive_gateway_failure.map(|v| v.value),
        Some(100)
    );
    assert_eq!(o.base_ejection_time.map(|d| d.seconds), Some(5));
    assert_eq!(o.max_ejection_percent.map(|v| v.value), Some(50));

    assert_eq!(get("e").lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert!(
        warnings
            .iter()
            .any(|w| w.resource == "e" && w.field == "spec.load_balancer.policy"),
        "{warnings:?}"
    );
    assert_eq!(get("m").lb_policy, cluster::LbPolicy::Maglev as i32);
}

#[test]
fn h2c_and_tls_upstreams() {
    let y = [
        upstream("g", "  endpoints: [\"10.0.0.1:80\"]\n  protocol: h2c"),
        upstream(
            "s",
            "  endpoints: [\"10.0.0.1:443\"]\n  protocol: auto\n  tls: { sni: api.example }",
        ),
    ]
    .concat();
    let (cs, _, _) = clusters(&y);
    let g = cs.iter().find(|c| c.name == "g").expect("g");
    assert!(
        g.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
    assert!(g.transport_socket.is_none());
    let s = cs.iter().find(|c| c.name == "s").expect("s");
    let ts = s.transport_socket.as_ref().expect("tls");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    let Some(ConfigType::TypedConfig(any)) = &ts.config_type else {
        panic!("typed config")
    };
    let ctx: UpstreamTlsContext = prost::Message::decode(any.value.as_slice()).expect("decodes");
    assert_eq!(ctx.sni, "api.example");
    let common = ctx.common_tls_context.expect("common");
    assert_eq!(common.alpn_protocols, ["h2", "http/1.1"]);
    assert!(
        common.validation_context_type.is_some(),
        "verifies by default"
    );
}

#[test]
fn slow_start_and_retry_budget_reach_the_cluster() {
    let (cs, _, w) = clusters(&[
        upstream(
            "rr",
            "  endpoints: [\"10.0.0.1:80\"]\n  load_balancer: { policy: round_robin, slow_start_window_ms: 30000 }",
        ),
        upstream(
            "lr",
            "  endpoints: [\"10.0.0.2:80\"]\n  load_balancer: { policy: least_request, slow_start_window_ms: 5000 }",
        ),
        upstream(
            "rh",
            "  endpoints: [\"10.0.0.3:80\"]\n  load_balancer: { policy: ring_hash, header: x-k, slow_start_window_ms: 5000 }",
        ),
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: budget }\nspec: { prefix: /b/, service: rr, retry_policy: { retry_on: 5xx, num_retries: 2, retry_budget: { budget_percent: 25, min_retry_concurrency: 4 } } }\n".to_string(),
    ]
    .concat());
    let by = |n: &str| cs.iter().find(|c| c.name == n).expect("cluster");
    let Some(cluster::LbConfig::RoundRobinLbConfig(rr)) = &by("rr").lb_config else {
        panic!("round robin config")
    };
    let ss = rr.slow_start_config.as_ref().expect("slow start");
    assert_eq!(ss.slow_start_window.as_ref().map(|d| d.seconds), Some(30));
    assert_eq!(ss.min_weight_percent.as_ref().map(|p| p.value), Some(10.0));
    assert_eq!(ss.aggression.as_ref().map(|a| a.default_value), Some(1.0));
    assert!(matches!(
        &by("lr").lb_config,
        Some(cluster::LbConfig::LeastRequestLbConfig(l)) if l.slow_start_config.is_some()
    ));
    assert!(
        w.iter()
            .any(|x| x.resource == "rh" && x.field == "spec.load_balancer.slow_start_window")
    );
    let t = &by("rr").circuit_breakers.as_ref().expect("cb").thresholds[0];
    let b = t.retry_budget.as_ref().expect("budget");
    assert_eq!(b.budget_percent.as_ref().map(|p| p.value), Some(25.0));
    assert_eq!(b.min_retry_concurrency.as_ref().map(|v| v.value), Some(4));
    // The other route to rr (m-rr) has no budget: Envoy's applies to it too.
    assert!(
        w.iter()
            .any(|x| x.resource == "budget" && x.field == "spec.retry_policy.retry_budget")
    );
    assert!(
        by("lr").circuit_breakers.as_ref().expect("cb").thresholds[0]
            .retry_budget
            .is_none()
    );
}
