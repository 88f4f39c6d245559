//! Differential fuzz target: `portico-h1`'s framing decision against an independent model of
//! RFC 9112 written here for the test (no code shared with the codec).
//!
//! The input describes one message head: a request line or a status line picked from a
//! vocabulary of valid and invalid ones, then field lines whose names, separators, values
//! and line endings are picked from vocabularies of what framing depends on (and of the
//! spellings smuggling attacks use), or taken as raw bytes. The head goes whole to
//! `parse_request_bytes` or to a `ResponseParser` (for a `HEAD`, `CONNECT` or upgrade
//! request, or a plain one); the model reads the same bytes. Both must agree on: refused or
//! not; the message body length (none, `Content-Length` N, chunked, until close, tunnel);
//! keep-alive; and, for requests, whether an upgrade is asked for.
//!
//! The model is RFC 9112 §2.2 (line endings), §3 (request line), §4 (status line), §5 (field
//! syntax), §3.2 (Host), §6.1 and §6.3 (message body length), §9.3 (persistence), RFC 9110
//! §5.6 (lists, tokens), §7.8 (Upgrade), with the rules where Portico is stricter than the RFC
//! by its contract (docs/security.md, "HTTP/1 rules") encoded as such (each marked
//! `STRICT:` below):
//!
//! - requests: a bare LF or bare CR is refused (the RFC lets a recipient accept a bare LF);
//!   responses accept a bare LF as a line ending (RFC 9112 §2.2), refuse a bare CR;
//! - obs-fold is refused on both sides (RFC 9112 §5.2 lets a proxy refuse it);
//! - `Content-Length` with `Transfer-Encoding` is refused on both sides (§6.3 item 3 "ought to
//!   be handled as an error"; a proxy forwarding it would have to choose);
//! - a `Content-Length` element that is not 1 to 18 digits, an empty element, or elements that
//!   differ: refused;
//! - `chunked` named twice (one field or several) is refused; a request `Transfer-Encoding`
//!   whose last element as written (an empty trailing element counts) is not `chunked`, or
//!   any `Transfer-Encoding` on HTTP/1.0, is refused (the RFC would read the first until close
//!   on a response, which is what the codec does for responses, and 400 a request);
//! - field names spelling `Content-Length` / `Transfer-Encoding` with `_` are refused in
//!   requests; more than one `Host` is refused in requests (RFC 9112 §3.2 says 400 too);
//! - a request target must be visible ASCII; the method must be a token;
//! - a `101` to a request that asked for no upgrade is refused (RFC 9110 §15.2.2: a server
//!   sends 101 only to an Upgrade request); status codes outside 100..=599 are refused.
//!
//! Not compared here (not the codec's to decide): a missing `Host` on HTTP/1.1 (the request
//! path refuses it with 400, `downstream/host_rules.rs`), Host value syntax, the limits (the
//! generated heads stay far below them).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portico_h1::{Framing, Limits, RequestContext, ResponseParser, parse_request_bytes};

// ------------------------------------------------------------------------------------------
// The input.

#[derive(Debug, Arbitrary)]
enum Start {
    /// A request line from `REQUEST_LINES`.
    Request(u8),
    /// A status line from `STATUS_LINES`, answering a request described by the flags.
    Response {
        line: u8,
        head: bool,
        connect: bool,
        upgrade: bool,
    },
    /// Raw bytes as the start line; requests.
    RawRequest(Vec<u8>),
    /// Raw bytes as the start line; responses to a plain GET.
    RawResponse(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Part {
    Pick(u8),
    Raw(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Line {
    name: Part,
    sep: u8,
    value: Part,
    end: u8,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// Empty lines before the start line.
    leading: u8,
    start: Start,
    start_end: u8,
    lines: Vec<Line>,
    final_end: u8,
}

const REQUEST_LINES: &[&[u8]] = &[
    b"GET / HTTP/1.1",
    b"POST /a HTTP/1.1",
    b"HEAD /a HTTP/1.1",
    b"PUT /up?x=1 HTTP/1.0",
    b"GET http://h/a HTTP/1.1",
    b"CONNECT h:443 HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
    b"GET / HTTP/1.2",
    b"GET / HTTP/2.0",
    b"GET / http/1.1",
    b"GET /a b HTTP/1.1",
    b"GET  / HTTP/1.1",
    b"GET / HTTP/1.1 ",
    b"G(T / HTTP/1.1",
    b"GET /\x7f HTTP/1.1",
    b"GET /\xc3\xa9 HTTP/1.1",
    b"GET\t/ HTTP/1.1",
    b"GET /",
    b" GET / HTTP/1.1",
];

const STATUS_LINES: &[&[u8]] = &[
    b"HTTP/1.1 200 OK",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 304 Not Modified",
    b"HTTP/1.1 101 Switching Protocols",
    b"HTTP/1.1 100 Continue",
    b"HTTP/1.1 103 Early Hints",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 404 ",
    b"HTTP/1.1 500",
    b"HTTP/1.1 201 Cr\xe9\xe9",
    b"HTTP/1.1 099 Low",
    b"HTTP/1.1 600 High",
    b"HTTP/1.1 20 Short",
    b"HTTP/1.1 2000 Long",
    b"HTTP/1.2 200 OK",
    b"HTTP/1.1  200 OK",
    b"HTTP/1.1 200 O\x01K",
];

const NAMES: &[&[u8]] = &[
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"content-length",
    b"TRANSFER-ENCODING",
    b"Content_Length",
    b"transfer_encoding",
    b"Content-Length ",
    b"Transfer-Encoding\t",
    b" Transfer-Encoding",
    b"\tHost",
    b"Trans fer-Encoding",
    b"X-A",
    b"Expect",
    b"Proxy-Connection",
    b"Keep-Alive",
    b"",
    b"Host\x00",
    b"Content-Lengths",
    b"Transfer-Encodin",
];

const VALUES: &[&[u8]] = &[
    b"chunked",
    b"Chunked",
    b"gzip, chunked",
    b"chunked, gzip",
    b"chunked, chunked",
    b"chunked,",
    b",chunked",
    b"identity",
    b"xchunked",
    b"\"chunked\"",
    b"chunked;q=1",
    b"chunked\x0b",
    b"3",
    b"03",
    b"0",
    b"3, 3",
    b"3,4",
    b"3,",
    b"+3",
    b"-1",
    b"0x3",
    b"1 0",
    b"123456789012345678",
    b"1234567890123456789",
    b"",
    b"close",
    b"keep-alive",
    b"Upgrade",
    b"upgrade, keep-alive",
    b"close, upgrade",
    b"websocket",
    b"h2c",
    b"H2C/1, websocket",
    b"websocket, h2c",
    b"a",
    b"example.com",
    b"100-continue",
    b"x\x7fy",
    b"x\x00y",
    b"caf\xc3\xa9",
    b"a \t b",
];

const SEPS: &[&[u8]] = &[b": ", b":", b":\t", b":  ", b" : ", b"::"];
const ENDS: &[&[u8]] = &[b"\r\n", b"\n", b"\r", b"\r\r\n"];

fn pick<'a>(table: &[&'a [u8]], i: u8) -> &'a [u8] {
    table[usize::from(i) % table.len()]
}

/// Mostly CRLF: the vocabulary's other endings one time in eight.
fn end(i: u8) -> &'static [u8] {
    if i & 7 != 0 {
        b"\r\n"
    } else {
        pick(ENDS, i >> 3)
    }
}

fn part(p: &Part, table: &[&[u8]]) -> Vec<u8> {
    match p {
        Part::Pick(i) => pick(table, *i).to_vec(),
        Part::Raw(b) => b.iter().copied().take(24).collect(),
    }
}

// ------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Len {
    None,
    Length(u64),
    Chunked,
    Close,
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Refused.
    Reject,
    /// More bytes needed (no empty line ends the head).
    Incomplete,
    /// Body length, keep-alive, upgrade asked for (requests; `false` for responses).
    Accept(Len, bool, bool),
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    matches!(b, b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^'
        | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// RFC 9110 §5.5: field-content is VCHAR / obs-text with SP and HTAB inside.
fn is_field_value(s: &[u8]) -> bool {
    s.iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
}

fn lower(s: &[u8]) -> Vec<u8> {
    s.iter().map(|b| b.to_ascii_lowercase()).collect()
}

/// RFC 9110 §5.6.1: a list's elements, split on commas, OWS (SP / HTAB) trimmed. Empty
/// elements are kept: the contract rule on `Transfer-Encoding` looks at them.
fn elements(v: &[u8]) -> Vec<Vec<u8>> {
    v.split(|&b| b == b',')
        .map(|e| {
            let start = e
                .iter()
                .position(|&b| b != b' ' && b != b'\t')
                .unwrap_or(e.len());
            let end = e
                .iter()
                .rposition(|&b| b != b' ' && b != b'\t')
                .map_or(start, |i| i + 1);
            lower(&e[start..end.max(start)])
        })
        .collect()
}

/// Splits a head into lines: the content of each line up to the empty line that ends the
/// head, CRLF-terminated (requests), or LF-terminated with an optional CR before it
/// (responses). `Err(())`: a line ending the side does not accept.
fn lines(bytes: &[u8], bare_lf_ok: bool) -> Result<Option<Vec<&[u8]>>, ()> {
    let mut out = Vec::new();
    let mut rest = bytes;
    loop {
        let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
            // No further line ending: a CR in what is left must still be followed by LF.
            if let Some(cr) = rest.iter().position(|&b| b == b'\r')
                && cr + 1 < rest.len()
            {
                return Err(());
            }
            return Ok(None);
        };
        let (content, crlf) = if lf > 0 && rest[lf - 1] == b'\r' {
            (&rest[..lf - 1], true)
        } else {
            (&rest[..lf], false)
        };
        // STRICT: requests refuse a bare LF.
        if !crlf && !bare_lf_ok {
            return Err(());
        }
        // A CR anywhere else in the line is a bare CR (RFC 9112 §2.2).
        if content.contains(&b'\r') {
            return Err(());
        }
        rest = &rest[lf + 1..];
        if content.is_empty() {
            if out.is_empty() {
                // RFC 9112 §2.2: empty lines before the start line are ignored.
                continue;
            }
            return Ok(Some(out));
        }
        out.push(content);
    }
}

/// One field line: RFC 9112 §5.1 (`field-name ":" OWS field-value OWS`, no whitespace
/// before the colon), §5.2 (obs-fold: refused, STRICT).
fn field(line: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if line[0] == b' ' || line[0] == b'\t' {
        return None;
    }
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    if !is_token(name) {
        return None;
    }
    let raw = &line[colon + 1..];
    let s = raw
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(raw.len());
    let e = raw
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(s, |i| i + 1);
    let value = &raw[s..e.max(s)];
    if !is_field_value(value) {
        return None;
    }
    Some((lower(name), value))
}

/// A `Content-Length` element: STRICT, 1 to 18 digits (RFC 9110 §8.6: 1*DIGIT).
fn decimal(e: &[u8]) -> Option<u64> {
    if e.is_empty() || e.len() > 18 || !e.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(e).ok()?.parse().ok()
}

/// What the fields say, once they are all read.
struct Fields {
    cl: Option<u64>,
    te: Option<Vec<Vec<u8>>>,
    hosts: usize,
    conn: Vec<Vec<u8>>,
    upgrade_first: Option<Vec<u8>>,
    lookalike: bool,
}

/// Reads the field lines; `None`: refused on either side.
fn read_fields(lines: &[&[u8]]) -> Option<Fields> {
    let mut f = Fields {
        cl: None,
        te: None,
        hosts: 0,
        conn: Vec::new(),
        upgrade_first: None,
        lookalike: false,
    };
    for line in lines {
        let (name, value) = field(line)?;
        match name.as_slice() {
            b"content-length" => {
                // RFC 9110 §8.6 / RFC 9112 §6.3 item 5: a list of identical values is one
                // value; anything else is an error.
                for e in elements(value) {
                    let n = decimal(&e)?;
                    if f.cl.is_some_and(|c| c != n) {
                        return None;
                    }
                    f.cl = Some(n);
                }
            }
            b"transfer-encoding" => {
                f.te.get_or_insert_default().extend(elements(value));
            }
            b"host" => f.hosts += 1,
            b"connection" => f.conn.extend(elements(value)),
            b"upgrade" => {
                if f.upgrade_first.is_none() {
                    f.upgrade_first = Some(value.to_vec());
                }
            }
            b"content_length" | b"transfer_encoding" => f.lookalike = true,
            _ => {}
        }
        // Names like `Content_length`: any `_`/`-` mix of the two framing names.
        let canon: Vec<u8> = name
            .iter()
            .map(|&b| if b == b'_' { b'-' } else { b })
            .collect();
        if name.contains(&b'_') && (canon == b"content-length" || canon == b"transfer-encoding") {
            f.lookalike = true;
        }
    }
    // STRICT: `chunked` applied more than once is refused (both sides).
    if let Some(te) = &f.te
        && te.iter().filter(|e| e.as_slice() == b"chunked").count() > 1
    {
        return None;
    }
    Some(f)
}

impl Fields {
    fn has_conn(&self, t: &[u8]) -> bool {
        self.conn.iter().any(|c| c.as_slice() == t)
    }
    fn te_last_chunked(&self) -> bool {
        self.te
            .as_ref()
            .and_then(|t| t.last())
            .is_some_and(|l| l.as_slice() == b"chunked")
    }
    /// RFC 9112 §9.3: persistence.
    fn keep_alive(&self, http11: bool, len: Len) -> bool {
        if self.has_conn(b"close") || matches!(len, Len::Close | Len::Tunnel) {
            return false;
        }
        http11 || self.has_conn(b"keep-alive")
    }
}

/// Version token: exactly HTTP/1.0 or HTTP/1.1 (RFC 9112 §2.3; other versions are not this
/// codec's). `Some(true)`: 1.1.
fn version(v: &[u8]) -> Option<bool> {
    match v {
        b"HTTP/1.1" => Some(true),
        b"HTTP/1.0" => Some(false),
        _ => None,
    }
}

fn model_request(head: &[u8]) -> Verdict {
    let lines = match lines(head, false) {
        Err(()) => return Verdict::Reject,
        Ok(None) => return Verdict::Incomplete,
        Ok(Some(l)) => l,
    };
    // RFC 9112 §3: method SP request-target SP HTTP-version, single spaces.
    let parts: Vec<&[u8]> = lines[0].split(|&b| b == b' ').collect();
    let [method, target, ver] = parts.as_slice() else {
        return Verdict::Reject;
    };
    // STRICT: the target is visible ASCII (RFC 3986 allows no other byte).
    if !is_token(method) || target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Verdict::Reject;
    }
    let Some(http11) = version(ver) else {
        return Verdict::Reject;
    };
    let Some(f) = read_fields(&lines[1..]) else {
        return Verdict::Reject;
    };
    // STRICT (and RFC 9112 §3.2: 400): more than one Host; `_` look-alikes.
    if f.hosts > 1 || f.lookalike {
        return Verdict::Reject;
    }
    // RFC 9112 §6.3 items 3, 4, 6, 7 for requests.
    let len = match (&f.te, f.cl) {
        (Some(_), Some(_)) => return Verdict::Reject,
        // STRICT: TE on HTTP/1.0; last element not chunked (item 4 says 400 too).
        (Some(_), None) if !http11 || !f.te_last_chunked() => return Verdict::Reject,
        (Some(_), None) => Len::Chunked,
        (None, Some(n)) => Len::Length(n),
        (None, None) => Len::None,
    };
    // RFC 9110 §7.8: an upgrade is asked for with `Connection: upgrade` and `Upgrade` on
    // HTTP/1.1; the proxy does not honour `h2c` (its first offered protocol's name).
    let upgrade = http11
        && f.has_conn(b"upgrade")
        && f.upgrade_first.as_ref().is_some_and(|u| {
            let first = u.split(|&b| b == b',').next().unwrap_or_default();
            let name = first.split(|&b| b == b'/').next().unwrap_or_default();
            lower(name.trim_ascii()) != b"h2c"
        });
    Verdict::Accept(len, f.keep_alive(http11, len), upgrade)
}

fn model_response(head: &[u8], req: RequestContext) -> Verdict {
    let lines = match lines(head, true) {
        Err(()) => return Verdict::Reject,
        Ok(None) => return Verdict::Incomplete,
        Ok(Some(l)) => l,
    };
    // RFC 9112 §4: HTTP-version SP 3DIGIT SP [reason-phrase]; the reason is HTAB / SP /
    // VCHAR / obs-text. A missing SP after the code is accepted (RFC 9112 §4: a recipient
    // ought to accept it; httparse does).
    let line = lines[0];
    let (Some(ver), Some(code)) = (line.get(..8), line.get(9..12)) else {
        return Verdict::Reject;
    };
    let Some(http11) = version(ver) else {
        return Verdict::Reject;
    };
    if line[8] != b' ' || !code.iter().all(u8::is_ascii_digit) {
        return Verdict::Reject;
    }
    match line.get(12..) {
        Some([]) => {}
        Some([b' ', reason @ ..]) if is_field_value(reason) => {}
        _ => return Verdict::Reject,
    }
    let status: u16 = code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) {
        return Verdict::Reject;
    }
    let Some(f) = read_fields(&lines[1..]) else {
        return Verdict::Reject;
    };
    // RFC 9112 §6.3, in order.
    let len = if status == 101 {
        // STRICT: a 101 nobody asked for is refused.
        if !req.upgrade {
            return Verdict::Reject;
        }
        Len::Tunnel
    } else if req.head || (100..200).contains(&status) || status == 204 || status == 304 {
        // Item 1.
        Len::None
    } else if req.connect && (200..300).contains(&status) {
        // Item 2.
        Len::Tunnel
    } else {
        match (&f.te, f.cl) {
            // Item 3, STRICT: refused.
            (Some(_), Some(_)) => return Verdict::Reject,
            // RFC 9112 §6.1: TE from HTTP/1.0 is faulty framing; STRICT: refused.
            (Some(_), None) if !http11 => return Verdict::Reject,
            (Some(_), None) if f.te_last_chunked() => Len::Chunked,
            // Item 4: read until close.
            (Some(_), None) => Len::Close,
            // Item 6.
            (None, Some(n)) => Len::Length(n),
            // Item 8.
            (None, None) => Len::Close,
        }
    };
    Verdict::Accept(len, f.keep_alive(http11, len), false)
}

// ------------------------------------------------------------------------------------------
// The codec, in the model's terms.

fn len_of(f: Framing) -> Len {
    match f {
        Framing::None => Len::None,
        Framing::Length(n) => Len::Length(n),
        Framing::Chunked => Len::Chunked,
        Framing::CloseDelimited => Len::Close,
        Framing::Tunnel => Len::Tunnel,
    }
}

fn codec_request(head: &[u8]) -> Verdict {
    match parse_request_bytes(head, &Limits::default()) {
        Err(_) => Verdict::Reject,
        Ok(None) => Verdict::Incomplete,
        Ok(Some(h)) => Verdict::Accept(len_of(h.framing()), h.keep_alive(), h.upgrade()),
    }
}

fn codec_response(head: &[u8], req: RequestContext) -> Verdict {
    let mut buf = bytes::BytesMut::from(head);
    match ResponseParser::new(Limits::default()).parse(&mut buf, req) {
        Err(_) => Verdict::Reject,
        Ok(None) => Verdict::Incomplete,
        Ok(Some(h)) => Verdict::Accept(len_of(h.framing()), h.keep_alive(), false),
    }
}

fuzz_target!(|input: Input| {
    let mut head = Vec::new();
    for _ in 0..input.leading % 3 {
        head.extend_from_slice(b"\r\n");
    }
    let mut req = None;
    match &input.start {
        Start::Request(i) => head.extend_from_slice(pick(REQUEST_LINES, *i)),
        Start::Response {
            line,
            head: h,
            connect,
            upgrade,
        } => {
            head.extend_from_slice(pick(STATUS_LINES, *line));
            req = Some(RequestContext {
                head: *h,
                connect: *connect,
                upgrade: *upgrade,
            });
        }
        Start::RawRequest(b) => head.extend(b.iter().take(40)),
        Start::RawResponse(b) => {
            head.extend(b.iter().take(40));
            req = Some(RequestContext::default());
        }
    }
    head.extend_from_slice(end(input.start_end));
    for l in input.lines.iter().take(12) {
        head.extend(part(&l.name, NAMES));
        head.extend_from_slice(pick(SEPS, if l.sep & 3 != 0 { 0 } else { l.sep >> 2 }));
        head.extend(part(&l.value, VALUES));
        head.extend_from_slice(end(l.end));
    }
    head.extend_from_slice(end(input.final_end));
    let (model, codec) = match req {
        None => (model_request(&head), codec_request(&head)),
        Some(r) => (model_response(&head, r), codec_response(&head, r)),
    };
    // The model only reads up to the first empty line: what follows is the body, which it
    // ignores (as the codec does). An incomplete head is not a decision to compare when the
    // codec found a reason to refuse early (a bad method byte, a bare CR: the model only
    // judges complete heads).
    if model == Verdict::Incomplete && codec == Verdict::Reject {
        return;
    }
    assert_eq!(
        model,
        codec,
        "model and codec disagree on {:?} ({})",
        String::from_utf8_lossy(&head),
        if req.is_some() { "response" } else { "request" }
    );
});
