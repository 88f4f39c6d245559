//! Metrics (docs/reference.md §8): per-route and per-upstream counters and latency histograms,
//! resolved once per reload so the request path only does relaxed atomic adds, and rendered
//! in the Prometheus text format at scrape time (`prometheus.rs`).
//!
//! Hand-written rather than prometheus-client: that crate's histogram takes a lock per
//! observation and its label families a lock per lookup; here every hot-path update is one
//! atomic add on a handle the request already holds. Counters live in a registry keyed by
//! route/upstream name, so they survive reloads for routes and upstreams that stay.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds of the request-duration buckets, in seconds.
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets; lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Non-cumulative buckets (summed at render); the last bucket is +Inf via `count`.
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The observations in each bucket of [`BUCKETS`] (not cumulative), for callers that
    /// compute quantiles over an interval from two readings.
    pub fn bucket_counts(&self) -> [u64; BUCKETS.len()] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }

    /// An approximate quantile (upper bound of the bucket holding it), in seconds.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Some(BUCKETS[i]);
            }
        }
        Some(f64::INFINITY)
    }

    pub(crate) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                BUCKETS[i]
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// Counts by status class: index 0 = 1xx … 4 = 5xx.
#[derive(Debug, Default)]
pub struct ByClass([AtomicU64; 5]);

impl ByClass {
    pub fn add(&self, status: u16) {
        let i = (status / 100).clamp(1, 5) as usize - 1;
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self, class: usize) -> u64 {
        self.0[class].load(Ordering::Relaxed)
    }
    pub fn total(&self) -> u64 {
        (0..5).map(|i| self.get(i)).sum()
    }
}

/// One route's metrics.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub requests: ByClass,
    pub duration: Histogram,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub active: AtomicI64,
    /// Mirrored copies: sent, dropped (too many outstanding, or body too large), failed.
    pub shadow_sent: AtomicU64,
    pub shadow_dropped: AtomicU64,
    pub shadow_failed: AtomicU64,
    pub shadow_outstanding: AtomicI64,
}

/// One upstream's metrics.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    pub requests: ByClass,
    pub connect_failures: AtomicU64,
    pub overflows: AtomicU64,
    pub ejections: AtomicU64,
    pub retry_budget_exhausted: AtomicU64,
}

/// Every metric family, for the admin API.
#[derive(Debug, Default)]
pub struct Registry {
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamMetrics>>>,
    listeners: Mutex<HashMap<String, Arc<AtomicI64>>>,
    /// Requests that matched no route.
    pub no_route: Arc<RouteMetrics>,
    /// Requests rejected before routing (invalid HTTP).
    pub rejected: ByClass,
    pub downstream_connections_total: AtomicU64,
    /// QUIC Retry packets sent under a handshake flood (HTTP/3 listeners).
    pub http3_retries_total: AtomicU64,
}

impl Registry {
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        match self.routes.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    pub fn upstream(&self, name: &str) -> Arc<UpstreamMetrics> {
        match self.upstreams.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The open-connections gauge of a listener.
    pub fn listener(&self, name: &str) -> Arc<AtomicI64> {
        match self.listeners.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    pub fn listener_gauges(&self) -> Vec<(String, i64)> {
        let mut v: Vec<(String, i64)> = self
            .listeners
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, g)| (k.clone(), g.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The status classes the counters are kept by.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut s = String::new();
        h.render(&mut s, "x", "route=\"a\"");
        assert!(s.contains("x_bucket{route=\"a\",le=\"0.0005\"} 1"));
        assert!(s.contains("x_bucket{route=\"a\",le=\"0.05\"} 2"));
        assert!(s.contains("x_bucket{route=\"a\",le=\"+Inf\"} 3"));
        assert!(s.contains("x_count{route=\"a\"} 3"));
        assert_eq!(h.quantile(0.5), Some(0.05));
    }

    #[test]
    fn classes() {
        let c = ByClass::default();
        c.add(204);
        c.add(503);
        c.add(99);
        assert_eq!(c.get(1), 1);
        assert_eq!(c.get(4), 1);
        assert_eq!(c.get(0), 1);
        assert_eq!(c.total(), 3);
    }
}
