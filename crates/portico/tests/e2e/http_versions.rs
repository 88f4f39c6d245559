//! Which HTTP version a connection speaks: `http2: false` means HTTP/1.1 only, also to a
//! client that sends the HTTP/2 preface anyway; over TLS the version follows ALPN alone (h2 →
//! HTTP/2 only; http/1.1 or none → HTTP/1.1 only). Through the real binary, with curl, raw
//! preface bytes and a rustls client.

use crate::common;
use common::*;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const PREFACE_AND_SETTINGS: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn mapping(up: &Upstream) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    )
}

/// Writes `bytes` and reads until the peer closes (or 10 s pass).
async fn send_and_read_all<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    out
}

/// The reply to an HTTP/2 preface on an HTTP/1.1-only connection: a 400 in HTTP/1.1 and a
/// close, never an HTTP/2 frame (a server's SETTINGS would start with a zero length byte).
fn assert_h1_400(what: &str, reply: &[u8]) {
    let text = String::from_utf8_lossy(reply);
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "{what}: expected an HTTP/1.1 400, got {text:?}"
    );
}

async fn dpe_logged(p: &Portico, n: usize) {
    let count = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| {
                l["flags"].as_str().is_some_and(|f| f.contains("DPE")) && l["status"] == 400
            })
            .count()
    };
    eventually(Duration::from_secs(10), async || {
        count(&p.access_log()) >= n
    })
    .await;
    let lines = p.access_log();
    assert!(count(&lines) >= n, "expected {n} DPE lines, log: {lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_http2_false_refuses_prior_knowledge() {
    let up = Upstream::start("u").await;
    let h1_port = free_port();
    let p = Portico::start_with_listeners(
        &listener_doc("h1only", h1_port, "HTTP", "http2: false"),
        &mapping(&up),
    )
    .await;

    let mut s = TcpStream::connect(("127.0.0.1", h1_port))
        .await
        .expect("connect");
    let reply = send_and_read_all(&mut s, PREFACE_AND_SETTINGS).await;
    assert_h1_400("raw preface, http2: false", &reply);

    // curl with prior knowledge gets no HTTP/2 answer.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--http2-prior-knowledge")
        .arg(format!("http://127.0.0.1:{h1_port}/x"))
        .output()
        .expect("run curl");
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !got.starts_with('2'),
        "curl got HTTP/2 from an http2: false listener: {got}"
    );

    // Plain HTTP/1.1 still works there; the default listener (http2: true) keeps h2c.
    let r = get(&format!("http://127.0.0.1:{h1_port}/x"), &[]).await;
    assert_eq!(r.status, 200);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--http2-prior-knowledge")
        .arg(p.url("/x"))
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    assert_eq!(
        up.count(),
        2,
        "only the two valid requests reach the upstream"
    );
    dpe_logged(&p, 1).await;
    assert!(metric(&p, "portico_downstream_rejected_total{code=\"4xx\"}").await >= Some(1.0));
}

/// A self-signed certificate for `v.test`, written into `dir`; returns the client roots.
fn cert(dir: &std::path::Path) -> (String, RootCertStore) {
    let ck = rcgen::generate_simple_self_signed(vec!["v.test".to_string()]).expect("cert");
    let (c, k) = (dir.join("v.pem"), dir.join("v.key"));
    std::fs::write(&c, ck.cert.pem()).expect("write cert");
    std::fs::write(&k, ck.signing_key.serialize_pem()).expect("write key");
    let doc = format!(
        "{API}\nkind: Host\nmetadata: {{ name: v }}\nspec: {{ hostname: \"v.test\", tls: {{ cert_chain_file: {}, private_key_file: {} }} }}\n",
        c.display(),
        k.display()
    );
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ck.cert.der().to_vec()))
        .expect("root");
    (doc, roots)
}

async fn tls(
    roots: &RootCertStore,
    port: u16,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("v.test").expect("name"), tcp)
        .await
        .expect("handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_version_follows_alpn() {
    let up = Upstream::start("u").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (host, roots) = cert(dir.path());
    let (tls_port, tls_h1_port) = (free_port(), free_port());
    let listeners = [
        listener_doc("tls", tls_port, "HTTPS", ""),
        listener_doc("tls-h1", tls_h1_port, "HTTPS", "http2: false"),
    ]
    .join("---\n");
    let p =
        Portico::start_with_listeners(&listeners, &format!("{host}---\n{}", mapping(&up))).await;

    // ALPN http/1.1, no ALPN, and h2 offered to an http2: false listener: HTTP/1.1 only.
    let cases: [(&str, u16, &[&[u8]]); 3] = [
        ("ALPN http/1.1", tls_port, &[b"http/1.1"]),
        ("no ALPN", tls_port, &[]),
        (
            "h2 offered, http2: false",
            tls_h1_port,
            &[b"h2", b"http/1.1"],
        ),
    ];
    for (what, port, alpn) in cases {
        let mut s = tls(&roots, port, alpn).await;
        assert_ne!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "{what}");
        let reply = send_and_read_all(&mut s, PREFACE_AND_SETTINGS).await;
        assert_h1_400(what, &reply);
        // HTTP/1.1 itself is served on such a connection.
        let mut s = tls(&roots, port, alpn).await;
        let reply = send_and_read_all(
            &mut s,
            b"GET /ok HTTP/1.1\r\nHost: v.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 200"),
            "{what}: HTTP/1.1 refused"
        );
    }

    // ALPN h2: HTTP/2 works; an HTTP/1 request gets no HTTP/1 answer, only a close.
    let s = tls(&roots, tls_port, &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, conn) = h2::client::handshake(s).await.expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("https://v.test/h2")
        .body(())
        .expect("req");
    let (resp, _) = client.send_request(req, true).expect("send");
    assert_eq!(resp.await.expect("response").status(), 200);

    let mut s = tls(&roots, tls_port, &[b"h2"]).await;
    let reply = send_and_read_all(&mut s, b"GET /h1 HTTP/1.1\r\nHost: v.test\r\n\r\n").await;
    assert!(
        !String::from_utf8_lossy(&reply).contains("HTTP/1"),
        "HTTP/1 answered on an ALPN h2 connection: {:?}",
        String::from_utf8_lossy(&reply)
    );

    assert_eq!(up.count(), 4, "only the valid requests reach the upstream");
    dpe_logged(&p, 4).await;
}
