//! What the translation modules and the server share: type URLs, the packed resource set,
//! warnings, cluster naming and the duration conversion. Kept apart from `lib.rs` so no module
//! imports the crate root that declares it.

use std::time::Duration as StdDuration;

use envoy_types::pb::google::protobuf::{Any, Duration};
use portico_config::snapshot::UpstreamConf;

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

pub(crate) fn named<T: prost::Name + prost::Message>(name: String, msg: T) -> Named {
    Named {
        name,
        resource: envoy_types::util::pack_any(msg),
    }
}

/// A std duration as a protobuf one (saturating).
pub(crate) fn duration(d: StdDuration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}
