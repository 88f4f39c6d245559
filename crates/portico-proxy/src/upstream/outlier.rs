//! Passive health: outlier detection (docs/reference.md §3.2), fed by every attempt's report.
//!
//! Per endpoint (atomics on `Endpoint`): consecutive 5xx (status ≥ 500, gateway failures
//! included) and consecutive gateway failures (502/503/504, connect failure, reset,
//! timeout). Reaching a threshold ejects the endpoint for `base_ejection_time × n` (n = its
//! ejection multiplier, capped at `max_ejection_time`), unless `max_ejection_percent` of the
//! endpoints are already ejected (one endpoint may always be ejected while another is left).
//! Ejection ends lazily: a pick compares `ejected_until` with the clock. The multiplier
//! decays by one per `interval` the endpoint spends un-ejected.

use std::sync::atomic::Ordering;

use portico_config::snapshot::OutlierConf;

use std::sync::atomic::AtomicU64;

use crate::upstream::clock::now_ms;
use crate::upstream::endpoint::{AttemptReport, Endpoint};
use crate::upstream::lb::EndpointSet;

/// What outlier detection needs of the upstream `ep` belongs to.
pub(crate) struct Upstream<'a> {
    pub name: &'a str,
    pub conf: &'a OutlierConf,
    /// The current endpoint set (`max_ejection_percent` is a share of it).
    pub set: &'a EndpointSet,
    /// The upstream's count of ejections (for metrics).
    pub ejections_total: &'a AtomicU64,
}

/// Records one attempt's outcome; may eject `ep`.
pub(crate) fn observe(up: &Upstream<'_>, ep: &Endpoint, r: &AttemptReport) {
    let conf = up.conf;
    let is_gateway = r.gateway_failure || matches!(r.status, Some(502..=504));
    let is_5xx = is_gateway || r.status.is_some_and(|s| s >= 500);
    let c5 = if is_5xx {
        ep.consec_5xx.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        if ep.consec_5xx.load(Ordering::Relaxed) != 0 {
            ep.consec_5xx.store(0, Ordering::Relaxed);
        }
        0
    };
    let cg = if is_gateway {
        ep.consec_gw.fetch_add(1, Ordering::AcqRel) + 1
    } else {
        if ep.consec_gw.load(Ordering::Relaxed) != 0 {
            ep.consec_gw.store(0, Ordering::Relaxed);
        }
        0
    };
    let trip = (conf.consecutive_5xx > 0 && c5 >= conf.consecutive_5xx)
        || (conf.consecutive_gateway_failure > 0 && cg >= conf.consecutive_gateway_failure);
    if trip {
        try_eject(up, ep, now_ms());
    }
}

fn try_eject(up: &Upstream<'_>, ep: &Endpoint, now: u64) {
    let conf = up.conf;
    let until = ep.ejected_until.load(Ordering::Acquire);
    if until > now {
        return; // already ejected (a report of a request sent before the ejection)
    }
    let set = up.set;
    let n = set.endpoints.len();
    if n < 2 {
        return;
    }
    let ejected = set
        .endpoints
        .iter()
        .filter(|e| e.ejected_until.load(Ordering::Relaxed) > now)
        .count();
    let allowed = (n * conf.max_ejection_percent as usize / 100).max(1);
    if ejected >= allowed || ejected + 1 >= n {
        return;
    }
    // Multiplier: +1 per ejection, -1 per interval spent back in rotation since the last one.
    let interval = conf.interval.as_millis().max(1) as u64;
    let rested = if until == 0 {
        0
    } else {
        now.saturating_sub(until) / interval
    };
    let mult = ep.eject_mult.load(Ordering::Relaxed);
    let mult = (mult.saturating_sub(rested.min(u64::from(u32::MAX)) as u32) + 1).min(10_000);
    let base = conf.base_ejection_time.as_millis() as u64;
    let time = base
        .saturating_mul(u64::from(mult))
        .min(conf.max_ejection_time.as_millis() as u64)
        .max(1);
    // One winner among racing reporters.
    if ep
        .ejected_until
        .compare_exchange(until, now + time, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    ep.eject_mult.store(mult, Ordering::Relaxed);
    ep.consec_5xx.store(0, Ordering::Relaxed);
    ep.consec_gw.store(0, Ordering::Relaxed);
    ep.ejections.fetch_add(1, Ordering::Relaxed);
    up.ejections_total.fetch_add(1, Ordering::Relaxed);
    tracing::info!(upstream = %up.name, endpoint = %ep.addr, ejection_ms = time, "endpoint ejected (outlier detection)");
}
