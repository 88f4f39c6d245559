//! Response flags and the local replies Portico sends itself: one short line of plain text,
//! or, for gRPC requests, HTTP 200 trailers-only with `grpc-status`. [`LocalReply`] is the one
//! description of such a reply (status, flag, gRPC status, whether an HTTP/1 connection closes
//! after it, message); the request path records its flag and renders it.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{BodyCut, RespBody};

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
    /// External authorization denied the request or failed (reference §9.1; Envoy's flag).
    UAEX,
    /// JWT missing or invalid (reference §9.2).
    JWT,
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
            Flag::UAEX => "UAEX",
            Flag::JWT => "JWT",
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
            Flag::UAEX => (StatusCode::FORBIDDEN, Some(7), "not authorized"),
            Flag::JWT => (StatusCode::UNAUTHORIZED, Some(16), "invalid token"),
        }
    }
}

/// A set of flags, kept as bits so recording one costs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u16);

const ALL: [Flag; 15] = [
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
    Flag::UAEX,
    Flag::JWT,
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

/// A reply Portico answers itself instead of the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalReply {
    pub status: StatusCode,
    /// The response flag the access log records.
    pub flag: Flag,
    /// The `grpc-status` a gRPC client gets (trailers-only, HTTP 200); `None`: gRPC clients
    /// get the plain-text reply too.
    pub grpc_status: Option<u8>,
    /// HTTP/1 connections close after the reply (an unread request body may follow).
    pub close: bool,
    /// The one-line message (text body, or `grpc-message`).
    pub message: &'static str,
}

impl LocalReply {
    /// The flag's own reply (its status, gRPC status and message).
    pub fn of(flag: Flag) -> LocalReply {
        let (status, grpc_status, message) = flag.reply();
        LocalReply {
            status,
            flag,
            grpc_status,
            close: false,
            message,
        }
    }

    /// An invalid or too large request (flag DPE): `status` with a one-line `message`, plain
    /// text even to gRPC clients; HTTP/1 connections close after it.
    pub fn reject(status: StatusCode, message: &'static str) -> LocalReply {
        LocalReply {
            status,
            flag: Flag::DPE,
            grpc_status: None,
            close: true,
            message,
        }
    }

    /// Shed by the overload manager: 503 (OM), `x-portico-overloaded`, HTTP/1 closes.
    pub fn shed() -> LocalReply {
        LocalReply::of(Flag::OM).closing()
    }

    /// A circuit breaker refused the request: 503 (UO) with `x-portico-overloaded`.
    pub fn overloaded() -> LocalReply {
        LocalReply::of(Flag::UO)
    }

    /// The route's idle timeout fired before the response started: 408 (gRPC 4), SI; HTTP/1
    /// closes (the request body may be unread).
    pub fn stream_idle() -> LocalReply {
        LocalReply::of(Flag::SI).closing()
    }

    /// The client's body ended early: 413 or 400 (DPE), 408 (SI), or 400 (DC) when the
    /// client went away. Every one but DC closes an HTTP/1 connection.
    pub fn body_cut(cut: BodyCut) -> LocalReply {
        match cut {
            BodyCut::TooLarge => {
                LocalReply::reject(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            }
            BodyCut::Malformed => {
                LocalReply::reject(StatusCode::BAD_REQUEST, "malformed request body")
            }
            BodyCut::Aborted => LocalReply::of(Flag::DC),
            BodyCut::Idle => LocalReply {
                message: "request body idle timeout",
                ..LocalReply::stream_idle()
            },
        }
    }

    /// The same reply, closing an HTTP/1 connection after it.
    pub fn closing(self) -> LocalReply {
        LocalReply {
            close: true,
            ..self
        }
    }

    /// Whether the reply says `x-portico-overloaded: true` (shed or breaker overflow).
    pub fn overload_header(&self) -> bool {
        matches!(self.flag, Flag::OM | Flag::UO)
    }

    /// The response: trailers-only for a gRPC request when the reply has a gRPC status, else
    /// one line of text; `connection: close` when it closes and the request is HTTP/1.
    pub fn render(&self, grpc: bool, http2: bool) -> Response<RespBody> {
        let mut resp = match self.grpc_status {
            Some(code) if grpc => grpc_reply(code, self.message),
            _ => text_reply(self.status, self.message),
        };
        let h = resp.headers_mut();
        if self.overload_header() {
            h.insert("x-portico-overloaded", HeaderValue::from_static("true"));
        }
        if self.close && !http2 {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// HTTP 200 trailers-only with `grpc-status` and `grpc-message`.
fn grpc_reply(code: u8, msg: &str) -> Response<RespBody> {
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
    resp
}

/// Builds the local reply for `flag`, with an optional more specific message.
pub fn local_reply(flag: Flag, grpc: bool, detail: Option<&str>) -> Response<RespBody> {
    let (status, grpc_status, msg) = flag.reply();
    let msg = detail.unwrap_or(msg);
    if grpc && let Some(code) = grpc_status {
        return grpc_reply(code, msg);
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

    /// The replies the request path sends for its special cases: status, flag, gRPC form,
    /// `connection: close` on HTTP/1 only, the overload header.
    #[test]
    fn local_reply_kinds() {
        let shed = LocalReply::shed();
        assert_eq!(
            (shed.status, shed.flag),
            (StatusCode::SERVICE_UNAVAILABLE, Flag::OM)
        );
        let r = shed.render(false, false);
        assert_eq!(r.headers()["x-portico-overloaded"], "true");
        assert_eq!(r.headers()["connection"], "close");
        assert!(
            shed.render(false, true)
                .headers()
                .get("connection")
                .is_none()
        );

        let uo = LocalReply::overloaded().render(true, false);
        assert_eq!(uo.status(), StatusCode::OK);
        assert_eq!(uo.headers()["grpc-status"], "14");
        assert_eq!(uo.headers()["x-portico-overloaded"], "true");
        assert!(uo.headers().get("connection").is_none());

        // A rejected request is plain text even to a gRPC client.
        let big = LocalReply::body_cut(BodyCut::TooLarge);
        assert_eq!(
            (big.status, big.flag),
            (StatusCode::PAYLOAD_TOO_LARGE, Flag::DPE)
        );
        let r = big.render(true, false);
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()["connection"], "close");

        let idle = LocalReply::body_cut(BodyCut::Idle);
        assert_eq!(
            (idle.status, idle.flag),
            (StatusCode::REQUEST_TIMEOUT, Flag::SI)
        );
        let r = idle.render(true, false);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert_eq!(r.headers()["grpc-message"], "request body idle timeout");

        let dc = LocalReply::body_cut(BodyCut::Aborted);
        assert_eq!((dc.flag, dc.close), (Flag::DC, false));
        assert_eq!(LocalReply::stream_idle().message, "stream idle timeout");
    }
}
