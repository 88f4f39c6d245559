//! "What happens to this request?": the same answer for `portico explain` and
//! `GET /explain` (docs/reference.md §7): the route, the upstream, the rewritten path, the policies
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
        "auth": auth_steps(snapshot, route),
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

/// The edge authentication steps a route's requests take (reference §9), in order: JWT, then
/// the external authorization service (or that the route bypasses it).
fn auth_steps(snapshot: &Snapshot, route: &portico_config::snapshot::Route) -> Value {
    let mut steps = Vec::new();
    if let Some(j) = &route.auth.jwt
        && let Some(p) = snapshot.jwt_providers.get(j.provider)
    {
        steps.push(json!({
            "step": "jwt",
            "provider": p.name,
            "issuer": p.issuer,
            "required": j.required,
        }));
    }
    if let Some(a) = &snapshot.auth_service {
        if route.auth.bypass {
            steps.push(json!({ "step": "external_authorization", "bypassed": true }));
        } else {
            steps.push(json!({
                "step": "external_authorization",
                "service": a.name,
                "proto": match a.proto {
                    portico_config::snapshot::AuthProto::Http => "http",
                    portico_config::snapshot::AuthProto::Grpc => "grpc",
                },
                "upstream": snapshot.upstreams.get(a.upstream).map(|u| u.name.clone()),
                "failure_mode_allow": a.failure_mode_allow,
            }));
        }
    }
    Value::Array(steps)
}

/// The `retry_on` conditions by their configuration names, in the order of reference §3.3.
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

/// The policies of an `explain` answer as readable lines (`portico explain` text output),
/// followed by the canary group when the route is in one.
pub fn policy_lines(v: &Value) -> Vec<String> {
    let p = &v["policies"];
    let ms = |v: &Value| v.as_u64().map(|n| format!("{n} ms"));
    let mut out = Vec::new();
    out.push(format!(
        "timeout: {}",
        match p["timeout_ms"].as_u64() {
            Some(0) | None => "none".to_string(),
            Some(n) => format!("{n} ms"),
        }
    ));
    if let Some(t) = ms(&p["idle_timeout_ms"]) {
        out.push(format!("idle timeout: {t}"));
    }
    if let Some(r) = p["retry_policy"].as_object() {
        let on: Vec<&str> = r
            .get("retry_on")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let mut line = format!(
            "retries: up to {} on {}",
            r.get("num_retries").and_then(|n| n.as_u64()).unwrap_or(0),
            if on.is_empty() {
                "-".to_string()
            } else {
                on.join(", ")
            }
        );
        if let Some(t) = r.get("per_try_timeout_ms").and_then(ms) {
            line.push_str(&format!(", {t} per try"));
        }
        out.push(line);
    }
    match p["rate_limits"].as_u64() {
        Some(0) | None => {}
        Some(n) => out.push(format!(
            "rate limits: {n} rule{}",
            if n == 1 { "" } else { "s" }
        )),
    }
    if let Some(c) = p["cors_policy"].as_object() {
        let origins: Vec<&str> = c
            .get("origins")
            .and_then(|o| o.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        out.push(format!("CORS: origins {}", origins.join(", ")));
    }
    if let Some(lb) = p["load_balancer"]["policy"].as_str() {
        out.push(format!("load balancing: {lb}"));
    }
    if let Some(cb) = p["circuit_breakers"].as_object() {
        let n = |k: &str| cb.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        out.push(format!(
            "circuit breakers: {} connections, {} pending, {} requests, {} retries",
            n("max_connections"),
            n("max_pending_requests"),
            n("max_requests"),
            n("max_retries")
        ));
    }
    if p["shadow"] == json!(true) {
        out.push("shadow: a share of requests is mirrored".into());
    }
    if p["compression"] == json!(true) {
        out.push("compression: on".into());
    }
    if let Some(h) = p["host_rewrite"].as_str() {
        out.push(format!("host rewritten to: {h}"));
    }
    if p["grpc"] == json!(true) {
        out.push("gRPC upstream (HTTP/2)".into());
    }
    for step in p["auth"].as_array().map_or(&[][..], |a| &a[..]) {
        let s = |k: &str| step[k].as_str().unwrap_or("?").to_string();
        match step["step"].as_str() {
            Some("jwt") => out.push(format!(
                "JWT: provider {}, token {}",
                s("provider"),
                if step["required"] == json!(false) {
                    "optional"
                } else {
                    "required"
                }
            )),
            Some("external_authorization") if step["bypassed"] == json!(true) => {
                out.push("external authorization: bypassed (bypass_auth)".into())
            }
            Some("external_authorization") => out.push(format!(
                "external authorization: AuthService {} ({}, {}){}",
                s("service"),
                s("proto"),
                s("upstream"),
                if step["failure_mode_allow"] == json!(true) {
                    ", fails open"
                } else {
                    ""
                }
            )),
            _ => {}
        }
    }
    if let Some(group) = v["canary_group"].as_array() {
        let members: Vec<String> = group
            .iter()
            .map(|g| {
                format!(
                    "{} {}%",
                    g["route"].as_str().unwrap_or("?"),
                    (g["weight"].as_f64().unwrap_or(0.0) * 10.0).round() / 10.0
                )
            })
            .collect();
        out.push(format!("canary group: {}", members.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_and_canary_group_read_as_lines() {
        let v = json!({
            "policies": {
                "timeout_ms": 15000, "idle_timeout_ms": null,
                "retry_policy": { "retry_on": ["5xx", "reset"], "num_retries": 2, "per_try_timeout_ms": 500 },
                "rate_limits": 1, "load_balancer": { "policy": "round_robin" },
                "circuit_breakers": { "max_connections": 1, "max_pending_requests": 2, "max_requests": 3, "max_retries": 4 },
            },
            "canary_group": [{ "route": "a", "weight": 20.0 }, { "route": "b", "weight": 80.0 }],
        });
        assert_eq!(
            policy_lines(&v),
            [
                "timeout: 15000 ms",
                "retries: up to 2 on 5xx, reset, 500 ms per try",
                "rate limits: 1 rule",
                "load balancing: round_robin",
                "circuit breakers: 1 connections, 2 pending, 3 requests, 4 retries",
                "canary group: a 20%, b 80%",
            ]
        );
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    fn snap(text: &str) -> Snapshot {
        portico_config::load(&[portico_config::ConfigSource::Inline {
            name: "x.yaml".into(),
            text: text.into(),
            base_dir: std::env::temp_dir(),
        }])
        .snapshot
        .expect("loads")
    }

    #[test]
    fn explain_shows_the_auth_steps_of_a_route() {
        let s = snap(
            "apiVersion: portico.dev/v1\nkind: AuthService\nmetadata: { name: auth }\nspec: { auth_service: \"127.0.0.1:3000\", proto: grpc }\n---\n\
             apiVersion: portico.dev/v1\nkind: JWTProvider\nmetadata: { name: main }\nspec: { issuer: \"https://i\", jwks_uri: \"http://127.0.0.1:9/k\" }\n---\n\
             apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: api }\nspec: { prefix: /api/, service: \"127.0.0.1:8000\", jwt: { provider: main, required: false } }\n---\n\
             apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: open }\nspec: { prefix: /open/, service: \"127.0.0.1:8000\", bypass_auth: true }\n",
        );
        let v = explain(&s, "GET", "http://h/api/x", &[]).expect("explain");
        let steps = v["policies"]["auth"].as_array().expect("steps");
        assert_eq!(steps[0]["step"], "jwt");
        assert_eq!(steps[0]["required"], false);
        assert_eq!(steps[1]["service"], "auth");
        assert_eq!(steps[1]["proto"], "grpc");
        let lines = policy_lines(&v);
        assert!(
            lines.contains(&"JWT: provider main, token optional".to_string()),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("external authorization: AuthService auth (grpc, ")),
            "{lines:?}"
        );
        let v = explain(&s, "GET", "http://h/open/x", &[]).expect("explain");
        assert_eq!(v["policies"]["auth"][0]["bypassed"], true);
        assert!(
            policy_lines(&v)
                .contains(&"external authorization: bypassed (bypass_auth)".to_string())
        );
    }
}
