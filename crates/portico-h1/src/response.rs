//! Response heads from upstreams, and their framing (RFC 9112 §6.3).
//!
//! The stance toward upstreams is measured, not lenient: an upstream is configured by the
//! operator but may be compromised or buggy, and one response read as two would poison the
//! pooled connection and hand one client's answer to another. So:
//!
//! - refused (the proxy answers 502 and closes the upstream connection): a bare CR,
//!   obs-fold (RFC 9112 §5.2 lets a proxy refuse it), `Content-Length` with
//!   `Transfer-Encoding`, invalid or differing `Content-Length`, `chunked` twice,
//!   `Transfer-Encoding` from an HTTP/1.0 upstream, a `101` nobody asked for, invalid field
//!   names or values, a head over the limits;
//! - accepted: a bare LF as line ending (RFC 9112 §2.2 allows a recipient to; old servers
//!   send it), a `Transfer-Encoding` whose last coding is not `chunked` (read until close,
//!   §6.3 item 4), a body without length (read until close, item 8), `_` in names (nothing
//!   downstream folds them: Portico re-frames every response itself).
//!
//! 1xx answers other than 101 are interim: [`ResponseHead::is_interim`] says so, and the
//! final answer follows on the same connection.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use crate::error::H1Error;
use crate::framing::{self, FieldSummary, Framing, RequestContext, Version};
use crate::head::{self, Fields, Limits, MAX_HEADERS_CAP, Mode, Scanner, Span};

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub(crate) fields: Fields,
    status: u16,
    /// From the status code to the end of the status line (code and reason as received).
    status_rest: Span,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    summary: FieldSummary,
}

impl ResponseHead {
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The reason phrase as received (may be empty).
    pub fn reason(&self) -> &[u8] {
        let rest = self.status_rest.of(&self.fields.bytes);
        rest.get(4..).unwrap_or_default()
    }
    /// `3DIGIT [SP reason]` as received, for the head writer.
    pub(crate) fn status_rest(&self) -> &[u8] {
        self.status_rest.of(&self.fields.bytes)
    }
    pub fn version(&self) -> Version {
        self.version
    }
    /// How the body that follows is delimited.
    pub fn framing(&self) -> Framing {
        self.framing
    }
    /// Whether the upstream connection may be reused after this response.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// A 1xx other than 101: the final answer still follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
    pub fn headers(&self) -> &Fields {
        &self.fields
    }
    pub fn summary(&self) -> &FieldSummary {
        &self.summary
    }
    pub fn bytes(&self) -> &Bytes {
        &self.fields.bytes
    }
}

/// The per-connection response reader (upstream side).
#[derive(Debug, Clone)]
pub struct ResponseParser {
    limits: Limits,
    scanner: Scanner,
}

impl ResponseParser {
    pub fn new(limits: Limits) -> Self {
        ResponseParser {
            limits,
            scanner: Scanner::default(),
        }
    }

    /// Looks for a whole response head at the start of `buf`, the answer to a request
    /// described by `req`. As [`crate::RequestParser::parse`]: `Ok(None)` needs more bytes;
    /// on success the head is split off `buf`.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        req: RequestContext,
    ) -> Result<Option<ResponseHead>, H1Error> {
        let Some(end) = self
            .scanner
            .scan(buf, self.limits.max_head, Mode::Response)?
        else {
            return Ok(None);
        };
        self.scanner.reset();
        let p = parse_complete(&buf[..end], &self.limits, req)?;
        let bytes = buf.split_to(end).freeze();
        Ok(Some(ResponseHead {
            fields: Fields {
                bytes,
                fields: p.fields,
            },
            status: p.status,
            status_rest: p.status_rest,
            version: p.version,
            framing: p.framing,
            keep_alive: p.keep_alive,
            summary: p.summary,
        }))
    }
}

struct Parsed {
    fields: Vec<crate::head::Field>,
    status: u16,
    status_rest: Span,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    summary: FieldSummary,
}

fn parse_complete(buf: &[u8], limits: &Limits, req: RequestContext) -> Result<Parsed, H1Error> {
    let max = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut res = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut storage[..max])
        .map_err(|e| head::map_httparse(e, false))?;
    // httparse must end the head where the scanner did (it always does for a head the
    // scanner accepted; a disagreement is refused rather than trusted).
    if status != httparse::Status::Complete(buf.len()) {
        return Err(H1Error::BadStatusLine);
    }
    let (Some(code), Some(minor)) = (res.code, res.version) else {
        return Err(H1Error::BadStatusLine);
    };
    // httparse takes any three digits; a status is 100..=599 (RFC 9110 §15).
    if !(100..600).contains(&code) {
        return Err(H1Error::BadStatusLine);
    }
    let status_rest = status_rest(buf).ok_or(H1Error::BadStatusLine)?;
    let version = Version::from_minor(minor);
    let fields = head::collect_fields(buf, res.headers)?;
    let summary = framing::summarize(buf, &fields)?;
    let framing = framing::response_framing(&summary, version, code, req)?;
    let keep_alive = framing::keep_alive(version, &summary, framing);
    Ok(Parsed {
        fields,
        status: code,
        status_rest,
        version,
        framing,
        keep_alive,
        summary,
    })
}

/// The status line after `HTTP/1.x SP`, up to its line ending (leading empty lines skipped).
fn status_rest(buf: &[u8]) -> Option<Span> {
    let mut start = 0;
    loop {
        match buf.get(start..)? {
            [b'\r', b'\n', ..] => start += 2,
            [b'\n', ..] => start += 1,
            _ => break,
        }
    }
    let nl = start + memchr::memchr(b'\n', &buf[start..])?;
    let end = if nl > start && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let code = start + 9; // "HTTP/1.x "
    (code + 3 <= end).then(|| Span::new(code, end))
}
