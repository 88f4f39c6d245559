//! Rate limiting: the `RateLimitService` resource (at most one) and a Mapping's
//! `rate_limits` (descriptor keys, local token buckets, global limits).

use super::Ctx;
use super::parse::{header_name, ms, p};
use crate::defaults;
use crate::model::{RateLimitM, RateScopeM, RateUnitM, Spec};
use crate::resource::{Diags, RATE_LIMIT_SERVICE, Resource};
use crate::snapshot::{
    DescriptorPart, RateLimitConf, RateLimitScope, RateLimitServiceConf, RateLimitUnit,
};

impl Ctx<'_> {
    pub(super) fn rate_limit_service(
        &mut self,
        resources: &[Resource],
    ) -> Option<RateLimitServiceConf> {
        let mut out: Option<(RateLimitServiceConf, &Resource)> = None;
        for r in resources.iter().filter(|r| r.kind == RATE_LIMIT_SERVICE) {
            let Some(Spec::RateLimitService(s)) = r.spec.as_deref() else {
                continue;
            };
            if let Some((_, first)) = &out {
                let at = first.loc(&[]);
                r.error_key(
                    self.d,
                    &["kind"],
                    format!(
                        "only one RateLimitService may be configured (RateLimitService/{} at {at})",
                        first.name
                    ),
                );
                continue;
            }
            let Some(service) = &s.service else {
                r.missing(self.d, &["spec", "service"], "missing field `service`");
                continue;
            };
            let Some(upstream) = self.service_upstream(r, &["spec", "service"], service, true)
            else {
                continue;
            };
            let timeout = s.timeout_ms.unwrap_or(defaults::RLS_TIMEOUT_MS);
            if timeout == 0 {
                r.error(
                    self.d,
                    &["spec", "timeout_ms"],
                    "timeout_ms must be greater than 0",
                );
            }
            let domain = s
                .domain
                .clone()
                .unwrap_or_else(|| defaults::RLS_DOMAIN.to_string());
            if domain.trim().is_empty() {
                r.error(self.d, &["spec", "domain"], "domain must not be empty");
            }
            out = Some((
                RateLimitServiceConf {
                    name: r.name.clone(),
                    upstream,
                    domain,
                    timeout: ms(timeout.max(1)),
                    failure_mode_deny: s
                        .failure_mode_deny
                        .unwrap_or(defaults::RLS_FAILURE_MODE_DENY),
                },
                r,
            ));
        }
        out.map(|(c, _)| c)
    }
}

pub(super) fn rate_limits(
    d: &mut Diags,
    r: &Resource,
    list: &[RateLimitM],
    have_service: bool,
) -> Vec<RateLimitConf> {
    let mut out = Vec::new();
    for (i, rl) in list.iter().enumerate() {
        let is = i.to_string();
        let base = ["spec", "rate_limits", is.as_str()];
        let mut key = Vec::new();
        let mut ok = true;
        match &rl.key {
            None => {
                r.missing(d, &p(&base, &["key"]), "missing field `key` in rate limit");
                ok = false;
            }
            Some(k) if k.0.is_empty() => {
                r.error(d, &p(&base, &["key"]), "key must not be empty");
                ok = false;
            }
            Some(k) => {
                for (j, part) in k.0.iter().enumerate() {
                    let part_t = part.trim();
                    let parsed = match part_t {
                        "remote_address" => Ok(DescriptorPart::RemoteAddress),
                        "path" => Ok(DescriptorPart::Path),
                        "method" => Ok(DescriptorPart::Method),
                        _ => {
                            if let Some(h) = part_t.strip_prefix("header:") {
                                header_name(h.trim()).map(DescriptorPart::Header)
                            } else if let Some(g) = part_t
                                .strip_prefix("generic:")
                                .filter(|g| !g.trim().is_empty())
                            {
                                Ok(DescriptorPart::Generic(g.trim().to_string()))
                            } else {
                                Err(format!(
                                    "unknown rate limit key part `{part}` (expected remote_address, header:NAME, generic:VALUE, path or method)"
                                ))
                            }
                        }
                    };
                    match parsed {
                        Ok(pt) => key.push(pt),
                        Err(m) => {
                            ok = false;
                            r.error(d, &p(&base, &["key", &j.to_string()]), m);
                        }
                    }
                }
            }
        }
        let scope = match rl.scope.unwrap_or(defaults::RATE_LIMIT_SCOPE) {
            RateScopeM::Global => RateLimitScope::Global,
            RateScopeM::Local => RateLimitScope::Local,
        };
        if scope == RateLimitScope::Global && !have_service {
            r.error(
                d,
                &p(&base, &["scope"]),
                "scope global needs a RateLimitService resource",
            );
        }
        let rpu = rl.requests_per_unit.unwrap_or(0);
        if scope == RateLimitScope::Local && rpu == 0 {
            if rl.requests_per_unit.is_some() {
                r.error(
                    d,
                    &p(&base, &["requests_per_unit"]),
                    "requests_per_unit must be at least 1",
                );
            } else {
                r.missing(
                    d,
                    &p(&base, &["requests_per_unit"]),
                    "missing field `requests_per_unit` in rate limit",
                );
            }
            ok = false;
        }
        let burst = rl.burst.unwrap_or(rpu);
        if rl.burst == Some(0) {
            r.error(d, &p(&base, &["burst"]), "burst must be at least 1");
        }
        if ok {
            out.push(RateLimitConf {
                key,
                requests_per_unit: rpu,
                unit: match rl.unit.unwrap_or(defaults::RATE_LIMIT_UNIT) {
                    RateUnitM::Second => RateLimitUnit::Second,
                    RateUnitM::Minute => RateLimitUnit::Minute,
                    RateUnitM::Hour => RateLimitUnit::Hour,
                },
                burst,
                scope,
            });
        }
    }
    out
}
