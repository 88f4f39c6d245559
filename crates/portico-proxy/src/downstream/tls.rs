//! TLS termination (docs/reference.md §2.2): one rustls `ServerConfig` per `Host` with `tls`, picked
//! by the ClientHello's SNI, re-read when its files change; plus the plain-HTTP
//! `requestPolicy.insecure` check and the `x-forwarded-client-cert` header.
//!
//! - **Selection.** The handshake's ClientHello is read with rustls' [`Acceptor`] before any
//!   config is chosen. SNI is matched against the Hosts in snapshot order (exact names, then
//!   longer wildcard suffixes, then `*`). No SNI, or an SNI that matches nothing, gets the `*`
//!   Host if there is one; otherwise the handshake is refused with a fatal
//!   `unrecognized_name` alert. Each Host has its own `ServerConfig`, so `ca_file` (mTLS),
//!   `min_tls_version` and ALPN apply to that Host only.
//! - **Versions.** TLS 1.2 and 1.3 (rustls implements nothing older: TLS 1.0/1.1 ClientHellos
//!   get `protocol_version`). `min_tls_version: v1.3` offers only 1.3.
//! - **ALPN.** `alpn_protocols` (default `h2,http/1.1`); `h2` is dropped on listeners with
//!   `http2: false` (each Host keeps both variants ready).
//! - **Rotation.** Every Host's configs sit behind an [`ArcSwap`]. A task on the control
//!   runtime polls the files' metadata (mtime, size, inode) every [`POLL`]; a change re-reads
//!   and re-validates them off the request path and swaps the new configs in. A pair that
//!   doesn't load (unreadable, unparsable, key not matching the certificate) keeps the old
//!   configs and logs an error. Connections already established keep their session.
//! - **ACME.** A Host with `acmeProvider` is served like one with files, the file being its
//!   certificate in the state directory (`portico-acme`); until it exists the `*` Host
//!   answers for the name. A ClientHello offering `acme-tls/1` for an ACME name gets the
//!   TLS-ALPN-01 challenge certificate (`downstream/acme.rs`) and the connection then ends.
//! - **Client identity.** With mTLS the verified leaf certificate is summarised once per
//!   connection as an Envoy-style `x-forwarded-client-cert` value:
//!   `Hash=<sha256 of the DER, hex>;Subject="<RFC 4514 subject>"[;URI=<uri SAN>][;DNS=<dns SAN>]...`.
//!   The header is always replaced (a client's own value is removed) unless the listener has
//!   `trust_forwarded: true` and the connection has no client certificate.

use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use portico_config::snapshot::{HostConf, HostGlob, InsecureAction, TlsConf, TlsVersion};
use portico_config::{Diagnostic, Severity, Snapshot};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::StartHandshake;
use tokio_rustls::server::TlsStream;

use crate::body::RespBody;
use portico_config::request_semantics::host_of;

use crate::local_reply::text_reply;
use crate::request::ConnInfo;

/// How often certificate files are checked for changes (rotation is in effect within 2 s).
pub const POLL: Duration = Duration::from_secs(1);
/// A TLS handshake must complete within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The process-wide crypto provider: `ring`, set explicitly (no process default needed).
fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The two ready configs of one Host: with and without `h2` in ALPN.
#[derive(Debug)]
struct Built {
    h2: Arc<ServerConfig>,
    h1: Arc<ServerConfig>,
    /// The leaf certificate's notAfter (Unix seconds), for the expiry metric.
    not_after: Option<i64>,
    /// The certificate and key, for QUIC handshakes (`downstream::h3`).
    certified: Arc<CertifiedKey>,
    /// The client certificate verifier of a Host with `ca_file`, for QUIC handshakes.
    verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// File identity used to notice a change without reading the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Stamp(Vec<Option<(SystemTime, u64, u64)>>);

fn stamp(conf: &TlsConf) -> Stamp {
    let files = [
        Some(&conf.cert_chain_file),
        Some(&conf.private_key_file),
        conf.ca_file.as_ref(),
    ];
    Stamp(
        files
            .iter()
            .map(|f| {
                let m = std::fs::metadata((*f)?).ok()?;
                #[cfg(unix)]
                let ino = std::os::unix::fs::MetadataExt::ino(&m);
                #[cfg(not(unix))]
                let ino = 0;
                Some((m.modified().ok()?, m.len(), ino))
            })
            .collect(),
    )
}

/// One `Host` with `tls`, and its current configs.
#[derive(Debug)]
pub struct HostTls {
    pub name: String,
    pub hostname: HostGlob,
    /// An ACME Host (its certificate is the state directory's; TLS-ALPN-01 answered for it).
    acme: bool,
    conf: TlsConf,
    /// `None` until the files load once (a Host whose files never loaded is skipped).
    built: ArcSwap<Option<Built>>,
    stamp: Mutex<Stamp>,
}

impl HostTls {
    /// The `*` Host of TLS listeners when no Host has `tls`: a self-signed certificate
    /// (`localhost`), generated once per process and kept across reloads, as Emissary does.
    fn self_signed() -> Option<Arc<HostTls>> {
        static SELF_SIGNED: OnceLock<Option<Arc<HostTls>>> = OnceLock::new();
        SELF_SIGNED
            .get_or_init(|| {
                let conf = TlsConf {
                    cert_chain_file: "(self-signed)".into(),
                    private_key_file: "(self-signed)".into(),
                    alpn_protocols: vec!["h2".into(), "http/1.1".into()],
                    min_tls_version: TlsVersion::V1_2,
                    ca_file: None,
                };
                let built = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
                    .map_err(|e| e.to_string())
                    .and_then(|ck| {
                        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
                        build_with(&conf, vec![ck.cert.der().clone()], key)
                    });
                match built {
                    Ok(b) => {
                        tracing::warn!(
                            "no Host has tls: TLS listeners serve a self-signed certificate \
                             generated at start (clients will not trust it); add a Host with tls"
                        );
                        Some(Arc::new(HostTls {
                            name: "self-signed".to_string(),
                            hostname: HostGlob::Any,
                            acme: false,
                            stamp: Mutex::new(stamp(&conf)),
                            conf,
                            built: ArcSwap::from_pointee(Some(b)),
                        }))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot generate a self-signed certificate");
                        None
                    }
                }
            })
            .clone()
    }

    fn new(h: &HostConf, conf: &TlsConf) -> HostTls {
        let st = stamp(conf);
        let built = match build(conf) {
            Ok(b) => Some(b),
            Err(_) if h.acme.is_some() && !conf.cert_chain_file.exists() => {
                tracing::info!(host = %h.name, "no ACME certificate yet: the `*` Host's certificate (if any) answers until it is issued");
                None
            }
            Err(e) => {
                tracing::error!(host = %h.name, error = %e, "cannot load TLS certificate; Host not served over TLS");
                None
            }
        };
        HostTls {
            name: h.name.clone(),
            hostname: h.hostname.clone(),
            acme: h.acme.is_some(),
            conf: conf.clone(),
            built: ArcSwap::from_pointee(built),
            stamp: Mutex::new(st),
        }
    }

    /// Re-reads the files if they changed; keeps the old configs when the new ones fail.
    fn refresh(&self) {
        let now = stamp(&self.conf);
        {
            let Ok(mut last) = self.stamp.lock() else {
                return;
            };
            if *last == now {
                return;
            }
            *last = now;
        }
        match build(&self.conf) {
            Ok(b) => {
                self.built.store(Arc::new(Some(b)));
                tracing::info!(host = %self.name, "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(host = %self.name, error = %e, "TLS certificate change not applied; keeping the previous one")
            }
        }
    }

    /// The config to hand a handshake, if the Host's files ever loaded.
    fn config(&self, http2: bool) -> Option<Arc<ServerConfig>> {
        let b = self.built.load();
        let b = (**b).as_ref()?;
        Some(if http2 { b.h2.clone() } else { b.h1.clone() })
    }
}

/// Every Host with `tls`, in SNI match order.
#[derive(Debug, Default)]
pub struct TlsHosts {
    hosts: Vec<Arc<HostTls>>,
}

impl TlsHosts {
    /// Builds the TLS state for `snapshot`, reusing (with their loaded certificates and
    /// rotation state) the Hosts of `previous` whose settings did not change. Reads files:
    /// call it off the request path. Starts the file poller when there is any TLS Host
    /// (needs a tokio runtime that outlives the result).
    pub fn build(snapshot: &Snapshot, previous: Option<&TlsHosts>) -> Arc<TlsHosts> {
        let mut hosts = Vec::new();
        for h in &snapshot.hosts {
            let Some(conf) = &h.tls else { continue };
            // An ACME Host's certificate is the state directory's file for its name.
            let acme_conf;
            let conf = match (&h.acme, &h.hostname, crate::downstream::acme::store()) {
                (Some(_), HostGlob::Exact(name), Some(store)) => {
                    let mut c = conf.clone();
                    c.cert_chain_file = store.cert_path(name);
                    c.private_key_file = c.cert_chain_file.clone();
                    acme_conf = c;
                    &acme_conf
                }
                (Some(_), _, _) => continue,
                (None, _, _) => conf,
            };
            let reused = previous.and_then(|p| {
                p.hosts
                    .iter()
                    .find(|o| o.hostname == h.hostname && o.conf == *conf)
                    .cloned()
            });
            hosts.push(reused.unwrap_or_else(|| Arc::new(HostTls::new(h, conf))));
        }
        let self_signed =
            hosts.is_empty() && snapshot.listeners.iter().any(|l| l.protocol.is_tls());
        if self_signed && let Some(h) = HostTls::self_signed() {
            hosts.push(h);
        }
        let out = Arc::new(TlsHosts { hosts });
        if !self_signed && !out.hosts.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            let weak: Weak<TlsHosts> = Arc::downgrade(&out);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(POLL).await;
                    let Some(t) = weak.upgrade() else { break };
                    let hosts = t.hosts.clone();
                    drop(t);
                    // File reads and key parsing: keep them off the runtime's thread.
                    let _ = tokio::task::spawn_blocking(move || {
                        for h in &hosts {
                            h.refresh();
                        }
                    })
                    .await;
                }
            });
        }
        out
    }

    /// `(hostname, notAfter in Unix seconds)` of every certificate being served.
    pub fn expiries(&self) -> Vec<(String, i64)> {
        self.hosts
            .iter()
            .filter_map(|h| {
                let b = h.built.load();
                let na = (**b).as_ref()?.not_after?;
                Some((h.hostname.to_string(), na))
            })
            .collect()
    }

    /// Whether `sni` is an ACME Host's exact name (only those get TLS-ALPN-01 answers).
    fn is_acme(&self, sni: Option<&str>) -> bool {
        let Some(name) = sni else { return false };
        let name = name.trim_end_matches('.');
        self.hosts.iter().any(|h| {
            h.acme && matches!(&h.hostname, HostGlob::Exact(n) if n.eq_ignore_ascii_case(name))
        })
    }

    /// The Host for a ClientHello's SNI: the first (most specific) match, else `*`.
    pub fn select(&self, sni: Option<&str>) -> Option<&HostTls> {
        let loaded = |h: &&Arc<HostTls>| h.built.load().is_some();
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(h) = self
                .hosts
                .iter()
                .filter(loaded)
                .find(|h| h.hostname.matches(&name))
            {
                return Some(h);
            }
        }
        self.hosts
            .iter()
            .filter(loaded)
            .find(|h| h.hostname == HostGlob::Any)
            .map(|h| &**h)
    }
}

/// What a QUIC (HTTP/3) handshake needs of the Host its SNI picks.
pub struct QuicHost {
    /// The Host's current (rotated) certificate and key.
    pub key: Arc<CertifiedKey>,
    /// The Host's client certificate verifier when it has `ca_file` (mTLS).
    pub client_auth: Option<Arc<dyn ClientCertVerifier>>,
}

impl TlsHosts {
    /// The Host [`TlsHosts::select`] picks for a QUIC handshake's SNI, with its current
    /// certificate and, for a Host with `ca_file`, its client certificate verifier.
    pub fn quic_host(&self, sni: Option<&str>) -> Option<QuicHost> {
        let h = self.select(sni)?;
        let b = h.built.load();
        (**b).as_ref().map(|b| QuicHost {
            key: b.certified.clone(),
            client_auth: b.verifier.clone(),
        })
    }

    /// The client certificate verifiers of every Host with `ca_file`.
    pub fn client_verifiers(&self) -> Vec<Arc<dyn ClientCertVerifier>> {
        self.hosts
            .iter()
            .filter_map(|h| (**h.built.load()).as_ref()?.verifier.clone())
            .collect()
    }
}

/// Checks every Host's TLS files (readable, parsable, key matching the certificate, CA
/// parsable): one error per Host that fails, at the position of its `Host` resource. The
/// config crate only checks that the files exist; run this before applying a config.
pub fn validate(snapshot: &Snapshot) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for h in &snapshot.hosts {
        let Some(conf) = &h.tls else { continue };
        if h.acme.is_some() {
            continue; // its certificate comes from the state directory
        }
        if let Err(message) = build(conf) {
            let (file, line) = snapshot
                .resources
                .iter()
                .find(|r| r.kind == "Host" && r.name == h.name)
                .map(|r| (r.file.clone(), r.line))
                .unwrap_or_else(|| ("-".into(), 0));
            errors.push(Diagnostic {
                file,
                line,
                column: 1,
                kind: "Host".into(),
                name: h.name.clone(),
                severity: Severity::Error,
                message,
            });
        }
    }
    errors
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: invalid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Loads a Host's files and builds its two configs.
fn build(conf: &TlsConf) -> Result<Built, String> {
    let chain = certs(&conf.cert_chain_file, "cert_chain_file")?;
    let key_pem = read(&conf.private_key_file, "private_key_file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        format!(
            "private_key_file {}: no usable private key: {e}",
            conf.private_key_file.display()
        )
    })?;
    build_with(conf, chain, key)
}

/// The leaf certificate's public key must be the private key's. Compared on the DER of the
/// SubjectPublicKeyInfo read with x509-parser, which (unlike webpki, behind rustls'
/// `keys_match`) accepts X.509 v1 certificates, what `openssl x509 -req -signkey` makes.
fn check_key_matches(
    chain: &[CertificateDer<'static>],
    signer: &dyn rustls::sign::SigningKey,
) -> Result<(), String> {
    let leaf = chain.first().ok_or("no certificate found")?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let Some(key_spki) = signer.public_key() else {
        // The key type cannot tell its public key: nothing to compare.
        return Ok(());
    };
    if cert.tbs_certificate.subject_pki.raw == key_spki.as_ref() {
        Ok(())
    } else {
        Err("the private key is not the certificate's".to_string())
    }
}

/// A Host's two configs from a certificate chain and key already read.
fn build_with(
    conf: &TlsConf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Built, String> {
    let p = provider();
    let signer = p.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "private_key_file {}: unsupported key: {e}",
            conf.private_key_file.display()
        )
    })?;
    check_key_matches(&chain, &*signer).map_err(|e| {
        format!(
            "private_key_file {} does not match cert_chain_file {}: {e}",
            conf.private_key_file.display(),
            conf.cert_chain_file.display()
        )
    })?;
    let not_after = chain
        .first()
        .and_then(|leaf| x509_parser::parse_x509_certificate(leaf).ok())
        .map(|(_, c)| c.validity().not_after.timestamp());
    let certified = Arc::new(CertifiedKey::new(chain, signer));
    let verifier = match &conf.ca_file {
        None => None,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca, "ca_file")? {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            }
            let v: Arc<dyn ClientCertVerifier> =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), p.clone())
                    .build()
                    .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            Some(v)
        }
    };
    let versions: &[&'static rustls::SupportedProtocolVersion] = match conf.min_tls_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let make = |h2: bool| -> Result<Arc<ServerConfig>, String> {
        let b = ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?;
        let b = match &verifier {
            Some(v) => b.with_client_cert_verifier(v.clone()),
            None => b.with_no_client_auth(),
        };
        let mut cfg = b.with_cert_resolver(Arc::new(Fixed(certified.clone())));
        cfg.alpn_protocols = conf
            .alpn_protocols
            .iter()
            .filter(|a| h2 || a.as_str() != "h2")
            .map(|a| a.as_bytes().to_vec())
            .collect();
        Ok(Arc::new(cfg))
    };
    Ok(Built {
        h2: make(true)?,
        h1: make(false)?,
        not_after,
        certified,
        verifier,
    })
}

/// Always the Host's certificate (the Host was chosen by SNI already).
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// A fatal `unrecognized_name` alert as a plaintext TLS record (sent before any handshake
/// message, so it is valid for TLS 1.2 and 1.3 clients).
const UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70];

/// Largest ClientHello read before giving up.
const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// A terminated TLS connection and what it says about the client.
pub struct Accepted<S> {
    pub stream: TlsStream<S>,
    /// The `x-forwarded-client-cert` value of a verified client certificate.
    pub client_cert: Option<HeaderValue>,
}

/// Runs the server side of a handshake on `io`: reads the ClientHello, picks the Host by SNI,
/// completes the handshake with that Host's config.
pub async fn accept<S>(hosts: &TlsHosts, mut io: S, http2: bool) -> io::Result<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut acceptor = Acceptor::default();
    let mut buf = vec![0u8; 8192];
    let mut total = 0usize;
    let accepted = loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > MAX_CLIENT_HELLO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello too large",
            ));
        }
        let mut rd: &[u8] = &buf[..n];
        while !rd.is_empty() {
            if acceptor.read_tls(&mut rd as &mut dyn Read)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello not consumed",
                ));
            }
        }
        match acceptor.accept() {
            Ok(Some(a)) => break a,
            Ok(None) => continue,
            Err((e, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = io.write_all(&out).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    };
    let sni = accepted.client_hello().server_name().map(str::to_owned);
    if crate::downstream::acme::wants_tls_alpn01(&accepted.client_hello())
        && hosts.is_acme(sni.as_deref())
    {
        // TLS-ALPN-01 (RFC 8737): the challenge certificate, then the connection ends.
        let Some(config) = crate::downstream::acme::tls_alpn01_config(sni.as_deref(), provider())
        else {
            let _ = io.write_all(&UNRECOGNIZED_NAME).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no ACME challenge pending for SNI {sni:?}"),
            ));
        };
        let mut stream = StartHandshake::from_parts(accepted, io)
            .into_stream(config)
            .await?;
        let _ = stream.shutdown().await;
        return Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "acme-tls/1 challenge answered",
        ));
    }
    let config = hosts.select(sni.as_deref()).and_then(|h| h.config(http2));
    let Some(config) = config else {
        let _ = io.write_all(&UNRECOGNIZED_NAME).await;
        let _ = io.shutdown().await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no Host for SNI {sni:?}"),
        ));
    };
    let stream = StartHandshake::from_parts(accepted, io)
        .into_stream(config)
        .await?;
    let client_cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| client_cert_value(leaf.as_ref()));
    Ok(Accepted {
        stream,
        client_cert,
    })
}

/// `Hash=…;Subject="…";URI=…;DNS=…` for a verified leaf certificate (DER).
pub fn client_cert_value(der: &[u8]) -> Option<HeaderValue> {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut v = String::from("Hash=");
    for b in digest.as_ref() {
        let _ = write!(v, "{b:02x}");
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        let subject = cert.subject().to_string();
        let _ = write!(
            v,
            ";Subject=\"{}\"",
            subject.replace('\\', "\\\\").replace('"', "\\\"")
        );
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::URI(u) => {
                        let _ = write!(v, ";URI={u}");
                    }
                    x509_parser::extensions::GeneralName::DNSName(d) => {
                        let _ = write!(v, ";DNS={d}");
                    }
                    _ => {}
                }
            }
        }
    }
    // Drop anything a header value can't carry rather than the whole identity.
    let clean: String = v
        .chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .collect();
    HeaderValue::from_str(&clean).ok()
}

/// Sets (or sanitises) `x-forwarded-client-cert` on a request going upstream.
pub fn forward_client_cert(headers: &mut HeaderMap, conn: &ConnInfo) {
    match &conn.client_cert {
        Some(v) => {
            headers.insert(X_FORWARDED_CLIENT_CERT.clone(), v.clone());
        }
        None if conn.listener.trust_forwarded => {}
        None => {
            headers.remove(&X_FORWARDED_CLIENT_CERT);
        }
    }
}

/// `requestPolicy.insecure` for a request on a plain-HTTP listener: the reply to send
/// instead of routing (301 to https or 403), or `None` to route it. Only Hosts with `tls`
/// count; the most specific Host matching the `:authority` (port stripped) decides. On a
/// `trust_forwarded` listener a request whose `x-forwarded-proto` is `https` is secure.
pub fn insecure_policy<B>(
    snapshot: &Snapshot,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Option<Response<RespBody>> {
    if conn.tls || snapshot.hosts.is_empty() {
        return None;
    }
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
        })
        .unwrap_or("");
    let host = host_of(authority);
    let h = snapshot
        .hosts
        .iter()
        .filter(|h| h.tls.is_some())
        .find(|h| h.hostname.matches(&host))?;
    if conn.listener.trust_forwarded
        && req
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
    {
        return None;
    }
    match h.insecure {
        InsecureAction::Route => None,
        InsecureAction::Reject => Some(text_reply(
            StatusCode::FORBIDDEN,
            "insecure request rejected: use https",
        )),
        InsecureAction::Redirect => {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let location = format!("https://{host}{pq}");
            let mut resp = Response::new(RespBody::empty());
            *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                    Some(resp)
                }
                Err(_) => Some(text_reply(StatusCode::BAD_REQUEST, "invalid host")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_is_unrecognized_name() {
        assert_eq!(UNRECOGNIZED_NAME[0], 21); // alert record
        assert_eq!(UNRECOGNIZED_NAME[5], 2); // fatal
        assert_eq!(UNRECOGNIZED_NAME[6], 112); // unrecognized_name
    }
}
