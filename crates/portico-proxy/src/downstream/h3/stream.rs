//! One HTTP/3 request stream: the request head with the field rules of RFC 9114 §4.2 (reference
//! §5), its body as a [`RecvBody`] fed to the request pipeline (`request::handle`), and the
//! response (head, body frames as they come, trailers) written back.
//!
//! Field rules, in addition to what `h3` refuses itself (uppercase or invalid names, invalid
//! values, unknown or misplaced pseudo-headers: the stream is reset with H3_MESSAGE_ERROR):
//! connection-specific fields (`connection`, `keep-alive`, `proxy-connection`,
//! `transfer-encoding`, `upgrade`) and a `te` other than `trailers` reset the stream with
//! H3_MESSAGE_ERROR here. Either way nothing reaches an upstream, and the rejection gets an
//! access log line (flag DPE) and counts in `portico_downstream_rejected_total`. Values with
//! surrounding whitespace are refused by the pipeline's screen (`h2_rules::check`, 400 DPE),
//! as for HTTP/2. A body longer or shorter than its `content-length` is malformed (RFC 9114
//! §4.1.2): the request ends with 400 DPE (or the upstream request is cut).
//!
//! Send-side bounds (`send_watch`): a response carrying a [`SendWatch`](crate::downstream::send_watch::SendWatch)
//! (a deadline or an `idle_timeout_ms`) is written under a [`Watchdog`]: a client that reads
//! nothing for the idle timeout (its QUIC flow-control credit stays shut, so writing blocks and
//! the body is no longer polled), or a response still streaming at the deadline, resets the
//! stream with H3_REQUEST_CANCELLED; the body logs the status already sent with flag SI or UT.

use std::sync::Arc;

use bytes::Bytes;
use h3::error::Code;
use h3::server::{RequestResolver, RequestStream};
use http::{HeaderMap, Request, Version, header};
use http_body::Body;

use super::body::RecvBody;
use crate::downstream::send_watch::{Slot, Watchdog};
use crate::reqbody::{BoxError, ClientBody};
use crate::request::{self, ConnInfo};
use crate::state::Proxy;

type Resolver = RequestResolver<h3_quinn::Connection, Bytes>;
type SendSide = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Connection-specific fields an HTTP/3 request must not carry (RFC 9114 §4.2), and `te`
/// other than `trailers`.
fn connection_specific(headers: &HeaderMap) -> Option<&'static str> {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        if headers.contains_key(&name) {
            return Some("connection-specific header field");
        }
    }
    if headers.contains_key("keep-alive") || headers.contains_key("proxy-connection") {
        return Some("connection-specific header field");
    }
    if headers
        .get_all(header::TE)
        .iter()
        .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        return Some("te other than trailers");
    }
    None
}

/// Serves one request stream to its end.
pub(super) async fn serve(proxy: Arc<Proxy>, info: Arc<ConnInfo>, resolver: Resolver) {
    let (req, stream) = match resolver.resolve_request().await {
        Ok(r) => r,
        Err(e) => {
            match &e {
                h3::error::StreamError::StreamError { code, reason, .. }
                    if *code == Code::H3_MESSAGE_ERROR =>
                {
                    tracing::info!(client = %info.peer, reason = %reason, "invalid HTTP/3 request; stream reset");
                    request::log_rejected(&proxy, &info, 400, reason, "HTTP/3");
                }
                h3::error::StreamError::HeaderTooBig { .. } => {
                    request::log_rejected(
                        &proxy,
                        &info,
                        431,
                        "request headers too large",
                        "HTTP/3",
                    );
                }
                _ => {
                    tracing::debug!(client = %info.peer, error = %e, "HTTP/3 request stream failed")
                }
            }
            return;
        }
    };
    let (mut send, mut recv) = stream.split();
    if let Some(why) = connection_specific(req.headers()) {
        tracing::info!(client = %info.peer, reason = why, "invalid HTTP/3 request; stream reset");
        request::log_rejected(&proxy, &info, 400, why, "HTTP/3");
        recv.stop_sending(Code::H3_MESSAGE_ERROR);
        send.stop_stream(Code::H3_MESSAGE_ERROR);
        return;
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let body = ClientBody::H3(Box::new(RecvBody::new(recv, declared)));
    let Ok(resp) = request::handle(proxy, info.clone(), Request::from_parts(parts, body)).await;
    let Some(watch) = resp.body().send_watch().cloned() else {
        if let Err(e) = respond(&mut send, resp).await {
            tracing::debug!(client = %info.peer, error = %e, "HTTP/3 response not completed");
        }
        return;
    };
    let slot = Arc::new(Slot::default());
    slot.watch(watch);
    let mut dog = Watchdog::new(slot);
    // `biased`: the response is polled first; the watchdog only wakes on its own timer.
    // The losing future (with the response body) is dropped before either arm runs, so the
    // body has logged its end before the stream is reset.
    tokio::select! {
        biased;
        r = respond(&mut send, resp) => {
            if let Err(e) = r {
                tracing::debug!(client = %info.peer, error = %e, "HTTP/3 response not completed");
            }
        }
        cut = &mut dog => {
            tracing::debug!(client = %info.peer, reason = %cut, "HTTP/3 response cut; stream reset");
            send.stop_stream(Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// Writes the response: head, then the body's frames as they come, then the end (trailers or
/// FIN). A body error resets the stream (the client sees an incomplete response, never a
/// clean end).
async fn respond(
    send: &mut SendSide,
    resp: http::Response<crate::body::RespBody>,
) -> Result<(), BoxError> {
    let (mut parts, body) = resp.into_parts();
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.remove("keep-alive");
    parts.version = Version::HTTP_3;
    send.send_response(http::Response::from_parts(parts, ()))
        .await?;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if !data.is_empty() {
                        send.send_data(data).await?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.send_trailers(trailers).await?;
                        return Ok(());
                    }
                }
            },
            Some(Err(e)) => {
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return Err(e);
            }
        }
    }
    send.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_specific_fields_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(connection_specific(&h), None);
        h.insert("te", "trailers".parse().unwrap());
        assert_eq!(connection_specific(&h), None);
        h.insert("te", "gzip".parse().unwrap());
        assert!(connection_specific(&h).is_some());
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert(http::HeaderName::from_static(name), "x".parse().unwrap());
            assert!(connection_specific(&h).is_some(), "{name}");
        }
    }
}
