//! Recent history for the dashboard: every [`SAMPLE_EVERY`] the per-route counters and latency
//! histograms (and the requests that matched no route) are read, and the request rate and p99
//! latency of the interval since the previous reading are kept for [`WINDOW`]. Upstream
//! connect failures are sampled the same way, so the dashboard can say how many happened
//! recently. Sampling reads the same atomics `/metrics` does; the request path is untouched.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portico_proxy::telemetry::metrics::{BUCKETS, RouteMetrics};
use serde_json::{Value, json};

use portico_proxy::Proxy;

/// How often counters are read.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the series go.
pub const WINDOW: Duration = Duration::from_secs(300);

/// One interval of one route: its end (Unix ms), requests per second, p99 in ms (`None`
/// without requests; the largest bucket bound when above it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t_ms: u64,
    pub rate: f64,
    pub p99_ms: Option<f64>,
}

/// A counter reading.
#[derive(Debug, Clone, Copy)]
struct Reading {
    total: u64,
    buckets: [u64; BUCKETS.len()],
}

impl Reading {
    fn of(m: &RouteMetrics) -> Reading {
        Reading {
            total: m.requests.total(),
            buckets: m.duration.bucket_counts(),
        }
    }
}

#[derive(Debug, Default)]
struct Track {
    last: Option<Reading>,
    points: VecDeque<Point>,
}

impl Track {
    fn push(&mut self, now: u64, prev_at: Option<u64>, r: Reading) {
        if let (Some(last), Some(at)) = (self.last, prev_at)
            && now > at
        {
            let secs = (now - at) as f64 / 1000.0;
            let n = r.total.saturating_sub(last.total);
            let delta: Vec<u64> = r
                .buckets
                .iter()
                .zip(last.buckets.iter())
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            self.points.push_back(Point {
                t_ms: now,
                rate: n as f64 / secs,
                p99_ms: p99_ms(&delta),
            });
        }
        self.last = Some(r);
        let oldest = now.saturating_sub(WINDOW.as_millis() as u64);
        while self.points.front().is_some_and(|p| p.t_ms < oldest) {
            self.points.pop_front();
        }
    }

    fn json(&self) -> Value {
        Value::Array(
            self.points
                .iter()
                .map(|p| json!([p.t_ms, (p.rate * 1000.0).round() / 1000.0, p.p99_ms]))
                .collect(),
        )
    }
}

/// The p99 of an interval's bucket counts, in ms (the upper bound of the bucket holding it;
/// observations above the largest bucket count as the largest bound).
fn p99_ms(counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (0.99 * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= want {
            return Some(BUCKETS[i] * 1000.0);
        }
    }
    BUCKETS.last().map(|b| b * 1000.0)
}

#[derive(Debug, Default)]
struct State {
    at: Option<u64>,
    routes: HashMap<String, Track>,
    unmatched: Track,
    /// Per upstream: (Unix ms, connect failures so far), oldest first.
    connect_failures: HashMap<String, VecDeque<(u64, u64)>>,
}

/// The sampled series (admin side only).
#[derive(Debug, Default)]
pub struct Series {
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Series {
    /// Reads every counter once.
    pub fn sample(&self, proxy: &Proxy) {
        self.sample_at(proxy, now_ms());
    }

    fn sample_at(&self, proxy: &Proxy, now: u64) {
        let active = proxy.active();
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let prev_at = st.at;
        // Sets, not lists: with 10,000 routes a list's `contains` made each sample ~10^8
        // string comparisons (14% of a core at idle, measured with the duel bench).
        let mut names: HashSet<&str> = HashSet::with_capacity(active.config.routes.len());
        for (r, m) in active.config.routes.iter().zip(active.route_metrics.iter()) {
            if !names.insert(r.name.as_str()) {
                continue; // routes sharing a name share their metrics
            }
            let reading = Reading::of(m);
            match st.routes.get_mut(r.name.as_str()) {
                Some(t) => t.push(now, prev_at, reading),
                None => st
                    .routes
                    .entry(r.name.clone())
                    .or_default()
                    .push(now, prev_at, reading),
            }
        }
        st.routes.retain(|k, _| names.contains(k.as_str()));
        let nr = Reading::of(&proxy.metrics.no_route);
        st.unmatched.push(now, prev_at, nr);
        let oldest = now.saturating_sub(WINDOW.as_millis() as u64);
        let mut ups: HashSet<&str> = HashSet::with_capacity(active.config.upstreams.len());
        for u in &active.config.upstreams {
            let count = proxy
                .metrics
                .upstream(&u.name)
                .connect_failures
                .load(std::sync::atomic::Ordering::Relaxed);
            let q = match st.connect_failures.get_mut(u.name.as_str()) {
                Some(q) => q,
                None => st.connect_failures.entry(u.name.clone()).or_default(),
            };
            q.push_back((now, count));
            // Keep one reading at or before the window's start as the baseline.
            while q.len() > 1 && q.get(1).is_some_and(|(t, _)| *t <= oldest) {
                q.pop_front();
            }
            ups.insert(u.name.as_str());
        }
        st.connect_failures.retain(|k, _| ups.contains(k.as_str()));
        st.at = Some(now);
    }

    /// Connect failures of `upstream` in the last [`WINDOW`], given its counter now.
    pub fn recent_connect_failures(&self, upstream: &str, now: u64) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|st| {
                st.connect_failures
                    .get(upstream)
                    .and_then(|q| q.front().copied())
            })
            .map_or(now, |(_, base)| now.saturating_sub(base))
    }

    /// `{interval_ms, window_ms, routes: {NAME: [[t_ms, rate, p99_ms], ...]}, unmatched: [...]}`.
    pub fn json(&self) -> Value {
        let Ok(st) = self.state.lock() else {
            return Value::Null;
        };
        let routes: serde_json::Map<String, Value> = st
            .routes
            .iter()
            .map(|(k, t)| (k.clone(), t.json()))
            .collect();
        json!({
            "interval_ms": SAMPLE_EVERY.as_millis() as u64,
            "window_ms": WINDOW.as_millis() as u64,
            "routes": routes,
            "unmatched": st.unmatched.json(),
        })
    }
}

/// Samples `proxy` into `series` every [`SAMPLE_EVERY`] for as long as the process runs.
pub fn spawn(series: Arc<Series>, proxy: Arc<Proxy>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            series.sample(&proxy);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_of_an_interval() {
        let mut c = [0u64; BUCKETS.len()];
        assert_eq!(p99_ms(&c), None);
        c[0] = 98;
        c[5] = 2; // 2 of 100 in the 25 ms bucket: p99 lands there
        assert_eq!(p99_ms(&c), Some(25.0));
        c[0] = 990;
        assert_eq!(p99_ms(&c), Some(0.5));
    }

    #[test]
    fn rates_come_from_the_difference_of_two_readings() {
        let mut t = Track::default();
        let r = |total| Reading {
            total,
            buckets: [0; BUCKETS.len()],
        };
        t.push(1_000, None, r(5));
        assert!(t.points.is_empty());
        t.push(3_000, Some(1_000), r(25));
        assert_eq!(t.points.len(), 1);
        assert_eq!(t.points[0].rate, 10.0);
        // Points older than the window go.
        t.push(
            1_000 + WINDOW.as_millis() as u64 + 3_000,
            Some(3_000),
            r(25),
        );
        assert_eq!(t.points.len(), 1);
        assert_eq!(t.points[0].rate, 0.0);
    }
}
