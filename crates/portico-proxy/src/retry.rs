//! Retry decisions (CONTRACT §3.3): which outcomes `retry_on` retries, fully jittered
//! exponential back-off, and the retry budget.

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
    match outcome {
        Attempt::ConnectFailure => on.has(RetryOn::CONNECT_FAILURE),
        Attempt::Reset => on.has(RetryOn::RESET),
        Attempt::RefusedStream => on.has(RetryOn::REFUSED_STREAM) || on.has(RetryOn::RESET),
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

    #[test]
    fn classifies_outcomes() {
        let p = policy("5xx,connect-failure");
        assert!(retriable(
            &p,
            Attempt::Status {
                status: 503,
                grpc: None
            }
        ));
        assert!(!retriable(
            &p,
            Attempt::Status {
                status: 404,
                grpc: None
            }
        ));
        assert!(retriable(&p, Attempt::ConnectFailure));
        assert!(!retriable(&p, Attempt::Reset));
        assert!(retriable(&p, Attempt::PerTryTimeout));
        let g = policy("gateway-error,retriable-4xx,retriable-status-codes,unavailable");
        assert!(!retriable(
            &g,
            Attempt::Status {
                status: 500,
                grpc: None
            }
        ));
        assert!(retriable(
            &g,
            Attempt::Status {
                status: 502,
                grpc: None
            }
        ));
        assert!(retriable(
            &g,
            Attempt::Status {
                status: 409,
                grpc: None
            }
        ));
        assert!(retriable(
            &g,
            Attempt::Status {
                status: 418,
                grpc: None
            }
        ));
        assert!(retriable(
            &g,
            Attempt::Status {
                status: 200,
                grpc: Some(14)
            }
        ));
        assert!(!retriable(
            &g,
            Attempt::Status {
                status: 200,
                grpc: Some(13)
            }
        ));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for r in 1..10 {
            let b = backoff(r);
            assert!(b <= Duration::from_millis(250));
        }
        assert!(backoff(1) <= Duration::from_millis(25));
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
