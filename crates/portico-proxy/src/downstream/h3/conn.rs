//! One HTTP/3 connection: the QUIC handshake (time-bounded), the HTTP/3 session with the
//! listener's limits, one task per request stream, and the drain.
//!
//! Limits, as on HTTP/2: `max_concurrent_streams` is the QUIC bidirectional stream limit,
//! `max_request_headers_kb` the HTTP/3 `SETTINGS_MAX_FIELD_SECTION_SIZE` (beyond it `h3`
//! answers 431), the flow-control windows are `initial_stream_window_bytes` /
//! `initial_connection_window_bytes`, and `keepalive_timeout_ms` is the QUIC idle timeout
//! (a connection with no packet for that long is closed; [`NO_IDLE_CAP`] when the listener
//! has none). Request body limits and timeouts are the pipeline's.
//!
//! Drain, and memory pressure from the overload manager: HTTP/3 GOAWAY naming the last stream
//! accepted, then the streams in flight finish, then the connection closes (waiting briefly
//! for the client to acknowledge the last bytes). Pressure counts in
//! `portico_overload_actions_total{action="disable_keepalive"}` as for HTTP/1 and HTTP/2.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use portico_config::snapshot::ListenerConf;
use quinn::{IdleTimeout, VarInt};
use tokio::sync::watch;

use crate::downstream::tls::HANDSHAKE_TIMEOUT;
use crate::request::ConnInfo;
use crate::state::Proxy;

/// The QUIC idle timeout of a listener without `keepalive_timeout_ms` (a QUIC connection
/// whose client vanished is only ever noticed by its idle timeout).
pub const NO_IDLE_CAP: Duration = Duration::from_secs(600);
/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder and
/// decoder); a few more for extensions and GREASE.
const MAX_UNI_STREAMS: u32 = 8;
/// H3_REQUEST_REJECTED (RFC 9114 §8.1): the close code of a connection refused after its
/// handshake (an mTLS Host's client without an acceptable certificate).
const H3_REQUEST_REJECTED: u32 = 0x10b;
/// How long a closing connection waits for the client to acknowledge its last bytes.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// The QUIC transport parameters of a listener.
pub(super) fn transport(conf: &ListenerConf) -> quinn::TransportConfig {
    let l = &conf.limits;
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(VarInt::from_u32(l.max_concurrent_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(l.initial_stream_window_bytes))
        .receive_window(VarInt::from_u32(l.initial_connection_window_bytes))
        .max_idle_timeout(IdleTimeout::try_from(l.keepalive_timeout.unwrap_or(NO_IDLE_CAP)).ok());
    t
}

/// Handshakes in progress on one listener's endpoint.
#[derive(Default)]
pub(super) struct Handshakes(AtomicUsize);

impl Handshakes {
    pub(super) fn in_progress(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts one handshake in progress until dropped.
pub(super) struct Handshaking(Arc<Handshakes>);

impl Handshaking {
    pub(super) fn new(h: &Arc<Handshakes>) -> Handshaking {
        h.0.fetch_add(1, Ordering::Relaxed);
        Handshaking(h.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one QUIC connection to its end (`slot`: its admission, given back when it ends).
pub(super) async fn serve(
    proxy: Arc<Proxy>,
    slot: Box<dyn Send + Sync>,
    connecting: quinn::Connecting,
    shaking: Handshaking,
    listener: Arc<ListenerConf>,
    mut drain: watch::Receiver<bool>,
) {
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    drop(shaking);
    let peer = conn.remote_address();
    let client_cert = match super::tls::client_cert(&proxy, &conn) {
        Ok(c) => c,
        Err(why) => {
            // An mTLS Host's client without an acceptable certificate: no request is read.
            tracing::info!(client = %peer, reason = why, "QUIC connection refused: client certificate");
            conn.close(VarInt::from_u32(H3_REQUEST_REJECTED), why.as_bytes());
            return;
        }
    };
    let max_field_section = u64::from(listener.limits.max_request_headers_bytes);
    let mut info = ConnInfo::new(peer, listener, true, client_cert);
    info.alt_svc = None;
    let info = Arc::new(info);
    let built = h3::server::builder()
        .max_field_section_size(max_field_section)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3conn = match built {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(client = %peer, error = %e, "HTTP/3 session not established");
            return;
        }
    };
    let mut closing = false;
    // Memory pressure (the overload manager) closes the connection like a drain does: GOAWAY,
    // then the streams in flight finish. A connection opened under pressure is not closed for
    // it (its requests get the 503 with the overload flag).
    let mut pressure = proxy.overload.subscribe_memory();
    let mut pressured = *pressure.borrow_and_update();
    let mut pressure_open = true;
    loop {
        let next = if closing {
            h3conn.accept().await
        } else {
            let why = tokio::select! {
                r = h3conn.accept() => Ok(r),
                _ = async { drain.wait_for(|d| *d).await.map(|_| ()) } => Err("drain"),
                c = pressure.changed(), if pressure_open => {
                    pressure_open = c.is_ok();
                    let now = *pressure.borrow_and_update();
                    let began = now && !pressured;
                    pressured = now;
                    if !began {
                        continue;
                    }
                    proxy
                        .overload
                        .actions
                        .disable_keepalive
                        .fetch_add(1, Ordering::Relaxed);
                    Err("memory pressure")
                }
            };
            match why {
                Ok(r) => r,
                Err(why) => {
                    closing = true;
                    // GOAWAY: the streams accepted so far are served, later ones refused.
                    if let Err(e) = h3conn.shutdown(1).await {
                        tracing::debug!(client = %peer, error = %e, "HTTP/3 GOAWAY not sent");
                        break;
                    }
                    tracing::debug!(client = %peer, reason = why, "HTTP/3 GOAWAY sent");
                    continue;
                }
            }
        };
        match next {
            Ok(Some(resolver)) => {
                tokio::spawn(super::stream::serve(proxy.clone(), info.clone(), resolver));
            }
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    tracing::debug!(client = %peer, error = %e, "HTTP/3 connection ended");
                }
                break;
            }
        }
    }
    // Closing discards what the client has not acknowledged yet: give the last response's
    // bytes a moment (the client usually closes first), then close with H3_NO_ERROR.
    let _ = tokio::time::timeout(CLOSE_LINGER, conn.closed()).await;
    conn.close(VarInt::from_u32(0x100), b"");
    drop(slot);
}
