//! End-to-end TLS termination (docs/reference.md §2.2), `requestPolicy.insecure` and the PROXY
//! protocol (§2.1), through the real binary. Certificates are generated at test time (rcgen).

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA and the certificates it signs, written as PEM files into a temp dir.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_der: CertificateDer<'static>,
}

/// A leaf's files and DER.
pub(crate) struct Leaf {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Portico Test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write ca");
        Pki {
            dir,
            ca_der: ca.der().clone(),
            ca_params,
            ca_key,
        }
    }

    pub(crate) fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    /// A leaf for `sans`, with common name `cn`, written as `<file>.pem` and `<file>.key`.
    pub(crate) fn leaf(&self, file: &str, cn: &str, sans: &[&str], client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let leaf = Leaf {
            cert: self.path(&format!("{file}.pem")),
            key: self.path(&format!("{file}.key")),
            der: cert.der().clone(),
        };
        write_atomic(&leaf.key, key.serialize_pem().as_bytes());
        write_atomic(&leaf.cert, cert.pem().as_bytes());
        leaf
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("root");
        roots
    }
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

pub(crate) fn host_doc(
    name: &str,
    hostname: &str,
    leaf: &Leaf,
    extra_tls: &str,
    policy: &str,
) -> String {
    let policy = if policy.is_empty() {
        String::new()
    } else {
        format!(", requestPolicy: {{ insecure: {{ action: {policy} }} }}")
    };
    format!(
        "{API}\nkind: Host\nmetadata: {{ name: {name} }}\nspec: {{ hostname: \"{hostname}\", tls: {{ cert_chain_file: {}, private_key_file: {}{extra_tls} }}{policy} }}\n",
        leaf.cert.display(),
        leaf.key.display()
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn client_config(pki: &Pki, alpn: &[&str], client: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config_versions(pki, rustls::DEFAULT_VERSIONS, alpn, client)
}

/// [`client_config`] offering only `versions` (e.g. TLS 1.2 alone).
fn client_config_versions(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
    client: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(pki.roots());
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some(l) => {
            let chain = vec![l.der.clone()];
            let key_pem = std::fs::read(&l.key).expect("key");
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key_pem)
                .map(|k: PrivateKeyDer<'static>| k)
                .expect("key pem");
            b.with_client_auth_cert(chain, key).expect("client auth")
        }
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS connection to 127.0.0.1:`port` with SNI `sni`.
pub(crate) async fn tls_connect(
    cfg: Arc<ClientConfig>,
    port: u16,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    TlsConnector::from(cfg).connect(name, tcp).await
}

fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("peer certs")[0].clone()
}

/// One HTTP/1.1 GET on an established stream; returns (status, body).
async fn h1_get<S>(io: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub(crate) fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mapping(up: &Upstream) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {} }}\n",
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_certificates_h2_by_default_and_unknown_names_fail() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let w = pki.leaf("w", "wild", &["*.wild.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [
        host_doc("a", "a.test", &a, "", ""),
        host_doc("b", "b.test", &b, "", ""),
        host_doc("w", "*.wild.test", &w, "", ""),
        mapping(&up),
    ]
    .join("---\n");
    let _p =
        Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("path");

    // curl verifies the chain and the name: each hostname gets its own certificate.
    for host in ["a.test", "b.test", "x.wild.test"] {
        let resolve = format!("{host}:{tls_port}:127.0.0.1");
        let url = format!("https://{host}:{tls_port}/hello");
        let (ok, out, err) = curl(&[
            "--resolve",
            &resolve,
            "--cacert",
            ca,
            "-w",
            "\n%{http_version} %{response_code}\n%{certs}",
            &url,
        ]);
        assert!(ok, "curl {host}: {err}");
        assert!(out.contains("\n2 200\n"), "h2 by default for {host}: {out}");
        assert!(out.contains("upstream u"), "{out}");
        let expect_cn = if host == "x.wild.test" { "wild" } else { host };
        assert!(
            out.contains(&format!("CN = {expect_cn}")) || out.contains(&format!("CN={expect_cn}")),
            "{host} served CN {expect_cn}: {out}"
        );
    }
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");

    // The same with a rustls client, comparing the served certificate byte for byte.
    let cfg = client_config(&pki, &["h2", "http/1.1"], None);
    let sa = tls_connect(cfg.clone(), tls_port, "a.test")
        .await
        .expect("a");
    let sb = tls_connect(cfg.clone(), tls_port, "b.test")
        .await
        .expect("b");
    assert_eq!(peer_cert(&sa), a.der);
    assert_eq!(peer_cert(&sb), b.der);
    assert_ne!(peer_cert(&sa), peer_cert(&sb));
    assert_eq!(sa.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // http/1.1 only when the client offers only that.
    let cfg1 = client_config(&pki, &["http/1.1"], None);
    let s1 = tls_connect(cfg1, tls_port, "a.test").await.expect("h1");
    assert_eq!(s1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = h1_get(s1, "a.test", "/h1").await.expect("h1 get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));

    // No Host for this SNI and no `*` Host: the handshake fails (unrecognized_name).
    let err = tls_connect(cfg, tls_port, "nobody.test")
        .await
        .expect_err("unknown SNI must fail");
    assert!(
        format!("{err:?}")
            .to_lowercase()
            .contains("unrecognisedname")
            || format!("{err:?}").to_lowercase().contains("unrecognized"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_host_alpn_without_h2_and_tls11_refused() {
    let pki = Pki::new();
    let d = pki.leaf("d", "default", &["default.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [host_doc("any", "*", &d, "", ""), mapping(&up)].join("---\n");
    let p = Portico::start_with_listeners(
        &listener_doc("tls", tls_port, "HTTPS", "http2: false"),
        &docs,
    )
    .await;
    // Unknown SNI falls back to the `*` Host; `http2: false` drops h2 from ALPN.
    let cfg = client_config(&pki, &["h2", "http/1.1"], None);
    let s = tls_connect(cfg, tls_port, "default.test")
        .await
        .expect("tls");
    assert_eq!(peer_cert(&s), d.der);
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(s);

    // TLS 1.1: a ClientHello offering at most TLS 1.1 gets a fatal protocol_version alert.
    let mut tcp = TcpStream::connect(("127.0.0.1", tls_port))
        .await
        .expect("connect");
    tcp.write_all(&client_hello_tls11()).await.expect("write");
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    assert!(n >= 7, "an alert, got {:?}", &buf[..n]);
    assert_eq!(buf[0], 0x15, "alert record: {:?}", &buf[..n]);
    assert_eq!(buf[5], 2, "fatal");
    // protocol_version (70) or handshake_failure (40): rustls speaks nothing below TLS 1.2.
    assert!(
        buf[6] == 70 || buf[6] == 40,
        "protocol_version or handshake_failure: {:?}",
        &buf[..n]
    );

    // And openssl's own client, allowed to speak TLS 1.1, fails the handshake.
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{tls_port}"),
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-servername",
            "default.test",
        ])
        .stdin(std::process::Stdio::null())
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "openssl -tls1_1 must fail: {text}");
        assert!(
            text.contains("Cipher is (NONE)") && text.contains("alert"),
            "no TLS 1.1 session, an alert: {text}"
        );
    }
    drop(p);
}

/// A minimal TLS 1.1 ClientHello (no supported_versions extension), SNI default.test.
fn client_hello_tls11() -> Vec<u8> {
    let sni_name = b"default.test";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((sni_name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(sni_name.len() as u16).to_be_bytes());
    sni.extend_from_slice(sni_name);
    let mut ext = Vec::new();
    ext.extend_from_slice(&0u16.to_be_bytes()); // server_name
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let mut body = vec![3, 2]; // client_version TLS 1.1
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 4, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_requires_client_certificate_and_forwards_identity() {
    let pki = Pki::new();
    let m = pki.leaf("m", "mtls.test", &["mtls.test"], false);
    let o = pki.leaf("o", "open.test", &["open.test"], false);
    let client = pki.leaf("client", "client-one", &["client-one.test"], true);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let ca = pki.path("ca.pem");
    let docs = [
        host_doc(
            "m",
            "mtls.test",
            &m,
            &format!(", ca_file: {}", ca.display()),
            "",
        ),
        host_doc("o", "open.test", &o, "", ""),
        mapping(&up),
    ]
    .join("---\n");
    let p = Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;
    let ca = ca.to_str().expect("path");
    let resolve = format!("mtls.test:{tls_port}:127.0.0.1");
    let url = format!("https://mtls.test:{tls_port}/m");

    // Without a client certificate: the handshake fails.
    let (ok, out, err) = curl(&["--resolve", &resolve, "--cacert", ca, &url]);
    assert!(!ok, "no client cert must fail: {out}");
    assert!(!err.is_empty());

    // With one signed by ca_file: accepted, identity forwarded; a client's forged header is replaced.
    let cert = client.cert.to_str().expect("path");
    let key = client.key.to_str().expect("path");
    let (ok, out, err) = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        ca,
        "--cert",
        cert,
        "--key",
        key,
        "-H",
        "x-forwarded-client-cert: Subject=\"CN=forged\"",
        &url,
    ]);
    assert!(ok, "client cert accepted: {err}");
    assert_eq!(out, "upstream u");
    let xfcc = up.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(xfcc.contains("Subject=\"CN=client-one\""), "{xfcc}");
    assert!(xfcc.contains("DNS=client-one.test"), "{xfcc}");
    assert!(!xfcc.contains("forged"));
    // The access log carries the same verified identity (the failed handshake logged nothing).
    let lines = p.wait_log_lines(1).await;
    let line = lines
        .iter()
        .find(|l| l["path"] == "/m")
        .unwrap_or_else(|| panic!("log line for /m: {lines:?}"));
    assert_eq!(line["client_cert"], xfcc.as_str(), "{line}");

    // ca_file applies to its Host only; the forged header is removed there.
    let (ok, out, err) = curl(&[
        "--resolve",
        &format!("open.test:{tls_port}:127.0.0.1"),
        "--cacert",
        ca,
        "-H",
        "x-forwarded-client-cert: Subject=\"CN=forged\"",
        &format!("https://open.test:{tls_port}/o"),
    ]);
    assert!(ok, "open host needs no client cert: {err}");
    assert_eq!(out, "upstream u");
    assert!(!up.last().headers.contains_key("x-forwarded-client-cert"));
    // No client certificate: `client_cert` is null (a forged header never reaches the log).
    let lines = p.wait_log_lines(2).await;
    let line = lines
        .iter()
        .find(|l| l["path"] == "/o")
        .unwrap_or_else(|| panic!("log line for /o: {lines:?}"));
    assert!(line["client_cert"].is_null(), "{line}");
    assert!(
        line.as_object()
            .is_some_and(|o| o.contains_key("client_cert")),
        "the field is always there: {line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_prefers_exact_then_wildcard_then_catch_all() {
    let pki = Pki::new();
    let exact = pki.leaf("exact", "exact", &["a.wild.test"], false);
    let wild = pki.leaf("wild", "wild", &["*.wild.test"], false);
    let any = pki.leaf("any", "any", &["other.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    // Listed catch-all first and exact last: the order in the file must not matter.
    let docs = [
        host_doc("any", "*", &any, "", ""),
        host_doc("wild", "*.wild.test", &wild, "", ""),
        host_doc("exact", "a.wild.test", &exact, "", ""),
        mapping(&up),
    ]
    .join("---\n");
    let _p =
        Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;
    let cfg = client_config(&pki, &["h2", "http/1.1"], None);
    for (sni, want, cn) in [
        ("a.wild.test", &exact, "exact"),
        ("b.wild.test", &wild, "wild"),
        ("other.test", &any, "any"),
    ] {
        let s = tls_connect(cfg.clone(), tls_port, sni)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
        assert!(
            peer_cert(&s) == want.der,
            "{sni} must get the {cn} certificate"
        );
    }
    // And a request over the selected connection is served.
    let s = tls_connect(
        client_config(&pki, &["http/1.1"], None),
        tls_port,
        "b.wild.test",
    )
    .await
    .expect("tls");
    let (status, body) = h1_get(s, "b.wild.test", "/w").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_tls_version_v13_refuses_a_tls12_only_client() {
    let pki = Pki::new();
    let strict = pki.leaf("strict", "strict", &["strict.test"], false);
    let lax = pki.leaf("lax", "lax", &["lax.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [
        host_doc(
            "strict",
            "strict.test",
            &strict,
            ", min_tls_version: v1.3",
            "",
        ),
        host_doc("lax", "lax.test", &lax, "", ""),
        mapping(&up),
    ]
    .join("---\n");
    let _p =
        Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;
    let tls12 = client_config_versions(&pki, &[&rustls::version::TLS12], &["http/1.1"], None);
    let tls13 = client_config_versions(&pki, &[&rustls::version::TLS13], &["http/1.1"], None);

    // TLS 1.2 only against the v1.3 Host: the handshake fails with a protocol_version alert.
    let err = tls_connect(tls12.clone(), tls_port, "strict.test")
        .await
        .expect_err("TLS 1.2 client must be refused by a min_tls_version v1.3 Host");
    let text = format!("{err:?}").to_lowercase();
    assert!(
        text.contains("protocolversion") || text.contains("handshakefailure"),
        "{err:?}"
    );

    // TLS 1.3 against the same Host: served, on TLS 1.3.
    let s = tls_connect(tls13, tls_port, "strict.test")
        .await
        .expect("TLS 1.3 client accepted");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let (status, body) = h1_get(s, "strict.test", "/13").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));

    // The setting is per Host: the default (v1.2) Host still takes the TLS 1.2 client.
    let s = tls_connect(tls12, tls_port, "lax.test")
        .await
        .expect("TLS 1.2 accepted by a v1.2 Host");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, _) = h1_get(s, "lax.test", "/12").await.expect("get");
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------- Emissary (docs/reference.md §2.6)

const EM: &str = "apiVersion: getambassador.io/v3alpha1";

/// A `kubernetes.io/tls` Secret named `name` holding `cert` (and `key`, when given) in base64.
fn secret_doc(name: &str, cert: &Path, key: Option<&Path>) -> String {
    let b64 = |p: &Path| base64(&std::fs::read(p).expect("read pem"));
    let key = key
        .map(|k| format!("  tls.key: {}\n", b64(k)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{ name: {name} }}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n{key}",
        b64(cert)
    )
}

/// A client speaking only TLS 1.2 (ALPN http/1.1), with `client`'s certificate if given.
fn client_config_tls12(pki: &Pki, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let b = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(pki.roots());
    let mut cfg = match client {
        None => b.with_no_client_auth(),
        Some(l) => {
            let key_pem = std::fs::read(&l.key).expect("key");
            let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key_pem)
                .map(|k: PrivateKeyDer<'static>| k)
                .expect("key pem");
            b.with_client_auth_cert(vec![l.der.clone()], key)
                .expect("client auth")
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emissary_host_tls_secret_serves_the_secret_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("s", "secret.test", &["secret.test"], false);
    let other = pki.leaf("o", "other.test", &["other.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [
        format!(
            "{EM}\nkind: Host\nmetadata: {{ name: secret-host }}\nspec:\n  hostname: secret.test\n  acmeProvider: {{ authority: none }}\n  tlsSecret: {{ name: secret-cert }}\n"
        ),
        secret_doc("secret-cert", &leaf.cert, Some(&leaf.key)),
        // Another Host, from files, to show the SNI picks the Secret's certificate.
        host_doc("o", "other.test", &other, "", ""),
        format!(
            "{EM}\nkind: Mapping\nmetadata: {{ name: all }}\nspec: {{ prefix: /, service: {}, rewrite: \"\" }}\n",
            up.addr
        ),
    ]
    .join("---\n");
    let _p =
        Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;

    let cfg = client_config(&pki, &["h2", "http/1.1"], None);
    let s = tls_connect(cfg.clone(), tls_port, "secret.test")
        .await
        .expect("handshake with the Secret's certificate");
    assert_eq!(
        peer_cert(&s),
        leaf.der,
        "the Secret's certificate is served"
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let o = tls_connect(cfg, tls_port, "other.test")
        .await
        .expect("other");
    assert_eq!(peer_cert(&o), other.der);
    let cfg1 = client_config(&pki, &["http/1.1"], None);
    let s1 = tls_connect(cfg1, tls_port, "secret.test")
        .await
        .expect("h1");
    let (status, body) = h1_get(s1, "secret.test", "/through").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));
    assert_eq!(up.last().uri, "/through");
    assert_eq!(up.last().headers["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emissary_tls_context_sets_certificate_versions_alpn_and_client_ca() {
    let pki = Pki::new();
    let tight = pki.leaf("t", "tight.test", &["tight.test"], false);
    let mutual = pki.leaf("m", "mtls.test", &["mtls.test"], false);
    let client = pki.leaf("client", "client-one", &["client-one.test"], true);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [
        // A TLSContext listing a hostname no Host has: it becomes that Host.
        format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: tight }}\nspec:\n  hosts: [tight.test]\n  secret: tight-cert\n  min_tls_version: v1.3\n  alpn_protocols: http/1.1\n"
        ),
        secret_doc("tight-cert", &tight.cert, Some(&tight.key)),
        // A Host naming a TLSContext that requires client certificates from a CA Secret.
        format!(
            "{EM}\nkind: Host\nmetadata: {{ name: mtls }}\nspec: {{ hostname: mtls.test, tlsContext: {{ name: mutual }} }}\n"
        ),
        format!(
            "{EM}\nkind: TLSContext\nmetadata: {{ name: mutual }}\nspec:\n  secret: mutual-cert\n  ca_secret: clients-ca\n  cert_required: true\n"
        ),
        secret_doc("mutual-cert", &mutual.cert, Some(&mutual.key)),
        secret_doc("clients-ca", &pki.path("ca.pem"), None),
        mapping(&up),
    ]
    .join("---\n");
    let _p =
        Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;

    // tight.test: its Secret's certificate, TLS 1.3 only, ALPN http/1.1 only.
    let s = tls_connect(
        client_config(&pki, &["h2", "http/1.1"], None),
        tls_port,
        "tight.test",
    )
    .await
    .expect("TLS 1.3 handshake");
    assert_eq!(peer_cert(&s), tight.der);
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = h1_get(s, "tight.test", "/t").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));
    let err = tls_connect(client_config_tls12(&pki, None), tls_port, "tight.test")
        .await
        .expect_err("TLS 1.2 refused by min_tls_version: v1.3");
    assert!(
        format!("{err:?}")
            .to_lowercase()
            .contains("protocolversion")
            || format!("{err:?}")
                .to_lowercase()
                .contains("handshakefailure"),
        "{err:?}"
    );
    // min_tls_version is the context's: mtls.test (another context) still speaks TLS 1.2,
    // and there a missing client certificate fails the handshake itself.
    let s = tls_connect(
        client_config_tls12(&pki, Some(&client)),
        tls_port,
        "mtls.test",
    )
    .await
    .expect("TLS 1.2 with a client certificate");
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (status, _) = h1_get(s, "mtls.test", "/m12").await.expect("get");
    assert_eq!(status, 200);
    assert!(
        tls_connect(client_config_tls12(&pki, None), tls_port, "mtls.test")
            .await
            .is_err(),
        "TLS 1.2 without a client certificate must fail"
    );

    // mtls.test: without a client certificate the connection fails (TLS 1.3 reports the
    // server's alert on the first read); with one signed by the CA Secret it is served.
    let no_cert = client_config(&pki, &["http/1.1"], None);
    let failed = match tls_connect(no_cert, tls_port, "mtls.test").await {
        Err(_) => true,
        Ok(s) => {
            assert_eq!(peer_cert(&s), mutual.der);
            h1_get(s, "mtls.test", "/m").await.is_err()
        }
    };
    assert!(failed, "a client without a certificate must not be served");
    let with_cert = client_config(&pki, &["h2", "http/1.1"], Some(&client));
    let s = tls_connect(with_cert, tls_port, "mtls.test")
        .await
        .expect("handshake with a client certificate");
    assert_eq!(peer_cert(&s), mutual.der);
    // No alpn_protocols on this context: the default offers h2.
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let with_cert = client_config(&pki, &["http/1.1"], Some(&client));
    let s = tls_connect(with_cert, tls_port, "mtls.test")
        .await
        .expect("h1");
    let (status, body) = h1_get(s, "mtls.test", "/m").await.expect("get");
    assert_eq!((status, body.as_str()), (200, "upstream u"));
    let xfcc = up.last().headers["x-forwarded-client-cert"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(xfcc.contains("Subject=\"CN=client-one\""), "{xfcc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_certificate_files_takes_effect_within_2s_without_failures() {
    let pki = Pki::new();
    let first = pki.leaf("rot", "rot-one", &["rot.test"], false);
    let up = Upstream::start("u").await;
    let tls_port = free_port();
    let docs = [host_doc("rot", "rot.test", &first, "", ""), mapping(&up)].join("---\n");
    let p = Portico::start_with_listeners(&listener_doc("tls", tls_port, "HTTPS", ""), &docs).await;
    let cfg = client_config(&pki, &["http/1.1"], None);

    // A connection opened before the rotation, used after it.
    let early = tls_connect(cfg.clone(), tls_port, "rot.test")
        .await
        .expect("early");
    let (mut early_tx, early_conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(early))
            .await
            .expect("handshake");
    tokio::spawn(early_conn);

    // Clients looping on fresh connections during the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let new_seen: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..2 {
        let (cfg, stop, failures, new_seen, requests) = (
            cfg.clone(),
            stop.clone(),
            failures.clone(),
            new_seen.clone(),
            requests.clone(),
        );
        let old = first.der.clone();
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tls_connect(cfg.clone(), tls_port, "rot.test").await {
                    Ok(s) => {
                        let served = peer_cert(&s);
                        match h1_get(s, "rot.test", "/loop").await {
                            Ok((200, _)) => {
                                requests.fetch_add(1, Ordering::Relaxed);
                                if served != old {
                                    let mut g = new_seen.lock().expect("lock");
                                    g.get_or_insert_with(Instant::now);
                                }
                            }
                            _ => {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    // Traffic flows before the rotation.
    wait_until(Duration::from_secs(10), "no request served", async || {
        requests.load(Ordering::Relaxed) >= 20
    })
    .await;
    // Rotate: a new key and certificate, each file replaced atomically (key first).
    let rotated_at = Instant::now();
    let second = pki.leaf("rot", "rot-two", &["rot.test"], false);
    eventually(Duration::from_secs(4), async || {
        new_seen.lock().expect("lock").is_some()
    })
    .await;
    // The span observed after the rotation (traffic keeps flowing, without a failure).
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    let seen_at = new_seen
        .lock()
        .expect("lock")
        .expect("new certificate served");
    let latency = seen_at.duration_since(rotated_at);
    eprintln!(
        "rotation latency: {latency:?}; {} requests, {} failures",
        requests.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed)
    );
    assert!(
        latency < Duration::from_secs(2),
        "rotation took {latency:?}"
    );
    assert_eq!(failures.load(Ordering::Relaxed), 0, "no failed request");
    let s = tls_connect(cfg.clone(), tls_port, "rot.test")
        .await
        .expect("after");
    assert_eq!(peer_cert(&s), second.der);
    drop(s);

    // The connection from before the rotation still works.
    let req = http::Request::get("/early")
        .header("host", "rot.test")
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = early_tx
        .send_request(req)
        .await
        .expect("early connection kept");
    assert_eq!(resp.status(), 200);

    // A key that doesn't match the certificate: the old pair stays, an error is logged.
    let other = KeyPair::generate().expect("key");
    write_atomic(&second.key, other.serialize_pem().as_bytes());
    // The watcher noticed the new key (and logged why it keeps the previous pair).
    eventually(Duration::from_secs(10), async || {
        p.stderr().contains("keeping the previous one")
    })
    .await;
    let s = tls_connect(cfg, tls_port, "rot.test")
        .await
        .expect("still served");
    assert_eq!(peer_cert(&s), second.der);
    assert!(
        p.stderr().contains("keeping the previous one"),
        "{}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_key_is_a_config_error_with_position() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let b = pki.leaf("b", "b.test", &["b.test"], false);
    let bad = Leaf {
        cert: a.cert.clone(),
        key: b.key.clone(),
        der: a.der.clone(),
    };
    let cfg = pki.path("portico.yaml");
    std::fs::write(
        &cfg,
        format!(
            "{}---\n{}",
            listener_doc("tls", 8443, "HTTPS", ""),
            host_doc("bad", "a.test", &bad, "", "")
        ),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .arg(&cfg)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "{}:6:1: Host/bad: private_key_file",
            cfg.display()
        )) && text.contains("does not match"),
        "{text}"
    );
    // Garbage instead of a certificate, too.
    std::fs::write(&a.cert, "not a certificate\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("check")
        .arg(&cfg)
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("Host/bad: cert_chain_file"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_policy_redirect_reject_route() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let up = Upstream::start("u").await;
    let docs = [
        host_doc("redirect", "r.test", &a, "", ""),
        host_doc("reject", "x.test", &a, "", "Reject"),
        host_doc("route", "*.route.test", &a, "", "Route"),
        format!("{API}\nkind: Host\nmetadata: {{ name: plain }}\nspec: {{ hostname: p.test, requestPolicy: {{ insecure: {{ action: Reject }} }} }}\n"),
        mapping(&up),
    ]
    .join("---\n");
    let p = Portico::start(&docs).await;
    let r = get(&p.url("/a/b?c=1"), &[("host", "R.test:8080")]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://r.test/a/b?c=1"));
    let r = get(&p.url("/a"), &[("host", "x.test")]).await;
    assert_eq!(r.status, 403);
    let r = get(&p.url("/a"), &[("host", "y.route.test")]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "upstream u"));
    // Hosts without tls and other hostnames are not affected.
    let r = get(&p.url("/a"), &[("host", "p.test")]).await;
    assert_eq!(r.status, 200);
    let r = get(&p.url("/a"), &[("host", "other.test")]).await;
    assert_eq!(r.status, 200);
    // h2c too.
    let r = send(
        request("GET", &format!("http://r.test:{}/h2", p.port), &[], ""),
        true,
    )
    .await;
    // (the client resolves r.test: skip when it can't)
    if let Ok(r) = r {
        assert_eq!(r.status, 301);
    }
    let log = p.wait_log_lines(5).await;
    assert!(log.iter().any(|l| l["status"] == 301));
    assert!(log.iter().any(|l| l["status"] == 403));
}

fn v2_header(cmd: u8, src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.push(0x20 | cmd);
    v.push(0x11);
    v.extend_from_slice(&12u16.to_be_bytes());
    v.extend_from_slice(&src);
    v.extend_from_slice(&[127, 0, 0, 1]);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&80u16.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_v2_set_client_address() {
    let pki = Pki::new();
    let a = pki.leaf("a", "a.test", &["a.test"], false);
    let up = Upstream::start("u").await;
    let pp_port = free_port();
    let pps_port = free_port();
    let listeners = [
        listener_doc("pp", pp_port, "HTTPPROXY", ""),
        listener_doc("pps", pps_port, "HTTPSPROXY", ""),
    ]
    .join("---\n");
    let docs = [host_doc("a", "a.test", &a, "", "Route"), mapping(&up)].join("---\n");
    let p = Portico::start_with_listeners(&listeners, &docs).await;

    let r = raw_exchange(
        pp_port,
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n",
        "/v1",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last().headers["x-forwarded-for"], "203.0.113.7");

    let r = raw_exchange(pp_port, &v2_header(1, [198, 51, 100, 9], 4242), "/v2").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last().headers["x-forwarded-for"], "198.51.100.9");

    // v2 LOCAL: the TCP peer.
    let r = raw_exchange(pp_port, &v2_header(0, [198, 51, 100, 10], 1), "/local").await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(up.last().headers["x-forwarded-for"], "127.0.0.1");

    // No PROXY header: closed without an answer.
    let r = raw_exchange(pp_port, b"", "/none").await;
    assert_eq!(r, "", "closed without a response");
    assert_eq!(up.count(), 3);

    // PROXY header, then TLS.
    let mut tcp = TcpStream::connect(("127.0.0.1", pps_port))
        .await
        .expect("connect");
    tcp.write_all(b"PROXY TCP6 2001:db8::5 ::1 6000 443\r\n")
        .await
        .expect("write");
    let cfg = client_config(&pki, &["http/1.1"], None);
    let tls = TlsConnector::from(cfg)
        .connect(ServerName::try_from("a.test").expect("name"), tcp)
        .await
        .expect("tls after PROXY");
    let (status, _) = h1_get(tls, "a.test", "/tls").await.expect("get");
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "2001:db8::5");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");

    // The access log's client is the PROXY source.
    let log = p.wait_log_lines(4).await;
    let clients: Vec<&str> = log.iter().filter_map(|l| l["client"].as_str()).collect();
    for c in ["203.0.113.7", "198.51.100.9", "127.0.0.1", "2001:db8::5"] {
        assert!(clients.contains(&c), "{c} in {clients:?}");
    }

    // A connection that sends nothing is closed after 5 s.
    let mut s = TcpStream::connect(("127.0.0.1", pp_port))
        .await
        .expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(9), s.read(&mut buf))
        .await
        .expect("closed by the proxy")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}
