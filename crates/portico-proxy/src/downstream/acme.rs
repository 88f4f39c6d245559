//! ACME challenge answers (docs/reference.md §13), read from the state directory so that any
//! process sharing it answers a challenge another one started:
//!
//! - **HTTP-01**: a plain-HTTP `GET`/`HEAD /.well-known/acme-challenge/TOKEN` whose token has a
//!   file in `challenges/http-01/` is answered 200 with the key authorization, for any Host
//!   and before routing (so also where `requestPolicy.insecure` would redirect). A token
//!   without a file goes on to routing as any other request.
//! - **TLS-ALPN-01**: a ClientHello offering `acme-tls/1` gets the
//!   challenge certificate of `challenges/tls-alpn-01/<SNI>.pem` (RFC 8737), and the
//!   connection ends after the handshake.
//!
//! The state directory is set once at start (`portico run --state-dir`); with none set,
//! nothing here answers.

use std::sync::{Arc, OnceLock};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use portico_acme::Store;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::body::RespBody;
use crate::request::ConnInfo;

/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

static STORE: OnceLock<Store> = OnceLock::new();

/// Sets the state directory (once; later calls are ignored).
pub fn set_state_dir(dir: impl Into<std::path::PathBuf>) {
    let _ = STORE.set(Store::new(dir));
}

/// The state directory, when `portico run` set one.
pub fn store() -> Option<&'static Store> {
    STORE.get()
}

/// The state-directory file that would answer `req` if it is an HTTP-01 challenge request
/// (plain HTTP, `GET`/`HEAD`, a base64url token). Cheap for every other request: a flag and a
/// prefix comparison, no allocation.
pub fn http01_path<B>(conn: &ConnInfo, req: &Request<B>) -> Option<std::path::PathBuf> {
    if conn.tls {
        return None;
    }
    let token = req.uri().path().strip_prefix(CHALLENGE_PREFIX)?;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    store()?.http01_path(token)
}

/// The answer from `path` (see [`http01_path`]), or `None` when no such token is pending.
/// Reads the file off the worker thread.
pub async fn http01_answer(path: std::path::PathBuf, head: bool) -> Option<Response<RespBody>> {
    let body = tokio::fs::read(&path).await.ok()?;
    let mut resp = Response::new(if head {
        RespBody::empty()
    } else {
        RespBody::full(body)
    });
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}

/// Whether a ClientHello asks for TLS-ALPN-01.
pub fn wants_tls_alpn01(hello: &ClientHello<'_>) -> bool {
    hello
        .alpn()
        .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN))
}

/// The TLS-ALPN-01 config for `sni`: its challenge certificate from the state directory and
/// `acme-tls/1` as the only ALPN protocol; `None` when no challenge is pending for it.
pub fn tls_alpn01_config(
    sni: Option<&str>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Option<Arc<ServerConfig>> {
    let name = sni?.trim_end_matches('.').to_ascii_lowercase();
    let pem = std::fs::read(store()?.tls_alpn01_path(&name)).ok()?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .ok()?;
    let key = PrivateKeyDer::from_pem_slice(&pem).ok()?;
    let signer = provider.key_provider.load_private_key(key).ok()?;
    let certified = Arc::new(CertifiedKey::new(chain, signer));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .ok()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Challenge(certified)));
    cfg.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Some(Arc::new(cfg))
}

#[derive(Debug)]
struct Challenge(Arc<CertifiedKey>);

impl ResolvesServerCert for Challenge {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
