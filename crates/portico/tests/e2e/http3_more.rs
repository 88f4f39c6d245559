//! HTTP/3 hardening (reference §10) through the real binary with the third-party `aioquic`
//! client (`h3client.py`): the send-side watchdog on HTTP/3 streams (a client that reads
//! nothing is reset after `idle_timeout_ms`, a response still streaming at `timeout_ms` is
//! reset), HTTP/3 GOAWAY when the overload manager sees memory pressure, and mTLS over QUIC
//! (a Host with `ca_file` requires client certificates on HTTP/3 too).

use crate::common;
use crate::http3::{aioquic, h3, header, job, mapping_doc, need_aioquic};
use crate::tls::{Pki, host_doc};
use common::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::{Value, json};

/// H3_REQUEST_CANCELLED (RFC 9114 §8.1).
const H3_REQUEST_CANCELLED: u64 = 0x10c;
/// H3_REQUEST_REJECTED: the close code of an mTLS Host's connection without an acceptable
/// client certificate that got past the handshake.
const H3_REQUEST_REJECTED: u64 = 0x10b;
const BODY: usize = 32 * 1024 * 1024;

/// An upstream answering every request with `BODY` bytes (one shared buffer).
async fn big_upstream() -> Upstream {
    let body = Bytes::from(vec![b'x'; BODY]);
    Upstream::with(
        "big",
        Arc::new(move |_s: &Seen| Response::new(Full::new(body.clone()))),
    )
    .await
}

fn flags(l: &Value) -> Vec<String> {
    l["flags"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// Polls the access log until a line for `path` is there (up to `limit`).
async fn log_line(p: &Portico, path: &str, limit: Duration) -> Option<Value> {
    let find = || p.access_log().into_iter().find(|l| l["path"] == path);
    eventually(limit, async || find().is_some()).await;
    find()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_slow_and_silent_readers_are_reset() {
    let dir = need_aioquic!("http3_slow_and_silent_readers_are_reset");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let big = big_upstream().await;
    let small = Upstream::start("small").await;
    let port = free_port();
    let docs = [
        host_doc("a", "a.test", &a, "", ""),
        mapping_doc(
            "i",
            "*",
            "/i/",
            &big.addr.to_string(),
            "  timeout_ms: 60000\n  idle_timeout_ms: 500\n",
        ),
        mapping_doc(
            "t",
            "*",
            "/t/",
            &big.addr.to_string(),
            "  timeout_ms: 1500\n  idle_timeout_ms: 60000\n",
        ),
        mapping_doc("s", "*", "/s/", &small.addr.to_string(), ""),
    ]
    .join("---\n");
    let p =
        Portico::start_with_listeners(&listener_doc("quic", port, "HTTPS", "http3: true"), &docs)
            .await;

    // Idle: the client never opens the stream's window past the first MiB; the stream is
    // reset after the idle timeout, and the connection goes on serving.
    let started = Instant::now();
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([
            {"path": "/i/a", "authority": "a.test", "no_read": true},
            {"path": "/s/a", "authority": "a.test"},
        ]),
    );
    j["timeout"] = json!(60);
    let (rs, sum) = h3(&dir, j).await;
    let took = started.elapsed();
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert_eq!(rs[0]["reset"], H3_REQUEST_CANCELLED, "{}", rs[0]);
    assert!(
        rs[0]["body_len"].as_u64().unwrap_or(u64::MAX) < BODY as u64,
        "{}",
        rs[0]
    );
    assert_eq!(rs[1]["status"], 200, "{}", rs[1]);
    assert_eq!(rs[1]["body"], "upstream small");
    assert!(took < Duration::from_secs(30), "reset only after {took:?}");
    let l = log_line(&p, "/i/a", Duration::from_secs(10))
        .await
        .expect("access log line for /i/a");
    assert_eq!(l["status"], 200, "{l}");
    assert_eq!(l["protocol"], "HTTP/3", "{l}");
    assert!(flags(&l).contains(&"SI".to_string()), "{l}");

    // Deadline: a response still streaming at timeout_ms is reset (flag UT).
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/t/a", "authority": "a.test", "no_read": true}]),
    );
    j["timeout"] = json!(60);
    let (rs, sum) = h3(&dir, j).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["reset"], H3_REQUEST_CANCELLED, "{}", rs[0]);
    let l = log_line(&p, "/t/a", Duration::from_secs(10))
        .await
        .expect("access log line for /t/a");
    assert_eq!(l["status"], 200, "{l}");
    assert!(flags(&l).contains(&"UT".to_string()), "{l}");
}

/// Polls `/metrics` until `series` satisfies `want` (15 s at most); returns its last value.
async fn wait_metric(p: &Portico, series: &str, want: impl Fn(f64) -> bool) -> f64 {
    let mut last = f64::NAN;
    eventually(Duration::from_secs(15), async || {
        last = metric(p, series).await.unwrap_or(f64::NAN);
        want(last)
    })
    .await;
    last
}

/// Writes a `/proc/self/status`-like file saying RSS is `kb` (atomically).
fn write_rss(path: &std::path::Path, kb: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("Name:\tportico\nVmRSS:\t{kb} kB\n")).expect("write rss");
    std::fs::rename(&tmp, path).expect("rename rss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_memory_pressure_sends_goaway() {
    let dir = need_aioquic!("http3_memory_pressure_sends_goaway");
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let up = Upstream::start("up").await;
    let rss_dir = tempfile::tempdir().expect("tempdir");
    let rss = rss_dir.path().join("status");
    write_rss(&rss, 10 * 1024);
    let rss_arg = rss.display().to_string();
    let port = free_port();
    let docs = [
        listener_doc("quic", port, "HTTPS", "http3: true"),
        host_doc("a", "a.test", &a, "", ""),
        mapping_doc("m", "*", "/", &up.addr.to_string(), ""),
    ]
    .join("---\n");
    let p = Portico::start_with(
        &docs,
        &[
            "--overload-max-memory-mb",
            "100",
            "--overload-rss-file",
            &rss_arg,
        ],
    )
    .await;
    let state = "portico_overload_state{resource=\"memory\"}";
    assert_eq!(wait_metric(&p, state, |v| v == 0.0).await, 0.0);

    // A connection serves one request, then waits for the server's GOAWAY.
    let mut j = job(
        port,
        &pki,
        "a.test",
        json!([{"path": "/before", "authority": "a.test"}]),
    );
    j["wait_goaway"] = json!(true);
    j["goaway_timeout"] = json!(30);
    let client = tokio::spawn({
        let dir = dir.clone();
        async move { h3(&dir, j).await }
    });
    assert!(
        eventually(Duration::from_secs(30), async || up.count() >= 1).await,
        "the HTTP/3 request never reached the upstream"
    );
    // Memory crosses the threshold: the open QUIC connection gets GOAWAY.
    write_rss(&rss, 150 * 1024);
    assert_eq!(wait_metric(&p, state, |v| v == 1.0).await, 1.0);
    let (rs, sum) = client.await.expect("client task");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert_eq!(
        sum["errors"],
        json!([]),
        "no GOAWAY under memory pressure: {sum}"
    );
    assert_eq!(sum["goaway"], true, "{sum}");
    let closed = metric(
        &p,
        "portico_overload_actions_total{action=\"disable_keepalive\"}",
    )
    .await;
    assert!(closed.is_some_and(|v| v >= 1.0), "{closed:?}");

    // New HTTP/3 requests under pressure are shed like the others.
    let (rs, sum) = h3(
        &dir,
        job(
            port,
            &pki,
            "a.test",
            json!([{"path": "/during", "authority": "a.test"}]),
        ),
    )
    .await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 503, "{}", rs[0]);
    assert_eq!(header(&rs[0], "x-portico-overloaded"), Some("true"));
    assert_eq!(up.count(), 1, "a shed request reached the upstream");
}

/// Whether a job's connection was refused: it failed, or the server closed it, and no
/// request got an answer.
fn refused(rs: &[Value], sum: &Value) -> bool {
    let failed = sum["errors"].as_array().is_some_and(|e| !e.is_empty());
    let closed = !sum["terminated"].is_null();
    (failed || closed) && rs.iter().all(|r| r["status"].is_null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_mtls_requires_client_certificates() {
    let dir = need_aioquic!("http3_mtls_requires_client_certificates");
    let pki = Pki::new();
    let other = Pki::new();
    let m = pki.leaf("m", "mtls.test", &["mtls.test"], false);
    let o = pki.leaf("o", "open.test", &["open.test"], false);
    let m2 = pki.leaf("m2", "mtls2.test", &["mtls2.test"], false);
    let client = pki.leaf("client", "client-one", &["client-one.test"], true);
    // Signed by the CA of the second mTLS Host only.
    let stranger = other.leaf("stranger", "client-two", &["client-two.test"], true);
    let up = Upstream::start("u").await;
    let port = free_port();
    let docs = [
        host_doc(
            "m",
            "mtls.test",
            &m,
            &format!(", ca_file: {}", pki.path("ca.pem").display()),
            "",
        ),
        host_doc(
            "m2",
            "mtls2.test",
            &m2,
            &format!(", ca_file: {}", other.path("ca.pem").display()),
            "",
        ),
        host_doc("o", "open.test", &o, "", ""),
        mapping_doc("all", "*", "/", &up.addr.to_string(), ""),
    ]
    .join("---\n");
    let p =
        Portico::start_with_listeners(&listener_doc("quic", port, "HTTPS", "http3: true"), &docs)
            .await;
    let with_cert = |sni: &str, leaf: Option<&crate::tls::Leaf>| {
        let mut j = job(
            port,
            &pki,
            sni,
            json!([{"path": format!("/{sni}"), "authority": sni,
                    "headers": [["x-forwarded-client-cert", "Subject=\"CN=forged\""]]}]),
        );
        if let Some(l) = leaf {
            j["cert"] = json!(l.cert.display().to_string());
            j["key"] = json!(l.key.display().to_string());
        }
        j["timeout"] = json!(30);
        j
    };

    // Without a client certificate: the handshake fails (the client may see its own side
    // complete first, then the server's close), nothing reaches the upstream.
    let (rs, sum) = h3(&dir, with_cert("mtls.test", None)).await;
    assert!(refused(&rs, &sum), "no client cert must fail: {rs:?} {sum}");
    assert_eq!(up.count(), 0);

    // With one signed by the Host's ca_file: served, identity forwarded, forged header gone.
    let (rs, sum) = h3(&dir, with_cert("mtls.test", Some(&client))).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert_eq!(rs[0]["body"], "upstream u");
    let xfcc = up.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=client-one\""), "{xfcc}");
    assert!(!xfcc.contains("forged"), "{xfcc}");
    let l = log_line(&p, "/mtls.test", Duration::from_secs(10))
        .await
        .expect("access log line");
    assert_eq!(l["protocol"], "HTTP/3", "{l}");
    assert_eq!(l["client_cert"], xfcc.as_str(), "{l}");

    // A certificate another mTLS Host accepts, but not this one: refused before any request.
    let served = up.count();
    let (rs, sum) = h3(&dir, with_cert("mtls.test", Some(&stranger))).await;
    assert!(refused(&rs, &sum), "{rs:?} {sum}");
    assert_eq!(sum["terminated"], H3_REQUEST_REJECTED, "{sum}");
    assert_eq!(
        up.count(),
        served,
        "a request without an accepted cert was served"
    );
    // ...and that Host itself accepts it.
    let (rs, sum) = h3(&dir, with_cert("mtls2.test", Some(&stranger))).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    let xfcc = up.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(xfcc.contains("Subject=\"CN=client-two\""), "{xfcc}");

    // ca_file applies to its Host only: no certificate needed (nor asked for) elsewhere.
    let (rs, sum) = h3(&dir, with_cert("open.test", None)).await;
    assert_eq!(sum["errors"], json!([]), "{sum}");
    assert_eq!(rs[0]["status"], 200, "{}", rs[0]);
    assert!(
        !up.last().headers.contains_key("x-forwarded-client-cert"),
        "forged header forwarded"
    );
}
