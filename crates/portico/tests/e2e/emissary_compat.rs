//! Emissary configs through the real binary (docs/reference.md §2.6): hostname ports, `:authority`
//! matches, `host_regex`, `method_regex`, `use_websocket`, the self-signed certificate of
//! HTTPS listeners when no Host has TLS, X.509 v1 server certificates, Module `gzip`, the
//! namespaced `route` of the access log and metrics, and `check --strict-kinds`.

use crate::common;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EM: &str = "apiVersion: getambassador.io/v3alpha1";

/// One HTTP/1.1 request with `host` as its Host header; the whole answer.
async fn host_get(port: u16, method: &str, host: &str, path: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req =
        format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn upstream_of(answer: &str) -> Option<&str> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-upstream: "))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emissary_route_predicates_through_the_binary() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let docs = format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: port8500 }}\nspec: {{ hostname: \"quote.local:8500\", prefix: /q/, service: \"{a}\" }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: authority }}\nspec: {{ prefix: /auth/, service: \"{a}\", headers: {{ \":authority\": api.example.com }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: hostrx }}\nspec: {{ hostname: \"[a-z]+\\\\.shop\\\\.test\", host_regex: true, prefix: /h/, service: \"{a}\" }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: methodrx }}\nspec: {{ method: \"GET|HEAD\", method_regex: true, prefix: /m/, service: \"{a}\" }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: fallback }}\nspec: {{ prefix: /, service: \"{b}\" }}\n",
        a = a.addr,
        b = b.addr
    );
    let p = Portico::start(&docs).await;
    let port = p.port;
    // Hostname with a port: only that port.
    assert_eq!(
        upstream_of(&host_get(port, "GET", "quote.local:8500", "/q/", "").await),
        Some("a")
    );
    assert_eq!(
        upstream_of(&host_get(port, "GET", "quote.local", "/q/", "").await),
        Some("b")
    );
    assert_eq!(
        upstream_of(&host_get(port, "GET", "quote.local:8501", "/q/", "").await),
        Some("b")
    );
    // `:authority` header.
    assert_eq!(
        upstream_of(&host_get(port, "GET", "api.example.com", "/auth/", "").await),
        Some("a")
    );
    assert_eq!(
        upstream_of(&host_get(port, "GET", "web.example.com", "/auth/", "").await),
        Some("b")
    );
    // host_regex.
    assert_eq!(
        upstream_of(&host_get(port, "GET", "books.shop.test", "/h/", "").await),
        Some("a")
    );
    assert_eq!(
        upstream_of(&host_get(port, "GET", "books.shop.test.evil", "/h/", "").await),
        Some("b")
    );
    // method_regex.
    assert_eq!(
        upstream_of(&host_get(port, "HEAD", "x", "/m/", "").await),
        Some("a")
    );
    assert_eq!(
        upstream_of(&host_get(port, "GET", "x", "/m/", "").await),
        Some("a")
    );
    assert_eq!(
        upstream_of(&host_get(port, "POST", "x", "/m/", "content-length: 0\r\n").await),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_websocket_allows_the_upgrade() {
    let (ws_addr, accepted) = echo_server().await;
    let docs = format!(
        "{EM}\nkind: Mapping\nmetadata: {{ name: ws }}\nspec: {{ prefix: /ws/, service: \"{ws_addr}\", use_websocket: true }}\n"
    );
    let p = Portico::start(&docs).await;
    let mut ws = ws_connect(p.port, "/ws/chat").await.expect("upgrade");
    futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .expect("send");
    let echo = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .expect("echo in time")
    .expect("open")
    .expect("message");
    assert_eq!(echo, tokio_tungstenite::tungstenite::Message::text("hi"));
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_route_in_access_log_and_metrics_and_gzip_compression() {
    let body = "x".repeat(4096);
    let body2 = body.clone();
    let a = Upstream::with(
        "a",
        Arc::new(move |_s: &Seen| {
            let mut r =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body2.clone())));
            r.headers_mut()
                .insert("content-type", "text/plain".parse().expect("ct"));
            r
        }),
    )
    .await;
    let docs = format!(
        "{EM}\nkind: Module\nmetadata: {{ name: ambassador, namespace: ambassador }}\nspec: {{ config: {{ gzip: {{ min_content_length: 32 }} }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: quote, namespace: shop, uid: 1234, resourceVersion: \"9\" }}\nspec: {{ prefix: /shop/, service: \"{a}\" }}\nstatus: {{}}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: quote, namespace: blog }}\nspec: {{ prefix: /blog/, service: \"{a}\" }}\n",
        a = a.addr
    );
    let p = Portico::start(&docs).await;
    let answer = host_get(p.port, "GET", "x", "/shop/", "accept-encoding: gzip\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{answer}"
    );
    host_get(p.port, "GET", "x", "/blog/", "").await;
    let lines = p.wait_log_lines(2).await;
    let routes: Vec<&str> = lines.iter().filter_map(|l| l["route"].as_str()).collect();
    assert!(
        routes.contains(&"shop/quote") && routes.contains(&"blog/quote"),
        "{lines:?}"
    );
    let m = metric(
        &p,
        "portico_requests_total{route=\"shop/quote\",code=\"2xx\"}",
    )
    .await;
    assert!(m.is_some_and(|v| v >= 1.0), "{m:?}");
}

/// Accepts any server certificate and keeps the one presented.
#[derive(Debug)]
struct AnyCert(std::sync::Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A GET over TLS (any certificate accepted): the answer and the server's leaf certificate.
async fn tls_get(port: u16, sni: &str, path: &str) -> (String, Vec<u8>) {
    let verifier = Arc::new(AnyCert(std::sync::Mutex::new(None)));
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(sni.to_string()).expect("sni"), tcp)
        .await
        .expect("handshake");
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: {sni}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), tls.read_to_end(&mut out)).await;
    let cert = verifier
        .0
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .unwrap_or_default();
    (String::from_utf8_lossy(&out).into_owned(), cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_without_tls_hosts_serves_a_self_signed_certificate() {
    let a = Upstream::start("a").await;
    let https = free_port();
    // Emissary's stock Listener pair (on free ports) and a Host without TLS.
    let listeners = format!(
        "{EM}\nkind: Listener\nmetadata: {{ name: emissary-ingress-listener-8443 }}\nspec: {{ port: {https}, protocol: HTTPS, securityModel: XFP, hostBinding: {{ namespace: {{ from: ALL }} }} }}\n"
    );
    let docs = format!(
        "{EM}\nkind: Host\nmetadata: {{ name: wildcard }}\nspec: {{ requestPolicy: {{ insecure: {{ action: Route }} }} }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: quote }}\nspec: {{ prefix: /backend/, service: \"{a}\" }}\n",
        a = a.addr
    );
    let p = Portico::start_with_listeners(&listeners, &docs).await;
    let (answer, cert) = tls_get(https, "localhost", "/backend/x").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(upstream_of(&answer), Some("a"));
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert).expect("a certificate");
    assert_eq!(parsed.subject(), parsed.issuer(), "self-signed");
    assert!(
        p.stderr().contains("self-signed certificate"),
        "{}",
        p.stderr()
    );
    // Plain HTTP on the other listener still routes.
    assert_eq!(
        upstream_of(&host_get(p.port, "GET", "x", "/backend/", "").await),
        Some("a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_v1_server_certificates_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output();
        match out {
            Ok(o) => o.status.success(),
            Err(_) => false,
        }
    };
    // What `openssl x509 -req -signkey` makes: a version 1 certificate.
    let made = run(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "v1.key",
        "-subj",
        "/CN=v1.test",
        "-out",
        "v1.csr",
    ]) && run(&[
        "x509", "-req", "-in", "v1.csr", "-signkey", "v1.key", "-days", "2", "-out", "v1.crt",
    ]);
    if !made {
        skipped(
            "x509_v1_server_certificates_are_accepted",
            "openssl is not installed",
        );
        return;
    }
    let pem = std::fs::read(dir.path().join("v1.crt")).expect("crt");
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
        .map(|c: CertificateDer<'static>| c.to_vec())
        .expect("pem");
    let (_, c) = x509_parser::parse_x509_certificate(&der).expect("parse");
    assert_eq!(
        c.version(),
        x509_parser::x509::X509Version::V1,
        "openssl made a v1 certificate"
    );
    let a = Upstream::start("a").await;
    let https = free_port();
    let crt = dir.path().join("v1.crt").display().to_string();
    let key = dir.path().join("v1.key").display().to_string();
    let docs = format!(
        "{API}\nkind: Host\nmetadata: {{ name: v1 }}\nspec: {{ hostname: v1.test, tls: {{ cert_chain_file: \"{crt}\", private_key_file: \"{key}\" }} }}\n---\n\
         {API}\nkind: Mapping\nmetadata: {{ name: m }}\nspec: {{ prefix: /, service: \"{a}\" }}\n",
        a = a.addr
    );
    std::fs::write(dir.path().join("c.yaml"), &docs).expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "c.yaml"]);
    assert_eq!(code, 0, "{out}");
    let p = Portico::start_with_listeners(&listener_doc("tls", https, "HTTPS", ""), &docs).await;
    let (answer, cert) = tls_get(https, "v1.test", "/").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(cert, der);
    drop(p);
}

#[test]
fn check_strict_kinds_makes_foreign_kinds_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: quote, namespace: shop }}\nspec: {{ replicas: 1 }}\n---\n\
         {EM}\nkind: Mapping\nmetadata: {{ name: quote, namespace: shop }}\nspec: {{ prefix: /, service: quote }}\n"
    );
    std::fs::write(dir.path().join("k.yaml"), text).expect("write");
    let (code, out, _) = portico_cmd(dir.path(), &["check", "k.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("k.yaml:2:7: Deployment/shop/quote: warning: kind `Deployment` (apps/v1) is not a kind Portico reads"),
        "{out}"
    );
    let (code, out, _) = portico_cmd(dir.path(), &["check", "--strict-kinds", "k.yaml"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Deployment/shop/quote: kind `Deployment`"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
}
