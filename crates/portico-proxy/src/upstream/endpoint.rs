//! One endpoint of an upstream and the state every policy keeps on it: weight, requests in
//! flight, active-health bits, outlier ejection, slow start and the latency average. All of
//! it is atomics, so it is read lock-free by picks and survives endpoint-set changes for
//! endpoints that stay; `AttemptReport` is how an attempt's outcome comes back to it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::upstream::clock::now_ms;
use crate::upstream::ewma::Ewma;

/// One endpoint of an upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Its load-balancing weight: the latest one configured or resolved (a reload or DNS
    /// refresh that changes only the weight keeps the endpoint's state, see
    /// [`UpstreamState::set_endpoints`]).
    weight: AtomicU32,
    /// Requests in flight to this endpoint.
    pub active: AtomicU32,
    /// Bit i set: active health check i considers the endpoint unhealthy.
    pub hc_down: AtomicU32,
    /// `clock::now_ms()` until which outlier detection ejects it (0: never ejected).
    pub ejected_until: AtomicU64,
    /// Times ejected (for `/upstreams`).
    pub ejections: AtomicU32,
    /// Ejection-time multiplier (decays while the endpoint behaves).
    pub(crate) eject_mult: AtomicU32,
    pub(crate) consec_5xx: AtomicU32,
    pub(crate) consec_gw: AtomicU32,
    /// Peak-EWMA latency (the `ewma` policy).
    pub(crate) ewma: Ewma,
    /// `clock::now_ms()` when it joined or recovered, for slow start (0: from the start).
    pub since: AtomicU64,
    /// `uid` of the upstream state whose health checks update this endpoint (the newest one
    /// that took it over; an older state still held by long requests leaves it alone).
    pub(crate) owner: AtomicU64,
}

/// What `/upstreams` shows for an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointHealth {
    Healthy,
    Unhealthy,
    Ejected,
}

impl EndpointHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointHealth::Healthy => "healthy",
            EndpointHealth::Unhealthy => "unhealthy",
            EndpointHealth::Ejected => "ejected",
        }
    }
}

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32) -> Endpoint {
        Endpoint {
            addr,
            weight: AtomicU32::new(weight),
            active: AtomicU32::new(0),
            hc_down: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            eject_mult: AtomicU32::new(0),
            consec_5xx: AtomicU32::new(0),
            consec_gw: AtomicU32::new(0),
            ewma: Ewma::default(),
            since: AtomicU64::new(0),
            owner: AtomicU64::new(0),
        }
    }

    /// Its load-balancing weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// Takes a new weight; `true` when it differs from the old one (the endpoint set's
    /// precomputed schedule, ring or table must then be rebuilt).
    pub(crate) fn reweight(&self, weight: u32) -> bool {
        self.weight.swap(weight, Ordering::Relaxed) != weight
    }

    /// Passing its active health checks?
    pub fn is_healthy(&self) -> bool {
        self.hc_down.load(Ordering::Relaxed) == 0
    }

    /// Ejected by outlier detection at `now` (`clock::now_ms()`)?
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Healthy and not ejected: may take traffic outside panic mode.
    pub fn available(&self, now: u64) -> bool {
        self.is_healthy() && !self.is_ejected(now)
    }

    pub fn health(&self) -> EndpointHealth {
        if !self.is_healthy() {
            EndpointHealth::Unhealthy
        } else if self.is_ejected(now_ms()) {
            EndpointHealth::Ejected
        } else {
            EndpointHealth::Healthy
        }
    }
}

/// How one attempt on an endpoint ended, for passive health and latency-aware balancing.
#[derive(Debug, Clone, Copy)]
pub struct AttemptReport {
    /// The upstream's status, if it answered.
    pub status: Option<u16>,
    /// Connect failure, reset or timeout (a gateway failure).
    pub gateway_failure: bool,
    pub latency: std::time::Duration,
}
