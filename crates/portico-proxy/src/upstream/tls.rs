//! TLS to upstreams (`https://` services, `protocol: https | auto`, `Upstream.tls`).
//!
//! One rustls `ClientConfig` is built per upstream state, when the state is created (at start-up
//! or on a reload, on the control thread): never on the request path. Certificates are verified
//! against `ca_file` when given, else against the Mozilla roots compiled in (`webpki-roots`:
//! hermetic, the same on every machine). `insecure_skip_verify` accepts any certificate (the
//! handshake signature is still checked) and logs a warning once, when the config is built.
//! `protocol: https` offers ALPN `http/1.1` only; `auto` offers `h2, http/1.1` and the pool
//! speaks HTTP/2 when the upstream picks `h2`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use portico_config::snapshot::{EndpointSource, UpstreamConf, UpstreamProtocol};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS client settings of one upstream, ready to connect with.
#[derive(Debug)]
pub struct UpstreamTls {
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must carry; `None`: the endpoint's IP (no SNI sent,
    /// the certificate must carry the IP).
    name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// The name to present and verify when connecting to `addr`.
    pub fn server_name(&self, addr: SocketAddr) -> ServerName<'static> {
        match &self.name {
            Some(n) => n.clone(),
            None => ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// Builds the TLS settings of `conf`; `Ok(None)` for plain-text protocols.
    pub fn build(conf: &UpstreamConf) -> Result<Option<UpstreamTls>, String> {
        let alpn: Vec<Vec<u8>> = match conf.protocol {
            UpstreamProtocol::Https => vec![b"http/1.1".to_vec()],
            UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            UpstreamProtocol::Http1 | UpstreamProtocol::H2c => return Ok(None),
        };
        let tls = conf
            .tls
            .clone()
            .unwrap_or(portico_config::snapshot::UpstreamTlsConf {
                ca_file: None,
                sni: None,
                cert_chain_file: None,
                private_key_file: None,
                insecure_skip_verify: false,
            });
        // The `ring` provider, explicitly: faster to build than aws-lc-rs.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = if tls.insecure_skip_verify {
            tracing::warn!(
                upstream = %conf.name,
                "insecure_skip_verify: upstream certificates are NOT verified"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny {
                    algorithms: provider.signature_verification_algorithms,
                }))
        } else {
            let mut roots = RootCertStore::empty();
            match &tls.ca_file {
                Some(path) => {
                    let certs = read_certs(path)?;
                    let (added, _ignored) = roots.add_parsable_certificates(certs);
                    if added == 0 {
                        return Err(format!("ca_file {}: no usable certificate", path.display()));
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match (&tls.cert_chain_file, &tls.private_key_file) {
            (Some(chain), Some(key)) => {
                let certs = read_certs(chain)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("private_key_file {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("client certificate: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn;
        let name = match &tls.sni {
            Some(sni) => {
                Some(ServerName::try_from(sni.clone()).map_err(|e| format!("sni `{sni}`: {e}"))?)
            }
            None => endpoint_host_name(&conf.endpoints),
        };
        Ok(Some(UpstreamTls {
            config: Arc::new(config),
            name,
        }))
    }
}

/// The one DNS name every endpoint uses, if there is such a name (a DNS upstream, or static
/// endpoints written as `name:port`); IP endpoints give `None`.
fn endpoint_host_name(endpoints: &EndpointSource) -> Option<ServerName<'static>> {
    let host = match endpoints {
        EndpointSource::Dns { host, .. } => host.clone(),
        EndpointSource::Static(list) => {
            let mut hosts = list.iter().map(|e| {
                let host = e
                    .address
                    .rsplit_once(':')
                    .map_or(e.address.as_str(), |(h, _)| h);
                host.trim_start_matches('[').trim_end_matches(']')
            });
            let first = hosts.next()?;
            if first.parse::<IpAddr>().is_ok() || hosts.any(|h| h != first) {
                return None;
            }
            first.to_string()
        }
    };
    ServerName::try_from(host).ok()
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// `insecure_skip_verify`: any certificate is accepted; handshake signatures are still checked
/// (so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAny {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_config::snapshot::EndpointConf;

    #[test]
    fn host_name_from_endpoints() {
        let one = EndpointSource::Static(vec![
            EndpointConf {
                address: "api.internal:443".into(),
                weight: 1,
            },
            EndpointConf {
                address: "api.internal:8443".into(),
                weight: 1,
            },
        ]);
        assert_eq!(
            endpoint_host_name(&one),
            ServerName::try_from("api.internal").ok()
        );
        let ip = EndpointSource::Static(vec![EndpointConf {
            address: "10.0.0.1:443".into(),
            weight: 1,
        }]);
        assert_eq!(endpoint_host_name(&ip), None);
    }
}
