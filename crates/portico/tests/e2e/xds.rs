//! `portico xds` feeding the real Envoy (reference §11): Envoy bootstrapped from
//! `portico bootstrap` serves the config `portico run` serves, with the same answers (a parity
//! table), picks up a config change within seconds, and a config Envoy rejects shows as a NACK
//! at `/xds`. Needs `ENVOY_BIN` (scripts/fetch-envoy.sh fetches Envoy 1.40; scripts/test.sh
//! sets it); without it the tests say SKIPPED loudly.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::common::envoy::*;
use crate::common::*;

/// An upstream whose even-numbered requests (1st, 3rd, ...) get 503 and odd ones 200: a
/// request retried once on 5xx succeeds on its second attempt.
async fn flaky() -> Upstream {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    Upstream::with(
        "flaky",
        Arc::new(move |_s: &Seen| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut r = Response::new(Full::new(Bytes::from("flaky")));
            if i.is_multiple_of(2) {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            r.headers_mut()
                .insert("x-upstream", "flaky".parse().expect("name"));
            r
        }),
    )
    .await
}

/// Headers each proxy adds for itself, excluded from the comparison of what the upstream saw
/// (prefixes). docs/envoy.md lists them.
const PER_PROXY: &[&str] = &[
    "x-envoy-",
    "x-request-id",
    "x-portico-expected-timeout-ms",
    "x-portico-attempt-count",
    "x-forwarded-",
];

/// Envoy matches virtual hosts with `strip_any_host_port`, which also drops the port from the
/// Host it forwards; Portico forwards Host as sent (docs/envoy.md, "What differs"). The host
/// is compared without its port.
fn without_port(host: &str) -> String {
    match host.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => host.to_string(),
    }
}

/// What a request produced, in comparable form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    status: u16,
    upstream: Option<String>,
    path: Option<String>,
    location: Option<String>,
    body: Option<String>,
    seen_headers: Vec<(String, String)>,
}

pub(crate) fn outcome(g: &Got) -> Outcome {
    let upstream = g.header("x-upstream").map(str::to_string);
    let mut seen_headers: Vec<(String, String)> = g
        .headers
        .iter()
        .filter_map(|(k, v)| {
            let name = k.as_str().strip_prefix("x-seen-h-")?;
            if PER_PROXY.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let v = v.to_str().unwrap_or("?");
            let v = if name == "host" {
                without_port(v)
            } else {
                v.to_string()
            };
            Some((name.to_string(), v))
        })
        .collect();
    seen_headers.sort();
    Outcome {
        status: g.status.as_u16(),
        path: g.header("x-seen-path").map(str::to_string),
        location: g.header("location").map(str::to_string),
        // Local answers (no upstream) are compared by body too.
        body: upstream
            .is_none()
            .then(|| g.text())
            .filter(|b| b.starts_with("direct")),
        upstream,
        seen_headers,
    }
}

/// The config both proxies run (without its Listener).
fn shared_docs(a: &Upstream, b: &Upstream, slow: &Controlled, flaky: &Upstream) -> String {
    let m = |name: &str, spec: &str| {
        format!("---\n{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n")
    };
    [
        m("prefix", &format!("  prefix: /a/\n  service: {}", a.addr)),
        m("exact", &format!("  prefix: /exact\n  prefix_exact: true\n  service: {}", b.addr)),
        m("regex", &format!("  prefix: \"/re/[0-9]+\"\n  prefix_regex: true\n  service: {}", b.addr)),
        m("header", &format!("  prefix: /a/\n  headers: {{ x-canary: \"yes\" }}\n  service: {}", b.addr)),
        m("query", &format!("  prefix: /q/\n  query_parameters: {{ v: \"2\" }}\n  service: {}", b.addr)),
        m("method", &format!("  prefix: /q/\n  method: POST\n  service: {}", a.addr)),
        m("host", &format!("  hostname: api.example\n  prefix: /a/\n  service: {}", b.addr)),
        m("rewrite", &format!("  prefix: /rw/\n  rewrite: /inner/\n  host_rewrite: internal.example\n  service: {}", a.addr)),
        m("regex-rewrite", &format!("  prefix: /rr/\n  regex_rewrite: {{ pattern: \"^/rr/([a-z]+)/([0-9]+)$\", substitution: \"/\\\\2/\\\\1\" }}\n  service: {}", a.addr)),
        m("redirect", "  prefix: /old/\n  redirect: { host: new.example, prefix: /new/, response_code: 302 }"),
        m("direct", "  prefix: /direct\n  direct_response: { status: 418, body: \"direct teapot\" }"),
        m("headers", &format!("  prefix: /h/\n  add_request_headers: {{ x-added: one, x-set: {{ value: two, append: false }} }}\n  remove_request_headers: [x-drop]\n  service: {}", a.addr)),
        m("timeout", &format!("  prefix: /slow/\n  timeout_ms: 300\n  service: {}", slow.addr)),
        m("retry", &format!("  prefix: /retry/\n  retry_policy: {{ retry_on: \"5xx\", num_retries: 2 }}\n  service: {}", flaky.addr)),
        format!("---\n{API}\nkind: Upstream\nmetadata: {{ name: guarded }}\nspec:\n  endpoints: [\"{}\"]\n  circuit_breakers: {{ max_requests: 1 }}\n", slow.addr),
        m("breaker", "  prefix: /cb/\n  service: guarded"),
        m("stable", &format!("  prefix: /w/\n  service: {}", a.addr)),
        m("canary", &format!("  prefix: /w/\n  weight: 30\n  service: {}", b.addr)),
    ]
    .concat()
}

/// One row of the parity table: (method, path, request headers).
type Row = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The parity table.
const TABLE: &[Row] = &[
    ("GET", "/a/x?k=1", &[]),
    ("GET", "/a/x", &[("x-canary", "yes")]),
    ("GET", "/a/x", &[("host", "api.example")]),
    ("GET", "/a/x", &[("host", "api.example:8080")]),
    ("GET", "/exact", &[]),
    ("GET", "/exact/more", &[]),
    ("GET", "/re/123", &[]),
    ("GET", "/re/12x", &[]),
    ("GET", "/q/1?v=2", &[]),
    ("POST", "/q/1", &[]),
    ("GET", "/q/1", &[]),
    ("GET", "/rw/deep/path?z=9", &[]),
    ("GET", "/rr/abc/42", &[]),
    ("GET", "/old/page?x=1", &[]),
    ("GET", "/direct", &[]),
    (
        "GET",
        "/h/",
        &[
            ("x-drop", "gone"),
            ("x-set", "client"),
            ("x-added", "client"),
        ],
    ),
    ("GET", "/slow/", &[]),
    ("GET", "/retry/", &[]),
    ("GET", "/nothing", &[]),
];

pub(crate) async fn ask(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send(
        request(
            method,
            &format!("http://127.0.0.1:{port}{path}"),
            headers,
            Bytes::new(),
        ),
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

#[tokio::test]
async fn envoy_fed_by_portico_xds_answers_like_portico_run() {
    let Some(envoy) = need_envoy("envoy_fed_by_portico_xds_answers_like_portico_run") else {
        return;
    };
    let (a, b) = (echo("a").await, echo("b").await);
    let slow = Controlled::start("slow", Duration::from_secs(3)).await;
    let flaky = flaky().await;
    let docs = shared_docs(&a, &b, &slow, &flaky);
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    std::fs::write(&config, format!("{}{docs}", cfg::listener(envoy_port))).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let portico = Portico::start(&docs).await;

    // Envoy serves once it has listeners, routes, clusters and endpoints.
    poll_for(
        Duration::from_secs(30),
        "envoy serving the config from portico xds",
        async || {
            let r = http_get(&format!("http://127.0.0.1:{envoy_port}/a/x"), &[])
                .await
                .ok()?;
            (r.status == StatusCode::OK).then_some(())
        },
    )
    .await;
    let mut diffs = Vec::new();
    for (method, path, headers) in TABLE {
        let via_portico = outcome(&ask(portico.port, method, path, headers).await);
        let via_envoy = outcome(&ask(envoy_port, method, path, headers).await);
        if via_portico != via_envoy {
            diffs.push(format!(
                "{method} {path} {headers:?}\n  portico: {via_portico:?}\n  envoy:   {via_envoy:?}"
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "Envoy differs from portico run on {} of {} requests:\n{}\nenvoy log: {}",
        diffs.len(),
        TABLE.len(),
        diffs.join("\n"),
        envoy_log(dir.path())
    );

    // The retry row: each proxy's first attempt got a 503 and its retry the 200 (both answered
    // 200 above): the upstream saw two attempts per proxy.
    assert_eq!(flaky.count(), 4, "attempts seen by the flaky upstream");

    // Circuit breaker: with one request in flight to `guarded` (max_requests: 1, the upstream
    // answers after 3 s), a second one gets a local 503 at once; the first a 200. Both
    // proxies at the same time (the slow upstream serves any number of requests); the second
    // requests go once both first ones have reached the upstream.
    let before = slow.hits();
    let firsts = [portico.port, envoy_port]
        .map(|port| tokio::spawn(async move { ask(port, "GET", "/cb/", &[]).await.status }));
    wait_until(
        Duration::from_secs(20),
        "both first requests at the slow upstream",
        async || slow.hits() >= before + 2,
    )
    .await;
    let seconds = tokio::join!(
        ask(portico.port, "GET", "/cb/", &[]),
        ask(envoy_port, "GET", "/cb/", &[])
    );
    let [p1, e1] = firsts;
    let via_portico = (p1.await.expect("first"), seconds.0.status);
    let via_envoy = (e1.await.expect("first"), seconds.1.status);
    assert_eq!(
        via_portico,
        (StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE),
        "portico"
    );
    assert_eq!(
        via_envoy,
        (StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE),
        "envoy"
    );

    // Canary weights: 30% to b on both, over 200 requests each (binomial: mean 60, sd 6.5;
    // 30..=90 is more than 4.5 sd either way).
    for (who, port) in [("portico", portico.port), ("envoy", envoy_port)] {
        let mut to_b = 0;
        for _ in 0..200 {
            if ask(port, "GET", "/w/", &[]).await.header("x-upstream") == Some("b") {
                to_b += 1;
            }
        }
        eprintln!("{who}: {to_b} of 200 to the 30% canary");
        assert!(
            (30..=90).contains(&to_b),
            "{who}: {to_b} of 200 to the 30% canary"
        );
    }

    let nodes = xds.nodes().await;
    let node = &nodes["nodes"][0];
    assert_eq!(node["id"], "e2e-envoy", "{nodes}");
    assert_eq!(node["cluster"], "e2e");
    for t in [
        "Listener",
        "RouteConfiguration",
        "Cluster",
        "ClusterLoadAssignment",
    ] {
        let (url, st) = node["resources"]
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.ends_with(&format!(".{t}"))))
            .unwrap_or_else(|| panic!("{t} not subscribed: {nodes}"));
        assert_eq!(st["version_acked"], "1", "{url}: {nodes}");
        assert!(st["last_nack"].is_null(), "{url}: {nodes}");
    }
}

#[tokio::test]
async fn config_changes_reach_envoy_and_nacks_show_at_xds() {
    let Some(envoy) = need_envoy("config_changes_reach_envoy_and_nacks_show_at_xds") else {
        return;
    };
    let (a, b) = (echo("a").await, echo("b").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    let base = format!(
        "{}---\n{API}\nkind: Mapping\nmetadata: {{ name: a }}\nspec: {{ prefix: /, service: {} }}\n",
        cfg::listener(envoy_port),
        a.addr
    );
    std::fs::write(&config, &base).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let url = format!("http://127.0.0.1:{envoy_port}/new/x");
    poll_for(Duration::from_secs(30), "envoy serving", async || {
        let r = http_get(&url, &[]).await.ok()?;
        (r.header("x-upstream") == Some("a")).then_some(())
    })
    .await;

    // A new route to b: applied by SIGHUP, seen in Envoy's traffic.
    std::fs::write(
        &config,
        format!(
            "{base}---\n{API}\nkind: Mapping\nmetadata: {{ name: new }}\nspec: {{ prefix: /new/, service: {} }}\n",
            b.addr
        ),
    )
    .expect("config");
    // The file watcher reloads (as with `portico run`); no signal needed.
    let started = Instant::now();
    poll_for(
        Duration::from_secs(10),
        "the new route in Envoy's traffic",
        async || {
            let r = http_get(&url, &[]).await.ok()?;
            (r.header("x-upstream") == Some("b")).then_some(())
        },
    )
    .await;
    let seen = started.elapsed();
    eprintln!("config change reached Envoy in {seen:?}");
    assert!(seen <= Duration::from_secs(5), "took {seen:?}");

    // A route Portico accepts and Envoy rejects (RE2's program size limit): a NACK at /xds,
    // and Envoy keeps serving the previous version.
    std::fs::write(
        &config,
        format!(
            "{base}---\n{API}\nkind: Mapping\nmetadata: {{ name: huge }}\nspec: {{ prefix: \"/huge/[a-z]{{1,300}}\", prefix_regex: true, service: {} }}\n",
            b.addr
        ),
    )
    .expect("config");
    let nack = poll_for(Duration::from_secs(15), "a NACK at /xds", async || {
        let n = xds.nodes().await;
        let res = n["nodes"][0]["resources"].as_object()?.clone();
        res.values()
            .find(|st| !st["last_nack"].is_null())
            .map(|st| st["last_nack"].clone())
    })
    .await;
    let nodes = xds.nodes().await;
    let route = &nodes["nodes"][0]["resources"]["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"];
    assert_eq!(
        nack["version"], nodes["version"],
        "the newest version was NACKed: {nodes}"
    );
    assert_ne!(route["version_acked"], nodes["version"], "{nodes}");
    assert!(!nack["error"].as_str().unwrap_or("").is_empty(), "{nack}");
    let metrics = get(&xds.admin_url("/metrics"), &[]).await.text();
    let route_nacks: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("portico_xds_nacks_total{type=\"route\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(route_nacks >= 1.0, "{metrics}");
    assert!(
        metrics.contains("portico_xds_connected_nodes 1"),
        "{metrics}"
    );
    // Still the last good version.
    let r = get(&url, &[]).await;
    assert_eq!(r.header("x-upstream"), Some("b"));
}

#[tokio::test]
async fn check_target_envoy_warns_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: lat }}\nspec:\n  endpoints: [\"127.0.0.1:9\"]\n  load_balancer: {{ policy: ewma }}\n---\n{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: lat }}\n"
    );
    std::fs::write(dir.path().join("c.yaml"), cfg).expect("write");
    // Without --target: no Envoy warnings.
    let (code, out, _) = portico_cmd(dir.path(), &["check", "c.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("envoy"), "{out}");
    let (code, out, err) = portico_cmd(dir.path(), &["check", "--target", "envoy", "c.yaml"]);
    assert_eq!(code, 0, "warnings only: {out} {err}");
    let line = out
        .lines()
        .find(|l| l.contains("spec.load_balancer.policy"))
        .unwrap_or_else(|| panic!("no ewma warning: {out}"));
    assert!(
        line.starts_with(
            "c.yaml:1:1: Upstream/lat: warning: envoy cannot express spec.load_balancer.policy"
        ),
        "{line}"
    );
    assert!(line.contains("least_request"), "{line}");
}

/// reference §11: an Envoy that loses the control plane keeps serving its last config and
/// resyncs when it comes back; no request fails meanwhile.
#[tokio::test]
async fn envoy_keeps_serving_while_portico_xds_restarts() {
    let Some(envoy) = need_envoy("envoy_keeps_serving_while_portico_xds_restarts") else {
        return;
    };
    let a = echo("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let envoy_port = free_port();
    let config = dir.path().join("portico.yaml");
    std::fs::write(
        &config,
        format!(
            "{}---\n{API}\nkind: Mapping\nmetadata: {{ name: a }}\nspec: {{ prefix: /, service: {} }}\n",
            cfg::listener(envoy_port),
            a.addr
        ),
    )
    .expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let (grpc, admin) = (xds.grpc, xds.admin);
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let url = format!("http://127.0.0.1:{envoy_port}/x");
    poll_for(Duration::from_secs(30), "envoy serving", async || {
        let r = http_get(&url, &[]).await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;

    let traffic = GetLoop::start(&url);
    // The control plane goes away, stays away a while, and comes back on the same ports.
    drop(xds);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let xds = Xds::start_on(dir.path(), &config, grpc, admin).await;
    wait_until(Duration::from_secs(40), "envoy resyncs with the restarted portico xds", async || {
        let n = xds.nodes().await;
        n["nodes"][0]["resources"]["type.googleapis.com/envoy.config.listener.v3.Listener"]["version_acked"]
            == "1"
    })
    .await;
    let (ok, failed) = traffic.stop().await;
    eprintln!(
        "during the control plane's restart: {ok} requests ok, {} failed",
        failed.len()
    );
    assert!(ok > 20, "too little traffic to tell: {ok}");
    assert!(
        failed.is_empty(),
        "requests failed while portico xds restarted: {failed:?}"
    );
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(repo)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(repo: &Path, config: &str, msg: &str) -> String {
    std::fs::write(repo.join("portico.yaml"), config).expect("write");
    git(repo, &["add", "--all", "."]);
    git(repo, &["commit", "--quiet", "-m", msg]);
    git(repo, &["rev-parse", "HEAD"])
}

/// With `--git`, versions are the commits' full hashes, and a pushed commit reaches Envoy.
#[tokio::test]
async fn git_commits_reach_envoy_versioned_by_hash() {
    let Some(envoy) = need_envoy("git_commits_reach_envoy_versioned_by_hash") else {
        return;
    };
    let (a, b) = (echo("a").await, echo("b").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = tempfile::tempdir().expect("repo");
    git(repo.path(), &["init", "--quiet", "--initial-branch=main"]);
    let envoy_port = free_port();
    let cfg_for = |up: &Upstream| {
        format!(
            "{}---\n{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: {} }}\n",
            cfg::listener(envoy_port),
            up.addr
        )
    };
    let first = commit(repo.path(), &cfg_for(&a), "to a");
    let source = [
        "--git".to_string(),
        format!("file://{}", repo.path().display()),
        "--poll".to_string(),
        "1".to_string(),
    ];
    let xds = Xds::start_with(dir.path(), &source, free_port(), free_port()).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let url = format!("http://127.0.0.1:{envoy_port}/x");
    poll_for(
        Duration::from_secs(30),
        "envoy serving commit 1",
        async || {
            let r = http_get(&url, &[]).await.ok()?;
            (r.header("x-upstream") == Some("a")).then_some(())
        },
    )
    .await;
    let n = xds.nodes().await;
    assert_eq!(n["version"], first.as_str(), "{n}");
    assert_eq!(first.len(), 40);

    let second = commit(repo.path(), &cfg_for(&b), "to b");
    let took = wait_until(
        Duration::from_secs(15),
        "commit 2 in Envoy's traffic",
        async || {
            http_get(&url, &[])
                .await
                .is_ok_and(|r| r.header("x-upstream") == Some("b"))
        },
    )
    .await;
    eprintln!("a commit reached Envoy in {took:?} (poll every 1 s)");
    assert!(took <= Duration::from_secs(5), "took {took:?}");
    wait_until(Duration::from_secs(10), "commit 2 ACKed by hash", async || {
        let n = xds.nodes().await;
        n["nodes"][0]["resources"]["type.googleapis.com/envoy.config.cluster.v3.Cluster"]["version_acked"]
            == second.as_str()
    })
    .await;
}

/// HTTPS with two SNI Hosts: Envoy gets one filter chain per Host and each Host's certificate
/// over SDS, and serves each name with its own certificate. (Multi-threaded: curl blocks its
/// worker while the in-process upstream answers on the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_serves_two_sni_hosts_with_their_certificates_over_sds() {
    let Some(envoy) = need_envoy("envoy_serves_two_sni_hosts_with_their_certificates_over_sds")
    else {
        return;
    };
    use crate::tls::{Pki, curl, host_doc};
    let pki = Pki::new();
    let la = pki.leaf("a", "a.test", &["a.test"], false);
    let lb = pki.leaf("b", "b.test", &["b.test"], false);
    let up = echo("u").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let tls_port = free_port();
    let config = dir.path().join("portico.yaml");
    let docs = [
        listener_doc("tls", tls_port, "HTTPS", ""),
        host_doc("a", "a.test", &la, "", ""),
        host_doc("b", "b.test", &lb, "", ""),
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: {} }}\n",
            up.addr
        ),
    ]
    .join("---\n");
    std::fs::write(&config, docs).expect("config");
    let xds = Xds::start(dir.path(), &config).await;
    let _envoy = start_envoy(&envoy, dir.path(), &xds).await;
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("path");
    let fetch = |host: &str| {
        let resolve = format!("{host}:{tls_port}:127.0.0.1");
        let url = format!("https://{host}:{tls_port}/hello");
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
        let (ok, out, _) = fetch("a.test");
        ok && out.contains("\n200\n")
    })
    .await;
    if !serving {
        let (_, out, err) = fetch("a.test");
        panic!(
            "envoy not serving HTTPS: {out} {err}\n/xds: {}\nenvoy: {}",
            xds.nodes().await,
            envoy_log(dir.path())
        );
    }
    for host in ["a.test", "b.test"] {
        let (ok, out, err) = fetch(host);
        assert!(ok, "curl {host}: {err}\n{}", envoy_log(dir.path()));
        assert!(out.starts_with("upstream u\n200\n"), "{out}");
        assert!(
            out.contains(&format!("CN = {host}")) || out.contains(&format!("CN={host}")),
            "{host} is served its own certificate: {out}"
        );
    }
    let nodes = xds.nodes().await;
    let secrets = &nodes["nodes"][0]["resources"]["type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"];
    assert_eq!(secrets["version_acked"], "1", "{nodes}");
}
