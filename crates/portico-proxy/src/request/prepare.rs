//! The upstream request, made from the client's: hop-by-hop headers stripped, forwarding
//! headers added, the route's header rules and host/path rewrites applied, the form fitted
//! to the upstream's protocol; and the body wrapped (counted, capped, idle-cut), or read
//! whole first when a retry or a mirror copy may need it again.
//!
//! The client's body is a `ClientBody` (what the server connection hands over: the own
//! HTTP/1 server's or hyper's), wrapped as-is into [`Inbound`]; the upstream request is an
//! `http::Request<ReqBody>`, which both upstream clients send.

use std::sync::Arc;

use crate::reqbody::ClientBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Method, Request, Uri, Version};
use portico_config::request_semantics::rewrite_path;
use portico_config::snapshot::{Route, UpstreamProtocol};
use tokio::time::Instant;

use super::attempt::{AttemptError, Elapsed, within};
use super::head::ConnInfo;
use super::record::Record;
use crate::body::{BodyCut, Inbound, ReqBody};
use crate::headers;
use crate::request::compress;
use crate::request::shadow;
use crate::request::upgrade;
use crate::upstream::UpstreamState;

/// Largest request body buffered so it can be replayed on a retry (or mirrored).
const REPLAY_LIMIT: usize = 64 * 1024;

/// Request line and headers, kept to build the request again for a retry or a mirror copy.
pub(crate) struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Template {
    /// The request again, when its body can be replayed.
    pub fn rebuild(&self, replay: Option<&Bytes>) -> Option<Request<ReqBody>> {
        let body = match replay {
            Some(b) if b.is_empty() => ReqBody::Empty,
            Some(b) => ReqBody::Full(Some(b.clone())),
            None => return None,
        };
        let mut r = Request::new(body);
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        *r.headers_mut() = self.headers.clone();
        Some(r)
    }
}

/// The upstream request and what the later phases need from the client's.
pub(crate) struct Prepared {
    pub req: Request<ReqBody>,
    /// Kept with a retry policy or a mirror copy to make.
    pub template: Option<Template>,
    /// The whole body, when it was read first (empty bodies count).
    pub replay: Option<Bytes>,
    pub upgrade: Option<upgrade::Upgrade>,
    /// Method and the headers compression looks at, when the route compresses.
    pub compress_req: Option<(Method, HeaderMap)>,
    /// ring_hash/maglev: the request's key, and a Set-Cookie when Portico made the cookie up.
    pub lb_hash: Option<u64>,
    pub lb_cookie: Option<HeaderValue>,
    /// The mirror copy; it leaves when dropped (the primary's response head is in hand, or
    /// the request failed), so its connect and write never compete with the client's
    /// request on this worker.
    pub mirror: Option<shadow::Deferred>,
}

/// Why no upstream request was made.
pub(crate) enum NotSent {
    /// The request ends with this error's local reply.
    Error(AttemptError),
    /// An upgrade the route refuses (answered with `upgrade::refused`).
    UpgradeRefused,
}

/// Makes the upstream request from the client's. `mirror`: the shadow upstream, when this
/// request is mirrored.
pub(crate) async fn prepare(
    route: &Route,
    up: &UpstreamState,
    conn: &ConnInfo,
    rec: &mut Record,
    mirror: Option<Arc<UpstreamState>>,
    deadline: Option<Instant>,
    (req, body_read): (Request<ClientBody>, Option<Bytes>),
) -> Result<Prepared, NotSent> {
    let (mut parts, body) = req.into_parts();
    let (lb_hash, lb_cookie) =
        crate::upstream::lb::hash_key(&up.conf.lb, &parts.headers, rec.client);
    let upgrade = match upgrade::take(route, up.conf.protocol, &mut parts) {
        upgrade::Asked::No => None,
        upgrade::Asked::Allowed(u) => Some(u),
        upgrade::Asked::Refused => return Err(NotSent::UpgradeRefused),
    };
    rewrite_head(
        route,
        up.conf.protocol,
        conn,
        rec,
        &mut parts,
        upgrade.as_ref(),
    );

    let keep = route.retry.is_some() || mirror.is_some();
    let template = keep.then(|| Template {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
    });
    let compress_req = route.compression.as_ref().filter(|c| c.enabled).map(|_| {
        (
            parts.method.clone(),
            compress::request_headers(&parts.headers),
        )
    });
    let (body, replay) = read_body(route, conn, rec, keep, deadline, body, body_read).await?;
    let mirror = match (mirror, template.as_ref(), &rec.metrics) {
        (Some(up), Some(t), Some(m)) => Some(shadow::Deferred {
            up,
            metrics: m.clone(),
            copy: Some(shadow::Copy {
                method: t.method.clone(),
                uri: t.uri.clone(),
                headers: t.headers.clone(),
                body: replay.clone(),
            }),
        }),
        _ => None,
    };
    Ok(Prepared {
        req: Request::from_parts(parts, body),
        template,
        replay,
        upgrade,
        compress_req,
        lb_hash,
        lb_cookie,
        mirror,
    })
}

/// The request line and headers the upstream sees.
fn rewrite_head(
    route: &Route,
    protocol: UpstreamProtocol,
    conn: &ConnInfo,
    rec: &mut Record,
    parts: &mut http::request::Parts,
    upgrade: Option<&upgrade::Upgrade>,
) {
    let new_pq = rewrite_path(route, &parts.uri);
    let te_trailers = headers::strip_hop_by_hop(&mut parts.headers);
    headers::normalize_content_length(&mut parts.headers);
    if let Some(u) = upgrade {
        u.restore_request_headers(&mut parts.headers);
    }
    parts.headers.remove(header::EXPECT); // 100-continue is answered by Portico itself
    headers::append_forwarded_for(&mut parts.headers, &conn.peer_ip);
    crate::downstream::tls::forward_client_cert(&mut parts.headers, conn);
    if !(conn.listener.trust_forwarded && parts.headers.contains_key(&headers::X_FORWARDED_PROTO)) {
        let proto = if conn.tls { "https" } else { "http" };
        parts.headers.insert(
            headers::X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(proto),
        );
    }
    // `Record::new` already looked the client's x-request-id up.
    if rec.request_id.is_none() {
        let id = headers::new_request_id();
        parts
            .headers
            .insert(headers::X_REQUEST_ID.clone(), id.clone());
        rec.request_id = Some(id);
    }
    headers::apply_rules(
        &mut parts.headers,
        &route.remove_request_headers,
        &route.add_request_headers,
    );
    // The Host the upstream sees: the route's rewrite, else the request's authority. An
    // origin-form HTTP/1.1 request already carries it in its Host header (kept as is).
    let host_value: Option<HeaderValue> = match &route.host_rewrite {
        Some(h) => Some(h.clone()),
        None => parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    if protocol == UpstreamProtocol::H2c {
        parts.version = Version::HTTP_2;
        let host_header = parts.headers.remove(header::HOST);
        let host_value = host_value.or(host_header);
        if te_trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let auth = host_value
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<Authority>().ok())
            .unwrap_or_else(|| Authority::from_static("upstream"));
        let mut uparts = http::uri::Parts::default();
        uparts.scheme = Some(Scheme::HTTP);
        uparts.authority = Some(auth);
        uparts.path_and_query = Some(new_pq);
        parts.uri = Uri::from_parts(uparts).unwrap_or_default();
    } else {
        parts.version = Version::HTTP_11;
        if te_trailers && protocol == UpstreamProtocol::Auto {
            // May become HTTP/2 (ALPN) in `pool::fit_form`; gRPC needs `te: trailers` there.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(h) = host_value {
            parts.headers.insert(header::HOST, h);
        }
        parts.uri = Uri::from(new_pq);
    }
}

/// The body: with `keep` (a retry policy or a mirror copy), bodies up to 64 KiB are read
/// first so they can be sent again; larger ones (and all bodies otherwise) stream. Returns
/// the body to send and, when read whole, its bytes.
async fn read_body(
    route: &Route,
    conn: &ConnInfo,
    rec: &Record,
    keep: bool,
    deadline: Option<Instant>,
    body: ClientBody,
    read: Option<Bytes>,
) -> Result<(ReqBody, Option<Bytes>), NotSent> {
    if http_body::Body::is_end_stream(&body) {
        return Ok(match read {
            Some(b) => (ReqBody::Full(Some(b.clone())), Some(b)),
            None => (ReqBody::Empty, Some(Bytes::new())),
        });
    }
    // Counted, capped at the route's limit, cut when the client stalls (slow POST). gRPC
    // streams are exempt from the body idle timeout: a client stream may pause for long; the
    // route's idle timeout and deadline govern them.
    let body_idle = if rec.grpc {
        None
    } else {
        conn.listener.limits.request_body_idle_timeout
    };
    let inbound = Inbound::new(
        body,
        route.max_request_body,
        body_idle,
        rec.received.clone(),
    );
    if !keep {
        let body = ReqBody::Stream {
            prefix: read,
            inner: inbound,
        };
        return Ok((body, None));
    }
    match within(deadline, buffer_up_to(inbound, REPLAY_LIMIT)).await {
        Err(Elapsed) => Err(NotSent::Error(AttemptError::Deadline)),
        Ok(Err(())) => {
            let cut = rec.received.cut().unwrap_or(BodyCut::Aborted);
            Err(NotSent::Error(AttemptError::ClientBody(cut)))
        }
        Ok(Ok(Buffered::Whole(b))) => {
            let b = joined(read, b);
            Ok((ReqBody::Full(Some(b.clone())), Some(b)))
        }
        Ok(Ok(Buffered::Partial(prefix, rest))) => Ok((
            ReqBody::Stream {
                prefix: Some(joined(read, prefix)),
                inner: rest,
            },
            None,
        )),
    }
}

/// `first` (body bytes read before this phase, by `include_body`) followed by `then`.
fn joined(first: Option<Bytes>, then: Bytes) -> Bytes {
    match first {
        None => then,
        Some(f) if then.is_empty() => f,
        Some(f) => {
            let mut b = bytes::BytesMut::with_capacity(f.len() + then.len());
            b.extend_from_slice(&f);
            b.extend_from_slice(&then);
            b.freeze()
        }
    }
}

/// A request body read before forwarding.
enum Buffered {
    /// The whole body (it fitted the limit).
    Whole(Bytes),
    /// What was read before the limit, and the rest of the stream.
    Partial(Bytes, Inbound),
}

/// Reads `body` until it ends or exceeds `limit` bytes. `Err` when the client's body failed
/// (or Portico cut it: see the request's `ByteCounter::cut`).
async fn buffer_up_to(mut body: Inbound, limit: usize) -> Result<Buffered, ()> {
    use http_body_util::BodyExt;
    let mut buf = bytes::BytesMut::new();
    loop {
        match body.frame().await {
            None => return Ok(Buffered::Whole(buf.freeze())),
            Some(Err(_)) => return Err(()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.len() > limit {
                    return Ok(Buffered::Partial(buf.freeze(), body));
                }
            }
        }
    }
}
