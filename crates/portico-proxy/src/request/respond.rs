//! The respond phase: the answers a route gives itself (`direct_response`, `redirect`), and
//! the upstream's response on its way back — headers rewritten, body streamed (compressed
//! when the route says so) with the log phase ([`Done`]) attached to its end.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use portico_config::request_semantics::host_of;
use portico_config::snapshot::{DirectResponseConf, PathMatch, RedirectConf, Route};

use super::attempt::Answer;
use super::head::Head;
use super::record::{Done, Record};
use crate::body::RespBody;
use crate::headers;
use crate::request::compress::{self, Encoder};
use crate::request::upgrade;
use crate::state::Proxy;
use crate::upstream::Held;

/// A `direct_response` route's answer.
pub(crate) fn direct_response(d: &DirectResponseConf, route: &Route) -> Response<RespBody> {
    let mut resp = Response::new(RespBody::full(d.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
    let ct = d
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static("text/plain"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    headers::apply_rules(
        resp.headers_mut(),
        &route.remove_response_headers,
        &route.add_response_headers,
    );
    resp
}

/// A `redirect` route's answer: default 301; the query is kept; `https: true` keeps the host
/// without its port unless `port` is given. `tls`: the request came over TLS.
pub(crate) fn redirect(
    r: &RedirectConf,
    route: &Route,
    head: &Head<'_>,
    tls: bool,
) -> Response<RespBody> {
    let authority = head.authority;
    let scheme = if r.https || tls { "https" } else { "http" };
    let mut host: String = match &r.host {
        Some(h) => h.clone(),
        None if r.https => host_of(authority).into_owned(),
        None => authority.to_string(),
    };
    if let Some(p) = r.port {
        let bare = host_of(&host).into_owned();
        host = format!("{bare}:{p}");
    }
    let path = head.path();
    let new_path: String = if let Some(p) = &r.path {
        p.clone()
    } else if let Some(to) = &r.prefix {
        match &route.path {
            PathMatch::Prefix { prefix, .. } if path.len() >= prefix.len() => {
                format!("{to}{}", &path[prefix.len()..])
            }
            _ => to.clone(),
        }
    } else {
        path.to_string()
    };
    let mut location = format!("{scheme}://{host}{new_path}");
    if let Some(q) = head.query() {
        location.push('?');
        location.push_str(q);
    }
    let status = StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    headers::apply_rules(
        resp.headers_mut(),
        &route.remove_response_headers,
        &route.add_response_headers,
    );
    resp
}

/// What the respond phase needs from the request.
pub(crate) struct RespondCtx {
    /// A WebSocket (or other) upgrade the route allowed.
    pub upgrade: Option<upgrade::Upgrade>,
    pub deadline: Option<tokio::time::Instant>,
    pub downstream_version: Version,
    /// Method and the headers compression looks at, when the route compresses.
    pub compress_req: Option<(http::Method, http::HeaderMap)>,
    /// Breaker slots (request, retry) held until the response ends.
    pub held: (Held, Option<Held>),
}

/// Rewrites the upstream's response headers and streams its body back.
pub(crate) fn upstream_response(
    proxy: Arc<Proxy>,
    mut rec: Record,
    route: &Route,
    answer: Answer,
    ctx: RespondCtx,
) -> Response<RespBody> {
    let RespondCtx {
        upgrade,
        deadline,
        downstream_version,
        compress_req,
        held,
    } = ctx;
    let Answer { resp, active } = answer;
    rec.received.mark_responded();
    let (mut rparts, mut rbody) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rparts.headers);
    headers::normalize_content_length(&mut rparts.headers);
    if let Some(u) = upgrade {
        // A 101 takes the upstream connection out of the body for the tunnel.
        u.tunnel(&mut rparts, &mut rbody, route.idle_timeout);
    }
    headers::apply_rules(
        &mut rparts.headers,
        &route.remove_response_headers,
        &route.add_response_headers,
    );
    if downstream_version < Version::HTTP_2 {
        rparts.version = Version::HTTP_11;
    }
    rec.status = rparts.status.as_u16();
    let done = Done {
        proxy,
        rec,
        _active: active,
        _held: held,
    };
    let mut body = RespBody::upstream(rbody, deadline, route.idle_timeout);
    if let (Some(conf), Some((method, req_headers))) = (&route.compression, &compress_req)
        && let Some(coding) =
            compress::choose(conf, method, req_headers, rparts.status, &rparts.headers)
        && let Ok(enc) = Encoder::new(coding)
    {
        compress::mark(&mut rparts.headers, coding);
        body = body.compressed(enc);
    }
    Response::from_parts(rparts, body.with_finish(Box::new(done)))
}
