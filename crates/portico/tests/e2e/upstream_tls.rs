//! TLS to upstreams through the real binary: CA verification with `ca_file`, SNI and IP
//! identities, a wrong CA (503 UF), `insecure_skip_verify`, client certificates (mTLS to the
//! upstream), and ALPN (`auto` speaks HTTP/2 when the upstream offers it). Certificates are
//! generated at test time with rcgen.

use crate::common;
use common::*;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A test CA that writes PEM files into a directory.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("ca");
        let ca = Ca {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write ca");
        ca
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A leaf certificate for `names` (+ 127.0.0.1); returns (chain file, key file).
    fn leaf(&self, leaf: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        params.distinguished_name.push(DnType::CommonName, leaf);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let chain = self.dir.join(format!("{leaf}.pem"));
        let key_file = self.dir.join(format!("{leaf}.key"));
        std::fs::write(&chain, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (chain, key_file)
    }
}

fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("open pem")
        .map(|c| c.expect("pem cert"))
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS upstream: answers 200 `tls <version>`, records the HTTP versions it saw and counts
/// the connections it accepted. Paths under `/slow/` are answered after `SLOW`; `peak` is the
/// most requests it had in flight at once. `/healthz` answers `health_status` (200 at first)
/// and is counted in `health_hits` (with its HTTP version in `health_versions`) instead; so is
/// a grpc.health.v1 Check, answered SERVING while `health_status` is 200.
struct TlsUpstream {
    addr: SocketAddr,
    versions: Arc<Mutex<Vec<http::Version>>>,
    connections: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    health_status: Arc<AtomicU16>,
    health_hits: Arc<AtomicUsize>,
    health_versions: Arc<Mutex<Vec<http::Version>>>,
}

const SLOW: std::time::Duration = std::time::Duration::from_millis(300);

impl TlsUpstream {
    async fn start(
        chain: &Path,
        key: &Path,
        alpn: &[&[u8]],
        client_ca: Option<&Path>,
    ) -> TlsUpstream {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certs(ca) {
                    roots.add(c).expect("root");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let mut config = builder
            .with_single_cert(load_certs(chain), key)
            .expect("server config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let versions: Arc<Mutex<Vec<http::Version>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (v2, c2, p2) = (versions.clone(), connections.clone(), peak.clone());
        let health_status = Arc::new(AtomicU16::new(200));
        let health_hits = Arc::new(AtomicUsize::new(0));
        let health_versions: Arc<Mutex<Vec<http::Version>>> = Arc::default();
        let health = (
            health_status.clone(),
            health_hits.clone(),
            health_versions.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let versions = v2.clone();
                let connections = c2.clone();
                let (peak, in_flight) = (p2.clone(), in_flight.clone());
                let health = health.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let versions = versions.clone();
                        let (peak, in_flight) = (peak.clone(), in_flight.clone());
                        let (status, hits, hversions) = health.clone();
                        async move {
                            if req.uri().path() == "/grpc.health.v1.Health/Check" {
                                // grpc.health.v1: SERVING (1) while health_status is 200,
                                // else NOT_SERVING (2); grpc-status in the head.
                                hits.fetch_add(1, Ordering::SeqCst);
                                hversions.lock().expect("lock").push(req.version());
                                let serving = if status.load(Ordering::SeqCst) == 200 {
                                    1
                                } else {
                                    2
                                };
                                let mut r = Response::new(Full::new(Bytes::from(vec![
                                    0, 0, 0, 0, 2, 0x08, serving,
                                ])));
                                r.headers_mut().insert(
                                    http::header::CONTENT_TYPE,
                                    http::HeaderValue::from_static("application/grpc"),
                                );
                                r.headers_mut()
                                    .insert("grpc-status", http::HeaderValue::from_static("0"));
                                return Ok::<_, Infallible>(r);
                            }
                            if req.uri().path().starts_with("/healthz") {
                                hits.fetch_add(1, Ordering::SeqCst);
                                hversions.lock().expect("lock").push(req.version());
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() =
                                    http::StatusCode::from_u16(status.load(Ordering::SeqCst))
                                        .expect("status");
                                return Ok::<_, Infallible>(r);
                            }
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            if req.uri().path().contains("/slow/") {
                                tokio::time::sleep(SLOW).await;
                            }
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            versions.lock().expect("lock").push(req.version());
                            let body = format!("tls {:?}", req.version());
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            versions,
            connections,
            peak,
            health_status,
            health_hits,
            health_versions,
        }
    }

    fn last_version(&self) -> Option<http::Version> {
        self.versions.lock().expect("lock").last().copied()
    }
}

fn upstream_doc(name: &str, addr: SocketAddr, protocol: &str, tls: &str) -> String {
    format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec: {{ endpoints: [\"{addr}\"], protocol: {protocol}, tls: {tls} }}\n"
    )
}

fn mapping_doc(name: &str, prefix: &str, upstream: &str) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: {prefix}, service: {upstream} }}\n"
    )
}

fn join(docs: &[String]) -> String {
    docs.join("---\n")
}

/// `n` concurrent HTTP/1.1 GETs to `prefix` + index (each on its own client connection when
/// they overlap); the bodies, in order.
async fn concurrent_gets(p: &Portico, prefix: &str, n: usize) -> Vec<Result<String, String>> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = p.url(&format!("{prefix}{i}"));
        tasks.push(tokio::spawn(async move {
            http_get(&url, &[]).await.map(|r| r.text())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_with_ca_file_by_sni_and_by_ip() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "good");
    let (chain, key) = ca.leaf("server", &["backend.test"]);
    let up = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let ca_file = ca.ca_file().display().to_string();
    let p = Portico::start(&join(&[
        upstream_doc(
            "by-sni",
            up.addr,
            "https",
            &format!("{{ ca_file: \"{ca_file}\", sni: backend.test }}"),
        ),
        upstream_doc(
            "by-ip",
            up.addr,
            "https",
            &format!("{{ ca_file: \"{ca_file}\" }}"),
        ),
        upstream_doc(
            "bad-name",
            up.addr,
            "https",
            &format!("{{ ca_file: \"{ca_file}\", sni: other.test }}"),
        ),
        mapping_doc("sni", "/sni/", "by-sni"),
        mapping_doc("ip", "/ip/", "by-ip"),
        mapping_doc("bad", "/bad/", "bad-name"),
    ]))
    .await;

    for i in 0..5 {
        let r = get(&p.url(&format!("/sni/{i}")), &[]).await;
        assert_eq!(r.status, 200, "{}", p.stderr());
        assert_eq!(r.text(), "tls HTTP/1.1");
    }
    // Keep-alive: five sequential requests over at most one connection per worker.
    assert!(up.connections.load(Ordering::SeqCst) <= 2);
    let r = get(&p.url("/ip/x"), &[]).await;
    assert_eq!(r.status, 200);
    // A certificate that does not carry the SNI name: the handshake fails, 503 UF.
    let r = get(&p.url("/bad/x"), &[]).await;
    assert_eq!(r.status, 503);
    let log = p.wait_log_lines(7).await;
    let bad = log.iter().find(|l| l["path"] == "/bad/x").expect("log");
    assert_eq!(bad["flags"], "UF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_a_connect_failure_503_uf() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = Ca::new(dir.path(), "good");
    let other = Ca::new(dir.path(), "other");
    let (chain, key) = good.leaf("server", &["backend.test"]);
    let up = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let p = Portico::start(&join(&[
        upstream_doc(
            "wrong",
            up.addr,
            "https",
            &format!(
                "{{ ca_file: \"{}\", sni: backend.test }}",
                other.ca_file().display()
            ),
        ),
        // No ca_file: the built-in public roots, which do not know this test CA either.
        upstream_doc("public", up.addr, "https", "{ sni: backend.test }"),
        mapping_doc("wrong", "/wrong/", "wrong"),
        mapping_doc("public", "/public/", "public"),
    ]))
    .await;
    let r = get(&p.url("/wrong/x"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "upstream connect failure\n");
    let r = get(&p.url("/public/x"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.connections.load(Ordering::SeqCst), 0);
    let log = p.wait_log_lines(2).await;
    assert!(log.iter().all(|l| l["flags"] == "UF"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_skip_verify_accepts_any_certificate_and_warns() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "unknown");
    let (chain, key) = ca.leaf("server", &["whatever.test"]);
    let up = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let p = Portico::start(&join(&[
        upstream_doc(
            "lax",
            up.addr,
            "https",
            "{ insecure_skip_verify: true, sni: not-the-name.test }",
        ),
        mapping_doc("lax", "/lax/", "lax"),
    ]))
    .await;
    let r = get(&p.url("/lax/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "tls HTTP/1.1");
    let err = p.stderr();
    assert_eq!(
        err.matches("insecure_skip_verify").count(),
        1,
        "one warning expected: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_to_upstream_mtls() {
    let dir = tempfile::tempdir().expect("tmp");
    let server_ca = Ca::new(dir.path(), "server");
    let client_ca = Ca::new(dir.path(), "clients");
    let (chain, key) = server_ca.leaf("server", &["backend.test"]);
    let (client_chain, client_key) = client_ca.leaf("portico-client", &["portico.test"]);
    let up = TlsUpstream::start(&chain, &key, &[b"http/1.1"], Some(&client_ca.ca_file())).await;
    let ca_file = server_ca.ca_file().display().to_string();
    let p = Portico::start(&join(&[
        upstream_doc(
            "mtls",
            up.addr,
            "https",
            &format!(
                "{{ ca_file: \"{ca_file}\", sni: backend.test, cert_chain_file: \"{}\", private_key_file: \"{}\" }}",
                client_chain.display(),
                client_key.display()
            ),
        ),
        upstream_doc(
            "nocert",
            up.addr,
            "https",
            &format!("{{ ca_file: \"{ca_file}\", sni: backend.test }}"),
        ),
        mapping_doc("mtls", "/mtls/", "mtls"),
        mapping_doc("nocert", "/nocert/", "nocert"),
    ]))
    .await;
    let r = get(&p.url("/mtls/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", p.stderr());
    assert_eq!(r.text(), "tls HTTP/1.1");
    // Without a client certificate the upstream refuses: with TLS 1.3 the client learns it
    // only after its side of the handshake, so this is a 503 (connect) or a 502 (reset).
    let r = get(&p.url("/nocert/x"), &[]).await;
    assert!(r.status == 503 || r.status == 502, "{}", r.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_negotiates_h2_by_alpn_and_https_stays_http1() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "good");
    let (chain, key) = ca.leaf("server", &["backend.test"]);
    let up = TlsUpstream::start(&chain, &key, &[b"h2", b"http/1.1"], None).await;
    let h1only = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let tls = format!(
        "{{ ca_file: \"{}\", sni: backend.test }}",
        ca.ca_file().display()
    );
    let p = Portico::start(&join(&[
        upstream_doc("auto", up.addr, "auto", &tls),
        upstream_doc("https", up.addr, "https", &tls),
        upstream_doc("auto-h1", h1only.addr, "auto", &tls),
        mapping_doc("auto", "/auto/", "auto"),
        mapping_doc("https", "/https/", "https"),
        mapping_doc("auto-h1", "/autoh1/", "auto-h1"),
    ]))
    .await;

    // HTTP/1.1 downstream -> HTTP/2 upstream over TLS, multiplexed.
    let r = get(&p.url("/auto/a"), &[]).await;
    assert_eq!(r.status, 200, "{}", p.stderr());
    assert_eq!(r.text(), "tls HTTP/2.0");
    assert_eq!(up.last_version(), Some(http::Version::HTTP_2));
    // 40 concurrent HTTP/1.1 requests, each held 300 ms by the upstream: they overlap there,
    // yet share at most one h2 connection per worker (2 workers).
    let results = concurrent_gets(&p, "/auto/slow/", 40).await;
    assert!(
        results.iter().all(|r| r.as_deref() == Ok("tls HTTP/2.0")),
        "{results:?}"
    );
    let connections = up.connections.load(Ordering::SeqCst);
    let peak = up.peak.load(Ordering::SeqCst);
    eprintln!(
        "auto (TLS h2): 40 concurrent requests, peak {peak} in flight, {connections} connection(s)"
    );
    assert!(
        peak >= 10,
        "the requests overlapped at the upstream: peak {peak}"
    );
    assert!(connections <= 2, "multiplexed: {connections} connections");
    // h2c downstream -> h2 upstream as well.
    let r = send(request("GET", &p.url("/auto/h2"), &[], ""), true)
        .await
        .expect("h2c");
    assert_eq!(r.text(), "tls HTTP/2.0");

    // `https` offers only http/1.1.
    let r = get(&p.url("/https/a"), &[]).await;
    assert_eq!(r.text(), "tls HTTP/1.1");
    assert_eq!(up.last_version(), Some(http::Version::HTTP_11));
    // `auto` against an upstream that only speaks http/1.1 falls back to it.
    let r = get(&p.url("/autoh1/a"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "tls HTTP/1.1");
    let r = send(request("GET", &p.url("/autoh1/b"), &[], ""), true)
        .await
        .expect("h2c");
    assert_eq!(r.text(), "tls HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_multiplexes_concurrent_requests_over_few_connections() {
    // Each request is held 300 ms by the upstream, so 40 at once overlap there.
    let up = Controlled::start("h2c", std::time::Duration::from_millis(300)).await;
    let h1 = Controlled::start("h1", std::time::Duration::from_millis(300)).await;
    let p = Portico::start(&join(&[
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: h2c }}\nspec: {{ prefix: /h2c/, service: \"h2c://{}\" }}\n",
            up.addr
        ),
        format!(
            "{API}\nkind: Mapping\nmetadata: {{ name: h1 }}\nspec: {{ prefix: /h1/, service: \"{}\" }}\n",
            h1.addr
        ),
    ]))
    .await;
    let results = concurrent_gets(&p, "/h2c/", 40).await;
    assert!(
        results.iter().all(|r| r.as_deref() == Ok("upstream h2c")),
        "{results:?}"
    );
    let (connections, peak) = (
        up.connections.load(Ordering::SeqCst),
        up.peak.load(Ordering::SeqCst),
    );
    // The control: the same burst to an HTTP/1.1 upstream needs a connection per request in
    // flight, so the counter does see parallel connections when there are some.
    let results = concurrent_gets(&p, "/h1/", 40).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let (h1_connections, h1_peak) = (
        h1.connections.load(Ordering::SeqCst),
        h1.peak.load(Ordering::SeqCst),
    );
    eprintln!(
        "h2c: 40 concurrent requests, peak {peak} in flight, {connections} connection(s); \
         http1 control: peak {h1_peak}, {h1_connections} connections"
    );
    assert!(peak >= 10, "the h2c requests overlapped: peak {peak}");
    assert!(connections <= 2, "multiplexed: {connections} connections");
    assert!(
        h1_connections >= h1_peak && h1_peak >= 10,
        "HTTP/1.1 control: {h1_connections} connections for peak {h1_peak}"
    );
}

/// The `/upstreams` state of the endpoint at `addr` in upstream `name`.
async fn endpoint_state(p: &Portico, name: &str, addr: SocketAddr) -> String {
    let addr = addr.to_string();
    endpoint_states(p, name)
        .await
        .into_iter()
        .find(|(a, _, _)| *a == addr)
        .map(|(_, s, _)| s)
        .unwrap_or_default()
}

/// Polls `/upstreams` every 10 ms until the endpoint is in `state`; panics after `limit`.
async fn wait_endpoint_state(
    p: &Portico,
    name: &str,
    addr: SocketAddr,
    state: &str,
    limit: std::time::Duration,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    let reached = eventually(limit, async || endpoint_state(p, name, addr).await == state).await;
    assert!(
        reached,
        "{addr} of {name} not {state} within {limit:?}: {:?}",
        endpoint_states(p, name).await
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_over_tls_see_a_failing_healthz_and_not_serving() {
    // Two TLS endpoints per upstream: `https` (HTTP/1.1 over TLS) and `auto` (h2 by ALPN).
    // The first endpoint of each will answer its /healthz with 500 while it still accepts
    // TLS connections: only a real HTTP check over TLS can notice.
    let dir = tempfile::tempdir().expect("tmp");
    let ca = Ca::new(dir.path(), "good");
    let (chain, key) = ca.leaf("server", &["backend.test"]);
    let h1_bad = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let h1_good = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let h2_bad = TlsUpstream::start(&chain, &key, &[b"h2", b"http/1.1"], None).await;
    let h2_good = TlsUpstream::start(&chain, &key, &[b"h2", b"http/1.1"], None).await;
    let tls = format!(
        "{{ ca_file: \"{}\", sni: backend.test }}",
        ca.ca_file().display()
    );
    let pool = |name: &str, protocol: &str, a: SocketAddr, b: SocketAddr, check: &str| {
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec:\n  endpoints: [\"{a}\", \"{b}\"]\n  protocol: {protocol}\n  tls: {tls}\n  health_checks: [{{ {check}, interval_ms: 200, timeout_ms: 1000, unhealthy_threshold: 2, healthy_threshold: 2 }}]\n"
        )
    };
    let http_check = "path: /healthz";
    let p = Portico::start(&join(&[
        pool("tls-h1", "https", h1_bad.addr, h1_good.addr, http_check),
        pool("tls-h2", "auto", h2_bad.addr, h2_good.addr, http_check),
        // The same two h2 endpoints, checked with grpc.health.v1 over TLS.
        pool("tls-grpc", "auto", h2_bad.addr, h2_good.addr, "grpc: {}"),
        mapping_doc("h1", "/h1/", "tls-h1"),
        mapping_doc("h2", "/h2/", "tls-h2"),
    ]))
    .await;
    // The checks reach /healthz over TLS, in the protocol ALPN picked.
    let arrived = eventually(std::time::Duration::from_secs(5), async || {
        h1_bad.health_hits.load(Ordering::SeqCst) > 0
            && h2_bad.health_hits.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(arrived, "no health check arrived: {}", p.stderr());
    assert_eq!(
        h1_bad.health_versions.lock().expect("lock")[0],
        http::Version::HTTP_11
    );
    assert_eq!(
        h2_bad.health_versions.lock().expect("lock")[0],
        http::Version::HTTP_2
    );
    assert_eq!(endpoint_state(&p, "tls-h1", h1_bad.addr).await, "healthy");
    assert_eq!(endpoint_state(&p, "tls-grpc", h2_bad.addr).await, "healthy");

    h1_bad.health_status.store(500, Ordering::SeqCst);
    h2_bad.health_status.store(500, Ordering::SeqCst);
    let limit = std::time::Duration::from_secs(3);
    let out1 = wait_endpoint_state(&p, "tls-h1", h1_bad.addr, "unhealthy", limit).await;
    let out2 = wait_endpoint_state(&p, "tls-h2", h2_bad.addr, "unhealthy", limit).await;
    eprintln!("unhealthy after {out1:?} (https) and {out2:?} (auto/h2), threshold 2 x 200 ms");
    // Two failing rounds of 200 ms (± 10% jitter), plus a TLS handshake per probe.
    assert!(
        out1 + out2 <= std::time::Duration::from_millis(2 * 220 + 400),
        "{out1:?} + {out2:?}"
    );
    let out3 = wait_endpoint_state(&p, "tls-grpc", h2_bad.addr, "unhealthy", limit).await;
    eprintln!("gRPC check over TLS: NOT_SERVING seen {out3:?} later");
    assert_eq!(endpoint_state(&p, "tls-h1", h1_good.addr).await, "healthy");
    assert_eq!(endpoint_state(&p, "tls-h2", h2_good.addr).await, "healthy");
    assert_eq!(
        endpoint_state(&p, "tls-grpc", h2_good.addr).await,
        "healthy"
    );
    // Out of rotation: every request goes to the healthy endpoint.
    let (bad1, bad2) = (
        h1_bad.versions.lock().expect("lock").len(),
        h2_bad.versions.lock().expect("lock").len(),
    );
    for i in 0..20 {
        assert_eq!(get(&p.url(&format!("/h1/{i}")), &[]).await.status, 200);
        assert_eq!(get(&p.url(&format!("/h2/{i}")), &[]).await.status, 200);
    }
    assert_eq!(h1_bad.versions.lock().expect("lock").len(), bad1);
    assert_eq!(h2_bad.versions.lock().expect("lock").len(), bad2);
    assert_eq!(h1_good.versions.lock().expect("lock").len(), 20);
    assert_eq!(h2_good.versions.lock().expect("lock").len(), 20);

    // And back after two passes.
    h1_bad.health_status.store(200, Ordering::SeqCst);
    wait_endpoint_state(&p, "tls-h1", h1_bad.addr, "healthy", limit).await;
}

/// The edge-auth check goes through the same upstream client, pools and TLS settings as
/// proxying: an `AuthService` naming an HTTPS Upstream is verified with that Upstream's
/// `ca_file` (the check passes: the TLS server answers 200), its connection is pooled across
/// checks, and the same service behind the wrong CA is an auth failure (403 UAEX) that never
/// reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_service_over_https_uses_the_upstream_tls_settings_and_pool() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = Ca::new(dir.path(), "good");
    let other = Ca::new(dir.path(), "other");
    let (chain, key) = good.leaf("auth", &["auth.test"]);
    let auth = TlsUpstream::start(&chain, &key, &[b"http/1.1"], None).await;
    let app = Upstream::start("app").await;
    let config = |ca: &Path| {
        join(&[
            upstream_doc(
                "authtls",
                auth.addr,
                "https",
                &format!("{{ ca_file: \"{}\", sni: auth.test }}", ca.display()),
            ),
            format!(
                "{API}\nkind: AuthService\nmetadata: {{ name: auth }}\nspec: {{ auth_service: authtls, path_prefix: /check, timeout_ms: 5000 }}\n"
            ),
            mapping_doc("app", "/app/", &app.addr.to_string()),
        ])
    };
    let p = Portico::start(&config(&good.ca_file())).await;
    for i in 0..5 {
        let r = get(&p.url(&format!("/app/{i}")), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(app.count(), 5);
    // Pools are per worker (at most one per core here): five checks without pooling would be
    // five handshakes.
    let conns = auth.connections.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&conns),
        "five checks took {conns} TLS connections"
    );
    assert_eq!(auth.last_version(), Some(http::Version::HTTP_11));

    drop(p);

    let p = Portico::start(&config(&other.ca_file())).await;
    let r = get(&p.url("/app/denied"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(app.count(), 5, "the app never saw the request");
    let lines = p.wait_log_lines(1).await;
    let last = lines.last().expect("log line");
    assert_eq!(last["flags"], "UAEX", "{last}");
}
