//! Upstreams: service references (`[scheme://]host:port` or an `Upstream` name), the implicit
//! upstreams they create, and `Upstream` resources (endpoints or DNS, protocol, TLS).

use std::net::IpAddr;

use super::Ctx;
use super::parse::{check_files, fmt_authority, ms, parse_authority};
use super::settings::{default_lb, upstream_settings};
use crate::defaults;
use crate::model::{Spec, UpstreamProtocolM, UpstreamSpec};
use crate::resource::{Diags, Resource, UPSTREAM};
use crate::snapshot::{
    CircuitBreakerConf, EndpointConf, EndpointSource, UpstreamConf, UpstreamProtocol,
    UpstreamTlsConf,
};

/// A service reference, parsed.
pub(super) enum ServiceTarget {
    Named(usize),
    /// References a broken Upstream resource: no further error.
    Broken,
    Implicit {
        protocol: UpstreamProtocol,
        host: String,
        port: u16,
    },
}

impl Ctx<'_> {
    pub(super) fn resolve_service(&self, s: &str, grpc: bool) -> Result<ServiceTarget, String> {
        let s = s.trim();
        if let Some(&i) = self.by_name.get(s).filter(|&&i| self.is_resource[i]) {
            return Ok(ServiceTarget::Named(i));
        }
        if self.broken.contains(s) {
            return Ok(ServiceTarget::Broken);
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, rest)) => (Some(sc.to_ascii_lowercase()), rest),
            None => (None, s),
        };
        let (mut protocol, default_port) = match scheme.as_deref() {
            None => (UpstreamProtocol::Http1, None),
            Some("http") => (UpstreamProtocol::Http1, Some(80)),
            Some("https") => (UpstreamProtocol::Https, Some(443)),
            Some("h2c") => (UpstreamProtocol::H2c, Some(80)),
            Some(other) => {
                return Err(format!(
                    "unsupported scheme `{other}://` in service `{s}` (expected http://, https:// or h2c://)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "service `{s}` must be [scheme://]host:port or an Upstream name (no path)"
            ));
        }
        let (host, port) = parse_authority(rest)?;
        let port = match port.or(default_port) {
            Some(p) => p,
            None => {
                return Err(format!(
                    "service `{s}` names no Upstream (a service without a port must be the name of an Upstream)"
                ));
            }
        };
        if grpc {
            protocol = match protocol {
                UpstreamProtocol::Http1 => UpstreamProtocol::H2c,
                UpstreamProtocol::Https => UpstreamProtocol::Auto,
                other => other,
            };
        }
        Ok(ServiceTarget::Implicit {
            protocol,
            host,
            port,
        })
    }

    /// The upstream index for a service (creating its implicit upstream); `None` after an error.
    pub(super) fn service_upstream(
        &mut self,
        r: &Resource,
        path: &[&str],
        s: &str,
        grpc: bool,
    ) -> Option<usize> {
        match self.resolve_service(s, grpc) {
            Err(msg) => {
                r.error(self.d, path, msg);
                None
            }
            Ok(ServiceTarget::Broken) => None,
            Ok(ServiceTarget::Named(i)) => Some(i),
            Ok(ServiceTarget::Implicit {
                protocol,
                host,
                port,
            }) => {
                let authority = fmt_authority(&host, port);
                let key = (protocol, authority.clone());
                if let Some(&i) = self.implicit.get(&key) {
                    return Some(i);
                }
                let name = if self.by_name.contains_key(&authority) {
                    let scheme = match protocol {
                        UpstreamProtocol::Http1 => "http",
                        UpstreamProtocol::H2c => "h2c",
                        UpstreamProtocol::Https => "https",
                        UpstreamProtocol::Auto => "https+h2",
                    };
                    format!("{scheme}://{authority}")
                } else {
                    authority.clone()
                };
                let endpoints = match host.parse::<IpAddr>() {
                    Ok(_) => EndpointSource::Static(vec![EndpointConf {
                        address: authority,
                        weight: 1,
                    }]),
                    Err(_) => EndpointSource::Dns {
                        host: host.clone(),
                        port,
                        refresh: ms(defaults::DNS_REFRESH_MS),
                    },
                };
                let tls = matches!(protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto)
                    .then(|| UpstreamTlsConf {
                        ca_file: None,
                        sni: host.parse::<IpAddr>().is_err().then(|| host.clone()),
                        cert_chain_file: None,
                        private_key_file: None,
                        insecure_skip_verify: defaults::INSECURE_SKIP_VERIFY,
                    });
                let id = self.upstreams.len();
                self.upstreams.push(UpstreamConf {
                    id,
                    name: name.clone(),
                    endpoints,
                    protocol,
                    tls,
                    lb: default_lb(),
                    health_checks: Vec::new(),
                    outlier: None,
                    circuit_breakers: CircuitBreakerConf::default(),
                    connect_timeout: ms(defaults::CONNECT_TIMEOUT_MS),
                    max_idle_connections_per_endpoint: defaults::MAX_IDLE_CONNECTIONS_PER_ENDPOINT,
                    idle_connection_timeout: ms(defaults::IDLE_CONNECTION_TIMEOUT_MS),
                });
                self.is_resource.push(false);
                self.set_by.push(Default::default());
                self.by_name.insert(name, id);
                self.implicit.insert(key, id);
                Some(id)
            }
        }
    }
}

impl Ctx<'_> {
    pub(super) fn upstream_resources(&mut self, resources: &[Resource]) {
        for r in resources.iter().filter(|r| r.kind == UPSTREAM) {
            let Some(Spec::Upstream(u)) = r.spec.as_deref() else {
                self.broken.insert(r.name.clone());
                continue;
            };
            if r.name == "-" || self.by_name.contains_key(&r.name) {
                continue;
            }
            let endpoints = endpoint_source(self.d, r, u);
            if u.dns.is_none() && u.dns_refresh_ms.is_some() {
                r.warn(
                    self.d,
                    &["spec", "dns_refresh_ms"],
                    "dns_refresh_ms is ignored without dns",
                );
            }
            let protocol = match u.protocol.unwrap_or(defaults::UPSTREAM_PROTOCOL) {
                UpstreamProtocolM::Http1 => UpstreamProtocol::Http1,
                UpstreamProtocolM::H2c => UpstreamProtocol::H2c,
                UpstreamProtocolM::Https => UpstreamProtocol::Https,
                UpstreamProtocolM::Auto => UpstreamProtocol::Auto,
            };
            let tls_proto = matches!(protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto);
            let tls = upstream_tls(self.d, r, u, tls_proto, endpoints.as_ref());
            let s = upstream_settings(
                self.d,
                r,
                u.load_balancer.as_ref(),
                u.health_checks.as_deref(),
                u.outlier_detection.as_ref(),
                u.circuit_breakers.as_ref(),
                u.connect_timeout_ms,
            );
            let max_idle = u
                .max_idle_connections_per_endpoint
                .unwrap_or(defaults::MAX_IDLE_CONNECTIONS_PER_ENDPOINT);
            let idle = u
                .idle_connection_timeout_ms
                .unwrap_or(defaults::IDLE_CONNECTION_TIMEOUT_MS);
            let Some(endpoints) = endpoints else {
                self.broken.insert(r.name.clone());
                continue;
            };
            let id = self.upstreams.len();
            self.upstreams.push(UpstreamConf {
                id,
                name: r.name.clone(),
                endpoints,
                protocol,
                // Only TLS protocols carry TLS settings (others got a warning above).
                tls: if tls_proto { tls } else { None },
                lb: s.lb.unwrap_or_else(default_lb),
                health_checks: s.health_checks.unwrap_or_default(),
                outlier: s.outlier,
                circuit_breakers: s.circuit_breakers.unwrap_or_default(),
                connect_timeout: s
                    .connect_timeout
                    .unwrap_or(ms(defaults::CONNECT_TIMEOUT_MS)),
                max_idle_connections_per_endpoint: max_idle,
                idle_connection_timeout: ms(idle),
            });
            self.is_resource.push(true);
            self.set_by.push(Default::default());
            self.by_name.insert(r.name.clone(), id);
        }
    }
}

/// `endpoints` or `dns`; `None` after an error.
fn endpoint_source(d: &mut Diags, r: &Resource, u: &UpstreamSpec) -> Option<EndpointSource> {
    match (&u.endpoints, &u.dns) {
        (Some(_), Some(_)) => {
            r.error_key(d, &["spec", "dns"], "set either endpoints or dns, not both");
            None
        }
        (None, None) => {
            if !r.was_removed(&["spec", "endpoints"]) && !r.was_removed(&["spec", "dns"]) {
                r.missing(
                    d,
                    &["spec", "endpoints"],
                    "an Upstream needs `endpoints` or `dns`",
                );
            }
            None
        }
        (Some(eps), None) => {
            if eps.is_empty() && !r.was_removed(&["spec", "endpoints", "0"]) {
                r.error(d, &["spec", "endpoints"], "endpoints must not be empty");
            }
            let mut list = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                let is = i.to_string();
                let Some(addr) = &e.address else {
                    r.missing(
                        d,
                        &["spec", "endpoints", &is, "address"],
                        "missing field `address` in endpoint",
                    );
                    continue;
                };
                match parse_authority(addr.trim()) {
                    Ok((h, Some(port))) => {
                        let weight = e.weight.unwrap_or(defaults::ENDPOINT_WEIGHT);
                        if weight == 0 {
                            r.error(
                                d,
                                &["spec", "endpoints", &is, "weight"],
                                "weight must be at least 1",
                            );
                        }
                        list.push(EndpointConf {
                            address: fmt_authority(&h, port),
                            weight: weight.max(1),
                        });
                    }
                    Ok((_, None)) => {
                        r.error(
                            d,
                            &["spec", "endpoints", &is],
                            format!("endpoint `{addr}` needs a port (host:port)"),
                        );
                    }
                    Err(m) => r.error(d, &["spec", "endpoints", &is], m),
                }
            }
            Some(EndpointSource::Static(list))
        }
        (None, Some(dns)) => match parse_authority(dns.trim()) {
            Ok((host, Some(port))) => {
                let refresh = u.dns_refresh_ms.unwrap_or(defaults::DNS_REFRESH_MS);
                if refresh == 0 {
                    r.error(
                        d,
                        &["spec", "dns_refresh_ms"],
                        "dns_refresh_ms must be greater than 0",
                    );
                }
                Some(EndpointSource::Dns {
                    host,
                    port,
                    refresh: ms(refresh.max(1)),
                })
            }
            Ok((_, None)) => {
                r.error(
                    d,
                    &["spec", "dns"],
                    format!("dns `{dns}` needs a port (host:port)"),
                );
                None
            }
            Err(m) => {
                r.error(d, &["spec", "dns"], m);
                None
            }
        },
    }
}

/// The TLS settings of an Upstream: its `tls`, or the defaults of a TLS protocol (SNI = the
/// DNS name).
fn upstream_tls(
    d: &mut Diags,
    r: &Resource,
    u: &UpstreamSpec,
    tls_proto: bool,
    endpoints: Option<&EndpointSource>,
) -> Option<UpstreamTlsConf> {
    match &u.tls {
        Some(t) => {
            if !tls_proto {
                r.warn(
                    d,
                    &["spec", "tls"],
                    "tls is only used with protocol https or auto",
                );
            }
            if t.cert_chain_file.is_some() != t.private_key_file.is_some() {
                r.error_key(
                    d,
                    &["spec", "tls"],
                    "cert_chain_file and private_key_file go together",
                );
            }
            let files = check_files(
                d,
                r,
                &["spec", "tls"],
                &[
                    ("ca_file", t.ca_file.as_ref()),
                    ("cert_chain_file", t.cert_chain_file.as_ref()),
                    ("private_key_file", t.private_key_file.as_ref()),
                ],
            );
            let mut it = files.into_iter();
            Some(UpstreamTlsConf {
                ca_file: it.next().flatten(),
                sni: t.sni.clone(),
                cert_chain_file: it.next().flatten(),
                private_key_file: it.next().flatten(),
                insecure_skip_verify: t
                    .insecure_skip_verify
                    .unwrap_or(defaults::INSECURE_SKIP_VERIFY),
            })
        }
        None if tls_proto => Some(UpstreamTlsConf {
            ca_file: None,
            sni: match &endpoints {
                Some(EndpointSource::Dns { host, .. }) => Some(host.clone()),
                _ => None,
            },
            cert_chain_file: None,
            private_key_file: None,
            insecure_skip_verify: false,
        }),
        None => None,
    }
}
