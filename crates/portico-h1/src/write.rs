//! Head writers: the request head for the upstream and the response head for the client,
//! each built in one buffer in one pass over the parsed fields.
//!
//! Unchanged field lines are copied as they arrived (slices of the received head, no
//! re-formatting); hop-by-hop fields (RFC 9110 §7.6.1) and the fields `Connection` names are
//! dropped on the way; the framing fields are Portico's own (the body is re-framed, so the
//! received `Content-Length`/`Transfer-Encoding` never pass through: `Content-Length` is
//! written in canonical decimal, docs/security.md); extra fields are appended. Hand-written
//! because building a header map and serializing it again was a large share of the
//! per-request cost.

use bytes::{BufMut, BytesMut};

use crate::chunked::{CRLF, write_decimal};
use crate::framing::Framing;
use crate::head::{Fields, tokens};
use crate::request::RequestHead;
use crate::response::ResponseHead;

/// How the forwarded body is framed (the writer adds the matching field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyOut {
    /// No body and no framing field (a request without body; 1xx/204/304/HEAD answers,
    /// which keep a received `Content-Length` as their only size).
    None,
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Close-delimited: no framing field (responses only; the caller closes the connection
    /// after the body and should add `connection: close`).
    Close,
}

impl BodyOut {
    /// The same framing as received (a tunnel has no body in the head's sense).
    pub fn from_framing(framing: Framing) -> BodyOut {
        match framing {
            Framing::None | Framing::Tunnel => BodyOut::None,
            Framing::Length(n) => BodyOut::Length(n),
            Framing::Chunked => BodyOut::Chunked,
            Framing::CloseDelimited => BodyOut::Close,
        }
    }
}

/// The fields that belong to one connection and are never forwarded (RFC 9110 §7.6.1, plus
/// `Proxy-Authenticate` as the proxy's own stripping does), and `Content-Length`, which the
/// writer re-frames.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let eq = |n: &[u8]| name.eq_ignore_ascii_case(n);
    match name.len() {
        2 => eq(b"te"),
        7 => eq(b"trailer") || eq(b"upgrade"),
        10 => eq(b"connection") || eq(b"keep-alive"),
        14 => eq(b"content-length"),
        16 => eq(b"proxy-connection"),
        17 => eq(b"transfer-encoding"),
        18 => eq(b"proxy-authenticate"),
        _ => false,
    }
}

/// The `Connection` tokens that name a field not already dropped (`Host` never counts:
/// naming it would make the upstream request host-less, docs/security.md). Usually none, and
/// then nothing is allocated and no field is compared against them.
fn nominated_names(fields: &Fields) -> Vec<&[u8]> {
    let mut names = Vec::new();
    for v in fields.get_all(b"connection") {
        for t in tokens(v) {
            if !(is_hop_by_hop(t)
                || t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"host"))
            {
                names.push(t);
            }
        }
    }
    names
}

/// Copies the fields that survive into `out`, each line as received.
fn copy_fields(
    fields: &Fields,
    keep_upgrade: bool,
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
    out: &mut BytesMut,
) {
    let nominated = nominated_names(fields);
    let buf = fields.bytes();
    for f in fields.raw() {
        let name = f.name.of(buf);
        // The `Upgrade` field of an upgrade request or a 101 is the handshake itself.
        let handshake = keep_upgrade && name.eq_ignore_ascii_case(b"upgrade");
        if !handshake
            && (is_hop_by_hop(name) || nominated.iter().any(|t| t.eq_ignore_ascii_case(name)))
        {
            continue;
        }
        if !keep(name, f.value.of(buf)) {
            continue;
        }
        out.put_slice(f.line().of(buf));
        out.put_slice(CRLF);
    }
}

fn put_framing(body: BodyOut, out: &mut BytesMut) {
    match body {
        BodyOut::Length(n) => {
            out.put_slice(b"content-length: ");
            write_decimal(n, out);
            out.put_slice(CRLF);
        }
        BodyOut::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        BodyOut::None | BodyOut::Close => {}
    }
}

fn put_extra(extra: &[(&[u8], &[u8])], out: &mut BytesMut) {
    for (name, value) in extra {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(CRLF);
    }
}

/// Writes the request head for the upstream into `out`: `method SP target SP HTTP/1.1`
/// (`target` replaces the received one when the route rewrites it), the surviving fields,
/// the framing field for `body`, `connection: upgrade` with the `Upgrade` field for an
/// upgrade request, then `extra`. `keep(name, value)` may drop more fields (route rules);
/// it is not asked about hop-by-hop ones.
pub fn write_request_head(
    head: &RequestHead,
    target: Option<&[u8]>,
    body: BodyOut,
    keep: impl FnMut(&[u8], &[u8]) -> bool,
    extra: &[(&[u8], &[u8])],
    out: &mut BytesMut,
) {
    let extra_len: usize = extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    out.reserve(head.bytes().len() + extra_len + 64);
    out.put_slice(head.method());
    out.put_u8(b' ');
    out.put_slice(target.unwrap_or(head.target()));
    out.put_slice(b" HTTP/1.1\r\n");
    copy_fields(head.headers(), head.upgrade(), keep, out);
    put_framing(body, out);
    if head.upgrade() {
        out.put_slice(b"connection: upgrade\r\n");
    }
    put_extra(extra, out);
    out.put_slice(CRLF);
}

/// Writes the response head for the client into `out`: `HTTP/1.1` and the received status
/// code and reason, the surviving fields, the framing field for `body` (a bodiless answer
/// keeps a received `Content-Length` in canonical form, except 1xx and 204, which may not
/// carry one), `connection: upgrade` and `Upgrade` for a 101, then `extra` (the caller adds
/// `connection: close` when it will close).
pub fn write_response_head(
    head: &ResponseHead,
    body: BodyOut,
    keep: impl FnMut(&[u8], &[u8]) -> bool,
    extra: &[(&[u8], &[u8])],
    out: &mut BytesMut,
) {
    let extra_len: usize = extra.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    out.reserve(head.bytes().len() + extra_len + 64);
    let switching = head.status() == 101;
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(head.status_rest());
    out.put_slice(CRLF);
    copy_fields(head.headers(), switching, keep, out);
    let body = match (body, head.summary().content_length) {
        (BodyOut::None, Some(n)) if head.status() >= 200 && head.status() != 204 => {
            BodyOut::Length(n)
        }
        (b, _) => b,
    };
    put_framing(body, out);
    if switching {
        out.put_slice(b"connection: upgrade\r\n");
    }
    put_extra(extra, out);
    out.put_slice(CRLF);
}
