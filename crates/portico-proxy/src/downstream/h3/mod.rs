//! HTTP/3 downstream (reference §10): a QUIC endpoint (`quinn`) on the UDP side of an `HTTPS`
//! listener with `http3: true`, serving HTTP/3 (`h3`, ALPN `h3`) into the same request pipeline
//! as HTTP/1.1 and HTTP/2.
//!
//! - **Endpoint.** One UDP socket and one `quinn` endpoint per listener, bound by the control
//!   thread with the TCP sockets (a reload applies both or neither) and run on one worker
//!   (chosen by port), which also serves its connections. One socket per listener means no
//!   packet of a connection ever reaches another endpoint; connection migration is off.
//! - **TLS.** TLS 1.3 only (QUIC), 0-RTT off (`max_early_data_size` 0: no replayable
//!   requests at the edge). The certificate is picked per handshake by SNI from the current
//!   snapshot's Hosts (`tls::TlsHosts::quic_host`), so Hosts, certificates and their rotation
//!   are the TCP side's. A Host with `ca_file` requires client certificates over QUIC too
//!   (`tls.rs`), and its clients' certificates reach the upstream in
//!   `x-forwarded-client-cert` as on TCP.
//! - **Admission.** `Listener.http3_max_handshakes` handshakes in progress: beyond it a new
//!   client whose address is not validated yet gets a Retry (address validation, RFC 9000
//!   §8.1) first. QUIC connections take a `max_connections` slot and count in
//!   `portico_downstream_connections{listener}` like TCP ones (`server::admit`).
//! - **Connections and streams** are in `conn.rs` (limits, idle timeout, drain with GOAWAY)
//!   `stream.rs` (field rules, the response) and `body.rs` (the request body and trailers).

pub mod body;
mod conn;
mod stream;
mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portico_config::snapshot::ListenerConf;
use tokio::sync::watch;

use crate::state::Proxy;
use conn::{Handshakes, Handshaking};

/// Admits one more connection on the listener (its `max_connections`, the overload manager's
/// threshold; `server::admit`): a guard that gives the slot back when dropped, or `None`.
pub type Admit = Box<dyn Fn() -> Option<Box<dyn Send + Sync>> + Send + Sync>;

/// The ALPN token of HTTP/3 (RFC 9114 §3.1).
const ALPN_H3: &[u8] = b"h3";

/// Binds the UDP socket of an `http3` listener (`SO_REUSEPORT` like the TCP ones, so a
/// replacement can be bound before the old one closes).
pub fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The endpoint's server config: TLS 1.3 with ALPN `h3`, 0-RTT off, no migration, the
/// listener's limits as QUIC transport parameters.
fn server_config(proxy: &Arc<Proxy>, conf: &ListenerConf) -> Result<quinn::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::new(tls::ClientAuth {
            proxy: proxy.clone(),
            provider: provider.clone(),
        }))
        .with_cert_resolver(Arc::new(tls::SniResolver(proxy.clone())));
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    // 0-RTT off: early data could be replayed.
    tls.max_early_data_size = 0;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut sc = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    sc.migration(false);
    sc.transport_config(Arc::new(conn::transport(conf)));
    Ok(sc)
}

/// Runs an `http3` listener's endpoint on the calling worker until the listener closes or the
/// process drains; its connections run on the same worker.
pub async fn serve_endpoint(
    proxy: Arc<Proxy>,
    conf: ListenerConf,
    mut stop: watch::Receiver<bool>,
    admit: Admit,
    socket: std::net::UdpSocket,
    drain: Arc<watch::Sender<bool>>,
) {
    let name = conf.name.clone();
    let sc = match server_config(&proxy, &conf) {
        Ok(sc) => sc,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot configure QUIC; HTTP/3 not served");
            return;
        }
    };
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(sc),
        socket,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot start QUIC endpoint; HTTP/3 not served");
            return;
        }
    };
    tracing::info!(listener = %name, address = ?endpoint.local_addr().ok(), "listening (HTTP/3)");
    let conf = Arc::new(conf);
    let handshakes = Arc::new(Handshakes::default());
    let mut draining = drain.subscribe();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => break,
            _ = async { draining.wait_for(|d| *d).await.map(|_| ()) } => break,
        };
        let Some(incoming) = incoming else { break };
        let in_progress = handshakes.in_progress();
        if in_progress >= conf.http3_max_handshakes as usize && !incoming.remote_address_validated()
        {
            tracing::info!(listener = %name, client = %incoming.remote_address(), in_progress, "QUIC handshake flood: Retry sent");
            proxy
                .metrics
                .http3_retries_total
                .fetch_add(1, Ordering::Relaxed);
            if incoming.retry().is_err() {
                tracing::debug!(listener = %name, "QUIC Retry not possible; connection ignored");
            }
            continue;
        }
        let Some(slot) = admit() else {
            incoming.refuse();
            continue;
        };
        let peer = incoming.remote_address();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(client = %peer, error = %e, "QUIC connection not accepted");
                continue;
            }
        };
        let shaking = Handshaking::new(&handshakes);
        tokio::spawn(conn::serve(
            proxy.clone(),
            slot,
            connecting,
            shaking,
            conf.clone(),
            drain.subscribe(),
        ));
    }
    // No new connections; those open finish on their own (drain: GOAWAY, then in-flight
    // streams) and keep the endpoint's driver running until then.
    endpoint.set_server_config(None);
    // The drain waits for the connections (each holds its own receiver), not for this task.
    drop((stop, draining));
    tracing::info!(listener = %name, "HTTP/3 endpoint closed to new connections");
    let idle = endpoint.wait_idle();
    let _ = tokio::time::timeout(proxy.settings.drain_timeout + Duration::from_secs(1), idle).await;
}
