//! Automatic certificates (docs/reference.md §13) against Debian's `pebble` (an RFC 8555 test
//! CA) and `pebble-challtestsrv` (its DNS, resolving every test name to 127.0.0.1), with pebble
//! validating challenges against Portico's real listeners: each test gives pebble a config with
//! the ports it picked (`httpPort`/`tlsPort` are Portico's listeners), moves challtestsrv off its
//! fixed default ports, and leaves pebble's 5 % `badNonce` rejections on. pebble's own HTTPS
//! uses a certificate the test makes (rcgen); the Host's `ca_file` trusts it.
//!
//! Without pebble installed (scripts/test.sh installs it) the pebble tests fail loudly.

use crate::common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Generous: issuance on a loaded two-core machine (pebble retries, badNonce, polling).
const ISSUE_WITHIN: Duration = Duration::from_secs(60);

/// pebble and pebble-challtestsrv for one test; killed on drop.
struct Pebble {
    pebble: Child,
    dns: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    url: String,
    /// The CA that signs pebble's own HTTPS (the Host's `ca_file`).
    ca_file: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in [&mut self.pebble, &mut self.dns] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is not installed: run scripts/test.sh (it installs Debian's `pebble` package)"
    );
}

async fn wait_port(port: u16, what: &str) {
    wait_until(Duration::from_secs(20), what, async || {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    async fn start(http_port: u16, tls_port: u16) -> Pebble {
        require("pebble");
        require("pebble-challtestsrv");
        let dir = tempfile::tempdir().expect("tempdir");
        // pebble's HTTPS certificate, from a CA of our own.
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pebble listener test CA");
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = Issuer::new(ca_params, ca_key);
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("leaf");
        leaf.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
        let ca_file = dir.path().join("pebble-ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("ca file");
        std::fs::write(dir.path().join("cert.pem"), leaf_cert.pem()).expect("cert");
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).expect("key");

        let (acme_port, mgmt_port, dns_port, dns_mgmt) =
            (free_port(), free_port(), free_port(), free_port());
        let cfg = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let cfg_path = dir.path().join("pebble.json");
        std::fs::write(&cfg_path, cfg.to_string()).expect("pebble config");
        // The DNS: only its DNS server, on a port of ours, answering 127.0.0.1 for every name.
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_mgmt}"),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dns.log")).expect("log"))
            .spawn()
            .expect("spawn pebble-challtestsrv");
        let pebble = Command::new("pebble")
            .args(["-config"])
            .arg(&cfg_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .current_dir(dir.path())
            .stdout(std::fs::File::create(dir.path().join("pebble.log")).expect("log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pebble");
        let p = Pebble {
            pebble,
            dns,
            url: format!("https://127.0.0.1:{acme_port}/dir"),
            ca_file,
            dir,
        };
        wait_port(dns_mgmt, "pebble-challtestsrv listening").await;
        wait_port(acme_port, "pebble listening").await;
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

/// A `portico run` with its own environment (lease, hold) and state directory.
struct Proc {
    child: Child,
    dir: tempfile::TempDir,
    admin: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    async fn start(config: &str, state: &Path, env: &[(&str, &str)]) -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("portico.yaml");
        std::fs::write(&cfg, config).expect("config");
        let admin = free_port();
        let child = Command::new(portico_bin())
            .arg("run")
            .arg("-c")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(state)
            .args([
                "--admin",
                &format!("127.0.0.1:{admin}"),
                "--workers",
                "1",
                "--access-log",
                "off",
            ])
            .envs(env.iter().copied())
            .env("PORTICO_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr"))
            .spawn()
            .expect("spawn portico");
        let mut p = Proc { child, dir, admin };
        let ready = eventually(Duration::from_secs(20), async || {
            http_get(&format!("http://127.0.0.1:{admin}/ready"), &[])
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        if !ready {
            let _ = p.child.try_wait();
            panic!("portico not ready: {}", p.stderr());
        }
        p
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        get(&format!("http://127.0.0.1:{}/metrics", self.admin), &[])
            .await
            .text()
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().await.lines().find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
    }

    async fn host_status(&self, name: &str) -> serde_json::Value {
        let cfg: serde_json::Value = serde_json::from_str(
            &get(&format!("http://127.0.0.1:{}/config", self.admin), &[])
                .await
                .text(),
        )
        .expect("config json");
        cfg["resources"]
            .as_array()
            .and_then(|rs| {
                rs.iter()
                    .find(|r| r["kind"] == "Host" && r["name"] == name)
                    .cloned()
            })
            .unwrap_or_default()
    }
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

/// What a served certificate says.
#[derive(Debug, Clone, PartialEq)]
struct Served {
    serial: String,
    issuer: String,
    not_after: i64,
}

/// The leaf a TLS handshake with `sni` on `port` gets, or why the handshake failed.
async fn served(port: u16, sni: &str) -> Result<Served, String> {
    let verifier = Arc::new(AnyCert(std::sync::Mutex::new(None)));
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    drop(tls);
    let der = verifier
        .0
        .lock()
        .ok()
        .and_then(|g| g.clone())
        .ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    Ok(Served {
        serial: cert.tbs_certificate.serial.to_str_radix(16),
        issuer: cert.issuer().to_string(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Waits until `port` serves `sni` a certificate issued by pebble.
async fn wait_issued(port: u16, sni: &str, within: Duration, ctx: impl Fn() -> String) -> Served {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(s) = served(port, sni).await
            && s.issuer.contains("Pebble")
        {
            return s;
        }
        if Instant::now() > deadline {
            panic!(
                "no pebble certificate for {sni} on :{port} within {within:?}: {:?}\n{}",
                served(port, sni).await,
                ctx()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn listeners(http: u16, https: u16) -> String {
    format!(
        "{}---\n{}---\n",
        listener_doc("plain", http, "HTTP", ""),
        listener_doc("secure", https, "HTTPS", "")
    )
}

fn acme_host(name: &str, host: &str, pebble: &Pebble, challenge: &str) -> String {
    format!(
        "{API}\nkind: Host\nmetadata: {{ name: {name} }}\nspec:\n  hostname: {host}\n  acmeProvider:\n    authority: {}\n    email: ops@example.com\n    ca_file: {}\n    challenge: {challenge}\n---\n",
        pebble.url,
        pebble.ca_file.display()
    )
}

fn ok_route() -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: ok }}\nspec: {{ prefix: /, direct_response: {{ status: 200, body: \"ok\\n\" }} }}\n"
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_then_a_restart_reuses_the_stored_certificate() {
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let state = tempfile::tempdir().expect("state");
    let config = format!(
        "{}{}{}",
        listeners(http, https),
        acme_host("site", "site.acme.test", &pebble, "http-01"),
        ok_route()
    );
    let p = Proc::start(&config, state.path(), &[]).await;
    let started = Instant::now();
    let first = wait_issued(https, "site.acme.test", ISSUE_WITHIN, || {
        format!("portico: {}\npebble: {}", p.stderr(), pebble.log())
    })
    .await;
    eprintln!(
        "HTTP-01: certificate served {:?} after ready",
        started.elapsed()
    );
    // Served over HTTPS with the new certificate; plain HTTP still redirects (the challenge
    // hook answered before that policy, or pebble could not have validated).
    let r = get(
        &format!("http://127.0.0.1:{http}/x"),
        &[("host", "site.acme.test")],
    )
    .await;
    assert_eq!(r.status, 301, "{}", r.text());
    // Stored privately, one order counted, the expiry exported, the status shown.
    let cert_file = state.path().join("certs/site.acme.test.pem");
    assert_eq!(mode(&cert_file), 0o600);
    let accounts: Vec<_> = std::fs::read_dir(state.path().join("accounts"))
        .expect("accounts")
        .flatten()
        .collect();
    assert_eq!(accounts.len(), 1);
    assert_eq!(mode(&accounts[0].path()), 0o600);
    // (The certificate may be served a moment before the order is counted.)
    wait_until(
        Duration::from_secs(10),
        "one issued order counted",
        async || {
            p.metric("portico_acme_orders_total{host=\"site.acme.test\",result=\"issued\"}")
                .await
                == Some(1.0)
        },
    )
    .await;
    wait_until(Duration::from_secs(10), "expiry metric", async || {
        p.metric("portico_certificate_expiry_timestamp_seconds{host=\"site.acme.test\"}")
            .await
            == Some(first.not_after as f64)
    })
    .await;
    let st = p.host_status("site").await;
    assert_eq!(st["acme"]["state"], "valid", "{st}");
    assert_eq!(st["acme"]["serial"], first.serial.as_str(), "{st}");
    // No challenge answer is left behind.
    let left = std::fs::read_dir(state.path().join("challenges/http-01"))
        .expect("dir")
        .count();
    assert_eq!(left, 0);
    drop(p);

    // A restart serves the stored certificate at once and orders nothing.
    let p2 = Proc::start(&config, state.path(), &[]).await;
    let again = served(https, "site.acme.test").await.expect("handshake");
    assert_eq!(again, first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        p2.metric("portico_acme_orders_total{host=\"site.acme.test\",result=\"issued\"}")
            .await,
        Some(0.0)
    );
    assert!(
        !p2.stderr().contains("ordering a certificate"),
        "{}",
        p2.stderr()
    );

    // A challenge answer another process wrote into the state directory is served, for any
    // Host, before routing; an unknown token goes on to routing (here: the redirect or the
    // catch-all route).
    let answer = state.path().join("challenges/http-01/Tok-en_1");
    std::fs::write(&answer, "Tok-en_1.thumbprint").expect("token file");
    for host in ["site.acme.test", "elsewhere.test"] {
        let r = get(
            &format!("http://127.0.0.1:{http}/.well-known/acme-challenge/Tok-en_1"),
            &[("host", host)],
        )
        .await;
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "Tok-en_1.thumbprint".into())
        );
    }
    let unknown = format!("http://127.0.0.1:{http}/.well-known/acme-challenge/nope");
    let r = get(&unknown, &[("host", "site.acme.test")]).await;
    assert_eq!(r.status, 301);
    let r = get(&unknown, &[("host", "elsewhere.test")]).await;
    assert_eq!((r.status.as_u16(), r.text()), (200, "ok\n".into()));
    // A token that is not base64url is never looked up.
    let r = get(
        &format!("http://127.0.0.1:{http}/.well-known/acme-challenge/..%2F..%2Fcerts"),
        &[("host", "elsewhere.test")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues() {
    let (http, https) = (free_port(), free_port());
    // pebble's HTTP-01 port is closed: only TLS-ALPN-01 on the HTTPS listener can succeed.
    let pebble = Pebble::start(free_port(), https).await;
    let state = tempfile::tempdir().expect("state");
    let config = format!(
        "{}{}{}",
        listeners(http, https),
        acme_host("alpn", "alpn.acme.test", &pebble, "tls-alpn-01"),
        ok_route()
    );
    let p = Proc::start(&config, state.path(), &[]).await;
    wait_issued(https, "alpn.acme.test", ISSUE_WITHIN, || {
        format!("portico: {}\npebble: {}", p.stderr(), pebble.log())
    })
    .await;
    // No challenge certificate is left behind.
    let left = std::fs::read_dir(state.path().join("challenges/tls-alpn-01"))
        .expect("dir")
        .count();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_state_dir_order_once_and_serve_the_same_certificate() {
    // Both bind the plain port (SO_REUSEPORT): pebble's HTTP-01 request may reach either
    // process, so each must answer the other's token. Each has its own HTTPS port.
    let (http, https_a, https_b) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, https_a).await;
    let state = tempfile::tempdir().expect("state");
    let host = acme_host("shared", "shared.acme.test", &pebble, "http-01");
    let cfg_a = format!("{}{host}{}", listeners(http, https_a), ok_route());
    let cfg_b = format!("{}{host}{}", listeners(http, https_b), ok_route());
    let (a, b) = tokio::join!(
        Proc::start(&cfg_a, state.path(), &[]),
        Proc::start(&cfg_b, state.path(), &[])
    );
    let on_a = wait_issued(https_a, "shared.acme.test", ISSUE_WITHIN, || {
        format!(
            "a: {}\nb: {}\npebble: {}",
            a.stderr(),
            b.stderr(),
            pebble.log()
        )
    })
    .await;
    let start = Instant::now();
    let on_b = wait_issued(https_b, "shared.acme.test", Duration::from_secs(10), || {
        b.stderr()
    })
    .await;
    assert_eq!(on_a, on_b);
    eprintln!(
        "second process served the certificate {:?} after the first",
        start.elapsed()
    );
    let series = "portico_acme_orders_total{host=\"shared.acme.test\",result=\"issued\"}";
    let total =
        async || a.metric(series).await.unwrap_or(0.0) + b.metric(series).await.unwrap_or(0.0);
    // (The certificate may be served a moment before the order is counted.)
    wait_until(Duration::from_secs(10), "the order counted", async || {
        total().await >= 1.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        total().await,
        1.0,
        "one order for the name across both processes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_past_two_thirds_of_its_life_is_renewed_live() {
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let state = tempfile::tempdir().expect("state");
    // An old certificate: 30 days of life, 25 behind it (past two thirds), still valid.
    let now = time_now();
    let mut params = CertificateParams::new(vec!["renew.acme.test".to_string()]).expect("params");
    params.not_before = now - time::Duration::days(25);
    params.not_after = now + time::Duration::days(5);
    let key = KeyPair::generate().expect("key");
    let old = params.self_signed(&key).expect("cert");
    std::fs::create_dir_all(state.path().join("certs")).expect("dir");
    std::fs::write(
        state.path().join("certs/renew.acme.test.pem"),
        format!("{}{}", key.serialize_pem(), old.pem()),
    )
    .expect("old cert");
    let config = format!(
        "{}{}{}",
        listeners(http, https),
        acme_host("renew", "renew.acme.test", &pebble, "http-01"),
        ok_route()
    );
    // The order waits 2 s after taking its lock, so the old certificate is seen first.
    let p = Proc::start(
        &config,
        state.path(),
        &[("PORTICO_ACME_TEST_HOLD_MS", "2000")],
    )
    .await;
    let before = served(https, "renew.acme.test").await.expect("handshake");
    assert!(
        before.issuer.contains("rcgen"),
        "the stored certificate first: {before:?}"
    );
    // A keep-alive connection opened on the old certificate survives the swap.
    let mut conn = keepalive(https, "renew.acme.test").await;
    assert!(conn.get().await.starts_with("HTTP/1.1 200"));
    let renewed = wait_issued(https, "renew.acme.test", ISSUE_WITHIN, || {
        format!("portico: {}\npebble: {}", p.stderr(), pebble.log())
    })
    .await;
    assert_ne!(renewed.serial, before.serial);
    assert!(
        renewed.not_after > now.unix_timestamp() + 6 * 86_400,
        "{renewed:?}"
    );
    let again = conn.get().await;
    assert!(
        again.starts_with("HTTP/1.1 200"),
        "old connection after renewal: {again:?}"
    );
}

/// An HTTP/1.1 keep-alive connection over TLS (any certificate accepted).
struct KeepAlive {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    host: String,
}

async fn keepalive(port: u16, sni: &str) -> KeepAlive {
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(std::sync::Mutex::new(None))))
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("name");
    let tls = TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .expect("handshake");
    KeepAlive {
        tls,
        host: sni.to_string(),
    }
}

impl KeepAlive {
    /// `GET /` on the same connection: the response head and body (`ok`).
    async fn get(&mut self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", self.host);
        if self.tls.write_all(req.as_bytes()).await.is_err() {
            return "write failed".into();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok\n") && Instant::now() < deadline
        {
            match tokio::time::timeout(Duration::from_secs(10), self.tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_authority_is_reported_and_other_hosts_are_unaffected() {
    // No pebble: the directory URL points at a closed port.
    let (http, https) = (free_port(), free_port());
    let closed = free_port();
    let state = tempfile::tempdir().expect("state");
    let certs = tempfile::tempdir().expect("certs");
    // A file-based `*` Host: the ACME name gets it until its own certificate exists.
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["fallback.test".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(certs.path().join("c.pem"), cert.pem()).expect("cert");
    std::fs::write(certs.path().join("c.key"), key.serialize_pem()).expect("key");
    let config = format!(
        "{}{API}\nkind: Host\nmetadata: {{ name: fallback }}\nspec: {{ hostname: \"*\", tls: {{ cert_chain_file: {}, private_key_file: {} }} }}\n---\n\
         {API}\nkind: Host\nmetadata: {{ name: down }}\nspec: {{ hostname: down.acme.test, acmeProvider: {{ authority: \"https://127.0.0.1:{closed}/dir\" }} }}\n---\n{}",
        listeners(http, https),
        certs.path().join("c.pem").display(),
        certs.path().join("c.key").display(),
        ok_route()
    );
    let p = Proc::start(&config, state.path(), &[]).await;
    let series = "portico_acme_orders_total{host=\"down.acme.test\",result=\"failed\"}";
    wait_until(
        Duration::from_secs(30),
        "a failed order counted",
        async || p.metric(series).await.is_some_and(|v| v >= 1.0),
    )
    .await;
    let st = p.host_status("down").await;
    assert_eq!(st["acme"]["state"], "failed", "{st}");
    let status = st["status"].as_str().unwrap_or_default();
    assert!(status.starts_with("certificate order failed"), "{st}");
    assert!(st["acme"]["next_attempt"].as_i64().is_some(), "{st}");
    assert!(
        p.stderr().contains("certificate order failed"),
        "{}",
        p.stderr()
    );
    // The ACME name gets the `*` certificate; the other Host works; requests are served.
    let s = served(https, "down.acme.test")
        .await
        .expect("fallback handshake");
    assert!(
        s.issuer.contains("rcgen") || !s.issuer.contains("Pebble"),
        "{s:?}"
    );
    let other = served(https, "other.test")
        .await
        .expect("other Host's handshake");
    assert_eq!(other, s);
    assert!(
        p.metric("portico_certificate_expiry_timestamp_seconds{host=\"*\"}")
            .await
            .is_some()
    );
    // The dashboard's data: the file certificate with its expiry, the ACME Host failing.
    let stats: serde_json::Value = serde_json::from_str(
        &get(&format!("http://127.0.0.1:{}/stats", p.admin), &[])
            .await
            .text(),
    )
    .expect("stats json");
    let certs = stats["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |h: &str| certs.iter().find(|c| c["host"] == h).cloned();
    let star = find("*").expect("* certificate listed");
    assert_eq!(star["not_after"].as_i64(), Some(s.not_after), "{star}");
    let down = find("down.acme.test").expect("ACME Host listed");
    assert_eq!(down["acme"]["state"], "failed", "{down}");
    assert!(down["not_after"].is_null(), "{down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_answer_defers_the_next_order_to_its_retry_after() {
    // An ACME server that answers everything with 429 rateLimited, Retry-After one hour.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = server.local_addr().expect("addr").port();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = server.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let body = r#"{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many new orders","status":429}"#;
                let resp = format!(
                    "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    });
    let (http, https) = (free_port(), free_port());
    let state = tempfile::tempdir().expect("state");
    let config = format!(
        "{}{API}\nkind: Host\nmetadata: {{ name: limited }}\nspec: {{ hostname: limited.acme.test, acmeProvider: {{ authority: \"http://127.0.0.1:{port}/dir\" }} }}\n---\n{}",
        listeners(http, https),
        ok_route()
    );
    let p = Proc::start(&config, state.path(), &[]).await;
    let series = "portico_acme_orders_total{host=\"limited.acme.test\",result=\"failed\"}";
    wait_until(
        Duration::from_secs(30),
        "a failed order counted",
        async || p.metric(series).await.is_some_and(|v| v >= 1.0),
    )
    .await;
    let st = p.host_status("limited").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let next = st["acme"]["next_attempt"].as_i64().unwrap_or(0);
    // The server's hour, not the 10 s first back-off.
    assert!(next - now > 3000, "next attempt in {} s: {st}", next - now);
    // The problem document is in the reported error.
    let err = st["acme"]["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("urn:ietf:params:acme:error:rateLimited")
            && err.contains("too many new orders"),
        "{st}"
    );
    // And nothing more is sent meanwhile.
    let seen = hits.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_validation_is_reported_with_the_acme_problem_document() {
    // pebble validates HTTP-01 against a closed port: the challenge fails.
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(free_port(), https).await;
    let state = tempfile::tempdir().expect("state");
    let config = format!(
        "{}{}{}",
        listeners(http, https),
        acme_host("bad", "bad.acme.test", &pebble, "http-01"),
        ok_route()
    );
    let p = Proc::start(&config, state.path(), &[]).await;
    let series = "portico_acme_orders_total{host=\"bad.acme.test\",result=\"failed\"}";
    wait_until(ISSUE_WITHIN, "a failed order counted", async || {
        p.metric(series).await.is_some_and(|v| v >= 1.0)
    })
    .await;
    let st = p.host_status("bad").await;
    let err = st["acme"]["last_error"].as_str().unwrap_or_default();
    // The problem document of the challenge: its type and detail.
    assert!(err.contains("validation"), "{st}");
    assert!(
        err.contains("type=urn:ietf:params:acme:error:connection"),
        "{st}"
    );
    assert!(err.contains("detail="), "{st}");
    assert!(
        p.stderr().contains("urn:ietf:params:acme:error:"),
        "{}",
        p.stderr()
    );
    // Shared back-off: the next attempt is recorded in the state directory.
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state.path().join("status/bad.acme.test.json")).expect("status file"),
    )
    .expect("json");
    assert!(status["next_attempt"].as_i64().unwrap_or(0) > status["at"].as_i64().unwrap_or(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_an_ordering_host_releases_its_lock() {
    let (http, https) = (free_port(), free_port());
    let pebble = Pebble::start(http, https).await;
    let state = tempfile::tempdir().expect("state");
    let base = format!("{}{}", listeners(http, https), ok_route());
    let host = acme_host("gone", "gone.acme.test", &pebble, "http-01");
    let p = Proc::start(
        &format!("{host}{base}"),
        state.path(),
        &[("PORTICO_ACME_TEST_HOLD_MS", "600000")],
    )
    .await;
    let lock = state.path().join("locks/gone.acme.test.lock");
    wait_until(
        Duration::from_secs(20),
        "the order lock taken",
        async || lock.exists(),
    )
    .await;
    // The Host goes away while its order holds the lock: the lock goes with it.
    let cfg = p.dir.path().join("portico.yaml");
    let tmp = p.dir.path().join("portico.yaml.tmp");
    std::fs::write(&tmp, &base).expect("write");
    std::fs::rename(&tmp, &cfg).expect("rename");
    // The file watcher reloads; SIGHUP too, in case a loaded machine delays the watcher.
    let _ = Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status();
    let released = eventually(Duration::from_secs(20), async || !lock.exists()).await;
    assert!(released, "lock still there: {}", p.stderr());
    // And it stays released (no background renewal writes it back).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!lock.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_mid_order_is_taken_over_after_its_lease() {
    let (http, https_a, https_b) = (free_port(), free_port(), free_port());
    let pebble = Pebble::start(http, https_b).await;
    let state = tempfile::tempdir().expect("state");
    let host = acme_host("lease", "lease.acme.test", &pebble, "http-01");
    let lease = [("PORTICO_ACME_LEASE_MS", "2000")];
    // A takes the lock and holds it (the test hook stands for a slow order) until killed.
    let mut a = Proc::start(
        &format!("{}{host}{}", listeners(http, https_a), ok_route()),
        state.path(),
        &[lease[0], ("PORTICO_ACME_TEST_HOLD_MS", "600000")],
    )
    .await;
    let lock = state.path().join("locks/lease.acme.test.lock");
    wait_until(
        Duration::from_secs(20),
        "A holds the order lock",
        async || lock.exists(),
    )
    .await;
    // No certificate yet and no `*` Host: a handshake for the name fails.
    assert!(
        served(https_a, "lease.acme.test").await.is_err(),
        "a name without a certificate (and no `*` Host) must fail the handshake"
    );
    let _ = Command::new("kill")
        .args(["-KILL", &a.child.id().to_string()])
        .status();
    let _ = a.child.wait();
    let killed = Instant::now();
    assert!(lock.exists(), "a killed holder leaves its lock behind");
    let b = Proc::start(
        &format!("{}{host}{}", listeners(http, https_b), ok_route()),
        state.path(),
        &lease,
    )
    .await;
    wait_issued(https_b, "lease.acme.test", ISSUE_WITHIN, || {
        format!("b: {}\npebble: {}", b.stderr(), pebble.log())
    })
    .await;
    let took = killed.elapsed();
    assert!(
        b.stderr().contains("taking over an order lock"),
        "{}",
        b.stderr()
    );
    eprintln!("B served a certificate {took:?} after A was killed (lease 2 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_acme_hosts_no_state_directory_is_created() {
    let (http, https) = (free_port(), free_port());
    let root = tempfile::tempdir().expect("root");
    let state = root.path().join("state");
    let p = Proc::start(
        &format!("{}{}", listeners(http, https), ok_route()),
        &state,
        &[],
    )
    .await;
    let r = get(&format!("http://127.0.0.1:{http}/"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(!state.exists(), "{}", p.stderr());
    assert!(
        !p.metrics().await.contains("portico_acme_orders_total{"),
        "no ACME series without ACME Hosts"
    );
}
