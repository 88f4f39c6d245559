//! HTTP/3 downstream (reference §10) through the real binary, with a third-party HTTP/3 client:
//! Python's `aioquic` driven by `h3client.py`. `scripts/test.sh` installs aioquic under
//! target/ (scripts/fetch-aioquic.sh) and sets `AIOQUIC_PATH`; without it these tests skip
//! loudly.

use crate::common;
use crate::tls::{Leaf, Pki, client_config, host_doc, tls_connect, write_atomic};
use common::*;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::{Value, json};

/// Where aioquic is installed (a directory for PYTHONPATH), if it imports.
pub(crate) fn aioquic() -> Option<PathBuf> {
    let dir = std::env::var_os("AIOQUIC_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| browser::target_dir().join("aioquic"));
    let ok = Command::new("python3")
        .env("PYTHONPATH", &dir)
        .args(["-c", "import aioquic.asyncio, aioquic.h3.connection"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(dir)
}

macro_rules! need_aioquic {
    ($test:expr) => {
        match aioquic() {
            Some(d) => d,
            None => {
                skipped(
                    $test,
                    "aioquic is not installed (scripts/fetch-aioquic.sh installs it under target/; scripts/test.sh runs it and sets AIOQUIC_PATH)",
                );
                return;
            }
        }
    };
}
pub(crate) use need_aioquic;

/// Runs one `h3client.py` job; returns the per-request results and the summary.
pub(crate) async fn h3(dir: &std::path::Path, job: Value) -> (Vec<Value>, Value) {
    let dir = dir.to_path_buf();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/h3client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .env("PYTHONPATH", &dir)
            .arg(&script)
            .arg(job.to_string())
            .output()
            .expect("run python3")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "h3client failed: {stdout}\n{stderr}");
    let mut lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines.pop().expect("summary line");
    assert_eq!(summary["summary"], true, "{stdout}\n{stderr}");
    (lines, summary)
}

pub(crate) fn header<'a>(r: &'a Value, name: &str) -> Option<&'a str> {
    r["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

pub(crate) fn mapping_doc(
    name: &str,
    host: &str,
    prefix: &str,
    service: &str,
    extra: &str,
) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n  hostname: \"{host}\"\n  prefix: {prefix}\n  service: {service}\n{extra}"
    )
}

/// Two TLS Hosts (a.test, b.test) and an `http3` HTTPS listener; returns the process, the
/// listener port and the CA file.
async fn start(
    pki: &Pki,
    a: &Leaf,
    b: &Leaf,
    extra_listener: &str,
    mappings: &[String],
) -> (Portico, u16) {
    let port = free_port();
    let mut docs = vec![
        host_doc("a", "a.test", a, "", ""),
        host_doc("b", "b.test", b, "", ""),
    ];
    docs.extend(mappings.iter().cloned());
    let listener = listener_doc(
        "quic",
        port,
        "HTTPS",
        &format!(
            "http3: true{}{extra_listener}",
            if extra_listener.is_empty() { "" } else { ", " }
        ),
    );
    let _ = pki;
    let p = Portico::start_with_listeners(&listener, &docs.join("---\n")).await;
    (p, port)
}

pub(crate) fn job(port: u16, pki: &Pki, sni: &str, requests: Value) -> Value {
    json!({
        "port": port,
        "sni": sni,
        "ca": pki.path("ca.pem").display().to_string(),
        "requests": requests,
    })
}

/// An HTTP/1.1 GET over TLS (TCP) to the same listener; returns its status and headers.
async fn tcp_get(pki: &Pki, port: u16, sni: &str, path: &str) -> (u16, http::HeaderMap) {
    let cfg = client_config(pki, &["http/1.1"], None);
    let s = tls_connect(cfg, port, sni).await.expect("tls");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", sni)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let _ = resp.into_body().collect().await;
    (status, headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_get_and_post_routes_by_host_advertises_alt_svc_and_logs() {
    let dir = need_aioquic!("http3_serves_get_and_post_routes_by_host_advertises_alt_svc_and_logs");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let up_a = Upstream::start("a").await;
    let up_b = Upstream::start("b").await;
    let slow = Controlled::start("slow", Duration::from_millis(2500)).await;
    let mappings = vec![
        mapping_doc("ma", "a.test", "/", &up_a.addr.to_string(), ""),
        mapping_doc("mb", "b.test", "/b/", &up_b.addr.to_string(), ""),
        mapping_doc("ms", "a.test", "/slow", &slow.addr.to_string(), ""),
    ];
    let (p, port) = start(&pki, &a, &b, "", &mappings).await;

    // The TCP side advertises HTTP/3 on the same port.
    let (status, headers) = tcp_get(&pki, port, "a.test", "/tcp").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("alt-svc").and_then(|v| v.to_str().ok()),
        Some(format!("h3=\":{port}\"; ma=86400").as_str())
    );

    // GET by SNI/authority: each Host's routes, each Host's certificate.
    let (rs, sum) = h3(
        &dir,
        job(
            port,
            &pki,
            "a.test",
            json!([{"path": "/hello?x=1", "authority": "a.test"}]),
        ),
    )
    .await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert_eq!(rs[0]["body"], "upstream a");
    assert!(
        header(&rs[0], "alt-svc").is_none(),
        "no alt-svc over HTTP/3"
    );
    assert!(
        sum["certs"][0].as_str().unwrap_or("").contains("CN=a.test"),
        "{sum}"
    );
    assert_eq!(up_a.last().uri, "/hello?x=1");
    assert_eq!(up_a.last().headers["x-forwarded-proto"], "https");

    let (rs, sum) = h3(
        &dir,
        job(
            port,
            &pki,
            "b.test",
            json!([{"path": "/b/x", "authority": "b.test"}, {"path": "/elsewhere", "authority": "b.test"}]),
        ),
    )
    .await;
    assert!(
        sum["certs"][0].as_str().unwrap_or("").contains("CN=b.test"),
        "{sum}"
    );
    assert_eq!(
        (rs[0]["status"].clone(), rs[0]["body"].clone()),
        (json!(200), json!("upstream b"))
    );
    assert_eq!(rs[1]["status"], 404, "no route on b.test for /elsewhere");

    // POST with a 10 MiB body, streamed to the upstream intact.
    let size = 10 * 1024 * 1024;
    let (rs, sum) = h3(
        &dir,
        job(
            port,
            &pki,
            "a.test",
            json!([{"method": "POST", "path": "/upload", "authority": "a.test", "body_size": size}]),
        ),
    )
    .await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    let seen = up_a.last();
    assert_eq!((seen.method.as_str(), seen.body.len()), ("POST", size));
    assert!(seen.body.iter().all(|&b| b == b'x'));

    // A QUIC connection counts in the listener's connection gauge while it is open.
    let slow_job = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/slow", "authority": "a.test"}]),
    );
    let d2 = dir.clone();
    let inflight = tokio::spawn(async move { h3(&d2, slow_job).await });
    let gauge = "portico_downstream_connections{listener=\"quic\"}";
    wait_until(
        Duration::from_secs(20),
        "QUIC connection in the gauge",
        async || metric(&p, gauge).await.unwrap_or(0.0) >= 1.0,
    )
    .await;
    let (rs, _) = inflight.await.expect("join");
    assert_eq!(rs[0]["status"], 200);
    wait_until(Duration::from_secs(10), "gauge back to 0", async || {
        metric(&p, gauge).await == Some(0.0)
    })
    .await;

    // The access log says HTTP/3.
    let lines = p.wait_log_lines(6).await;
    let h3_lines: Vec<&Value> = lines.iter().filter(|l| l["protocol"] == "HTTP/3").collect();
    assert!(h3_lines.len() >= 5, "{lines:?}");
    assert!(
        h3_lines
            .iter()
            .any(|l| l["path"] == "/hello?x=1" && l["authority"] == "a.test")
    );
    assert!(h3_lines.iter().any(|l| l["bytes_received"] == size as u64));
    assert!(
        lines
            .iter()
            .any(|l| l["protocol"] != "HTTP/3" && l["path"] == "/tcp")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_deadline_rate_limit_and_malformed_fields() {
    let dir = need_aioquic!("http3_deadline_rate_limit_and_malformed_fields");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let up = Upstream::start("a").await;
    let slow = Controlled::start("slow", Duration::from_millis(5000)).await;
    let rl = "  rate_limits:\n    - key: [generic:all]\n      requests_per_unit: 1\n      unit: hour\n      burst: 2\n";
    let mappings = vec![
        mapping_doc("ma", "a.test", "/", &up.addr.to_string(), ""),
        mapping_doc(
            "ms",
            "a.test",
            "/slow",
            &slow.addr.to_string(),
            "  timeout_ms: 300\n",
        ),
        mapping_doc("mr", "a.test", "/limited", &up.addr.to_string(), rl),
    ];
    let (p, port) = start(&pki, &a, &b, "", &mappings).await;

    let reqs = json!([
        {"path": "/slow", "authority": "a.test"},
        {"path": "/limited", "authority": "a.test"},
        {"path": "/limited", "authority": "a.test"},
        {"path": "/limited", "authority": "a.test"},
    ]);
    let (rs, sum) = h3(&dir, job(port, &pki, "a.test", reqs)).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 504, "{}", rs[0]);
    let statuses: Vec<i64> = rs[1..]
        .iter()
        .map(|r| r["status"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);

    // Malformed requests: nothing reaches the upstream.
    let before = up.count();
    let bad = json!([
        {"path": "/conn", "authority": "a.test", "headers": [["connection", "close"]]},
        {"path": "/upper", "authority": "a.test", "headers": [["X-Upper", "1"]]},
        {"path": "/te", "authority": "a.test", "headers": [["te", "gzip"]]},
        {"path": "/ws", "authority": "a.test", "headers": [["x-pad", " padded"]]},
    ]);
    let (rs, _) = h3(&dir, job(port, &pki, "a.test", bad)).await;
    for r in &rs[..3] {
        assert!(!r["reset"].is_null(), "stream reset expected: {r}");
    }
    assert_eq!(rs[3]["status"], 400, "{}", rs[3]);
    assert_eq!(
        up.count(),
        before,
        "a malformed request reached the upstream"
    );
    // The same connection still works after the resets.
    let (rs, _) = h3(
        &dir,
        job(
            port,
            &pki,
            "a.test",
            json!([{"path": "/ok", "authority": "a.test"}]),
        ),
    )
    .await;
    assert_eq!(rs[0]["status"], 200);

    let lines = p.wait_log_lines(9).await;
    let rejected = lines
        .iter()
        .filter(|l| l["protocol"] == "HTTP/3" && l["flags"].as_str().unwrap_or("").contains("DPE"))
        .count();
    assert!(rejected >= 4, "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l["protocol"] == "HTTP/3" && l["status"] == 504 && l["flags"] == "UT")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["protocol"] == "HTTP/3" && l["status"] == 429)
    );
    assert!(
        metric(&p, "portico_downstream_rejected_total{code=\"4xx\"}")
            .await
            .unwrap_or(0.0)
            >= 3.0
    );
}

/// An h2c upstream that records the request's trailers and answers with trailers.
async fn trailer_upstream() -> (
    std::net::SocketAddr,
    Arc<std::sync::Mutex<Vec<(usize, http::HeaderMap)>>>,
) {
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen: Arc<std::sync::Mutex<Vec<(usize, http::HeaderMap)>>> = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let collected = req.into_body().collect().await.ok();
                        let (len, trailers) = collected
                            .map(|c| {
                                let t = c.trailers().cloned().unwrap_or_default();
                                (c.to_bytes().len(), t)
                            })
                            .unwrap_or_default();
                        seen.lock().expect("lock").push((len, trailers));
                        let frames = vec![
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                Bytes::from("body"),
                            )),
                            Ok(hyper::body::Frame::trailers({
                                let mut t = http::HeaderMap::new();
                                t.insert("x-resp-trailer", "done".parse().expect("value"));
                                t
                            })),
                        ];
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(c), svc)
                        .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_trailers_both_ways() {
    let dir = need_aioquic!("http3_trailers_both_ways");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let (addr, seen) = trailer_upstream().await;
    let mappings = vec![mapping_doc(
        "mt",
        "a.test",
        "/",
        &addr.to_string(),
        "  grpc: true\n",
    )];
    let (_p, port) = start(&pki, &a, &b, "", &mappings).await;
    let reqs = json!([{
        "method": "POST", "path": "/t", "authority": "a.test",
        "headers": [["te", "trailers"]],
        "body_size": 1000, "trailers": [["x-req-trailer", "sum-1"]],
    }]);
    let (rs, sum) = h3(&dir, job(port, &pki, "a.test", reqs)).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert_eq!(rs[0]["body"], "body");
    assert_eq!(rs[0]["trailers"], json!([["x-resp-trailer", "done"]]));
    let got = seen
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .expect("upstream saw the request");
    assert_eq!(got.0, 1000);
    assert_eq!(
        got.1.get("x-req-trailer").map(|v| v.as_bytes()),
        Some(&b"sum-1"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_certificate_rotation_without_restart() {
    let dir = need_aioquic!("http3_certificate_rotation_without_restart");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let up = Upstream::start("a").await;
    let mappings = vec![mapping_doc("ma", "a.test", "/", &up.addr.to_string(), "")];
    let (_p, port) = start(&pki, &a, &b, "", &mappings).await;
    let one = json!([{"path": "/", "authority": "a.test"}]);
    let (_, sum) = h3(&dir, job(port, &pki, "a.test", one.clone())).await;
    assert!(
        sum["certs"][0].as_str().unwrap_or("").contains("CN=a.test"),
        "{sum}"
    );
    // New files in place (same paths): the next handshakes get the new certificate.
    let rotated = pki.leaf("a-new", "a-rotated", &["a.test"], false);
    write_atomic(&a.key, &std::fs::read(&rotated.key).expect("key"));
    write_atomic(&a.cert, &std::fs::read(&rotated.cert).expect("cert"));
    let d = dir.clone();
    poll_for(
        Duration::from_secs(20),
        "the rotated certificate over HTTP/3",
        async || {
            let (rs, sum) = h3(&d, job(port, &pki, "a.test", one.clone())).await;
            (sum["certs"][0]
                .as_str()
                .unwrap_or("")
                .contains("CN=a-rotated")
                && rs[0]["status"] == 200)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_drain_sends_goaway_and_finishes_in_flight() {
    let dir = need_aioquic!("http3_drain_sends_goaway_and_finishes_in_flight");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let slow = Controlled::start("slow", Duration::from_millis(1500)).await;
    let mappings = vec![mapping_doc("ms", "a.test", "/", &slow.addr.to_string(), "")];
    let (mut p, port) = start(&pki, &a, &b, "", &mappings).await;
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/in-flight", "authority": "a.test"}]),
    );
    j["wait_goaway"] = json!(true);
    let d = dir.clone();
    let inflight = tokio::spawn(async move { h3(&d, j).await });
    wait_until(
        Duration::from_secs(20),
        "the request reached the upstream",
        async || slow.hits() >= 1,
    )
    .await;
    p.signal("TERM");
    let (rs, sum) = inflight.await.expect("join");
    assert_eq!(rs[0]["status"], 200, "in-flight request completes: {sum}");
    assert_eq!(sum["goaway"], true, "GOAWAY received: {sum}");
    let status = poll_for(
        Duration::from_secs(15),
        "portico did not exit after drain",
        async || p.child.try_wait().expect("wait"),
    )
    .await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_handshake_flood_gets_retry() {
    let dir = need_aioquic!("http3_handshake_flood_gets_retry");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let up = Upstream::start("a").await;
    let mappings = vec![mapping_doc("ma", "a.test", "/", &up.addr.to_string(), "")];
    let (p, port) = start(&pki, &a, &b, "http3_max_handshakes: 1", &mappings).await;
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/", "authority": "a.test"}]),
    );
    j["connections"] = json!(24);
    let (rs, sum) = h3(&dir, j).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs.len(), 24);
    assert!(rs.iter().all(|r| r["status"] == 200));
    assert!(
        sum["retries"].as_i64().unwrap_or(0) >= 1,
        "some clients got a Retry: {sum}"
    );
    assert!(
        metric(&p, "portico_http3_retries_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_counts_against_max_connections_and_limits_headers() {
    let dir = need_aioquic!("http3_counts_against_max_connections_and_limits_headers");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let slow = Controlled::start("slow", Duration::from_millis(2500)).await;
    let mappings = vec![mapping_doc("ms", "a.test", "/", &slow.addr.to_string(), "")];
    let (p, port) = start(
        &pki,
        &a,
        &b,
        "max_connections: 1, max_request_headers_kb: 1",
        &mappings,
    )
    .await;

    // A QUIC connection holds the listener's only slot: a TCP connection is refused meanwhile.
    let j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/held", "authority": "a.test"}]),
    );
    let d = dir.clone();
    let inflight = tokio::spawn(async move { h3(&d, j).await });
    wait_until(
        Duration::from_secs(20),
        "the QUIC request in flight",
        async || slow.hits() >= 1,
    )
    .await;
    let cfg = client_config(&pki, &["http/1.1"], None);
    assert!(
        tls_connect(cfg, port, "a.test").await.is_err(),
        "TCP connection accepted beyond max_connections"
    );
    let (rs, _) = inflight.await.expect("join");
    assert_eq!(rs[0]["status"], 200);
    // Slot given back: TCP works again.
    wait_until(Duration::from_secs(10), "slot given back", async || {
        metric(&p, "portico_downstream_connections{listener=\"quic\"}").await == Some(0.0)
    })
    .await;
    let (status, _) = tcp_get(&pki, port, "a.test", "/after").await;
    assert_eq!(status, 200);

    // A header section over max_request_headers_kb: 431, nothing upstream.
    let before = slow.hits();
    let big = "v".repeat(2048);
    let (rs, _) = h3(
        &dir,
        job(
            port,
            &pki,
            "a.test",
            json!([{"path": "/big", "authority": "a.test", "headers": [["x-big", big]]}]),
        ),
    )
    .await;
    assert_eq!(rs[0]["status"], 431, "{}", rs[0]);
    assert_eq!(slow.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_idle_connection_closes_after_keepalive_timeout() {
    let dir = need_aioquic!("http3_idle_connection_closes_after_keepalive_timeout");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let up = Upstream::start("a").await;
    let mappings = vec![mapping_doc("ma", "a.test", "/", &up.addr.to_string(), "")];
    let (p, port) = start(&pki, &a, &b, "keepalive_timeout_ms: 500", &mappings).await;
    // The client keeps its connection (60 s idle timeout of its own) for 8 s without traffic;
    // Portico's idle timeout (the listener's keep-alive timeout) closes it well before.
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/", "authority": "a.test"}]),
    );
    j["hold"] = json!(8);
    let d = dir.clone();
    let held = tokio::spawn(async move { h3(&d, j).await });
    let gauge = "portico_downstream_connections{listener=\"quic\"}";
    wait_until(
        Duration::from_secs(20),
        "the QUIC connection opened",
        async || up.count() >= 1,
    )
    .await;
    let start = std::time::Instant::now();
    wait_until(
        Duration::from_secs(6),
        "idle QUIC connection closed",
        async || metric(&p, gauge).await == Some(0.0),
    )
    .await;
    assert!(
        !held.is_finished(),
        "closed by Portico while the client still held it ({:?})",
        start.elapsed()
    );
    let (rs, _) = held.await.expect("join");
    assert_eq!(rs[0]["status"], 200);
}
