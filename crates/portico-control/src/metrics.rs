//! `GET /metrics`: every family of reference §8 (and more) in the Prometheus text format,
//! rendered from the running snapshot so each route's and upstream's series exist (at 0) as
//! soon as the route or upstream does.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use portico_proxy::metrics::{CLASSES, header, label, render_routes};

use crate::reload::Controller;

/// An upstream counter family: name, help, and how to read it.
type UpstreamCounter = (
    &'static str,
    &'static str,
    fn(&portico_proxy::metrics::UpstreamMetrics) -> u64,
);

pub fn render(ctl: &Controller) -> String {
    let active = ctl.proxy.active();
    let reg = &ctl.proxy.metrics;
    let mut out = String::with_capacity(16 * 1024);

    let mut routes: Vec<(String, Arc<portico_proxy::metrics::RouteMetrics>)> = active
        .config
        .routes
        .iter()
        .zip(active.route_metrics.iter())
        .map(|(r, m)| (r.name.clone(), m.clone()))
        .collect();
    routes.dedup_by(|a, b| a.0 == b.0);
    routes.push(("(no_route)".to_string(), reg.no_route.clone()));
    render_routes(&mut out, &routes);

    let ups: Vec<(
        &str,
        &portico_proxy::upstream::UpstreamState,
        &portico_proxy::metrics::UpstreamMetrics,
    )> = active
        .config
        .upstreams
        .iter()
        .zip(active.upstreams.iter())
        .zip(active.upstream_metrics.iter())
        .map(|((c, s), m)| (c.name.as_str(), &**s, &**m))
        .collect();
    header(
        &mut out,
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
        header(&mut out, metric, "counter", help);
        for (name, _, m) in &ups {
            let _ = writeln!(out, "{metric}{{upstream=\"{}\"}} {}", label(name), get(m));
        }
    }
    header(
        &mut out,
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
        &mut out,
        "portico_upstream_endpoints",
        "gauge",
        "Endpoints by state.",
    );
    for (name, state, _) in &ups {
        let counts = crate::views::endpoint_state_counts(state);
        for (st, n) in counts {
            let _ = writeln!(
                out,
                "portico_upstream_endpoints{{upstream=\"{}\",state=\"{st}\"}} {n}",
                label(name)
            );
        }
    }
    header(
        &mut out,
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
        &mut out,
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

    header(
        &mut out,
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
        &mut out,
        "portico_downstream_connections_total",
        "counter",
        "Downstream connections accepted.",
    );
    let _ = writeln!(
        out,
        "portico_downstream_connections_total {}",
        reg.downstream_connections_total.load(Ordering::Relaxed)
    );
    let overload = &ctl.proxy.overload;
    header(
        &mut out,
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
        &mut out,
        "portico_overload_state",
        "gauge",
        "1 while the overload manager's threshold for the resource is crossed.",
    );
    let state = overload.state();
    for (resource, bit) in [
        ("memory", portico_proxy::overload::MEMORY),
        ("connections", portico_proxy::overload::CONNECTIONS),
    ] {
        let _ = writeln!(
            out,
            "portico_overload_state{{resource=\"{resource}\"}} {}",
            u8::from(state & bit != 0)
        );
    }
    header(
        &mut out,
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
            &mut out,
            "portico_overload_memory_bytes",
            "gauge",
            "Resident memory at the overload manager's last sample.",
        );
        let _ = writeln!(out, "portico_overload_memory_bytes {}", overload.rss());
    }
    header(
        &mut out,
        "portico_rate_limit_service_errors_total",
        "counter",
        "Rate limit service calls that failed (flag RLSE).",
    );
    let _ = writeln!(
        out,
        "portico_rate_limit_service_errors_total {}",
        ctl.proxy
            .counters
            .rate_limit_service_errors
            .load(Ordering::Relaxed)
    );
    header(
        &mut out,
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
        &mut out,
        "portico_config_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    let _ = writeln!(
        out,
        "portico_config_reloads_total{{result=\"applied\"}} {}",
        ctl.counters.applied.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "portico_config_reloads_total{{result=\"rejected\"}} {}",
        ctl.counters.rejected.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "portico_config_generation",
        "gauge",
        "Generation of the applied config.",
    );
    let _ = writeln!(out, "portico_config_generation {}", active.generation);
    if let Some(g) = ctl.git.get() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        header(
            &mut out,
            "portico_config_commit_age_seconds",
            "gauge",
            "Age of the applied git commit (now minus its committer time).",
        );
        let _ = writeln!(
            out,
            "portico_config_commit_age_seconds {}",
            (now - g.applied_commit_time() as f64).max(0.0)
        );
    }

    header(
        &mut out,
        "portico_access_log_dropped_total",
        "counter",
        "Access log lines dropped (queue full).",
    );
    let _ = writeln!(
        out,
        "portico_access_log_dropped_total {}",
        ctl.proxy.access_log.dropped.load(Ordering::Relaxed)
    );
    header(
        &mut out,
        "portico_build_info",
        "gauge",
        "Build information.",
    );
    let _ = writeln!(
        out,
        "portico_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}
