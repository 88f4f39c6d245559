//! Validation and compilation of typed resources into a [`Snapshot`]'s parts.
//!
//! Owns every semantic rule of CONTRACT §2–§4 that serde cannot check (required fields,
//! ranges, regexes, header names, references between resources, conflicting upstream
//! settings, canary weights) and the translation into the snapshot types: service
//! resolution and implicit upstreams, route match order (§2.3.1) and canary groups (§2.5).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder};

use crate::load::{Diags, HOST, LISTENER, MAPPING, RATE_LIMIT_SERVICE, Resource, UPSTREAM};
use crate::model::*;
use crate::snapshot::*;

/// Everything compiled from the resources (routes not yet shared).
pub(crate) struct Compiled {
    pub listeners: Vec<ListenerConf>,
    pub hosts: Vec<HostConf>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<UpstreamConf>,
    pub rate_limit_service: Option<RateLimitServiceConf>,
}

const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3000;

pub(crate) fn compile(resources: &[Resource], d: &mut Diags) -> Compiled {
    let mut c = Ctx {
        d,
        upstreams: Vec::new(),
        by_name: HashMap::new(),
        is_resource: Vec::new(),
        broken: HashSet::new(),
        implicit: HashMap::new(),
        set_by: Vec::new(),
    };
    let listeners = c.listeners(resources);
    let hosts = c.hosts(resources);
    if listeners.iter().any(|l| l.protocol.is_tls()) && !hosts.iter().any(|h| h.tls.is_some()) {
        for r in resources.iter().filter(|r| r.kind == LISTENER) {
            if let Some(Spec::Listener(l)) = &r.spec
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
    let routes = c.routes(resources, rate_limit_service.is_some());
    Compiled {
        listeners,
        hosts,
        routes,
        upstreams: c.upstreams,
        rate_limit_service,
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
}

// ---------------------------------------------------------------- small parsers

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn nonzero_ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| ms(v))
}

/// Smallest HTTP/2 flow-control window (the protocol's initial 65535 octets).
const H2_MIN_WINDOW: u64 = 65_535;
/// Largest HTTP/2 flow-control window, 2^31-1 octets (RFC 9113 §6.9.1).
const H2_MAX_WINDOW: u64 = (1 << 31) - 1;

/// A Listener's limits, defaults filled in; out-of-range values are errors at their key.
fn listener_limits(r: &Resource, d: &mut Diags, l: &ListenerSpec) -> ListenerLimits {
    let def = ListenerLimits::default();
    let mut check = |key: &str, v: Option<u64>, min: u64, max: u64, default: u64| -> u64 {
        match v {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                r.error(
                    d,
                    &["spec", key],
                    format!("{key} must be {min}-{max} (got {v})"),
                );
                default
            }
        }
    };
    let kb = check(
        "max_request_headers_kb",
        l.max_request_headers_kb.map(u64::from),
        1,
        1024,
        u64::from(def.max_request_headers_bytes / 1024),
    );
    let count = check(
        "max_headers_count",
        l.max_headers_count.map(u64::from),
        1,
        10_000,
        u64::from(def.max_headers_count),
    );
    let uri = check(
        "max_uri_bytes",
        l.max_uri_bytes.map(u64::from),
        1,
        65_534,
        u64::from(def.max_uri_bytes),
    );
    let streams = check(
        "max_concurrent_streams",
        l.max_concurrent_streams.map(u64::from),
        1,
        65_535,
        u64::from(def.max_concurrent_streams),
    );
    // RFC 9113 §6.5.2 / §6.9.1: a flow-control window is 65535 to 2^31-1 octets.
    let stream_window = check(
        "initial_stream_window_bytes",
        l.initial_stream_window_bytes.map(u64::from),
        H2_MIN_WINDOW,
        H2_MAX_WINDOW,
        u64::from(def.initial_stream_window_bytes),
    );
    let connection_window = check(
        "initial_connection_window_bytes",
        l.initial_connection_window_bytes.map(u64::from),
        H2_MIN_WINDOW,
        H2_MAX_WINDOW,
        u64::from(def.initial_connection_window_bytes),
    );
    let head_ms = check(
        "header_read_timeout_ms",
        l.header_read_timeout_ms,
        1,
        3_600_000,
        def.header_read_timeout.as_millis() as u64,
    );
    let body_ms = check(
        "request_body_idle_timeout_ms",
        l.request_body_idle_timeout_ms,
        0,
        86_400_000,
        30_000,
    );
    let keepalive_ms = check(
        "keepalive_timeout_ms",
        l.keepalive_timeout_ms,
        0,
        86_400_000,
        def.keepalive_timeout.map_or(0, |t| t.as_millis() as u64),
    );
    // Every value was range-checked above, so the narrowing casts cannot truncate.
    ListenerLimits {
        max_request_headers_bytes: (kb * 1024) as u32,
        max_headers_count: count as u32,
        max_uri_bytes: uri as u32,
        max_concurrent_streams: streams as u32,
        initial_stream_window_bytes: stream_window as u32,
        initial_connection_window_bytes: connection_window as u32,
        header_read_timeout: Duration::from_millis(head_ms),
        request_body_idle_timeout: nonzero_ms(body_ms),
        keepalive_timeout: nonzero_ms(keepalive_ms),
    }
}

fn p<'a>(base: &[&'a str], tail: &[&'a str]) -> Vec<&'a str> {
    let mut v = Vec::with_capacity(base.len() + tail.len());
    v.extend_from_slice(base);
    v.extend_from_slice(tail);
    v
}

/// The one-line reason of a regex error.
fn regex_reason(e: &regex::Error) -> String {
    let s = e.to_string();
    let reason = s
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid");
    reason.trim_start_matches("error: ").to_string()
}

/// Compiles `^(?:src)$`.
pub(crate) fn anchored(src: &str, case_insensitive: bool) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{src})$"))
        .case_insensitive(case_insensitive)
        .build()
        .map_err(|e| format!("invalid regex `{src}`: {}", regex_reason(&e)))
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| format!("invalid header name `{s}`"))
}

fn header_value(s: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(s).map_err(|_| format!("invalid header value `{}`", s.escape_debug()))
}

pub(crate) fn parse_method(s: &str) -> Result<Method, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_');
    match Method::from_bytes(s.as_bytes()) {
        Ok(m) if ok => Ok(m),
        _ => Err(format!(
            "invalid method `{s}` (expected an uppercase HTTP method such as GET)"
        )),
    }
}

/// `host[:port]`, with IPv6 literals in brackets. Host is lowercased.
fn parse_authority(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid address `{s}`: missing `]`"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address `{h}`"));
        }
        match after {
            "" => (h, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(format!("invalid address `{s}`")),
            },
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(format!(
                    "invalid address `{s}`: write IPv6 addresses as [addr]:port"
                ));
            }
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
    if !valid_host {
        return Err(format!("invalid host `{host}` in `{s}`"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("invalid port `{p}` in `{s}` (expected 1-65535)")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn fmt_authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Hostname glob syntax: `*`, `*.suffix` or a name.
pub(crate) fn check_host_glob(s: &str) -> Result<HostGlob, String> {
    let t = s.trim();
    let body = t.strip_prefix("*.").unwrap_or(t);
    let ok = t == "*"
        || (!body.is_empty()
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if ok {
        Ok(HostGlob::parse(t))
    } else {
        Err(format!(
            "invalid hostname `{s}` (expected `*`, `*.example.com` or a host name, without a port)"
        ))
    }
}

/// Converts an Emissary/RE2 substitution (`\1`) into `regex` syntax (`${1}`), escaping `$`.
pub(crate) fn convert_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str("${");
                    out.push_str(&n);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// A CORS origin glob (`https://*.example.com`) as an anchored, case-insensitive regex.
fn origin_glob(s: &str) -> Result<Regex, String> {
    let pattern: Vec<String> = s.split('*').map(regex::escape).collect();
    anchored(&pattern.join("[^/]*"), true)
}

fn path_of(base: &Path, file: &str) -> std::path::PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A service reference, parsed.
enum ServiceTarget {
    Named(usize),
    /// References a broken Upstream resource: no further error.
    Broken,
    Implicit {
        protocol: UpstreamProtocol,
        host: String,
        port: u16,
    },
}

impl Ctx<'_> {
    fn resolve_service(&self, s: &str, grpc: bool) -> Result<ServiceTarget, String> {
        let s = s.trim();
        if let Some(&i) = self.by_name.get(s).filter(|&&i| self.is_resource[i]) {
            return Ok(ServiceTarget::Named(i));
        }
        if self.broken.contains(s) {
            return Ok(ServiceTarget::Broken);
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((sc, rest)) => (Some(sc.to_ascii_lowercase()), rest),
            None => (None, s),
        };
        let (mut protocol, default_port) = match scheme.as_deref() {
            None => (UpstreamProtocol::Http1, None),
            Some("http") => (UpstreamProtocol::Http1, Some(80)),
            Some("https") => (UpstreamProtocol::Https, Some(443)),
            Some("h2c") => (UpstreamProtocol::H2c, Some(80)),
            Some(other) => {
                return Err(format!(
                    "unsupported scheme `{other}://` in service `{s}` (expected http://, https:// or h2c://)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "service `{s}` must be [scheme://]host:port or an Upstream name (no path)"
            ));
        }
        let (host, port) = parse_authority(rest)?;
        let port = match port.or(default_port) {
            Some(p) => p,
            None => {
                return Err(format!(
                    "service `{s}` names no Upstream (a service without a port must be the name of an Upstream)"
                ));
            }
        };
        if grpc {
            protocol = match protocol {
                UpstreamProtocol::Http1 => UpstreamProtocol::H2c,
                UpstreamProtocol::Https => UpstreamProtocol::Auto,
                other => other,
            };
        }
        Ok(ServiceTarget::Implicit {
            protocol,
            host,
            port,
        })
    }

    /// The upstream index for a service (creating its implicit upstream); `None` after an error.
    fn service_upstream(
        &mut self,
        r: &Resource,
        path: &[&str],
        s: &str,
        grpc: bool,
    ) -> Option<usize> {
        match self.resolve_service(s, grpc) {
            Err(msg) => {
                r.error(self.d, path, msg);
                None
            }
            Ok(ServiceTarget::Broken) => None,
            Ok(ServiceTarget::Named(i)) => Some(i),
            Ok(ServiceTarget::Implicit {
                protocol,
                host,
                port,
            }) => {
                let authority = fmt_authority(&host, port);
                let key = (protocol, authority.clone());
                if let Some(&i) = self.implicit.get(&key) {
                    return Some(i);
                }
                let name = if self.by_name.contains_key(&authority) {
                    let scheme = match protocol {
                        UpstreamProtocol::Http1 => "http",
                        UpstreamProtocol::H2c => "h2c",
                        UpstreamProtocol::Https => "https",
                        UpstreamProtocol::Auto => "https+h2",
                    };
                    format!("{scheme}://{authority}")
                } else {
                    authority.clone()
                };
                let endpoints = match host.parse::<IpAddr>() {
                    Ok(_) => EndpointSource::Static(vec![EndpointConf {
                        address: authority,
                        weight: 1,
                    }]),
                    Err(_) => EndpointSource::Dns {
                        host: host.clone(),
                        port,
                        refresh: ms(5000),
                    },
                };
                let tls = matches!(protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto)
                    .then(|| UpstreamTlsConf {
                        ca_file: None,
                        sni: host.parse::<IpAddr>().is_err().then(|| host.clone()),
                        cert_chain_file: None,
                        private_key_file: None,
                        insecure_skip_verify: false,
                    });
                let id = self.upstreams.len();
                self.upstreams.push(UpstreamConf {
                    id,
                    name: name.clone(),
                    endpoints,
                    protocol,
                    tls,
                    lb: default_lb(),
                    health_checks: Vec::new(),
                    outlier: None,
                    circuit_breakers: CircuitBreakerConf::default(),
                    connect_timeout: ms(DEFAULT_CONNECT_TIMEOUT_MS),
                    max_idle_connections_per_endpoint: 64,
                    idle_connection_timeout: ms(60_000),
                });
                self.is_resource.push(false);
                self.set_by.push(Default::default());
                self.by_name.insert(name, id);
                self.implicit.insert(key, id);
                Some(id)
            }
        }
    }
}

fn default_lb() -> LbConf {
    LbConf {
        policy: LbPolicy::RoundRobin,
        hash_on: None,
        healthy_panic_threshold: 50,
        slow_start_window: None,
    }
}

/// Upstream-level settings given on a Mapping or an Upstream.
#[derive(Default)]
struct UpstreamSettings {
    lb: Option<LbConf>,
    health_checks: Option<Vec<HealthCheckConf>>,
    outlier: Option<OutlierConf>,
    circuit_breakers: Option<CircuitBreakerConf>,
    connect_timeout: Option<Duration>,
}

fn upstream_settings(
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
        let pct = o.max_ejection_percent.unwrap_or(10);
        if pct > 100 {
            r.error(
                d,
                &["spec", "outlier_detection", "max_ejection_percent"],
                "max_ejection_percent must be 0-100",
            );
        }
        let interval = o.interval_ms.unwrap_or(10_000);
        if interval == 0 {
            r.error(
                d,
                &["spec", "outlier_detection", "interval_ms"],
                "interval_ms must be greater than 0",
            );
        }
        let base = o.base_ejection_time_ms.unwrap_or(30_000);
        let max = o.max_ejection_time_ms.unwrap_or(300_000).max(base);
        s.outlier = Some(OutlierConf {
            consecutive_5xx: o.consecutive_5xx.unwrap_or(5),
            consecutive_gateway_failure: o.consecutive_gateway_failure.unwrap_or(5),
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

fn compile_lb(d: &mut Diags, r: &Resource, lb: &LoadBalancerM) -> LbConf {
    let base = ["spec", "load_balancer"];
    let policy = match lb.policy.unwrap_or(LbPolicyM::RoundRobin) {
        LbPolicyM::RoundRobin => LbPolicy::RoundRobin,
        LbPolicyM::LeastRequest => LbPolicy::LeastRequest,
        LbPolicyM::Ewma => LbPolicy::Ewma,
        LbPolicyM::Random => LbPolicy::Random,
        LbPolicyM::RingHash => LbPolicy::RingHash,
        LbPolicyM::Maglev => LbPolicy::Maglev,
    };
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
    let threshold = lb.healthy_panic_threshold.unwrap_or(50);
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

fn parse_status_range(s: &StatusRangeM) -> Result<(u16, u16), String> {
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

fn compile_hc(d: &mut Diags, r: &Resource, i: usize, h: &HealthCheckM) -> Option<HealthCheckConf> {
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
            expected.push((200, 399));
        }
        HealthCheckKind::Http {
            path: path.clone(),
            host: h.host.clone(),
            expected_statuses: expected,
        }
    };
    let interval = h.interval_ms.unwrap_or(5000);
    let timeout = h.timeout_ms.unwrap_or(1000);
    for (f, v) in [("interval_ms", interval), ("timeout_ms", timeout)] {
        if v == 0 {
            r.error(d, &p(&base, &[f]), format!("{f} must be greater than 0"));
        }
    }
    let unhealthy = h.unhealthy_threshold.unwrap_or(3);
    let healthy = h.healthy_threshold.unwrap_or(2);
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

fn check_files(
    d: &mut Diags,
    r: &Resource,
    base: &[&str],
    files: &[(&str, Option<&String>)],
) -> Vec<Option<std::path::PathBuf>> {
    files
        .iter()
        .map(|(field, f)| {
            let f = (*f)?;
            let path = path_of(&r.base_dir, f);
            if !path.is_file() {
                r.error(
                    d,
                    &p(base, &[field]),
                    format!(
                        "{field} `{f}` does not exist (resolved to {})",
                        path.display()
                    ),
                );
            }
            Some(path)
        })
        .collect()
}

// ---------------------------------------------------------------- listeners, hosts

impl Ctx<'_> {
    fn listeners(&mut self, resources: &[Resource]) -> Vec<ListenerConf> {
        let mut out: Vec<(ListenerConf, &Resource)> = Vec::new();
        for r in resources.iter().filter(|r| r.kind == LISTENER) {
            let Some(Spec::Listener(l)) = &r.spec else {
                continue;
            };
            let address = match l.address.as_deref().map(str::trim) {
                None | Some("") => Some(IpAddr::from([0, 0, 0, 0])),
                Some(a) => match a
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                {
                    Ok(ip) => Some(ip),
                    Err(_) => {
                        r.error(
                            self.d,
                            &["spec", "address"],
                            format!("invalid address `{a}` (expected an IP address)"),
                        );
                        None
                    }
                },
            };
            let port = match l.port {
                Some(0) => {
                    r.error(self.d, &["spec", "port"], "port must be 1-65535");
                    continue;
                }
                Some(p) => p,
                None => {
                    r.missing(self.d, &["spec", "port"], "missing field `port`");
                    continue;
                }
            };
            let Some(address) = address else { continue };
            let conf = ListenerConf {
                name: r.name.clone(),
                address,
                port,
                protocol: match l.protocol.unwrap_or(ListenerProtocolM::Http) {
                    ListenerProtocolM::Http => ListenerProtocol::Http,
                    ListenerProtocolM::Https => ListenerProtocol::Https,
                    ListenerProtocolM::HttpProxy => ListenerProtocol::HttpProxy,
                    ListenerProtocolM::HttpsProxy => ListenerProtocol::HttpsProxy,
                },
                http2: l.http2.unwrap_or(true),
                max_connections: l.max_connections.unwrap_or(100_000),
                trust_forwarded: l.trust_forwarded.unwrap_or(false),
                limits: listener_limits(r, self.d, l),
            };
            if conf.max_connections == 0 {
                r.error(
                    self.d,
                    &["spec", "max_connections"],
                    "max_connections must be at least 1",
                );
            }
            let clash = out.iter().find(|(o, _)| {
                o.port == port
                    && (o.address == address
                        || (o.address.is_ipv4() == address.is_ipv4()
                            && (o.address.is_unspecified() || address.is_unspecified())))
            });
            if let Some((o, first)) = clash {
                let at = first.loc(&["spec", "port"]);
                r.error(
                    self.d,
                    &["spec", "port"],
                    format!(
                        "address {address}:{port} conflicts with Listener/{} ({}:{}, {at})",
                        first.name, o.address, o.port
                    ),
                );
                continue;
            }
            out.push((conf, r));
        }
        let mut listeners: Vec<ListenerConf> = out.into_iter().map(|(l, _)| l).collect();
        if listeners.is_empty() {
            listeners.push(ListenerConf {
                name: "default".to_string(),
                address: IpAddr::from([0, 0, 0, 0]),
                port: 8080,
                protocol: ListenerProtocol::Http,
                http2: true,
                max_connections: 100_000,
                trust_forwarded: false,
                limits: ListenerLimits::default(),
            });
        }
        listeners
    }

    fn hosts(&mut self, resources: &[Resource]) -> Vec<HostConf> {
        let mut out: Vec<HostConf> = Vec::new();
        let mut seen: HashMap<HostGlob, &Resource> = HashMap::new();
        for r in resources.iter().filter(|r| r.kind == HOST) {
            let Some(Spec::Host(h)) = &r.spec else {
                continue;
            };
            let hostname = match &h.hostname {
                None => {
                    r.missing(self.d, &["spec", "hostname"], "missing field `hostname`");
                    continue;
                }
                Some(s) => {
                    match crate::route_match::split_port(s).and_then(|(h, _)| check_host_glob(h)) {
                        Ok(g) => g,
                        Err(m) => {
                            r.error(self.d, &["spec", "hostname"], m);
                            continue;
                        }
                    }
                }
            };
            if let Some(first) = seen.get(&hostname) {
                let at = first.loc(&["spec", "hostname"]);
                r.error(
                    self.d,
                    &["spec", "hostname"],
                    format!(
                        "hostname `{hostname}` is already used by Host/{} ({at})",
                        first.name
                    ),
                );
                continue;
            }
            seen.insert(hostname.clone(), r);
            let tls = h.tls.as_ref().and_then(|t| {
                let base = ["spec", "tls"];
                for (f, v) in [
                    ("cert_chain_file", &t.cert_chain_file),
                    ("private_key_file", &t.private_key_file),
                ] {
                    if v.is_none() {
                        r.missing(
                            self.d,
                            &p(&base, &[f]),
                            format!("missing field `{f}` in tls"),
                        );
                    }
                }
                let files = check_files(
                    self.d,
                    r,
                    &base,
                    &[
                        ("cert_chain_file", t.cert_chain_file.as_ref()),
                        ("private_key_file", t.private_key_file.as_ref()),
                        ("ca_file", t.ca_file.as_ref()),
                    ],
                );
                let alpn: Vec<String> = t
                    .alpn_protocols
                    .as_deref()
                    .unwrap_or("h2,http/1.1")
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for a in &alpn {
                    if a != "h2" && a != "http/1.1" {
                        r.error(
                            self.d,
                            &p(&base, &["alpn_protocols"]),
                            format!("unsupported ALPN protocol `{a}` (expected h2, http/1.1)"),
                        );
                    }
                }
                let mut it = files.into_iter();
                let (cert, key, ca) = (
                    it.next().flatten(),
                    it.next().flatten(),
                    it.next().flatten(),
                );
                Some(TlsConf {
                    cert_chain_file: cert?,
                    private_key_file: key?,
                    alpn_protocols: alpn,
                    min_tls_version: match t.min_tls_version {
                        Some(TlsVersionM::V13) => TlsVersion::V1_3,
                        _ => TlsVersion::V1_2,
                    },
                    ca_file: ca,
                })
            });
            let insecure = match h
                .request_policy
                .as_ref()
                .and_then(|p| p.insecure.as_ref())
                .and_then(|i| i.action)
            {
                None | Some(InsecureActionM::Redirect) => InsecureAction::Redirect,
                Some(InsecureActionM::Route) => InsecureAction::Route,
                Some(InsecureActionM::Reject) => InsecureAction::Reject,
            };
            out.push(HostConf {
                name: r.name.clone(),
                hostname,
                tls,
                insecure,
            });
        }
        out.sort_by_key(|h| std::cmp::Reverse(h.hostname.specificity()));
        out
    }

    // ------------------------------------------------------------ upstream resources

    fn upstream_resources(&mut self, resources: &[Resource]) {
        for r in resources.iter().filter(|r| r.kind == UPSTREAM) {
            let Some(Spec::Upstream(u)) = &r.spec else {
                self.broken.insert(r.name.clone());
                continue;
            };
            if r.name == "-" || self.by_name.contains_key(&r.name) {
                continue;
            }
            let base = ["spec"];
            let endpoints = match (&u.endpoints, &u.dns) {
                (Some(_), Some(_)) => {
                    r.error_key(
                        self.d,
                        &["spec", "dns"],
                        "set either endpoints or dns, not both",
                    );
                    None
                }
                (None, None) => {
                    if !r.was_removed(&["spec", "endpoints"]) && !r.was_removed(&["spec", "dns"]) {
                        r.missing(
                            self.d,
                            &["spec", "endpoints"],
                            "an Upstream needs `endpoints` or `dns`",
                        );
                    }
                    None
                }
                (Some(eps), None) => {
                    if eps.is_empty() && !r.was_removed(&["spec", "endpoints", "0"]) {
                        r.error(
                            self.d,
                            &["spec", "endpoints"],
                            "endpoints must not be empty",
                        );
                    }
                    let mut list = Vec::new();
                    for (i, e) in eps.iter().enumerate() {
                        let is = i.to_string();
                        let Some(addr) = &e.address else {
                            r.missing(
                                self.d,
                                &["spec", "endpoints", &is, "address"],
                                "missing field `address` in endpoint",
                            );
                            continue;
                        };
                        match parse_authority(addr.trim()) {
                            Ok((h, Some(port))) => {
                                let weight = e.weight.unwrap_or(1);
                                if weight == 0 {
                                    r.error(
                                        self.d,
                                        &["spec", "endpoints", &is, "weight"],
                                        "weight must be at least 1",
                                    );
                                }
                                list.push(EndpointConf {
                                    address: fmt_authority(&h, port),
                                    weight: weight.max(1),
                                });
                            }
                            Ok((_, None)) => {
                                r.error(
                                    self.d,
                                    &["spec", "endpoints", &is],
                                    format!("endpoint `{addr}` needs a port (host:port)"),
                                );
                            }
                            Err(m) => r.error(self.d, &["spec", "endpoints", &is], m),
                        }
                    }
                    Some(EndpointSource::Static(list))
                }
                (None, Some(dns)) => match parse_authority(dns.trim()) {
                    Ok((host, Some(port))) => {
                        let refresh = u.dns_refresh_ms.unwrap_or(5000);
                        if refresh == 0 {
                            r.error(
                                self.d,
                                &["spec", "dns_refresh_ms"],
                                "dns_refresh_ms must be greater than 0",
                            );
                        }
                        Some(EndpointSource::Dns {
                            host,
                            port,
                            refresh: ms(refresh.max(1)),
                        })
                    }
                    Ok((_, None)) => {
                        r.error(
                            self.d,
                            &["spec", "dns"],
                            format!("dns `{dns}` needs a port (host:port)"),
                        );
                        None
                    }
                    Err(m) => {
                        r.error(self.d, &["spec", "dns"], m);
                        None
                    }
                },
            };
            if u.dns.is_none() && u.dns_refresh_ms.is_some() {
                r.warn(
                    self.d,
                    &["spec", "dns_refresh_ms"],
                    "dns_refresh_ms is ignored without dns",
                );
            }
            let protocol = match u.protocol.unwrap_or(UpstreamProtocolM::Http1) {
                UpstreamProtocolM::Http1 => UpstreamProtocol::Http1,
                UpstreamProtocolM::H2c => UpstreamProtocol::H2c,
                UpstreamProtocolM::Https => UpstreamProtocol::Https,
                UpstreamProtocolM::Auto => UpstreamProtocol::Auto,
            };
            let tls_proto = matches!(protocol, UpstreamProtocol::Https | UpstreamProtocol::Auto);
            let tls = match &u.tls {
                Some(t) => {
                    if !tls_proto {
                        r.warn(
                            self.d,
                            &["spec", "tls"],
                            "tls is only used with protocol https or auto",
                        );
                    }
                    if t.cert_chain_file.is_some() != t.private_key_file.is_some() {
                        r.error_key(
                            self.d,
                            &["spec", "tls"],
                            "cert_chain_file and private_key_file go together",
                        );
                    }
                    let files = check_files(
                        self.d,
                        r,
                        &["spec", "tls"],
                        &[
                            ("ca_file", t.ca_file.as_ref()),
                            ("cert_chain_file", t.cert_chain_file.as_ref()),
                            ("private_key_file", t.private_key_file.as_ref()),
                        ],
                    );
                    let mut it = files.into_iter();
                    Some(UpstreamTlsConf {
                        ca_file: it.next().flatten(),
                        sni: t.sni.clone(),
                        cert_chain_file: it.next().flatten(),
                        private_key_file: it.next().flatten(),
                        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
                    })
                }
                None if tls_proto => Some(UpstreamTlsConf {
                    ca_file: None,
                    sni: match &endpoints {
                        Some(EndpointSource::Dns { host, .. }) => Some(host.clone()),
                        _ => None,
                    },
                    cert_chain_file: None,
                    private_key_file: None,
                    insecure_skip_verify: false,
                }),
                None => None,
            };
            let s = upstream_settings(
                self.d,
                r,
                u.load_balancer.as_ref(),
                u.health_checks.as_deref(),
                u.outlier_detection.as_ref(),
                u.circuit_breakers.as_ref(),
                u.connect_timeout_ms,
            );
            let max_idle = u.max_idle_connections_per_endpoint.unwrap_or(64);
            let idle = u.idle_connection_timeout_ms.unwrap_or(60_000);
            let _ = base;
            let Some(endpoints) = endpoints else {
                self.broken.insert(r.name.clone());
                continue;
            };
            let id = self.upstreams.len();
            self.upstreams.push(UpstreamConf {
                id,
                name: r.name.clone(),
                endpoints,
                protocol,
                // Only TLS protocols carry TLS settings (others got a warning above).
                tls: if tls_proto { tls } else { None },
                lb: s.lb.unwrap_or_else(default_lb),
                health_checks: s.health_checks.unwrap_or_default(),
                outlier: s.outlier,
                circuit_breakers: s.circuit_breakers.unwrap_or_default(),
                connect_timeout: s.connect_timeout.unwrap_or(ms(DEFAULT_CONNECT_TIMEOUT_MS)),
                max_idle_connections_per_endpoint: max_idle,
                idle_connection_timeout: ms(idle),
            });
            self.is_resource.push(true);
            self.set_by.push(Default::default());
            self.by_name.insert(r.name.clone(), id);
        }
    }

    fn rate_limit_service(&mut self, resources: &[Resource]) -> Option<RateLimitServiceConf> {
        let mut out: Option<(RateLimitServiceConf, &Resource)> = None;
        for r in resources.iter().filter(|r| r.kind == RATE_LIMIT_SERVICE) {
            let Some(Spec::RateLimitService(s)) = &r.spec else {
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
            let timeout = s.timeout_ms.unwrap_or(20);
            if timeout == 0 {
                r.error(
                    self.d,
                    &["spec", "timeout_ms"],
                    "timeout_ms must be greater than 0",
                );
            }
            let domain = s.domain.clone().unwrap_or_else(|| "portico".to_string());
            if domain.trim().is_empty() {
                r.error(self.d, &["spec", "domain"], "domain must not be empty");
            }
            out = Some((
                RateLimitServiceConf {
                    name: r.name.clone(),
                    upstream,
                    domain,
                    timeout: ms(timeout.max(1)),
                    failure_mode_deny: s.failure_mode_deny.unwrap_or(false),
                },
                r,
            ));
        }
        out.map(|(c, _)| c)
    }

    /// Applies a Mapping's upstream-level settings to the upstream it names (CONTRACT §2.3).
    fn apply_settings(&mut self, r: &Resource, upstream: usize, s: UpstreamSettings) {
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
                                u.connect_timeout =
                                    s.connect_timeout.unwrap_or(ms(DEFAULT_CONNECT_TIMEOUT_MS))
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- mappings

/// A compiled route before ordering.
struct Pending<'r> {
    route: Route,
    res: &'r Resource,
    group_key: String,
}

fn value_match_key(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Present => "p".to_string(),
        ValueMatch::Exact(s) => format!("e{s}"),
        ValueMatch::Regex(r) => format!("r{}", r.as_str()),
    }
}

/// Identity of a canary group (CONTRACT §2.5). `case_sensitive` matters for regexes, whose
/// compiled form does not show it.
fn group_key(r: &Route, case_sensitive: bool) -> String {
    let path = match &r.path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => format!("p{}{prefix}", u8::from(*case_sensitive)),
        PathMatch::Exact {
            path,
            case_sensitive,
        } => format!("e{}{path}", u8::from(*case_sensitive)),
        PathMatch::Regex { regex, .. } => {
            format!("r{}{}", u8::from(case_sensitive), regex.as_str())
        }
    };
    let mut headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| format!("{}={}", h.name, value_match_key(&h.value)))
        .collect();
    headers.sort();
    let mut query: Vec<String> = r
        .query
        .iter()
        .map(|q| format!("{}={}", q.name, value_match_key(&q.value)))
        .collect();
    query.sort();
    let extra = r.extra.as_ref().map_or(String::new(), |x| {
        format!(
            "{:?}|{}|{}|{}",
            x.port,
            x.host_regex.as_ref().map_or("", |re| re.as_str()),
            x.method_regex.as_ref().map_or("", |re| re.as_str()),
            x.authority.as_ref().map_or(String::new(), value_match_key)
        )
    });
    format!(
        "{}\u{0}{}\u{0}{path}\u{0}{}\u{0}{}\u{0}{}\u{0}{extra}",
        r.precedence,
        r.hostname,
        r.method.as_ref().map(Method::as_str).unwrap_or(""),
        headers.join("\u{1}"),
        query.join("\u{1}")
    )
}

fn header_adds(
    d: &mut Diags,
    r: &Resource,
    field: &str,
    adds: Option<&Pairs<HeaderAddM>>,
) -> Vec<HeaderAdd> {
    let mut out = Vec::new();
    for (name, add) in adds.map(|a| a.0.as_slice()).unwrap_or_default() {
        let path = ["spec", field, name.as_str()];
        let n = match header_name(name) {
            Ok(n) => n,
            Err(m) => {
                r.error_key(d, &path, m);
                continue;
            }
        };
        let Some(value) = &add.value else {
            r.missing(
                d,
                &p(&path, &["value"]),
                format!("missing field `value` for header `{name}`"),
            );
            continue;
        };
        match header_value(value) {
            Ok(v) => out.push(HeaderAdd {
                name: n,
                value: v,
                append: add.append.unwrap_or(true),
            }),
            Err(m) => {
                // `value` of `{ value, append }`, else the plain value.
                r.error(d, &p(&path, &["value"]), m);
            }
        }
    }
    out
}

fn header_removes(
    d: &mut Diags,
    r: &Resource,
    field: &str,
    list: Option<&StrList>,
) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, name) in list
        .map(|l| l.0.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        match header_name(name) {
            Ok(n) => out.push(n),
            Err(m) => r.error(d, &["spec", field, &i.to_string()], m),
        }
    }
    out
}

fn retry_policy(d: &mut Diags, r: &Resource, rp: &RetryPolicyM) -> RetryPolicy {
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
        bits = RetryOn::FIVE_XX | RetryOn::CONNECT_FAILURE | RetryOn::RESET;
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
    let pct = budget.budget_percent.unwrap_or(20.0);
    if !(0.0..=100.0).contains(&pct) {
        r.error(
            d,
            &p(&base, &["retry_budget", "budget_percent"]),
            "budget_percent must be 0-100",
        );
    }
    RetryPolicy {
        retry_on: RetryOn { bits },
        num_retries: rp.num_retries.unwrap_or(1),
        per_try_timeout: rp.per_try_timeout_ms.and_then(nonzero_ms),
        retriable_status_codes: codes,
        budget_percent: pct.clamp(0.0, 100.0),
        min_retry_concurrency: budget.min_retry_concurrency.unwrap_or(3),
    }
}

fn rate_limits(
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
        let scope = match rl.scope {
            Some(RateScopeM::Global) => RateLimitScope::Global,
            _ => RateLimitScope::Local,
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
                unit: match rl.unit {
                    Some(RateUnitM::Minute) => RateLimitUnit::Minute,
                    Some(RateUnitM::Hour) => RateLimitUnit::Hour,
                    _ => RateLimitUnit::Second,
                },
                burst,
                scope,
            });
        }
    }
    out
}

fn cors(d: &mut Diags, r: &Resource, c: &CorsM) -> CorsConf {
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
    let credentials = c.credentials.unwrap_or(false);
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

fn redirect(d: &mut Diags, r: &Resource, rd: &RedirectM) -> RedirectConf {
    let base = ["spec", "redirect"];
    let code = rd.response_code.unwrap_or(301);
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
    let https = rd.https.unwrap_or(false);
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

impl Ctx<'_> {
    fn routes(&mut self, resources: &[Resource], have_rls: bool) -> Vec<Route> {
        let mut pending: Vec<Pending<'_>> = Vec::new();
        for r in resources.iter().filter(|r| r.kind == MAPPING) {
            let Some(Spec::Mapping(m)) = &r.spec else {
                continue;
            };
            if let Some(route) = self.mapping(r, m, have_rls) {
                let group_key = group_key(&route, m.case_sensitive.unwrap_or(true));
                pending.push(Pending {
                    route,
                    res: r,
                    group_key,
                });
            }
        }
        order_and_group(self.d, pending)
    }

    fn mapping(&mut self, r: &Resource, m: &MappingSpec, have_rls: bool) -> Option<Route> {
        let d = &mut *self.d;
        let errors_before = d.list.len();
        let crate::route_match::HostMethod {
            hostname,
            method,
            extra,
        } = crate::route_match::compile(r, d, m);
        let case_sensitive = m.case_sensitive.unwrap_or(true);
        let exact = m.prefix_exact.unwrap_or(false);
        let is_regex = m.prefix_regex.unwrap_or(false);
        if exact && is_regex {
            r.error_key(
                d,
                &["spec", "prefix_regex"],
                "set either prefix_exact or prefix_regex, not both",
            );
        }
        let path = match &m.prefix {
            None => {
                r.missing(d, &["spec", "prefix"], "missing field `prefix`");
                None
            }
            Some(pfx) if is_regex => match anchored(pfx, !case_sensitive) {
                Ok(regex) => Some(PathMatch::Regex {
                    regex,
                    source: pfx.clone(),
                }),
                Err(e) => {
                    r.error(d, &["spec", "prefix"], e);
                    None
                }
            },
            Some(pfx) => {
                if !pfx.starts_with('/') {
                    r.error(
                        d,
                        &["spec", "prefix"],
                        format!("prefix `{pfx}` must start with `/`"),
                    );
                }
                let stored = if case_sensitive {
                    pfx.clone()
                } else {
                    pfx.to_ascii_lowercase()
                };
                Some(if exact {
                    PathMatch::Exact {
                        path: stored,
                        case_sensitive,
                    }
                } else {
                    PathMatch::Prefix {
                        prefix: stored,
                        case_sensitive,
                    }
                })
            }
        };
        let mut headers = Vec::new();
        let authority = |n: &str| n.eq_ignore_ascii_case(crate::route_match::AUTHORITY);
        for (name, v) in m.headers.iter().flat_map(|h| h.0.iter()) {
            if authority(name) {
                continue;
            }
            match header_name(name) {
                Ok(n) => headers.push(HeaderMatch {
                    name: n,
                    value: if v.0.is_empty() {
                        ValueMatch::Present
                    } else {
                        ValueMatch::Exact(v.0.clone())
                    },
                }),
                Err(e) => r.error_key(d, &["spec", "headers", name], e),
            }
        }
        for (name, v) in m.regex_headers.iter().flat_map(|h| h.0.iter()) {
            if authority(name) {
                continue;
            }
            match header_name(name) {
                Ok(n) => match anchored(v, false) {
                    Ok(re) => headers.push(HeaderMatch {
                        name: n,
                        value: ValueMatch::Regex(re),
                    }),
                    Err(e) => r.error(d, &["spec", "regex_headers", name], e),
                },
                Err(e) => r.error_key(d, &["spec", "regex_headers", name], e),
            }
        }
        let mut query = Vec::new();
        for (name, v) in m.query_parameters.iter().flat_map(|h| h.0.iter()) {
            if name.is_empty() {
                r.error_key(
                    d,
                    &["spec", "query_parameters", name],
                    "query parameter name must not be empty",
                );
                continue;
            }
            let value = if v.0.is_empty() {
                ValueMatch::Present
            } else {
                ValueMatch::Exact(v.0.clone())
            };
            query.push(QueryMatch {
                name: name.clone(),
                value,
            });
        }
        for (name, v) in m.regex_query_parameters.iter().flat_map(|h| h.0.iter()) {
            if name.is_empty() {
                r.error_key(
                    d,
                    &["spec", "regex_query_parameters", name],
                    "query parameter name must not be empty",
                );
                continue;
            }
            match anchored(v, false) {
                Ok(re) => query.push(QueryMatch {
                    name: name.clone(),
                    value: ValueMatch::Regex(re),
                }),
                Err(e) => r.error(d, &["spec", "regex_query_parameters", name], e),
            }
        }

        if let Some(w) = m.weight
            && w > 100
        {
            r.error(d, &["spec", "weight"], format!("weight {w} is over 100"));
        }

        let rewrite = match (&m.rewrite, &m.regex_rewrite) {
            (Some(_), Some(_)) => {
                r.error_key(
                    d,
                    &["spec", "regex_rewrite"],
                    "set either rewrite or regex_rewrite, not both",
                );
                Rewrite::None
            }
            (Some(rw), None) if rw.is_empty() => Rewrite::None,
            (Some(rw), None) => Rewrite::Prefix(rw.clone()),
            (None, Some(rr)) => {
                let base = ["spec", "regex_rewrite"];
                match (&rr.pattern, &rr.substitution) {
                    (Some(pat), sub) => match Regex::new(pat) {
                        Ok(regex) => {
                            if sub.is_none() {
                                r.missing(
                                    d,
                                    &p(&base, &["substitution"]),
                                    "missing field `substitution` in regex_rewrite",
                                );
                            }
                            Rewrite::Regex {
                                regex,
                                substitution: convert_substitution(sub.as_deref().unwrap_or("")),
                            }
                        }
                        Err(e) => {
                            r.error(
                                d,
                                &p(&base, &["pattern"]),
                                format!("invalid regex `{pat}`: {}", regex_reason(&e)),
                            );
                            Rewrite::None
                        }
                    },
                    (None, _) => {
                        r.missing(
                            d,
                            &p(&base, &["pattern"]),
                            "missing field `pattern` in regex_rewrite",
                        );
                        Rewrite::None
                    }
                }
            }
            (None, None) => Rewrite::None,
        };
        let host_rewrite = m.host_rewrite.as_ref().and_then(|h| {
            parse_authority(h.trim())
                .and_then(|_| header_value(h.trim()))
                .map_err(|e| r.error(d, &["spec", "host_rewrite"], e))
                .ok()
        });
        let add_request_headers =
            header_adds(d, r, "add_request_headers", m.add_request_headers.as_ref());
        let add_response_headers = header_adds(
            d,
            r,
            "add_response_headers",
            m.add_response_headers.as_ref(),
        );
        let remove_request_headers = header_removes(
            d,
            r,
            "remove_request_headers",
            m.remove_request_headers.as_ref(),
        );
        let remove_response_headers = header_removes(
            d,
            r,
            "remove_response_headers",
            m.remove_response_headers.as_ref(),
        );

        let allow_upgrade: Vec<String> = m
            .allow_upgrade
            .iter()
            .flat_map(|a| a.0.iter())
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        for (i, a) in allow_upgrade.iter().enumerate() {
            if a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'/'))
            {
                r.error(
                    d,
                    &["spec", "allow_upgrade", &i.to_string()],
                    format!("invalid upgrade protocol `{a}`"),
                );
            }
        }
        let retry = m.retry_policy.as_ref().map(|rp| retry_policy(d, r, rp));
        let rate_limits = rate_limits(d, r, m.rate_limits.as_deref().unwrap_or_default(), have_rls);
        let cors = m.cors.as_ref().map(|c| cors(d, r, c));
        let compression = m.compression.as_ref().map(|c| CompressionConf {
            enabled: c.enabled.unwrap_or(true),
            min_bytes: c.min_bytes.unwrap_or(1024),
            content_types: c
                .content_types
                .as_ref()
                .map(|l| l.0.clone())
                .unwrap_or_else(|| {
                    [
                        "text/*",
                        "application/json",
                        "application/javascript",
                        "application/xml",
                        "image/svg+xml",
                    ]
                    .map(String::from)
                    .to_vec()
                }),
        });
        let grpc = m.grpc.unwrap_or(false);

        // The action.
        let settings = upstream_settings(
            d,
            r,
            m.load_balancer.as_ref(),
            m.health_checks.as_deref(),
            m.outlier_detection.as_ref(),
            m.circuit_breakers.as_ref(),
            m.connect_timeout_ms,
        );
        let action = match (&m.redirect, &m.direct_response) {
            (Some(_), Some(_)) => {
                r.error_key(
                    d,
                    &["spec", "direct_response"],
                    "set either redirect or direct_response, not both",
                );
                None
            }
            (Some(rd), None) => {
                if m.service.is_some() {
                    r.warn(
                        d,
                        &["spec", "service"],
                        "service is ignored because redirect is set",
                    );
                }
                Some(RouteAction::Redirect(redirect(d, r, rd)))
            }
            (None, Some(dr)) => {
                if m.service.is_some() {
                    r.warn(
                        d,
                        &["spec", "service"],
                        "service is ignored because direct_response is set",
                    );
                }
                let base = ["spec", "direct_response"];
                let status = dr.status.unwrap_or(200);
                if !(200..=599).contains(&status) {
                    r.error(
                        d,
                        &p(&base, &["status"]),
                        format!("status {status} out of range (200-599)"),
                    );
                }
                let content_type = dr.content_type.as_ref().and_then(|c| {
                    header_value(c)
                        .map_err(|e| r.error(d, &p(&base, &["content_type"]), e))
                        .ok()
                });
                Some(RouteAction::Direct(DirectResponseConf {
                    status,
                    body: bytes::Bytes::from(dr.body.clone().unwrap_or_default()),
                    content_type,
                }))
            }
            (None, None) => match &m.service {
                None => {
                    r.missing(d, &["spec", "service"], "missing field `service` (required unless redirect or direct_response is set)");
                    None
                }
                Some(s) => {
                    let up = self.service_upstream(r, &["spec", "service"], s, grpc);
                    if let Some(u) = up {
                        // `https` offers only http/1.1 in ALPN (`auto` offers h2 too).
                        if grpc
                            && let Some(c) = self.upstreams.get(u)
                            && self.is_resource[u]
                            && matches!(
                                c.protocol,
                                UpstreamProtocol::Http1 | UpstreamProtocol::Https
                            )
                        {
                            let proto = if c.protocol == UpstreamProtocol::Https {
                                "https (TLS with HTTP/1.1 only)"
                            } else {
                                "http1"
                            };
                            r.warn(
                                self.d,
                                &["spec", "grpc"],
                                format!(
                                    "grpc needs HTTP/2, but this Upstream's protocol is {proto} \
                                     (set protocol: h2c, or auto for TLS, on the Upstream)"
                                ),
                            );
                        }
                        self.apply_settings(r, u, settings);
                    }
                    up.map(|upstream| RouteAction::Forward { upstream })
                }
            },
        };
        let d = &mut *self.d;
        let shadow = match &m.shadow {
            None => None,
            Some(sh) => {
                let percent = sh.percent.unwrap_or(100.0);
                if !(0.0..=100.0).contains(&percent) {
                    r.error(d, &["spec", "shadow", "percent"], "percent must be 0-100");
                }
                match &sh.service {
                    None => {
                        r.missing(
                            d,
                            &["spec", "shadow", "service"],
                            "missing field `service` in shadow",
                        );
                        None
                    }
                    Some(s) => self
                        .service_upstream(r, &["spec", "shadow", "service"], s, grpc)
                        .map(|upstream| ShadowConf {
                            upstream,
                            percent: percent.clamp(0.0, 100.0),
                        }),
                }
            }
        };
        let d = &mut *self.d;
        let timeout = nonzero_ms(m.timeout_ms.unwrap_or(15_000));
        let idle_timeout = nonzero_ms(m.idle_timeout_ms.unwrap_or(300_000));
        if let (Some(rt), Some(t)) = (&retry, timeout)
            && rt.per_try_timeout.is_some_and(|pt| pt > t)
        {
            r.warn(
                d,
                &["spec", "retry_policy", "per_try_timeout_ms"],
                "per_try_timeout_ms is longer than timeout_ms",
            );
        }
        if d.list[errors_before..].iter().any(|x| x.is_error()) {
            return None;
        }
        Some(Route {
            id: 0,
            name: r.name.clone(),
            file: r.file.to_string(),
            line: r.root.pos.line,
            hostname,
            path: path?,
            method,
            headers,
            query,
            precedence: m.precedence.unwrap_or(0),
            weight: m.weight,
            effective_weight: 100.0,
            group: 0,
            action: action?,
            rewrite,
            host_rewrite,
            add_request_headers,
            remove_request_headers,
            add_response_headers,
            remove_response_headers,
            timeout,
            idle_timeout,
            grpc,
            grpc_timeout_max: m.grpc_timeout_max_ms.and_then(nonzero_ms),
            allow_upgrade,
            retry,
            rate_limits,
            cors,
            shadow,
            compression,
            max_request_body: m.max_request_body_bytes.filter(|&b| b > 0),
            extra,
        })
    }
}

/// Sorts routes into match order (CONTRACT §2.3.1), keeps canary groups adjacent, assigns ids,
/// groups and effective weights (CONTRACT §2.5).
fn order_and_group(d: &mut Diags, mut pending: Vec<Pending<'_>>) -> Vec<Route> {
    use std::cmp::Reverse;
    let mut first_of_group: HashMap<&str, usize> = HashMap::with_capacity(pending.len());
    let mut keys = Vec::with_capacity(pending.len());
    for (i, pd) in pending.iter().enumerate() {
        let g = *first_of_group
            .entry(pd.group_key.as_str())
            .or_insert(pd.res.order);
        let rt = &pd.route;
        keys.push((
            (
                Reverse(rt.precedence),
                Reverse(rt.hostname.specificity()),
                !matches!(rt.path, PathMatch::Exact { .. }),
                Reverse(rt.path.order_len()),
                Reverse(rt.headers.len()),
                Reverse(rt.query.len()),
                rt.method.is_none(),
                g,
                pd.res.order,
            ),
            i,
        ));
    }
    keys.sort_unstable();
    let mut slots: Vec<Option<Pending<'_>>> = pending.drain(..).map(Some).collect();
    let ordered: Vec<Pending<'_>> = keys
        .iter()
        .filter_map(|(_, i)| slots.get_mut(*i).and_then(Option::take))
        .collect();

    let mut info: Vec<(usize, usize, f64)> = Vec::with_capacity(ordered.len());
    let mut start = 0;
    while start < ordered.len() {
        let mut end = start + 1;
        while end < ordered.len() && ordered[end].group_key == ordered[start].group_key {
            end += 1;
        }
        let group = &ordered[start..end];
        let explicit: u64 = group
            .iter()
            .filter_map(|p| p.route.weight)
            .map(u64::from)
            .sum();
        let unweighted = group.iter().filter(|p| p.route.weight.is_none()).count();
        if explicit > 100 {
            // Report on the member (in file order) whose weight pushes the sum over 100.
            let mut by_file: Vec<&Pending<'_>> =
                group.iter().filter(|p| p.route.weight.is_some()).collect();
            by_file.sort_by_key(|p| p.res.order);
            let mut sum = 0u64;
            let names: Vec<String> = by_file
                .iter()
                .map(|p| format!("Mapping/{} ({})", p.res.name, p.route.weight.unwrap_or(0)))
                .collect();
            for p in &by_file {
                sum += u64::from(p.route.weight.unwrap_or(0));
                if sum > 100 {
                    p.res.error(
                        d,
                        &["spec", "weight"],
                        format!(
                            "canary weights add up to {explicit}, over 100: {}",
                            names.join(", ")
                        ),
                    );
                    break;
                }
            }
        }
        if group.len() > 1 && unweighted == group.len() {
            let mut by_file: Vec<&Pending<'_>> = group.iter().collect();
            by_file.sort_by_key(|p| p.res.order);
            let others: Vec<String> = by_file
                .iter()
                .map(|p| format!("Mapping/{}", p.res.name))
                .collect();
            if let Some(second) = by_file.get(1) {
                second.res.warn(
                    d,
                    &["spec", "prefix"],
                    format!(
                        "{} have an identical match and no weights; traffic is split equally",
                        others.join(", ")
                    ),
                );
            }
        }
        // Explicit weights take their percentage, the others share what is left equally. When
        // every member has a weight and they add up to less than 100, they are scaled to 100
        // (all zero: equal shares), so a group's effective weights always add up to 100.
        let n = group.len() as f64;
        let explicit_f = explicit.min(100) as f64;
        for (k, p) in group.iter().enumerate() {
            let eff = match p.route.weight {
                _ if group.len() == 1 => 100.0,
                Some(w) if unweighted > 0 || explicit >= 100 => f64::from(w),
                Some(_) if explicit == 0 => 100.0 / n,
                Some(w) => f64::from(w) * 100.0 / explicit_f,
                None => (100.0 - explicit_f) / unweighted as f64,
            };
            info.push((start, start + k, eff));
        }
        start = end;
    }
    ordered
        .into_iter()
        .zip(info)
        .map(|(p, (group, id, effective_weight))| {
            let mut route = p.route;
            route.id = id;
            route.group = group;
            route.effective_weight = effective_weight;
            route
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_conversion() {
        assert_eq!(convert_substitution("/\\1"), "/${1}");
        assert_eq!(convert_substitution("/a/\\12/\\2"), "/a/${12}/${2}");
        assert_eq!(convert_substitution("$5 \\\\ x"), "$$5 \\ x");
        assert_eq!(convert_substitution("plain"), "plain");
    }

    #[test]
    fn authorities() {
        assert_eq!(
            parse_authority("Quote:8080"),
            Ok(("quote".into(), Some(8080)))
        );
        assert_eq!(parse_authority("quote"), Ok(("quote".into(), None)));
        assert_eq!(parse_authority("[::1]:80"), Ok(("::1".into(), Some(80))));
        assert!(parse_authority("::1:80").is_err());
        assert!(parse_authority("a:0").is_err());
        assert!(parse_authority("a:x").is_err());
        assert!(parse_authority("a b:1").is_err());
        assert!(parse_authority(":80").is_err());
        assert_eq!(fmt_authority("::1", 80), "[::1]:80");
    }

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

    #[test]
    fn host_globs() {
        assert_eq!(check_host_glob("*"), Ok(HostGlob::Any));
        assert_eq!(
            check_host_glob("*.A.com"),
            Ok(HostGlob::Suffix(".a.com".into()))
        );
        assert_eq!(
            check_host_glob("a.com"),
            Ok(HostGlob::Exact("a.com".into()))
        );
        assert!(check_host_glob("*a.com").is_err());
        assert!(check_host_glob("a.com:80").is_err());
        assert!(check_host_glob("a.*.com").is_err());
    }

    #[test]
    fn methods() {
        assert_eq!(parse_method("GET"), Ok(Method::GET));
        assert!(parse_method("PURGE").is_ok());
        assert!(parse_method("get").is_err());
        assert!(parse_method("").is_err());
        assert!(parse_method("G T").is_err());
    }

    #[test]
    fn origins_and_regexes() {
        let re = origin_glob("https://*.example.com").unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match("https://a.example.com"));
        assert!(re.is_match("HTTPS://A.EXAMPLE.COM"));
        assert!(!re.is_match("https://a.example.com.evil"));
        assert!(!re.is_match("http://a.example.com"));
        let re = anchored("/a|/b", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(re.is_match("/b") && !re.is_match("/b/c"));
        let e = anchored("(", false).err().unwrap_or_default();
        assert!(
            e.starts_with("invalid regex `(`: ") && !e.contains('\n'),
            "{e}"
        );
    }
}
