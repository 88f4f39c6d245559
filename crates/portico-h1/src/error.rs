//! The one error type of the codec: every reason a message is refused, typed, with the status a
//! server answers it with and a short reason for the access log.
//!
//! The variants mirror the rules of the HTTP/1 gate the codec replaced (docs/security.md
//! "HTTP/1 rules"), so the log reasons and statuses stayed the same. Downstream (request) errors are the client's fault: 400 with the
//! `DPE` flag (431 for a head over the limits, 414 for a long target). Upstream (response)
//! errors are answered 502 by the proxy ([`H1Error::upstream_status`]).

use std::fmt;

/// Why a message (or its body) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum H1Error {
    /// A LF not preceded by CR in a head, chunk line or trailer (RFC 9112 §2.2).
    BareLineFeed,
    /// A CR not followed by LF (RFC 9112 §2.2).
    BareCarriageReturn,
    /// A header or trailer line starting with SP or HTAB (RFC 9112 §5.2).
    ObsFold,
    /// `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.1, §6.3 item 3).
    ContentLengthAndTransferEncoding,
    /// An invalid `Content-Length`, several that differ, or a name spelling it with `_`.
    BadContentLength,
    /// A `Transfer-Encoding` whose last coding is not `chunked`, that names `chunked` twice,
    /// that comes on HTTP/1.0, or a name spelling it with `_`.
    BadTransferEncoding,
    /// More than one `Host` (RFC 9112 §3.2).
    DuplicateHost,
    /// Invalid chunked framing: a bad chunk size or extension, chunk data not followed by
    /// CRLF, an over-long chunk line (RFC 9112 §7.1).
    BadChunk,
    /// A trailer line that is not a valid field line (RFC 9112 §7.1.2).
    BadTrailer,
    /// The trailer section is over its limit.
    TrailersTooLarge,
    /// The head is over the size limit (431).
    HeadTooLarge,
    /// The head has more fields than allowed (431).
    TooManyHeaders,
    /// The request target is over the length limit (414).
    UriTooLong,
    /// The request line is not `method SP target SP HTTP/1.x` (binary, TLS on a plain port).
    BadRequestLine,
    /// The status line is not `HTTP/1.x SP 3DIGIT SP reason`.
    BadStatusLine,
    /// An HTTP version other than 1.0 or 1.1.
    BadVersion,
    /// A header line with an invalid name or value.
    BadHeader,
    /// A `101` answer to a request that asked for no upgrade.
    UnexpectedSwitch,
    /// The connection ended before the body did.
    IncompleteBody,
    /// The body is over the limit the caller set (413).
    BodyTooLarge,
}

impl H1Error {
    /// The status a server answers a request refused for this reason with (the proxy also
    /// sets the `DPE` flag and closes the connection).
    pub fn status(self) -> u16 {
        match self {
            H1Error::HeadTooLarge | H1Error::TooManyHeaders => 431,
            H1Error::UriTooLong => 414,
            H1Error::BodyTooLarge => 413,
            _ => 400,
        }
    }

    /// The status the proxy answers downstream when an upstream response was refused for this
    /// reason (RFC 9112 §6.3: a proxy discards an invalid response and answers 502).
    pub fn upstream_status(self) -> u16 {
        502
    }

    /// A short reason for the access log. The gate's wording is kept where the gate had
    /// the rule.
    pub fn as_str(self) -> &'static str {
        match self {
            H1Error::BareLineFeed => "bare LF",
            H1Error::BareCarriageReturn => "bare CR",
            H1Error::ObsFold => "obs-fold header line",
            H1Error::ContentLengthAndTransferEncoding => "Content-Length with Transfer-Encoding",
            H1Error::BadContentLength => "invalid or differing Content-Length",
            H1Error::BadTransferEncoding => {
                "Transfer-Encoding not ending in chunked, chunked twice, or on HTTP/1.0"
            }
            H1Error::DuplicateHost => "several Host headers",
            H1Error::BadChunk => "invalid chunked framing",
            H1Error::BadTrailer => "invalid trailer field",
            H1Error::TrailersTooLarge => "trailer section too large",
            H1Error::HeadTooLarge => "request head too large",
            H1Error::TooManyHeaders => "too many header fields",
            H1Error::UriTooLong => "request target too long",
            H1Error::BadRequestLine => "invalid request line",
            H1Error::BadStatusLine => "invalid status line",
            H1Error::BadVersion => "unsupported HTTP version",
            H1Error::BadHeader => "invalid header field",
            H1Error::UnexpectedSwitch => "101 without an upgrade request",
            H1Error::IncompleteBody => "connection closed inside the body",
            H1Error::BodyTooLarge => "body too large",
        }
    }
}

impl fmt::Display for H1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for H1Error {}
