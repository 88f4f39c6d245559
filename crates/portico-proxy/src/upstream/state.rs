//! Runtime state of one upstream: its resolved endpoints and the load-balancer state.
//!
//! An `UpstreamState` outlives reloads as long as the upstream's settings do not change, so
//! its connection pools (keyed by `uid`) and counters survive. Endpoints are replaced
//! wholesale (an atomic pointer swap) when DNS answers change; picking an endpoint is
//! lock-free. Load balancing lives in `lb`, active health checks in `health`, passive ones
//! in `outlier`; their per-endpoint state is atomics on [`Endpoint`] (`endpoint.rs`), so it
//! survives endpoint set changes for endpoints that stay. Circuit breakers: `breaker.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use portico_config::snapshot::{EndpointSource, LbPolicy, UpstreamConf};

use crate::upstream::breaker::Breakers;
use crate::upstream::clock::{now_ms, now_us};
use crate::upstream::endpoint::{AttemptReport, Endpoint, EndpointHealth};
use crate::upstream::lb::{self, EndpointSet, PickCtx};
use crate::upstream::outlier;
use crate::upstream::tls::UpstreamTls;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// Runtime state of one upstream.
#[derive(Debug)]
pub struct UpstreamState {
    /// Unique per state object: the key of its connection pools.
    pub uid: u64,
    pub conf: Arc<UpstreamConf>,
    pub endpoints: ArcSwap<EndpointSet>,
    pub breakers: Arc<Breakers>,
    /// TLS client settings (`https`/`auto` upstreams), built once with the state; `None` for
    /// plain-text upstreams, or when the settings are unusable (logged; connects then fail).
    pub tls: Option<Arc<UpstreamTls>>,
    pub(crate) rr: AtomicUsize,
    /// Outlier ejections so far.
    pub ejections_total: AtomicU64,
}

impl UpstreamState {
    pub fn new(conf: Arc<UpstreamConf>) -> Self {
        let initial = match &conf.endpoints {
            EndpointSource::Static(list) => list
                .iter()
                .filter_map(|e| e.address.parse::<SocketAddr>().ok().map(|a| (a, e.weight)))
                .map(|(addr, weight)| Arc::new(Endpoint::new(addr, weight)))
                .collect(),
            EndpointSource::Dns { .. } => Vec::new(),
        };
        let tls = match UpstreamTls::build(&conf) {
            Ok(t) => t.map(Arc::new),
            Err(e) => {
                tracing::error!(upstream = %conf.name, error = %e, "upstream TLS settings unusable; connections will fail");
                None
            }
        };
        let policy = conf.lb.policy;
        let uid = NEXT_UID.fetch_add(1, Ordering::Relaxed);
        for e in &initial {
            e.owner.store(uid, Ordering::Relaxed);
        }
        UpstreamState {
            uid,
            conf,
            endpoints: ArcSwap::from_pointee(EndpointSet::new(initial, policy)),
            breakers: Arc::default(),
            tls,
            rr: AtomicUsize::new(0),
            ejections_total: AtomicU64::new(0),
        }
    }

    /// Takes over the endpoint state (health, ejection, latency, slow start, active requests)
    /// of `prev`, the state this one replaces after a reload that changed the upstream's
    /// settings, for the endpoints that stay (same address; a changed weight is taken from the
    /// new config); endpoints that are new to it start slow.
    pub fn adopt_endpoints(&self, prev: &UpstreamState) {
        let old = prev.endpoints.load();
        if old.endpoints.is_empty() {
            return;
        }
        let same_checks = prev.conf.health_checks == self.conf.health_checks;
        let now = now_ms();
        let cur = self.endpoints.load();
        let fresh: Vec<Arc<Endpoint>> = cur
            .endpoints
            .iter()
            .map(|e| match old.endpoints.iter().find(|o| o.addr == e.addr) {
                Some(o) => {
                    o.reweight(e.weight());
                    if !same_checks {
                        o.hc_down.store(0, Ordering::Relaxed);
                    }
                    o.owner.store(self.uid, Ordering::Relaxed);
                    o.clone()
                }
                None => {
                    e.since.store(now, Ordering::Relaxed);
                    e.clone()
                }
            })
            .collect();
        self.endpoints
            .store(Arc::new(EndpointSet::new(fresh, self.conf.lb.policy)));
    }

    /// Does this state serve `conf` unchanged (same settings; the id may differ)?
    pub fn same_settings(&self, conf: &UpstreamConf) -> bool {
        let a = &*self.conf;
        a.name == conf.name
            && a.endpoints == conf.endpoints
            && a.protocol == conf.protocol
            && a.tls == conf.tls
            && a.lb == conf.lb
            && a.health_checks == conf.health_checks
            && a.outlier == conf.outlier
            && a.circuit_breakers == conf.circuit_breakers
            && a.connect_timeout == conf.connect_timeout
            && a.max_idle_connections_per_endpoint == conf.max_idle_connections_per_endpoint
            && a.idle_connection_timeout == conf.idle_connection_timeout
    }

    /// Replaces the endpoint set, keeping the state of endpoints that stay (matched on address:
    /// an endpoint whose weight alone changed keeps its health, ejection, active requests and
    /// pooled connections, and takes the new weight).
    pub fn set_endpoints(&self, addrs: Vec<(SocketAddr, u32)>) {
        let old = self.endpoints.load();
        // Endpoints joining a set that had some start slow.
        let since = if old.endpoints.is_empty() {
            0
        } else {
            now_ms()
        };
        let mut fresh = Vec::with_capacity(addrs.len());
        let mut reweighted = false;
        for (addr, weight) in addrs {
            match old.endpoints.iter().find(|e| e.addr == addr) {
                Some(e) => {
                    reweighted |= e.reweight(weight);
                    fresh.push(e.clone())
                }
                None => {
                    let e = Endpoint::new(addr, weight);
                    e.since.store(since, Ordering::Relaxed);
                    e.owner.store(self.uid, Ordering::Relaxed);
                    fresh.push(Arc::new(e))
                }
            }
        }
        let unchanged = !reweighted
            && fresh.len() == old.endpoints.len()
            && fresh
                .iter()
                .zip(old.endpoints.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if !unchanged {
            self.endpoints
                .store(Arc::new(EndpointSet::new(fresh, self.conf.lb.policy)));
        }
    }

    /// Picks an endpoint for one attempt with the upstream's policy (see `lb`): only
    /// healthy, non-ejected endpoints unless in panic mode; `ctx.avoid` while another is left.
    pub fn pick(&self, ctx: &PickCtx<'_>) -> Option<Arc<Endpoint>> {
        lb::pick(&self.endpoints.load(), &self.conf.lb, &self.rr, ctx)
    }

    /// Endpoint counts by state (`healthy`, `unhealthy`, `ejected`), for `/upstreams` and the
    /// metrics.
    pub fn endpoint_state_counts(&self) -> [(&'static str, usize); 3] {
        let set = self.endpoints.load();
        let count = |h: EndpointHealth| set.endpoints.iter().filter(|e| e.health() == h).count();
        [
            ("healthy", count(EndpointHealth::Healthy)),
            ("unhealthy", count(EndpointHealth::Unhealthy)),
            ("ejected", count(EndpointHealth::Ejected)),
        ]
    }

    /// Records how an attempt on `ep` ended (outlier detection, latency-aware balancing).
    pub fn report(&self, ep: &Endpoint, report: AttemptReport) {
        if self.conf.lb.policy == LbPolicy::Ewma && report.status.is_some() {
            ep.ewma.observe(report.latency, now_us());
        }
        if let Some(o) = &self.conf.outlier {
            let set = self.endpoints.load();
            let up = outlier::Upstream {
                name: &self.conf.name,
                conf: o,
                set: &set,
                ejections_total: &self.ejections_total,
            };
            outlier::observe(&up, ep, &report);
        }
    }
}

/// Resolves `host:port` (all A/AAAA records), off the request path.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let mut out: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::lb::smooth_wrr_schedule;
    use portico_config::snapshot::{CircuitBreakerConf, EndpointConf, LbConf, UpstreamProtocol};

    fn conf(endpoints: &[(&str, u32)], policy: LbPolicy) -> Arc<UpstreamConf> {
        Arc::new(UpstreamConf {
            id: 0,
            name: "u".into(),
            endpoints: EndpointSource::Static(
                endpoints
                    .iter()
                    .map(|&(a, w)| EndpointConf {
                        address: a.into(),
                        weight: w,
                    })
                    .collect(),
            ),
            protocol: UpstreamProtocol::Http1,
            tls: None,
            lb: LbConf {
                policy,
                hash_on: None,
                healthy_panic_threshold: 50,
                slow_start_window: None,
            },
            health_checks: Vec::new(),
            outlier: None,
            circuit_breakers: CircuitBreakerConf::default(),
            connect_timeout: std::time::Duration::from_secs(1),
            max_idle_connections_per_endpoint: 64,
            idle_connection_timeout: std::time::Duration::from_secs(60),
        })
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Marks `e` with state that must survive: unhealthy, ejected, one request in flight.
    fn dirty(e: &Endpoint) {
        e.hc_down.store(1, Ordering::Relaxed);
        e.ejected_until.store(u64::MAX, Ordering::Relaxed);
        e.ejections.store(2, Ordering::Relaxed);
        e.active.store(1, Ordering::Relaxed);
    }

    fn kept_state(e: &Endpoint) -> bool {
        e.hc_down.load(Ordering::Relaxed) == 1
            && e.ejected_until.load(Ordering::Relaxed) == u64::MAX
            && e.ejections.load(Ordering::Relaxed) == 2
            && e.active.load(Ordering::Relaxed) == 1
    }

    #[test]
    fn dns_refresh_changing_only_a_weight_keeps_the_endpoint_state() {
        let up = UpstreamState::new(conf(&[], LbPolicy::RoundRobin));
        up.set_endpoints(vec![(addr("10.0.0.1:80"), 1), (addr("10.0.0.2:80"), 1)]);
        let before = up.endpoints.load_full();
        dirty(&before.endpoints[0]);
        up.set_endpoints(vec![(addr("10.0.0.1:80"), 3), (addr("10.0.0.2:80"), 1)]);
        let after = up.endpoints.load_full();
        assert!(Arc::ptr_eq(&before.endpoints[0], &after.endpoints[0]));
        assert!(kept_state(&after.endpoints[0]));
        assert_eq!(after.endpoints[0].weight(), 3);
        // The set was rebuilt with the new weight: a 3:1 smooth round-robin schedule.
        assert_eq!(after.schedule.len(), 4);
        assert_eq!(after.schedule.iter().filter(|&&i| i == 0).count(), 3);
        // The same answer again changes nothing.
        up.set_endpoints(vec![(addr("10.0.0.1:80"), 3), (addr("10.0.0.2:80"), 1)]);
        assert!(Arc::ptr_eq(&after, &up.endpoints.load_full()));
    }

    #[test]
    fn reload_changing_only_a_weight_keeps_the_endpoint_state() {
        let old = UpstreamState::new(conf(
            &[("10.0.0.1:80", 1), ("10.0.0.2:80", 1)],
            LbPolicy::RoundRobin,
        ));
        dirty(&old.endpoints.load().endpoints[1]);
        let new = UpstreamState::new(conf(
            &[("10.0.0.1:80", 1), ("10.0.0.2:80", 5)],
            LbPolicy::RoundRobin,
        ));
        new.adopt_endpoints(&old);
        let set = new.endpoints.load_full();
        let e = &set.endpoints[1];
        assert!(Arc::ptr_eq(e, &old.endpoints.load().endpoints[1]));
        assert!(kept_state(e));
        assert_eq!(e.weight(), 5);
        assert_eq!(e.owner.load(Ordering::Relaxed), new.uid);
        // Not a newcomer: no slow start.
        assert_eq!(e.since.load(Ordering::Relaxed), 0);
        assert_eq!(set.schedule.iter().filter(|&&i| i == 1).count(), 5);
    }

    #[test]
    fn smooth_wrr_interleaves() {
        let s = smooth_wrr_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
        // Smooth: the heavy endpoint never takes more than 3 in a row for 5:1:1.
        let mut run = 0;
        let mut max_run = 0;
        for &i in &s {
            run = if i == 0 { run + 1 } else { 0 };
            max_run = max_run.max(run);
        }
        assert!(max_run <= 3, "{s:?}");
    }
}
