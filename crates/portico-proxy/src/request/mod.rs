//! The request path, as phases over one `RequestCtx` (`ctx.rs`), in this order:
//!
//! 1. **screen** (here): overload shedding and the listener's request limits the HTTP layer
//!    leaves to Portico (URI length, header count and size, HTTP/2 field rules, Host rules),
//!    then ACME HTTP-01 challenge answers (`crate::downstream::acme`) and
//!    `requestPolicy.insecure`.
//! 2. **route** (here): the snapshot current when the headers arrived picks a route (or 404
//!    NR); a declared body over the route's limit is refused (413).
//! 3. **CORS preflight** (here): answered by Portico for a route with `cors`.
//! 4. **JWT, then external authorization** (here, with `crate::auth`): a route's token
//!    checked (401 JWT), then the `AuthService` asked (its denial, or `status_on_error`, UAEX).
//! 5. **rate limits** (here, with `crate::ratelimit`): 429 when a limit refuses.
//!    Routes that answer themselves (`direct_response`, `redirect`) answer here (`respond.rs`).
//! 6. **circuit breaker** (`forward.rs`): the upstream's request breaker (503 UO).
//! 7. **upstream request** (`prepare.rs`): headers and target rewritten, body wrapped or read
//!    for replay.
//! 8. **pick** (`forward.rs`): the upstream's load balancer chooses an endpoint.
//! 9. **attempt** (`attempt.rs`): a pooled or new connection, the request, under the attempt's
//!    deadline; an [`attempt::AttemptError`] says what went wrong and whether a retry may
//!    follow.
//! 10. **retry decision** (`retry.rs`): a connect failover, a policy retry (budget and breaker
//!     permitting), or the end; back to 8.
//! 11. **respond** (`respond.rs`): the response headers are rewritten and the body streams back.
//! 12. **log** (`record.rs`): when the body ends (or the client goes away), the access log line
//!     and the metrics are written and the upstream connection goes back to the pool.
//!
//! A phase that ends the request answers with a [`LocalReply`] (status, flag, gRPC status,
//! whether HTTP/1 closes, message), recorded and logged by [`Record::reply`].
//!
//! Protocol: the phases up to rate limits read the request through [`Head`] (`head.rs`: method, URI,
//! authority, headers: `http` types, no hyper type). The entry point receives a
//! `Request<ClientBody>`: the body is Portico's own HTTP/1 server's (`downstream::h1`) or
//! hyper's (HTTP/2, and what the own server hands over), passed through as-is (`prepare.rs`);
//! HTTP/2 upstreams use hyper's client (`attempt.rs`).
//!
//! Per-route policies the phases apply live beside them: `cors.rs` (preflight and response
//! headers), `compress.rs` (response compression), `shadow.rs` (request mirroring),
//! `deadline.rs` (the request's deadline) and `upgrade.rs` (WebSocket and other upgrades).

pub(crate) mod attempt;
pub mod compress;
pub mod cors;
mod ctx;
pub mod deadline;
mod forward;
mod head;
mod prepare;
pub(crate) mod record;
mod respond;
pub mod retry;
pub mod shadow;
pub mod upgrade;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::reqbody::ClientBody;
use http::header;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use portico_config::RequestView;
use portico_config::request_semantics::host_of;
use portico_config::snapshot::{Route, RouteAction};

use crate::body::{BodyCut, RespBody};
use crate::local_reply::{Flag, LocalReply};
use crate::state::Proxy;
use ctx::RequestCtx;
pub use head::{ConnInfo, Head};
use record::Record;
pub use record::log_rejected;

/// Handles one request; never fails (every failure is a local reply). On the TCP side of a
/// listener with `http3`, every response advertises HTTP/3 (`alt-svc`, reference §10).
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<ClientBody>,
) -> Result<Response<RespBody>, Infallible> {
    let alt_svc = conn.alt_svc.clone();
    // Pinned where it is made: awaiting it by value moved it (a memcpy).
    let handled = std::pin::pin!(handle_request(proxy, conn, req));
    let mut resp = handled.await?;
    if let Some(v) = alt_svc {
        resp.headers_mut().insert(header::ALT_SVC, v);
    }
    Ok(resp)
}

async fn handle_request(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    // One atomic load; this snapshot serves the request to its end.
    let active = proxy.active();
    let head = Head::of(&req);
    let rec = Record::new(&proxy, &conn, &head, start);
    let mut ctx = RequestCtx {
        proxy,
        active,
        conn,
        rec,
    };
    if let Err(reply) = screen(&ctx, &req) {
        return Ok(ctx.reply(reply));
    }
    // ACME HTTP-01 answers come before routing and before the insecure-request policy.
    // (Boxed: the file read's state lives on the heap only for challenge requests, not in
    // every connection's future.)
    if let Some(path) = crate::downstream::acme::http01_path(&ctx.conn, &req) {
        let head = req.method() == http::Method::HEAD;
        if let Some(resp) = Box::pin(crate::downstream::acme::http01_answer(path, head)).await {
            return Ok(ctx.answer(resp));
        }
    }
    if let Some(resp) = crate::downstream::tls::insecure_policy(&ctx.active.config, &ctx.conn, &req)
    {
        return Ok(ctx.answer(resp));
    }
    let route = match route(&mut ctx, &head, &req) {
        Ok(r) => r,
        Err(reply) => return Ok(ctx.reply(reply)),
    };
    if let Some(resp) = cors_preflight(&route, &head) {
        return Ok(ctx.answer(resp));
    }
    let cors_origin = route
        .cors
        .as_ref()
        .and_then(|c| cors::allowed_origin(c, head.headers).cloned());
    // JWT, then external authorization: after CORS (a preflight answered by Portico never
    // reaches auth), before the rate limits.
    let mut body_read = None;
    // A gRPC auth service's `response_headers_to_add`, for whatever answer the client gets.
    let mut auth_response_headers = Vec::new();
    if crate::auth::needed(&ctx.active.config, &route) {
        match Box::pin(edge_auth(&mut ctx, &route, &mut req)).await {
            Ok((read, headers)) => {
                body_read = read;
                auth_response_headers = headers;
            }
            Err(AuthEnd::Answer(resp)) => return Ok(ctx.answer(*resp)),
            Err(AuthEnd::Local(reply)) => return Ok(ctx.reply(reply)),
        }
    }
    // Auth may have changed headers and query: the later phases read the request as it is now.
    let head = Head::of(&req);
    if !route.rate_limits.is_empty()
        && let Some(resp) = Box::pin(rate_limits(&mut ctx, &route, &req)).await
    {
        let mut resp = ctx.answer(resp);
        crate::auth::apply_mutations(resp.headers_mut(), auth_response_headers);
        return Ok(resp);
    }
    let mut resp = match &route.action {
        RouteAction::Direct(d) => ctx.answer(respond::direct_response(d, &route)),
        RouteAction::Redirect(r) => {
            let resp = respond::redirect(r, &route, &head, ctx.conn.tls);
            ctx.answer(resp)
        }
        // Boxed: hyper keeps this future inline in every connection's task, idle or not; the
        // forward phases' state (kilobytes) lives on the heap only while a request is in
        // flight, and moving it is a pointer copy.
        RouteAction::Forward { upstream } => {
            let upstream = *upstream;
            Box::pin(forward::forward(
                ctx,
                route.clone(),
                upstream,
                req,
                body_read,
            ))
            .await
        }
    };
    crate::auth::apply_mutations(resp.headers_mut(), auth_response_headers);
    if let (Some(c), Some(origin)) = (&route.cors, cors_origin) {
        cors::decorate(c, origin, resp.headers_mut());
    }
    Ok(resp)
}

/// The screen phase: overload shedding, then the listener limits the HTTP layer does not
/// enforce itself (HTTP/1's header count is hyper's; HTTP/2's is checked here). After it,
/// `requestPolicy.insecure` (`crate::downstream::tls::insecure_policy`) may answer a plain-HTTP request.
fn screen<B>(ctx: &RequestCtx, req: &Request<B>) -> Result<(), LocalReply> {
    let reject = |status, msg| Err(LocalReply::reject(status, msg));
    // Overload manager: under memory pressure new requests are shed (one atomic load).
    if ctx.proxy.overload.memory_pressure() {
        return Err(LocalReply::shed());
    }
    let limits = &ctx.conn.listener.limits;
    if req.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > limits.max_uri_bytes as usize
    {
        return reject(StatusCode::URI_TOO_LONG, "request URI too long");
    }
    if let Err(why) = crate::downstream::h2_rules::check(req) {
        return reject(StatusCode::BAD_REQUEST, why);
    }
    if req.headers().len() > limits.max_headers_count as usize {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many request headers",
        );
    }
    // HTTP/1: hyper's read buffer bounds the head only roughly (a read may overshoot it), so
    // the header lines are measured exactly here. HTTP/2's header list is bounded by h2.
    if req.version() < Version::HTTP_2
        && h1_header_bytes(req.headers()) > limits.max_request_headers_bytes as usize
    {
        return reject(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large",
        );
    }
    if let Err(why) = crate::downstream::host_rules::check(req.version(), req.uri(), req.headers())
    {
        return reject(StatusCode::BAD_REQUEST, why);
    }
    Ok(())
}

/// The route phase: the snapshot's router picks a route (a CORS preflight is matched with
/// the method it asks about); its metrics start counting the request. A declared body over
/// the route's limit never reaches the upstream.
fn route<B: http_body::Body>(
    ctx: &mut RequestCtx,
    head: &Head<'_>,
    req: &Request<B>,
) -> Result<Arc<Route>, LocalReply> {
    let asked = if cors::is_preflight(head.method, head.headers) {
        cors::requested_method(head.headers)
    } else {
        None
    };
    let host = host_of(head.authority);
    let view = RequestView {
        host: &host,
        authority: head.authority,
        path: head.path(),
        query: head.query(),
        method: asked.as_ref().unwrap_or(head.method),
        headers: head.headers,
    };
    let Some(route) = ctx.active.config.router.lookup(&view).cloned() else {
        return Err(LocalReply::of(Flag::NR));
    };
    ctx.rec.route = Some(route.clone());
    if let Some(m) = ctx.active.route_metrics.get(route.id) {
        m.active.fetch_add(1, Relaxed);
        ctx.rec.metrics = Some(m.clone());
    }
    if let Some(limit) = route.max_request_body
        && req
            .body()
            .size_hint()
            .exact()
            .or_else(|| content_length(head.headers))
            .is_some_and(|n| n > limit)
    {
        return Err(LocalReply::body_cut(BodyCut::TooLarge));
    }
    Ok(route)
}

/// The CORS preflight phase: a route with `cors` answers a preflight itself.
fn cors_preflight(route: &Route, head: &Head<'_>) -> Option<Response<RespBody>> {
    let c = route.cors.as_ref()?;
    cors::is_preflight(head.method, head.headers).then(|| cors::preflight(c, head.headers))
}

/// How the edge authentication phase ended a request.
enum AuthEnd {
    /// Auth's own answer (a 401, the auth service's denial, `status_on_error`).
    Answer(Box<Response<RespBody>>),
    /// A local reply (the body for `include_body` too large or failed).
    Local(LocalReply),
}

/// The edge authentication phase (`crate::auth`). The request id is settled first so the
/// auth service and the upstream see the same one. `Ok`: the request goes on, with the body
/// bytes `include_body` read (sent upstream before the rest) and the header changes for the
/// client's response.
async fn edge_auth(
    ctx: &mut RequestCtx,
    route: &Route,
    req: &mut Request<ClientBody>,
) -> Result<(Option<bytes::Bytes>, Vec<crate::auth::Mutation>), AuthEnd> {
    if ctx.rec.request_id.is_none() {
        let id = crate::headers::new_request_id();
        req.headers_mut()
            .insert(crate::headers::X_REQUEST_ID.clone(), id.clone());
        ctx.rec.request_id = Some(id);
    }
    let mut read = None;
    if let Some(conf) = crate::auth::include_body(&ctx.active.config, route)
        && let Some(ib) = &conf.include_body
    {
        let declared = content_length(req.headers());
        match crate::auth::body::read(ib, req.body_mut(), declared, conf.timeout).await {
            Ok(r) => {
                ctx.rec.received.add(r.read.len());
                read = Some(r);
            }
            Err(crate::auth::body::BodyProblem::TooLarge) => {
                return Err(AuthEnd::Local(LocalReply::body_cut(BodyCut::TooLarge)));
            }
            Err(crate::auth::body::BodyProblem::Failed) => {
                return Err(AuthEnd::Local(LocalReply::body_cut(BodyCut::Aborted)));
            }
        }
    }
    let authority = Head::of(req).authority.to_string();
    let inputs = crate::auth::Inputs {
        snapshot: &ctx.active.config,
        state: &ctx.active.auth,
        upstreams: &ctx.active.upstreams,
        counters: &ctx.proxy.counters.auth,
        conn: &ctx.conn,
        authority: &authority,
        grpc: ctx.rec.grpc,
    };
    let check_body = read.as_ref().map(|r| r.check.clone());
    match crate::auth::authorize(&inputs, route, req, check_body).await {
        Ok(allowed) => {
            if let Some(f) = allowed.flag {
                ctx.rec.flags.insert(f);
            }
            Ok((
                read.map(|r| r.read).filter(|b| !b.is_empty()),
                allowed.response_headers,
            ))
        }
        Err(denied) => {
            ctx.rec.flags.insert(denied.flag);
            Err(AuthEnd::Answer(denied.resp))
        }
    }
}

/// The rate-limit phase: `Some` is the refusal (429, or the service's failure when it fails
/// closed). A service failure is flagged RLSE either way.
async fn rate_limits<B>(
    ctx: &mut RequestCtx,
    route: &Route,
    req: &Request<B>,
) -> Option<Response<RespBody>> {
    use crate::ratelimit::{Verdict, admit};
    let rec = &mut ctx.rec;
    match admit(&ctx.active.rate_limits, route, req, rec.client).await {
        Verdict::Allow => None,
        Verdict::FailedOpen => {
            rec.rate_limit_service_failed(&ctx.proxy);
            None
        }
        Verdict::Deny { flag, headers } => {
            if flag == Flag::RLSE {
                rec.rate_limit_service_failed(&ctx.proxy);
            }
            if let Some(m) = &rec.metrics {
                m.rate_limited.fetch_add(1, Relaxed);
            }
            rec.flags.insert(flag);
            Some(Verdict::reply(flag, headers.as_ref(), rec.grpc))
        }
    }
}

/// The size of a request's HTTP/1 header lines (`name: value\r\n` each).
fn h1_header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// A request's `Content-Length`, when it is one valid number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of a future returned by a three-argument async fn (no value needed).
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
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

    #[test]
    fn head_reads_authority_from_uri_or_host() {
        let req = Request::builder()
            .uri("/a/b?x=1")
            .header("host", "Example.com:8080")
            .body(())
            .unwrap();
        let h = Head::of(&req);
        assert_eq!(h.authority, "Example.com:8080");
        assert_eq!(
            (h.path(), h.query(), h.path_and_query()),
            ("/a/b", Some("x=1"), "/a/b?x=1")
        );
        assert!(!h.http2);
        let req = Request::builder()
            .uri("http://a.example/p")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        let h = Head::of(&req);
        assert_eq!((h.authority, h.http2), ("a.example", true));
    }
}
