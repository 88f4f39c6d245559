//! The Prometheus text format: label escaping, family headers, and the rendering of every
//! data-plane family of reference §8 at scrape time. The admin API's `GET /metrics` calls
//! [`render`] and adds the control plane's own families (reloads, config generation, git).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::atomic::Ordering::Relaxed;

use crate::state::Proxy;
use crate::telemetry::metrics::{CLASSES, RouteMetrics, UpstreamMetrics};
use crate::upstream::UpstreamState;

/// An upstream counter family: name, help, and how to read it.
type UpstreamCounter = (&'static str, &'static str, fn(&UpstreamMetrics) -> u64);

/// Renders every data-plane family (routes, upstreams, endpoints, breakers, connections,
/// overload, rate-limit service errors, rejected requests, access-log drops) into `out`, from
/// the active snapshot so that each route's and upstream's series exist (at 0) as soon as the
/// route or upstream does.
pub fn render(out: &mut String, proxy: &Proxy) {
    let active = proxy.active();
    let reg = &proxy.metrics;

    let mut routes: Vec<(String, Arc<RouteMetrics>)> = active
        .config
        .routes
        .iter()
        .zip(active.route_metrics.iter())
        .map(|(r, m)| (r.name.clone(), m.clone()))
        .collect();
    routes.dedup_by(|a, b| a.0 == b.0);
    routes.push(("(no_route)".to_string(), reg.no_route.clone()));
    render_routes(out, &routes);

    render_upstreams(out, &active);
    render_downstream(out, proxy);
}

/// Upstream families: responses by class, counters, endpoints by state, breakers.
fn render_upstreams(out: &mut String, active: &crate::state::Active) {
    let ups: Vec<(&str, &UpstreamState, &UpstreamMetrics)> = active
        .config
        .upstreams
        .iter()
        .zip(active.upstreams.iter())
        .zip(active.upstream_metrics.iter())
        .map(|((c, s), m)| (c.name.as_str(), &**s, &**m))
        .collect();
    header(
        out,
        "portico_upstream_requests_total",
        "counter",
        "Upstream responses by status class.",
    );
    for (name, _, m) in &ups {
        for (i, c) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "portico_upstream_requests_total{{upstream=\"{}\",code=\"{c}\"}} {}",
                label(name),
                m.requests.get(i)
            );
        }
    }
    let simple: [UpstreamCounter; 3] = [
        (
            "portico_upstream_connect_failures_total",
            "Failed connection attempts.",
            |m| m.connect_failures.load(Ordering::Relaxed),
        ),
        (
            "portico_circuit_breaker_overflows_total",
            "Requests (and retries, by max_retries) refused by a circuit breaker.",
            |m| m.overflows.load(Ordering::Relaxed),
        ),
        (
            "portico_retry_budget_exhausted_total",
            "Retries not made (budget, max_retries or deadline).",
            |m| m.retry_budget_exhausted.load(Ordering::Relaxed),
        ),
    ];
    for (metric, help, get) in simple {
        header(out, metric, "counter", help);
        for (name, _, m) in &ups {
            let _ = writeln!(out, "{metric}{{upstream=\"{}\"}} {}", label(name), get(m));
        }
    }
    header(
        out,
        "portico_outlier_ejections_total",
        "counter",
        "Endpoints ejected by outlier detection.",
    );
    for (name, state, _) in &ups {
        let n = state.ejections_total.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "portico_outlier_ejections_total{{upstream=\"{}\"}} {n}",
            label(name)
        );
    }
    header(
        out,
        "portico_upstream_endpoints",
        "gauge",
        "Endpoints by state.",
    );
    for (name, state, _) in &ups {
        let counts = state.endpoint_state_counts();
        for (st, n) in counts {
            let _ = writeln!(
                out,
                "portico_upstream_endpoints{{upstream=\"{}\",state=\"{st}\"}} {n}",
                label(name)
            );
        }
    }
    header(
        out,
        "portico_upstream_active_requests",
        "gauge",
        "Requests in flight to the upstream.",
    );
    for (name, state, _) in &ups {
        let _ = writeln!(
            out,
            "portico_upstream_active_requests{{upstream=\"{}\"}} {}",
            label(name),
            state.breakers.requests.load(Ordering::Relaxed)
        );
    }
    header(
        out,
        "portico_upstream_connections",
        "gauge",
        "Open upstream connections.",
    );
    for (name, state, _) in &ups {
        let _ = writeln!(
            out,
            "portico_upstream_connections{{upstream=\"{}\"}} {}",
            label(name),
            state.breakers.connections.load(Ordering::Relaxed)
        );
    }
}

/// Downstream and proxy-wide families: connections, overload, rate-limit service errors,
/// rejected requests, access-log drops.
fn render_downstream(out: &mut String, proxy: &Proxy) {
    let reg = &proxy.metrics;
    header(
        out,
        "portico_downstream_connections",
        "gauge",
        "Open downstream connections.",
    );
    for (listener, n) in reg.listener_gauges() {
        let _ = writeln!(
            out,
            "portico_downstream_connections{{listener=\"{}\"}} {}",
            label(&listener),
            n.max(0)
        );
    }
    header(
        out,
        "portico_downstream_connections_total",
        "counter",
        "Downstream connections accepted.",
    );
    let _ = writeln!(
        out,
        "portico_downstream_connections_total {}",
        reg.downstream_connections_total.load(Ordering::Relaxed)
    );
    header(
        out,
        "portico_http3_retries_total",
        "counter",
        "QUIC Retry packets sent to validate client addresses under a handshake flood.",
    );
    let _ = writeln!(
        out,
        "portico_http3_retries_total {}",
        reg.http3_retries_total.load(Ordering::Relaxed)
    );
    let overload = &proxy.overload;
    header(
        out,
        "portico_downstream_connections_active",
        "gauge",
        "Open downstream connections, all listeners (what --overload-max-connections counts).",
    );
    let _ = writeln!(
        out,
        "portico_downstream_connections_active {}",
        overload.connections()
    );
    header(
        out,
        "portico_overload_state",
        "gauge",
        "1 while the overload manager's threshold for the resource is crossed.",
    );
    let state = overload.state();
    for (resource, bit) in [
        ("memory", crate::downstream::overload::MEMORY),
        ("connections", crate::downstream::overload::CONNECTIONS),
    ] {
        let _ = writeln!(
            out,
            "portico_overload_state{{resource=\"{resource}\"}} {}",
            u8::from(state & bit != 0)
        );
    }
    header(
        out,
        "portico_overload_actions_total",
        "counter",
        "Load shed by the overload manager, by action.",
    );
    let a = &overload.actions;
    for (action, n) in [
        ("stop_accepting", &a.stop_accepting),
        ("reject_connection", &a.reject_connection),
        ("reject_request", &a.reject_request),
        ("disable_keepalive", &a.disable_keepalive),
    ] {
        let _ = writeln!(
            out,
            "portico_overload_actions_total{{action=\"{action}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    if overload.conf().max_memory_bytes.is_some() {
        header(
            out,
            "portico_overload_memory_bytes",
            "gauge",
            "Resident memory at the overload manager's last sample.",
        );
        let _ = writeln!(out, "portico_overload_memory_bytes {}", overload.rss());
    }
    header(
        out,
        "portico_rate_limit_service_errors_total",
        "counter",
        "Rate limit service calls that failed (flag RLSE).",
    );
    let _ = writeln!(
        out,
        "portico_rate_limit_service_errors_total {}",
        proxy
            .counters
            .rate_limit_service_errors
            .load(Ordering::Relaxed)
    );
    render_auth(out, &proxy.counters.auth);
    header(
        out,
        "portico_downstream_rejected_total",
        "counter",
        "Requests rejected as invalid before routing (DPE).",
    );
    for (i, c) in CLASSES.iter().enumerate() {
        let _ = writeln!(
            out,
            "portico_downstream_rejected_total{{code=\"{c}\"}} {}",
            reg.rejected.get(i)
        );
    }
    header(
        out,
        "portico_access_log_dropped_total",
        "counter",
        "Access log lines dropped (queue full).",
    );
    let _ = writeln!(
        out,
        "portico_access_log_dropped_total {}",
        proxy.access_log.dropped.load(Ordering::Relaxed)
    );
}

/// Escapes a label value for the text format.
pub fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// `portico_auth_checks_total` and `portico_jwt_validations_total` (reference §9).
fn render_auth(out: &mut String, c: &crate::auth::AuthCounters) {
    header(
        out,
        "portico_auth_checks_total",
        "counter",
        "External authorization checks by result (allowed, denied, error).",
    );
    for (result, v) in [
        ("allowed", &c.allowed),
        ("denied", &c.denied),
        ("error", &c.error),
    ] {
        let _ = writeln!(
            out,
            "portico_auth_checks_total{{result=\"{result}\"}} {}",
            v.load(Relaxed)
        );
    }
    header(
        out,
        "portico_jwt_validations_total",
        "counter",
        "JWT validations by result (valid, rejected, missing).",
    );
    for (result, v) in [
        ("valid", &c.jwt_valid),
        ("rejected", &c.jwt_rejected),
        ("missing", &c.jwt_missing),
    ] {
        let _ = writeln!(
            out,
            "portico_jwt_validations_total{{result=\"{result}\"}} {}",
            v.load(Relaxed)
        );
    }
}

/// Writes a `# HELP`/`# TYPE` header.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A per-route counter family: name, help, and how to read it.
type RouteCounter = (&'static str, &'static str, fn(&RouteMetrics) -> u64);

/// Renders per-route families for `routes` (name, metrics), in order.
pub fn render_routes(out: &mut String, routes: &[(String, Arc<RouteMetrics>)]) {
    header(
        out,
        "portico_requests_total",
        "counter",
        "Requests by route and status class.",
    );
    for (name, m) in routes {
        for (i, c) in CLASSES.iter().enumerate() {
            let _ = writeln!(
                out,
                "portico_requests_total{{route=\"{}\",code=\"{c}\"}} {}",
                label(name),
                m.requests.get(i)
            );
        }
    }
    header(
        out,
        "portico_request_duration_seconds",
        "histogram",
        "Request duration, first byte in to last byte out.",
    );
    for (name, m) in routes {
        m.duration.render(
            out,
            "portico_request_duration_seconds",
            &format!("route=\"{}\"", label(name)),
        );
    }
    let simple: [RouteCounter; 4] = [
        ("portico_retries_total", "Retries made.", |m| {
            m.retries.load(Ordering::Relaxed)
        }),
        (
            "portico_rate_limited_total",
            "Requests refused by a rate limit.",
            |m| m.rate_limited.load(Ordering::Relaxed),
        ),
        (
            "portico_route_bytes_received_total",
            "Request body bytes received.",
            |m| m.bytes_received.load(Ordering::Relaxed),
        ),
        (
            "portico_route_bytes_sent_total",
            "Response body bytes sent.",
            |m| m.bytes_sent.load(Ordering::Relaxed),
        ),
    ];
    for (metric, help, get) in simple {
        header(out, metric, "counter", help);
        for (name, m) in routes {
            let _ = writeln!(out, "{metric}{{route=\"{}\"}} {}", label(name), get(m));
        }
    }
    header(
        out,
        "portico_shadow_requests_total",
        "counter",
        "Mirrored request copies by result.",
    );
    for (name, m) in routes {
        for (result, v) in [
            ("sent", &m.shadow_sent),
            ("dropped", &m.shadow_dropped),
            ("failed", &m.shadow_failed),
        ] {
            let _ = writeln!(
                out,
                "portico_shadow_requests_total{{route=\"{}\",result=\"{result}\"}} {}",
                label(name),
                v.load(Ordering::Relaxed)
            );
        }
    }
    header(
        out,
        "portico_active_requests",
        "gauge",
        "Requests in flight.",
    );
    for (name, m) in routes {
        let _ = writeln!(
            out,
            "portico_active_requests{{route=\"{}\"}} {}",
            label(name),
            m.active.load(Ordering::Relaxed).max(0)
        );
    }
}
