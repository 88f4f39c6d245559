//! Validation and compilation of typed resources into a [`Snapshot`]'s parts.
//!
//! Owns every semantic rule of reference §2–§4 that serde cannot check (required fields,
//! ranges, regexes, header names, references between resources, conflicting upstream
//! settings, canary weights) and the translation into the snapshot types: service
//! resolution and implicit upstreams, route match order (§2.3.1) and canary groups (§2.5).
//!
//! One file per resource kind, over one [`Ctx`] (the diagnostics and the upstreams built so
//! far): `listener`, `host`, `upstream` (service references, implicit upstreams, `Upstream`
//! resources), `settings` (upstream-level settings a Mapping or an Upstream gives), `mapping`
//! (a Mapping into a route) with `route_match` (hostname ports, host/method regexes) and
//! `policy` (retries, CORS, redirects), `ratelimit`, `auth` (AuthService, JWTProvider, a
//! Mapping's auth settings), and `order` (match order and canary
//! weights). `parse` holds the text forms they share. Defaults come from [`crate::defaults`].

mod auth;
mod host;
mod listener;
mod mapping;
mod order;
mod parse;
mod policy;
mod ratelimit;
mod route_match;
mod settings;
mod upstream;

use std::collections::{HashMap, HashSet};

use crate::model::{ListenerProtocolM, Spec};
use crate::resource::{Diags, LISTENER, Resource};
use crate::snapshot::{
    AuthServiceConf, HostConf, JwtProviderConf, ListenerConf, RateLimitServiceConf, Route,
    UpstreamConf, UpstreamProtocol,
};

/// Everything compiled from the resources (routes not yet shared).
pub(crate) struct Compiled {
    pub listeners: Vec<ListenerConf>,
    pub hosts: Vec<HostConf>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamConf>,
    pub rate_limit_service: Option<RateLimitServiceConf>,
    pub auth_service: Option<AuthServiceConf>,
    pub jwt_providers: Vec<JwtProviderConf>,
}

pub(crate) fn compile(resources: &[Resource], d: &mut Diags) -> Compiled {
    let mut c = Ctx {
        d,
        upstreams: Vec::new(),
        by_name: HashMap::new(),
        is_resource: Vec::new(),
        broken: HashSet::new(),
        implicit: HashMap::new(),
        set_by: Vec::new(),
        jwt_names: HashMap::new(),
        jwt_declared: HashSet::new(),
    };
    let listeners = c.listeners(resources);
    let hosts = c.hosts(resources);
    if listeners.iter().any(|l| l.protocol.is_tls()) && !hosts.iter().any(|h| h.tls.is_some()) {
        for r in resources.iter().filter(|r| r.kind == LISTENER) {
            if let Some(Spec::Listener(l)) = r.spec.as_deref()
                && matches!(
                    l.protocol,
                    Some(ListenerProtocolM::Https | ListenerProtocolM::HttpsProxy)
                )
            {
                // As Emissary does: serve a certificate generated at start.
                r.warn(
                    c.d,
                    &["spec", "protocol"],
                    "no Host has tls: this listener serves a self-signed certificate generated \
                     at start, which clients will not trust; add a Host with tls",
                );
            }
        }
    }
    c.upstream_resources(resources);
    let rate_limit_service = c.rate_limit_service(resources);
    let auth_service = c.auth_service(resources);
    let (jwt_providers, jwt_names) = c.jwt_providers(resources);
    c.jwt_names = jwt_names;
    c.jwt_declared = resources
        .iter()
        .filter(|r| r.kind == crate::resource::JWT_PROVIDER)
        .map(|r| r.name.clone())
        .collect();
    let routes = c.routes(resources, rate_limit_service.is_some());
    Compiled {
        listeners,
        hosts,
        routes,
        upstreams: c.upstreams,
        rate_limit_service,
        auth_service,
        jwt_providers,
    }
}

/// Who first set an upstream-level field of an implicit upstream.
#[derive(Clone)]
struct SetBy {
    what: String,
}

const F_LB: usize = 0;
const F_HC: usize = 1;
const F_OUTLIER: usize = 2;
const F_CB: usize = 3;
const F_CONNECT: usize = 4;
const FIELD_NAMES: [&str; 5] = [
    "load_balancer",
    "health_checks",
    "outlier_detection",
    "circuit_breakers",
    "connect_timeout_ms",
];

struct Ctx<'d> {
    d: &'d mut Diags,
    upstreams: Vec<UpstreamConf>,
    /// Upstream resources and implicit upstreams, by name.
    by_name: HashMap<String, usize>,
    /// Whether `upstreams[i]` is an `Upstream` resource.
    is_resource: Vec<bool>,
    /// Upstream resources whose spec failed to parse (references to them are not reported).
    broken: HashSet<String>,
    /// Implicit upstreams by (protocol, authority).
    implicit: HashMap<(UpstreamProtocol, String), usize>,
    set_by: Vec<[Option<SetBy>; 5]>,
    /// `JWTProvider`s compiled, by name (index in `Compiled::jwt_providers`).
    jwt_names: HashMap<String, usize>,
    /// Every `JWTProvider` name, compiled or not (a broken one is reported once, by itself).
    jwt_declared: HashSet<String>,
}
