//! Synchronous readers for a whole downstream byte stream (pipelined requests and their
//! bodies) and for an upstream's answer, fed in arbitrary pieces. It is what the connection loop does, minus the
//! sockets: the tests and the fuzz targets use it to check that the verdict on a stream does
//! not depend on how it was split into reads.

use bytes::{Buf, BytesMut};

use crate::chunked::{BodyDecoder, Step};
use crate::error::H1Error;
use crate::framing::{Framing, RequestContext};
use crate::head::Limits;
use crate::request::RequestParser;
use crate::response::ResponseParser;

/// One request head as the transcript keeps it: method, target, framing, keep-alive,
/// upgrade.
pub type HeadSummary = (Vec<u8>, Vec<u8>, Framing, bool, bool);

/// Everything read from a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transcript {
    /// One entry per request head: method, target, framing, keep-alive, upgrade.
    pub heads: Vec<HeadSummary>,
    /// Each request's decoded body bytes, and its trailer lines (`name: value`).
    pub bodies: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    /// The error that stopped the stream, if any.
    pub error: Option<H1Error>,
    /// The stream stopped after a request the client said was its last (what follows is
    /// not read).
    pub stopped: bool,
}

/// Reads `parts` one after the other as consecutive reads of one connection.
pub fn run_requests(parts: &[&[u8]], limits: &Limits) -> Transcript {
    let mut t = Transcript::default();
    let mut buf = BytesMut::new();
    let mut parser = RequestParser::new(*limits);
    let mut body: Option<BodyDecoder> = None;
    for part in parts {
        buf.extend_from_slice(part);
        if let Err(e) = advance(&mut t, &mut buf, &mut parser, &mut body, limits) {
            t.error = Some(e);
            return t;
        }
        if t.stopped && body.is_none() {
            return t;
        }
    }
    t
}

fn advance(
    t: &mut Transcript,
    buf: &mut BytesMut,
    parser: &mut RequestParser,
    body: &mut Option<BodyDecoder>,
    limits: &Limits,
) -> Result<(), H1Error> {
    loop {
        let Some(decoder) = body else {
            let Some(head) = parser.parse(buf)? else {
                return Ok(());
            };
            t.heads.push((
                head.method().to_vec(),
                head.target().to_vec(),
                head.framing(),
                head.keep_alive(),
                head.upgrade(),
            ));
            t.bodies.push((Vec::new(), Vec::new()));
            *body = Some(BodyDecoder::new(head.framing(), limits));
            // Stop after a message the client said is its last. An upgrade request goes on
            // as HTTP/1 here: that is what happens when the upgrade is refused (only a 101
            // ends HTTP/1, and then the connection loop stops parsing).
            if !head.keep_alive() {
                t.stopped = true;
            }
            continue;
        };
        let (used, step) = decoder.decode(buf)?;
        let Some((data, trailers)) = t.bodies.last_mut() else {
            return Ok(());
        };
        match step {
            Step::Data(r) => data.extend_from_slice(&buf[r]),
            Step::Trailer(f) => {
                trailers.push(buf[f.name.start..f.value.end.max(f.name.end)].to_vec())
            }
            Step::End => {
                buf.advance(used);
                *body = None;
                if t.stopped {
                    return Ok(());
                }
                continue;
            }
            Step::NeedMore => {
                buf.advance(used);
                return Ok(());
            }
        }
        buf.advance(used);
    }
}

/// Everything read from an upstream's answer to one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseTranscript {
    /// Each head read (interim ones first): status, framing, keep-alive.
    pub heads: Vec<(u16, Framing, bool)>,
    /// The final response's decoded body and trailer lines.
    pub body: Vec<u8>,
    pub trailers: Vec<Vec<u8>>,
    /// The body ended by its framing (not by the end of the input).
    pub complete: bool,
    /// Bytes left after the body (a keep-alive connection's next answer, or junk).
    pub rest: usize,
    pub error: Option<H1Error>,
}

/// Reads `parts` as consecutive reads of an upstream connection answering one request
/// described by `req`; at the end of the input, a close-delimited body ends, any other
/// unfinished one is [`H1Error::IncompleteBody`].
pub fn run_response(parts: &[&[u8]], req: RequestContext, limits: &Limits) -> ResponseTranscript {
    let mut t = ResponseTranscript::default();
    let mut buf = BytesMut::new();
    let mut parser = ResponseParser::new(*limits);
    let mut body: Option<BodyDecoder> = None;
    let mut later = 0;
    for (i, part) in parts.iter().enumerate() {
        buf.extend_from_slice(part);
        if let Err(e) = advance_response(&mut t, &mut buf, &mut parser, &mut body, req, limits) {
            t.error = Some(e);
            return t;
        }
        if t.complete {
            later = parts[i + 1..].iter().map(|p| p.len()).sum();
            break;
        }
    }
    if !t.complete {
        match &body {
            Some(d) => t.error = d.finish().err(),
            None => t.error = Some(H1Error::IncompleteBody),
        }
    }
    // Only what follows a complete body counts as left over (a close-delimited body takes
    // everything).
    t.rest = if t.complete { buf.len() + later } else { 0 };
    t
}

fn advance_response(
    t: &mut ResponseTranscript,
    buf: &mut BytesMut,
    parser: &mut ResponseParser,
    body: &mut Option<BodyDecoder>,
    req: RequestContext,
    limits: &Limits,
) -> Result<(), H1Error> {
    loop {
        let Some(decoder) = body else {
            let Some(head) = parser.parse(buf, req)? else {
                return Ok(());
            };
            t.heads
                .push((head.status(), head.framing(), head.keep_alive()));
            if !head.is_interim() {
                *body = Some(BodyDecoder::new(head.framing(), limits));
            }
            continue;
        };
        let (used, step) = decoder.decode(buf)?;
        match step {
            Step::Data(r) => t.body.extend_from_slice(&buf[r]),
            Step::Trailer(f) => t
                .trailers
                .push(buf[f.name.start..f.value.end.max(f.name.end)].to_vec()),
            Step::End => {
                buf.advance(used);
                t.complete = true;
                return Ok(());
            }
            Step::NeedMore => {
                buf.advance(used);
                return Ok(());
            }
        }
        buf.advance(used);
    }
}
