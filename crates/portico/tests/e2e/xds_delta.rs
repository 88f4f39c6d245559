//! Delta (incremental) xDS with the real Envoy (reference §11): an Envoy on the bootstrap of
//! `portico bootstrap --delta` serves the config, picks up an added Mapping, drops a removed
//! one (its cluster goes from Envoy: `removed_resources`; the route 404s), reports a NACK that
//! shows at `/xds`, and keeps serving across a restart of `portico xds`. Plus the scale check:
//! 1,000 Mappings, 10 ADS streams of a test client (SotW and Delta) and one real Envoy get a
//! change within seconds, with the control plane under 100 MB RSS. Needs `ENVOY_BIN`
//! (scripts/fetch-envoy.sh; scripts/test.sh sets it); without it the tests say SKIPPED loudly.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::envoy::*;
use crate::common::*;

fn mapping(name: &str, prefix: &str, up: &Upstream) -> String {
    format!(
        "---\n{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: \"{prefix}\", service: {} }}\n",
        up.addr
    )
}

/// Envoy's admin `/clusters` (text).
async fn envoy_clusters(admin: u16) -> String {
    http_get(&format!("http://127.0.0.1:{admin}/clusters"), &[])
        .await
        .map(|r| r.text())
        .unwrap_or_default()
}

fn acked(nodes: &serde_json::Value, type_name: &str) -> serde_json::Value {
    nodes["nodes"][0]["resources"]
        .as_object()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.ends_with(&format!(".{type_name}")))
        })
        .map(|(_, st)| st["version_acked"].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[tokio::test]
async fn envoy_on_delta_gets_additions_removals_and_nacks_show() {
    let Some(envoy) = need_envoy("envoy_on_delta_gets_additions_removals_and_nacks_show") else {
        return;
    };
    let (a, b, c) = (echo("a").await, echo("b").await, echo("c").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    let base = format!("{}{}", cfg::listener(envoy_port), mapping("a", "/a/", &a));
    std::fs::write(&config, format!("{base}{}", mapping("gone", "/gone/", &c))).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let proxy = start_envoy_with(&envoy, dir.path(), &xds, &["--delta"]).await;
    let at = |path: &str| format!("http://127.0.0.1:{envoy_port}{path}");
    poll_for(
        Duration::from_secs(30),
        "envoy serving over Delta xDS",
        async || {
            let r = http_get(&at("/gone/x"), &[]).await.ok()?;
            (r.header("x-upstream") == Some("c")).then_some(())
        },
    )
    .await;
    assert_eq!(get(&at("/a/x"), &[]).await.header("x-upstream"), Some("a"));
    let c_cluster = format!("{}::", c.addr);
    assert!(envoy_clusters(proxy.admin).await.contains(&c_cluster));
    wait_until(
        Duration::from_secs(10),
        "version 1 ACKed over Delta",
        async || {
            let n = xds.nodes().await;
            [
                "Listener",
                "RouteConfiguration",
                "Cluster",
                "ClusterLoadAssignment",
            ]
            .iter()
            .all(|t| acked(&n, t) == "1")
        },
    )
    .await;
    let nodes = xds.nodes().await;
    assert_eq!(nodes["nodes"][0]["protocol"], "delta", "{nodes}");
    assert_eq!(nodes["nodes"][0]["id"], "e2e-envoy", "{nodes}");

    // Add a Mapping, remove one: the new route serves, the removed one 404s, and its cluster
    // is gone from Envoy (sent as removed_resources).
    let started = Instant::now();
    std::fs::write(&config, format!("{base}{}", mapping("new", "/new/", &b))).expect("config");
    poll_for(
        Duration::from_secs(10),
        "the new route in Envoy's traffic",
        async || {
            let r = http_get(&at("/new/x"), &[]).await.ok()?;
            (r.header("x-upstream") == Some("b")).then_some(())
        },
    )
    .await;
    let seen = started.elapsed();
    eprintln!("Delta: config change reached Envoy in {seen:?}");
    assert!(seen <= Duration::from_secs(5), "took {seen:?}");
    wait_until(
        Duration::from_secs(10),
        "the removed route 404s",
        async || {
            http_get(&at("/gone/x"), &[])
                .await
                .is_ok_and(|r| r.status == StatusCode::NOT_FOUND)
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the removed Mapping's cluster leaves Envoy",
        async || !envoy_clusters(proxy.admin).await.contains(&c_cluster),
    )
    .await;
    assert_eq!(get(&at("/a/x"), &[]).await.header("x-upstream"), Some("a"));

    // A route Portico accepts and Envoy rejects (RE2's program size limit): a NACK at /xds
    // with Envoy's text; Envoy keeps the last good routes.
    std::fs::write(
        &config,
        format!(
            "{base}{}{}",
            mapping("new", "/new/", &b),
            format_args!(
                "---\n{API}\nkind: Mapping\nmetadata: {{ name: huge }}\nspec: {{ prefix: \"/huge/[a-z]{{1,300}}\", prefix_regex: true, service: {} }}\n",
                b.addr
            )
        ),
    )
    .expect("config");
    let nack = poll_for(Duration::from_secs(15), "a NACK at /xds", async || {
        let n = xds.nodes().await;
        let st = n["nodes"][0]["resources"]
            ["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"]
            .clone();
        (!st["last_nack"].is_null()).then(|| (n["version"].clone(), st))
    })
    .await;
    let (version, route) = nack;
    assert_eq!(route["last_nack"]["version"], version, "{route}");
    assert_ne!(route["version_acked"], version, "{route}");
    assert!(
        !route["last_nack"]["error"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{route}"
    );
    let metrics = get(&xds.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("portico_xds_nacks_total{type=\"route\"} ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert_eq!(
        get(&at("/new/x"), &[]).await.header("x-upstream"),
        Some("b")
    );

    // A config Portico rejects (a Mapping without a service) is never sent: the reload fails,
    // the served version stays, and no push happens.
    let pushes = |m: &str| -> f64 {
        m.lines()
            .filter_map(|l| l.strip_prefix("portico_xds_pushes_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let before = pushes(&get(&xds.admin_url("/metrics"), &[]).await.text());
    let served = xds.nodes().await["version"].clone();
    let bad = format!(
        "{base}---\n{API}\nkind: Mapping\nmetadata: {{ name: broken }}\nspec: {{ prefix: /broken/ }}\n"
    );
    std::fs::write(&config, bad).expect("config");
    let r = post(&xds.admin_url("/reload"), "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(xds.nodes().await["version"], served);
    let after = pushes(&get(&xds.admin_url("/metrics"), &[]).await.text());
    assert_eq!(before, after, "a rejected config was pushed");
    assert_eq!(
        get(&at("/new/x"), &[]).await.header("x-upstream"),
        Some("b")
    );
}

/// An Envoy on Delta xDS keeps its config while `portico xds` is away, and resyncs (saying
/// which resource versions it has) when it is back: no request fails meanwhile.
#[tokio::test]
async fn envoy_on_delta_keeps_serving_while_portico_xds_restarts() {
    let Some(envoy) = need_envoy("envoy_on_delta_keeps_serving_while_portico_xds_restarts") else {
        return;
    };
    let a = echo("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    std::fs::write(
        &config,
        format!("{}{}", cfg::listener(envoy_port), mapping("a", "/", &a)),
    )
    .expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let (grpc, admin) = (xds.grpc, xds.admin);
    let _envoy = start_envoy_with(&envoy, dir.path(), &xds, &["--delta"]).await;
    let url = format!("http://127.0.0.1:{envoy_port}/x");
    poll_for(Duration::from_secs(30), "envoy serving", async || {
        let r = http_get(&url, &[]).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;

    let traffic = GetLoop::start(&url);
    drop(xds);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let xds = Xds::start_on(dir.path(), &config, grpc, admin).await;
    wait_until(
        Duration::from_secs(40),
        "envoy resyncs over Delta with the restarted portico xds",
        async || {
            let n = xds.nodes().await;
            n["nodes"][0]["protocol"] == "delta" && acked(&n, "Listener") == "1"
        },
    )
    .await;
    let (ok, failed) = traffic.stop().await;
    eprintln!(
        "Delta, during the control plane's restart: {ok} requests ok, {} failed",
        failed.len()
    );
    assert!(ok > 20, "too little traffic to tell: {ok}");
    assert!(
        failed.is_empty(),
        "requests failed while portico xds restarted: {failed:?}"
    );
}

/// HTTPS over Delta: the Host's certificate reaches Envoy by SDS (a named Delta subscription),
/// and a renewed certificate file is pushed as a new secret version that Envoy serves.
/// (Multi-threaded: curl blocks its worker while the in-process upstream answers on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_on_delta_gets_certificates_over_sds() {
    let Some(envoy) = need_envoy("envoy_on_delta_gets_certificates_over_sds") else {
        return;
    };
    use crate::tls::{Pki, curl, host_doc};
    let pki = Pki::new();
    let first = pki.leaf("a", "a.test", &["a.test"], false);
    let up = echo("u").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_port = free_port();
    let config = dir.path().join("portico.yaml");
    let docs = [
        listener_doc("tls", tls_port, "HTTPS", ""),
        host_doc("a", "a.test", &first, "", ""),
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: {} }}\n",
            up.addr
        ),
    ]
    .join("---\n");
    std::fs::write(&config, &docs).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy_with(&envoy, dir.path(), &xds, &["--delta"]).await;
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("path");
    let resolve = format!("a.test:{tls_port}:127.0.0.1");
    let url = format!("https://a.test:{tls_port}/hello");
    let fetch = || {
        curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca,
            "-w",
            "\n%{response_code}\n%{certs}",
            &url,
        ])
    };
    let serving = eventually(Duration::from_secs(30), async || {
        let (ok, out, _) = fetch();
        ok && out.starts_with("upstream u\n200\n")
    })
    .await;
    if !serving {
        let (_, out, err) = fetch();
        panic!(
            "envoy not serving HTTPS over Delta: {out} {err}\n/xds: {}\nenvoy: {}",
            xds.nodes().await,
            envoy_log(dir.path())
        );
    }
    let nodes = xds.nodes().await;
    assert_eq!(nodes["nodes"][0]["protocol"], "delta", "{nodes}");
    assert_eq!(acked(&nodes, "Secret"), "1", "{nodes}");

    // The certificate is renewed in place (same files, new serial): a new secret version.
    let (_, before, _) = fetch();
    pki.leaf("a", "a.test", &["a.test"], false);
    std::fs::write(&config, format!("{docs}\n")).expect("touch config");
    wait_until(
        Duration::from_secs(15),
        "the renewed certificate served by Envoy",
        async || {
            let (ok, out, _) = fetch();
            ok && out.starts_with("upstream u\n200\n") && out != before
        },
    )
    .await;
}

/// The test client of the scale check: one ADS stream (State-of-the-World or Delta) that
/// subscribes to clusters, endpoints and listeners (all) and the route configuration, ACKs
/// every response, and notes when each (type, version) arrived.
mod client {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    use tokio::sync::mpsc;
    use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

    pub const TYPES: [&str; 4] = [
        "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "type.googleapis.com/envoy.config.listener.v3.Listener",
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
    ];

    /// `(type, version, when)` of every response, in arrival order.
    pub type Arrivals = Arc<Mutex<Vec<(String, String, Instant)>>>;

    fn node(id: &str) -> Option<Node> {
        Some(Node {
            id: id.to_string(),
            cluster: "scale".into(),
            ..Default::default()
        })
    }

    fn names(t: &str) -> Vec<String> {
        if t.ends_with("RouteConfiguration") {
            vec!["portico".into()]
        } else {
            Vec::new()
        }
    }

    fn note(arrivals: &Arrivals, t: &str, v: &str) {
        arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((t.to_string(), v.to_string(), Instant::now()));
    }

    /// Opens a stream as node `id`; the task runs until the server ends it.
    pub async fn open(addr: &str, id: &str, delta: bool, arrivals: Arrivals) {
        let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20);
        let id = id.to_string();
        if delta {
            let (tx, rx) = mpsc::channel(64);
            for t in TYPES {
                let r = DeltaDiscoveryRequest {
                    node: node(&id),
                    type_url: t.into(),
                    resource_names_subscribe: names(t),
                    ..Default::default()
                };
                tx.send(r).await.expect("send");
            }
            let mut inbound = ads
                .delta_aggregated_resources(ReceiverStream::new(rx))
                .await
                .expect("delta stream")
                .into_inner();
            tokio::spawn(async move {
                while let Ok(Some(r)) = inbound.message().await {
                    note(&arrivals, &r.type_url, &r.system_version_info);
                    let ack = DeltaDiscoveryRequest {
                        type_url: r.type_url,
                        response_nonce: r.nonce,
                        ..Default::default()
                    };
                    if tx.send(ack).await.is_err() {
                        return;
                    }
                }
            });
        } else {
            let (tx, rx) = mpsc::channel(64);
            for t in TYPES {
                let r = DiscoveryRequest {
                    node: node(&id),
                    type_url: t.into(),
                    resource_names: names(t),
                    ..Default::default()
                };
                tx.send(r).await.expect("send");
            }
            let mut inbound = ads
                .stream_aggregated_resources(ReceiverStream::new(rx))
                .await
                .expect("sotw stream")
                .into_inner();
            tokio::spawn(async move {
                while let Ok(Some(r)) = inbound.message().await {
                    note(&arrivals, &r.type_url, &r.version_info);
                    let ack = DiscoveryRequest {
                        version_info: r.version_info,
                        resource_names: names(&r.type_url),
                        type_url: r.type_url,
                        response_nonce: r.nonce,
                        ..Default::default()
                    };
                    if tx.send(ack).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// When `version` arrived for every type (the last of them), if it has.
    pub fn complete_at(arrivals: &Arrivals, version: &str) -> Option<Instant> {
        let a = arrivals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TYPES
            .iter()
            .map(|t| {
                a.iter()
                    .find(|(at, v, _)| at == t && v == version)
                    .map(|(_, _, when)| *when)
            })
            .try_fold(None::<Instant>, |latest, w| {
                let w = w?;
                Some(Some(latest.map_or(w, |l| l.max(w))))
            })
            .flatten()
    }
}

/// `VmRSS` and `VmHWM` (peak) of a process, in kB.
fn rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// reference §11's scale goal: with 1,000 Mappings (1,000 clusters with their endpoints) and
/// 10 ADS streams of a test client (5 State-of-the-World, 5 Delta) plus one real Envoy, a
/// change reaches all of them (every subscribed type at the new version) within seconds, and
/// `portico xds` stays under 100 MB RSS. The times seen are printed (docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_mappings_ten_streams_and_envoy_get_a_change_quickly() {
    let Some(envoy) = need_envoy("thousand_mappings_ten_streams_and_envoy_get_a_change_quickly")
    else {
        return;
    };
    let (a, b) = (echo("a").await, echo("b").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    let mut base = format!("{}{}", cfg::listener(envoy_port), mapping("m0", "/m0/", &a));
    for i in 1..1000 {
        base.push_str(&format!(
            "---\n{API}\nkind: Mapping\nmetadata: {{ name: m{i} }}\nspec: {{ prefix: /m{i}/, service: 127.0.0.1:{} }}\n",
            20_000 + i
        ));
    }
    std::fs::write(&config, &base).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let addr = format!("127.0.0.1:{}", xds.grpc);
    let mut streams = Vec::new();
    for i in 0..10 {
        let arrivals = client::Arrivals::default();
        client::open(&addr, &format!("scale-{i}"), i % 2 == 1, arrivals.clone()).await;
        streams.push(arrivals);
    }
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let envoy_acked = |n: &serde_json::Value, version: &str| {
        n["nodes"].as_array().is_some_and(|nodes| {
            nodes.iter().any(|node| {
                node["id"] == "e2e-envoy"
                    && client::TYPES
                        .iter()
                        .all(|t| node["resources"][*t]["version_acked"] == version)
            })
        })
    };
    wait_until(
        Duration::from_secs(60),
        "10 streams and Envoy at version 1",
        async || {
            let n = xds.nodes().await;
            streams
                .iter()
                .all(|s| client::complete_at(s, "1").is_some())
                && envoy_acked(&n, "1")
        },
    )
    .await;
    poll_for(Duration::from_secs(30), "envoy serving", async || {
        let r = http_get(&format!("http://127.0.0.1:{envoy_port}/m0/x"), &[])
            .await
            .ok()?;
        (r.header("x-upstream") == Some("a")).then_some(())
    })
    .await;
    let nodes = xds.nodes().await;
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(11), "{nodes}");
    let protocols: Vec<&str> = nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["protocol"].as_str())
        .collect();
    assert_eq!(protocols.iter().filter(|p| **p == "delta").count(), 5);

    // The change: one more Mapping, saved to the watched file.
    let started = Instant::now();
    std::fs::write(
        &config,
        format!("{base}{}", mapping("changed", "/changed/", &b)),
    )
    .expect("config");
    let version = poll_for(Duration::from_secs(10), "the change applied", async || {
        let n = xds.nodes().await;
        let v = n["version"].as_str()?.to_string();
        (v != "1").then_some(v)
    })
    .await;
    let envoy_took = wait_until(
        Duration::from_secs(20),
        "Envoy ACKs the change",
        async || envoy_acked(&xds.nodes().await, &version),
    )
    .await;
    let mut slowest = Duration::ZERO;
    for (i, s) in streams.iter().enumerate() {
        let at = poll_for(
            Duration::from_secs(20),
            &format!("stream {i} at the new version"),
            async || client::complete_at(s, &version),
        )
        .await;
        slowest = slowest.max(at.duration_since(started));
    }
    let all = slowest.max(envoy_took);
    let (rss, peak) = rss_kb(xds.proc.0.id());
    eprintln!(
        "scale: 1000 Mappings, 10 streams (5 SotW, 5 Delta) + Envoy (SotW): change at all streams in {slowest:?}, Envoy ACKed in {envoy_took:?} (polled); portico xds RSS {} MB, peak {} MB",
        rss / 1024,
        peak / 1024
    );
    let r = get(&format!("http://127.0.0.1:{envoy_port}/changed/x"), &[]).await;
    assert_eq!(r.header("x-upstream"), Some("b"));
    assert!(all <= Duration::from_secs(5), "the change took {all:?}");
    assert!(peak > 0, "VmHWM unreadable");
    assert!(peak < 100 * 1024, "portico xds peak RSS {peak} kB");
}
