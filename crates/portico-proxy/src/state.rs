//! The proxy's shared state: the active configuration behind one atomic pointer.
//!
//! `Active` pairs a compiled [`Snapshot`] with the runtime state it needs (upstream
//! endpoint sets). A reload prepares a new `Active` off the request path (resolving DNS,
//! reusing the state of upstreams whose settings did not change) and swaps it in with one
//! atomic store; each request loads the pointer once when its headers arrive and keeps that
//! snapshot to its end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use portico_config::Snapshot;
use portico_config::snapshot::{EndpointSource, UpstreamConf};

use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::{Registry, RouteMetrics, UpstreamMetrics};
use crate::upstream::{UpstreamState, resolve};

/// A configuration in force, with its runtime state.
#[derive(Debug)]
pub struct Active {
    pub generation: u64,
    pub applied_at: SystemTime,
    pub config: Arc<Snapshot>,
    /// Indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<UpstreamState>>,
    /// Indexed like `config.routes`.
    pub route_metrics: Vec<Arc<RouteMetrics>>,
    /// Indexed like `config.upstreams`.
    pub upstream_metrics: Vec<Arc<UpstreamMetrics>>,
    /// TLS termination state of the Hosts with `tls` (certificates loaded, rotation polled).
    pub tls: Arc<crate::downstream::tls::TlsHosts>,
    /// Rate-limit state (buckets kept across reloads for unchanged rules).
    pub rate_limits: Arc<crate::ratelimit::Limits>,
    /// Edge authentication state (JWT key sets kept across reloads for unchanged providers).
    pub auth: Arc<crate::auth::AuthState>,
}

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub drain_timeout: Duration,
    /// Overload manager thresholds (`run --overload-*`).
    pub overload: crate::downstream::overload::OverloadConf,
}

/// Process-wide counters (exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    pub retries: std::sync::atomic::AtomicU64,
    /// Retries not made because of the budget, the deadline or `max_retries`.
    pub retries_denied: std::sync::atomic::AtomicU64,
    /// Requests refused by a circuit breaker.
    pub overflows: std::sync::atomic::AtomicU64,
    /// Rate limit service calls that failed (flag RLSE).
    pub rate_limit_service_errors: std::sync::atomic::AtomicU64,
    /// External authorization checks (`portico_auth_checks_total`).
    pub auth: crate::auth::AuthCounters,
}

/// Everything the data plane shares across workers.
#[derive(Debug)]
pub struct Proxy {
    active: ArcSwap<Active>,
    pub settings: ProxySettings,
    pub access_log: AccessLog,
    pub counters: Counters,
    pub metrics: Arc<Registry>,
    /// The overload manager (thresholds from `settings.overload`).
    pub overload: Arc<crate::downstream::overload::Overload>,
    draining: AtomicBool,
}

impl Proxy {
    pub fn new(
        first: Active,
        settings: ProxySettings,
        access_log: AccessLog,
        metrics: Arc<Registry>,
    ) -> Proxy {
        Proxy {
            active: ArcSwap::from_pointee(first),
            overload: Arc::new(crate::downstream::overload::Overload::new(
                settings.overload.clone(),
            )),
            settings,
            access_log,
            counters: Counters::default(),
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The configuration in force (one atomic load and reference count).
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    /// Swaps in a prepared configuration.
    pub fn swap(&self, next: Active) {
        self.active.store(Arc::new(next));
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// How long start-up and reload wait for a DNS answer before going on without it.
const DNS_WAIT: Duration = Duration::from_secs(2);

/// Builds the runtime state for `snapshot`, reusing upstream state from `previous` where the
/// settings are unchanged. Must run inside a tokio runtime that lives as long as the proxy
/// (it spawns DNS refresh and health-check tasks there).
pub async fn prepare(
    snapshot: Snapshot,
    generation: u64,
    previous: Option<&Active>,
    registry: &Registry,
) -> Active {
    let mut upstreams = Vec::with_capacity(snapshot.upstreams.len());
    for conf in &snapshot.upstreams {
        let reused =
            previous.and_then(|p| p.upstreams.iter().find(|u| u.same_settings(conf)).cloned());
        let state = match reused {
            Some(s) => s,
            None => {
                let s = Arc::new(UpstreamState::new(conf.clone()));
                start_resolution(&s).await;
                // Changed settings: endpoints that stay keep their health, ejection and
                // latency state.
                if let Some(prev) =
                    previous.and_then(|p| p.upstreams.iter().find(|u| u.conf.name == conf.name))
                {
                    s.adopt_endpoints(prev);
                }
                crate::upstream::health::spawn(&s);
                s
            }
        };
        upstreams.push(state);
    }
    let route_metrics = snapshot
        .routes
        .iter()
        .map(|r| registry.route(&r.name))
        .collect();
    let upstream_metrics = snapshot
        .upstreams
        .iter()
        .map(|u| registry.upstream(&u.name))
        .collect();
    let tls = crate::downstream::tls::TlsHosts::build(&snapshot, previous.map(|p| &*p.tls));
    let rate_limits = Arc::new(crate::ratelimit::Limits::build(
        &snapshot,
        previous.map(|p| &*p.rate_limits),
    ));
    let auth = crate::auth::AuthState::build(&snapshot, &upstreams, previous.map(|p| &*p.auth));
    Active {
        generation,
        auth,
        tls,
        applied_at: SystemTime::now(),
        config: Arc::new(snapshot),
        upstreams,
        route_metrics,
        upstream_metrics,
        rate_limits,
    }
}

/// Resolves an upstream's names now (bounded wait) and keeps them fresh in the background.
async fn start_resolution(state: &Arc<UpstreamState>) {
    let conf: &UpstreamConf = &state.conf;
    match &conf.endpoints {
        EndpointSource::Static(list) => {
            if list.iter().all(|e| e.address.parse::<SocketAddr>().is_ok()) {
                return;
            }
            // Some static endpoints are names: resolve them once.
            let mut addrs = Vec::new();
            for e in list {
                if let Ok(a) = e.address.parse::<SocketAddr>() {
                    addrs.push((a, e.weight));
                    continue;
                }
                let Some((host, port)) = split_host_port(&e.address) else {
                    continue;
                };
                match tokio::time::timeout(DNS_WAIT, resolve(host, port)).await {
                    Ok(Ok(found)) => addrs.extend(found.into_iter().map(|a| (a, e.weight))),
                    _ => {
                        tracing::warn!(upstream = %conf.name, endpoint = %e.address, "cannot resolve endpoint")
                    }
                }
            }
            state.set_endpoints(addrs);
        }
        EndpointSource::Dns {
            host,
            port,
            refresh,
        } => {
            match tokio::time::timeout(DNS_WAIT, resolve(host, *port)).await {
                Ok(Ok(found)) => state.set_endpoints(found.into_iter().map(|a| (a, 1)).collect()),
                Ok(Err(e)) => {
                    tracing::warn!(upstream = %conf.name, error = %e, "DNS resolution failed")
                }
                Err(_) => tracing::warn!(upstream = %conf.name, "DNS resolution timed out"),
            }
            let weak: Weak<UpstreamState> = Arc::downgrade(state);
            let (host, port, refresh) = (host.clone(), *port, *refresh);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(refresh).await;
                    let Some(state) = weak.upgrade() else { break };
                    match tokio::time::timeout(DNS_WAIT, resolve(&host, port)).await {
                        // An empty or failed answer keeps the last known endpoints.
                        Ok(Ok(found)) if !found.is_empty() => {
                            state.set_endpoints(found.into_iter().map(|a| (a, 1)).collect())
                        }
                        _ => {
                            tracing::debug!(upstream = %state.conf.name, "DNS refresh failed; keeping endpoints")
                        }
                    }
                }
            });
        }
    }
}

fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    Some((
        h.trim_start_matches('[').trim_end_matches(']'),
        p.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::PickCtx;
    use portico_config::{ConfigSource, load};

    fn dns_upstream(port: u16) -> Arc<UpstreamState> {
        let text = format!(
            "apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: svc}}\nspec: {{dns: 'localhost:{port}', dns_refresh_ms: 60000}}\n"
        );
        let r = load(&[ConfigSource::Inline {
            name: "t.yaml".into(),
            text,
            base_dir: std::env::temp_dir(),
        }]);
        let snap = r.snapshot.expect("snapshot");
        Arc::new(UpstreamState::new(snap.upstreams[0].clone()))
    }

    /// A `dns:` Upstream: what the name resolves to becomes its endpoints, every address of
    /// an answer takes its turn, and a refresh keeps the state of addresses that stay.
    #[tokio::test]
    async fn every_address_of_a_dns_answer_takes_its_turn() {
        let state = dns_upstream(8080);
        start_resolution(&state).await;
        let first: Vec<SocketAddr> = state
            .endpoints
            .load()
            .endpoints
            .iter()
            .map(|e| e.addr)
            .collect();
        assert!(
            first.contains(&"127.0.0.1:8080".parse().expect("addr")),
            "{first:?}"
        );

        // This machine's resolver gives one address for localhost; hand the upstream the
        // answer a multi-record name gives (what the refresh loop does with a lookup).
        let answer: Vec<SocketAddr> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        state.set_endpoints(answer.iter().map(|a| (*a, 1)).collect());
        let mut counts = std::collections::HashMap::new();
        for _ in 0..300 {
            let ep = state.pick(&PickCtx::default()).expect("an endpoint");
            *counts.entry(ep.addr).or_insert(0) += 1;
        }
        for a in &answer {
            assert_eq!(counts.get(a), Some(&100), "{counts:?}");
        }

        // The next answer drops one address: the two that stay are the same endpoints
        // (health, ejection and active-request state kept).
        let before = state.endpoints.load().endpoints.clone();
        state.set_endpoints(answer[1..].iter().map(|a| (*a, 1)).collect());
        let after = state.endpoints.load().endpoints.clone();
        assert_eq!(after.len(), 2);
        for e in &after {
            let old = before.iter().find(|o| o.addr == e.addr).expect("kept");
            assert!(Arc::ptr_eq(old, e), "{} lost its state", e.addr);
        }
    }
}
