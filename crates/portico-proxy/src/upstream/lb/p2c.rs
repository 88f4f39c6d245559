//! Power of two choices: sample two acceptable endpoints at random, take the cheaper.
//!
//! Costs: `least_request` is requests in flight over weight; `ewma` is a peak-EWMA of
//! response latency (fed by `UpstreamState::report`, decaying with a 10 s time constant)
//! times requests in flight plus one. Slow start divides the weight by the ramp factor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::upstream::Endpoint;
use crate::upstream::lb::ramp;

/// Cost of an endpoint without a latency sample that already has requests in flight.
const PENALTY: f64 = 1e12;

fn weight(e: &Endpoint, now_ms: u64, slow: Option<Duration>) -> f64 {
    f64::from(e.weight().max(1)) * ramp(e, now_ms, slow)
}

pub fn least_request_cost(e: &Endpoint, now_ms: u64, slow: Option<Duration>) -> f64 {
    (f64::from(e.active.load(Ordering::Relaxed)) + 1.0) / weight(e, now_ms, slow)
}

pub fn ewma_cost(e: &Endpoint, now_us: u64, now_ms: u64, slow: Option<Duration>) -> f64 {
    let active = f64::from(e.active.load(Ordering::Relaxed));
    let lat = e.ewma.get(now_us);
    if lat == 0.0 {
        // Never measured: try it, but not with a pile of requests at once.
        return if active > 0.0 { PENALTY + active } else { 0.0 };
    }
    lat * (active + 1.0) / weight(e, now_ms, slow)
}

/// Samples an acceptable endpoint index (a few random draws, then a scan).
fn sample(
    eps: &[Arc<Endpoint>],
    ok: &dyn Fn(&Endpoint) -> bool,
    not: Option<usize>,
) -> Option<usize> {
    let n = eps.len();
    for _ in 0..4 {
        let i = fastrand::usize(..n);
        if Some(i) != not && ok(&eps[i]) {
            return Some(i);
        }
    }
    let start = fastrand::usize(..n);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| Some(i) != not && ok(&eps[i]))
}

/// Power of two choices over `cost` (lower wins).
pub fn pick(
    eps: &[Arc<Endpoint>],
    ok: &dyn Fn(&Endpoint) -> bool,
    cost: impl Fn(&Endpoint) -> f64,
) -> Option<usize> {
    let a = sample(eps, ok, None)?;
    let Some(b) = sample(eps, ok, Some(a)) else {
        return Some(a);
    };
    if cost(&eps[b]) < cost(&eps[a]) {
        Some(b)
    } else {
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::ewma::Ewma;
    use std::net::SocketAddr;

    fn eps(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().expect("addr");
                Arc::new(Endpoint::new(addr, 1))
            })
            .collect()
    }

    #[test]
    fn p2c_prefers_fewer_active() {
        let e = eps(2);
        e[0].active.store(10, Ordering::Relaxed);
        for _ in 0..100 {
            let i = pick(&e, &|_| true, |x| least_request_cost(x, 1, None));
            assert_eq!(i, Some(1));
        }
        // With three, the busiest is never chosen (it loses every comparison).
        let e = eps(3);
        e[2].active.store(5, Ordering::Relaxed);
        for _ in 0..200 {
            let i = pick(&e, &|_| true, |x| least_request_cost(x, 1, None));
            assert_ne!(i, Some(2));
        }
    }

    #[test]
    fn p2c_honours_filter() {
        let e = eps(3);
        for _ in 0..100 {
            let i = pick(&e, &|x| x.addr.port() == 1001, |_| 0.0);
            assert_eq!(i, Some(1));
        }
        assert_eq!(pick(&e, &|_| false, |_| 0.0), None);
    }

    #[test]
    fn ewma_peaks_and_decays() {
        let w = Ewma::default();
        assert_eq!(w.get(1), 0.0);
        w.observe(Duration::from_millis(2), 1_000_000);
        assert!((w.get(1_000_000) - 2000.0).abs() < 1e-6);
        // A peak replaces the average at once.
        w.observe(Duration::from_millis(20), 1_000_100);
        assert!((w.get(1_000_100) - 20_000.0).abs() < 1e-6);
        // A low sample right after barely moves it; one 10 s later moves it most of the way.
        w.observe(Duration::from_millis(2), 1_000_200);
        assert!(w.get(1_000_200) > 19_000.0);
        w.observe(Duration::from_millis(2), 21_000_200);
        let v = w.get(21_000_200);
        assert!(v > 2000.0 && v < 5000.0, "{v}");
        // Unsampled, it decays toward zero.
        assert!(w.get(121_000_200) < 1.0);
    }

    #[test]
    fn ewma_cost_prefers_fast() {
        let e = eps(2);
        e[0].ewma.observe(Duration::from_millis(2), 10);
        e[1].ewma.observe(Duration::from_millis(20), 10);
        let mut fast = 0;
        for _ in 0..100 {
            if pick(&e, &|_| true, |x| ewma_cost(x, 10, 1, None)) == Some(0) {
                fast += 1;
            }
        }
        assert_eq!(fast, 100);
        // Nine in flight on the fast one: 2 × 10 = 20 ties with 20 × 1; ten tips it.
        e[0].active.store(10, Ordering::Relaxed);
        assert_eq!(pick(&e, &|_| true, |x| ewma_cost(x, 10, 1, None)), Some(1));
    }
}
