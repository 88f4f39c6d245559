//! One ACME order for one name, with `instant-acme` (JWS signing, nonces and the `badNonce`
//! retries of RFC 8555 §6.5 are the crate's): the account (loaded from the state directory or
//! created there), the order, the challenge answer put where every process sharing the state
//! directory serves it, a CSR for a new ECDSA P-256 key (rcgen), and the certificate chain.
//!
//! The HTTP client is hyper-rustls on the ring provider, trusting the Host's `ca_file` or
//! else the public web roots; it remembers the `Retry-After` of a 429/503 answer (rate limits,
//! RFC 8555 §6.6) so the caller can wait at least that long before the next attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use portico_config::snapshot::{AcmeChallenge, AcmeConf};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::store::{Store, write_atomic};

/// How long the CA gets to validate a challenge, and to issue after finalization.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// Why an order failed.
#[derive(Debug, Clone)]
pub struct OrderError {
    /// One line, with the ACME problem document (type, detail, subproblems) when there is one.
    pub message: String,
    /// The server's `Retry-After` on a rate-limit (429) or unavailable (503) answer.
    pub retry_after: Option<SystemTime>,
}

impl std::fmt::Display for OrderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn describe(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let mut s = format!(
                "ACME problem: type={} status={} detail={}",
                p.r#type.as_deref().unwrap_or("-"),
                p.status.map_or_else(|| "-".to_string(), |s| s.to_string()),
                p.detail.as_deref().unwrap_or("-")
            );
            for sp in &p.subproblems {
                s.push_str(&format!("; subproblem: {sp}"));
            }
            s
        }
        other => {
            // Connection errors hide their cause in the source chain.
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

type Hyper = HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// What the HTTP client saw of the server's refusals.
#[derive(Debug, Default)]
struct Seen {
    /// The last `Retry-After` of a 429/503.
    retry_after: Option<SystemTime>,
    /// The last problem document of an error answer (type and detail), kept because some
    /// calls (the directory fetch) would otherwise report only that the body is no directory.
    problem: Option<String>,
}

/// hyper-rustls, remembering what [`Seen`] holds.
struct Http {
    inner: Hyper,
    seen: Arc<Mutex<Seen>>,
}

impl HttpClient for Http {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = HttpClient::request(&self.inner, req);
        let seen = self.seen.clone();
        Box::pin(async move {
            let mut rsp = fut.await?;
            let status = rsp.parts.status.as_u16();
            if status == 429 || status == 503 {
                let after = rsp
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| SystemTime::now() + Duration::from_secs(s.min(86_400)));
                if let (Some(a), Ok(mut g)) = (after, seen.lock()) {
                    g.retry_after = Some(a);
                }
            }
            if status < 400 {
                // Only the refusal that ended an exchange is worth reporting.
                if let Ok(mut g) = seen.lock() {
                    g.problem = None;
                }
            } else {
                // Read the (small) problem document, then hand the same bytes on.
                let body = rsp
                    .body
                    .into_bytes()
                    .await
                    .map_err(instant_acme::Error::Other)?;
                // badNonce is retried by the client itself: not a reason to report.
                if let Ok(p) = serde_json::from_slice::<serde_json::Value>(&body)
                    && p["type"] != "urn:ietf:params:acme:error:badNonce"
                    && let Ok(mut g) = seen.lock()
                {
                    g.problem = Some(format!(
                        "HTTP {status}: type={} detail={}",
                        p["type"].as_str().unwrap_or("-"),
                        p["detail"].as_str().unwrap_or("-")
                    ));
                }
                rsp = BytesResponse::from(http::Response::from_parts(
                    rsp.parts,
                    http_body_util::Full::new(body),
                ));
            }
            Ok(rsp)
        })
    }
}

fn http_client(conf: &AcmeConf, seen: Arc<Mutex<Seen>>) -> Result<Http, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &conf.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("ca_file {}: no certificate", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Http {
        inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        seen,
    })
}

/// The account for `conf.authority`: the stored one, else a new one (stored at once).
async fn account(store: &Store, conf: &AcmeConf, http: Http) -> Result<Account, String> {
    let path = store.account_path(&conf.authority);
    if let Ok(bytes) = std::fs::read(&path)
        && let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&bytes)
    {
        return Account::builder_with_http(Box::new(http))
            .from_credentials(creds)
            .await
            .map_err(|e| format!("cannot restore the ACME account: {}", describe(&e)));
    }
    let contact: Vec<String> = conf.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = Account::builder_with_http(Box::new(http))
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            conf.authority.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot create the ACME account: {}", describe(&e)))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_atomic(&path, &json)
        .map_err(|e| format!("cannot store the ACME account in {}: {e}", path.display()))?;
    tracing::info!(authority = %conf.authority, "ACME account created");
    Ok(account)
}

/// The self-signed TLS-ALPN-01 certificate (RFC 8737): the name as its only SAN and the
/// key authorization's SHA-256 in the critical acmeIdentifier extension. Key then cert, PEM.
pub fn tls_alpn01_cert(name: &str, digest: &[u8]) -> Result<String, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

/// Challenge files written for one order, removed when it ends.
#[derive(Default)]
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Orders a certificate for `name`; returns the new key and chain as one PEM text.
pub async fn order(store: &Store, name: &str, conf: &AcmeConf) -> Result<String, OrderError> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let fail = |mut message: String| {
        let (retry_after, problem) = seen
            .lock()
            .map(|g| (g.retry_after, g.problem.clone()))
            .unwrap_or_default();
        // A problem the error itself does not carry (e.g. a refused directory fetch).
        if let Some(p) = problem
            && !message.contains("ACME problem")
        {
            message.push_str(&format!(" (the server answered {p})"));
        }
        OrderError {
            message,
            retry_after,
        }
    };
    let http = http_client(conf, seen.clone()).map_err(fail)?;
    let account = account(store, conf, http).await.map_err(fail)?;
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| fail(format!("new order: {}", describe(&e))))?;
    let mut cleanup = Cleanup::default();
    {
        let mut auths = order.authorizations();
        while let Some(a) = auths.next().await {
            let mut a = a.map_err(|e| fail(format!("authorization: {}", describe(&e))))?;
            match a.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(fail(format!("authorization is {other:?}")));
                }
            }
            let kind = match conf.challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut ch = a.challenge(kind).ok_or_else(|| {
                fail(format!(
                    "the CA offers no {} challenge for {name}",
                    conf.challenge.as_str()
                ))
            })?;
            let key_auth = ch.key_authorization();
            let (path, body) = match conf.challenge {
                AcmeChallenge::Http01 => {
                    let path = store.http01_path(&ch.token).ok_or_else(|| {
                        fail("the CA sent a token that is not base64url".to_string())
                    })?;
                    (path, key_auth.as_str().as_bytes().to_vec())
                }
                AcmeChallenge::TlsAlpn01 => {
                    let pem = tls_alpn01_cert(name, key_auth.digest().as_ref()).map_err(fail)?;
                    (store.tls_alpn01_path(name), pem.into_bytes())
                }
            };
            write_atomic(&path, &body)
                .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
            cleanup.0.push(path);
            ch.set_ready()
                .await
                .map_err(|e| fail(format!("challenge: {}", describe(&e))))?;
        }
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(POLL_TIMEOUT);
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| fail(format!("waiting for validation: {}", describe(&e))))?;
    if status != OrderStatus::Ready {
        let mut problems: Vec<String> = order
            .state()
            .error
            .clone()
            .map(|p| describe(&instant_acme::Error::Api(p)))
            .into_iter()
            .collect();
        // The challenge's own problem document says why validation failed.
        let mut auths = order.authorizations();
        while let Some(Ok(mut a)) = auths.next().await {
            if let Ok(st) = a.refresh().await {
                problems.extend(
                    st.challenges
                        .iter()
                        .filter_map(|c| c.error.clone())
                        .map(|p| describe(&instant_acme::Error::Api(p))),
                );
            }
        }
        if problems.is_empty() {
            problems.push(format!("order is {status:?}"));
        }
        return Err(fail(format!("validation failed: {}", problems.join("; "))));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| fail(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| fail(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| fail(e.to_string()))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| fail(format!("finalize: {}", describe(&e))))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| fail(format!("certificate: {}", describe(&e))))?;
    drop(cleanup);
    Ok(format!("{}{}", key.serialize_pem(), chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alpn01_certificate_carries_the_digest() {
        let digest = [7u8; 32];
        let pem = tls_alpn01_cert("a.test", &digest).unwrap();
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .unwrap();
        assert!(ext.critical);
        assert_eq!(&ext.value[2..], &digest);
    }
}
