//! Request heads from downstream clients: the strict parse that is both the security gate
//! and the proxy's reader.
//!
//! [`RequestParser`] is kept per connection. Each call to [`RequestParser::parse`] looks
//! only at the bytes that arrived since the last call (the scanner's position is kept), and
//! once a whole head is there, `httparse` tokenizes it once; the head is then split off the
//! connection's buffer (no copy) and carries its fields as offsets.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};

use crate::error::H1Error;
use crate::framing::{self, FieldSummary, Framing, RequestContext, Version};
use crate::head::{self, Fields, Limits, MAX_HEADERS_CAP, Mode, Scanner, Span};

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub(crate) fields: Fields,
    method: Span,
    target: Span,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    upgrade: bool,
    summary: FieldSummary,
}

impl RequestHead {
    /// The method as received (case-sensitive, RFC 9110 §9.1).
    pub fn method(&self) -> &[u8] {
        self.method.of(&self.fields.bytes)
    }
    /// The request target as received (origin-form `path?query`, absolute-form, `*`, or
    /// CONNECT's authority).
    pub fn target(&self) -> &[u8] {
        self.target.of(&self.fields.bytes)
    }
    pub fn version(&self) -> Version {
        self.version
    }
    /// How the body that follows is delimited.
    pub fn framing(&self) -> Framing {
        self.framing
    }
    /// Whether the client lets the connection carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }
    /// Whether the request asks for a protocol switch the proxy may honour: HTTP/1.1,
    /// `Connection: upgrade`, and an `Upgrade` whose first protocol is not `h2c`. Only a
    /// `101` answer makes the connection a tunnel; anything else keeps it HTTP/1 (and
    /// parsed).
    pub fn upgrade(&self) -> bool {
        self.upgrade
    }
    /// The `Host` value, if one was sent (at most one: several are refused).
    pub fn host(&self) -> Option<&[u8]> {
        self.summary.host.map(|s| s.of(&self.fields.bytes))
    }
    /// `Expect: 100-continue`.
    pub fn expect_continue(&self) -> bool {
        self.summary.expect_continue
    }
    /// The header fields.
    pub fn headers(&self) -> &Fields {
        &self.fields
    }
    /// What the framing fields said (for the head writer and logging).
    pub fn summary(&self) -> &FieldSummary {
        &self.summary
    }
    /// What the response's framing depends on (pass it to the response parser).
    pub fn context(&self) -> RequestContext {
        RequestContext {
            head: self.method() == b"HEAD",
            connect: self.method() == b"CONNECT",
            upgrade: self.upgrade,
        }
    }
    /// The whole head as received.
    pub fn bytes(&self) -> &Bytes {
        &self.fields.bytes
    }
}

/// The per-connection request reader.
#[derive(Debug, Clone)]
pub struct RequestParser {
    limits: Limits,
    scanner: Scanner,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            scanner: Scanner::default(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Looks for a whole request head at the start of `buf`. `Ok(None)`: more bytes are
    /// needed (append them to `buf` and call again; the bytes already scanned are not
    /// scanned again). `Ok(Some(head))`: the head was split off `buf`, which now starts with
    /// the body or the next request. `Err`: the request is refused; the connection must be
    /// answered `err.status()` and closed (nothing after the bad bytes may be read as HTTP).
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<RequestHead>, H1Error> {
        let Some(end) = self
            .scanner
            .scan(buf, self.limits.max_head, Mode::Request)?
        else {
            return Ok(None);
        };
        self.scanner.reset();
        let head = parse_complete(&buf[..end], &self.limits)?;
        let bytes = buf.split_to(end).freeze();
        Ok(Some(head.into_head(bytes)))
    }
}

/// A parsed head before its bytes are split off the buffer.
struct Parsed {
    fields: Vec<crate::head::Field>,
    method: Span,
    target: Span,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    upgrade: bool,
    summary: FieldSummary,
}

impl Parsed {
    fn into_head(self, bytes: Bytes) -> RequestHead {
        RequestHead {
            fields: Fields {
                bytes,
                fields: self.fields,
            },
            method: self.method,
            target: self.target,
            version: self.version,
            framing: self.framing,
            keep_alive: self.keep_alive,
            upgrade: self.upgrade,
            summary: self.summary,
        }
    }
}

/// Parses one complete head (the scanner found its end and checked its lines).
fn parse_complete(buf: &[u8], limits: &Limits) -> Result<Parsed, H1Error> {
    let max = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut storage[..max])
        .map_err(|e| head::map_httparse(e, true))?;
    // httparse must end the head where the scanner did (it always does for a head the
    // scanner accepted; a disagreement is refused rather than trusted).
    if status != httparse::Status::Complete(buf.len()) {
        return Err(H1Error::BadRequestLine);
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(H1Error::BadRequestLine);
    };
    let method = head::offset_in(buf, method.as_bytes())
        .map(|o| Span::new(o, o + method.len()))
        .ok_or(H1Error::BadRequestLine)?;
    let target = head::offset_in(buf, path.as_bytes())
        .map(|o| Span::new(o, o + path.len()))
        .ok_or(H1Error::BadRequestLine)?;
    if target.len() > limits.max_target {
        return Err(H1Error::UriTooLong);
    }
    // httparse lets bytes over 0x7f through; a target is ASCII (RFC 3986), and hyper's URI
    // parser refused them before.
    if !target.of(buf).iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(H1Error::BadRequestLine);
    }
    let version = Version::from_minor(minor);
    let fields = head::collect_fields(buf, req.headers)?;
    let summary = framing::summarize(buf, &fields)?;
    let framing = framing::request_framing(&summary, version)?;
    let keep_alive = framing::keep_alive(version, &summary, framing);
    let upgrade = version == Version::Http11
        && summary.connection_upgrade
        && summary.upgrade.is_some_and(|u| {
            // As the handler reads it: the first protocol offered; `h2c` is not honoured.
            let v = u.of(buf);
            let first = v.split(|&b| b == b',').next().unwrap_or_default();
            let proto = first.split(|&b| b == b'/').next().unwrap_or_default();
            !proto.trim_ascii().eq_ignore_ascii_case(b"h2c")
        });
    Ok(Parsed {
        fields,
        method,
        target,
        version,
        framing,
        keep_alive,
        upgrade,
        summary,
    })
}

/// Parses a request head at the start of a byte string (tests, fuzzing, tools): `Ok(None)`
/// when the head does not end in it. The head's length is `head.bytes().len()`.
pub fn parse_request_bytes(input: &[u8], limits: &Limits) -> Result<Option<RequestHead>, H1Error> {
    let mut buf = BytesMut::from(input);
    RequestParser::new(*limits).parse(&mut buf)
}
