//! A flood of distinct keys cannot grow a local rate limiter without bound: 1,000,000 distinct
//! keys through one limiter keep its bucket count at its cap and the process RSS growth under
//! 64 MiB (measured: about 10 MiB; see docs/operations.md). Its own test binary, so no other
//! test's allocations blur the figure.

use std::hash::Hasher;
use std::time::Instant;

use portico_config::snapshot::RateLimitUnit;
use portico_proxy::ratelimit::{Decision, LocalLimiter};

fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn a_million_distinct_keys_stay_within_the_memory_bound() {
    let Some(before) = rss_kib() else {
        eprintln!("SKIPPED: no /proc/self/status");
        return;
    };
    let limiter = LocalLimiter::new(1, RateLimitUnit::Hour, 5);
    let t = Instant::now();
    let mut denied = 0u32;
    for i in 0..1_000_000u64 {
        let mut h = limiter.key_hasher();
        h.write_u64(i);
        if matches!(limiter.check(h.finish()), Decision::Deny(_)) {
            denied += 1;
        }
    }
    let elapsed = t.elapsed();
    let after = rss_kib().unwrap_or(before);
    let grown_mib = after.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "1,000,000 keys: {} buckets kept (cap {}), RSS +{grown_mib:.1} MiB, {:.0} ns/check",
        limiter.len(),
        limiter.max_keys(),
        elapsed.as_nanos() as f64 / 1e6
    );
    assert_eq!(denied, 0, "every key is new: none can be over its limit");
    assert!(limiter.len() <= limiter.max_keys());
    assert!(grown_mib < 64.0, "RSS grew {grown_mib:.1} MiB");
}
