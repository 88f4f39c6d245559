//! Fuzz target: the codec's framing decisions against an independent, deliberately simple
//! model of RFC 9112 (§2.2 line endings, §3 request line, §5 fields, §6.3 message body
//! length, §7.1 chunked, §9.3 persistence) with the edge's stricter rules written out as
//! policy. The model is written from the RFC, not from the codec: it works on whole lines
//! split at CRLF and on lowercased copies of the fields, the slow obvious way.
//!
//! Whenever the model is sure, the codec must agree: accepted or refused, and when accepted,
//! the same head length, framing, keep-alive, upgrade, and the same message length and body
//! bytes. The model says "don't know" for what it does not model (chunk extensions, limits
//! other than the defaults, heads that never end).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_h1::{
    BodyDecoder, Framing, Limits, RequestContext, RequestParser, ResponseParser, Step,
};
use portico_h1::{BodyOut, RequestHead, is_hop_by_hop, write_request_head};

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum MFraming {
    Empty,
    Len(u64),
    Chunked,
    Close,
    Tunnel,
}

#[derive(Debug)]
enum Verdict {
    Accept {
        head_len: usize,
        framing: MFraming,
        keep_alive: bool,
        upgrade: bool,
        status: u16,
    },
    Reject,
    DontKnow,
}

fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Splits off the head: leading CRLFs skipped, up to the first empty line. `None` when it
/// does not end (the model does not decide).
fn split_head(input: &[u8]) -> Option<(usize, Vec<&[u8]>)> {
    let mut start = 0;
    while input[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let end = input[start..].windows(4).position(|w| w == b"\r\n\r\n")? + start + 4;
    let text = &input[start..end - 4];
    let mut lines = Vec::new();
    let mut rest = text;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    Some((end, lines))
}

/// Fields as (lowercase name, trimmed value); `Err(())` when a line is not a field line.
fn fields(lines: &[&[u8]]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ()> {
    let mut out = Vec::new();
    for line in lines {
        if line.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(()); // a bare CR or LF
        }
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(()); // obs-fold
        }
        let colon = line.iter().position(|&b| b == b':').ok_or(())?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&b| tchar(b)) {
            return Err(());
        }
        let value = ows_trim(&line[colon + 1..]);
        let value: Vec<u8> = value.to_vec();
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80)
        {
            return Err(());
        }
        out.push((name.to_ascii_lowercase(), value));
    }
    Ok(out)
}

fn list<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &'a str) -> impl Iterator<Item = Vec<u8>> + 'a {
    fields
        .iter()
        .filter(move |(n, _)| n == name.as_bytes())
        .flat_map(|(_, v)| {
            v.split(|&b| b == b',')
                .map(|e| ows_trim(e).to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
}

/// The framing fields by the policy: CL and TE never together; CL elements 1-18 digits, all
/// equal; TE: the last element of the last field exactly `chunked`, `chunked` once.
fn cl_te(f: &[(Vec<u8>, Vec<u8>)]) -> Result<(Option<u64>, Option<bool>, usize), ()> {
    let mut cl = None;
    for e in list(f, "content-length") {
        if e.is_empty() || e.len() > 18 || !e.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(&e)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        if cl.is_some_and(|c| c != n) {
            return Err(());
        }
        cl = Some(n);
    }
    let te_fields: Vec<&Vec<u8>> = f
        .iter()
        .filter(|(n, _)| n == b"transfer-encoding")
        .map(|(_, v)| v)
        .collect();
    let chunked_count = list(f, "transfer-encoding")
        .filter(|e| e == b"chunked")
        .count();
    let te = te_fields.last().map(|v| {
        ows_trim(v.rsplit(|&b| b == b',').next().unwrap_or_default())
            .eq_ignore_ascii_case(b"chunked")
    });
    if chunked_count > 1 {
        return Err(());
    }
    Ok((cl, te, te_fields.len()))
}

fn model_request(input: &[u8]) -> Verdict {
    let Some((head_len, lines)) = split_head(input) else {
        return Verdict::DontKnow;
    };
    if head_len > Limits::default().max_head {
        return Verdict::DontKnow;
    }
    // Bare CR/LF in the head (CRLF pairs were split out already).
    if lines
        .iter()
        .any(|l| l.contains(&b'\r') || l.contains(&b'\n'))
    {
        return Verdict::Reject;
    }
    let parts: Vec<&[u8]> = lines[0].split(|&b| b == b' ').collect();
    if parts.len() != 3 {
        return Verdict::Reject;
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || !method.iter().all(|&b| tchar(b)) {
        return Verdict::Reject;
    }
    if target.is_empty() || target.len() > 8192 || !target.iter().all(|b| (b'!'..=b'~').contains(b))
    {
        return Verdict::Reject;
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Verdict::Reject,
    };
    let Ok(f) = fields(&lines[1..]) else {
        return Verdict::Reject;
    };
    if f.len() > 100 {
        return Verdict::Reject;
    }
    if f.iter().filter(|(n, _)| n == b"host").count() > 1 {
        return Verdict::Reject;
    }
    if f.iter().any(|(n, _)| {
        n.contains(&b'_') && {
            let norm: Vec<u8> = n
                .iter()
                .map(|&b| if b == b'_' { b'-' } else { b })
                .collect();
            norm == b"content-length" || norm == b"transfer-encoding"
        }
    }) {
        return Verdict::Reject;
    }
    let Ok((cl, te, _)) = cl_te(&f) else {
        return Verdict::Reject;
    };
    let framing = match (cl, te) {
        (Some(_), Some(_)) => return Verdict::Reject,
        (_, Some(false)) => return Verdict::Reject,
        (_, Some(true)) if !http11 => return Verdict::Reject,
        (_, Some(true)) => MFraming::Chunked,
        (Some(n), None) => MFraming::Len(n),
        (None, None) => MFraming::Empty,
    };
    let conn: Vec<Vec<u8>> = list(&f, "connection").collect();
    let close = conn.iter().any(|t| t == b"close");
    let keep_alive = !close && (http11 || conn.iter().any(|t| t == b"keep-alive"));
    let upgrade = http11
        && conn.iter().any(|t| t == b"upgrade")
        && f.iter()
            .find(|(n, _)| n == b"upgrade")
            .is_some_and(|(_, v)| {
                let first = v.split(|&b| b == b',').next().unwrap_or_default();
                let proto = first.split(|&b| b == b'/').next().unwrap_or_default();
                !ows_trim(proto).eq_ignore_ascii_case(b"h2c")
            });
    Verdict::Accept {
        head_len,
        framing,
        keep_alive,
        upgrade,
        status: 0,
    }
}

fn model_response(input: &[u8], req: RequestContext) -> Verdict {
    let Some((head_len, lines)) = split_head(input) else {
        return Verdict::DontKnow;
    };
    if head_len > Limits::default().max_head {
        return Verdict::DontKnow;
    }
    if lines
        .iter()
        .any(|l| l.contains(&b'\r') || l.contains(&b'\n'))
    {
        return Verdict::DontKnow; // bare LF is accepted from upstreams; not modelled
    }
    let line = lines[0];
    if line.len() < 12 || line[8] != b' ' || !line[9..12].iter().all(u8::is_ascii_digit) {
        return Verdict::DontKnow;
    }
    if line.len() > 12 && line[12] != b' ' {
        return Verdict::DontKnow;
    }
    if line[12.min(line.len())..]
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Verdict::DontKnow; // reason phrase bytes: not modelled
    }
    let http11 = match &line[..8] {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Verdict::Reject,
    };
    let status: u16 =
        (line[9] - b'0') as u16 * 100 + (line[10] - b'0') as u16 * 10 + (line[11] - b'0') as u16;
    if !(100..600).contains(&status) {
        return Verdict::Reject;
    }
    let Ok(f) = fields(&lines[1..]) else {
        return Verdict::Reject;
    };
    if f.len() > 100 {
        return Verdict::Reject;
    }
    let Ok((cl, te, _)) = cl_te(&f) else {
        return Verdict::Reject;
    };
    // RFC 9112 §6.3, in its order.
    let framing = if status == 101 {
        if !req.upgrade {
            return Verdict::Reject;
        }
        MFraming::Tunnel
    } else if req.head || status / 100 == 1 || status == 204 || status == 304 {
        MFraming::Empty
    } else if req.connect && status / 100 == 2 {
        MFraming::Tunnel
    } else {
        match (cl, te) {
            (Some(_), Some(_)) => return Verdict::Reject,
            (_, Some(_)) if !http11 => return Verdict::Reject,
            (_, Some(true)) => MFraming::Chunked,
            (_, Some(false)) => MFraming::Close,
            (Some(n), None) => MFraming::Len(n),
            (None, None) => MFraming::Close,
        }
    };
    let conn: Vec<Vec<u8>> = list(&f, "connection").collect();
    let keep_alive = !conn.iter().any(|t| t == b"close")
        && !matches!(framing, MFraming::Close | MFraming::Tunnel)
        && (http11 || conn.iter().any(|t| t == b"keep-alive"));
    Verdict::Accept {
        head_len,
        framing,
        keep_alive,
        upgrade: false,
        status,
    }
}

/// The model's chunked body: returns (encoded length, data) or None when it does not know
/// (extensions, trailers it does not model, input ends) and Err for a refusal.
fn model_chunked(input: &[u8]) -> Result<Option<(usize, Vec<u8>)>, ()> {
    let mut i = 0;
    let mut data = Vec::new();
    loop {
        let Some(nl) = input[i..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = &input[i..i + nl];
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return Err(());
        }
        if line.contains(&b';') || line.len() > 64 {
            return Ok(None);
        }
        let size = ows_trim(line);
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            return Err(());
        }
        if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
            return Err(());
        }
        let n =
            u64::from_str_radix(std::str::from_utf8(size).map_err(|_| ())?, 16).map_err(|_| ())?;
        i += nl + 2;
        if n == 0 {
            // Trailers: only an empty section is modelled.
            return if input[i..].starts_with(b"\r\n") {
                Ok(Some((i + 2, data)))
            } else {
                Ok(None)
            };
        }
        let n = n as usize;
        if input.len() < i + n + 2 {
            return Ok(None);
        }
        data.extend_from_slice(&input[i..i + n]);
        if &input[i + n..i + n + 2] != b"\r\n" {
            return Err(());
        }
        i += n + 2;
    }
}

fn ours_framing(f: Framing) -> MFraming {
    match f {
        Framing::None | Framing::Length(0) => MFraming::Empty,
        Framing::Length(n) => MFraming::Len(n),
        Framing::Chunked => MFraming::Chunked,
        Framing::CloseDelimited => MFraming::Close,
        Framing::Tunnel => MFraming::Tunnel,
    }
}

fn norm(f: MFraming) -> MFraming {
    if f == MFraming::Len(0) {
        MFraming::Empty
    } else {
        f
    }
}

/// The codec's reading of a body at the start of `rest`: Some((consumed, data)) when it
/// ended, None when it needs more, Err when refused.
fn ours_body(rest: &[u8], framing: Framing) -> Result<Option<(usize, Vec<u8>)>, ()> {
    let mut d = BodyDecoder::new(framing, &Limits::default());
    let mut i = 0;
    let mut data = Vec::new();
    loop {
        match d.decode(&rest[i..]).map_err(|_| ())? {
            (n, Step::Data(r)) => {
                data.extend_from_slice(&rest[i..][r]);
                i += n;
            }
            (n, Step::Trailer(_)) => i += n,
            (n, Step::End) => return Ok(Some((i + n, data))),
            (_, Step::NeedMore) => return Ok(None),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let (model, ours) = if ctl & 0x80 == 0 {
        let mut buf = bytes_of(input);
        let parsed = RequestParser::new(Limits::default()).parse(&mut buf);
        if let Ok(Some(h)) = &parsed {
            round_trip(h);
        }
        let ours = parsed.map(|h| {
            h.map(|h| {
                (
                    h.bytes().len(),
                    h.framing(),
                    h.keep_alive(),
                    h.upgrade(),
                    0u16,
                )
            })
        });
        (model_request(input), ours)
    } else {
        let req = RequestContext {
            head: ctl & 1 != 0,
            connect: ctl & 2 != 0,
            upgrade: ctl & 4 != 0,
        };
        let mut buf = bytes_of(input);
        let ours = ResponseParser::new(Limits::default())
            .parse(&mut buf, req)
            .map(|h| {
                h.map(|h| {
                    (
                        h.bytes().len(),
                        h.framing(),
                        h.keep_alive(),
                        false,
                        h.status(),
                    )
                })
            });
        (model_response(input, req), ours)
    };
    match (&model, &ours) {
        (Verdict::DontKnow, _) => {}
        (Verdict::Reject, Err(_)) => {}
        (Verdict::Reject, Ok(got)) => panic!("model refuses, codec accepts: {got:?}"),
        (Verdict::Accept { .. }, Err(e)) => {
            panic!("model accepts ({model:?}), codec refuses: {e:?}")
        }
        (Verdict::Accept { .. }, Ok(None)) => panic!("model accepts ({model:?}), codec wants more"),
        (
            Verdict::Accept {
                head_len,
                framing,
                keep_alive,
                upgrade,
                status,
            },
            Ok(Some((len, f, ka, up, st))),
        ) => {
            assert_eq!(*head_len, *len, "head length");
            assert_eq!(norm(*framing), ours_framing(*f), "framing");
            assert_eq!(*keep_alive, *ka, "keep-alive");
            assert_eq!(*upgrade, *up, "upgrade");
            assert_eq!(*status, *st, "status");
            // The message length: the body after the head.
            let rest = &input[*len..];
            let ours = ours_body(rest, *f);
            match framing {
                MFraming::Len(n) => {
                    let n = *n as usize;
                    if rest.len() >= n {
                        assert_eq!(ours, Ok(Some((n, rest[..n].to_vec()))), "CL body");
                    } else {
                        assert_eq!(ours, Ok(None), "short CL body");
                    }
                }
                MFraming::Chunked => match model_chunked(rest) {
                    Ok(None) => {}
                    Err(()) => assert!(
                        ours.is_err(),
                        "model refuses the chunked body, codec: {ours:?}"
                    ),
                    Ok(Some(m)) => assert_eq!(ours, Ok(Some(m)), "chunked body"),
                },
                MFraming::Empty => assert_eq!(ours, Ok(Some((0, Vec::new()))), "empty body"),
                MFraming::Close | MFraming::Tunnel => {}
            }
        }
    }
});

fn bytes_of(input: &[u8]) -> bytes::BytesMut {
    bytes::BytesMut::from(input)
}

/// Optional whitespace is SP and HTAB only (RFC 9110 §5.6.3).
fn ows_trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

/// What the head writer makes of an accepted request must parse again, with the same
/// method, target and framing, as a keep-alive HTTP/1.1 request, and carry no hop-by-hop
/// field (except the `Upgrade` of an upgrade request) and no field `Connection` named.
fn round_trip(h: &RequestHead) {
    let mut out = bytes::BytesMut::new();
    write_request_head(
        h,
        None,
        BodyOut::from_framing(h.framing()),
        |_, _| true,
        &[],
        &mut out,
    );
    let again = RequestParser::new(Limits::default()).parse(&mut out);
    let Ok(Some(again)) = again else {
        panic!("the written head does not parse: {again:?}");
    };
    assert_eq!(again.method(), h.method());
    assert_eq!(again.target(), h.target());
    assert_eq!(again.framing(), h.framing());
    assert!(again.keep_alive());
    assert_eq!(again.upgrade(), h.upgrade());
    let named: Vec<Vec<u8>> = h
        .headers()
        .get_all(b"connection")
        .flat_map(|v| {
            portico_h1::tokens(v)
                .map(|t| t.to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, _) in again.headers().iter() {
        let lower = name.to_ascii_lowercase();
        let framing = lower == b"content-length" || lower == b"transfer-encoding";
        let handshake = h.upgrade() && (lower == b"upgrade" || lower == b"connection");
        if !framing && !handshake {
            assert!(
                !is_hop_by_hop(name),
                "hop-by-hop {:?} forwarded",
                String::from_utf8_lossy(name)
            );
            assert!(
                lower == b"host" || !named.contains(&lower),
                "{:?} named by Connection forwarded",
                String::from_utf8_lossy(name)
            );
        }
    }
}
