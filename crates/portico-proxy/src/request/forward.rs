//! A forwarded request from the circuit breaker to the response head: the request's
//! deadline, the upstream's request breaker, the upstream request (`prepare.rs`), then per
//! attempt the pick (load balancer), the attempt itself (`attempt.rs`), and the retry
//! decision (`retry.rs`), until a response head is in hand or a local reply ends it; then the
//! respond phase (`respond.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::reqbody::ClientBody;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response};
use portico_config::snapshot::{RetryPolicy, Route};
use tokio::time::Instant;

use super::attempt::{Answer, AttemptError, Failed, attempt, idle_bound};
use super::ctx::RequestCtx;
use super::prepare::{NotSent, Prepared, Template, prepare};
use super::record::Record;
use super::respond::{RespondCtx, upstream_response};
use super::retry::{self, Attempt, Next, RetryState};
use crate::body::{ReqBody, RespBody};
use crate::headers;
use crate::local_reply::{Flag, LocalReply};
use crate::request::deadline;
use crate::request::shadow;
use crate::request::upgrade;
use crate::state::Proxy;
use crate::telemetry::metrics::UpstreamMetrics;
use crate::upstream::pool::{ConnectParams, PoolKey};
use crate::upstream::{AttemptReport, Endpoint, Held, PickCtx, UpstreamState, Which};

/// Forwards the request to the route's upstream (index `upstream` in the snapshot).
/// `body_read`: body bytes already read from the client (by `include_body`), sent first.
pub(super) async fn forward(
    ctx: RequestCtx,
    route: Arc<Route>,
    upstream: usize,
    req: Request<ClientBody>,
    body_read: Option<Bytes>,
) -> Response<RespBody> {
    let RequestCtx {
        proxy,
        active,
        conn,
        mut rec,
    } = ctx;
    let Some(up) = active.upstreams.get(upstream).cloned() else {
        return rec.fail(&proxy, Flag::UH);
    };
    let um = active
        .upstream_metrics
        .get(upstream)
        .cloned()
        .unwrap_or_default();
    let mirror = route
        .shadow
        .as_ref()
        .filter(|s| shadow::picked(s))
        .and_then(|s| active.upstreams.get(s.upstream).cloned());
    rec.upstream = Some(up.clone());

    let deadline = request_deadline(&rec, &route, req.headers());
    if deadline::expired(deadline, Instant::now()) {
        // Already spent (e.g. grpc-timeout: 0m): never contact the upstream.
        return rec.fail(&proxy, Flag::UT);
    }
    let Some(request_slot) = circuit_breaker(&up, &um) else {
        return rec.reply(&proxy, LocalReply::overloaded());
    };
    let downstream_version = req.version();
    let prepared = std::pin::pin!(prepare(
        &route,
        &up,
        &conn,
        &mut rec,
        mirror,
        deadline,
        (req, body_read),
    ))
    .await;
    let Prepared {
        req,
        template,
        replay,
        upgrade,
        compress_req,
        lb_hash,
        lb_cookie,
        mirror: _mirror,
    } = match prepared {
        Ok(p) => p,
        Err(NotSent::Error(e)) => return rec.reply(&proxy, e.reply()),
        Err(NotSent::UpgradeRefused) => return rec.local(&proxy, upgrade::refused()),
    };
    let mut flight = Flight {
        proxy: &proxy,
        rec: &mut rec,
        route: &route,
        up: &up,
        um: &um,
        deadline,
    };
    let sent = flight
        .run(req, template.as_ref(), replay.as_ref(), lb_hash)
        .await;
    match sent {
        Err(reply) => rec.reply(&proxy, reply),
        Ok((answer, started, retry_slot)) => {
            rec.upstream_start = Some(started);
            let ctx = RespondCtx {
                upgrade,
                deadline,
                downstream_version,
                compress_req,
                held: (request_slot, retry_slot),
            };
            let mut resp = upstream_response(proxy, rec, &route, answer, ctx);
            if let Some(c) = lb_cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
    }
}

/// The deadline: the earliest of the route timeout and the client's `grpc-timeout` (only
/// looked for on gRPC requests), from the request's start.
fn request_deadline(rec: &Record, route: &Route, headers: &HeaderMap) -> Option<Instant> {
    let client_budget = if rec.grpc {
        headers
            .get(&headers::GRPC_TIMEOUT)
            .and_then(deadline::parse_grpc_timeout)
    } else {
        None
    };
    let budget = deadline::budget(route.timeout, client_budget, route.grpc_timeout_max);
    budget.map(|t| Instant::from_std(rec.start + t))
}

/// The circuit-breaker phase: a slot of the upstream's request breaker, held until the
/// response ends; `None` (an overflow, counted) when it is full.
fn circuit_breaker(up: &UpstreamState, um: &UpstreamMetrics) -> Option<Held> {
    let slot = up
        .breakers
        .try_hold(Which::Requests, up.conf.circuit_breakers.max_requests);
    if slot.is_none() {
        um.overflows.fetch_add(1, Relaxed);
    }
    slot
}

/// The attempts of one forwarded request.
struct Flight<'a> {
    proxy: &'a Proxy,
    rec: &'a mut Record,
    route: &'a Route,
    up: &'a Arc<UpstreamState>,
    um: &'a UpstreamMetrics,
    deadline: Option<Instant>,
}

/// A response head, when its attempt started, and the retry breaker slot if one was taken.
type Sent = (Answer, std::time::Instant, Option<Held>);

impl Flight<'_> {
    /// Pick, attempt, decide, until a response head is in hand or a local reply ends it.
    async fn run(
        &mut self,
        first: Request<ReqBody>,
        template: Option<&Template>,
        replay: Option<&Bytes>,
        lb_hash: Option<u64>,
    ) -> Result<Sent, LocalReply> {
        let mut retry = RetryState::new(self.route.retry.as_ref());
        let params = ConnectParams::of(self.up);
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retry_slot: Option<Held> = None;
        let mut pending = Some(first);
        loop {
            let Some(mut req) = pending.take() else {
                return Err(LocalReply::of(Flag::URX));
            };
            if deadline::expired(self.deadline, Instant::now()) {
                return Err(LocalReply::of(Flag::UT));
            }
            let Some(ep) = self.pick(&tried, lb_hash) else {
                return Err(LocalReply::of(Flag::UH));
            };
            // Counted once it is made: a back-off that ran into the deadline is no attempt.
            self.rec.attempts += 1;
            self.rec.upstream_addr = Some(ep.addr);
            self.stamp(req.headers_mut());
            let per_try = retry.policy().and_then(|p| p.per_try_timeout);
            let try_deadline = deadline::try_deadline(per_try, self.deadline, Instant::now());
            let key = PoolKey {
                uid: self.up.uid,
                addr: ep.addr,
            };
            let started = std::time::Instant::now();
            // The route's idle timeout covers the wait for the response head too: no byte
            // either way (request body bytes read from the client count) for that long is a
            // 408, SI.
            let idle = deadline::idle_before(self.route.idle_timeout, try_deadline, Instant::now());
            let sent = std::pin::pin!(attempt(
                self.up,
                key,
                params.clone(),
                req,
                try_deadline,
                &ep
            ));
            let mut result = match idle_bound(idle, &self.rec.received, sent).await {
                Some(result) => result,
                None => Err(Failed::idle()),
            };
            self.settle(&mut result, &ep, started);
            let (outcome, answered, back) = match result {
                Ok(answer) => (self.outcome_of(&answer), Ok(answer), None),
                Err(Failed { error, back }) => match error.retry_outcome() {
                    Some(outcome) => (outcome, Err(error), back),
                    None => return Err(error.reply()),
                },
            };
            tried.push(ep.addr);

            let endpoints = self.up.endpoints.load().endpoints.len() as u32;
            let resendable = replay.is_some();
            let again = match retry.next(
                outcome,
                self.rec.attempts,
                back.is_some(),
                resendable,
                endpoints,
            ) {
                Next::Failover => true,
                Next::Stop => false,
                Next::Retry => {
                    let pause = retry.pause();
                    match retry.policy().and_then(|p| self.admit_retry(p, pause)) {
                        None => false,
                        Some(slot) => {
                            retry_slot = Some(slot);
                            retry.granted();
                            drop(answered);
                            tokio::time::sleep(pause).await;
                            pending = back.or_else(|| template?.rebuild(replay));
                            continue;
                        }
                    }
                }
            };
            if !again {
                if retry.policy_retries(outcome) {
                    self.rec.flags.insert(Flag::URX);
                }
                return match answered {
                    Ok(answer) => Ok((answer, started, retry_slot)),
                    Err(error) => Err(error.reply()),
                };
            }
            pending = back.or_else(|| template?.rebuild(replay));
        }
    }

    /// The pick phase: the upstream's load balancer chooses an endpoint, avoiding the ones
    /// that already failed this request while another is available.
    fn pick(&self, tried: &[SocketAddr], hash: Option<u64>) -> Option<Arc<Endpoint>> {
        self.up.pick(&PickCtx { avoid: tried, hash })
    }

    /// The time left and the attempt number, in the attempt's request headers.
    fn stamp(&self, h: &mut HeaderMap) {
        if let Some(d) = self.deadline {
            let left = deadline::remaining_ms(d, Instant::now());
            h.insert(headers::X_EXPECTED_TIMEOUT.clone(), HeaderValue::from(left));
            if self.rec.grpc {
                let left = std::time::Duration::from_millis(left);
                h.insert("grpc-timeout", deadline::grpc_timeout_value(left));
            }
        }
        h.insert(
            headers::X_ATTEMPT_COUNT.clone(),
            HeaderValue::from(self.rec.attempts),
        );
    }

    /// What the retry policy sees of a response head.
    fn outcome_of(&self, answer: &Answer) -> Attempt {
        let grpc = if self.rec.grpc {
            retry::grpc_status(answer.resp.headers())
        } else {
            None
        };
        Attempt::Status {
            status: answer.resp.status().as_u16(),
            grpc,
        }
    }

    /// Counts an attempt's result and reports it to the endpoint's health (outlier
    /// detection, latency-aware balancing) — except what is the client's doing: a body it
    /// broke, or a timeout while it was still sending. A timeout past the request's deadline
    /// becomes [`AttemptError::Deadline`].
    fn settle(
        &self,
        result: &mut Result<Answer, Failed>,
        ep: &Arc<Endpoint>,
        started: std::time::Instant,
    ) {
        let latency = started.elapsed();
        let report = |status: Option<u16>| {
            let gateway_failure = status.is_none();
            let r = AttemptReport {
                status,
                gateway_failure,
                latency,
            };
            self.up.report(ep, r);
        };
        let failed = match result {
            Ok(answer) => {
                let status = answer.resp.status().as_u16();
                self.um.requests.add(status);
                report(Some(status));
                return;
            }
            Err(f) => f,
        };
        match failed.error {
            AttemptError::Overflow => {
                self.um.overflows.fetch_add(1, Relaxed);
            }
            AttemptError::ConnectFailure => {
                self.um.connect_failures.fetch_add(1, Relaxed);
                report(None);
            }
            AttemptError::Reset | AttemptError::RefusedStream => match self.rec.received.cut() {
                // The client's body failed: the client's fault; no report, no retry.
                Some(cut) => failed.error = AttemptError::ClientBody(cut),
                None => report(None),
            },
            AttemptError::PerTryTimeout | AttemptError::Deadline | AttemptError::StreamIdle => {
                // Not the upstream's failure while the client is still sending its body.
                if !self.rec.received.body_pending() {
                    report(None);
                }
                let now = Instant::now();
                if failed.error == AttemptError::PerTryTimeout
                    && deadline::expired(self.deadline, now)
                {
                    failed.error = AttemptError::Deadline;
                }
            }
            AttemptError::ClientBody(_) => {}
        }
    }

    /// The retry gate: the back-off must end before the deadline, and the retry budget and
    /// the `max_retries` breaker (the smaller of the two) must have room, taken in one
    /// atomic step on the retry counter. A request that retried before still holds its
    /// slot here, so it counts as in flight.
    fn admit_retry(&self, policy: &RetryPolicy, pause: std::time::Duration) -> Option<Held> {
        let in_time = deadline::fits(pause, self.deadline, Instant::now());
        let cb = self.up.conf.circuit_breakers;
        let active = self.up.breakers.requests.load(Relaxed);
        let budget = retry::budget_allowance(policy, active);
        let slot = if in_time {
            self.up
                .breakers
                .try_hold(Which::Retries, budget.min(cb.max_retries))
        } else {
            None
        };
        if slot.is_some() {
            self.proxy.counters.retries.fetch_add(1, Relaxed);
            if let Some(m) = &self.rec.metrics {
                m.retries.fetch_add(1, Relaxed);
            }
        } else {
            self.proxy.counters.retries_denied.fetch_add(1, Relaxed);
            self.um.retry_budget_exhausted.fetch_add(1, Relaxed);
            // Refused by the max_retries breaker (the smaller of the two limits): a
            // circuit-breaker overflow too.
            if in_time && cb.max_retries < budget {
                self.um.overflows.fetch_add(1, Relaxed);
            }
        }
        slot
    }
}
