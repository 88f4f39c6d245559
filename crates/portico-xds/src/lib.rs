//! Portico's control plane for Envoy fleets (CONTRACT §11): the translation of one compiled
//! config snapshot (the very `portico_config::snapshot::Snapshot` that `portico run` serves) to
//! Envoy v3 xDS resources, built from the `envoy-types` protos (never hand-written protobuf).
//!
//! [`translate`] is pure apart from reading the TLS files the config names (their contents go
//! into SDS secrets, so Envoys on other machines need no copies). Settings Envoy cannot express
//! are reported as [`Warning`]s naming the resource and field (`portico check --target envoy`).
//!
//! Modules: [`routes`] (RouteConfiguration, Portico's match order), [`cluster`] (Cluster and
//! ClusterLoadAssignment), [`listener`] (Listener with SNI filter chains, and Secret), [`server`]
//! (the ADS gRPC server, ACK/NACK tracking, `/xds` and metrics).
#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod cluster;
pub mod listener;
pub mod routes;
pub mod server;

use envoy_types::pb::google::protobuf::Any;
use portico_config::snapshot::{Snapshot, UpstreamConf};

/// Envoy v3 type URLs of the resources served over ADS.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    /// The make-before-break push order: clusters and endpoints (and secrets) before the
    /// listeners and routes that use them.
    pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE];
}

/// Something Envoy cannot express exactly; the translation used the closest behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The resource's name (Mapping, Upstream, Host or Listener).
    pub resource: String,
    /// The field, dotted (`spec.load_balancer.policy`).
    pub field: String,
    pub message: String,
}

/// Warnings collected during one translation.
#[derive(Debug, Default)]
pub struct Warnings(pub Vec<Warning>);

impl Warnings {
    pub fn push(&mut self, resource: &str, field: &str, message: &str) {
        self.0.push(Warning {
            resource: resource.to_string(),
            field: field.to_string(),
            message: message.to_string(),
        });
    }
}

/// One named xDS resource, packed.
#[derive(Debug, Clone, PartialEq)]
pub struct Named {
    pub name: String,
    pub resource: Any,
}

/// Every resource of one snapshot, by type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub listeners: Vec<Named>,
    pub routes: Vec<Named>,
    pub clusters: Vec<Named>,
    pub endpoints: Vec<Named>,
    pub secrets: Vec<Named>,
}

impl Resources {
    /// The resources of one type URL (empty for an unknown one).
    pub fn of_type(&self, type_url: &str) -> &[Named] {
        match type_url {
            type_url::LISTENER => &self.listeners,
            type_url::ROUTE => &self.routes,
            type_url::CLUSTER => &self.clusters,
            type_url::ENDPOINT => &self.endpoints,
            type_url::SECRET => &self.secrets,
            _ => &[],
        }
    }
}

/// The outcome of translating one snapshot.
#[derive(Debug, Default)]
pub struct Translation {
    pub resources: Resources,
    pub warnings: Vec<Warning>,
}

/// The Envoy cluster name of an upstream: its Portico name (unique in a snapshot).
pub fn cluster_name(u: &UpstreamConf) -> String {
    u.name.clone()
}

fn named<T: prost::Name + prost::Message>(name: String, msg: T) -> Named {
    Named {
        name,
        resource: envoy_types::util::pack_any(msg),
    }
}

/// Translates a snapshot to Envoy resources.
pub fn translate(snap: &Snapshot) -> Translation {
    let mut w = Warnings::default();
    let mut res = Resources::default();
    for u in &snap.upstreams {
        let (c, cla) = cluster::cluster(u, &mut w);
        if let Some(cla) = cla {
            res.endpoints.push(named(cla.cluster_name.clone(), cla));
        }
        res.clusters.push(named(c.name.clone(), c));
    }
    let rc = routes::route_configuration(snap, &mut w);
    res.routes.push(named(rc.name.clone(), rc));
    if let Some(r) = snap.routes.iter().find(|r| r.timeout.is_some()) {
        w.push(
            &r.name,
            "spec.timeout_ms",
            "Envoy sends x-envoy-expected-rq-timeout-ms, not x-portico-expected-timeout-ms",
        );
    }
    let secrets = listener::secrets(snap, &mut w);
    for l in &snap.listeners {
        let el = listener::listener(l, snap, &secrets, &mut w);
        res.listeners.push(named(el.name.clone(), el));
    }
    for s in secrets {
        res.secrets.push(named(s.name.clone(), s));
    }
    Translation {
        resources: res,
        warnings: w.0,
    }
}

/// Test helpers: a snapshot from YAML text, and unpacking of the produced resources.
#[cfg(test)]
pub(crate) mod test_util {
    use portico_config::{ConfigSource, Snapshot, load};

    /// Compiles `yaml` (relative files resolve against `dir`), panicking on errors.
    pub fn snap_in(yaml: &str, dir: &std::path::Path) -> Snapshot {
        let r = load(&[ConfigSource::Inline {
            name: "t.yaml".into(),
            text: yaml.into(),
            base_dir: dir.to_path_buf(),
        }]);
        let errs: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
        r.snapshot
            .unwrap_or_else(|| panic!("config rejected: {errs:?}"))
    }

    pub fn snap(yaml: &str) -> Snapshot {
        snap_in(yaml, &std::env::temp_dir())
    }

    pub fn unpack<T: prost::Message + Default>(n: &crate::Named) -> T {
        T::decode(n.resource.value.as_slice()).expect("decodes")
    }
}
