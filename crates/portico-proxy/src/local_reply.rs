//! Response flags and the local replies Portico sends itself (CONTRACT §5): one short line of
//! plain text, or, for gRPC requests, HTTP 200 trailers-only with `grpc-status`.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::RespBody;

/// Envoy-style response flags, as written in the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    /// No route.
    NR,
    /// No healthy endpoint.
    UH,
    /// Circuit breaker overflow.
    UO,
    /// Connect failure.
    UF,
    /// Upstream reset / protocol error.
    UC,
    /// Deadline reached.
    UT,
    /// Rate limited.
    RL,
    /// Rate-limit service error (failed open or closed).
    RLSE,
    /// Retries exhausted.
    URX,
    /// Downstream closed.
    DC,
    /// Downstream protocol error (invalid or too large request).
    DPE,
    /// Stream idle timeout.
    SI,
    /// Shed by the overload manager (Envoy's flag of the same name).
    OM,
}

impl Flag {
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::NR => "NR",
            Flag::UH => "UH",
            Flag::UO => "UO",
            Flag::UF => "UF",
            Flag::UC => "UC",
            Flag::UT => "UT",
            Flag::RL => "RL",
            Flag::RLSE => "RLSE",
            Flag::URX => "URX",
            Flag::DC => "DC",
            Flag::DPE => "DPE",
            Flag::SI => "SI",
            Flag::OM => "OM",
        }
    }

    /// The HTTP status, gRPC status and one-line message of this flag's local reply.
    pub fn reply(self) -> (StatusCode, Option<u8>, &'static str) {
        match self {
            Flag::NR => (StatusCode::NOT_FOUND, Some(12), "no route"),
            Flag::UH => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(14),
                "no healthy upstream",
            ),
            Flag::UO => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(14),
                "upstream overloaded",
            ),
            Flag::UF => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(14),
                "upstream connect failure",
            ),
            Flag::UC => (
                StatusCode::BAD_GATEWAY,
                Some(14),
                "upstream reset or protocol error",
            ),
            Flag::UT => (StatusCode::GATEWAY_TIMEOUT, Some(4), "deadline exceeded"),
            Flag::RL | Flag::RLSE => (StatusCode::TOO_MANY_REQUESTS, Some(8), "rate limited"),
            Flag::URX => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(14),
                "retries exhausted",
            ),
            Flag::DC => (StatusCode::BAD_REQUEST, None, "downstream closed"),
            Flag::DPE => (StatusCode::BAD_REQUEST, None, "invalid request"),
            Flag::SI => (StatusCode::REQUEST_TIMEOUT, Some(4), "stream idle timeout"),
            Flag::OM => (StatusCode::SERVICE_UNAVAILABLE, Some(14), "overloaded"),
        }
    }
}

/// A set of flags, kept as bits so recording one costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u16);

const ALL: [Flag; 13] = [
    Flag::NR,
    Flag::UH,
    Flag::UO,
    Flag::UF,
    Flag::UC,
    Flag::UT,
    Flag::RL,
    Flag::RLSE,
    Flag::URX,
    Flag::DC,
    Flag::DPE,
    Flag::SI,
    Flag::OM,
];

impl Flags {
    pub fn insert(&mut self, f: Flag) {
        self.0 |= 1 << (f as u16);
    }
    pub fn contains(self, f: Flag) -> bool {
        self.0 & (1 << (f as u16)) != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Comma-separated, `-` when none (the access log's form).
    pub fn write_to(self, out: &mut String) {
        if self.is_empty() {
            out.push('-');
            return;
        }
        let mut first = true;
        for f in ALL {
            if self.contains(f) {
                if !first {
                    out.push(',');
                }
                out.push_str(f.as_str());
                first = false;
            }
        }
    }
}

/// Is this a gRPC request (content-type `application/grpc*`)?
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Builds the local reply for `flag`, with an optional more specific message.
pub fn local_reply(flag: Flag, grpc: bool, detail: Option<&str>) -> Response<RespBody> {
    let (status, grpc_status, msg) = flag.reply();
    let msg = detail.unwrap_or(msg);
    if grpc && let Some(code) = grpc_status {
        let mut resp = Response::new(RespBody::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from(u16::from(code)));
        if let Ok(v) = HeaderValue::from_str(msg) {
            h.insert("grpc-message", v);
        }
        return resp;
    }
    text_reply(status, msg)
}

/// A plain-text reply of one line.
pub fn text_reply(status: StatusCode, msg: &str) -> Response<RespBody> {
    let mut body = String::with_capacity(msg.len() + 1);
    body.push_str(msg);
    body.push('\n');
    let mut resp = Response::new(RespBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_format() {
        let mut f = Flags::default();
        let mut s = String::new();
        f.write_to(&mut s);
        assert_eq!(s, "-");
        f.insert(Flag::UF);
        f.insert(Flag::URX);
        s.clear();
        f.write_to(&mut s);
        assert_eq!(s, "UF,URX");
    }

    #[test]
    fn grpc_local_reply_is_trailers_only() {
        let r = local_reply(Flag::NR, true, None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "12");
        let r = local_reply(Flag::NR, false, None);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
