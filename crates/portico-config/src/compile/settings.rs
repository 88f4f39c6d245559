//! Upstream-level settings given on an `Upstream` or a `Mapping`: load balancing, health
//! checks, outlier detection, circuit breakers, connect timeout; and the rule for a Mapping
//! that sets them (first setter wins on an implicit upstream, ignored on a resource).

use std::time::Duration;

use super::parse::{header_name, ms, nonzero_ms, p};
use super::{Ctx, F_CB, F_CONNECT, F_HC, F_LB, F_OUTLIER, FIELD_NAMES, SetBy};
use crate::defaults;
use crate::model::{
    CircuitBreakersM, HealthCheckM, LbPolicyM, LoadBalancerM, OutlierM, StatusRangeM,
};
use crate::resource::{Diags, Resource};
use crate::snapshot::{
    CircuitBreakerConf, HashOn, HealthCheckConf, HealthCheckKind, LbConf, LbPolicy, OutlierConf,
};

pub(super) fn default_lb() -> LbConf {
    LbConf {
        policy: lb_policy(defaults::LB_POLICY),
        hash_on: None,
        healthy_panic_threshold: defaults::HEALTHY_PANIC_THRESHOLD,
        slow_start_window: None,
    }
}

/// Upstream-level settings given on a Mapping or an Upstream.
#[derive(Default)]
pub(super) struct UpstreamSettings {
    pub(super) lb: Option<LbConf>,
    pub(super) health_checks: Option<Vec<HealthCheckConf>>,
    pub(super) outlier: Option<OutlierConf>,
    pub(super) circuit_breakers: Option<CircuitBreakerConf>,
    pub(super) connect_timeout: Option<Duration>,
}

pub(super) fn upstream_settings(
    d: &mut Diags,
    r: &Resource,
    lb: Option<&LoadBalancerM>,
    hc: Option<&[HealthCheckM]>,
    od: Option<&OutlierM>,
    cb: Option<&CircuitBreakersM>,
    connect: Option<u64>,
) -> UpstreamSettings {
    let mut s = UpstreamSettings::default();
    if let Some(lb) = lb {
        s.lb = Some(compile_lb(d, r, lb));
    }
    if let Some(hc) = hc {
        s.health_checks = Some(
            hc.iter()
                .enumerate()
                .filter_map(|(i, h)| compile_hc(d, r, i, h))
                .collect(),
        );
    }
    if let Some(o) = od {
        let pct = o
            .max_ejection_percent
            .unwrap_or(defaults::OUTLIER_MAX_EJECTION_PERCENT);
        if pct > 100 {
            r.error(
                d,
                &["spec", "outlier_detection", "max_ejection_percent"],
                "max_ejection_percent must be 0-100",
            );
        }
        let interval = o.interval_ms.unwrap_or(defaults::OUTLIER_INTERVAL_MS);
        if interval == 0 {
            r.error(
                d,
                &["spec", "outlier_detection", "interval_ms"],
                "interval_ms must be greater than 0",
            );
        }
        let base = o
            .base_ejection_time_ms
            .unwrap_or(defaults::OUTLIER_BASE_EJECTION_TIME_MS);
        let max = o
            .max_ejection_time_ms
            .unwrap_or(defaults::OUTLIER_MAX_EJECTION_TIME_MS)
            .max(base);
        s.outlier = Some(OutlierConf {
            consecutive_5xx: o
                .consecutive_5xx
                .unwrap_or(defaults::OUTLIER_CONSECUTIVE_5XX),
            consecutive_gateway_failure: o
                .consecutive_gateway_failure
                .unwrap_or(defaults::OUTLIER_CONSECUTIVE_GATEWAY_FAILURE),
            interval: ms(interval),
            base_ejection_time: ms(base),
            max_ejection_time: ms(max),
            max_ejection_percent: pct.min(100),
        });
    }
    if let Some(cb) = cb {
        let def = CircuitBreakerConf::default();
        s.circuit_breakers = Some(CircuitBreakerConf {
            max_connections: cb.max_connections.unwrap_or(def.max_connections),
            max_pending_requests: cb.max_pending_requests.unwrap_or(def.max_pending_requests),
            max_requests: cb.max_requests.unwrap_or(def.max_requests),
            max_retries: cb.max_retries.unwrap_or(def.max_retries),
        });
    }
    if let Some(ct) = connect {
        if ct == 0 {
            r.error(
                d,
                &["spec", "connect_timeout_ms"],
                "connect_timeout_ms must be greater than 0",
            );
        }
        s.connect_timeout = Some(ms(ct.max(1)));
    }
    s
}

fn lb_policy(p: LbPolicyM) -> LbPolicy {
    match p {
        LbPolicyM::RoundRobin => LbPolicy::RoundRobin,
        LbPolicyM::LeastRequest => LbPolicy::LeastRequest,
        LbPolicyM::Ewma => LbPolicy::Ewma,
        LbPolicyM::Random => LbPolicy::Random,
        LbPolicyM::RingHash => LbPolicy::RingHash,
        LbPolicyM::Maglev => LbPolicy::Maglev,
    }
}

pub(super) fn compile_lb(d: &mut Diags, r: &Resource, lb: &LoadBalancerM) -> LbConf {
    let base = ["spec", "load_balancer"];
    let policy = lb_policy(lb.policy.unwrap_or(defaults::LB_POLICY));
    let mut hashes = Vec::new();
    if let Some(h) = &lb.header {
        match header_name(h) {
            Ok(n) => hashes.push(("header", HashOn::Header(n))),
            Err(m) => r.error(d, &p(&base, &["header"]), m),
        }
    }
    if let Some(c) = &lb.cookie {
        match c.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => hashes.push((
                "cookie",
                HashOn::Cookie {
                    name: n.to_string(),
                    ttl: c.ttl_ms.and_then(nonzero_ms),
                },
            )),
            None => r.missing(
                d,
                &p(&base, &["cookie", "name"]),
                "missing field `name` in load_balancer.cookie",
            ),
        }
    }
    if lb.source_ip == Some(true) {
        hashes.push(("source_ip", HashOn::SourceIp));
    }
    let hashing = matches!(policy, LbPolicy::RingHash | LbPolicy::Maglev);
    if hashes.len() > 1 {
        r.error(
            d,
            &p(&base, &[hashes[1].0]),
            "set only one of header, cookie and source_ip",
        );
    }
    if !hashing && let Some((field, _)) = hashes.first() {
        r.error(
            d,
            &p(&base, &[field]),
            format!("`{field}` only applies to the ring_hash and maglev policies"),
        );
    }
    if hashing
        && hashes.is_empty()
        && !r.was_removed(&p(&base, &["header"]))
        && !r.was_removed(&p(&base, &["cookie"]))
    {
        r.error(
            d,
            &p(&base, &["policy"]),
            "ring_hash and maglev need one of header, cookie or source_ip to hash on",
        );
    }
    let threshold = lb
        .healthy_panic_threshold
        .unwrap_or(defaults::HEALTHY_PANIC_THRESHOLD);
    if threshold > 100 {
        r.error(
            d,
            &p(&base, &["healthy_panic_threshold"]),
            "healthy_panic_threshold must be 0-100",
        );
    }
    LbConf {
        policy,
        hash_on: if hashing {
            hashes.into_iter().next().map(|(_, h)| h)
        } else {
            None
        },
        healthy_panic_threshold: threshold.min(100),
        slow_start_window: lb.slow_start_window_ms.and_then(nonzero_ms),
    }
}

pub(super) fn parse_status_range(s: &StatusRangeM) -> Result<(u16, u16), String> {
    let code = |v: i64| -> Result<u16, String> {
        u16::try_from(v)
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("status {v} out of range (100-599)"))
    };
    match s {
        StatusRangeM::Code(c) => code(*c).map(|c| (c, c)),
        StatusRangeM::Text(t) => {
            let num = |x: &str| {
                x.trim().parse::<i64>().map_err(|_| {
                    format!("invalid status range `{t}` (expected 200 or \"200-399\")")
                })
            };
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => (code(num(a)?)?, code(num(b)?)?),
                None => {
                    let c = code(num(t)?)?;
                    (c, c)
                }
            };
            if a > b {
                return Err(format!(
                    "invalid status range `{t}`: {a} is greater than {b}"
                ));
            }
            Ok((a, b))
        }
    }
}

pub(super) fn compile_hc(
    d: &mut Diags,
    r: &Resource,
    i: usize,
    h: &HealthCheckM,
) -> Option<HealthCheckConf> {
    let is = i.to_string();
    let base = ["spec", "health_checks", is.as_str()];
    let n_kinds = usize::from(h.grpc.is_some())
        + usize::from(h.tcp.is_some())
        + usize::from(h.path.is_some());
    if n_kinds > 1 {
        r.error(
            d,
            &base,
            "a health check is one of http (path), grpc or tcp",
        );
        return None;
    }
    let http_only = [
        ("host", h.host.is_some()),
        ("expected_statuses", h.expected_statuses.is_some()),
    ];
    if h.path.is_none() {
        for (f, set) in http_only {
            if set {
                r.error_key(
                    d,
                    &p(&base, &[f]),
                    format!("`{f}` only applies to HTTP health checks (with path)"),
                );
            }
        }
    }
    let kind = if let Some(g) = &h.grpc {
        HealthCheckKind::Grpc {
            service: g.service.clone(),
        }
    } else if h.tcp.is_some() {
        HealthCheckKind::Tcp
    } else {
        let Some(path) = &h.path else {
            r.missing(
                d,
                &p(&base, &["path"]),
                "a health check needs `path` (HTTP), `grpc: {}` or `tcp: {}`",
            );
            return None;
        };
        if !path.starts_with('/') {
            r.error(
                d,
                &p(&base, &["path"]),
                "health check path must start with `/`",
            );
        }
        let mut expected = Vec::new();
        for (j, s) in h.expected_statuses.iter().flatten().enumerate() {
            match parse_status_range(s) {
                Ok(rg) => expected.push(rg),
                Err(m) => r.error(d, &p(&base, &["expected_statuses", &j.to_string()]), m),
            }
        }
        if expected.is_empty() {
            expected.push(defaults::HEALTH_CHECK_EXPECTED_STATUSES);
        }
        HealthCheckKind::Http {
            path: path.clone(),
            host: h.host.clone(),
            expected_statuses: expected,
        }
    };
    let interval = h.interval_ms.unwrap_or(defaults::HEALTH_CHECK_INTERVAL_MS);
    let timeout = h.timeout_ms.unwrap_or(defaults::HEALTH_CHECK_TIMEOUT_MS);
    for (f, v) in [("interval_ms", interval), ("timeout_ms", timeout)] {
        if v == 0 {
            r.error(d, &p(&base, &[f]), format!("{f} must be greater than 0"));
        }
    }
    let unhealthy = h
        .unhealthy_threshold
        .unwrap_or(defaults::UNHEALTHY_THRESHOLD);
    let healthy = h.healthy_threshold.unwrap_or(defaults::HEALTHY_THRESHOLD);
    for (f, v) in [
        ("unhealthy_threshold", unhealthy),
        ("healthy_threshold", healthy),
    ] {
        if v == 0 {
            r.error(d, &p(&base, &[f]), format!("{f} must be at least 1"));
        }
    }
    Some(HealthCheckConf {
        kind,
        interval: ms(interval.max(1)),
        timeout: ms(timeout.max(1)),
        unhealthy_threshold: unhealthy.max(1),
        healthy_threshold: healthy.max(1),
    })
}

impl Ctx<'_> {
    /// Applies a Mapping's upstream-level settings to the upstream it names (docs/reference.md §2.3).
    pub(super) fn apply_settings(&mut self, r: &Resource, upstream: usize, s: UpstreamSettings) {
        let Some(u) = self.upstreams.get(upstream) else {
            return;
        };
        let uname = u.name.clone();
        let resource = self.is_resource[upstream];
        let fields: [(usize, bool, bool); 5] = [
            (
                F_LB,
                s.lb.is_some(),
                s.lb.as_ref().is_some_and(|v| *v == u.lb),
            ),
            (
                F_HC,
                s.health_checks.is_some(),
                s.health_checks
                    .as_ref()
                    .is_some_and(|v| *v == u.health_checks),
            ),
            (
                F_OUTLIER,
                s.outlier.is_some(),
                s.outlier.is_some() && s.outlier == u.outlier,
            ),
            (
                F_CB,
                s.circuit_breakers.is_some(),
                s.circuit_breakers.is_some_and(|v| v == u.circuit_breakers),
            ),
            (
                F_CONNECT,
                s.connect_timeout.is_some(),
                s.connect_timeout.is_some_and(|v| v == u.connect_timeout),
            ),
        ];
        for (f, given, same) in fields {
            if !given {
                continue;
            }
            let field = FIELD_NAMES[f];
            if resource {
                if !same {
                    r.warn(
                        self.d,
                        &["spec", field],
                        format!("{field} is ignored: `{uname}` is an Upstream resource, whose own settings apply (set it there)"),
                    );
                }
                continue;
            }
            match &self.set_by[upstream][f] {
                Some(first) if !same => {
                    let msg = format!(
                        "{field} conflicts with the value {} gave upstream `{uname}`",
                        first.what
                    );
                    r.error_key(self.d, &["spec", field], msg);
                }
                Some(_) => {}
                None => {
                    self.set_by[upstream][f] = Some(SetBy {
                        what: format!("Mapping/{} ({})", r.name, r.loc(&["spec", field])),
                    });
                    if let Some(u) = self.upstreams.get_mut(upstream) {
                        match f {
                            F_LB => u.lb = s.lb.clone().unwrap_or_else(default_lb),
                            F_HC => u.health_checks = s.health_checks.clone().unwrap_or_default(),
                            F_OUTLIER => u.outlier = s.outlier.clone(),
                            F_CB => u.circuit_breakers = s.circuit_breakers.unwrap_or_default(),
                            _ => {
                                u.connect_timeout = s
                                    .connect_timeout
                                    .unwrap_or(ms(defaults::CONNECT_TIMEOUT_MS))
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range(&StatusRangeM::Code(204)), Ok((204, 204)));
        assert_eq!(
            parse_status_range(&StatusRangeM::Text("200-399".into())),
            Ok((200, 399))
        );
        assert_eq!(
            parse_status_range(&StatusRangeM::Text("404".into())),
            Ok((404, 404))
        );
        assert!(parse_status_range(&StatusRangeM::Text("399-200".into())).is_err());
        assert!(parse_status_range(&StatusRangeM::Code(99)).is_err());
        assert!(parse_status_range(&StatusRangeM::Text("2xx".into())).is_err());
    }
}
