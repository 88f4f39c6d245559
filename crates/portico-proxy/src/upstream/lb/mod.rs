//! Load balancing (docs/reference.md §3.1): choosing an endpoint for one attempt.
//!
//! Everything a pick needs is precomputed per endpoint set (`EndpointSet::new`): the smooth
//! weighted round-robin schedule, cumulative weights for weighted random, and the consistent
//! hash ring or Maglev table. A pick reads atomics only: no lock, no allocation. Endpoints
//! that failed their health checks or are ejected are skipped unless fewer than
//! `healthy_panic_threshold` percent are available (panic mode: all are used).

pub mod hash;
pub mod maglev;
pub mod p2c;
pub mod ring;
pub mod slow_start;

pub use hash::{fmix64, hash_bytes, hash_key};
pub use slow_start::ramp;
use slow_start::ramp_accepts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portico_config::snapshot::{LbConf, LbPolicy};

use crate::upstream::clock::{now_ms, now_us};
use crate::upstream::endpoint::Endpoint;

/// The endpoint set, with what its load-balancing policy precomputes: the smooth weighted
/// round-robin schedule, cumulative weights (weighted random), the hash ring or Maglev table.
#[derive(Debug, Default)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Indices into `endpoints`, in smooth-WRR order; empty when all weights are equal.
    pub(crate) schedule: Vec<u32>,
    /// Running sums of weights; empty when all weights are equal.
    pub(crate) cumulative: Vec<u64>,
    pub(crate) hash: HashTable,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Arc<Endpoint>>, policy: LbPolicy) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight().max(1)).collect();
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let schedule = if uniform || policy != LbPolicy::RoundRobin {
            Vec::new()
        } else {
            smooth_wrr_schedule(&weights)
        };
        let cumulative = if uniform || policy != LbPolicy::Random {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |acc, &w| {
                    *acc += u64::from(w);
                    Some(*acc)
                })
                .collect()
        };
        let hash = HashTable::build(policy, &endpoints);
        EndpointSet {
            endpoints,
            schedule,
            cumulative,
            hash,
        }
    }
}

/// Nginx's smooth weighted round robin, unrolled into one period (sum of weights, capped).
pub(crate) fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    // Keep the period bounded: scale weights down if their sum is huge.
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let scale = total.div_ceil(10_000).max(1);
    let weights: Vec<i64> = weights
        .iter()
        .map(|&w| ((w as u64 / scale).max(1)) as i64)
        .collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

/// What the load balancer may use to choose.
#[derive(Debug, Default)]
pub struct PickCtx<'a> {
    /// Endpoints that just failed this request: avoided while another is available.
    pub avoid: &'a [SocketAddr],
    /// Hash of the request's key, for consistent-hash policies.
    pub hash: Option<u64>,
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

/// Picks an endpoint of an upstream for one attempt: from `set`, with its balancing settings
/// `lb` and its round-robin counter `rr`.
pub(crate) fn pick(
    set: &EndpointSet,
    lb: &LbConf,
    rr: &AtomicUsize,
    ctx: &PickCtx<'_>,
) -> Option<Arc<Endpoint>> {
    let eps = &set.endpoints;
    let n = eps.len();
    if n == 0 {
        return None;
    }
    let now = now_ms();
    let avail = eps.iter().filter(|e| e.available(now)).count();
    let panic = avail * 100 < lb.healthy_panic_threshold as usize * n;
    let usable = |e: &Endpoint| panic || e.available(now);
    if avail == 0 && !panic {
        return None;
    }
    if n == 1 {
        return Some(eps[0].clone());
    }
    let strict = |e: &Endpoint| usable(e) && !ctx.avoid.contains(&e.addr);
    if let Some(i) = choose(lb, rr, set, ctx.hash, now, &strict) {
        return Some(eps[i].clone());
    }
    if !ctx.avoid.is_empty()
        && let Some(i) = choose(lb, rr, set, ctx.hash, now, &usable)
    {
        return Some(eps[i].clone());
    }
    None
}

fn choose(
    lb: &LbConf,
    rr: &AtomicUsize,
    set: &EndpointSet,
    hash: Option<u64>,
    now: u64,
    ok: &dyn Fn(&Endpoint) -> bool,
) -> Option<usize> {
    let slow = lb.slow_start_window;
    let eps = &set.endpoints;
    match lb.policy {
        LbPolicy::RoundRobin => round_robin(rr, set, now, ok, slow),
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
    rr: &AtomicUsize,
    set: &EndpointSet,
    now: u64,
    ok: &dyn Fn(&Endpoint) -> bool,
    slow: Option<Duration>,
) -> Option<usize> {
    let n = set.endpoints.len();
    for _ in 0..(2 * n + 2) {
        let tick = rr.fetch_add(1, Ordering::Relaxed);
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
    use crate::upstream::UpstreamState;
    use http::header::COOKIE;
    use http::{HeaderMap, HeaderValue};
    use portico_config::snapshot::HashOn;
    use std::net::IpAddr;

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
