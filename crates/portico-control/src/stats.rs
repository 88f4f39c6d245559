//! `GET /stats`: one JSON answer with everything the dashboard (`GET /`) shows — the applied
//! config (generation, source, last reload error, reload history), per-route counters and
//! latency quantiles (and the same for requests that matched no route), the sampled 5-minute
//! series of each route (`series`), and upstream endpoint health with recent connect failures. Built from the running snapshot and the other views, so it
//! says exactly what `/config`, `/upstreams` and `/metrics` say. `time_ms` (the server's
//! clock, Unix milliseconds) lets a client turn the differences between two answers into rates.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use portico_proxy::telemetry::metrics::{CLASSES, Histogram, RouteMetrics};
use serde_json::{Map, Value, json};

use crate::reload::Controller;

/// The dashboard page, embedded in the binary.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// A latency quantile in milliseconds: `null` without observations, `"+Inf"` above the
/// largest histogram bucket.
fn quantile_ms(h: &Histogram, q: f64) -> Value {
    match h.quantile(q) {
        None => Value::Null,
        Some(s) if s.is_finite() => json!((s * 1e6).round() / 1e3),
        Some(_) => json!("+Inf"),
    }
}

fn route_stats(name: &str, upstream: Value, m: &RouteMetrics) -> Value {
    let requests: Map<String, Value> = CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| ((*c).to_string(), json!(m.requests.get(i))))
        .collect();
    json!({
        "name": name,
        "upstream": upstream,
        "requests": requests,
        "total": m.requests.total(),
        "errors": m.requests.get(4),
        "p50_ms": quantile_ms(&m.duration, 0.5),
        "p99_ms": quantile_ms(&m.duration, 0.99),
        "active": m.active.load(Ordering::Relaxed).max(0),
    })
}

pub fn stats(ctl: &Controller) -> Value {
    // `/config` and the routes must describe the same generation: retry if a reload lands
    // between the two reads.
    let (active, cfg) = {
        let mut tries = 0;
        loop {
            let active = ctl.proxy.active();
            let cfg = crate::views::config(ctl);
            tries += 1;
            if cfg["generation"] == json!(active.generation) || tries >= 3 {
                break (active, cfg);
            }
        }
    };

    // Route metrics are keyed by name in the registry, so routes sharing a name share them:
    // list each name once, in match order.
    let mut seen = HashSet::new();
    let routes: Vec<Value> = active
        .config
        .routes
        .iter()
        .zip(active.route_metrics.iter())
        .filter(|(r, _)| seen.insert(r.name.clone()))
        .map(|(r, m)| route_stats(&r.name, crate::views::upstream_name(&active.config, r), m))
        .collect();
    let no_route = &ctl.proxy.metrics.no_route;

    let mut upstreams = crate::views::upstreams(&active)
        .get("upstreams")
        .cloned()
        .unwrap_or_else(|| json!([]));
    // What the endpoint states alone do not say: whether anything probes them, and whether
    // connecting to them has been failing lately.
    if let Some(list) = upstreams.as_array_mut() {
        for (v, conf) in list.iter_mut().zip(active.config.upstreams.iter()) {
            let failures = ctl
                .proxy
                .metrics
                .upstream(&conf.name)
                .connect_failures
                .load(Ordering::Relaxed);
            v["health_checks"] = json!(conf.health_checks.len());
            v["outlier_detection"] = json!(conf.outlier.is_some());
            v["connect_failures_total"] = json!(failures);
            v["connect_failures_recent"] =
                json!(ctl.series.recent_connect_failures(&conf.name, failures));
        }
    }

    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    json!({
        "time_ms": time_ms,
        "generation": active.generation,
        "applied_at": cfg["applied_at"],
        "source": cfg["source"],
        "last_error": cfg["last_error"],
        "history": cfg["history"],
        "routes": routes,
        "unmatched": route_stats("(no route)", Value::Null, no_route),
        "series": ctl.series.json(),
        "upstreams": upstreams,
        "certificates": certificates(ctl, &active, &cfg),
    })
}

/// Every certificate being served (`host`, `not_after` in Unix seconds) and every ACME Host
/// (with its `status` line from `/config` and its `acme` details), by hostname.
fn certificates(ctl: &Controller, active: &portico_proxy::Active, cfg: &Value) -> Value {
    let mut out: Vec<Value> = active
        .tls
        .expiries()
        .into_iter()
        .map(|(host, not_after)| json!({ "host": host, "not_after": not_after }))
        .collect();
    if ctl.acme.get().is_some() {
        for h in active.config.hosts.iter().filter(|h| h.acme.is_some()) {
            let host = h.hostname.to_string();
            let res = cfg["resources"]
                .as_array()
                .and_then(|rs| {
                    rs.iter()
                        .find(|r| r["kind"] == "Host" && r["name"] == h.name.as_str())
                })
                .cloned()
                .unwrap_or_default();
            match out.iter_mut().find(|c| c["host"] == host.as_str()) {
                Some(c) => {
                    c["status"] = res["status"].clone();
                    c["acme"] = res["acme"].clone();
                }
                None => out.push(json!({
                    "host": host,
                    "not_after": null,
                    "status": res["status"],
                    "acme": res["acme"],
                })),
            }
        }
    }
    json!(out)
}
