//! External authorization over gRPC (reference §9.1, `proto: grpc`): one unary call of Envoy's
//! `envoy.service.auth.v3.Authorization/Check` (messages from the `envoy-types` crate,
//! encoded with prost), carried by Portico's own upstream client (`call.rs`: the worker's
//! pooled HTTP/2 connection). The request's attributes go in (method, path with query, host,
//! scheme, protocol, headers, request id, source address, the Mapping's
//! `auth_context_extensions`); an OK answer's header mutations are applied to the upstream
//! request, a denial's status (default 403), headers and body go back to the client. A gRPC
//! error status, an unreadable answer, a connect failure or the timeout is an error.

use std::collections::HashMap;

use ::http::header::{self, HeaderName, HeaderValue};
use ::http::{HeaderMap, Method, Request, Response, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValueOption, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer};
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context, check_response,
};
use portico_config::snapshot::{AuthServiceConf, Route};
use prost::Message as _;

use super::call::{self, CallError};
use super::outcome::{Mutation, OkChanges, Outcome};
use crate::body::{ReqBody, RespBody};
use crate::headers;
use crate::request::ConnInfo;
use crate::upstream::UpstreamState;

/// The method's path.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Asks the gRPC auth service about `req`.
pub async fn check<B>(
    conf: &AuthServiceConf,
    up: &UpstreamState,
    route: &Route,
    req: &Request<B>,
    authority: &str,
    conn: &ConnInfo,
    body: Option<Bytes>,
) -> Outcome {
    let msg = check_request(route, req, authority, conn, body);
    let mut framed = BytesMut::with_capacity(5 + msg.encoded_len());
    framed.put_u8(0);
    framed.put_u32(msg.encoded_len() as u32);
    if msg.encode(&mut framed).is_err() {
        return Outcome::Error(CallError::Exchange);
    }
    let mut call_req = Request::new(ReqBody::Full(Some(framed.freeze())));
    *call_req.method_mut() = Method::POST;
    *call_req.uri_mut() = ::http::Uri::from_static(CHECK_PATH);
    let h = call_req.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    // At most 8 digits (gRPC's rule).
    let ms = conf.timeout.as_millis().min(99_999_999);
    if let Ok(t) = HeaderValue::from_str(&format!("{ms}m")) {
        h.insert("grpc-timeout", t);
    }
    let authority = service_authority(up);
    let answer = match call::call(up, &authority, call_req, conf.timeout, MAX_ANSWER_BYTES).await {
        Ok(a) => a,
        Err(e) => return Outcome::Error(e),
    };
    let status = grpc_status(&answer.headers, answer.trailers.as_ref());
    if !answer.status.is_success() || status != Some(0) {
        tracing::debug!(http = answer.status.as_u16(), grpc = ?status, "auth service gRPC error");
        return Outcome::Error(CallError::Exchange);
    }
    let Some(resp) = decode(&answer.body) else {
        return Outcome::Error(CallError::Exchange);
    };
    verdict(resp)
}

/// The `:authority` of the auth service: its DNS name or first address (`host:port`).
fn service_authority(up: &UpstreamState) -> HeaderValue {
    use portico_config::snapshot::EndpointSource;
    let text = match &up.conf.endpoints {
        EndpointSource::Dns { host, port, .. } if host.contains(':') => format!("[{host}]:{port}"),
        EndpointSource::Dns { host, port, .. } => format!("{host}:{port}"),
        EndpointSource::Static(list) => list
            .first()
            .map_or_else(|| up.conf.name.clone(), |e| e.address.clone()),
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("auth"))
}

/// `grpc-status` from the trailers, or the headers of a trailers-only answer.
fn grpc_status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<u32> {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// One length-prefixed, uncompressed message.
fn decode(body: &[u8]) -> Option<CheckResponse> {
    let (head, rest) = body.split_at_checked(5)?;
    if head[0] != 0 {
        return None;
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    CheckResponse::decode(rest.get(..len)?).ok()
}

/// The check's attributes.
fn check_request<B>(
    route: &Route,
    req: &Request<B>,
    authority: &str,
    conn: &ConnInfo,
    body: Option<Bytes>,
) -> CheckRequest {
    let mut headers_map: HashMap<String, String> = HashMap::new();
    for (k, v) in req.headers() {
        let Ok(v) = v.to_str() else { continue };
        headers_map
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    }
    headers_map.insert(":authority".into(), authority.to_string());
    headers_map.insert(":method".into(), req.method().to_string());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    headers_map.insert(":path".into(), path.clone());
    let scheme = if conn.tls { "https" } else { "http" };
    let id = req
        .headers()
        .get(&headers::X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let protocol = match req.version() {
        ::http::Version::HTTP_2 => "HTTP/2",
        ::http::Version::HTTP_3 => "HTTP/3",
        ::http::Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let size = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(-1);
    // `include_body`: text as `body`, anything else as `raw_body`.
    let (body, raw_body) = match body {
        Some(b) => match String::from_utf8(b.to_vec()) {
            Ok(text) => (text, Vec::new()),
            Err(e) => (String::new(), e.into_bytes()),
        },
        None => (String::new(), Vec::new()),
    };
    let http = HttpRequest {
        id,
        body,
        raw_body,
        method: req.method().to_string(),
        headers: headers_map,
        path,
        host: authority.to_string(),
        scheme: scheme.to_string(),
        protocol: protocol.to_string(),
        size,
        ..HttpRequest::default()
    };
    let source = Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: conn.peer.ip().to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    conn.peer.port(),
                ))),
                ..SocketAddress::default()
            })),
        }),
        ..Peer::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            request: Some(attribute_context::Request {
                time: None,
                http: Some(http),
            }),
            context_extensions: route.auth.context_extensions.iter().cloned().collect(),
            ..AttributeContext::default()
        }),
    }
}

/// What the answer says.
fn verdict(resp: CheckResponse) -> Outcome {
    let ok = resp.status.as_ref().is_none_or(|s| s.code == 0);
    match (ok, resp.http_response) {
        (true, Some(check_response::HttpResponse::OkResponse(okr))) => {
            let mut ch = OkChanges::default();
            for name in &okr.headers_to_remove {
                if let Ok(n) = HeaderName::from_bytes(name.as_bytes()) {
                    ch.request.push(Mutation::Remove(n));
                }
            }
            ch.request.extend(okr.headers.iter().filter_map(mutation));
            ch.response
                .extend(okr.response_headers_to_add.iter().filter_map(mutation));
            ch.query_set = okr
                .query_parameters_to_set
                .into_iter()
                .map(|q| (q.key, q.value))
                .collect();
            ch.query_remove = okr.query_parameters_to_remove;
            Outcome::Mutate(Box::new(ch))
        }
        (true, _) => Outcome::Allow(Vec::new()),
        (false, Some(check_response::HttpResponse::DeniedResponse(d))) => {
            let status = d
                .status
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .filter(|c| *c != StatusCode::OK && c.as_u16() >= 200)
                .unwrap_or(StatusCode::FORBIDDEN);
            let mut out = Response::new(RespBody::full(Bytes::from(d.body)));
            *out.status_mut() = status;
            for h in &d.headers {
                if let Some(Mutation::Set(n, v, append)) = mutation(h) {
                    if append {
                        out.headers_mut().append(n, v);
                    } else {
                        out.headers_mut().insert(n, v);
                    }
                }
            }
            headers::strip_hop_by_hop(out.headers_mut());
            out.headers_mut().remove(header::CONTENT_LENGTH);
            Outcome::Deny(Box::new(out))
        }
        (false, _) => {
            let mut out = Response::new(RespBody::empty());
            *out.status_mut() = StatusCode::FORBIDDEN;
            Outcome::Deny(Box::new(out))
        }
    }
}

/// `HeaderValueOption` as a mutation: `append` (deprecated; false when unset, as ext_authz
/// defines it) or `append_action`. Older auth servers still send `append`, so it is read.
#[allow(deprecated)]
fn mutation(h: &HeaderValueOption) -> Option<Mutation> {
    let hv = h.header.as_ref()?;
    let name = HeaderName::from_bytes(hv.key.as_bytes()).ok()?;
    let value = if hv.raw_value.is_empty() {
        HeaderValue::from_str(&hv.value).ok()?
    } else {
        HeaderValue::from_bytes(&hv.raw_value).ok()?
    };
    if let Some(a) = h.append {
        return Some(Mutation::Set(name, value, a.value));
    }
    Some(match h.append_action {
        1 => Mutation::AddIfAbsent(name, value),
        3 => Mutation::OverwriteIfExists(name, value),
        // 0 (APPEND_IF_EXISTS_OR_ADD) with `append` unset: ext_authz's default is to replace.
        _ => Mutation::Set(name, value, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeader;
    use envoy_types::pb::envoy::service::auth::v3::{DeniedHttpResponse, OkHttpResponse};
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::rpc::Status;

    fn opt(k: &str, v: &str, action: i32) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeader {
                key: k.into(),
                value: v.into(),
                raw_value: Vec::new(),
            }),
            append_action: action,
            ..HeaderValueOption::default()
        }
    }

    #[test]
    fn ok_answer_mutates_headers() {
        let resp = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    opt("x-user", "alice", 0),
                    opt("x-keep", "new", 1),
                    opt("x-only", "set", 3),
                ],
                headers_to_remove: vec!["x-drop".into()],
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        };
        let Outcome::Mutate(ch) = verdict(resp) else {
            panic!("not ok")
        };
        assert!(ch.response.is_empty() && ch.query_set.is_empty() && ch.query_remove.is_empty());
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("spoof"));
        h.insert("x-keep", HeaderValue::from_static("old"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        super::super::outcome::apply(&mut h, ch.request);
        assert_eq!(h["x-user"], "alice");
        assert_eq!(h.get_all("x-user").iter().count(), 1);
        assert_eq!(h["x-keep"], "old");
        assert!(h.get("x-only").is_none());
        assert!(h.get("x-drop").is_none());
    }

    #[test]
    fn ok_answer_carries_response_headers_and_query_changes() {
        use envoy_types::pb::envoy::config::core::v3::QueryParameter;
        let resp = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                response_headers_to_add: vec![opt("x-auth-by", "ext", 0)],
                query_parameters_to_set: vec![QueryParameter {
                    key: "tenant".into(),
                    value: "t1".into(),
                }],
                query_parameters_to_remove: vec!["token".into()],
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        };
        let Outcome::Mutate(ch) = verdict(resp) else {
            panic!("not ok")
        };
        let mut h = HeaderMap::new();
        super::super::outcome::apply(&mut h, ch.response);
        assert_eq!(h["x-auth-by"], "ext");
        assert_eq!(ch.query_set, [("tenant".to_string(), "t1".to_string())]);
        assert_eq!(ch.query_remove, ["token"]);
    }

    #[test]
    fn denial_has_its_status_headers_and_body() {
        let resp = CheckResponse {
            status: Some(Status {
                code: 7,
                ..Status::default()
            }),
            http_response: Some(check_response::HttpResponse::DeniedResponse(
                DeniedHttpResponse {
                    status: Some(HttpStatus { code: 418 }),
                    headers: vec![opt("x-why", "teapot", 0)],
                    body: "no tea".into(),
                },
            )),
            ..CheckResponse::default()
        };
        let Outcome::Deny(r) = verdict(resp) else {
            panic!("not denied")
        };
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers()["x-why"], "teapot");
    }

    #[test]
    fn framed_answer_decodes() {
        let resp = CheckResponse::default();
        let mut b = vec![0u8];
        b.extend_from_slice(&(resp.encoded_len() as u32).to_be_bytes());
        resp.encode(&mut b).expect("encode");
        assert!(decode(&b).is_some());
        assert!(decode(&[1, 0, 0, 0, 0]).is_none());
        assert!(decode(&[0, 0]).is_none());
    }
}
