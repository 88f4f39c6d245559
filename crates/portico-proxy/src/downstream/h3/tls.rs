//! TLS of the QUIC endpoint: one rustls config for every Host (a QUIC endpoint has one), in
//! which the certificate is picked per handshake by SNI ([`SniResolver`]) and client
//! certificates are asked for only by Hosts with `ca_file` ([`ClientAuth`]), so mTLS holds on
//! HTTP/3 as on TCP (docs/reference.md §2.2).
//!
//! rustls asks its verifier whether to request a client certificate right after it resolved
//! the server certificate, in the same call: the resolver leaves the chosen Host's answer in a
//! thread-local that `offer_client_auth` reads. The client's certificate arrives in a later
//! call, possibly after other handshakes ran on the thread, so the handshake accepts a
//! certificate that any mTLS Host's `ca_file` accepts, and [`client_cert`] then checks it (or
//! its absence) against the Host that the connection's SNI picks, before any request is read.
//! A client of an mTLS Host without a certificate fails the handshake (`client_auth_mandatory`:
//! only mTLS Hosts send CertificateRequest, so only their clients are asked).

use std::cell::Cell;
use std::sync::Arc;

use http::HeaderValue;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::downstream::tls::client_cert_value;
use crate::state::Proxy;

thread_local! {
    /// Whether the Host of the handshake being processed on this thread has `ca_file`: set by
    /// [`SniResolver`], read by [`ClientAuth::offer_client_auth`] in the same rustls call.
    static WANTS_CLIENT_CERT: Cell<bool> = const { Cell::new(false) };
}

/// Picks each handshake's certificate by SNI from the current snapshot's TLS Hosts.
pub(super) struct SniResolver(pub(super) Arc<Proxy>);

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let hosts = self.0.active().tls.clone();
        let Some(host) = hosts.quic_host(hello.server_name()) else {
            WANTS_CLIENT_CERT.set(false);
            tracing::debug!(sni = ?hello.server_name(), "QUIC handshake refused: no Host for SNI");
            return None;
        };
        WANTS_CLIENT_CERT.set(host.client_auth.is_some());
        Some(host.key)
    }
}

/// The endpoint's client certificate verifier: asks only for mTLS Hosts, accepts what one
/// of their `ca_file`s accepts.
pub(super) struct ClientAuth {
    pub(super) proxy: Arc<Proxy>,
    pub(super) provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAuth")
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        WANTS_CLIENT_CERT.get()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let hosts = self.proxy.active().tls.clone();
        let mut last = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        for v in hosts.client_verifiers() {
            match v.verify_client_cert(end_entity, intermediates, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// After the handshake: the client certificate checked against the Host the connection's SNI
/// picks. `Ok(Some(xfcc))` for a verified certificate of an mTLS Host, `Ok(None)` for a Host
/// without `ca_file`, `Err(why)` when an mTLS Host's client has no acceptable certificate.
pub(super) fn client_cert(
    proxy: &Proxy,
    conn: &quinn::Connection,
) -> Result<Option<HeaderValue>, &'static str> {
    let sni = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    let hosts = proxy.active().tls.clone();
    let Some(verifier) = hosts.quic_host(sni.as_deref()).and_then(|h| h.client_auth) else {
        return Ok(None);
    };
    let chain = conn
        .peer_identity()
        .and_then(|i| i.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or("client certificate required")?;
    let (leaf, rest) = chain.split_first().ok_or("client certificate required")?;
    verifier
        .verify_client_cert(leaf, rest, UnixTime::now())
        .map_err(|_| "client certificate not accepted by the Host's ca_file")?;
    Ok(client_cert_value(leaf.as_ref()))
}
