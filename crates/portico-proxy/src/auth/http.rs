//! External authorization over HTTP (reference §9.1, `proto: http`, Emissary's protocol):
//! the check request is the client's method, `path_prefix` + the original path and query,
//! and an allow-list of the client's headers (never its body unless `include_body`). A 2xx
//! answer lets the request through with the answer's `allowed_authorization_headers`; any
//! other answer goes back to the client as it is, less its hop-by-hop headers.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use portico_config::snapshot::AuthServiceConf;

use super::call::{self, Answer, CallError};
use super::outcome::Outcome;
use crate::body::{ReqBody, RespBody};
use crate::headers;
use crate::request::ConnInfo;
use crate::upstream::UpstreamState;

/// Largest auth answer body read (a longer one is an auth service error).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks the HTTP auth service about `req` (`authority`: the request's; `body`: what
/// `include_body` lets through).
pub async fn check<B>(
    conf: &AuthServiceConf,
    up: &UpstreamState,
    req: &Request<B>,
    authority: &str,
    conn: &ConnInfo,
    body: Option<Bytes>,
) -> Outcome {
    let check = match check_request(conf, req, authority, conn, body) {
        Some(c) => c,
        None => return Outcome::Error(CallError::Exchange),
    };
    let host = HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("localhost"));
    match call::call(up, &host, check, conf.timeout, MAX_ANSWER_BYTES).await {
        Ok(a) if a.status.is_success() => Outcome::Allow(allowed_headers(conf, &a.headers)),
        Ok(a) => Outcome::Deny(Box::new(denial(a))),
        Err(e) => Outcome::Error(e),
    }
}

/// The check request: method, path_prefix + path (query kept), the allowed headers.
fn check_request<B>(
    conf: &AuthServiceConf,
    req: &Request<B>,
    authority: &str,
    conn: &ConnInfo,
    body: Option<Bytes>,
) -> Option<Request<ReqBody>> {
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut path = String::with_capacity(conf.path_prefix.len() + pq.len());
    path.push_str(&conf.path_prefix);
    path.push_str(pq);
    let mut out = Request::new(match body {
        Some(b) if !b.is_empty() => ReqBody::Full(Some(b)),
        _ => ReqBody::Empty,
    });
    *out.method_mut() = req.method().clone();
    *out.uri_mut() = path.parse().ok()?;
    let h = out.headers_mut();
    for name in &conf.request_headers {
        if name == header::HOST {
            if let Ok(v) = HeaderValue::from_str(authority) {
                h.insert(header::HOST, v);
            }
            continue;
        }
        for v in req.headers().get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    // As the upstream will see them (`request/prepare.rs` adds the same).
    if conf.request_headers.contains(&headers::X_FORWARDED_FOR) {
        headers::append_forwarded_for(h, &conn.peer_ip);
    }
    if conf.request_headers.contains(&headers::X_FORWARDED_PROTO)
        && !(conn.listener.trust_forwarded && h.contains_key(&headers::X_FORWARDED_PROTO))
    {
        let proto = if conn.tls { "https" } else { "http" };
        h.insert(
            headers::X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(proto),
        );
    }
    for (k, v) in &conf.add_headers {
        h.insert(k.clone(), v.clone());
    }
    Some(out)
}

/// The `allowed_authorization_headers` of an allowing answer.
fn allowed_headers(conf: &AuthServiceConf, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in &conf.authorization_headers {
        for v in answer.get_all(name) {
            out.push((name.clone(), v.clone()));
        }
    }
    out
}

/// A denying answer as the client gets it: status, headers less hop-by-hop ones, body.
fn denial(a: Answer) -> Response<RespBody> {
    let mut headers = a.headers;
    headers::strip_hop_by_hop(&mut headers);
    headers.remove(header::CONTENT_LENGTH);
    let mut resp = Response::new(RespBody::full(a.body));
    *resp.status_mut() = a.status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_config::snapshot::{AUTH_DEFAULT_HEADERS, AuthProto};
    use std::sync::Arc;
    use std::time::Duration;

    fn conf() -> AuthServiceConf {
        let mut request_headers: Vec<HeaderName> = AUTH_DEFAULT_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .collect();
        request_headers.push(HeaderName::from_static("x-tenant"));
        AuthServiceConf {
            name: "auth".into(),
            upstream: 0,
            proto: AuthProto::Http,
            path_prefix: "/extauth".into(),
            timeout: Duration::from_secs(1),
            request_headers,
            authorization_headers: vec![HeaderName::from_static("x-user-id")],
            include_body: None,
            failure_mode_allow: false,
            status_on_error: 403,
            add_headers: vec![(
                HeaderName::from_static("x-added"),
                HeaderValue::from_static("yes"),
            )],
        }
    }

    fn conn() -> ConnInfo {
        let listener = portico_config::load(&[portico_config::ConfigSource::Inline {
            name: "t.yaml".into(),
            text: portico_config::DEFAULT_CONFIG.into(),
            base_dir: std::env::temp_dir(),
        }])
        .snapshot
        .expect("default config")
        .listeners[0]
            .clone();
        ConnInfo::new(
            "10.0.0.9:5555".parse().expect("addr"),
            Arc::new(listener),
            true,
            None,
        )
    }

    #[test]
    fn check_request_carries_the_allow_list_only() {
        let req = Request::builder()
            .method("PUT")
            .uri("/api/x?a=1")
            .header("authorization", "Bearer t")
            .header("cookie", "c=1")
            .header("x-tenant", "acme")
            .header("x-secret", "no")
            .header("x-forwarded-for", "1.2.3.4")
            .body(())
            .expect("req");
        let out = check_request(&conf(), &req, "api.example.com", &conn(), None).expect("req");
        assert_eq!(out.method(), "PUT");
        assert_eq!(out.uri(), "/extauth/api/x?a=1");
        let h = out.headers();
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["cookie"], "c=1");
        assert_eq!(h["x-tenant"], "acme");
        assert_eq!(h["host"], "api.example.com");
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-added"], "yes");
        assert!(h.get("x-secret").is_none());
    }

    #[test]
    fn denial_keeps_status_headers_body_but_hop_by_hop() {
        let mut headers = HeaderMap::new();
        headers.insert("www-authenticate", HeaderValue::from_static("Basic"));
        headers.insert("connection", HeaderValue::from_static("close"));
        headers.insert("content-length", HeaderValue::from_static("7"));
        let resp = denial(Answer {
            status: http::StatusCode::UNAUTHORIZED,
            headers,
            body: Bytes::from_static(b"go away"),
            trailers: None,
        });
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["www-authenticate"], "Basic");
        assert!(resp.headers().get("connection").is_none());
    }

    #[test]
    fn only_allowed_authorization_headers_are_copied() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("42"));
        headers.insert("x-other", HeaderValue::from_static("no"));
        let got = allowed_headers(&conf(), &headers);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "x-user-id");
    }
}
