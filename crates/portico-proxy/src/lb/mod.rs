//! Load balancing (docs/reference.md §3.1): choosing an endpoint for one attempt.
//!
//! Everything a pick needs is precomputed per endpoint set (`EndpointSet::new`): the smooth
//! weighted round-robin schedule, cumulative weights for weighted random, and the consistent
//! hash ring or Maglev table. A pick reads atomics only: no lock, no allocation. Endpoints
//! that failed their health checks or are ejected are skipped unless fewer than
//! `healthy_panic_threshold` percent are available (panic mode: all are used).

pub mod maglev;
pub mod p2c;
pub mod ring;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue};
use portico_config::snapshot::{HashOn, LbConf, LbPolicy};

use crate::upstream::{Endpoint, EndpointSet, PickCtx, UpstreamState};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Milliseconds on a process-wide monotonic clock; never 0 (0 means "never" in endpoint state).
pub fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Microseconds on the same clock (for latency averages).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// MurmurHash3's 64-bit finalizer: a strong, stable bit mixer.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// A stable 64-bit hash (FNV-1a, then mixed): the same on every host and every run, so that
/// several Portico instances map a key to the same endpoint.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// The precomputed consistent-hash structure of an endpoint set.
#[derive(Debug, Default)]
pub enum HashTable {
    #[default]
    None,
    Ring(ring::Ring),
    Maglev(maglev::Maglev),
}

impl HashTable {
    pub fn build(policy: LbPolicy, endpoints: &[Arc<Endpoint>]) -> HashTable {
        match policy {
            LbPolicy::RingHash => HashTable::Ring(ring::Ring::build(endpoints)),
            LbPolicy::Maglev => HashTable::Maglev(maglev::Maglev::build(endpoints)),
            _ => HashTable::None,
        }
    }
}

/// The hash of a request's key for `ring_hash`/`maglev`, and a `Set-Cookie` value to put on
/// the response when the policy hashes on a cookie the request did not carry (a fresh random
/// value is generated, hashed on, and handed to the client). `(None, None)` for other
/// policies, or when the header is absent (the pick is then random).
pub fn hash_key(
    conf: &LbConf,
    headers: &HeaderMap,
    client: IpAddr,
) -> (Option<u64>, Option<HeaderValue>) {
    if !matches!(conf.policy, LbPolicy::RingHash | LbPolicy::Maglev) {
        return (None, None);
    }
    match &conf.hash_on {
        None => (None, None),
        Some(HashOn::Header(name)) => {
            let mut values = headers.get_all(name).iter();
            let Some(first) = values.next() else {
                return (None, None);
            };
            let mut h = hash_bytes(first.as_bytes());
            for v in values {
                h = fmix64(h ^ hash_bytes(v.as_bytes()));
            }
            (Some(h), None)
        }
        Some(HashOn::SourceIp) => {
            let h = match client {
                IpAddr::V4(a) => hash_bytes(&a.octets()),
                IpAddr::V6(a) => match a.to_ipv4_mapped() {
                    Some(v4) => hash_bytes(&v4.octets()),
                    None => hash_bytes(&a.octets()),
                },
            };
            (Some(h), None)
        }
        Some(HashOn::Cookie { name, ttl }) => {
            if let Some(v) = find_cookie(headers, name) {
                return (Some(hash_bytes(v.as_bytes())), None);
            }
            let value = format!("{:016x}", fastrand::u64(..));
            let hash = hash_bytes(value.as_bytes());
            let mut cookie = format!("{name}={value}; Path=/; HttpOnly");
            if let Some(ttl) = ttl {
                cookie.push_str(&format!("; Max-Age={}", ttl.as_secs().max(1)));
            }
            (Some(hash), HeaderValue::from_str(&cookie).ok())
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Slow start: the fraction of its weight a new or recovered endpoint gets (10%..100%,
/// linear over the window). Recovered means back from failing health checks (`since`, set by
/// `health`) or from an outlier ejection: ejections end lazily, so the ramp counts from the
/// end of the latest ejection (`ejected_until`, once passed) when that is later.
pub fn ramp(ep: &Endpoint, now: u64, window: Option<Duration>) -> f64 {
    let Some(window) = window else { return 1.0 };
    let mut since = ep.since.load(Ordering::Relaxed);
    let ejection_end = ep.ejected_until.load(Ordering::Relaxed);
    if ejection_end <= now {
        // Still ejected (only picked in panic mode): the ejection is no recovery yet.
        since = since.max(ejection_end);
    }
    if since == 0 {
        return 1.0;
    }
    let w = window.as_millis().max(1) as f64;
    let elapsed = now.saturating_sub(since) as f64;
    if elapsed >= w {
        1.0
    } else {
        (elapsed / w).max(0.1)
    }
}

/// Whether a slow-starting endpoint takes this pick (probabilistic thinning of its share).
fn ramp_accepts(ep: &Endpoint, now: u64, window: Option<Duration>) -> bool {
    let f = ramp(ep, now, window);
    f >= 1.0 || fastrand::f64() < f
}

/// Picks an endpoint of `up` for one attempt.
pub(crate) fn pick(up: &UpstreamState, ctx: &PickCtx<'_>) -> Option<Arc<Endpoint>> {
    let set = up.endpoints.load();
    let eps = &set.endpoints;
    let n = eps.len();
    if n == 0 {
        return None;
    }
    let now = now_ms();
    let avail = eps.iter().filter(|e| e.available(now)).count();
    let panic = avail * 100 < up.conf.lb.healthy_panic_threshold as usize * n;
    let usable = |e: &Endpoint| panic || e.available(now);
    if avail == 0 && !panic {
        return None;
    }
    if n == 1 {
        return Some(eps[0].clone());
    }
    let strict = |e: &Endpoint| usable(e) && !ctx.avoid.contains(&e.addr);
    if let Some(i) = choose(up, &set, ctx.hash, now, &strict) {
        return Some(eps[i].clone());
    }
    if !ctx.avoid.is_empty()
        && let Some(i) = choose(up, &set, ctx.hash, now, &usable)
    {
        return Some(eps[i].clone());
    }
    None
}

fn choose(
    up: &UpstreamState,
    set: &EndpointSet,
    hash: Option<u64>,
    now: u64,
    ok: &dyn Fn(&Endpoint) -> bool,
) -> Option<usize> {
    let lb = &up.conf.lb;
    let slow = lb.slow_start_window;
    let eps = &set.endpoints;
    match lb.policy {
        LbPolicy::RoundRobin => round_robin(up, set, now, ok, slow),
        LbPolicy::Random => random(set, now, ok, slow),
        LbPolicy::LeastRequest => p2c::pick(eps, ok, |e| p2c::least_request_cost(e, now, slow)),
        LbPolicy::Ewma => {
            let us = now_us();
            p2c::pick(eps, ok, |e| p2c::ewma_cost(e, us, now, slow))
        }
        LbPolicy::RingHash | LbPolicy::Maglev => {
            let Some(h) = hash else {
                return random(set, now, ok, None);
            };
            let found = match &set.hash {
                HashTable::Ring(r) => r.lookup(h, |i| eps.get(i).is_some_and(|e| ok(e))),
                HashTable::Maglev(m) => m.lookup(h, |i| eps.get(i).is_some_and(|e| ok(e))),
                HashTable::None => None,
            };
            found.or_else(|| scan(eps, (h % eps.len() as u64) as usize, ok))
        }
    }
}

fn round_robin(
    up: &UpstreamState,
    set: &EndpointSet,
    now: u64,
    ok: &dyn Fn(&Endpoint) -> bool,
    slow: Option<Duration>,
) -> Option<usize> {
    let n = set.endpoints.len();
    for _ in 0..(2 * n + 2) {
        let tick = up.rr.fetch_add(1, Ordering::Relaxed);
        let idx = if set.schedule.is_empty() {
            tick % n
        } else {
            set.schedule[tick % set.schedule.len()] as usize
        };
        let e = &set.endpoints[idx];
        if ok(e) && ramp_accepts(e, now, slow) {
            return Some(idx);
        }
    }
    scan(&set.endpoints, fastrand::usize(..n), ok)
}

fn random(
    set: &EndpointSet,
    now: u64,
    ok: &dyn Fn(&Endpoint) -> bool,
    slow: Option<Duration>,
) -> Option<usize> {
    let n = set.endpoints.len();
    for _ in 0..8 {
        let idx = match set.cumulative.last() {
            None => fastrand::usize(..n),
            Some(&total) => {
                let r = fastrand::u64(..total.max(1));
                set.cumulative.partition_point(|&c| c <= r).min(n - 1)
            }
        };
        let e = &set.endpoints[idx];
        if ok(e) && ramp_accepts(e, now, slow) {
            return Some(idx);
        }
    }
    scan(&set.endpoints, fastrand::usize(..n), ok)
}

/// The first acceptable endpoint from `start` on (wrapping).
pub(crate) fn scan(
    eps: &[Arc<Endpoint>],
    start: usize,
    ok: &dyn Fn(&Endpoint) -> bool,
) -> Option<usize> {
    let n = eps.len();
    (0..n).map(|k| (start + k) % n).find(|&i| ok(&eps[i]))
}

/// Endpoints 10.0.0.1:PORT, weight 1, for the balancers' unit tests.
#[cfg(test)]
pub(crate) fn test_endpoints(ports: &[u16]) -> Vec<std::sync::Arc<crate::upstream::Endpoint>> {
    ports
        .iter()
        .map(|p| {
            let addr: std::net::SocketAddr = format!("10.0.0.1:{p}").parse().expect("addr");
            std::sync::Arc::new(crate::upstream::Endpoint::new(addr, 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::COOKIE;

    fn conf(policy: LbPolicy, hash_on: Option<HashOn>) -> LbConf {
        LbConf {
            policy,
            hash_on,
            healthy_panic_threshold: 50,
            slow_start_window: None,
        }
    }

    #[test]
    fn cookie_present_is_hashed_absent_is_generated() {
        let c = conf(
            LbPolicy::RingHash,
            Some(HashOn::Cookie {
                name: "sticky".into(),
                ttl: Some(Duration::from_secs(60)),
            }),
        );
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_static("a=1; sticky=abc; b=2"));
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let (k, set) = hash_key(&c, &h, ip);
        assert_eq!(k, Some(hash_bytes(b"abc")));
        assert!(set.is_none());
        let (k, set) = hash_key(&c, &HeaderMap::new(), ip);
        let set = set.expect("set-cookie");
        let s = set.to_str().expect("ascii");
        assert!(s.starts_with("sticky=") && s.contains("Max-Age=60"), "{s}");
        let value = s["sticky=".len()..].split(';').next().expect("value");
        assert_eq!(k, Some(hash_bytes(value.as_bytes())));
    }

    #[test]
    fn header_and_source_ip_keys() {
        let c = conf(
            LbPolicy::Maglev,
            Some(HashOn::Header(http::HeaderName::from_static("x-user"))),
        );
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(hash_key(&c, &HeaderMap::new(), ip), (None, None));
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_static("u1"));
        assert_eq!(hash_key(&c, &h, ip).0, Some(hash_bytes(b"u1")));
        let c = conf(LbPolicy::RingHash, Some(HashOn::SourceIp));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(hash_key(&c, &h, ip).0, hash_key(&c, &h, mapped).0);
        // Not a hashing policy: nothing.
        let c = conf(LbPolicy::RoundRobin, Some(HashOn::SourceIp));
        assert_eq!(hash_key(&c, &h, ip), (None, None));
    }

    #[test]
    fn slow_start_ramps_linearly_from_ten_percent() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let w = Some(Duration::from_millis(1000));
        assert_eq!(ramp(&e, 5_000, w), 1.0); // present from the start
        e.since.store(4_000, Ordering::Relaxed);
        assert!((ramp(&e, 4_500, w) - 0.5).abs() < 1e-9);
        assert_eq!(ramp(&e, 4_010, w), 0.1);
        assert_eq!(ramp(&e, 5_000, w), 1.0);
        assert_eq!(ramp(&e, 4_010, None), 1.0);
    }

    #[test]
    fn slow_start_ramps_an_endpoint_back_from_ejection() {
        let e = Endpoint::new("127.0.0.1:1".parse().expect("addr"), 1);
        let w = Some(Duration::from_millis(1000));
        // Present from the start, then ejected until 10 000.
        e.ejected_until.store(10_000, Ordering::Relaxed);
        // While ejected (panic mode may still pick it) there is no ramp.
        assert_eq!(ramp(&e, 9_000, w), 1.0);
        // Back: 10% at first, half after half the window, all after the window.
        assert_eq!(ramp(&e, 10_000, w), 0.1);
        assert!((ramp(&e, 10_500, w) - 0.5).abs() < 1e-9);
        assert_eq!(ramp(&e, 11_000, w), 1.0);
        // A later health-check recovery counts from its own time.
        e.since.store(20_000, Ordering::Relaxed);
        assert!((ramp(&e, 20_250, w) - 0.25).abs() < 1e-9);
        // Without a window: no ramp.
        assert_eq!(ramp(&e, 10_000, None), 1.0);
    }

    #[test]
    fn round_robin_thins_an_endpoint_just_back_from_ejection() {
        use portico_config::snapshot::{
            CircuitBreakerConf, EndpointConf, EndpointSource, UpstreamConf, UpstreamProtocol,
        };
        let conf = UpstreamConf {
            id: 0,
            name: "u".into(),
            endpoints: EndpointSource::Static(
                ["10.0.0.1:80", "10.0.0.2:80"]
                    .iter()
                    .map(|a| EndpointConf {
                        address: (*a).into(),
                        weight: 1,
                    })
                    .collect(),
            ),
            protocol: UpstreamProtocol::Http1,
            tls: None,
            lb: LbConf {
                policy: LbPolicy::RoundRobin,
                hash_on: None,
                healthy_panic_threshold: 50,
                slow_start_window: Some(Duration::from_secs(600)),
            },
            health_checks: Vec::new(),
            outlier: None,
            circuit_breakers: CircuitBreakerConf::default(),
            connect_timeout: Duration::from_secs(1),
            max_idle_connections_per_endpoint: 64,
            idle_connection_timeout: Duration::from_secs(60),
        };
        let up = UpstreamState::new(std::sync::Arc::new(conf));
        let back = up.endpoints.load().endpoints[0].clone();
        // Its ejection ended just now: ~10% of its share (of 2 000 picks, ~100 of 1 000).
        back.ejected_until.store(now_ms(), Ordering::Relaxed);
        let ctx = PickCtx::default();
        let picked = (0..2_000)
            .filter(|_| up.pick(&ctx).is_some_and(|e| e.addr == back.addr))
            .count();
        assert!((30..400).contains(&picked), "picked {picked} of 2000");
    }
}
