//! The attempt phase: one try of a request on a pooled or new connection to one endpoint,
//! under the attempt's deadline, and [`AttemptError`], the one error type an attempt ends
//! with: it carries the response flag of the local reply and whether a retry may follow.
//!
//! HTTP/1.1 upstreams go through Portico's own client (`upstream::h1`), driven by this
//! request's task; HTTP/2 upstreams still through hyper's client (`pool`). Either way the
//! request sent is an `http::Request<ReqBody>` and the answer a `Response<UpBody>`; a send
//! that failed before any answer on a reused connection hands the request back.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;

use super::retry::Attempt;
use crate::body::{BodyCut, ByteCounter, ReqBody, UpBody};
use crate::local_reply::{Flag, LocalReply};
use crate::upstream::h1::{self, Release};
use crate::upstream::pool::{self, Conn, ConnectParams, PoolKey};
use crate::upstream::{Endpoint, UpstreamState, Which};

/// Why an upstream attempt gave no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptError {
    /// No connection could be made (nothing was sent).
    ConnectFailure,
    /// The stream was reset or the connection failed after the request was sent.
    Reset,
    /// HTTP/2 REFUSED_STREAM: the upstream did not process the request.
    RefusedStream,
    /// The per-try timeout fired (the request's deadline had not passed).
    PerTryTimeout,
    /// The request's deadline passed.
    Deadline,
    /// A circuit breaker refused a new connection.
    Overflow,
    /// Neither side moved for the route's idle timeout before the response started.
    StreamIdle,
    /// The client's body failed (too large, idle, malformed, or the client went away): the
    /// client's fault, never counted against the upstream.
    ClientBody(BodyCut),
}

impl AttemptError {
    /// What the retry policy sees, or `None` when no further attempt may follow.
    pub fn retry_outcome(self) -> Option<Attempt> {
        match self {
            AttemptError::ConnectFailure => Some(Attempt::ConnectFailure),
            AttemptError::Reset => Some(Attempt::Reset),
            AttemptError::RefusedStream => Some(Attempt::RefusedStream),
            AttemptError::PerTryTimeout => Some(Attempt::PerTryTimeout),
            AttemptError::Deadline
            | AttemptError::Overflow
            | AttemptError::StreamIdle
            | AttemptError::ClientBody(_) => None,
        }
    }

    /// The local reply when this error ends the request.
    pub fn reply(self) -> LocalReply {
        match self {
            AttemptError::ConnectFailure => LocalReply::of(Flag::UF),
            AttemptError::Reset | AttemptError::RefusedStream => LocalReply::of(Flag::UC),
            AttemptError::PerTryTimeout | AttemptError::Deadline => LocalReply::of(Flag::UT),
            AttemptError::Overflow => LocalReply::overloaded(),
            AttemptError::StreamIdle => LocalReply::stream_idle(),
            AttemptError::ClientBody(cut) => LocalReply::body_cut(cut),
        }
    }
}

/// Keeps an endpoint's active-request count for as long as it lives.
pub struct ActiveGuard(Arc<Endpoint>);

impl ActiveGuard {
    fn new(ep: &Arc<Endpoint>) -> Self {
        ep.active.fetch_add(1, Relaxed);
        ActiveGuard(ep.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// An attempt that got a response head.
pub(crate) struct Answer {
    /// An HTTP/1 body gives its connection back to the pool once it ended cleanly.
    pub resp: Response<UpBody>,
    pub active: ActiveGuard,
}

/// An attempt that did not; the request comes back when it was not sent.
pub(crate) struct Failed {
    pub error: AttemptError,
    pub back: Option<Request<ReqBody>>,
}

impl Failed {
    /// The route's idle timeout fired before the response head.
    pub fn idle() -> Failed {
        Failed::new(AttemptError::StreamIdle, None)
    }

    fn new(error: AttemptError, back: Option<Request<ReqBody>>) -> Failed {
        Failed { error, back }
    }
}

/// One attempt: a pooled or new connection, then the request, under `deadline` (the
/// attempt's). A timeout here is [`AttemptError::PerTryTimeout`]; the caller tells it from
/// the request's deadline.
pub(crate) async fn attempt(
    up: &UpstreamState,
    key: PoolKey,
    params: ConnectParams,
    mut req: Request<ReqBody>,
    deadline: Option<Instant>,
    ep: &Arc<Endpoint>,
) -> Result<Answer, Failed> {
    let cb = up.conf.circuit_breakers;
    let timeout = || Failed::new(AttemptError::PerTryTimeout, None);
    // The futures given to `within` are pinned where they are made: moving them (into
    // `within`'s state, then into its await) was a memcpy each.
    let checkout = std::pin::pin!(pool::checkout(key, params.protocol, params.connect_timeout));
    let mut pooled = within(deadline, checkout)
        .await
        .map_err(|Elapsed| timeout())?;
    loop {
        let fresh = pooled.is_none();
        let conn = match pooled.take() {
            Some(c) => c,
            None => {
                let overflow = || Failed::new(AttemptError::Overflow, None);
                let _pending = up
                    .breakers
                    .try_hold(Which::Pending, cb.max_pending_requests)
                    .ok_or_else(overflow)?;
                let slot = up
                    .breakers
                    .try_hold(Which::Connections, cb.max_connections)
                    .ok_or_else(overflow)?;
                let connect = std::pin::pin!(pool::connect(key, params.clone(), slot));
                match within(deadline, connect).await {
                    Err(Elapsed) => return Err(timeout()),
                    Ok(Err(e)) => {
                        tracing::debug!(upstream = %up.conf.name, endpoint = %key.addr, error = %e, "connect failed");
                        return Err(Failed::new(AttemptError::ConnectFailure, Some(req)));
                    }
                    Ok(Ok(c)) => c,
                }
            }
        };
        let active = ActiveGuard::new(ep);
        let sent = match conn {
            Conn::H1(c) => {
                pool::fit_form(&mut req, false, params.protocol);
                let release = Release {
                    key,
                    max_idle: up.conf.max_idle_connections_per_endpoint,
                    idle_timeout: up.conf.idle_connection_timeout,
                };
                let exchange = std::pin::pin!(h1::exchange(c, req, Some(release)));
                match within(deadline, exchange).await {
                    Err(Elapsed) => return Err(timeout()),
                    Ok(Ok(resp)) => resp.map(UpBody::H1),
                    Ok(Err(f)) => match f.back {
                        // A pooled connection the upstream had closed: nothing was answered,
                        // so the request goes again on a fresh connection, invisibly.
                        Some(r) if !fresh => {
                            req = r;
                            continue;
                        }
                        back => {
                            tracing::debug!(upstream = %up.conf.name, endpoint = %key.addr, error = %f.error, "upstream request failed");
                            return Err(Failed::new(AttemptError::Reset, back));
                        }
                    },
                }
            }
            Conn::H2(mut tx) => {
                pool::fit_form(&mut req, true, params.protocol);
                let sent = std::pin::pin!(tx.try_send_request(req));
                match within(deadline, sent).await {
                    Err(Elapsed) => return Err(timeout()),
                    Ok(Ok(resp)) => resp.map(UpBody::H2),
                    Ok(Err(mut e)) => match e.take_message() {
                        Some(r) if !fresh => {
                            req = r;
                            continue;
                        }
                        back => {
                            tracing::debug!(upstream = %up.conf.name, endpoint = %key.addr, error = %e.error(), "upstream request failed");
                            return Err(Failed::new(classify(e.error()), back));
                        }
                    },
                }
            }
        };
        return Ok(Answer { resp: sent, active });
    }
}

/// Reset vs refused stream, from a hyper client error.
fn classify(e: &hyper::Error) -> AttemptError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2e) = s.downcast_ref::<h2::Error>()
            && h2e.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return AttemptError::RefusedStream;
        }
        source = s.source();
    }
    AttemptError::Reset
}

/// The deadline passed.
pub struct Elapsed;

/// Runs `f` until `deadline` (or forever without one).
pub(crate) async fn within<F: Future>(
    deadline: Option<Instant>,
    f: F,
) -> Result<F::Output, Elapsed> {
    match deadline {
        None => Ok(f.await),
        Some(d) => tokio::time::timeout_at(d, f).await.map_err(|_| Elapsed),
    }
}

/// Runs `f` until it ends, or `None` once neither it nor the client's request body made
/// progress for `idle` (the route's idle timeout). Progress on the request side is
/// `received` growing, sampled every quarter of `idle` while `f` is pending (one timer), so
/// a cut comes between `idle` and 1¼ × `idle` after the last byte.
///
/// `f` is borrowed pinned, not moved: the attempt future is several KB, and moving it into
/// this one (and that into the caller's state) cost ~35k instructions per request in memcpy.
pub(crate) async fn idle_bound<F: Future>(
    idle: Option<Duration>,
    received: &ByteCounter,
    mut f: Pin<&mut F>,
) -> Option<F::Output> {
    let Some(idle) = idle else {
        return Some(f.await);
    };
    let step = (idle / 4).max(Duration::from_millis(1));
    let mut seen = received.get();
    let mut last = Instant::now();
    let timer = tokio::time::sleep_until(last + step);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            out = f.as_mut() => return Some(out),
            () = &mut timer => {
                let now = Instant::now();
                let bytes = received.get();
                if bytes != seen {
                    seen = bytes;
                    last = now;
                } else if now.saturating_duration_since(last) >= idle {
                    return None;
                }
                let next = (now + step).min(last + idle);
                timer.as_mut().reset(next.max(now + Duration::from_millis(1)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each attempt error: its flag, its reply's status, and whether a retry may follow.
    #[test]
    fn attempt_errors_carry_flag_and_retryability() {
        use AttemptError::*;
        #[rustfmt::skip]
        let table = [
            (ConnectFailure, Flag::UF, 503, true),
            (Reset, Flag::UC, 502, true),
            (RefusedStream, Flag::UC, 502, true),
            (PerTryTimeout, Flag::UT, 504, true),
            (Deadline, Flag::UT, 504, false),
            (Overflow, Flag::UO, 503, false),
            (StreamIdle, Flag::SI, 408, false),
            (ClientBody(BodyCut::TooLarge), Flag::DPE, 413, false),
            (ClientBody(BodyCut::Malformed), Flag::DPE, 400, false),
            (ClientBody(BodyCut::Idle), Flag::SI, 408, false),
            (ClientBody(BodyCut::Aborted), Flag::DC, 400, false),
        ];
        for (e, flag, status, retry) in table {
            assert_eq!(e.reply().flag, flag, "{e:?}");
            assert_eq!(e.reply().status.as_u16(), status, "{e:?}");
            assert_eq!(e.retry_outcome().is_some(), retry, "{e:?}");
        }
    }

    /// From a typed error to the retry decision: a `reset`-only policy retries a reset and a
    /// refused stream, never a per-try timeout or a connect failure; no error that ends the
    /// request reaches the policy.
    #[test]
    fn retry_decisions_from_attempt_errors() {
        use super::super::retry::{Next, RetryState, retriable};
        use portico_config::snapshot::{RetryOn, RetryPolicy};
        let p = RetryPolicy {
            retry_on: RetryOn {
                bits: RetryOn::flag("reset").unwrap_or(0),
            },
            num_retries: 1,
            per_try_timeout: None,
            retriable_status_codes: vec![],
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        };
        let decide = |e: AttemptError| {
            let outcome = e.retry_outcome()?;
            Some(RetryState::new(Some(&p)).next(outcome, 1, false, true, 1))
        };
        assert_eq!(decide(AttemptError::Reset), Some(Next::Retry));
        assert_eq!(decide(AttemptError::RefusedStream), Some(Next::Retry));
        assert_eq!(decide(AttemptError::PerTryTimeout), Some(Next::Stop));
        assert_eq!(decide(AttemptError::ConnectFailure), Some(Next::Stop));
        assert_eq!(decide(AttemptError::Deadline), None);
        assert_eq!(decide(AttemptError::Overflow), None);
        assert_eq!(decide(AttemptError::ClientBody(BodyCut::Aborted)), None);
        assert!(retriable(&p, Attempt::Reset));
    }
}
