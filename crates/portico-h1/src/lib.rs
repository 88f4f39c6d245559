//! Portico's HTTP/1.1 codec: the one parser that decides HTTP/1 framing, for the security
//! gate and the proxy alike.
//!
//! Written by hand instead of using hyper's HTTP/1 machinery for two reasons. Cost: hyper's
//! server and client were ~36k of 42.5k instructions per proxied request; here a head is
//! scanned once, tokenized once by `httparse`, kept as offsets into the connection's buffer
//! (no per-header allocation, no hashing) and forwarded by copying its unchanged lines.
//! Safety: a gate in front of another parser is a parser differential waiting to happen
//! (request smuggling); with one parser, what is checked is what is forwarded.
//!
//! - [`RequestParser`] / [`RequestHead`]: downstream request heads, strict (docs/security.md,
//!   "HTTP/1 rules"); every refusal is an [`H1Error`] with its status.
//! - [`ResponseParser`] / [`ResponseHead`]: upstream response heads, with the response
//!   framing of RFC 9112 §6.3.
//! - [`Framing`], [`keep_alive`]: the framing decision both sides share.
//! - [`BodyDecoder`], [`ChunkedDecoder`], chunked encoding helpers: bodies.
//! - [`write_request_head`], [`write_response_head`]: heads for the other side, hop-by-hop
//!   fields dropped in one pass.
//! - [`io`]: async helpers over `AsyncRead + AsyncWrite` (read a head, stream a body).
//!
//! How a connection loop uses it (downstream side; the upstream side mirrors it): keep one
//! `BytesMut` and one [`RequestParser`] per connection; [`io::read_request_head`] (or
//! [`RequestParser::parse`] on bytes you read yourself); on `Err(e)` answer `e.status()` with
//! the `DPE` flag and close, reading nothing more as HTTP; otherwise route on
//! [`RequestHead::method`], [`RequestHead::target`], [`RequestHead::host`] and
//! [`RequestHead::headers`], write the upstream head with [`write_request_head`] and
//! `BodyOut::from_framing(head.framing())`, stream the body with [`io::copy_body`] and a
//! [`BodyDecoder`] for [`RequestHead::framing`], read the answer with
//! [`io::read_response_head`] and [`RequestHead::context`] (forwarding interim 1xx heads),
//! and so on back; on a [`Framing::Tunnel`] answer switch to [`io::tunnel`]. Between
//! requests, [`io::shrink_idle`] returns a large buffer's memory. The HTTP/2 preface check,
//! timeouts and lingering close stay in the connection layer.
//!
//! Allocation: parsing a head allocates once (the field offsets, one `Vec`); the head's
//! bytes are split off the connection buffer without copying. Body decoding allocates
//! nothing.
#![forbid(unsafe_code)]

mod chunked;
pub mod drive;
mod error;
mod framing;
mod head;
pub mod io;
mod request;
mod response;
mod write;

pub use chunked::{
    BodyDecoder, CRLF, ChunkedDecoder, Step, TrailerField, encode_chunk_header, encode_last_chunk,
};
pub use error::H1Error;
pub use framing::{
    FieldSummary, Framing, RequestContext, Version, keep_alive, request_framing, response_framing,
    summarize,
};
pub use head::{Field, Fields, Limits, MAX_HEADERS_CAP, Span, tokens};
pub use request::{RequestHead, RequestParser, parse_request_bytes};
pub use response::{ResponseHead, ResponseParser};
pub use write::{BodyOut, is_hop_by_hop, write_request_head, write_response_head};
