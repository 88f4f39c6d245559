//! Request deadlines (docs/reference.md §3.3): the earliest of the route's `timeout_ms` and the
//! client's `grpc-timeout` (capped by `grpc_timeout_max_ms`), and how the remaining time is
//! passed upstream (`grpc-timeout`, `x-portico-expected-timeout-ms`).

use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

/// Parses a `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let b = v.as_bytes();
    if b.len() < 2 || b.len() > 9 {
        return None;
    }
    let (digits, unit) = b.split_at(b.len() - 1);
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit[0] {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `d` as a `grpc-timeout` value in milliseconds (at least 1 ms).
pub fn grpc_timeout_value(d: Duration) -> HeaderValue {
    let ms = (d.as_millis() as u64).clamp(1, 99_999_999);
    let mut s = itoa_u64(ms);
    s.push('m');
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("1m"))
}

fn itoa_u64(n: u64) -> String {
    n.to_string()
}

/// The time budget of a request: `None` = no deadline.
pub fn budget(
    route_timeout: Option<Duration>,
    grpc_timeout: Option<Duration>,
    grpc_max: Option<Duration>,
) -> Option<Duration> {
    let client = grpc_timeout.map(|g| match grpc_max {
        Some(max) => g.min(max),
        None => g,
    });
    match (route_timeout, client) {
        (Some(r), Some(c)) => Some(r.min(c)),
        (r, c) => r.or(c),
    }
}

/// Whether the request's deadline has passed at `now`.
pub fn expired(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

/// One attempt's deadline: its per-try timeout from `now`, never past the request's deadline.
pub fn try_deadline(
    per_try: Option<Duration>,
    deadline: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    match (per_try, deadline) {
        (Some(t), Some(d)) => Some((now + t).min(d)),
        (Some(t), None) => Some(now + t),
        (None, d) => d,
    }
}

/// The route's idle timeout for the wait on a response head, or `None` when the attempt's
/// deadline comes first anyway (one timer per attempt, not two).
pub fn idle_before(
    idle: Option<Duration>,
    try_deadline: Option<Instant>,
    now: Instant,
) -> Option<Duration> {
    idle.filter(|i| try_deadline.is_none_or(|d| now + *i < d))
}

/// What is left of the request's time, in whole milliseconds, at least 1 (the value of
/// `x-portico-expected-timeout-ms`).
pub fn remaining_ms(deadline: Instant, now: Instant) -> u64 {
    (deadline.saturating_duration_since(now).as_millis() as u64).max(1)
}

/// Whether a back-off of `pause` from `now` still ends before the deadline.
pub fn fits(pause: Duration, deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_none_or(|d| now + pause < d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadline arithmetic, on a fixed `now` (no clock, no sockets).
    #[test]
    fn deadline_arithmetic() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        assert!(!expired(None, now));
        assert!(!expired(Some(now + ms(1)), now));
        assert!(expired(Some(now), now));
        // The per-try timeout is capped by the request's deadline.
        assert_eq!(
            try_deadline(Some(ms(100)), Some(now + ms(50)), now),
            Some(now + ms(50))
        );
        assert_eq!(
            try_deadline(Some(ms(100)), Some(now + ms(500)), now),
            Some(now + ms(100))
        );
        assert_eq!(try_deadline(Some(ms(100)), None, now), Some(now + ms(100)));
        assert_eq!(
            try_deadline(None, Some(now + ms(7)), now),
            Some(now + ms(7))
        );
        assert_eq!(try_deadline(None, None, now), None);
        // The idle timer only runs when it can fire before the attempt's deadline.
        assert_eq!(
            idle_before(Some(ms(10)), Some(now + ms(50)), now),
            Some(ms(10))
        );
        assert_eq!(idle_before(Some(ms(50)), Some(now + ms(50)), now), None);
        assert_eq!(idle_before(Some(ms(10)), None, now), Some(ms(10)));
        assert_eq!(idle_before(None, None, now), None);
        // The time left, passed upstream: never 0.
        assert_eq!(remaining_ms(now + ms(1500), now), 1500);
        assert_eq!(remaining_ms(now, now), 1);
        assert_eq!(remaining_ms(now, now + ms(5)), 1);
        // A back-off that would run into the deadline does not fit.
        assert!(fits(ms(10), None, now));
        assert!(fits(ms(10), Some(now + ms(11)), now));
        assert!(!fits(ms(10), Some(now + ms(10)), now));
    }

    #[test]
    fn parses_grpc_timeouts() {
        let p = |s: &'static str| parse_grpc_timeout(&HeaderValue::from_static(s));
        assert_eq!(p("2S"), Some(Duration::from_secs(2)));
        assert_eq!(p("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(p("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(p("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(p("123456789S"), None);
        assert_eq!(p("S"), None);
        assert_eq!(p("1x"), None);
        assert_eq!(grpc_timeout_value(Duration::from_millis(1999)), "1999m");
    }

    #[test]
    fn budget_is_the_earliest() {
        let s = Duration::from_secs;
        assert_eq!(budget(Some(s(15)), Some(s(2)), None), Some(s(2)));
        assert_eq!(budget(Some(s(1)), Some(s(5)), None), Some(s(1)));
        assert_eq!(budget(None, Some(s(5)), Some(s(3))), Some(s(3)));
        assert_eq!(budget(None, None, None), None);
    }
}
