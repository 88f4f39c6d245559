//! The Aggregated Discovery Service (`envoy.service.discovery.v3.AggregatedDiscoveryService`),
//! State-of-the-World and Delta, over gRPC on h2c: the server, publication, `GET /xds` and the
//! metrics.
//!
//! One [`XdsServer`] holds the published resources (a version plus every resource by type,
//! each with its own content version for Delta) in a `watch` channel. Each Envoy stream is one
//! task (`sotw` or `delta`): it answers the node's requests, records ACKs and NACKs per type
//! in the shared `state` (for `GET /xds` and the metrics), and on every new publication pushes
//! the types the node subscribed to in make-before-break order (clusters, endpoints, secrets,
//! then listeners and routes). A NACKed version is not re-sent; the next publication is.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream::Stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::common::type_url;
pub use crate::state::{Published, type_label};
use crate::state::{Served, Shared, TypeCounters};

/// The control plane's xDS side: publish snapshots, serve them, report on the nodes.
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer").finish_non_exhaustive()
    }
}

impl XdsServer {
    pub fn new(initial: Published) -> XdsServer {
        let (current, _) = watch::channel(Arc::new(Served::new(initial)));
        XdsServer {
            shared: Arc::new(Shared {
                current,
                nodes: Mutex::new(BTreeMap::new()),
                next_stream: AtomicU64::new(1),
                next_nonce: AtomicU64::new(1),
                pushes: TypeCounters::default(),
                nacks: TypeCounters::default(),
            }),
        }
    }

    /// Makes `p` the served version and pushes it to every connected node.
    pub fn publish(&self, p: Published) {
        self.shared.current.send_replace(Arc::new(Served::new(p)));
    }

    /// The Delta version of resource `name` of type `t` as served now.
    #[cfg(test)]
    pub(crate) fn resource_version(&self, t: &str, name: &str) -> Option<String> {
        let served = self.shared.current.borrow();
        served.get(t, name).map(|(_, v)| v.to_string())
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.shared.current.borrow().version().to_string()
    }

    /// The gRPC service, for a tonic server.
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(Ads {
            shared: self.shared.clone(),
        })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(64 << 20)
    }

    /// Serves ADS on `listener` (h2c) until `shutdown` resolves.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .serve_with_incoming_shutdown(
                self.service(),
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }

    /// `GET /xds`: `{version, nodes: [{id, cluster, protocol, connected_at, resources:
    /// {TYPE_URL: {version_sent, version_acked, nonce, last_nack}}}]}` (reference §11;
    /// `protocol` is `sotw` or `delta`).
    pub fn nodes_json(&self) -> Value {
        let nodes: Vec<Value> = self.shared.with_nodes(|n| {
            n.values()
                .map(|node| {
                    let resources: serde_json::Map<String, Value> = node
                        .types
                        .iter()
                        .map(|(t, st)| {
                            (
                                t.clone(),
                                json!({
                                    "version_sent": st.version_sent,
                                    "version_acked": st.version_acked,
                                    "nonce": st.nonce,
                                    "last_nack": st.last_nack.as_ref().map(|(v, e)| json!({"version": v, "error": e})),
                                }),
                            )
                        })
                        .collect();
                    json!({
                        "id": node.id,
                        "cluster": node.cluster,
                        "protocol": node.protocol.as_str(),
                        "connected_at": rfc3339(node.connected_at),
                        "resources": resources,
                    })
                })
                .collect()
        });
        json!({ "version": self.version(), "nodes": nodes })
    }

    /// Connected streams (nodes) right now.
    pub fn connected_nodes(&self) -> usize {
        self.shared.with_nodes(|n| n.len())
    }

    /// Prometheus text of `portico_xds_connected_nodes`, `portico_xds_pushes_total{type}`
    /// and `portico_xds_nacks_total{type}`.
    pub fn metrics_text(&self) -> String {
        let mut s = String::new();
        s.push_str("# TYPE portico_xds_connected_nodes gauge\n");
        s.push_str(&format!(
            "portico_xds_connected_nodes {}\n",
            self.connected_nodes()
        ));
        for (name, c) in [
            ("portico_xds_pushes_total", &self.shared.pushes),
            ("portico_xds_nacks_total", &self.shared.nacks),
        ] {
            s.push_str(&format!("# TYPE {name} counter\n"));
            for (i, t) in type_url::PUSH_ORDER.iter().enumerate() {
                s.push_str(&format!(
                    "{name}{{type=\"{}\"}} {}\n",
                    type_label(t),
                    c.get(i)
                ));
            }
        }
        s
    }
}

/// `SystemTime` as RFC 3339 UTC with seconds.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The tonic service; one per server, shared by all streams.
pub struct Ads {
    shared: Arc<Shared>,
}

type RespStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = RespStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = RespStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (shared, stream_id) = self.open();
        tokio::spawn(async move {
            crate::sotw::run_stream(shared.clone(), stream_id, inbound, tx).await;
            shared.with_nodes(|n| n.remove(&stream_id));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let (shared, stream_id) = self.open();
        tokio::spawn(async move {
            crate::delta::run_stream(shared.clone(), stream_id, inbound, tx).await;
            shared.with_nodes(|n| n.remove(&stream_id));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Ads {
    /// A new stream's id (the node is listed at its first request).
    fn open(&self) -> (Arc<Shared>, u64) {
        let id = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        (self.shared.clone(), id)
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
pub(crate) mod tests;
