//! Writing a response on Portico's own HTTP/1 server: the head from the response's
//! `HeaderMap` in one buffer, the body framed by what the head says (`Content-Length`,
//! chunked with the trailers the `Trailer` field announces, close-delimited for HTTP/1.0 peers
//! and unknown lengths), coalesced into as few writes as the body's readiness allows.
//!
//! The framing rules are those clients saw from hyper's server before (so behaviour is
//! unchanged): no body and no framing field for HEAD, 1xx, 204 and 304 (a `Content-Length`
//! is kept on HEAD and 304), `content-length: 0` for an empty body, `connection: close` when
//! the connection will close, `connection: keep-alive` for an HTTP/1.0 client that asked to
//! keep it, a `date` field when the response has none.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, Response, StatusCode};
use http_body::Body;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::body::RespBody;

/// Frames larger than this are written straight from their buffer instead of being copied
/// into the write buffer.
const COALESCE: usize = 16 * 1024;

/// What a response's framing depends on in the request.
#[derive(Debug, Clone, Copy)]
pub struct ReqMeta {
    pub head: bool,
    pub connect: bool,
    /// The client spoke HTTP/1.0.
    pub http10: bool,
    /// The connection may carry another request after this response (client and server
    /// agree, nothing forces a close).
    pub keep_alive: bool,
}

/// How the response went.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Sent completely; the connection may carry another request.
    KeepAlive,
    /// Sent completely; the connection must close now.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    /// At most this many bytes (0: no body is written at all).
    Length(u64),
    Chunked,
    Close,
}

/// Writes `resp` to `w` (via `wbuf`, empty on entry and on return).
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: Response<RespBody>,
    meta: ReqMeta,
    wbuf: &mut BytesMut,
) -> std::io::Result<Written> {
    let (parts, body) = resp.into_parts();
    let status = parts.status;
    let (enc, keep_alive, trailers) = write_head(status, &parts.headers, &body, meta, wbuf);
    let mut body = std::pin::pin!(body);
    let keep_alive = keep_alive && enc != Enc::Close;
    if !can_have_body(meta, status) {
        // HEAD, 1xx, 204, 304: nothing after the head; an upstream body is read to its end
        // so the request is logged complete.
        flush(w, wbuf).await?;
        while let Some(f) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            if f.is_err() {
                return Ok(Written::Close);
            }
        }
        return Ok(if keep_alive {
            Written::KeepAlive
        } else {
            Written::Close
        });
    }
    loop {
        // The first poll usually finds the frame ready (the upstream's bytes are in hand):
        // it joins the head in one write. When the body must wait, what is buffered goes
        // out first.
        let next =
            std::future::poll_fn(|cx| std::task::Poll::Ready(body.as_mut().poll_frame(cx))).await;
        let frame = match next {
            std::task::Poll::Ready(f) => f,
            std::task::Poll::Pending => {
                flush(w, wbuf).await?;
                std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                // The upstream failed mid-body: the client must see the response cut (no
                // last chunk), so the connection closes without one.
                flush(w, wbuf).await?;
                tracing::debug!(error = %e, "response body failed; connection closed");
                return Ok(Written::Close);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => put_data(w, wbuf, enc, data).await?,
                Err(frame) => {
                    if let (Enc::Chunked, Ok(t)) = (enc, frame.into_trailers()) {
                        finish_chunked(wbuf, Some((&t, &trailers)));
                        flush(w, wbuf).await?;
                        return Ok(if keep_alive {
                            Written::KeepAlive
                        } else {
                            Written::Close
                        });
                    }
                }
            },
        }
    }
    if enc == Enc::Chunked {
        finish_chunked(wbuf, None);
    }
    flush(w, wbuf).await?;
    Ok(if keep_alive {
        Written::KeepAlive
    } else {
        Written::Close
    })
}

async fn flush<W: AsyncWrite + Unpin>(w: &mut W, wbuf: &mut BytesMut) -> std::io::Result<()> {
    if !wbuf.is_empty() {
        w.write_all(wbuf).await?;
        wbuf.clear();
    }
    Ok(())
}

async fn put_data<W: AsyncWrite + Unpin>(
    w: &mut W,
    wbuf: &mut BytesMut,
    enc: Enc,
    data: Bytes,
) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    if enc == Enc::Chunked {
        portico_h1::encode_chunk_header(data.len() as u64, wbuf);
    }
    if data.len() <= COALESCE {
        wbuf.put_slice(&data);
    } else {
        flush(w, wbuf).await?;
        w.write_all(&data).await?;
    }
    if enc == Enc::Chunked {
        wbuf.put_slice(portico_h1::CRLF);
    }
    if wbuf.len() > COALESCE {
        flush(w, wbuf).await?;
    }
    Ok(())
}

/// The last chunk, with the trailer fields the head announced (`Trailer`), as hyper sent them.
fn finish_chunked(wbuf: &mut BytesMut, trailers: Option<(&HeaderMap, &[HeaderName])>) {
    wbuf.put_slice(b"0\r\n");
    if let Some((t, allowed)) = trailers {
        for (name, value) in t {
            if allowed.contains(name) {
                wbuf.put_slice(name.as_str().as_bytes());
                wbuf.put_slice(b": ");
                wbuf.put_slice(value.as_bytes());
                wbuf.put_slice(b"\r\n");
            }
        }
    }
    wbuf.put_slice(b"\r\n");
}

fn can_have_body(meta: ReqMeta, status: StatusCode) -> bool {
    !(meta.head
        || meta.connect && status.is_success()
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(meta: ReqMeta, status: StatusCode) -> bool {
    !(status.is_informational()
        || meta.connect && status.is_success()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Writes the status line and fields; returns the body's encoding, whether the connection
/// may be kept, and the trailer names the head announced.
fn write_head(
    status: StatusCode,
    headers: &HeaderMap,
    body: &RespBody,
    meta: ReqMeta,
    out: &mut BytesMut,
) -> (Enc, bool, Vec<HeaderName>) {
    let mut keep_alive = meta.keep_alive;
    out.reserve(64 + headers.len() * 48);
    let version: &[u8] = if meta.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    if !meta.http10 && status == StatusCode::OK {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(version);
        out.put_slice(status.as_str().as_bytes());
        out.put_slice(b" ");
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    }
    let chunkable = !meta.http10 && can_have_body(meta, status);
    let cl_allowed = can_have_content_length(meta, status);
    let mut enc: Option<Enc> = None;
    let mut wrote_date = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut wrote_connection = false;
    let mut trailers = Vec::new();
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH {
            if !cl_allowed || enc.is_some() {
                continue;
            }
            let Some(n) = std::str::from_utf8(value.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
            else {
                continue;
            };
            enc = Some(Enc::Length(n));
        } else if name == header::TRANSFER_ENCODING {
            if !chunkable || enc.is_some() {
                continue;
            }
            enc = Some(Enc::Chunked);
            let v = value.as_bytes();
            out.put_slice(b"transfer-encoding: ");
            out.put_slice(v);
            if !v.trim_ascii_end().ends_with(b"chunked") {
                out.put_slice(b", chunked");
            }
            out.put_slice(b"\r\n");
            continue;
        } else if name == header::CONNECTION {
            wrote_connection = true;
            for t in value.as_bytes().split(|&b| b == b',') {
                let t = t.trim_ascii();
                conn_close |= t.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == header::DATE {
            wrote_date = true;
        } else if name == header::TRAILER {
            if !chunkable {
                continue;
            }
            if let Ok(s) = value.to_str() {
                trailers.extend(
                    s.split(',')
                        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
                );
            }
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if conn_close {
        keep_alive = false;
    }
    let enc = match enc {
        Some(e) => e,
        None => match body.size_hint().exact() {
            Some(0) => {
                if cl_allowed && !meta.head {
                    out.put_slice(b"content-length: 0\r\n");
                }
                Enc::Length(0)
            }
            Some(n) if cl_allowed => {
                out.put_slice(b"content-length: ");
                out.put_slice(itoa::Buffer::new().format(n).as_bytes());
                out.put_slice(b"\r\n");
                Enc::Length(n)
            }
            Some(_) => Enc::Length(0),
            None if chunkable => {
                out.put_slice(b"transfer-encoding: chunked\r\n");
                Enc::Chunked
            }
            None if can_have_body(meta, status) => {
                keep_alive = false;
                Enc::Close
            }
            None => Enc::Length(0),
        },
    };
    if meta.http10 {
        // HTTP/1.0 closes unless both sides said keep-alive.
        if keep_alive && !conn_keep_alive {
            if wrote_connection {
                keep_alive = false;
            } else {
                out.put_slice(b"connection: keep-alive\r\n");
            }
        }
    } else if !keep_alive && !conn_close {
        out.put_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.put_slice(b"date: ");
        put_date(out);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    (enc, keep_alive, trailers)
}

thread_local! {
    /// The `date` value, formatted once per second per worker.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// Appends the current `date` value (IMF-fixdate, RFC 9110 §5.6.7).
pub fn put_date(out: &mut BytesMut) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1[0] == 0 {
            let s = httpdate::fmt_http_date(now);
            if s.len() == 29 {
                d.1.copy_from_slice(s.as_bytes());
                d.0 = secs;
            }
        }
        out.put_slice(&d.1);
    });
}

/// A local answer written by the connection itself (a refused head): status line,
/// `content-length: 0`, `connection: close`, `date`.
pub fn error_head(status: u16, out: &mut BytesMut) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(code.as_str().as_bytes());
    out.put_slice(b" ");
    out.put_slice(code.canonical_reason().unwrap_or("<none>").as_bytes());
    out.put_slice(b"\r\nconnection: close\r\ncontent-length: 0\r\ndate: ");
    put_date(out);
    out.put_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ReqMeta {
        ReqMeta {
            head: false,
            connect: false,
            http10: false,
            keep_alive: true,
        }
    }

    fn head_of(resp: Response<RespBody>, m: ReqMeta) -> (String, Enc, bool) {
        let mut out = BytesMut::new();
        let (enc, ka, _) = write_head(resp.status(), resp.headers(), resp.body(), m, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), enc, ka)
    }

    #[test]
    fn full_body_gets_its_length_and_a_date() {
        let r = Response::new(RespBody::full("hello"));
        let (h, enc, ka) = head_of(r, meta());
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("content-length: 5\r\n"), "{h}");
        assert!(h.contains("date: "), "{h}");
        assert!(h.ends_with("\r\n\r\n"));
        assert_eq!((enc, ka), (Enc::Length(5), true));
    }

    #[test]
    fn head_and_204_have_no_body_framing() {
        let mut m = meta();
        m.head = true;
        let (h, enc, _) = head_of(Response::new(RespBody::empty()), m);
        assert!(!h.contains("content-length"), "{h}");
        assert_eq!(enc, Enc::Length(0));
        let mut r = Response::new(RespBody::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
        let (h, _, _) = head_of(r, meta());
        assert!(h.starts_with("HTTP/1.1 204 No Content\r\n"), "{h}");
        assert!(!h.contains("content-length"), "{h}");
    }

    #[test]
    fn close_and_http10_keep_alive() {
        let mut m = meta();
        m.keep_alive = false;
        let (h, _, ka) = head_of(Response::new(RespBody::empty()), m);
        assert!(h.contains("connection: close\r\n"), "{h}");
        assert!(!ka);
        let mut m = meta();
        m.http10 = true;
        let (h, _, ka) = head_of(Response::new(RespBody::empty()), m);
        assert!(h.starts_with("HTTP/1.0 200 OK\r\n"), "{h}");
        assert!(h.contains("connection: keep-alive\r\n"), "{h}");
        assert!(ka);
    }

    #[test]
    fn refusal_head() {
        let mut out = BytesMut::new();
        error_head(431, &mut out);
        let s = String::from_utf8_lossy(&out);
        assert!(
            s.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n"),
            "{s}"
        );
    }
}
