//! Which HTTP versions a connection may speak (RFC 9113 §3), enforced on its first bytes
//! before HTTP/2 is handed to hyper's h2 server: the HTTP/2 preface on an HTTP/1.1-only
//! connection is answered `400` (HTTP/1.1) and closed; anything but the preface on a
//! connection that negotiated `h2` is closed without a byte. Both are logged as rejected
//! requests (flag `DPE`).
//!
//! HTTP/1.1 itself never reaches hyper: Portico's own server (`downstream::h1`) serves it and
//! hands over only a connection that starts with the preface.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::request::{self, ConnInfo};
use crate::state::Proxy;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Which HTTP versions a connection may speak: decided by the listener (`http2`) and, over
/// TLS, by ALPN (RFC 9113 §3.2, §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Versions {
    /// Cleartext with `http2: true`: HTTP/1.1, or HTTP/2 by prior knowledge (the preface).
    #[default]
    Both,
    /// `http2: false`, or TLS that did not negotiate `h2`: the HTTP/2 preface is refused
    /// with 400 and a closed connection.
    Http1Only,
    /// TLS that negotiated `h2`: anything but the preface is a connection error (closed
    /// without a byte of HTTP/1).
    Http2Only,
}

/// Why [`expect_preface`] gave up.
const NOT_HTTP2: &str = "HTTP/1 request on an HTTP/2-only (ALPN h2) connection";
const HTTP2_NOT_ALLOWED: &str = "HTTP/2 preface on an HTTP/1.1-only connection";

/// The answer to a preface on an HTTP/1.1-only connection.
const REFUSAL: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// On an `h2`-only connection: reads until the preface is complete (within the listener's
/// header read timeout) and returns what was read, to be put back in front of the stream.
/// `None`: something else came, the client closed, or time ran out: the connection is to
/// be closed (a wrong first byte is logged as a rejected request).
pub async fn expect_preface<S: AsyncRead + Unpin>(
    proxy: &Proxy,
    info: &ConnInfo,
    stream: &mut S,
) -> Option<BytesMut> {
    let mut buf = BytesMut::with_capacity(64);
    let read = async {
        loop {
            let n = buf.len().min(H2_PREFACE.len());
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
    };
    let timeout = info.listener.limits.header_read_timeout;
    match tokio::time::timeout(timeout, read).await {
        Ok(true) => Some(buf),
        Ok(false) if !buf.is_empty() && !H2_PREFACE.starts_with(&buf[..buf.len().min(24)]) => {
            tracing::info!(client = %info.peer, status = 400, reason = NOT_HTTP2, "invalid request rejected");
            request::log_rejected(proxy, info, 400, NOT_HTTP2, "HTTP/2");
            None
        }
        _ => None,
    }
}

/// On an HTTP/1.1-only connection whose first bytes are the HTTP/2 preface: answers 400,
/// logs it and closes.
pub async fn refuse_preface<S: AsyncWrite + Unpin>(
    proxy: &Arc<Proxy>,
    info: &ConnInfo,
    mut stream: S,
) {
    tracing::info!(client = %info.peer, status = 400, reason = HTTP2_NOT_ALLOWED, "invalid request rejected");
    request::log_rejected(proxy, info, 400, HTTP2_NOT_ALLOWED, "HTTP/1.1");
    let _ = stream.write_all(REFUSAL).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_is_a_complete_http1_answer() {
        let head = portico_h1::ResponseParser::new(portico_h1::Limits::default())
            .parse(
                &mut BytesMut::from(REFUSAL),
                portico_h1::RequestContext::default(),
            )
            .unwrap()
            .unwrap();
        assert_eq!(head.status(), 400);
        assert_eq!(head.framing(), portico_h1::Framing::Length(0));
        assert!(!head.keep_alive());
    }
}
