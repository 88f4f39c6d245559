//! `GET /metrics`: every family of reference §8 (and more) in the Prometheus text format. The
//! data plane's families are rendered by `portico_proxy::telemetry::prometheus`; this adds the
//! control plane's own (reloads, config generation, git commit age, build info).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use portico_proxy::telemetry::prometheus::{self, header};

use crate::reload::Controller;

pub fn render(ctl: &Controller) -> String {
    let active = ctl.proxy.active();
    let mut out = String::with_capacity(16 * 1024);
    prometheus::render(&mut out, &ctl.proxy);

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
        "portico_certificate_expiry_timestamp_seconds",
        "gauge",
        "notAfter (Unix seconds) of every certificate being served, by Host name.",
    );
    for (host, not_after) in active.tls.expiries() {
        let _ = writeln!(
            out,
            "portico_certificate_expiry_timestamp_seconds{{host=\"{}\"}} {not_after}",
            host.replace('\\', "\\\\").replace('"', "\\\"")
        );
    }
    if let Some(m) = ctl.acme.get() {
        m.render_metrics(&mut out);
    }

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
