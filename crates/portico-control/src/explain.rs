//! "What happens to this request?": the same answer for `portico explain` and
//! `GET /explain` (CONTRACT §7): the route, the upstream, the rewritten path, the policies
//! that apply, and why earlier routes did not match.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use portico_config::RequestView;
use portico_config::snapshot::{
    CorsConf, HashOn, LbConf, LbPolicy, OriginMatch, RetryOn, RouteAction, Snapshot,
};
use serde_json::{Value, json};

use crate::views::{route_match, upstream_name};

/// Explains `method url` with `headers` (`Name: value` strings) against `snapshot`.
pub fn explain(
    snapshot: &Snapshot,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<Value, String> {
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("invalid method {method:?}"))?;
    let uri: Uri = url.parse().map_err(|_| format!("invalid URL {url:?}"))?;
    let mut map = HeaderMap::new();
    for h in headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| format!("invalid header {h:?}: expected 'Name: value'"))?;
        let name = HeaderName::from_bytes(n.trim().as_bytes())
            .map_err(|_| format!("invalid header name {n:?}"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("invalid header value {v:?}"))?;
        map.append(name, value);
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            map.get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let host = portico_config::request_semantics::host_of(&authority).into_owned();
    let view = RequestView {
        host: &host,
        authority: &authority,
        path: uri.path(),
        query: uri.query(),
        method: &method,
        headers: &map,
    };
    let ex = snapshot.router.explain(&view);
    let rejected: Vec<Value> = ex
        .rejected
        .iter()
        .filter_map(|(id, reason)| {
            snapshot
                .routes
                .get(*id)
                .map(|r| json!({ "route": r.name, "reason": reason }))
        })
        .collect();
    let Some(route) = ex.chosen.and_then(|id| snapshot.routes.get(id)) else {
        return Ok(json!({
            "route": Value::Null,
            "upstream": Value::Null,
            "rewritten_path": Value::Null,
            "policies": {},
            "rejected": rejected,
            "reply": { "status": 404, "flag": "NR" },
        }));
    };
    let rewritten = portico_config::request_semantics::rewrite_path(route, &uri);
    let group: Vec<Value> = snapshot
        .routes
        .iter()
        .filter(|r| r.group == route.group)
        .map(|r| json!({ "route": r.name, "weight": r.effective_weight }))
        .collect();
    let action = match &route.action {
        RouteAction::Forward { .. } => json!("forward"),
        RouteAction::Redirect(r) => json!({ "redirect": { "code": r.code, "https": r.https } }),
        RouteAction::Direct(d) => json!({ "direct_response": { "status": d.status } }),
    };
    let policies = json!({
        "timeout_ms": route.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        "idle_timeout_ms": route.idle_timeout.map(|t| t.as_millis() as u64),
        "retry_policy": route.retry.as_ref().map(|r| json!({
            "retry_on": retry_on_names(r.retry_on),
            "num_retries": r.num_retries,
            "per_try_timeout_ms": r.per_try_timeout.map(|t| t.as_millis() as u64),
        })),
        "rate_limits": route.rate_limits.len(),
        "cors": route.cors.is_some(),
        "cors_policy": route.cors.as_ref().map(cors_json),
        "load_balancer": route
            .upstream()
            .and_then(|u| snapshot.upstreams.get(u))
            .map(|u| lb_json(&u.lb)),
        "circuit_breakers": route
            .upstream()
            .and_then(|u| snapshot.upstreams.get(u))
            .map(|u| {
                let cb = &u.circuit_breakers;
                json!({
                    "max_connections": cb.max_connections,
                    "max_pending_requests": cb.max_pending_requests,
                    "max_requests": cb.max_requests,
                    "max_retries": cb.max_retries,
                })
            }),
        "shadow": route.shadow.is_some(),
        "compression": route.compression.as_ref().map(|c| c.enabled),
        "host_rewrite": route.host_rewrite.as_ref().and_then(|h| h.to_str().ok()),
        "grpc": route.grpc,
    });
    Ok(json!({
        "route": route.name,
        "upstream": upstream_name(snapshot, route),
        "rewritten_path": rewritten.as_str(),
        "action": action,
        "match": route_match(route),
        "canary_group": if group.len() > 1 { Value::Array(group) } else { Value::Null },
        "policies": policies,
        "rejected": rejected,
    }))
}

/// The `retry_on` conditions by their configuration names, in the order of CONTRACT §3.3.
fn retry_on_names(on: RetryOn) -> Vec<&'static str> {
    [
        "5xx",
        "gateway-error",
        "connect-failure",
        "reset",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    ]
    .into_iter()
    .filter(|n| RetryOn::flag(n).is_some_and(|f| on.has(f)))
    .collect()
}

fn cors_json(c: &CorsConf) -> Value {
    json!({
        "origins": c.origins.iter().map(|o| match o {
            OriginMatch::Any => "*".to_string(),
            OriginMatch::Exact(s) => s.clone(),
            OriginMatch::Glob(re) => format!("regex {}", re.as_str()),
        }).collect::<Vec<_>>(),
        "methods": c.methods,
        "headers": c.headers,
        "exposed_headers": c.exposed_headers,
        "credentials": c.credentials,
        "max_age": c.max_age,
    })
}

fn lb_json(lb: &LbConf) -> Value {
    let policy = match lb.policy {
        LbPolicy::RoundRobin => "round_robin",
        LbPolicy::LeastRequest => "least_request",
        LbPolicy::Ewma => "ewma",
        LbPolicy::Random => "random",
        LbPolicy::RingHash => "ring_hash",
        LbPolicy::Maglev => "maglev",
    };
    let hash_on = lb.hash_on.as_ref().map(|h| match h {
        HashOn::Header(n) => json!({ "header": n.as_str() }),
        HashOn::Cookie { name, ttl } => json!({
            "cookie": { "name": name, "ttl_ms": ttl.map(|t| t.as_millis() as u64) }
        }),
        HashOn::SourceIp => json!({ "source_ip": true }),
    });
    json!({
        "policy": policy,
        "hash_on": hash_on,
        "healthy_panic_threshold": lb.healthy_panic_threshold,
    })
}

/// `GET /explain?method=M&url=U&header=N:V...`
pub fn from_query(snapshot: &Snapshot, query: &str) -> Result<Value, String> {
    let mut method = "GET".to_string();
    let mut url = None;
    let mut headers = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "method" => method = v.into_owned(),
            "url" => url = Some(v.into_owned()),
            "header" => headers.push(v.into_owned()),
            _ => {}
        }
    }
    let url = url.ok_or("missing url parameter")?;
    explain(snapshot, &method, &url, &headers)
}
