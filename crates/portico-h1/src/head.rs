//! What requests and responses share: the limits, the incremental line scanner that finds the
//! end of a head and enforces the line rules (bare CR/LF, obs-fold, the size limit), and the
//! parsed header section kept as offsets into the connection's buffer.
//!
//! Hand-written because it is the per-request hot path (hyper's HTTP/1 machinery was ~36k of
//! 42.5k instructions per request) and because one parser must decide framing for both the
//! security gate and the proxy: two parsers that disagree on where a message ends are exactly
//! what request smuggling exploits. `httparse` tokenizes each head once, after the scanner has
//! found its end; names and values are never copied, only their offsets are kept, and lookups
//! compare bytes case-insensitively without allocating or hashing.

use bytes::Bytes;

use crate::error::H1Error;

/// Size limits for one connection (docs/reference.md §5; `portico-config` defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest head, request or status line included, leading empty lines included
    /// (default 60 KiB, `max_request_headers_kb`). Over it: 431.
    pub max_head: usize,
    /// Most header fields (default 100, `max_headers_count`). Over it: 431.
    pub max_headers: usize,
    /// Longest request target (default 8 KiB, `MAX_URI_BYTES`). Over it: 414.
    pub max_target: usize,
    /// Longest chunk-size line, extensions included (default 4 KiB, as the old gate).
    pub max_chunk_line: usize,
    /// Largest trailer section (default 16 KiB).
    pub max_trailers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 60 * 1024,
            max_headers: 100,
            max_target: 8 * 1024,
            max_chunk_line: 4096,
            max_trailers: 16 * 1024,
        }
    }
}

/// The largest number of header fields the parser can hold; `Limits::max_headers` above it
/// is capped (the field array lives on the stack while `httparse` runs).
pub const MAX_HEADERS_CAP: usize = 512;

/// A byte range in a head's buffer (heads are far below 4 GiB: offsets fit `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    /// The bytes of this span in `buf`; empty if it does not fit (never for the buffer it
    /// was made for).
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One header field: where its name and value are in the head. The value has no
/// surrounding whitespace; `line_end` is where the copied line stops (the value's end, or
/// just past the colon for an empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub name: Span,
    pub value: Span,
}

impl Field {
    /// The line as received, without its line ending (`name: value`, spacing kept).
    pub(crate) fn line(&self) -> Span {
        Span {
            start: self.name.start,
            end: self.value.end.max(self.name.end + 1),
        }
    }
}

/// A head's bytes and its fields: the owned part of a parsed request or response.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub(crate) bytes: Bytes,
    pub(crate) fields: Vec<Field>,
}

impl Fields {
    /// The raw head, start line to blank line.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
    /// The first value of `name` (ASCII case-insensitive; `name` is expected lowercase or
    /// not, either works).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(&self.bytes).eq_ignore_ascii_case(name))
            .map(|f| f.value.of(&self.bytes))
    }
    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |f| f.name.of(&self.bytes).eq_ignore_ascii_case(name))
            .map(move |f| f.value.of(&self.bytes))
    }
    /// Every field as `(name, value)`, in order, names as received.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(move |f| (f.name.of(&self.bytes), f.value.of(&self.bytes)))
    }
    /// The offsets of every field.
    pub fn raw(&self) -> &[Field] {
        &self.fields
    }
    /// Whether any comma-separated token of any `name` field equals `token`.
    pub fn has_token(&self, name: &[u8], token: &[u8]) -> bool {
        self.get_all(name)
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token)))
    }
}

/// The comma-separated elements of a list value, trimmed, empty ones skipped (RFC 9110 §5.6.1).
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// RFC 9110 §5.6.2 tchar.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the incremental head scan stands, kept between reads so that a head arriving one
/// byte at a time is still scanned once (no quadratic rescans: a slow client must not make
/// the server work per byte received times bytes held).
#[derive(Debug, Clone, Default)]
pub(crate) struct Scanner {
    /// Next byte to look at for CR/LF.
    pos: usize,
    /// Start of the line being scanned.
    line_start: usize,
    /// A non-empty line was seen (empty lines before the start line are skipped).
    started: bool,
    /// Request only: how far the method check got, and whether it is done.
    method_pos: usize,
    method_started: bool,
    method_done: bool,
}

/// How strict the line rules are: requests are held to the edge's rules, responses from
/// upstreams may end lines with a bare LF (RFC 9112 §2.2 allows a recipient to accept it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Request,
    Response,
}

impl Scanner {
    pub(crate) fn reset(&mut self) {
        *self = Scanner::default();
    }

    /// Scans `buf` (the connection's buffer, which only grows between calls) for the end of a
    /// head. `Ok(Some(n))`: the head is `buf[..n]`; `Ok(None)`: more bytes are needed. The
    /// rules are checked in byte order, each only once the bytes that decide it are present,
    /// so the verdict does not depend on how the input was split into reads.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        max_head: usize,
        mode: Mode,
    ) -> Result<Option<usize>, H1Error> {
        // Offsets are kept as `u32`: a limit above 4 GiB is capped.
        let max_head = max_head.min(u32::MAX as usize);
        let end = buf.len().min(max_head);
        let window = &buf[..end];
        if mode == Mode::Request && !self.method_done {
            self.check_method(window)?;
        }
        while self.pos < end {
            let Some(i) = memchr::memchr2(b'\r', b'\n', &window[self.pos..]) else {
                self.pos = end;
                break;
            };
            let at = self.pos + i;
            let (content_end, next) = if window[at] == b'\n' {
                if mode == Mode::Request {
                    return Err(H1Error::BareLineFeed);
                }
                (at, at + 1)
            } else {
                match window.get(at + 1) {
                    // The LF may still come (or, at the limit, the head is too large).
                    None => {
                        self.pos = at;
                        break;
                    }
                    Some(b'\n') => (at, at + 2),
                    Some(_) => return Err(H1Error::BareCarriageReturn),
                }
            };
            let line = &window[self.line_start..content_end];
            self.pos = next;
            self.line_start = next;
            if line.is_empty() {
                if self.started {
                    return Ok(Some(next));
                }
                continue;
            }
            if self.started && matches!(line[0], b' ' | b'\t') {
                return Err(H1Error::ObsFold);
            }
            self.started = true;
        }
        if buf.len() >= max_head {
            return Err(H1Error::HeadTooLarge);
        }
        Ok(None)
    }

    /// The request line must start with a method token: garbage (a TLS hello on the plain
    /// port, binary) is refused as soon as its first bad byte arrives, not held until the
    /// head limit or the timeout. Empty lines before it are skipped as the scanner does.
    fn check_method(&mut self, window: &[u8]) -> Result<(), H1Error> {
        let mut i = self.method_pos;
        while i < window.len() {
            let b = window[i];
            if !self.method_started && b == b'\r' {
                match window.get(i + 1) {
                    None => break,
                    Some(b'\n') => {
                        i += 2;
                        continue;
                    }
                    Some(_) => return Err(H1Error::BadRequestLine),
                }
            }
            self.method_started = true;
            if b == b' ' {
                self.method_done = true;
                return Ok(());
            }
            if !is_tchar(b) {
                return Err(H1Error::BadRequestLine);
            }
            i += 1;
        }
        self.method_pos = i;
        Ok(())
    }
}

/// Maps an `httparse` error on a complete head to the codec's reason.
pub(crate) fn map_httparse(e: httparse::Error, request: bool) -> H1Error {
    match e {
        httparse::Error::HeaderName | httparse::Error::HeaderValue => H1Error::BadHeader,
        httparse::Error::TooManyHeaders => H1Error::TooManyHeaders,
        httparse::Error::Version => H1Error::BadVersion,
        httparse::Error::Status => H1Error::BadStatusLine,
        httparse::Error::NewLine | httparse::Error::Token if request => H1Error::BadRequestLine,
        httparse::Error::NewLine | httparse::Error::Token => H1Error::BadStatusLine,
    }
}

/// The offset of `part` (a slice `httparse` returned) inside `buf`; `None` if it is not
/// inside (an empty slice `httparse` made up).
pub(crate) fn offset_in(buf: &[u8], part: &[u8]) -> Option<usize> {
    let base = buf.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    let off = p.checked_sub(base)?;
    (off + part.len() <= buf.len()).then_some(off)
}

/// Converts `httparse`'s fields into offsets, checking each lies in the head.
pub(crate) fn collect_fields(
    buf: &[u8],
    headers: &[httparse::Header<'_>],
) -> Result<Vec<Field>, H1Error> {
    let mut out = Vec::with_capacity(headers.len());
    for h in headers {
        let name = offset_in(buf, h.name.as_bytes()).ok_or(H1Error::BadHeader)?;
        let name_end = name + h.name.len();
        let value = match offset_in(buf, h.value) {
            Some(v) if !h.value.is_empty() => Span::new(v, v + h.value.len()),
            // An empty value: it sits just after the colon.
            _ => Span::new(name_end + 1, name_end + 1),
        };
        out.push(Field {
            name: Span::new(name, name_end),
            value,
        });
    }
    Ok(out)
}
