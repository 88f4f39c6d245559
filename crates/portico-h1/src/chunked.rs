//! Body decoding for every framing, the chunked decoder with its validation (sizes,
//! extensions, CRLF after data, trailers with a limit), and the chunked encoder.
//!
//! The decoders work in place on the connection's buffer: each call returns how many bytes
//! it consumed and one [`Step`], whose ranges point into the bytes given. Nothing is copied
//! or allocated; the caller forwards `Data` slices as they come. Hand-written for the same
//! reason as the head parser: the gate and the proxy must agree on where a chunked body ends,
//! so there is one decoder, and it is strict (docs/security.md, "HTTP/1 rules").

use std::ops::Range;

use bytes::{BufMut, BytesMut};

use crate::error::H1Error;
use crate::framing::Framing;
use crate::head::{Limits, is_tchar};

/// What one decode call found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Body bytes at this range of the input (inside the consumed bytes).
    Data(Range<usize>),
    /// One trailer field (chunked bodies), inside the consumed bytes.
    Trailer(TrailerField),
    /// The body is complete.
    End,
    /// Nothing more can be decoded until more bytes arrive.
    NeedMore,
}

/// A trailer field line, as offsets into the input of the call that returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailerField {
    pub name: Range<usize>,
    pub value: Range<usize>,
    /// A field that may not come in trailers: one that decides framing, routing, the
    /// connection, or authentication (RFC 9110 §6.5.1; the list is the proxy's
    /// `field_rules::check_trailers`). A request carrying one is refused (400); a response's
    /// is dropped.
    pub forbidden: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data: this many bytes left.
    Data(u64),
    /// After chunk data: expecting CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// The chunked transfer coding (RFC 9112 §7.1), decoded strictly.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max_line: usize,
    max_trailers: usize,
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    pub fn new(limits: &Limits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_line: limits.max_chunk_line.max(3),
            max_trailers: limits.max_trailers.max(2),
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `buf`: returns the bytes consumed and what they were.
    /// Chunk-size lines and the CRLF after data are consumed silently; the call returns at
    /// the first data, trailer, end, or when it needs more bytes (consumed bytes are then
    /// only whole lines: a partial line stays for the next call).
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Step), H1Error> {
        let mut i = 0;
        loop {
            let rest = &buf[i..];
            match self.state {
                State::Done => return Ok((i, Step::End)),
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((i, Step::NeedMore));
                    }
                    let take = left.min(rest.len() as u64) as usize;
                    self.state = if take as u64 == left {
                        State::DataEnd
                    } else {
                        State::Data(left - take as u64)
                    };
                    return Ok((i + take, Step::Data(i..i + take)));
                }
                State::DataEnd => match rest {
                    [] | [b'\r'] => return Ok((i, Step::NeedMore)),
                    [b'\r', b'\n', ..] => {
                        i += 2;
                        self.state = State::Size;
                    }
                    [b'\n', ..] => return Err(H1Error::BareLineFeed),
                    [b'\r', ..] => return Err(H1Error::BareCarriageReturn),
                    _ => return Err(H1Error::BadChunk),
                },
                State::Size => {
                    let Some(line) = take_line(rest, self.max_line, H1Error::BadChunk)? else {
                        return Ok((i, Step::NeedMore));
                    };
                    let size = chunk_size(&rest[..line - 2]).ok_or(H1Error::BadChunk)?;
                    i += line;
                    self.state = if size == 0 {
                        State::Trailers
                    } else {
                        State::Data(size)
                    };
                }
                State::Trailers => {
                    let budget = self.max_trailers - self.trailer_bytes;
                    let Some(line) = take_line(rest, budget, H1Error::TrailersTooLarge)? else {
                        return Ok((i, Step::NeedMore));
                    };
                    self.trailer_bytes += line;
                    let content = &rest[..line - 2];
                    if content.is_empty() {
                        self.state = State::Done;
                        return Ok((i + line, Step::End));
                    }
                    let field = trailer_field(content)?;
                    let shifted = TrailerField {
                        name: field.name.start + i..field.name.end + i,
                        value: field.value.start + i..field.value.end + i,
                        forbidden: field.forbidden,
                    };
                    return Ok((i + line, Step::Trailer(shifted)));
                }
            }
        }
    }
}

/// The length of the CRLF-terminated line at the start of `buf` (CRLF included), checking
/// the line rules. `Ok(None)`: not all there yet. A line of `max` bytes or more without its
/// LF is `too_long`.
fn take_line(buf: &[u8], max: usize, too_long: H1Error) -> Result<Option<usize>, H1Error> {
    let window = &buf[..buf.len().min(max)];
    let Some(nl) = memchr::memchr(b'\n', window) else {
        if buf.len() >= max {
            return Err(too_long);
        }
        return Ok(None);
    };
    if nl == 0 || window[nl - 1] != b'\r' {
        return Err(H1Error::BareLineFeed);
    }
    if memchr::memchr(b'\r', &window[..nl - 1]).is_some() {
        return Err(H1Error::BareCarriageReturn);
    }
    Ok(Some(nl + 1))
}

/// A chunk-size line without its CRLF: 1 to 15 hex digits (no sign, `0x`, `_` or leading
/// space; 15 digits cannot overflow), optional whitespace, then well-formed extensions
/// `;name[=token|"quoted"]`, each name and value checked. `None`: invalid.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return None;
    }
    let mut n = 0u64;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16)?;
        n = (n << 4) | u64::from(d);
    }
    let mut rest = skip_ws(&line[digits..]);
    while let Some(r) = rest.strip_prefix(b";") {
        let r = skip_ws(r);
        let name = r.iter().position(|&b| !is_tchar(b)).unwrap_or(r.len());
        if name == 0 {
            return None;
        }
        rest = skip_ws(&r[name..]);
        if let Some(r) = rest.strip_prefix(b"=") {
            let r = skip_ws(r);
            let len = if r.first() == Some(&b'"') {
                quoted_len(r)?
            } else {
                r.iter().position(|&b| !is_tchar(b)).unwrap_or(r.len())
            };
            if len == 0 {
                return None;
            }
            rest = skip_ws(&r[len..]);
        }
    }
    rest.is_empty().then_some(n)
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

/// The length of a quoted-string at the start of `s` (quotes included), `None` if invalid
/// (RFC 9110 §5.6.4).
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let next = *s.get(i + 1)?;
                if !(next == b'\t' || next >= 0x20) || next == 0x7f {
                    return None;
                }
                i += 2;
            }
            b'\t' | 0x20..=0x7e | 0x80..=0xff => i += 1,
            _ => return None,
        }
    }
    None
}

/// Checks one trailer line (without CRLF): no obs-fold, `token ":" OWS value OWS`, value
/// bytes HTAB, SP, VCHAR or obs-text.
fn trailer_field(line: &[u8]) -> Result<TrailerField, H1Error> {
    if matches!(line[0], b' ' | b'\t') {
        return Err(H1Error::ObsFold);
    }
    let colon = memchr::memchr(b':', line).ok_or(H1Error::BadTrailer)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(H1Error::BadTrailer);
    }
    let raw = &line[colon + 1..];
    let lead = raw.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let value = raw[lead..].trim_ascii_end();
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        return Err(H1Error::BadTrailer);
    }
    let vstart = colon + 1 + lead;
    Ok(TrailerField {
        name: 0..colon,
        value: vstart..vstart + value.len(),
        forbidden: forbidden_trailer(name),
    })
}

/// Fields that may not come in a trailer section (as the proxy's `field_rules`).
pub(crate) fn forbidden_trailer(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 13] = [
        b"content-length",
        b"transfer-encoding",
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"upgrade",
        b"te",
        b"trailer",
        b"content-type",
        b"content-encoding",
        b"authorization",
        b"cookie",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Any body, decoded by its framing.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    /// A `Content-Length` body (or none): this many bytes left.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until end of stream (close-delimited responses, tunnels).
    Close,
}

impl BodyDecoder {
    pub fn new(framing: Framing, limits: &Limits) -> Self {
        match framing {
            Framing::None => BodyDecoder::Length(0),
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(limits)),
            Framing::CloseDelimited | Framing::Tunnel => BodyDecoder::Close,
        }
    }

    /// Decodes from the start of `buf` (see [`ChunkedDecoder::decode`]).
    pub fn decode(&mut self, buf: &[u8]) -> Result<(usize, Step), H1Error> {
        match self {
            BodyDecoder::Length(0) => Ok((0, Step::End)),
            BodyDecoder::Length(left) => {
                if buf.is_empty() {
                    return Ok((0, Step::NeedMore));
                }
                let take = (*left).min(buf.len() as u64) as usize;
                *left -= take as u64;
                Ok((take, Step::Data(0..take)))
            }
            BodyDecoder::Chunked(c) => c.decode(buf),
            BodyDecoder::Close if buf.is_empty() => Ok((0, Step::NeedMore)),
            BodyDecoder::Close => Ok((buf.len(), Step::Data(0..buf.len()))),
        }
    }

    /// The input ended: fine for a close-delimited body or a finished one, an error
    /// otherwise.
    pub fn finish(&self) -> Result<(), H1Error> {
        if self.is_done() || matches!(self, BodyDecoder::Close) {
            Ok(())
        } else {
            Err(H1Error::IncompleteBody)
        }
    }

    /// Whether the body is complete (never, for a close-delimited one).
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length(n) => *n == 0,
            BodyDecoder::Chunked(c) => c.is_done(),
            BodyDecoder::Close => false,
        }
    }
}

/// Writes a chunk header for `len` data bytes (`len` must not be 0: that is the last
/// chunk). The data and [`CRLF`] follow.
pub fn encode_chunk_header(len: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(CRLF);
}

/// What ends chunk data and lines.
pub const CRLF: &[u8] = b"\r\n";

/// Writes the last chunk and the trailer section (each `(name, value)` one line).
pub fn encode_last_chunk(trailers: &[(&[u8], &[u8])], out: &mut BytesMut) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(CRLF);
    }
    out.put_slice(CRLF);
}

/// `Content-Length` in its canonical form (plain decimal, docs/security.md).
pub(crate) fn write_decimal(n: u64, out: &mut BytesMut) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}
