//! Tests of Delta ADS with a real gRPC client over h2c: wildcard and named subscriptions,
//! only changed resources sent, removals after the listeners and routes that stopped using
//! them, ACK/NACK at `/xds`, a NACKed resource sent again, and a reconnect that says what it
//! has.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;

use crate::server::tests::{start, wait_for};
use crate::server::{Published, XdsServer};
use crate::test_util::snap;
use crate::{translate, type_url};

fn mapping(name: &str, prefix: &str, port: u16) -> String {
    format!(
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: {prefix}, service: 127.0.0.1:{port} }}\n"
    )
}

fn published(version: &str, docs: &str) -> Published {
    Published {
        version: version.to_string(),
        resources: translate(&snap(docs)).resources,
    }
}

struct Client {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr) -> Client {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(
                tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx),
            )
            .await
            .expect("stream")
            .into_inner();
        Client { tx, rx }
    }

    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.expect("send");
    }

    async fn subscribe(&self, t: &str, names: &[&str]) {
        self.send(req(t, names, "")).await;
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(req(&r.type_url, &[], &r.nonce)).await;
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(20), self.rx.message())
            .await
            .expect("a response within 20 s")
            .expect("stream ok")
            .expect("stream open")
    }

    /// Receives and ACKs one response.
    async fn next_acked(&mut self) -> DeltaDiscoveryResponse {
        let r = self.next().await;
        self.ack(&r).await;
        r
    }

    async fn quiet(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.rx.message())
            .await
            .is_err()
    }
}

fn req(t: &str, names: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "delta-1".into(),
            cluster: "edge".into(),
            ..Default::default()
        }),
        type_url: t.to_string(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_subscribe_push_remove_nack_reconnect() {
    let one = mapping("m", "/", 9);
    let running = start(XdsServer::new(published("1", &one))).await;
    let xds = running.xds.clone();
    let mut c = Client::connect(running.addr).await;

    // CDS as legacy wildcard (no names), EDS by name, LDS as explicit wildcard, RDS by name.
    c.subscribe(type_url::CLUSTER, &[]).await;
    let cds = c.next_acked().await;
    assert_eq!(
        (cds.type_url.as_str(), cds.system_version_info.as_str()),
        (type_url::CLUSTER, "1")
    );
    assert_eq!(names(&cds), ["127.0.0.1:9"]);
    assert!(!cds.resources[0].version.is_empty());
    c.subscribe(type_url::ENDPOINT, &["127.0.0.1:9"]).await;
    assert_eq!(names(&c.next_acked().await), ["127.0.0.1:9"]);
    c.subscribe(type_url::LISTENER, &["*"]).await;
    assert_eq!(c.next_acked().await.resources.len(), 1);
    c.subscribe(type_url::ROUTE, &["portico"]).await;
    assert_eq!(names(&c.next_acked().await), ["portico"]);
    wait_for(|| xds.nodes_json()["nodes"][0]["resources"][type_url::ROUTE]["version_acked"] == "1")
        .await;
    let j = xds.nodes_json();
    assert_eq!(j["nodes"][0]["id"], "delta-1");
    assert_eq!(j["nodes"][0]["protocol"], "delta");
    for t in [type_url::CLUSTER, type_url::ENDPOINT, type_url::LISTENER] {
        assert_eq!(j["nodes"][0]["resources"][t]["version_acked"], "1", "{j}");
    }

    // A second Mapping: only the new cluster and the changed route are sent; the unchanged
    // types get an empty response at the new version. Order: make-before-break.
    let two = format!("{one}{}", mapping("m2", "/two/", 10));
    xds.publish(published("2", &two));
    let got: Vec<DeltaDiscoveryResponse> = vec![
        c.next_acked().await,
        c.next_acked().await,
        c.next_acked().await,
        c.next_acked().await,
    ];
    let types: Vec<&str> = got.iter().map(|r| r.type_url.as_str()).collect();
    assert_eq!(
        types,
        [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::LISTENER,
            type_url::ROUTE
        ]
    );
    assert!(got.iter().all(|r| r.system_version_info == "2"));
    assert_eq!(names(&got[0]), ["127.0.0.1:10"]);
    assert!(got[1].resources.is_empty() && got[2].resources.is_empty());
    assert_eq!(names(&got[3]), ["portico"]);
    assert!(got.iter().all(|r| r.removed_resources.is_empty()));
    c.subscribe(type_url::ENDPOINT, &["127.0.0.1:10"]).await;
    assert_eq!(names(&c.next_acked().await), ["127.0.0.1:10"]);

    // The first Mapping goes: the route changes first, then its endpoints and cluster are
    // removed (after the route that used them).
    let three = mapping("m2", "/two/", 10);
    xds.publish(published("3", &three));
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(c.next().await);
    }
    let seq: Vec<(&str, usize, Vec<&str>)> = got
        .iter()
        .map(|r| {
            (
                r.type_url.as_str(),
                r.resources.len(),
                r.removed_resources.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        seq,
        [
            (type_url::CLUSTER, 0, vec![]),
            (type_url::ENDPOINT, 0, vec![]),
            (type_url::LISTENER, 0, vec![]),
            (type_url::ROUTE, 1, vec![]),
            (type_url::ENDPOINT, 0, vec!["127.0.0.1:9"]),
            (type_url::CLUSTER, 0, vec!["127.0.0.1:9"]),
        ]
    );
    for r in &got {
        if r.type_url != type_url::ROUTE {
            c.ack(r).await;
        }
    }
    // The route of version 3 is NACKed: recorded with Envoy's text, not re-sent...
    let mut nack = req(type_url::ROUTE, &[], &got[3].nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad route".into(),
        details: Vec::new(),
    });
    c.send(nack).await;
    wait_for(|| !xds.nodes_json()["nodes"][0]["resources"][type_url::ROUTE]["last_nack"].is_null())
        .await;
    let j = xds.nodes_json();
    let r = &j["nodes"][0]["resources"][type_url::ROUTE];
    assert_eq!(r["last_nack"]["version"], "3", "{j}");
    assert_eq!(r["last_nack"]["error"], "bad route");
    assert_eq!(r["version_acked"], "2");
    assert!(
        xds.metrics_text()
            .contains("portico_xds_nacks_total{type=\"route\"} 1")
    );
    assert!(c.quiet().await, "a NACKed response is not re-sent");
    // ... and sent again with the next publication even though it did not change.
    xds.publish(published("4", &three));
    let mut route = None;
    for _ in 0..4 {
        let r = c.next_acked().await;
        if r.type_url == type_url::ROUTE {
            route = Some(r);
        } else {
            assert!(r.resources.is_empty(), "{:?} unchanged", r.type_url);
        }
    }
    assert_eq!(names(&route.expect("a route response")), ["portico"]);
    assert!(c.quiet().await);

    // Unsubscribing is not answered; the name is no longer pushed.
    let mut unsub = req(type_url::ENDPOINT, &[], "");
    unsub.resource_names_unsubscribe = vec!["127.0.0.1:10".into()];
    c.send(unsub).await;
    assert!(c.quiet().await);

    // A reconnecting client says what it has: only what differs is sent, and what no longer
    // exists is removed.
    drop(c);
    let mut c2 = Client::connect(running.addr).await;
    let mut first = req(type_url::CLUSTER, &["*"], "");
    let has = xds
        .resource_version(type_url::CLUSTER, "127.0.0.1:10")
        .expect("cluster");
    first.initial_resource_versions = HashMap::from([
        ("127.0.0.1:10".to_string(), has),
        ("gone".to_string(), "x".to_string()),
    ]);
    c2.send(first).await;
    let r = c2.next().await;
    assert!(
        r.resources.is_empty(),
        "unchanged cluster not re-sent: {r:?}"
    );
    assert_eq!(r.removed_resources, ["gone"]);
    wait_for(|| xds.connected_nodes() == 1).await;
}
