//! The Aggregated Discovery Service (`envoy.service.discovery.v3.AggregatedDiscoveryService`),
//! State-of-the-World, over gRPC on h2c.
//!
//! One [`XdsServer`] holds the published resources (a version plus every resource by type) in a
//! `watch` channel. Each Envoy stream is one task: it answers the node's requests, records
//! ACKs and NACKs per type (for `GET /xds` and the metrics), and on every new publication
//! pushes the types the node subscribed to in make-before-break order (clusters, endpoints,
//! secrets, then listeners and routes). A NACKed version is not re-sent; the next publication
//! is. Delta xDS is answered `UNIMPLEMENTED` for now (Envoy then needs a SotW bootstrap, which
//! `portico bootstrap` prints).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
use tonic::{Request, Response, Status, Streaming};

use crate::common::{Resources, type_url};

/// What is served: one config generation, translated.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The config generation, or with a git source the commit's full hash.
    pub version: String,
    pub resources: Resources,
}

/// One type's state on one stream.
#[derive(Debug, Clone, Default)]
struct TypeState {
    /// Names the node asked for (empty: all).
    names: Vec<String>,
    version_sent: Option<String>,
    nonce: String,
    version_acked: Option<String>,
    /// `(version, error)` of the last NACK.
    last_nack: Option<(String, String)>,
}

/// One connected stream (an Envoy node).
#[derive(Debug, Clone)]
struct NodeState {
    id: String,
    cluster: String,
    connected_at: SystemTime,
    types: BTreeMap<String, TypeState>,
}

/// Counters per type URL, in [`type_url::PUSH_ORDER`].
#[derive(Debug, Default)]
struct TypeCounters([AtomicU64; 5]);

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

fn type_index(t: &str) -> Option<usize> {
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

struct Shared {
    current: watch::Sender<Arc<Published>>,
    nodes: Mutex<BTreeMap<u64, NodeState>>,
    next_stream: AtomicU64,
    next_nonce: AtomicU64,
    pushes: TypeCounters,
    nacks: TypeCounters,
}

impl Shared {
    fn with_nodes<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, NodeState>) -> R) -> R {
        f(&mut self.nodes.lock().unwrap_or_else(PoisonError::into_inner))
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
        let (current, _) = watch::channel(Arc::new(initial));
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
        self.shared.current.send_replace(Arc::new(p));
    }

    /// The version being served.
    pub fn version(&self) -> String {
        self.shared.current.borrow().version.clone()
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

    /// `GET /xds`: `{version, nodes: [{id, cluster, connected_at, resources: {TYPE_URL:
    /// {version_acked, nonce, last_nack}}}]}` (reference §11).
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
        let shared = self.shared.clone();
        let stream_id = shared.next_stream.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            run_stream(shared.clone(), stream_id, inbound, tx).await;
            shared.with_nodes(|n| n.remove(&stream_id));
        });
        Ok(Response::new(Box::pin(
            tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "Portico serves State-of-the-World ADS; use the bootstrap `portico bootstrap` prints",
        ))
    }
}

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// One Envoy's stream: requests in, responses out, until either side ends.
async fn run_stream(
    shared: Arc<Shared>,
    stream_id: u64,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Tx,
) {
    let mut current = shared.current.subscribe();
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    // Not marked seen: a publication racing this request is still pushed
                    // (every subscribed type) by the branch below.
                    let published = current.borrow().clone();
                    if !on_request(&shared, stream_id, req, &published, &tx).await {
                        return;
                    }
                }
                Ok(None) | Err(_) => return,
            },
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
                let published = current.borrow_and_update().clone();
                // Types subscribed to and not already sent at this version.
                let subscribed: Vec<String> = shared.with_nodes(|n| {
                    n.get(&stream_id)
                        .map(|node| {
                            node.types
                                .iter()
                                .filter(|(_, st)| st.version_sent.as_deref() != Some(published.version.as_str()))
                                .map(|(t, _)| t.clone())
                                .collect()
                        })
                        .unwrap_or_default()
                });
                for t in type_url::PUSH_ORDER {
                    if subscribed.iter().any(|s| s == t)
                        && !send(&shared, stream_id, t, &published, &tx).await
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Handles one request; false when the stream is gone.
async fn on_request(
    shared: &Shared,
    stream_id: u64,
    req: DiscoveryRequest,
    published: &Published,
    tx: &Tx,
) -> bool {
    let t = req.type_url.clone();
    let should_send = shared.with_nodes(|nodes| {
        let node = nodes.entry(stream_id).or_insert_with(|| NodeState {
            id: String::new(),
            cluster: String::new(),
            connected_at: SystemTime::now(),
            types: BTreeMap::new(),
        });
        if let Some(n) = &req.node {
            if node.id.is_empty() {
                node.id.clone_from(&n.id);
            }
            if node.cluster.is_empty() {
                node.cluster.clone_from(&n.cluster);
            }
        }
        let st = node.types.entry(t.clone()).or_default();
        let names_changed = st.names != req.resource_names;
        st.names.clone_from(&req.resource_names);
        if !req.response_nonce.is_empty() {
            if req.response_nonce != st.nonce {
                // An answer to an older response: a newer one is on its way.
                return names_changed;
            }
            match &req.error_detail {
                Some(err) => {
                    shared.nacks.inc(&t);
                    st.last_nack = Some((
                        st.version_sent.clone().unwrap_or_default(),
                        err.message.clone(),
                    ));
                    tracing::warn!(
                        node = %node.id,
                        r#type = type_label(&t),
                        version = st.version_sent.as_deref().unwrap_or(""),
                        error = %err.message,
                        "xDS NACK"
                    );
                    return names_changed;
                }
                None => st.version_acked = Some(req.version_info.clone()),
            }
        }
        names_changed
            || req.response_nonce.is_empty()
            || st.version_sent.as_deref() != Some(published.version.as_str())
    });
    if !should_send {
        return true;
    }
    send(shared, stream_id, &t, published, tx).await
}

/// Sends type `t` at the published version; false when the stream is gone.
async fn send(shared: &Shared, stream_id: u64, t: &str, published: &Published, tx: &Tx) -> bool {
    let nonce = shared
        .next_nonce
        .fetch_add(1, Ordering::Relaxed)
        .to_string();
    let Some(names) = shared.with_nodes(|nodes| {
        let st = nodes.get_mut(&stream_id)?.types.get_mut(t)?;
        st.nonce.clone_from(&nonce);
        st.version_sent = Some(published.version.clone());
        Some(st.names.clone())
    }) else {
        return true;
    };
    let resources = published
        .resources
        .of_type(t)
        .iter()
        .filter(|r| names.is_empty() || names.contains(&r.name))
        .map(|r| r.resource.clone())
        .collect();
    shared.pushes.inc(t);
    tx.send(Ok(DiscoveryResponse {
        version_info: published.version.clone(),
        resources,
        type_url: t.to_string(),
        nonce,
        ..Default::default()
    }))
    .await
    .is_ok()
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
