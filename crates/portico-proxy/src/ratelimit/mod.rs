//! Rate limiting at the lifecycle's admit step (docs/reference.md §4): local token buckets
//! ([`local`]) and calls to a global `RateLimitService` ([`global`]).
//!
//! [`Limits`] is the rate-limit state of one configuration snapshot: for each route, one
//! [`LocalLimiter`] per local rule, and the snapshot's [`GlobalClient`]. It is built by
//! `state::prepare` from the previous snapshot's, so a limiter whose route name and rule are
//! unchanged keeps its buckets across reloads.
//!
//! A request is checked against the route's local rules first (no I/O), then, if the route has
//! global rules, against the service. A rule keyed on `header:NAME` does not apply to a
//! request without that header (as in Envoy).

pub mod global;
pub mod local;

use std::collections::HashMap;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, Response};
use portico_config::Snapshot;
use portico_config::snapshot::{
    DescriptorPart, RateLimitConf, RateLimitScope, RateLimitUnit, Route,
};
use portico_rls::proto::{Entry, entry};

pub use global::GlobalClient;
pub use local::{Decision, LocalLimiter};

use crate::body::RespBody;
use crate::local_reply::{Flag, local_reply};

/// What identifies a local limiter across reloads: route name, rule, and which of identical
/// rules on that route it is.
type RuleId = (String, Vec<DescriptorPart>, u64, RateLimitUnit, u64, usize);

/// The rate-limit state of one snapshot.
#[derive(Debug, Default)]
pub struct Limits {
    /// Indexed like `Snapshot::routes`, then like the route's `rate_limits` (`None` for global
    /// rules).
    routes: Vec<Vec<Option<Arc<LocalLimiter>>>>,
    by_id: HashMap<RuleId, Arc<LocalLimiter>>,
    global: Option<Arc<GlobalClient>>,
}

impl Limits {
    /// Builds the state for `snapshot`, keeping `previous`'s limiters (and channel) where
    /// nothing changed.
    pub fn build(snapshot: &Snapshot, previous: Option<&Limits>) -> Limits {
        let mut out = Limits::default();
        for route in &snapshot.routes {
            let mut rules = Vec::with_capacity(route.rate_limits.len());
            for (i, rl) in route.rate_limits.iter().enumerate() {
                if rl.scope == RateLimitScope::Global {
                    rules.push(None);
                    continue;
                }
                let nth = route.rate_limits[..i]
                    .iter()
                    .filter(|o| same_rule(o, rl))
                    .count();
                let id: RuleId = (
                    route.name.clone(),
                    rl.key.clone(),
                    rl.requests_per_unit,
                    rl.unit,
                    rl.burst,
                    nth,
                );
                let limiter = previous
                    .and_then(|p| p.by_id.get(&id).cloned())
                    .unwrap_or_else(|| {
                        Arc::new(LocalLimiter::new(rl.requests_per_unit, rl.unit, rl.burst))
                    });
                out.by_id.insert(id, limiter.clone());
                rules.push(Some(limiter));
            }
            out.routes.push(rules);
        }
        out.global = snapshot.rate_limit_service.as_ref().map(|conf| {
            let client = GlobalClient::new(
                conf.clone(),
                snapshot.upstreams.get(conf.upstream).map(|u| &**u),
            );
            match previous.and_then(|p| p.global.as_ref()) {
                Some(old) if old.same_as(&client) => old.clone(),
                _ => Arc::new(client),
            }
        });
        out
    }

    /// The local limiters of route `id`, by rule index.
    pub fn local(&self, route: usize) -> &[Option<Arc<LocalLimiter>>] {
        self.routes.get(route).map_or(&[], Vec::as_slice)
    }
}

fn same_rule(a: &RateLimitConf, b: &RateLimitConf) -> bool {
    a.key == b.key
        && a.requests_per_unit == b.requests_per_unit
        && a.unit == b.unit
        && a.burst == b.burst
        && a.scope == b.scope
}

/// The `x-ratelimit-*` figures of a refusal.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub limit: u64,
    pub remaining: u64,
    pub reset: u64,
    pub retry_after: u64,
    /// Headers the rate limit service asked to add.
    pub extra: Vec<(HeaderName, HeaderValue)>,
}

/// The admit step's answer.
#[derive(Debug)]
pub enum Verdict {
    Allow,
    /// The service could not decide and `failure_mode_deny` is false: allowed, flag RLSE.
    FailedOpen,
    /// Refused with 429 (flag RL, or RLSE when the service failed with `failure_mode_deny`).
    Deny {
        flag: Flag,
        headers: Option<Headers>,
    },
}

impl Verdict {
    /// The local reply of a refusal (429, or gRPC RESOURCE_EXHAUSTED trailers-only).
    pub fn reply(flag: Flag, headers: Option<&Headers>, grpc: bool) -> Response<RespBody> {
        let mut resp = local_reply(flag, grpc, None);
        if let Some(h) = headers {
            let m = resp.headers_mut();
            m.insert(http::header::RETRY_AFTER, HeaderValue::from(h.retry_after));
            m.insert("x-ratelimit-limit", HeaderValue::from(h.limit));
            m.insert("x-ratelimit-remaining", HeaderValue::from(h.remaining));
            m.insert("x-ratelimit-reset", HeaderValue::from(h.reset));
            for (n, v) in &h.extra {
                m.insert(n.clone(), v.clone());
            }
        }
        resp
    }
}

/// Checks `req` against `route`'s rate limits.
pub async fn admit<B>(limits: &Limits, route: &Route, req: &Request<B>, client: IpAddr) -> Verdict {
    let mut global = false;
    for (rl, limiter) in route.rate_limits.iter().zip(limits.local(route.id)) {
        let Some(limiter) = limiter else {
            global = true;
            continue;
        };
        let Some(key) = local_key(limiter, &rl.key, req, client) else {
            continue;
        };
        if let Decision::Deny(d) = limiter.check(key) {
            return Verdict::Deny {
                flag: Flag::RL,
                headers: Some(Headers {
                    limit: d.limit,
                    remaining: 0,
                    reset: d.reset,
                    retry_after: d.retry_after,
                    extra: Vec::new(),
                }),
            };
        }
    }
    match &limits.global {
        Some(g) if global => g.check(route, req, client).await,
        _ => Verdict::Allow,
    }
}

/// The hash of a request's key for a local rule; `None` when a `header:NAME` part is missing.
fn local_key<B>(
    limiter: &LocalLimiter,
    parts: &[DescriptorPart],
    req: &Request<B>,
    client: IpAddr,
) -> Option<u64> {
    let mut h = limiter.key_hasher();
    for part in parts {
        match part {
            DescriptorPart::RemoteAddress => {
                h.write_u8(0);
                match client {
                    IpAddr::V4(a) => h.write(&a.octets()),
                    IpAddr::V6(a) => h.write(&a.octets()),
                }
            }
            DescriptorPart::Header(name) => {
                let v = req.headers().get(name)?;
                h.write_u8(1);
                h.write_usize(v.len());
                h.write(v.as_bytes());
            }
            // A constant: the whole route shares one bucket.
            DescriptorPart::Generic(_) => h.write_u8(2),
            DescriptorPart::Path => {
                let p = req.uri().path();
                h.write_u8(3);
                h.write_usize(p.len());
                h.write(p.as_bytes());
            }
            DescriptorPart::Method => {
                let m = req.method().as_str();
                h.write_u8(4);
                h.write_usize(m.len());
                h.write(m.as_bytes());
            }
        }
    }
    Some(h.finish())
}

/// A rule's descriptor entries for the rate limit service (docs/reference.md §4.1); `None` when a
/// `header:NAME` part is missing.
pub fn descriptor_entries<B>(
    parts: &[DescriptorPart],
    req: &Request<B>,
    client: IpAddr,
) -> Option<Vec<Entry>> {
    parts
        .iter()
        .map(|part| {
            Some(match part {
                DescriptorPart::RemoteAddress => entry("remote_address", client.to_string()),
                DescriptorPart::Header(name) => {
                    let v = req.headers().get(name)?;
                    entry(name.as_str(), String::from_utf8_lossy(v.as_bytes()))
                }
                DescriptorPart::Generic(v) => entry("generic_key", v.as_str()),
                DescriptorPart::Path => entry("path", req.uri().path()),
                DescriptorPart::Method => entry("method", req.method().as_str()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method("POST").uri("/a/b?x=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn descriptor_entries_follow_the_contract() {
        let parts = vec![
            DescriptorPart::RemoteAddress,
            DescriptorPart::Header(HeaderName::from_static("x-tenant")),
            DescriptorPart::Generic("api".into()),
            DescriptorPart::Path,
            DescriptorPart::Method,
        ];
        let ip: IpAddr = [10, 0, 0, 1].into();
        let got = descriptor_entries(&parts, &req(&[("x-tenant", "t1")]), ip);
        assert_eq!(
            got,
            Some(vec![
                entry("remote_address", "10.0.0.1"),
                entry("x-tenant", "t1"),
                entry("generic_key", "api"),
                entry("path", "/a/b"),
                entry("method", "POST"),
            ])
        );
        assert_eq!(descriptor_entries(&parts, &req(&[]), ip), None);
    }

    #[test]
    fn local_keys_separate_header_values_and_skip_missing_headers() {
        let l = LocalLimiter::new(1, RateLimitUnit::Second, 1);
        let parts = vec![DescriptorPart::Header(HeaderName::from_static("x-user"))];
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = local_key(&l, &parts, &req(&[("x-user", "a")]), ip);
        let b = local_key(&l, &parts, &req(&[("x-user", "b")]), ip);
        assert!(a.is_some() && b.is_some() && a != b);
        assert_eq!(a, local_key(&l, &parts, &req(&[("x-user", "a")]), ip));
        assert_eq!(local_key(&l, &parts, &req(&[]), ip), None);
    }
}
