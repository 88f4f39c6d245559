//! The Aggregated Discovery Service (`envoy.service.discovery.v3.AggregatedDiscoveryService`),
//! State-of-the-World and Delta, over gRPC on h2c: what both protocols share.
//!
//! One [`XdsServer`] holds the published resources (a version plus every resource by type,
//! each with its own content version for Delta) in a `watch` channel. Each Envoy stream is one
//! task ([`crate::sotw`] or [`crate::delta`]): it answers the node's requests, records ACKs and
//! NACKs per type here (for `GET /xds` and the metrics), and on every new publication pushes
//! the types the node subscribed to in make-before-break order (clusters, endpoints, secrets,
//! then listeners and routes). A NACKed version is not re-sent; the next publication is.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::Node;
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

use crate::common::{Named, Resources, type_url};

/// What is served: one config generation, translated.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The config generation, or with a git source the commit's full hash.
    pub version: String,
    pub resources: Resources,
}

/// A publication as served: the resources, and for Delta each one's content version and an
/// index by name.
#[derive(Debug, Default)]
pub(crate) struct Served {
    pub(crate) published: Published,
    /// Per type (in [`type_url::PUSH_ORDER`]): resource name -> (index in
    /// `published.resources.of_type`, content version).
    versions: [HashMap<String, (usize, String)>; 5],
}

impl Served {
    fn new(published: Published) -> Served {
        let mut versions: [HashMap<String, (usize, String)>; 5] = Default::default();
        for (i, t) in type_url::PUSH_ORDER.iter().enumerate() {
            versions[i] = published
                .resources
                .of_type(t)
                .iter()
                .enumerate()
                .map(|(at, n)| (n.name.clone(), (at, content_version(n))))
                .collect();
        }
        Served {
            published,
            versions,
        }
    }

    pub(crate) fn version(&self) -> &str {
        &self.published.version
    }

    /// The resources of type `t` with their content versions (empty for an unknown type).
    pub(crate) fn of_type(&self, t: &str) -> &[Named] {
        self.published.resources.of_type(t)
    }

    /// Resource `name` of type `t` and its content version.
    pub(crate) fn get(&self, t: &str, name: &str) -> Option<(&Named, &str)> {
        let (at, v) = self.versions[type_index(t)?].get(name)?;
        Some((self.of_type(t).get(*at)?, v.as_str()))
    }
}

/// A resource's Delta version: a hash of its serialized form, so an unchanged resource keeps
/// its version across publications and across restarts of the control plane (an Envoy that
/// reconnects with the versions it has is sent only what changed).
fn content_version(n: &Named) -> String {
    let mut h = DefaultHasher::new();
    h.write(n.resource.type_url.as_bytes());
    h.write(&n.resource.value);
    format!("{:016x}", h.finish())
}

/// One type's state on one stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct TypeState {
    /// State-of-the-World: names the node asked for (empty: all).
    pub(crate) names: Vec<String>,
    pub(crate) version_sent: Option<String>,
    pub(crate) nonce: String,
    pub(crate) version_acked: Option<String>,
    /// `(version, error)` of the last NACK.
    pub(crate) last_nack: Option<(String, String)>,
}

/// Which xDS protocol a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Sotw,
    Delta,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Sotw => "sotw",
            Protocol::Delta => "delta",
        }
    }
}

/// One connected stream (an Envoy node).
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    id: String,
    cluster: String,
    protocol: Protocol,
    connected_at: SystemTime,
    pub(crate) types: BTreeMap<String, TypeState>,
}

/// What an answer to a response (by its nonce) was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// No nonce: not an answer.
    None,
    /// The answer to an older response: a newer one is on its way.
    Stale,
    Ack,
    Nack,
}

/// Counters per type URL, in [`type_url::PUSH_ORDER`].
#[derive(Debug, Default)]
pub(crate) struct TypeCounters([AtomicU64; 5]);

impl TypeCounters {
    fn inc(&self, t: &str) {
        if let Some(i) = type_index(t) {
            self.0[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    fn get(&self, i: usize) -> u64 {
        self.0[i].load(Ordering::Relaxed)
    }
}

pub(crate) fn type_index(t: &str) -> Option<usize> {
    type_url::PUSH_ORDER.iter().position(|u| *u == t)
}

/// The short name of a type URL, for metric labels (`cluster`, `listener`, ...).
pub fn type_label(t: &str) -> &'static str {
    match t {
        type_url::LISTENER => "listener",
        type_url::ROUTE => "route",
        type_url::CLUSTER => "cluster",
        type_url::ENDPOINT => "endpoint",
        type_url::SECRET => "secret",
        _ => "other",
    }
}

pub(crate) struct Shared {
    pub(crate) current: watch::Sender<Arc<Served>>,
    nodes: Mutex<BTreeMap<u64, NodeState>>,
    next_stream: AtomicU64,
    next_nonce: AtomicU64,
    pub(crate) pushes: TypeCounters,
    nacks: TypeCounters,
}

impl Shared {
    pub(crate) fn with_nodes<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, NodeState>) -> R) -> R {
        f(&mut self.nodes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh nonce.
    pub(crate) fn nonce(&self) -> String {
        self.next_nonce.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// The node of `stream_id`, listed at its first request (with the id and cluster it sends).
    pub(crate) fn node_entry<'a>(
        nodes: &'a mut BTreeMap<u64, NodeState>,
        stream_id: u64,
        node: Option<&Node>,
        protocol: Protocol,
    ) -> &'a mut NodeState {
        let state = nodes.entry(stream_id).or_insert_with(|| NodeState {
            id: String::new(),
            cluster: String::new(),
            protocol,
            connected_at: SystemTime::now(),
            types: BTreeMap::new(),
        });
        if let Some(n) = node {
            if state.id.is_empty() {
                state.id.clone_from(&n.id);
            }
            if state.cluster.is_empty() {
                state.cluster.clone_from(&n.cluster);
            }
        }
        state
    }

    /// Records the answer (ACK or NACK, by nonce) a node gave to a response of type `t`.
    /// An ACK records the version sent with that nonce; a NACK records it with Envoy's text.
    pub(crate) fn record_answer(
        &self,
        node: &mut NodeState,
        t: &str,
        nonce: &str,
        error: Option<&str>,
    ) -> Answer {
        if nonce.is_empty() {
            return Answer::None;
        }
        let id = node.id.clone();
        let st = node.types.entry(t.to_string()).or_default();
        if nonce != st.nonce {
            return Answer::Stale;
        }
        match error {
            Some(e) => {
                self.nacks.inc(t);
                st.last_nack = Some((st.version_sent.clone().unwrap_or_default(), e.to_string()));
                tracing::warn!(
                    node = %id,
                    r#type = type_label(t),
                    version = st.version_sent.as_deref().unwrap_or(""),
                    error = %e,
                    "xDS NACK"
                );
                Answer::Nack
            }
            None => {
                st.version_acked.clone_from(&st.version_sent);
                Answer::Ack
            }
        }
    }

    /// Notes that type `t` goes to `stream_id` at `version` with `nonce`, and counts the push.
    /// False when the stream is no longer listed.
    pub(crate) fn note_sent(&self, stream_id: u64, t: &str, version: &str, nonce: &str) -> bool {
        let listed = self.with_nodes(|nodes| {
            let Some(st) = nodes
                .get_mut(&stream_id)
                .map(|n| n.types.entry(t.to_string()).or_default())
            else {
                return false;
            };
            st.nonce = nonce.to_string();
            st.version_sent = Some(version.to_string());
            true
        });
        if listed {
            self.pushes.inc(t);
        }
        listed
    }
}

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
