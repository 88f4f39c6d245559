//! Message framing (RFC 9112 §6.3) and the keep-alive decision, for both sides: where a
//! request or response body ends is decided here and nowhere else, from one pass over the
//! head's fields.
//!
//! One place on purpose: the security gate and the proxy must never disagree on where a
//! message ends (a parser differential is what request smuggling needs).

use crate::error::H1Error;
use crate::head::{Field, Span, tokens};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framing {
    /// No body at all (a request without `Content-Length`/`Transfer-Encoding`; a response to
    /// `HEAD`; 1xx, 204, 304).
    None,
    /// Exactly this many bytes (`Content-Length`; `Length(0)` is an explicit empty body).
    Length(u64),
    /// The chunked transfer coding (RFC 9112 §7.1).
    Chunked,
    /// Until the sender closes the connection (responses only, RFC 9112 §6.3 item 8).
    CloseDelimited,
    /// The connection stops being HTTP/1: a `101` to an upgrade request, a `2xx` to
    /// `CONNECT`. Bytes pass through both ways until either side closes.
    Tunnel,
}

impl Framing {
    /// Whether the body is known to be empty.
    pub fn is_empty(self) -> bool {
        matches!(self, Framing::None | Framing::Length(0))
    }
}

/// The HTTP version of a message (`httparse` knows only these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    pub(crate) fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Version::Http10 => b"HTTP/1.0",
            Version::Http11 => b"HTTP/1.1",
        }
    }
}

/// What the framing and connection fields of one head say, gathered in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSummary {
    /// The agreed `Content-Length` value, if any.
    pub content_length: Option<u64>,
    /// How many `Transfer-Encoding` fields.
    pub te_fields: usize,
    /// Whether the last transfer coding is `chunked`.
    pub te_last_chunked: bool,
    /// How many transfer codings are listed (all fields); more than 1 means a coding other
    /// than `chunked` is applied too.
    pub te_codings: usize,
    /// How many `Host` fields, and the first one's value.
    pub hosts: usize,
    pub host: Option<Span>,
    /// `Connection` tokens.
    pub close: bool,
    pub keep_alive: bool,
    pub connection_upgrade: bool,
    /// The first `Upgrade` field's value.
    pub upgrade: Option<Span>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// A name spelling `Content-Length`/`Transfer-Encoding` with `_` (the error to give).
    pub lookalike: Option<H1Error>,
}

/// Reads the framing-relevant fields of a head. Errors that are errors on both sides come
/// back at once, in field order: an invalid or differing `Content-Length`, `chunked` named
/// twice.
pub fn summarize(buf: &[u8], fields: &[Field]) -> Result<FieldSummary, H1Error> {
    let mut s = FieldSummary::default();
    let mut te_chunked = 0usize;
    for f in fields {
        let name = f.name.of(buf);
        let value = f.value.of(buf);
        // Dispatch on length first: most names are compared once, against one candidate.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                for part in value.split(|&b| b == b',') {
                    let n = parse_decimal(part.trim_ascii()).ok_or(H1Error::BadContentLength)?;
                    if s.content_length.is_some_and(|c| c != n) {
                        return Err(H1Error::BadContentLength);
                    }
                    s.content_length = Some(n);
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                s.te_fields += 1;
                let mut last: &[u8] = b"";
                for part in value.split(|&b| b == b',') {
                    let t = part.trim_ascii();
                    if t.eq_ignore_ascii_case(b"chunked") {
                        te_chunked += 1;
                    }
                    if !t.is_empty() {
                        s.te_codings += 1;
                    }
                    last = t;
                }
                // `chunked` applied twice (one line or several) is invalid (RFC 9112 §6.1:
                // applied once, last), and readers disagree on it.
                if te_chunked > 1 {
                    return Err(H1Error::BadTransferEncoding);
                }
                // The last element as written, even if empty (`chunked,` does not end in
                // chunked: the old gate read it so).
                s.te_last_chunked = last.eq_ignore_ascii_case(b"chunked");
            }
            4 if name.eq_ignore_ascii_case(b"host") => {
                s.hosts += 1;
                if s.host.is_none() {
                    s.host = Some(f.value);
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for t in tokens(value) {
                    if t.eq_ignore_ascii_case(b"close") {
                        s.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        s.keep_alive = true;
                    } else if t.eq_ignore_ascii_case(b"upgrade") {
                        s.connection_upgrade = true;
                    }
                }
            }
            7 if s.upgrade.is_none() && name.eq_ignore_ascii_case(b"upgrade") => {
                s.upgrade = Some(f.value);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                s.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            14 | 17 if s.lookalike.is_none() => s.lookalike = framing_lookalike(name),
            _ => {}
        }
    }
    Ok(s)
}

/// A `Content-Length` element: 1 to 18 ASCII digits (no sign, no spaces, no hex; 18 digits
/// cannot overflow `u64`).
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    let mut n = 0u64;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// `Content_Length`, `transfer_encoding` and the like: not the framing fields to this
/// parser, but the same variable to a CGI-style upstream that maps `-` and `_` alike.
fn framing_lookalike(name: &[u8]) -> Option<H1Error> {
    let same = |want: &[u8]| {
        name.len() == want.len()
            && name.contains(&b'_')
            && name
                .iter()
                .zip(want)
                .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    if same(b"content-length") {
        Some(H1Error::BadContentLength)
    } else if same(b"transfer-encoding") {
        Some(H1Error::BadTransferEncoding)
    } else {
        None
    }
}

/// The framing of a request (RFC 9112 §6.3 items 3–7, with the edge's stricter rules: CL
/// with TE, a TE not ending in `chunked`, and TE on HTTP/1.0 are refused, not tolerated).
pub fn request_framing(s: &FieldSummary, version: Version) -> Result<Framing, H1Error> {
    if let Some(e) = s.lookalike {
        return Err(e);
    }
    if s.hosts > 1 {
        return Err(H1Error::DuplicateHost);
    }
    match (s.content_length, s.te_fields > 0) {
        (Some(_), true) => Err(H1Error::ContentLengthAndTransferEncoding),
        (_, true) if !s.te_last_chunked || version == Version::Http10 => {
            Err(H1Error::BadTransferEncoding)
        }
        (_, true) => Ok(Framing::Chunked),
        (Some(n), false) => Ok(Framing::Length(n)),
        (None, false) => Ok(Framing::None),
    }
}

/// What the response's framing depends on about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestContext {
    /// The request was `HEAD`.
    pub head: bool,
    /// The request was `CONNECT`.
    pub connect: bool,
    /// The request asked for an upgrade (see `RequestHead::upgrade`).
    pub upgrade: bool,
}

/// The framing of a response (RFC 9112 §6.3 items 1–8). Upstreams get a measured stance:
/// what would let one response be read as two (CL with TE, differing or invalid CL,
/// `chunked` twice, TE on HTTP/1.0, a `101` nobody asked for) is refused (the proxy
/// answers 502 and drops the connection); a TE not ending in `chunked` is read until close,
/// as the RFC says.
pub fn response_framing(
    s: &FieldSummary,
    version: Version,
    status: u16,
    req: RequestContext,
) -> Result<Framing, H1Error> {
    if status == 101 {
        return if req.upgrade {
            Ok(Framing::Tunnel)
        } else {
            Err(H1Error::UnexpectedSwitch)
        };
    }
    // Item 1: no body whatever the fields say.
    if req.head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Framing::None);
    }
    // Item 2: a successful CONNECT becomes a tunnel.
    if req.connect && (200..300).contains(&status) {
        return Ok(Framing::Tunnel);
    }
    match (s.content_length, s.te_fields > 0) {
        // Item 3: "ought to be handled as an error"; a proxy forwarding it would have to
        // choose, and a choice is a desync.
        (Some(_), true) => Err(H1Error::ContentLengthAndTransferEncoding),
        // RFC 9112 §6.1: TE from an HTTP/1.0 sender means faulty framing.
        (_, true) if version == Version::Http10 => Err(H1Error::BadTransferEncoding),
        (_, true) if s.te_last_chunked => Ok(Framing::Chunked),
        // Item 4: a response whose last coding is not chunked runs until close.
        (_, true) => Ok(Framing::CloseDelimited),
        (Some(n), false) => Ok(Framing::Length(n)),
        // Item 8.
        (None, false) => Ok(Framing::CloseDelimited),
    }
}

/// Whether the connection may carry another message after this one: HTTP/1.1 unless
/// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive` (RFC 9112 §9.3), and
/// never after a close-delimited body or a tunnel.
pub fn keep_alive(version: Version, s: &FieldSummary, framing: Framing) -> bool {
    if s.close || matches!(framing, Framing::CloseDelimited | Framing::Tunnel) {
        return false;
    }
    match version {
        Version::Http11 => true,
        Version::Http10 => s.keep_alive,
    }
}
