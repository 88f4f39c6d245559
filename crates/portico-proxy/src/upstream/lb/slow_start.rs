//! Slow start: new and recovered endpoints take a growing share of their weight.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::upstream::endpoint::Endpoint;

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
pub(crate) fn ramp_accepts(ep: &Endpoint, now: u64, window: Option<Duration>) -> bool {
    let f = ramp(ep, now, window);
    f >= 1.0 || fastrand::f64() < f
}
