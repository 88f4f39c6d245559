//! JSON views of the running state for the admin API: `/config`, `/routes`, `/upstreams`.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use portico_config::snapshot::{PathMatch, Route, RouteAction, Snapshot, ValueMatch};
use portico_proxy::Active;
use portico_proxy::telemetry::access_log::rfc3339_millis;
use serde_json::{Value, json};

use crate::reload::Controller;

fn ts(t: SystemTime) -> String {
    rfc3339_millis(t)
}

pub fn config(ctl: &Controller) -> Value {
    let active = ctl.proxy.active();
    let st = ctl.status.load();
    let last_error = st.last_error.as_ref().map(|e| {
        let mut v = json!({ "at": ts(e.at), "errors": e.errors });
        if let Some(c) = &e.commit {
            v["commit"] = json!(c);
        }
        v
    });
    let mut source = ctl.source_desc.clone();
    if let Some(c) = &st.commit {
        source["commit"] = json!(c);
    }
    let mut resources = st.resources.clone();
    acme_status(ctl, &active, &mut resources);
    json!({
        "generation": active.generation,
        "source": source,
        "applied_at": ts(active.applied_at),
        "resources": resources,
        "last_error": last_error,
        "history": history(ctl),
    })
}

/// An ACME Host's `status` is its certificate's state (issued, ordering, the last failure
/// with its ACME problem document); the details are under `acme`.
fn acme_status(ctl: &Controller, active: &Active, resources: &mut [Value]) {
    let Some(m) = ctl.acme.get() else { return };
    for h in &active.config.hosts {
        let (portico_config::route::HostGlob::Exact(name), Some(_)) = (&h.hostname, &h.acme) else {
            continue;
        };
        let Some((summary, details)) = m.status(name) else {
            continue;
        };
        for r in resources.iter_mut() {
            if r["kind"] == "Host" && r["name"] == h.name.as_str() {
                r["status"] = json!(summary);
                r["acme"] = details.clone();
            }
        }
    }
}

/// The last reloads, newest first: `{at, trigger, generation, result, errors, commit?, files?}`.
pub fn history(ctl: &Controller) -> Value {
    let entries: Vec<Value> = ctl
        .history()
        .iter()
        .rev()
        .map(|h| {
            let mut v = json!({
                "at": ts(h.at),
                "trigger": h.trigger,
                "generation": h.generation,
                "result": if h.applied { "applied" } else { "rejected" },
                "errors": h.errors,
            });
            if let Some(c) = &h.commit {
                v["commit"] = json!(c);
            }
            if !h.files.is_empty() {
                v["files"] = json!(h.files);
            }
            v
        })
        .collect();
    Value::Array(entries)
}

fn value_match(v: &ValueMatch) -> Value {
    match v {
        ValueMatch::Present => json!({ "present": true }),
        ValueMatch::Exact(s) => json!({ "exact": s }),
        ValueMatch::Regex(r) => json!({ "regex": r.as_str() }),
    }
}

/// The match of a route as JSON (also used by `explain`).
pub fn route_match(r: &Route) -> Value {
    let mut m = serde_json::Map::new();
    match &r.path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => {
            m.insert("prefix".into(), json!(prefix));
            m.insert("case_sensitive".into(), json!(case_sensitive));
        }
        PathMatch::Exact {
            path,
            case_sensitive,
        } => {
            m.insert("exact".into(), json!(path));
            m.insert("case_sensitive".into(), json!(case_sensitive));
        }
        PathMatch::Regex { source, .. } => {
            m.insert("regex".into(), json!(source));
        }
    }
    if let Some(method) = &r.method {
        m.insert("method".into(), json!(method.as_str()));
    }
    if !r.headers.is_empty() {
        let h: serde_json::Map<String, Value> = r
            .headers
            .iter()
            .map(|h| (h.name.as_str().to_string(), value_match(&h.value)))
            .collect();
        m.insert("headers".into(), Value::Object(h));
    }
    if !r.query.is_empty() {
        let q: serde_json::Map<String, Value> = r
            .query
            .iter()
            .map(|q| (q.name.clone(), value_match(&q.value)))
            .collect();
        m.insert("query".into(), Value::Object(q));
    }
    m.insert("precedence".into(), json!(r.precedence));
    Value::Object(m)
}

pub fn upstream_name(snapshot: &Snapshot, r: &Route) -> Value {
    match &r.action {
        RouteAction::Forward { upstream } => snapshot
            .upstreams
            .get(*upstream)
            .map(|u| json!(u.name))
            .unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

pub fn routes(active: &Active) -> Value {
    let snap = &active.config;
    let routes: Vec<Value> = snap
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "hostname": r.hostname.to_string(),
                "match": route_match(r),
                "upstream": upstream_name(snap, r),
                "weight": r.effective_weight,
                "file": r.file,
                "line": r.line,
            })
        })
        .collect();
    json!({ "routes": routes })
}

pub fn upstreams(active: &Active) -> Value {
    let ups: Vec<Value> = active
        .upstreams
        .iter()
        .map(|u| {
            let set = u.endpoints.load();
            let eps: Vec<Value> = set
                .endpoints
                .iter()
                .map(|e| {
                    json!({
                        "address": e.addr.to_string(),
                        "state": e.health().as_str(),
                        "active_requests": e.active.load(Ordering::Relaxed),
                        "weight": e.weight(),
                        "ejections": e.ejections.load(Ordering::Relaxed),
                    })
                })
                .collect();
            let cb = &u.conf.circuit_breakers;
            json!({
                "name": u.conf.name,
                "endpoints": eps,
                "ejections_total": u.ejections_total.load(Ordering::Relaxed),
                "circuit_breakers": {
                    "max_connections": cb.max_connections,
                    "max_pending_requests": cb.max_pending_requests,
                    "max_requests": cb.max_requests,
                    "max_retries": cb.max_retries,
                },
            })
        })
        .collect();
    json!({ "upstreams": ups })
}
