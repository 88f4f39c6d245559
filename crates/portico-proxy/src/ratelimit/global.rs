//! Global rate limits (reference §4.1, `scope: global`): one `ShouldRateLimit` call to the
//! configured `RateLimitService` per request, carrying one descriptor per global rule of the
//! route, under the service's `timeout_ms`.
//!
//! The gRPC channel is created once per configuration snapshot, lazily on the first request
//! that needs it, and shared by every worker (a tonic `Channel` multiplexes calls over one
//! HTTP/2 connection per endpoint; its background task runs on the runtime of the worker that
//! made it). A reload with the same service settings keeps the channel.
//!
//! Failures (no answer within `timeout_ms`, connection refused, an error status): with
//! `failure_mode_deny: false` (default) the request passes with flag RLSE; with `true` it is
//! refused with 429 and flag RLSE (the contract's reply for RLSE; Envoy answers 500 there, but a
//! client that backs off on 429 is the more useful outcome for a limiter that cannot decide).

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use portico_config::snapshot::{
    EndpointSource, RateLimitScope, RateLimitServiceConf, Route, UpstreamConf,
};
use portico_rls::proto::{self, Code, RateLimitDescriptor, RateLimitRequest};
use tonic::transport::{Channel, Endpoint};

use super::{Headers, Verdict, descriptor_entries};
use crate::local_reply::Flag;

/// The client of one configured `RateLimitService`.
#[derive(Debug)]
pub struct GlobalClient {
    pub conf: RateLimitServiceConf,
    /// `http://host:port` of each endpoint of the service's upstream.
    targets: Vec<String>,
    channel: OnceLock<Option<Channel>>,
}

impl GlobalClient {
    pub fn new(conf: RateLimitServiceConf, upstream: Option<&UpstreamConf>) -> GlobalClient {
        let targets = match upstream.map(|u| &u.endpoints) {
            Some(EndpointSource::Static(list)) => list
                .iter()
                .map(|e| format!("http://{}", e.address))
                .collect(),
            Some(EndpointSource::Dns { host, port, .. }) => {
                if host.contains(':') {
                    vec![format!("http://[{host}]:{port}")]
                } else {
                    vec![format!("http://{host}:{port}")]
                }
            }
            None => Vec::new(),
        };
        GlobalClient {
            conf,
            targets,
            channel: OnceLock::new(),
        }
    }

    /// Same service, same addresses: the channel can be kept across a reload.
    pub fn same_as(&self, other: &GlobalClient) -> bool {
        self.conf == other.conf && self.targets == other.targets
    }

    /// Takes over `old`'s channel if it was already made.
    pub fn adopt(&self, old: &GlobalClient) {
        if let Some(c) = old.channel.get() {
            let _ = self.channel.set(c.clone());
        }
    }

    /// The channel (made on first use; must run inside a tokio runtime).
    fn channel(&self) -> Option<Channel> {
        self.channel
            .get_or_init(|| {
                let connect_timeout = self.conf.timeout.max(Duration::from_millis(250));
                let endpoints: Vec<Endpoint> = self
                    .targets
                    .iter()
                    .filter_map(|t| match Endpoint::from_shared(t.clone()) {
                        Ok(e) => Some(
                            e.connect_timeout(connect_timeout)
                                .tcp_nodelay(true)
                                .http2_keep_alive_interval(Duration::from_secs(30)),
                        ),
                        Err(err) => {
                            tracing::warn!(target = %t, error = %err, "bad rate limit service address");
                            None
                        }
                    })
                    .collect();
                match endpoints.len() {
                    0 => None,
                    1 => endpoints.into_iter().next().map(|e| e.connect_lazy()),
                    _ => Some(Channel::balance_list(endpoints.into_iter())),
                }
            })
            .clone()
    }

    /// Asks the service about `req`'s global rules.
    pub async fn check<B>(&self, route: &Route, req: &Request<B>, client: IpAddr) -> Verdict {
        let descriptors: Vec<RateLimitDescriptor> = route
            .rate_limits
            .iter()
            .filter(|r| r.scope == RateLimitScope::Global)
            .filter_map(|r| descriptor_entries(&r.key, req, client))
            .map(proto::descriptor)
            .collect();
        if descriptors.is_empty() {
            return Verdict::Allow;
        }
        let request = RateLimitRequest {
            domain: self.conf.domain.clone(),
            descriptors,
            hits_addend: 1,
        };
        let Some(channel) = self.channel() else {
            return self.failed("no address");
        };
        let call = proto::should_rate_limit(channel, request);
        let resp = match tokio::time::timeout(self.conf.timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(status)) => return self.failed(status.message()),
            Err(_) => return self.failed("timed out"),
        };
        if resp.overall_code != Code::OverLimit as i32 {
            return Verdict::Allow;
        }
        let over = resp
            .statuses
            .iter()
            .find(|s| s.code == Code::OverLimit as i32);
        let reset = over
            .and_then(|s| s.duration_until_reset)
            .map_or(1, |d| proto::ceil_secs(&d).max(1));
        let mut extra = Vec::new();
        for h in &resp.response_headers_to_add {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.key.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                extra.push((n, v));
            }
        }
        Verdict::Deny {
            flag: Flag::RL,
            headers: Some(Headers {
                limit: over
                    .and_then(|s| s.current_limit.as_ref())
                    .map_or(0, |l| u64::from(l.requests_per_unit)),
                remaining: over.map_or(0, |s| u64::from(s.limit_remaining)),
                reset,
                retry_after: reset,
                extra,
            }),
        }
    }

    fn failed(&self, why: &str) -> Verdict {
        tracing::debug!(service = %self.conf.name, error = %why, "rate limit service failed");
        if self.conf.failure_mode_deny {
            Verdict::Deny {
                flag: Flag::RLSE,
                headers: None,
            }
        } else {
            Verdict::FailedOpen
        }
    }
}
