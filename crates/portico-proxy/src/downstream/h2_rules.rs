//! The HTTP/2 field rules Portico adds on top of the `h2` crate (RFC 9113 §8.2, §8.3), and the
//! record of every HTTP/2 request the protocol layer refuses on its own.
//!
//! Division of work, each rule tested in `tests/h2_rules.rs`:
//! - `h2` (0.4) refuses, before Portico sees a request: uppercase or otherwise invalid field
//!   names, NUL/CR/LF (and other control bytes) in values, unknown pseudo-headers (connection
//!   errors, GOAWAY); connection-specific fields (`connection`, `keep-alive`,
//!   `proxy-connection`, `transfer-encoding`, `upgrade`), `te` other than `trailers`, a
//!   pseudo-header after a regular field or repeated, a missing `:method` or `:scheme`, an
//!   empty `:path`, `:status` in a request, a body longer or shorter than its `content-length`
//!   (stream errors, RST_STREAM PROTOCOL_ERROR). In trailers it refuses the same fields and
//!   drops pseudo-headers.
//! - [`check`] refuses the rest with 400 (flag DPE) before routing, so nothing reaches an
//!   upstream: a value with leading or trailing SP/HTAB (§8.2.1; an HTTP/1 origin would trim
//!   it and see a value the route rules never matched), userinfo in `:authority` (§8.3.1),
//!   and a `host` that differs from `:authority` (§8.3.1). It also checks again, as defence in
//!   depth, rules `h2` enforces today: no NUL/CR/LF in values, a `:path` present on a
//!   non-CONNECT request and either origin-form or `*` for OPTIONS (§8.3.1).
//! - [`ResetWatch`] sees what `h2` writes on the connection: each RST_STREAM or GOAWAY it sends
//!   for a client's protocol error gets an access log line (flag DPE) and counts in
//!   `portico_downstream_rejected_total`, as Portico's own rejections do.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Version, header};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::request::ConnInfo;
use crate::state::Proxy;

/// Checks an HTTP/2 (or HTTP/3) request against the field rules `h2` leaves to Portico.
/// `Err` names the broken rule (the 400's body and the log's `error`).
pub fn check<B>(req: &Request<B>) -> Result<(), &'static str> {
    if req.version() != Version::HTTP_2 && req.version() != Version::HTTP_3 {
        return Ok(());
    }
    for value in req.headers().values() {
        if !crate::downstream::field_rules::value_ok(value.as_bytes()) {
            return Err("header value with leading or trailing whitespace or NUL/CR/LF");
        }
    }
    let uri = req.uri();
    if req.method() != Method::CONNECT {
        match uri.path_and_query().map(|pq| pq.as_str()) {
            None => return Err("missing :path"),
            Some("*") if req.method() == Method::OPTIONS => {}
            Some(p) if p.starts_with('/') => {}
            Some(_) => return Err(":path is not origin-form"),
        }
    }
    if let Some(auth) = uri.authority() {
        if auth.as_str().contains('@') {
            return Err("userinfo in :authority");
        }
        if let Some(host) = req.headers().get(header::HOST)
            && !host
                .as_bytes()
                .eq_ignore_ascii_case(auth.as_str().as_bytes())
        {
            return Err("host differs from :authority");
        }
    }
    Ok(())
}

/// HTTP/2 error codes (RFC 9113 §7) that mean the client broke the protocol.
fn client_fault(code: u32) -> Option<&'static str> {
    match code {
        0x1 => Some("PROTOCOL_ERROR"),
        0x3 => Some("FLOW_CONTROL_ERROR"),
        0x6 => Some("FRAME_SIZE_ERROR"),
        0x9 => Some("COMPRESSION_ERROR"),
        0xb => Some("ENHANCE_YOUR_CALM"),
        _ => None,
    }
}

const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;

/// Follows the frames Portico writes on an HTTP/2 connection (headers are parsed, payloads
/// skipped by counting) and records each RST_STREAM or GOAWAY sent for a client's protocol
/// error. On an HTTP/1 connection it steps aside at the first byte written.
pub struct ResetWatch<S> {
    inner: S,
    frames: Frames,
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
}

/// An incremental HTTP/2 frame splitter that reports the error code of every RST_STREAM and
/// GOAWAY frame.
struct Frames {
    state: Watch,
    head: [u8; 9],
}

enum Watch {
    /// Nothing written yet.
    Start,
    /// HTTP/1 (or anything that is not HTTP/2 frames): not watched.
    Off,
    /// `n` bytes of a frame header read.
    Head(usize),
    /// Inside a frame payload: `left` bytes to skip; `code` collects the error code of an
    /// RST_STREAM or GOAWAY (`pos`: payload bytes seen).
    Payload {
        left: usize,
        ty: u8,
        pos: usize,
        code: u32,
    },
}

impl Frames {
    fn new() -> Frames {
        Frames {
            state: Watch::Start,
            head: [0; 9],
        }
    }

    fn off(&self) -> bool {
        matches!(self.state, Watch::Off)
    }

    /// Feeds written bytes; `reset(type, code)` is called for each complete RST_STREAM or
    /// GOAWAY frame.
    fn feed(&mut self, mut data: &[u8], reset: &mut impl FnMut(u8, u32)) {
        while !data.is_empty() {
            match &mut self.state {
                Watch::Off => return,
                Watch::Start => {
                    // An HTTP/2 server's first frame is SETTINGS; its length's first byte is 0
                    // (an HTTP/1 answer starts with `H`).
                    self.state = if data[0] == 0 {
                        Watch::Head(0)
                    } else {
                        Watch::Off
                    };
                }
                Watch::Head(n) => {
                    let take = (9 - *n).min(data.len());
                    self.head[*n..*n + take].copy_from_slice(&data[..take]);
                    *n += take;
                    data = &data[take..];
                    if *n == 9 {
                        let h = &self.head;
                        self.state = Watch::Payload {
                            left: u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize,
                            ty: h[3],
                            pos: 0,
                            code: 0,
                        };
                        self.frame_end(reset);
                    }
                }
                Watch::Payload {
                    left,
                    ty,
                    pos,
                    code,
                } => {
                    let take = (*left).min(data.len());
                    if *ty == RST_STREAM || *ty == GOAWAY {
                        // The error code: RST_STREAM's payload, GOAWAY's bytes 4..8.
                        let start = if *ty == GOAWAY { 4 } else { 0 };
                        for (k, b) in data[..take].iter().enumerate() {
                            if (start..start + 4).contains(&(*pos + k)) {
                                *code = (*code << 8) | u32::from(*b);
                            }
                        }
                    }
                    *pos += take;
                    *left -= take;
                    data = &data[take..];
                    self.frame_end(reset);
                }
            }
        }
    }

    /// At the end of a frame's payload: report it, expect the next header.
    fn frame_end(&mut self, reset: &mut impl FnMut(u8, u32)) {
        if let Watch::Payload {
            left: 0, ty, code, ..
        } = self.state
        {
            self.state = Watch::Head(0);
            if ty == RST_STREAM || ty == GOAWAY {
                reset(ty, code);
            }
        }
    }
}

impl<S> ResetWatch<S> {
    pub fn new(inner: S, proxy: Arc<Proxy>, conn: Arc<ConnInfo>) -> Self {
        ResetWatch {
            inner,
            frames: Frames::new(),
            proxy,
            conn,
        }
    }

    fn observe(&mut self, data: &[u8]) {
        let (proxy, conn) = (&self.proxy, &self.conn);
        self.frames.feed(data, &mut |ty, code| {
            let Some(name) = client_fault(code) else {
                return;
            };
            let what = if ty == RST_STREAM {
                "HTTP/2 stream reset"
            } else {
                "HTTP/2 connection closed (GOAWAY)"
            };
            let detail = format!("{what}: {name} (malformed request or frames)");
            tracing::info!(client = %conn.peer, reason = %detail, "invalid request rejected");
            crate::request::log_rejected(proxy, conn, 400, &detail, "HTTP/2");
        });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ResetWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ResetWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, data))?;
        if !this.frames.off() {
            this.observe(&data[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if !this.frames.off() {
            let mut left = n;
            for b in bufs {
                if left == 0 {
                    break;
                }
                let take = left.min(b.len());
                this.observe(&b[..take]);
                left -= take;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn values_with_surrounding_whitespace_are_refused() {
        for v in ["\tadmin", "admin\t", " admin", "admin "] {
            let r = req(Version::HTTP_2, "http://a/p", &[("x-role", v)]);
            assert!(check(&r).is_err(), "{v:?}");
        }
        let r = req(
            Version::HTTP_2,
            "http://a/p",
            &[("x-role", "ad min"), ("x-e", "")],
        );
        assert_eq!(check(&r), Ok(()));
        // HTTP/1 is the HTTP/1 gate's business (RFC 9112 trims such whitespace).
        let r = req(Version::HTTP_11, "/p", &[("x-role", "\tadmin")]);
        assert_eq!(check(&r), Ok(()));
    }

    #[test]
    fn path_and_authority_rules() {
        assert!(check(&req(Version::HTTP_2, "http://u@a/p", &[])).is_err());
        assert!(check(&req(Version::HTTP_2, "http://a/p", &[("host", "b")])).is_err());
        assert_eq!(
            check(&req(Version::HTTP_2, "http://a/p", &[("host", "A")])),
            Ok(())
        );
        let mut opt = req(Version::HTTP_2, "*", &[]);
        assert_eq!(check(&opt), Err(":path is not origin-form"));
        *opt.method_mut() = Method::OPTIONS;
        assert_eq!(check(&opt), Ok(()));
    }

    #[test]
    fn frames_are_followed_across_writes() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]); // SETTINGS
        bytes.extend_from_slice(&[0, 0, 3, 0, 1, 0, 0, 0, 1, b'a', 3, 0]); // DATA with 0x03
        bytes.extend_from_slice(&[0, 0, 4, 3, 0, 0, 0, 0, 1, 0, 0, 0, 1]); // RST PROTOCOL_ERROR
        bytes.extend_from_slice(&[0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 9]); // GOAWAY
        for split in [1, 2, 5, 9, 1000] {
            let mut f = Frames::new();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(split) {
                f.feed(chunk, &mut |t, c| seen.push((t, c)));
            }
            assert_eq!(seen, vec![(RST_STREAM, 1), (GOAWAY, 9)], "split {split}");
        }
        let mut f = Frames::new();
        f.feed(b"HTTP/1.1 400 Bad Request\r\n", &mut |_, _| {
            panic!("not HTTP/2")
        });
        assert!(f.off());
    }
}
