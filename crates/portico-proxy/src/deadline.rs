//! Request deadlines (CONTRACT §3.3): the earliest of the route's `timeout_ms` and the
//! client's `grpc-timeout` (capped by `grpc_timeout_max_ms`), and how the remaining time is
//! passed upstream (`grpc-timeout`, `x-portico-expected-timeout-ms`).

use std::time::Duration;

use http::HeaderValue;

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

#[cfg(test)]
mod tests {
    use super::*;

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
