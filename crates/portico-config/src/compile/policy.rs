//! A Mapping's policies that stand on their own: retries (and their budget), CORS, redirects.

use super::parse::{
    header_name, header_value, nonzero_ms, origin_glob, p, parse_authority, parse_method,
};
use crate::defaults;
use crate::model::{CorsM, RedirectM, RetryPolicyM, StrList};
use crate::resource::{Diags, Resource};
use crate::snapshot::{CorsConf, OriginMatch, RedirectConf, RetryOn, RetryPolicy};

pub(super) fn retry_policy(d: &mut Diags, r: &Resource, rp: &RetryPolicyM) -> RetryPolicy {
    let base = ["spec", "retry_policy"];
    let mut bits = 0;
    if let Some(on) = &rp.retry_on {
        for item in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match RetryOn::flag(item) {
                Some(f) => bits |= f,
                None => r.error(
                    d,
                    &p(&base, &["retry_on"]),
                    format!(
                        "unknown retry_on value `{item}` (expected 5xx, gateway-error, connect-failure, reset, retriable-4xx, \
                         refused-stream, retriable-status-codes, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable)"
                    ),
                ),
            }
        }
    } else {
        bits = defaults::RETRY_ON
            .split(',')
            .filter_map(RetryOn::flag)
            .fold(0, |acc, f| acc | f);
    }
    let mut codes = Vec::new();
    for (i, c) in rp.retriable_status_codes.iter().flatten().enumerate() {
        if (100..=599).contains(c) {
            codes.push(*c);
        } else {
            r.error(
                d,
                &p(&base, &["retriable_status_codes", &i.to_string()]),
                format!("status {c} out of range (100-599)"),
            );
        }
    }
    if bits & RetryOn::RETRIABLE_STATUS_CODES != 0 && rp.retriable_status_codes.is_none() {
        r.warn(
            d,
            &p(&base, &["retry_on"]),
            "retriable-status-codes without retriable_status_codes retries nothing",
        );
    }
    if rp.retriable_status_codes.is_some() && bits & RetryOn::RETRIABLE_STATUS_CODES == 0 {
        bits |= RetryOn::RETRIABLE_STATUS_CODES;
    }
    let budget = rp.retry_budget.clone().unwrap_or_default();
    let pct = budget
        .budget_percent
        .unwrap_or(defaults::RETRY_BUDGET_PERCENT);
    if !(0.0..=100.0).contains(&pct) {
        r.error(
            d,
            &p(&base, &["retry_budget", "budget_percent"]),
            "budget_percent must be 0-100",
        );
    }
    RetryPolicy {
        retry_on: RetryOn { bits },
        num_retries: rp.num_retries.unwrap_or(defaults::NUM_RETRIES),
        per_try_timeout: rp.per_try_timeout_ms.and_then(nonzero_ms),
        retriable_status_codes: codes,
        budget_percent: pct.clamp(0.0, 100.0),
        min_retry_concurrency: budget
            .min_retry_concurrency
            .unwrap_or(defaults::MIN_RETRY_CONCURRENCY),
    }
}

pub(super) fn cors(d: &mut Diags, r: &Resource, c: &CorsM) -> CorsConf {
    let base = ["spec", "cors"];
    let mut origins = Vec::new();
    let list = c
        .origins
        .as_ref()
        .map(|o| o.0.as_slice())
        .unwrap_or_default();
    if list.is_empty() {
        r.missing(d, &p(&base, &["origins"]), "cors needs at least one origin");
    }
    let credentials = c.credentials.unwrap_or(defaults::CORS_CREDENTIALS);
    for (i, o) in list.iter().enumerate() {
        let o = o.trim().trim_end_matches('/');
        if o == "*" {
            if credentials {
                r.error(
                    d,
                    &p(&base, &["origins", &i.to_string()]),
                    "origin `*` cannot be used with credentials: true",
                );
            }
            origins.push(OriginMatch::Any);
        } else if o.contains('*') {
            match origin_glob(o) {
                Ok(re) => origins.push(OriginMatch::Glob(re)),
                Err(m) => r.error(d, &p(&base, &["origins", &i.to_string()]), m),
            }
        } else if o.is_empty() {
            r.error(
                d,
                &p(&base, &["origins", &i.to_string()]),
                "origin must not be empty",
            );
        } else {
            origins.push(OriginMatch::Exact(o.to_ascii_lowercase()));
        }
    }
    let mut methods = Vec::new();
    for (i, m) in c.methods.iter().flat_map(|m| m.0.iter()).enumerate() {
        match parse_method(m.trim()) {
            Ok(m) => methods.push(m.as_str().to_string()),
            Err(e) => r.error(d, &p(&base, &["methods", &i.to_string()]), e),
        }
    }
    let mut names = |field: &str, list: Option<&StrList>| -> Vec<String> {
        let mut out = Vec::new();
        for (i, h) in list
            .map(|l| l.0.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match header_name(h.trim()) {
                Ok(n) => out.push(n.as_str().to_string()),
                Err(e) => r.error(d, &p(&base, &[field, &i.to_string()]), e),
            }
        }
        out
    };
    let headers = names("headers", c.headers.as_ref());
    let exposed_headers = names("exposed_headers", c.exposed_headers.as_ref());
    CorsConf {
        origins,
        methods,
        headers,
        exposed_headers,
        credentials,
        max_age: c.max_age,
    }
}

pub(super) fn redirect(d: &mut Diags, r: &Resource, rd: &RedirectM) -> RedirectConf {
    let base = ["spec", "redirect"];
    let code = rd.response_code.unwrap_or(defaults::REDIRECT_RESPONSE_CODE);
    if ![301, 302, 303, 307, 308].contains(&code) {
        r.error(
            d,
            &p(&base, &["response_code"]),
            format!("response_code {code} is not a redirect (expected 301, 302, 303, 307 or 308)"),
        );
    }
    if rd.path.is_some() && rd.prefix.is_some() {
        r.error_key(
            d,
            &p(&base, &["prefix"]),
            "set either path or prefix, not both",
        );
    }
    for (f, v) in [("path", &rd.path), ("prefix", &rd.prefix)] {
        if let Some(v) = v
            && !v.starts_with('/')
        {
            r.error(
                d,
                &p(&base, &[f]),
                format!("redirect {f} must start with `/`"),
            );
        }
    }
    if let Some(h) = &rd.host
        && let Err(m) = parse_authority(h.trim()).and_then(|_| header_value(h).map(|_| ()))
    {
        r.error(d, &p(&base, &["host"]), m);
    }
    if rd.port == Some(0) {
        r.error(d, &p(&base, &["port"]), "port must be 1-65535");
    }
    let https = rd.https.unwrap_or(defaults::REDIRECT_HTTPS);
    if !https && rd.host.is_none() && rd.port.is_none() && rd.path.is_none() && rd.prefix.is_none()
    {
        r.error_key(
            d,
            &base,
            "a redirect must set at least one of https, host, port, path or prefix",
        );
    }
    RedirectConf {
        https,
        host: rd.host.as_ref().map(|h| h.trim().to_string()),
        port: rd.port,
        path: rd.path.clone(),
        prefix: rd.prefix.clone(),
        code,
    }
}
