//! The retry-decision phase: which outcomes a route's `retry_on` retries, fully jittered
//! exponential back-off, the retry budget, and [`RetryState`], which decides after each
//! attempt whether another follows (a connect failover, a policy retry, or none). The
//! decisions are pure; the breaker slot a retry takes is the forward loop's (`forward.rs`).

use std::time::Duration;

use http::HeaderMap;
use portico_config::snapshot::{RetryOn, RetryPolicy};

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The upstream answered with this status (and, for gRPC, maybe a grpc-status in the
    /// headers of a trailers-only response).
    Status { status: u16, grpc: Option<u8> },
    /// No connection could be made.
    ConnectFailure,
    /// The stream was reset or the connection failed after the request was sent.
    Reset,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// The per-try timeout fired (counts as a 504).
    PerTryTimeout,
}

/// Is this outcome one the policy retries?
pub fn retriable(policy: &RetryPolicy, outcome: Attempt) -> bool {
    let on = policy.retry_on;
    // As in Envoy, `5xx` and `gateway-error` also cover the failures Portico itself answers
    // with a gateway error (connect failure 503, reset 502, refused stream).
    let gateway = on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR);
    match outcome {
        Attempt::ConnectFailure => on.has(RetryOn::CONNECT_FAILURE) || gateway,
        Attempt::Reset => on.has(RetryOn::RESET) || gateway,
        Attempt::RefusedStream => {
            on.has(RetryOn::REFUSED_STREAM) || on.has(RetryOn::RESET) || gateway
        }
        Attempt::PerTryTimeout => on.has(RetryOn::FIVE_XX) || on.has(RetryOn::GATEWAY_ERROR),
        Attempt::Status { status, grpc } => {
            (on.has(RetryOn::FIVE_XX) && (500..600).contains(&status))
                || (on.has(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
                || (on.has(RetryOn::RETRIABLE_4XX) && status == 409)
                || (on.has(RetryOn::RETRIABLE_STATUS_CODES)
                    && policy.retriable_status_codes.contains(&status))
                || grpc.is_some_and(|g| grpc_retriable(on, g))
        }
    }
}

fn grpc_retriable(on: RetryOn, code: u8) -> bool {
    match code {
        1 => on.has(RetryOn::GRPC_CANCELLED),
        4 => on.has(RetryOn::GRPC_DEADLINE_EXCEEDED),
        13 => on.has(RetryOn::GRPC_INTERNAL),
        8 => on.has(RetryOn::GRPC_RESOURCE_EXHAUSTED),
        14 => on.has(RetryOn::GRPC_UNAVAILABLE),
        _ => false,
    }
}

/// The grpc-status of a trailers-only response (in its headers), if any.
pub fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Fully jittered exponential back-off before retry number `retry` (1-based): uniform in
/// `[0, min(cap, base * 2^(retry-1))]`, base 25 ms, cap 250 ms.
pub fn backoff(retry: u32) -> Duration {
    const BASE_MS: u64 = 25;
    const CAP_MS: u64 = 250;
    let ceiling = BASE_MS
        .saturating_mul(1u64 << retry.saturating_sub(1).min(16))
        .min(CAP_MS);
    Duration::from_micros(fastrand::u64(0..=ceiling * 1000))
}

/// Envoy's retry budget: retries in flight may not exceed
/// max(`min_retry_concurrency`, `budget_percent` × requests in flight).
pub fn budget_allowance(policy: &RetryPolicy, active_requests: u32) -> u32 {
    let allowed = ((policy.budget_percent / 100.0) * active_requests as f64) as u32;
    allowed.max(policy.min_retry_concurrency)
}

/// Whether one more retry fits the budget.
pub fn within_budget(policy: &RetryPolicy, active_requests: u32, active_retries: u32) -> bool {
    active_retries < budget_allowance(policy, active_requests)
}

/// At most this many endpoints are tried when connecting fails (nothing was sent, so trying
/// another endpoint is always safe).
pub const MAX_CONNECT_ATTEMPTS: u32 = 3;

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Connecting failed and the request was not sent: another endpoint, at once, without
    /// using up the retry policy.
    Failover,
    /// The policy retries (after a back-off, if the budget and breaker allow it).
    Retry,
    /// No further attempt.
    Stop,
}

/// One request's retry bookkeeping.
#[derive(Debug)]
pub struct RetryState<'p> {
    policy: Option<&'p RetryPolicy>,
    /// 1 + `num_retries`.
    max_attempts: u32,
    /// Policy retries granted so far.
    retries: u32,
    /// Connect failovers so far (they do not count against `max_attempts`).
    failovers: u32,
}

impl<'p> RetryState<'p> {
    pub fn new(policy: Option<&'p RetryPolicy>) -> RetryState<'p> {
        RetryState {
            policy,
            max_attempts: 1 + policy.map_or(0, |p| p.num_retries),
            retries: 0,
            failovers: 0,
        }
    }

    /// The route's policy.
    pub fn policy(&self) -> Option<&'p RetryPolicy> {
        self.policy
    }

    /// Whether the policy retries `outcome` at all (when it does and no retry follows, the
    /// request is flagged URX: retries exhausted or denied).
    pub fn policy_retries(&self, outcome: Attempt) -> bool {
        self.policy.is_some_and(|p| retriable(p, outcome))
    }

    /// What follows attempt number `attempts` (1-based, all attempts so far) that ended in
    /// `outcome`. `unsent`: the request came back unsent (it can go again as is);
    /// `replayable`: its body was buffered, so it can be rebuilt; `endpoints`: how many the
    /// upstream has.
    pub fn next(
        &mut self,
        outcome: Attempt,
        attempts: u32,
        unsent: bool,
        replayable: bool,
        endpoints: u32,
    ) -> Next {
        if outcome == Attempt::ConnectFailure
            && unsent
            && self.failovers + 1 < MAX_CONNECT_ATTEMPTS.min(endpoints)
        {
            self.failovers += 1;
            return Next::Failover;
        }
        if self.policy_retries(outcome)
            && attempts - self.failovers < self.max_attempts
            && (unsent || replayable)
        {
            return Next::Retry;
        }
        Next::Stop
    }

    /// The back-off before the next policy retry.
    pub fn pause(&self) -> Duration {
        backoff(self.retries + 1)
    }

    /// A policy retry was granted (budget and breaker allowed it).
    pub fn granted(&mut self) {
        self.retries += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &str) -> RetryPolicy {
        let mut bits = 0;
        for p in on.split(',') {
            bits |= RetryOn::flag(p).expect("flag");
        }
        RetryPolicy {
            retry_on: RetryOn { bits },
            num_retries: 2,
            per_try_timeout: None,
            retriable_status_codes: vec![418],
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        }
    }

    fn status(status: u16) -> Attempt {
        Attempt::Status { status, grpc: None }
    }

    /// A gRPC trailers-only answer: HTTP 200 with `grpc-status` in the headers.
    fn grpc(code: u8) -> Attempt {
        Attempt::Status {
            status: 200,
            grpc: Some(code),
        }
    }

    /// Every `retry_on` value of reference §3.3 on its own: the outcomes it retries, and
    /// outcomes it must leave alone.
    #[test]
    fn every_retry_on_value_retries_its_outcomes_and_nothing_else() {
        use Attempt::*;
        let ok = [status(200), status(404), grpc(0)];
        #[rustfmt::skip]
        let table: &[(&str, &[Attempt], &[Attempt])] = &[
            ("5xx",
                &[status(500), status(501), status(502), status(503), status(504), status(599),
                  PerTryTimeout, ConnectFailure, Reset, RefusedStream],
                &[status(409), status(418), status(499), grpc(14)]),
            ("gateway-error",
                &[status(502), status(503), status(504), PerTryTimeout, ConnectFailure, Reset,
                  RefusedStream],
                &[status(500), status(501), status(505), status(409), grpc(14)]),
            ("connect-failure",
                &[ConnectFailure],
                &[Reset, RefusedStream, PerTryTimeout, status(503), status(502)]),
            ("reset",
                &[Reset, RefusedStream],
                &[ConnectFailure, PerTryTimeout, status(502), status(503)]),
            ("retriable-4xx",
                &[status(409)],
                &[status(400), status(408), status(429), status(503), Reset]),
            ("refused-stream",
                &[RefusedStream],
                &[Reset, ConnectFailure, status(503)]),
            ("retriable-status-codes",
                &[status(418)],
                &[status(417), status(503), status(409), Reset]),
            ("cancelled",
                &[grpc(1)],
                &[grpc(4), grpc(13), grpc(14), status(503)]),
            ("deadline-exceeded",
                &[grpc(4)],
                &[grpc(1), grpc(14), status(504), PerTryTimeout]),
            ("internal",
                &[grpc(13)],
                &[grpc(2), grpc(14), status(500)]),
            ("resource-exhausted",
                &[grpc(8)],
                &[grpc(14), status(429), status(503)]),
            ("unavailable",
                &[grpc(14)],
                &[grpc(13), grpc(8), status(503), ConnectFailure]),
        ];
        assert_eq!(table.len(), 12, "every value of reference §3.3");
        for (on, yes, no) in table {
            let p = policy(on);
            for a in *yes {
                assert!(retriable(&p, *a), "{on} must retry {a:?}");
            }
            for a in no.iter().chain(&ok) {
                assert!(!retriable(&p, *a), "{on} must not retry {a:?}");
            }
        }
    }

    #[test]
    fn grpc_codes_count_only_on_their_own_flag_and_in_combination() {
        // A gRPC error in an HTTP 5xx answer: retried by 5xx even without the gRPC flag.
        let p = policy("5xx");
        assert!(retriable(
            &p,
            Attempt::Status {
                status: 503,
                grpc: Some(14)
            }
        ));
        let g = policy("gateway-error,retriable-4xx,retriable-status-codes,unavailable");
        assert!(!retriable(&g, status(500)));
        assert!(retriable(&g, status(502)));
        assert!(retriable(&g, status(409)));
        assert!(retriable(&g, status(418)));
        assert!(retriable(&g, grpc(14)));
        assert!(!retriable(&g, grpc(13)));
    }

    #[test]
    fn grpc_status_is_read_from_trailers_only_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", "14".parse().expect("value"));
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", " 4 ".parse().expect("value"));
        assert_eq!(grpc_status(&h), Some(4));
        h.insert("grpc-status", "x".parse().expect("value"));
        assert_eq!(grpc_status(&h), None);
    }

    /// Fully jittered exponential back-off: retry `r` waits uniformly in
    /// `[0, min(250 ms, 25 ms × 2^(r-1))]`. Per attempt, 4000 draws: none above the ceiling,
    /// the draws reach near both ends, their mean is near the middle, and they are spread
    /// (many distinct values), so the range is used, not a fixed or merely capped value.
    #[test]
    fn backoff_is_fully_jittered_exponential() {
        const DRAWS: usize = 4000;
        let mut prev_max = 0.0;
        for r in 1..=8u32 {
            let ceiling = (25.0 * f64::from(1u32 << (r - 1))).min(250.0);
            let ms: Vec<f64> = (0..DRAWS)
                .map(|_| backoff(r).as_secs_f64() * 1000.0)
                .collect();
            let max = ms.iter().copied().fold(0.0, f64::max);
            let min = ms.iter().copied().fold(f64::MAX, f64::min);
            let mean = ms.iter().sum::<f64>() / DRAWS as f64;
            let mut distinct = ms.iter().map(|m| (m * 10.0) as u64).collect::<Vec<_>>();
            distinct.sort_unstable();
            distinct.dedup();
            eprintln!(
                "retry {r}: ceiling {ceiling} ms, min {min:.2} mean {mean:.2} max {max:.2}, {} distinct",
                distinct.len()
            );
            assert!(max <= ceiling, "retry {r}: {max} > {ceiling}");
            assert!(max >= 0.95 * ceiling, "retry {r}: max {max} of {ceiling}");
            assert!(min <= 0.05 * ceiling, "retry {r}: min {min} of {ceiling}");
            assert!(
                (mean - ceiling / 2.0).abs() <= 0.05 * ceiling,
                "retry {r}: mean {mean}, not uniform over [0, {ceiling}]"
            );
            assert!(distinct.len() > 200, "retry {r}: {} values", distinct.len());
            // The range grows per retry (doubling) until the cap.
            assert!(max > prev_max, "retry {r}: range did not grow");
            prev_max = if ceiling < 250.0 { max } else { 0.0 };
        }
        assert!(backoff(1000) <= Duration::from_millis(250));
        assert!(backoff(0) <= Duration::from_millis(25));
    }

    /// The decision after each attempt, with no socket: failovers on connect failures that
    /// left the request unsent (bounded by endpoints and MAX_CONNECT_ATTEMPTS, not counted
    /// against the policy), policy retries up to `num_retries`, and only for a request that
    /// can be sent again.
    #[test]
    fn retry_state_decides_from_outcomes() {
        // No policy: only connect failovers.
        let mut s = RetryState::new(None);
        assert_eq!(
            s.next(Attempt::ConnectFailure, 1, true, false, 5),
            Next::Failover
        );
        assert_eq!(
            s.next(Attempt::ConnectFailure, 2, true, false, 5),
            Next::Failover
        );
        assert_eq!(
            s.next(Attempt::ConnectFailure, 3, true, false, 5),
            Next::Stop
        );
        assert!(!s.policy_retries(Attempt::ConnectFailure));
        // A single endpoint: no failover; a connect failure whose request did not come back
        // cannot fail over either.
        assert_eq!(
            RetryState::new(None).next(Attempt::ConnectFailure, 1, true, false, 1),
            Next::Stop
        );
        assert_eq!(
            RetryState::new(None).next(Attempt::ConnectFailure, 1, false, false, 5),
            Next::Stop
        );
        assert_eq!(
            RetryState::new(None).next(Attempt::Reset, 1, true, true, 5),
            Next::Stop
        );

        // 5xx policy, num_retries 2: three attempts in all, failovers not counted.
        let p = policy("5xx");
        let mut s = RetryState::new(Some(&p));
        assert_eq!(
            s.next(Attempt::ConnectFailure, 1, true, true, 3),
            Next::Failover
        );
        assert_eq!(s.next(status(503), 2, false, true, 3), Next::Retry);
        s.granted();
        assert_eq!(s.next(status(503), 3, false, true, 3), Next::Retry);
        s.granted();
        assert_eq!(s.next(status(503), 4, false, true, 3), Next::Stop);
        assert!(s.policy_retries(status(503)));
        // Not retriable, or not resendable (streamed body already sent): stop.
        let mut s = RetryState::new(Some(&p));
        assert_eq!(s.next(status(404), 1, false, true, 3), Next::Stop);
        assert_eq!(s.next(Attempt::Reset, 1, false, false, 3), Next::Stop);
        assert_eq!(s.next(Attempt::Reset, 1, true, false, 3), Next::Retry);
        assert_eq!(
            s.next(Attempt::PerTryTimeout, 1, false, true, 3),
            Next::Retry
        );
        // The back-off grows with the retries granted.
        assert!(s.pause() <= Duration::from_millis(25));
        s.granted();
        s.granted();
        assert!(s.pause() <= Duration::from_millis(100));
    }

    #[test]
    fn budget() {
        let p = policy("5xx");
        assert!(within_budget(&p, 0, 2));
        assert!(!within_budget(&p, 10, 3));
        assert!(within_budget(&p, 100, 19));
        assert!(!within_budget(&p, 100, 20));
    }
}
