//! Async helpers over any `AsyncRead`/`AsyncWrite` (tokio): read a head into the
//! connection's buffer, stream a body by its framing, relay a tunnel. They run inside the
//! connection's own task (no task is spawned per request) and keep no state of their own:
//! the buffer and the parser belong to the connection, so pipelined bytes after a message
//! stay in the buffer for the next one.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::chunked::{BodyDecoder, CRLF, Step, encode_chunk_header};
use crate::error::H1Error;
use crate::framing::RequestContext;
use crate::request::{RequestHead, RequestParser};
use crate::response::{ResponseHead, ResponseParser};
use crate::write::BodyOut;

/// How much room a read asks for at least: heads grow the buffer in steps this size (up to
/// the head limit), bodies are read in these steps.
pub const READ_CHUNK: usize = 8 * 1024;

/// Why a connection helper stopped.
#[derive(Debug)]
pub enum ConnError {
    /// The socket failed.
    Io(io::Error),
    /// The peer sent something the codec refuses.
    Parse(H1Error),
    /// The peer closed the connection inside a head.
    Eof,
    /// The upstream closed the connection before sending a byte of its answer (on a reused
    /// connection: it timed out the idle connection as the request went out; the request
    /// may be retried if it is idempotent, RFC 9110 §9.2.2).
    Closed,
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<H1Error> for ConnError {
    fn from(e: H1Error) -> Self {
        ConnError::Parse(e)
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o: {e}"),
            ConnError::Parse(e) => write!(f, "{e}"),
            ConnError::Eof => f.write_str("connection closed inside a head"),
            ConnError::Closed => f.write_str("connection closed before the answer"),
        }
    }
}

impl std::error::Error for ConnError {}

/// Reads more bytes into `buf`, growing it by [`READ_CHUNK`] when it is nearly full.
/// Returns how many bytes came (0: end of stream).
async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    io.read_buf(buf).await
}

/// Reads until a whole request head is in `buf` and parses it. `Ok(None)`: the client
/// closed the connection between requests (no byte of a new head had come).
pub async fn read_request_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    parser: &mut RequestParser,
) -> Result<Option<RequestHead>, ConnError> {
    loop {
        if let Some(head) = parser.parse(buf)? {
            return Ok(Some(head));
        }
        if fill(io, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ConnError::Eof)
            };
        }
    }
}

/// Reads until a whole response head is in `buf` and parses it (an interim 1xx comes back
/// as it is: the caller forwards or skips it and calls again).
pub async fn read_response_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    parser: &mut ResponseParser,
    req: RequestContext,
) -> Result<ResponseHead, ConnError> {
    loop {
        if let Some(head) = parser.parse(buf, req)? {
            return Ok(head);
        }
        if fill(io, buf).await? == 0 {
            return Err(if buf.is_empty() {
                ConnError::Closed
            } else {
                ConnError::Eof
            });
        }
    }
}

/// What to do with trailer fields that may not come in trailers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenTrailers {
    /// Refuse the body (`H1Error::BadTrailer`): requests from clients.
    Reject,
    /// Drop the field and go on: responses from upstreams.
    Drop,
}

/// How [`copy_body`] forwards a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOptions {
    /// How the forwarded body is framed (`Chunked` re-encodes; anything else writes the
    /// data bytes as they are).
    pub out: BodyOut,
    /// What to do with trailer fields that may not come in trailers.
    pub trailers: ForbiddenTrailers,
    /// The most body bytes allowed (the route's limit); more is `H1Error::BodyTooLarge`
    /// (413), found before the bytes over the limit are written.
    pub max_len: u64,
}

impl CopyOptions {
    pub fn new(out: BodyOut, trailers: ForbiddenTrailers) -> Self {
        CopyOptions {
            out,
            trailers,
            max_len: u64::MAX,
        }
    }
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.max_len = max_len;
        self
    }
}

/// Streams one body from `src` to `dst`: decodes it by `decoder` from `buf` (which may
/// already hold body bytes after the head) and re-frames it as `opts.out` says (`Chunked`
/// re-encodes chunks and forwards the allowed trailers; anything else writes the data
/// bytes as they are). Bytes after the body stay in `buf`. Returns the body's length.
/// A `Content-Length` body over `opts.max_len` is refused before any of it is written.
///
/// `Content-Length` and close-delimited bodies are written straight from the read buffer;
/// chunked output is gathered into one write buffer per read (chunk header, data, CRLF).
pub async fn copy_body<R, W>(
    src: &mut R,
    buf: &mut BytesMut,
    mut decoder: BodyDecoder,
    dst: &mut W,
    opts: CopyOptions,
) -> Result<u64, ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let BodyDecoder::Length(n) = decoder
        && n > opts.max_len
    {
        return Err(ConnError::Parse(H1Error::BodyTooLarge));
    }
    let chunked = opts.out == BodyOut::Chunked;
    let mut pending = BytesMut::new();
    let mut trailers = BytesMut::new();
    let mut total = 0u64;
    loop {
        let (used, step) = decoder.decode(buf)?;
        match step {
            Step::Data(r) => {
                let data = &buf[r];
                total += data.len() as u64;
                if total > opts.max_len {
                    return Err(ConnError::Parse(H1Error::BodyTooLarge));
                }
                if chunked {
                    encode_chunk_header(data.len() as u64, &mut pending);
                    pending.put_slice(data);
                    pending.put_slice(CRLF);
                } else {
                    dst.write_all(data).await?;
                }
                buf.advance(used);
            }
            Step::Trailer(t) => {
                if t.forbidden {
                    if opts.trailers == ForbiddenTrailers::Reject {
                        return Err(ConnError::Parse(H1Error::BadTrailer));
                    }
                } else if chunked {
                    trailers.put_slice(&buf[t.name.start..t.value.end.max(t.name.end + 1)]);
                    trailers.put_slice(CRLF);
                }
                buf.advance(used);
            }
            Step::End => {
                buf.advance(used);
                if chunked {
                    pending.put_slice(b"0\r\n");
                    pending.put_slice(&trailers);
                    pending.put_slice(CRLF);
                }
                dst.write_all(&pending).await?;
                dst.flush().await?;
                return Ok(total);
            }
            Step::NeedMore => {
                buf.advance(used);
                if !pending.is_empty() {
                    dst.write_all(&pending).await?;
                    pending.clear();
                }
                if fill(src, buf).await? == 0 {
                    decoder.finish()?;
                    // A close-delimited body ended.
                    if chunked {
                        dst.write_all(b"0\r\n\r\n").await?;
                    }
                    dst.flush().await?;
                    return Ok(total);
                }
            }
        }
    }
}

/// Relays a tunnel (after a `101`, or a `2xx` to `CONNECT`): first what each side's buffer
/// already holds past the head, then bytes both ways until both sides are done.
pub async fn tunnel<A, B>(
    client: &mut A,
    client_buf: &mut BytesMut,
    upstream: &mut B,
    upstream_buf: &mut BytesMut,
) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    upstream.write_all(client_buf).await?;
    client.write_all(upstream_buf).await?;
    let early = (client_buf.len() as u64, upstream_buf.len() as u64);
    client_buf.clear();
    upstream_buf.clear();
    let (a, b) = tokio::io::copy_bidirectional(client, upstream).await?;
    Ok((early.0 + a, early.1 + b))
}

/// Gives back a connection buffer's memory while the connection is idle: an empty buffer
/// holding more than `keep` bytes of capacity (a large head or body went through) is
/// replaced by an empty one; the next read allocates [`READ_CHUNK`] again.
pub fn shrink_idle(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::new();
    }
}
