//! The HTTP/1 gate's rules over bytes (reference §5, RFC 9112): what makes a head or a chunk
//! line invalid, and what a valid head says about the body that follows. Pure functions, no
//! I/O: the scanner in `mod.rs` calls them as bytes arrive.

use std::sync::atomic::{AtomicU8, Ordering};

/// Why a connection was cut (0 = it was not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Violation {
    None = 0,
    BareLineFeed = 1,
    BareCarriageReturn = 2,
    ObsFold = 3,
    ContentLengthAndTransferEncoding = 4,
    BadContentLength = 5,
    BadTransferEncoding = 6,
    DuplicateHost = 7,
    BadChunk = 8,
    HeadTooLarge = 9,
    BadRequestLine = 10,
    HeadTimeout = 11,
    Http2NotAllowed = 12,
    NotHttp2 = 13,
}

impl Violation {
    pub fn from_u8(v: u8) -> Violation {
        match v {
            1 => Violation::BareLineFeed,
            2 => Violation::BareCarriageReturn,
            3 => Violation::ObsFold,
            4 => Violation::ContentLengthAndTransferEncoding,
            5 => Violation::BadContentLength,
            6 => Violation::BadTransferEncoding,
            7 => Violation::DuplicateHost,
            8 => Violation::BadChunk,
            9 => Violation::HeadTooLarge,
            10 => Violation::BadRequestLine,
            11 => Violation::HeadTimeout,
            12 => Violation::Http2NotAllowed,
            13 => Violation::NotHttp2,
            _ => Violation::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Violation::None => "none",
            Violation::BareLineFeed => "bare LF",
            Violation::BareCarriageReturn => "bare CR",
            Violation::ObsFold => "obs-fold header line",
            Violation::ContentLengthAndTransferEncoding => "Content-Length with Transfer-Encoding",
            Violation::BadContentLength => "invalid or differing Content-Length",
            Violation::BadTransferEncoding => {
                "Transfer-Encoding not ending in chunked, chunked twice, or on HTTP/1.0"
            }
            Violation::DuplicateHost => "several Host headers",
            Violation::BadChunk => "invalid chunked framing",
            Violation::HeadTooLarge => "request head too large",
            Violation::BadRequestLine => "invalid request line",
            Violation::HeadTimeout => "request head not received in time",
            Violation::Http2NotAllowed => "HTTP/2 preface on an HTTP/1.1-only connection",
            Violation::NotHttp2 => "HTTP/1 request on an HTTP/2-only (ALPN h2) connection",
        }
    }
}

/// Where the violation is reported.
#[derive(Debug, Default)]
pub struct Report(AtomicU8);

impl Report {
    pub fn get(&self) -> Violation {
        Violation::from_u8(self.0.load(Ordering::Relaxed))
    }
    pub(super) fn set(&self, v: Violation) {
        self.0.store(v as u8, Ordering::Relaxed);
    }
}

/// What a finished head says about the body that follows.
pub(super) enum Next {
    Body(u64),
    Chunked,
}

/// Validates one complete head (`head` ends with the blank line). Returns the framing of the
/// body that follows, and whether the request asks for a protocol upgrade hyper may honour.
pub(super) fn check_head(head: &[u8]) -> Result<(Next, bool), Violation> {
    let mut lines = head.split(|&b| b == b'\n');
    let request_line = lines.next().unwrap_or_default();
    let http10 = request_line.ends_with(b"HTTP/1.0\r");
    let mut content_length: Option<u64> = None;
    let mut te_last_chunked: Option<bool> = None;
    let mut te_chunked = 0usize;
    let mut hosts = 0;
    let mut upgrade = false;
    let mut connection_upgrade = false;
    for line in lines {
        // Every line was checked to end in CRLF by the scanner; strip the CR.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(Violation::ObsFold);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue; // hyper rejects a header line without a colon
        };
        let name = &line[..colon];
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let part = part.trim_ascii();
                if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
                    return Err(Violation::BadContentLength);
                }
                let n: u64 = std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Violation::BadContentLength)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Violation::BadContentLength);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            // `chunked` applied twice (in one line or over several) is invalid (RFC 9112
            // §6.1: chunked is applied once, last), and readers disagree on it.
            te_chunked += chunked_codings(value);
            if te_chunked > 1 {
                return Err(Violation::BadTransferEncoding);
            }
            te_last_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // As the handler reads it: the first protocol offered; `h2c` is ignored.
            let first = value.split(|&b| b == b',').next().unwrap_or_default();
            let proto = first.split(|&b| b == b'/').next().unwrap_or_default();
            upgrade = !proto.trim_ascii().eq_ignore_ascii_case(b"h2c");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection_upgrade |= value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        } else if is_framing_lookalike(name) {
            return Err(if name.len() == 14 {
                Violation::BadContentLength
            } else {
                Violation::BadTransferEncoding
            });
        }
    }
    // Only an HTTP/1.1 request with `Connection: upgrade` can be switched (upgrade::take).
    let upgrade = upgrade && connection_upgrade && request_line.ends_with(b"HTTP/1.1\r");
    if hosts > 1 {
        return Err(Violation::DuplicateHost);
    }
    match (content_length, te_last_chunked) {
        (Some(_), Some(_)) => Err(Violation::ContentLengthAndTransferEncoding),
        (_, Some(false)) => Err(Violation::BadTransferEncoding),
        (_, Some(true)) if http10 => Err(Violation::BadTransferEncoding),
        (_, Some(true)) => Ok((Next::Chunked, upgrade)),
        (Some(n), None) => Ok((Next::Body(n), upgrade)),
        (None, None) => Ok((Next::Body(0), upgrade)),
    }
}

/// How many times a `Transfer-Encoding` value names `chunked`.
fn chunked_codings(value: &[u8]) -> usize {
    value
        .split(|&b| b == b',')
        .filter(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count()
}

/// Where `connection: close` goes into a response head that hyper wrote while the request
/// body was still arriving: just after the status line, if `head` starts a final response and
/// says nothing about `connection` itself.
pub(super) fn close_insert_point(head: &[u8]) -> Option<usize> {
    if !head.starts_with(b"HTTP/1.1 ") || head.get(9) == Some(&b'1') {
        return None;
    }
    let line_end = memchr::memmem::find(head, b"\r\n")? + 2;
    let end = memchr::memmem::find(head, b"\r\n\r\n").unwrap_or(head.len());
    let says_connection = head[..end]
        .split(|&b| b == b'\n')
        .any(|l| l.len() >= 11 && l[..11].eq_ignore_ascii_case(b"connection:"));
    (!says_connection).then_some(line_end)
}

/// `Content_Length`, `transfer_encoding` and the like: not the framing headers to hyper, but
/// the same variable to a CGI-style upstream that maps `-` and `_` alike.
fn is_framing_lookalike(name: &[u8]) -> bool {
    let same = |want: &[u8]| {
        name.len() == want.len()
            && name.contains(&b'_')
            && name
                .iter()
                .zip(want)
                .all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    };
    same(b"content-length") || same(b"transfer-encoding")
}

/// Whether an unfinished head starts like a request line: optional empty lines, then a
/// method token (RFC 9110 tchars) up to the first space.
pub(super) fn method_prefix_ok(head: &[u8]) -> bool {
    let mut rest = head;
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    if rest == b"\r" {
        return true;
    }
    for &b in rest {
        if b == b' ' {
            return true;
        }
        let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if !tchar {
            return false;
        }
    }
    true
}

/// The size of a chunk-size line (extensions ignored); `None` when invalid or too large.
pub(super) fn chunk_size(line: &[u8]) -> Option<u64> {
    let size = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// Finds the end of a head (just past its blank line) in `hay`, which starts at the head's
/// first byte; checks that every line ends in CRLF and that no bare CR appears. Empty lines
/// before the request line are allowed (RFC 9112 §2.2).
pub(super) fn find_head_end(hay: &[u8]) -> Result<Option<usize>, Violation> {
    let mut from = 0;
    let mut leading = true;
    while let Some(off) = memchr::memchr(b'\n', &hay[from..]) {
        let nl = from + off;
        // A CR before the line's last byte is checked first, as for an unfinished line
        // below, so that the reason does not depend on whether the LF arrived yet.
        if nl > from && memchr::memchr(b'\r', &hay[from..nl - 1]).is_some() {
            return Err(Violation::BareCarriageReturn);
        }
        if nl == 0 || hay[nl - 1] != b'\r' {
            return Err(Violation::BareLineFeed);
        }
        let empty = nl - 1 == from;
        if empty && !leading {
            return Ok(Some(nl + 1));
        }
        leading = leading && empty;
        from = nl + 1;
    }
    // A CR may only be the last byte (its LF not read yet).
    if let Some(p) = memchr::memchr(b'\r', &hay[from..])
        && from + p + 1 < hay.len()
    {
        return Err(Violation::BareCarriageReturn);
    }
    Ok(None)
}
