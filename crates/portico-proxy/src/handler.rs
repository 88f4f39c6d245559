//! The request lifecycle, one named step at a time:
//!
//! 1. **accept**: the connection layer (`server.rs`) hands over a parsed request.
//! 2. **route**: the snapshot current when the headers arrived picks a route (or 404 NR).
//! 3. **admit**: rate limits (`ratelimit`) may refuse with 429; local actions
//!    (`direct_response`, `redirect`) answer here; circuit breakers hook in at this step.
//! 4. **pick endpoint**: the upstream's load balancer chooses an endpoint.
//! 5. **forward**: the request, rewritten, goes out on a pooled connection under the
//!    request's deadline; connect failures fail over to another endpoint.
//! 6. **respond**: the response headers are rewritten and the body streams back.
//! 7. **log**: when the body ends (or the client goes away), [`Done`] writes the access log
//!    line and returns the upstream connection to the pool.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use portico_config::RequestView;
use portico_config::snapshot::{
    DirectResponseConf, ListenerConf, PathMatch, RedirectConf, Rewrite, Route, RouteAction,
    UpstreamProtocol,
};

use crate::access_log::{Entry, rfc3339_millis};
use crate::body::{BodyCut, BodyEnd, ByteCounter, Finish, Inbound, ReqBody, RespBody};
use crate::compress::{self, Encoder};
use crate::cors;
use crate::deadline;
use crate::headers;
use crate::local_reply::{Flag, Flags, is_grpc, local_reply, text_reply};
use crate::metrics::{RouteMetrics, UpstreamMetrics};
use crate::pool::{self, Conn, ConnectError, ConnectParams, PoolKey};
use crate::retry::{self, Attempt};
use crate::shadow;
use crate::state::Proxy;
use crate::upgrade;
use crate::upstream::{AttemptReport, Endpoint, Held, PickCtx, UpstreamState, Which};

/// What the connection layer knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address (the PROXY-protocol source where there is one).
    pub peer: SocketAddr,
    pub listener: Arc<ListenerConf>,
    pub tls: bool,
    /// The verified client certificate (mTLS), as its `x-forwarded-client-cert` value.
    pub client_cert: Option<HeaderValue>,
    /// `peer`'s IP as a header value, rendered once per connection for `x-forwarded-for`.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    pub fn new(
        peer: SocketAddr,
        listener: Arc<ListenerConf>,
        tls: bool,
        client_cert: Option<HeaderValue>,
    ) -> ConnInfo {
        ConnInfo {
            peer,
            listener,
            tls,
            client_cert,
            peer_ip: headers::ip_value(peer.ip()),
        }
    }
}

/// At most this many endpoints are tried when connecting fails (nothing was sent, so trying
/// another endpoint is always safe).
const MAX_CONNECT_ATTEMPTS: u32 = 3;

/// Handles one request; never fails (every failure is a local reply).
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    // Step 2, route: one atomic load; this snapshot serves the request to its end.
    let active = proxy.active();
    let mut rec = Record::new(&proxy, &conn, &req, start);
    // Overload manager: under memory pressure new requests are shed (one atomic load).
    if proxy.overload.memory_pressure() {
        return Ok(rec.shed(&proxy));
    }
    // Listener limits the HTTP layer does not enforce itself (HTTP/1's header count is
    // hyper's; HTTP/2's is checked here).
    let limits = &conn.listener.limits;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > limits.max_uri_bytes as usize
    {
        return Ok(rec.reject(&proxy, StatusCode::URI_TOO_LONG, "request URI too long"));
    }
    if let Err(why) = crate::h2_rules::check(&req) {
        return Ok(rec.reject(&proxy, StatusCode::BAD_REQUEST, why));
    }
    if req.headers().len() > limits.max_headers_count as usize {
        return Ok(rec.reject(
            &proxy,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many request headers",
        ));
    }
    // HTTP/1: hyper's read buffer bounds the head only roughly (a read may overshoot it), so
    // the header lines are measured exactly here. HTTP/2's header list is bounded by h2.
    if req.version() != Version::HTTP_2
        && h1_header_bytes(req.headers()) > limits.max_request_headers_bytes as usize
    {
        return Ok(rec.reject(
            &proxy,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        ));
    }
    if let Err(why) = crate::host_rules::check(req.version(), req.uri(), req.headers()) {
        return Ok(rec.reject(&proxy, StatusCode::BAD_REQUEST, why));
    }
    if let Some(resp) = crate::tls::insecure_policy(&active.config, &conn, &req) {
        return Ok(rec.local(&proxy, resp));
    }

    // A CORS preflight is matched with the method it asks about.
    let preflight = cors::is_preflight(req.method(), req.headers());
    let asked = if preflight {
        cors::requested_method(req.headers())
    } else {
        None
    };
    let route = {
        let authority = authority_of(&req);
        let host = host_of(authority);
        let view = RequestView {
            host: &host,
            authority,
            path: req.uri().path(),
            query: req.uri().query(),
            method: asked.as_ref().unwrap_or(req.method()),
            headers: req.headers(),
        };
        active.config.router.lookup(&view).cloned()
    };
    let Some(route) = route else {
        return Ok(rec.fail(&proxy, Flag::NR));
    };
    rec.route = Some(route.clone());
    if let Some(m) = active.route_metrics.get(route.id) {
        m.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rec.metrics = Some(m.clone());
    }
    // A declared body over the route's limit never reaches the upstream.
    if let Some(limit) = route.max_request_body
        && http_body::Body::size_hint(req.body())
            .exact()
            .or_else(|| content_length(req.headers()))
            .is_some_and(|n| n > limit)
    {
        return Ok(rec.body_cut(&proxy, BodyCut::TooLarge));
    }

    // Step 3, admit: rate limits (CONTRACT §4), CORS preflights, routes that answer locally.
    if !route.rate_limits.is_empty() {
        use crate::ratelimit::{Verdict, admit};
        match Box::pin(admit(&active.rate_limits, &route, &req, rec.client)).await {
            Verdict::Allow => {}
            Verdict::FailedOpen => rec.rate_limit_service_failed(&proxy),
            Verdict::Deny { flag, headers } => {
                if flag == Flag::RLSE {
                    rec.rate_limit_service_failed(&proxy);
                }
                if let Some(m) = &rec.metrics {
                    m.rate_limited
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                rec.flags.insert(flag);
                let reply = Verdict::reply(flag, headers.as_ref(), rec.grpc);
                return Ok(rec.local(&proxy, reply));
            }
        }
    }
    let mut cors_origin = None;
    if let Some(c) = &route.cors {
        if preflight {
            return Ok(rec.local(&proxy, cors::preflight(c, req.headers())));
        }
        cors_origin = cors::allowed_origin(c, req.headers()).cloned();
    }
    let mut resp = match &route.action {
        RouteAction::Direct(d) => rec.local(&proxy, direct_response(d, &route)),
        RouteAction::Redirect(r) => rec.local(&proxy, redirect(r, &route, &req, &conn)),
        RouteAction::Forward { upstream } => match active.upstreams.get(*upstream).cloned() {
            None => rec.fail(&proxy, Flag::UH),
            Some(up) => {
                let um = active
                    .upstream_metrics
                    .get(*upstream)
                    .cloned()
                    .unwrap_or_default();
                let shadow = route
                    .shadow
                    .as_ref()
                    .filter(|s| shadow::picked(s))
                    .and_then(|s| active.upstreams.get(s.upstream).cloned());
                // Boxed: hyper keeps this future inline in every connection's task, idle or
                // not; the forward step's state (kilobytes) lives on the heap only while a
                // request is in flight, and moving it is a pointer copy.
                Box::pin(forward(
                    proxy,
                    route.clone(),
                    up,
                    um,
                    shadow,
                    conn,
                    req,
                    rec,
                ))
                .await
            }
        },
    };
    if let (Some(c), Some(origin)) = (&route.cors, cors_origin) {
        cors::decorate(c, origin, resp.headers_mut());
    }
    Ok(resp)
}

/// Largest request body buffered so it can be replayed on a retry (CONTRACT §3.3).
const REPLAY_LIMIT: usize = 64 * 1024;

/// Steps 4–6: pick an endpoint, forward under the deadline with retries, respond.
#[allow(clippy::too_many_arguments)]
async fn forward(
    proxy: Arc<Proxy>,
    route: Arc<Route>,
    up: Arc<UpstreamState>,
    um: Arc<UpstreamMetrics>,
    shadow: Option<Arc<UpstreamState>>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    mut rec: Record,
) -> Response<RespBody> {
    rec.upstream = Some(up.clone());
    let protocol = up.conf.protocol;
    let h2 = matches!(protocol, UpstreamProtocol::H2c);
    let downstream_version = req.version();

    // The deadline: the earliest of the route timeout and the client's grpc-timeout.
    // (`grpc-timeout` is only looked for on gRPC requests.)
    let client_budget = if rec.grpc {
        req.headers()
            .get(&headers::GRPC_TIMEOUT)
            .and_then(deadline::parse_grpc_timeout)
    } else {
        None
    };
    let budget = deadline::budget(route.timeout, client_budget, route.grpc_timeout_max);
    let deadline = budget.map(|t| tokio::time::Instant::from_std(rec.start + t));
    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
        // Already spent (e.g. grpc-timeout: 0m): never contact the upstream.
        return rec.fail(&proxy, Flag::UT);
    }

    // Admit: the upstream's request breaker.
    let policy = route.retry.as_ref();
    let cb = up.conf.circuit_breakers;
    let Some(request_slot) = up.breakers.try_hold(Which::Requests, cb.max_requests) else {
        {
            um.overflows
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return rec.overloaded(&proxy);
        }
    };

    let (mut parts, body) = req.into_parts();
    // ring_hash/maglev: the request's key, and a Set-Cookie when Portico made the cookie up.
    let (lb_hash, lb_cookie) = crate::lb::hash_key(&up.conf.lb, &parts.headers, rec.client);
    let new_pq = rewrite_path(&route, &parts.uri);

    // Request headers.
    let upgrade = match upgrade::take(&route, protocol, &mut parts) {
        upgrade::Asked::No => None,
        upgrade::Asked::Allowed(u) => Some(u),
        upgrade::Asked::Refused => return rec.local(&proxy, upgrade::refused()),
    };
    let te_trailers = headers::strip_hop_by_hop(&mut parts.headers);
    headers::normalize_content_length(&mut parts.headers);
    if let Some(u) = &upgrade {
        u.restore_request_headers(&mut parts.headers);
    }
    parts.headers.remove(header::EXPECT); // 100-continue is answered by Portico itself
    headers::append_forwarded_for(&mut parts.headers, &conn.peer_ip);
    crate::tls::forward_client_cert(&mut parts.headers, &conn);
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
    if h2 {
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

    // With a retry policy (or a mirror copy to make) the request line and headers are kept.
    let template = (policy.is_some() || shadow.is_some()).then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.version,
            parts.headers.clone(),
        )
    });
    // What response compression needs to know about the request.
    let compress_req = route.compression.as_ref().filter(|c| c.enabled).map(|_| {
        (
            parts.method.clone(),
            compress::request_headers(&parts.headers),
        )
    });

    // The body: with a retry policy, bodies up to 64 KiB are read first so they can be sent
    // again; larger ones (and all bodies without a policy) stream.
    let mut replay: Option<Bytes> = None;
    let body = if http_body::Body::is_end_stream(&body) {
        replay = Some(Bytes::new());
        ReqBody::Empty
    } else {
        // Counted, capped at the route's limit, cut when the client stalls (slow POST).
        // gRPC streams are exempt from the body idle timeout: a client stream may pause for
        // long; the route's idle timeout and deadline govern them.
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
        if policy.is_some() || shadow.is_some() {
            match within(deadline, buffer_up_to(inbound, REPLAY_LIMIT)).await {
                Err(Elapsed) => return rec.fail(&proxy, Flag::UT),
                Ok(Err(())) => {
                    return match rec.received.cut() {
                        Some(cut) => rec.body_cut(&proxy, cut),
                        None => rec.fail(&proxy, Flag::DC),
                    };
                }
                Ok(Ok(Buffered::Whole(b))) => {
                    replay = Some(b.clone());
                    ReqBody::Full(Some(b))
                }
                Ok(Ok(Buffered::Partial(prefix, rest))) => ReqBody::Stream {
                    prefix: Some(prefix),
                    inner: rest,
                },
            }
        } else {
            ReqBody::Stream {
                prefix: None,
                inner: inbound,
            }
        }
    };
    let mut pending_req: Option<Request<ReqBody>> = Some(Request::from_parts(parts, body));
    // The mirror copy leaves when this function returns (the primary's response head is in
    // hand, or the request failed): its connect and write never compete with the client's
    // request on this worker.
    let _copy = match (shadow, template.as_ref(), &rec.metrics) {
        (Some(shadow_up), Some((method, uri, _, headers)), Some(m)) => Some(shadow::Deferred {
            up: shadow_up,
            metrics: m.clone(),
            copy: Some(shadow::Copy {
                method: method.clone(),
                uri: uri.clone(),
                headers: headers.clone(),
                body: replay.clone(),
            }),
        }),
        _ => None,
    };

    let params = ConnectParams::of(&up);
    let max_attempts = 1 + policy.map_or(0, |p| p.num_retries);
    let grpc = rec.grpc;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retries: u32 = 0;
    // Connect failures fail over to another endpoint even without a policy (nothing was sent).
    let mut connect_failovers: u32 = 0;
    let mut retry_slot: Option<Held> = None;

    // Step 4 and 5: pick, send, maybe retry.
    loop {
        let Some(mut req) = pending_req.take() else {
            return rec.fail(&proxy, Flag::URX);
        };
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return rec.fail(&proxy, Flag::UT);
        }
        let ctx = PickCtx {
            avoid: &tried,
            hash: lb_hash,
        };
        let Some(ep) = up.pick(&ctx) else {
            return rec.fail(&proxy, Flag::UH);
        };
        // Counted once it is made: a back-off that ran into the deadline is no attempt.
        rec.attempts += 1;
        rec.upstream_addr = Some(ep.addr);
        let h = req.headers_mut();
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(tokio::time::Instant::now());
            h.insert(
                headers::X_EXPECTED_TIMEOUT.clone(),
                HeaderValue::from((left.as_millis() as u64).max(1)),
            );
            if grpc {
                h.insert("grpc-timeout", deadline::grpc_timeout_value(left));
            }
        }
        h.insert(
            headers::X_ATTEMPT_COUNT.clone(),
            HeaderValue::from(rec.attempts),
        );
        // Per-try timeout, never past the request's deadline.
        let try_deadline = match (policy.and_then(|p| p.per_try_timeout), deadline) {
            (Some(t), Some(d)) => Some((tokio::time::Instant::now() + t).min(d)),
            (Some(t), None) => Some(tokio::time::Instant::now() + t),
            (None, d) => d,
        };

        let key = PoolKey {
            uid: up.uid,
            addr: ep.addr,
        };
        let attempt_start = Instant::now();
        // The route's idle timeout covers the wait for the response head too: no byte either
        // way (request body bytes read from the client count) for that long is a 408, SI.
        // No idle timer when the attempt's deadline comes first anyway (the defaults: 15 s
        // route timeout, 300 s idle timeout): one timer per attempt, not two.
        let idle = route
            .idle_timeout
            .filter(|i| try_deadline.is_none_or(|d| tokio::time::Instant::now() + *i < d));
        let sent = std::pin::pin!(attempt(&up, key, params.clone(), req, try_deadline, &ep));
        let Some(outcome) = idle_bound(idle, &rec.received, sent).await else {
            // A client that stalls mid-body stalls the upstream too: not its failure.
            if !rec.received.body_pending() {
                up.report(
                    &ep,
                    AttemptReport {
                        status: None,
                        gateway_failure: true,
                        latency: attempt_start.elapsed(),
                    },
                );
            }
            return rec.stream_idle(&proxy);
        };
        let latency = attempt_start.elapsed();
        let mut answered: Option<(Response<Incoming>, Option<H1Sender>, ActiveGuard)> = None;
        let (result, back) = match outcome {
            AttemptOutcome::Response(resp, tx, active) => {
                um.requests.add(resp.status().as_u16());
                let status = resp.status().as_u16();
                let grpc_status = if grpc {
                    retry::grpc_status(resp.headers())
                } else {
                    None
                };
                up.report(
                    &ep,
                    AttemptReport {
                        status: Some(status),
                        gateway_failure: false,
                        latency,
                    },
                );
                answered = Some((resp, tx, active));
                (
                    Attempt::Status {
                        status,
                        grpc: grpc_status,
                    },
                    None,
                )
            }
            AttemptOutcome::Overflow => {
                um.overflows
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return rec.overloaded(&proxy);
            }
            AttemptOutcome::ConnectFailed(e, back) => {
                um.connect_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(upstream = %up.conf.name, endpoint = %ep.addr, error = %e, "connect failed");
                up.report(
                    &ep,
                    AttemptReport {
                        status: None,
                        gateway_failure: true,
                        latency,
                    },
                );
                (Attempt::ConnectFailure, back)
            }
            AttemptOutcome::Failed(_, _) if rec.received.cut().is_some() => {
                // The client's body failed (too large, idle, malformed, or the client went
                // away): the client's fault, not the upstream's; no report, no retry.
                let cut = rec.received.cut().unwrap_or(BodyCut::TooLarge);
                return rec.body_cut(&proxy, cut);
            }
            AttemptOutcome::Failed(r, back) => {
                up.report(
                    &ep,
                    AttemptReport {
                        status: None,
                        gateway_failure: true,
                        latency,
                    },
                );
                (r, back)
            }
            AttemptOutcome::Deadline => {
                // Not the upstream's failure while the client is still sending its body.
                if !rec.received.body_pending() {
                    up.report(
                        &ep,
                        AttemptReport {
                            status: None,
                            gateway_failure: true,
                            latency,
                        },
                    );
                }
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return rec.fail(&proxy, Flag::UT);
                }
                (Attempt::PerTryTimeout, None)
            }
        };
        tried.push(ep.addr);

        // Go again? A connect failure fails over to another endpoint (nothing was sent);
        // otherwise the retry policy, its budget and the max_retries breaker decide.
        let policy_retry = policy.is_some_and(|p| retry::retriable(p, result));
        let endpoints = up.endpoints.load().endpoints.len() as u32;
        let mut again = false;
        if result == Attempt::ConnectFailure
            && back.is_some()
            && connect_failovers + 1 < MAX_CONNECT_ATTEMPTS.min(endpoints)
        {
            connect_failovers += 1; // a failover does not use up the retry policy
            again = true;
        } else if let Some(p) = policy
            && policy_retry
            && rec.attempts - connect_failovers < max_attempts
            && (back.is_some() || replay.is_some())
        {
            let pause = retry::backoff(retries + 1);
            let in_time = deadline.is_none_or(|d| tokio::time::Instant::now() + pause < d);
            let active = up
                .breakers
                .requests
                .load(std::sync::atomic::Ordering::Relaxed);
            // Budget and breaker in one atomic step on the retry counter. A request that
            // retried before still holds its slot here, so it counts as in flight.
            let budget = retry::budget_allowance(p, active);
            let allowed = budget.min(cb.max_retries);
            let slot = if in_time {
                up.breakers.try_hold(Which::Retries, allowed)
            } else {
                None
            };
            if let Some(slot) = slot {
                retry_slot = Some(slot);
                retries += 1;
                proxy
                    .counters
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(m) = &rec.metrics {
                    m.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                drop(answered.take());
                tokio::time::sleep(pause).await;
                again = true;
            } else {
                proxy
                    .counters
                    .retries_denied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                um.retry_budget_exhausted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Refused by the max_retries breaker (the smaller of the two limits): a
                // circuit-breaker overflow too.
                if in_time && cb.max_retries < budget {
                    um.overflows
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        if !again {
            if policy_retry {
                rec.flags.insert(Flag::URX);
            }
            return match answered {
                Some((resp, tx, active)) => {
                    rec.upstream_start = Some(attempt_start);
                    let held = (request_slot, retry_slot);
                    let ctx = RespondCtx {
                        upgrade,
                        deadline,
                        downstream_version,
                        compress_req,
                    };
                    let mut resp =
                        respond(proxy, rec, &route, &up, key, resp, tx, active, held, ctx);
                    if let Some(c) = lb_cookie {
                        resp.headers_mut().append(header::SET_COOKIE, c);
                    }
                    resp
                }
                None => rec.fail(&proxy, failure_flag(result)),
            };
        }
        pending_req = back.or_else(|| {
            let (method, uri, version, headers) = template.as_ref()?;
            let body = match replay.clone() {
                Some(b) if b.is_empty() => ReqBody::Empty,
                Some(b) => ReqBody::Full(Some(b)),
                None => return None,
            };
            let mut r = Request::new(body);
            *r.method_mut() = method.clone();
            *r.uri_mut() = uri.clone();
            *r.version_mut() = *version;
            *r.headers_mut() = headers.clone();
            Some(r)
        });
    }
}

type H1Sender = hyper::client::conn::http1::SendRequest<ReqBody>;

/// Keeps an endpoint's active-request count for as long as it lives.
pub struct ActiveGuard(Arc<Endpoint>);

impl ActiveGuard {
    fn new(ep: &Arc<Endpoint>) -> Self {
        ep.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ActiveGuard(ep.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How one attempt ended.
enum AttemptOutcome {
    Response(Response<Incoming>, Option<H1Sender>, ActiveGuard),
    /// A circuit breaker refused a new connection.
    Overflow,
    /// No connection; the request comes back unsent.
    ConnectFailed(ConnectError, Option<Request<ReqBody>>),
    /// Reset or protocol error; the request comes back if it was not sent.
    Failed(Attempt, Option<Request<ReqBody>>),
    /// The per-try timeout or the deadline fired.
    Deadline,
}

/// One attempt: a pooled or new connection, then the request, under `deadline`.
async fn attempt(
    up: &UpstreamState,
    key: PoolKey,
    params: ConnectParams,
    mut req: Request<ReqBody>,
    deadline: Option<tokio::time::Instant>,
    ep: &Arc<Endpoint>,
) -> AttemptOutcome {
    let cb = up.conf.circuit_breakers;
    let mut pooled = match within(
        deadline,
        pool::checkout(key, params.protocol, params.connect_timeout),
    )
    .await
    {
        Err(Elapsed) => return AttemptOutcome::Deadline,
        Ok(c) => c,
    };
    loop {
        let fresh = pooled.is_none();
        let conn = match pooled.take() {
            Some(c) => c,
            None => {
                let Some(_pending) = up
                    .breakers
                    .try_hold(Which::Pending, cb.max_pending_requests)
                else {
                    return AttemptOutcome::Overflow;
                };
                let Some(slot) = up.breakers.try_hold(Which::Connections, cb.max_connections)
                else {
                    return AttemptOutcome::Overflow;
                };
                match within(deadline, pool::connect(key, params.clone(), slot)).await {
                    Err(Elapsed) => return AttemptOutcome::Deadline,
                    Ok(Err(e)) => return AttemptOutcome::ConnectFailed(e, Some(req)),
                    Ok(Ok(c)) => c,
                }
            }
        };
        let active = ActiveGuard::new(ep);
        let (sent, tx) = match conn {
            Conn::H1(mut tx) => {
                pool::fit_form(&mut req, false, params.protocol);
                let fut = tx.try_send_request(req);
                (within(deadline, fut).await, Some(tx))
            }
            Conn::H2(mut tx) => {
                pool::fit_form(&mut req, true, params.protocol);
                let fut = tx.try_send_request(req);
                (within(deadline, fut).await, None)
            }
        };
        match sent {
            Err(Elapsed) => return AttemptOutcome::Deadline,
            Ok(Ok(resp)) => return AttemptOutcome::Response(resp, tx, active),
            Ok(Err(mut e)) => {
                let back = e.take_message();
                match back {
                    // A pooled connection the upstream had closed: the request was not
                    // sent, so it goes again on a fresh connection, invisibly.
                    Some(r) if !fresh => {
                        req = r;
                        continue;
                    }
                    back => {
                        tracing::debug!(upstream = %up.conf.name, endpoint = %key.addr, error = %e.error(), "upstream request failed");
                        return AttemptOutcome::Failed(classify(e.error()), back);
                    }
                }
            }
        }
    }
}

/// Reset vs refused stream, from a hyper client error.
fn classify(e: &hyper::Error) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>()
            && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return Attempt::RefusedStream;
        }
        source = s.source();
    }
    Attempt::Reset
}

/// The local reply flag for a failed last attempt.
fn failure_flag(a: Attempt) -> Flag {
    match a {
        Attempt::ConnectFailure => Flag::UF,
        Attempt::Reset | Attempt::RefusedStream => Flag::UC,
        Attempt::PerTryTimeout => Flag::UT,
        Attempt::Status { .. } => Flag::URX,
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

/// Step 6, respond: rewrite the upstream's response headers and stream its body back.
#[allow(clippy::too_many_arguments)]
fn respond(
    proxy: Arc<Proxy>,
    mut rec: Record,
    route: &Route,
    up: &UpstreamState,
    key: PoolKey,
    resp: Response<Incoming>,
    tx: Option<H1Sender>,
    active: ActiveGuard,
    held: (Held, Option<Held>),
    ctx: RespondCtx,
) -> Response<RespBody> {
    let RespondCtx {
        upgrade,
        deadline,
        downstream_version,
        compress_req,
    } = ctx;
    rec.received.mark_responded();
    let (mut rparts, rbody) = resp.into_parts();
    headers::strip_hop_by_hop(&mut rparts.headers);
    headers::normalize_content_length(&mut rparts.headers);
    let upgraded = upgrade.is_some_and(|u| u.tunnel(&mut rparts, route.idle_timeout));
    headers::apply_rules(
        &mut rparts.headers,
        &route.remove_response_headers,
        &route.add_response_headers,
    );
    if downstream_version != Version::HTTP_2 {
        rparts.version = Version::HTTP_11;
    }
    rec.status = rparts.status.as_u16();
    let done = Done {
        proxy,
        rec,
        _active: active,
        _held: held,
        // An upgraded connection is the tunnel's, never pooled.
        pooled: tx.filter(|_| !upgraded).map(|tx| {
            (
                key,
                tx,
                up.conf.max_idle_connections_per_endpoint,
                up.conf.idle_connection_timeout,
            )
        }),
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

/// What the respond step needs from the request.
struct RespondCtx {
    /// A WebSocket (or other) upgrade the route allowed.
    upgrade: Option<upgrade::Upgrade>,
    deadline: Option<tokio::time::Instant>,
    downstream_version: Version,
    /// Method and the headers compression looks at, when the route compresses.
    compress_req: Option<(http::Method, http::HeaderMap)>,
}

/// The deadline passed.
pub struct Elapsed;

/// Runs `f` until `deadline` (or forever without one).
async fn within<F: Future>(
    deadline: Option<tokio::time::Instant>,
    f: F,
) -> Result<F::Output, Elapsed> {
    match deadline {
        None => Ok(f.await),
        Some(d) => tokio::time::timeout_at(d, f).await.map_err(|_| Elapsed),
    }
}

/// Runs `f` until it ends, or `None` once neither it nor the client's request body made
/// progress for `idle` (the route's `idle_timeout_ms`, CONTRACT §2.3.1). Progress on the
/// request side is `received` growing, sampled every quarter of `idle` while `f` is pending
/// (one timer), so a cut comes between `idle` and 1¼ × `idle` after the last byte.
///
/// `f` is borrowed pinned, not moved: the attempt future is several KB, and moving it into
/// this one (and that into the caller's state) cost ~35k instructions per request in memcpy.
async fn idle_bound<F: Future>(
    idle: Option<Duration>,
    received: &ByteCounter,
    mut f: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    let Some(idle) = idle else {
        return Some(f.await);
    };
    let step = (idle / 4).max(Duration::from_millis(1));
    let mut seen = received.get();
    let mut last = tokio::time::Instant::now();
    let timer = tokio::time::sleep_until(last + step);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            out = f.as_mut() => return Some(out),
            () = &mut timer => {
                let now = tokio::time::Instant::now();
                let bytes = received.get();
                if bytes != seen {
                    seen = bytes;
                    last = now;
                } else if now.saturating_duration_since(last) >= idle {
                    return None;
                }
                let next = (now + step).min(last + idle);
                timer.as_mut().reset(next.max(now + Duration::from_millis(1)));
            }
        }
    }
}

/// The size of a request's HTTP/1 header lines (`name: value\r\n` each).
fn h1_header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// A request's `Content-Length`, when it is one valid number.
fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The `:authority` (HTTP/2) or Host header (HTTP/1.1) of a request.
fn authority_of(req: &Request<Incoming>) -> &str {
    authority_of_parts(req.uri(), req.headers()).unwrap_or("")
}

fn authority_of_parts<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|v| v.to_str().ok()))
}

/// The host of an authority: port stripped, lowercase (allocates only when it must).
pub fn host_of(authority: &str) -> Cow<'_, str> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The upstream path and query after the route's rewrite.
pub fn rewrite_path(route: &Route, uri: &Uri) -> PathAndQuery {
    let path = uri.path();
    let new_path: Cow<'_, str> = match &route.rewrite {
        Rewrite::None => Cow::Borrowed(path),
        Rewrite::Prefix(to) => match &route.path {
            PathMatch::Prefix { prefix, .. } if path.len() >= prefix.len() => {
                let rest = &path[prefix.len()..];
                let mut s = String::with_capacity(to.len() + rest.len() + 1);
                s.push_str(to);
                // Avoid a doubled slash when both sides carry one.
                if to.ends_with('/') && rest.starts_with('/') {
                    s.push_str(&rest[1..]);
                } else {
                    s.push_str(rest);
                }
                Cow::Owned(s)
            }
            _ => Cow::Borrowed(to.as_str()),
        },
        Rewrite::Regex {
            regex,
            substitution,
        } => regex.replace_all(path, substitution.as_str()),
    };
    let new_path: Cow<'_, str> = if new_path.is_empty() {
        Cow::Borrowed("/")
    } else {
        new_path
    };
    if matches!(new_path, Cow::Borrowed(p) if std::ptr::eq(p, path)) {
        return uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
    }
    let full = match uri.query() {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path.into_owned(),
    };
    full.parse()
        .unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// A `direct_response` route's answer.
fn direct_response(d: &DirectResponseConf, route: &Route) -> Response<RespBody> {
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

/// A `redirect` route's answer (CONTRACT §2.3.1: default 301; query kept; `https: true`
/// keeps the host without its port unless `port` is given).
fn redirect(
    r: &RedirectConf,
    route: &Route,
    req: &Request<Incoming>,
    conn: &ConnInfo,
) -> Response<RespBody> {
    let authority = authority_of(req);
    let scheme = if r.https || conn.tls { "https" } else { "http" };
    let mut host: String = match &r.host {
        Some(h) => h.clone(),
        None if r.https => host_of(authority).into_owned(),
        None => authority.to_string(),
    };
    if let Some(p) = r.port {
        let bare = host_of(&host).into_owned();
        host = format!("{bare}:{p}");
    }
    let path = req.uri().path();
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
    if let Some(q) = req.uri().query() {
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

/// What the access log needs about one request, gathered along the way.
struct Record {
    start: Instant,
    grpc: bool,
    /// The request came over HTTP/2 (no `connection` header on replies).
    http2: bool,
    flags: Flags,
    status: u16,
    route: Option<Arc<Route>>,
    upstream: Option<Arc<UpstreamState>>,
    upstream_addr: Option<SocketAddr>,
    upstream_start: Option<Instant>,
    attempts: u32,
    received: Arc<ByteCounter>,
    request_id: Option<HeaderValue>,
    client: IpAddr,
    /// The route's metrics (or the no-route family).
    metrics: Option<Arc<RouteMetrics>>,
    /// Only filled when the access log is on.
    log: Option<LogFields>,
}

struct LogFields {
    /// When the request started (wall clock; read only when logging).
    wall: SystemTime,
    /// The client address as logged.
    client: HeaderValue,
    /// The verified mTLS client identity (the `x-forwarded-client-cert` value); shares the
    /// connection's bytes, no copy.
    client_cert: Option<HeaderValue>,
    method: http::Method,
    authority: String,
    path: String,
    protocol: &'static str,
}

impl Record {
    fn new(proxy: &Proxy, conn: &ConnInfo, req: &Request<Incoming>, start: Instant) -> Record {
        let client = if conn.listener.trust_forwarded {
            headers::last_forwarded_for(req.headers()).unwrap_or(conn.peer.ip())
        } else {
            conn.peer.ip()
        };
        let log = proxy.access_log.enabled().then(|| LogFields {
            wall: SystemTime::now(),
            client: if client == conn.peer.ip() {
                conn.peer_ip.clone()
            } else {
                headers::ip_value(client)
            },
            client_cert: conn.client_cert.clone(),
            method: req.method().clone(),
            authority: authority_of(req).to_owned(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .to_owned(),
            protocol: if req.version() == Version::HTTP_2 {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            },
        });
        Record {
            start,
            grpc: is_grpc(req.headers()),
            http2: req.version() == Version::HTTP_2,
            flags: Flags::default(),
            status: 0,
            route: None,
            upstream: None,
            upstream_addr: None,
            upstream_start: None,
            attempts: 0,
            received: Arc::new(ByteCounter::default()),
            request_id: req.headers().get(&headers::X_REQUEST_ID).cloned(),
            client,
            metrics: None,
            log,
        }
    }

    /// Records `flag` and answers with its local reply.
    fn fail(mut self, proxy: &Proxy, flag: Flag) -> Response<RespBody> {
        self.flags.insert(flag);
        let reply = local_reply(flag, self.grpc, None);
        self.local(proxy, reply)
    }

    /// The overload manager sheds the request: 503 with `x-portico-overloaded: true`, flag
    /// OM, and (HTTP/1) `connection: close`.
    fn shed(mut self, proxy: &Proxy) -> Response<RespBody> {
        self.flags.insert(Flag::OM);
        proxy
            .overload
            .actions
            .reject_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reply = local_reply(Flag::OM, self.grpc, None);
        reply
            .headers_mut()
            .insert("x-portico-overloaded", HeaderValue::from_static("true"));
        if !self.http2 {
            reply
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.local(proxy, reply)
    }

    /// An invalid or too large request (flag DPE): `status` with a one-line `msg`. HTTP/1
    /// connections close after it (an unread body may follow the head).
    fn reject(mut self, proxy: &Proxy, status: StatusCode, msg: &str) -> Response<RespBody> {
        self.flags.insert(Flag::DPE);
        if self.route.is_none() {
            // Before routing: `portico_downstream_rejected_total`, like hyper's rejections.
            proxy.metrics.rejected.add(status.as_u16());
        }
        let mut reply = text_reply(status, msg);
        if !self.http2 {
            reply
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.local(proxy, reply)
    }

    /// The client's body ended early: 413 or 400 (DPE), 408 (SI), or DC when the client went
    /// away. HTTP/1 connections close after it.
    fn body_cut(mut self, proxy: &Proxy, cut: BodyCut) -> Response<RespBody> {
        match cut {
            BodyCut::TooLarge => self.reject(
                proxy,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ),
            BodyCut::Malformed => {
                tracing::info!(client = %self.client, "malformed request body rejected");
                self.reject(proxy, StatusCode::BAD_REQUEST, "malformed request body")
            }
            BodyCut::Aborted => self.fail(proxy, Flag::DC),
            BodyCut::Idle => {
                tracing::info!(client = %self.client, "request body idle timeout");
                self.flags.insert(Flag::SI);
                let mut reply = local_reply(Flag::SI, self.grpc, Some("request body idle timeout"));
                if !self.http2 {
                    reply
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                self.local(proxy, reply)
            }
        }
    }

    /// The route's idle timeout fired before the response started: 408 (gRPC status 4), flag
    /// SI. HTTP/1 connections close after it (the request body may be unread).
    fn stream_idle(mut self, proxy: &Proxy) -> Response<RespBody> {
        tracing::info!(client = %self.client, "stream idle timeout before the response started");
        self.flags.insert(Flag::SI);
        let mut reply = local_reply(Flag::SI, self.grpc, None);
        if !self.http2 {
            reply
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.local(proxy, reply)
    }

    /// A circuit breaker refused the request: 503 with `x-portico-overloaded: true`.
    fn overloaded(mut self, proxy: &Proxy) -> Response<RespBody> {
        self.flags.insert(Flag::UO);
        proxy
            .counters
            .overflows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut reply = local_reply(Flag::UO, self.grpc, None);
        reply
            .headers_mut()
            .insert("x-portico-overloaded", HeaderValue::from_static("true"));
        self.local(proxy, reply)
    }

    /// The rate limit service failed: flag RLSE and count it.
    fn rate_limit_service_failed(&mut self, proxy: &Proxy) {
        self.flags.insert(Flag::RLSE);
        proxy
            .counters
            .rate_limit_service_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Logs a locally answered request and returns the reply.
    fn local(mut self, proxy: &Proxy, resp: Response<RespBody>) -> Response<RespBody> {
        self.status = resp.status().as_u16();
        let size = http_body::Body::size_hint(resp.body()).exact().unwrap_or(0);
        self.finish(proxy, size, Instant::now());
        resp
    }

    /// Step 7: metrics and the access log line, once per request.
    fn finish(&self, proxy: &Proxy, bytes_sent: u64, end: Instant) {
        let m = self.metrics.as_deref().unwrap_or(&proxy.metrics.no_route);
        m.requests.add(self.status);
        m.duration.observe(end.duration_since(self.start));
        m.bytes_sent
            .fetch_add(bytes_sent, std::sync::atomic::Ordering::Relaxed);
        m.bytes_received
            .fetch_add(self.received.get(), std::sync::atomic::Ordering::Relaxed);
        if self.metrics.is_some() {
            m.active.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.write(proxy, bytes_sent, end);
    }

    fn write(&self, proxy: &Proxy, bytes_sent: u64, end: Instant) {
        let Some(log) = &self.log else { return };
        let mut flags = String::new();
        self.flags.write_to(&mut flags);
        let ts = rfc3339_millis(log.wall);
        let request_id = self
            .request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let entry = Entry {
            ts: &ts,
            method: log.method.as_str(),
            authority: &log.authority,
            path: &log.path,
            protocol: log.protocol,
            status: self.status,
            flags: &flags,
            route: self.route.as_ref().map(|r| r.name.as_str()),
            upstream: self.upstream.as_ref().map(|u| u.conf.name.as_str()),
            upstream_addr: self.upstream_addr,
            attempts: self.attempts,
            bytes_received: self.received.get(),
            bytes_sent,
            duration_ms: millis(end.duration_since(self.start)),
            upstream_duration_ms: self.upstream_start.map(|s| millis(end.duration_since(s))),
            request_id,
            client: log.client.to_str().unwrap_or("-"),
            client_cert: log.client_cert.as_ref().and_then(|v| v.to_str().ok()),
            error: None,
        };
        proxy.access_log.write(&entry);
    }
}

/// Logs a request that the HTTP layer rejected before it reached the lifecycle (flag DPE).
pub fn log_rejected(proxy: &Proxy, conn: &ConnInfo, status: u16, detail: &str) {
    proxy.metrics.rejected.add(status);
    if !proxy.access_log.enabled() {
        return;
    }
    let mut flags = Flags::default();
    flags.insert(Flag::DPE);
    let mut f = String::new();
    flags.write_to(&mut f);
    let ts = rfc3339_millis(SystemTime::now());
    let entry = Entry {
        ts: &ts,
        method: "-",
        authority: "-",
        path: "-",
        protocol: "HTTP/1.1",
        status,
        flags: &f,
        route: None,
        upstream: None,
        upstream_addr: None,
        attempts: 0,
        bytes_received: 0,
        bytes_sent: 0,
        duration_ms: 0.0,
        upstream_duration_ms: None,
        request_id: "-",
        client: conn.peer_ip.to_str().unwrap_or("-"),
        client_cert: conn.client_cert.as_ref().and_then(|v| v.to_str().ok()),
        error: Some(detail),
    };
    proxy.access_log.write(&entry);
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Step 7, log: runs when the response body ends or is dropped.
struct Done {
    proxy: Arc<Proxy>,
    rec: Record,
    _active: ActiveGuard,
    /// Breaker slots (request, retry) held until the response ends.
    _held: (Held, Option<Held>),
    pooled: Option<(PoolKey, H1Sender, u32, Duration)>,
}

impl Finish for Done {
    fn finish(mut self: Box<Self>, end: BodyEnd, bytes_sent: u64, at: Instant) {
        match end {
            BodyEnd::Complete => {
                if let Some((key, tx, max_idle, idle_timeout)) = self.pooled.take() {
                    pool::release_h1(key, tx, max_idle, idle_timeout);
                }
            }
            BodyEnd::UpstreamError => match self.rec.received.cut() {
                // The upstream request was aborted because the client's body failed.
                Some(BodyCut::TooLarge | BodyCut::Malformed) => self.rec.flags.insert(Flag::DPE),
                Some(BodyCut::Idle) => self.rec.flags.insert(Flag::SI),
                Some(BodyCut::Aborted) => self.rec.flags.insert(Flag::DC),
                None => self.rec.flags.insert(Flag::UC),
            },
            BodyEnd::DeadlineExceeded => self.rec.flags.insert(Flag::UT),
            BodyEnd::IdleTimeout => self.rec.flags.insert(Flag::SI),
            BodyEnd::Dropped => self.rec.flags.insert(Flag::DC),
        }
        self.rec.finish(&self.proxy, bytes_sent, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port_and_lowercases() {
        assert_eq!(host_of("Example.COM:8080"), "example.com");
        assert_eq!(host_of("example.com"), "example.com");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of(""), "");
    }

    /// The size of a future returned by a three-argument async fn (no value needed).
    fn future_size<A, B, C, F: Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn request_future_stays_small() {
        // hyper keeps the service future inline in every connection's task, idle or not: its
        // size is memory per idle keep-alive connection.
        let size = future_size(handle);
        eprintln!("handle() future: {size} bytes");
        assert!(size < 2 * 1024, "{size}");
    }
}
