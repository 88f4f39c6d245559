//! Tests of the ADS server with a real gRPC client over h2c: first answer, ACK, push of a new
//! version in make-before-break order, NACK tracking, `/xds` JSON and metrics.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;

use super::{Published, XdsServer};
use crate::test_util::snap;
use crate::{translate, type_url};

const CONFIG: &str = "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: m }\nspec: { prefix: /, service: 127.0.0.1:9 }\n";

pub(crate) fn published(version: &str) -> Published {
    Published {
        version: version.to_string(),
        resources: translate(&snap(CONFIG)).resources,
    }
}

fn request(t: &str, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_string(),
        node: Some(Node {
            id: "envoy-1".into(),
            cluster: "edge".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: t.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

async fn next(s: &mut tonic::Streaming<DiscoveryResponse>) -> DiscoveryResponse {
    tokio::time::timeout(Duration::from_secs(20), s.message())
        .await
        .expect("a response within 20 s")
        .expect("stream ok")
        .expect("stream open")
}

pub(crate) async fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An ADS server on a free loopback port, stopped when dropped.
pub(crate) struct Running {
    pub(crate) xds: XdsServer,
    pub(crate) addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) async fn start(xds: XdsServer) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = xds.clone();
    tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stop_rx.await;
            })
            .await
    });
    Running {
        xds,
        addr,
        stop: Some(stop_tx),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_ack_push_nack() {
    let running = start(XdsServer::new(published("1"))).await;
    let (xds, addr) = (running.xds.clone(), running.addr);

    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let (req_tx, req_rx) = mpsc::channel::<DiscoveryRequest>(16);
    let mut inbound = client
        .stream_aggregated_resources(tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(
            req_rx,
        ))
        .await
        .expect("stream")
        .into_inner();

    // CDS (wildcard) and EDS (by name), as Envoy asks.
    req_tx
        .send(request(type_url::CLUSTER, "", "", &[]))
        .await
        .expect("send");
    let cds = next(&mut inbound).await;
    assert_eq!(
        (cds.type_url.as_str(), cds.version_info.as_str()),
        (type_url::CLUSTER, "1")
    );
    assert_eq!(cds.resources.len(), 1);
    req_tx
        .send(request(type_url::CLUSTER, "1", &cds.nonce, &[]))
        .await
        .expect("ack");
    req_tx
        .send(request(type_url::ENDPOINT, "", "", &["127.0.0.1:9"]))
        .await
        .expect("send");
    let eds = next(&mut inbound).await;
    assert_eq!(eds.type_url, type_url::ENDPOINT);
    assert_eq!(eds.resources.len(), 1);
    req_tx
        .send(request(
            type_url::ENDPOINT,
            "1",
            &eds.nonce,
            &["127.0.0.1:9"],
        ))
        .await
        .expect("ack");
    req_tx
        .send(request(type_url::LISTENER, "", "", &[]))
        .await
        .expect("send");
    let lds = next(&mut inbound).await;
    assert_eq!(lds.type_url, type_url::LISTENER);
    req_tx
        .send(request(type_url::LISTENER, "1", &lds.nonce, &[]))
        .await
        .expect("ack");

    wait_for(|| {
        let j = xds.nodes_json();
        j["nodes"][0]["resources"][type_url::LISTENER]["version_acked"] == "1"
    })
    .await;
    let j = xds.nodes_json();
    assert_eq!(j["nodes"][0]["id"], "envoy-1");
    assert_eq!(j["nodes"][0]["cluster"], "edge");
    assert_eq!(j["nodes"][0]["protocol"], "sotw");
    assert_eq!(
        j["nodes"][0]["resources"][type_url::CLUSTER]["version_acked"],
        "1"
    );
    assert_eq!(xds.connected_nodes(), 1);

    // A new version: clusters, then endpoints, then listeners (make-before-break).
    xds.publish(published("2"));
    let order: Vec<DiscoveryResponse> = vec![
        next(&mut inbound).await,
        next(&mut inbound).await,
        next(&mut inbound).await,
    ];
    let types: Vec<&str> = order.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER]
    );
    assert!(order.iter().all(|r| r.version_info == "2"));

    // NACK the listeners of version 2: recorded with Envoy's text, and not re-sent.
    let mut nack = request(type_url::LISTENER, "1", &order[2].nonce, &[]);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad listener".into(),
        details: Vec::new(),
    });
    req_tx.send(nack).await.expect("nack");
    wait_for(|| {
        !xds.nodes_json()["nodes"][0]["resources"][type_url::LISTENER]["last_nack"].is_null()
    })
    .await;
    let j = xds.nodes_json();
    let l = &j["nodes"][0]["resources"][type_url::LISTENER];
    assert_eq!(l["last_nack"]["version"], "2");
    assert_eq!(l["last_nack"]["error"], "bad listener");
    assert_eq!(l["version_acked"], "1");
    let m = xds.metrics_text();
    assert!(
        m.contains("portico_xds_nacks_total{type=\"listener\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portico_xds_pushes_total{type=\"cluster\"} 2"),
        "{m}"
    );
    assert!(m.contains("portico_xds_connected_nodes 1"), "{m}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), inbound.message())
            .await
            .is_err(),
        "a NACKed version is not re-sent"
    );

    // The node leaves: no longer listed.
    drop(req_tx);
    drop(inbound);
    wait_for(|| xds.connected_nodes() == 0).await;
}

#[test]
fn rfc3339_formats_utc() {
    let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_300_000);
    assert_eq!(super::rfc3339(t), "2026-12-03T12:13:20Z");
}
