//! `portico ratelimit`: a server of Envoy's `RateLimitService/ShouldRateLimit` whose counters
//! live in Redis, so N servers and N proxies (Portico or Envoy) share one budget.
//!
//! Counting uses fixed windows, as envoyproxy/ratelimit does: the key is the domain, the
//! descriptor's entries and the window's start (`unix time / window * window`); one atomic
//! pipeline (`MULTI; INCRBY key hits; EXPIRE key window; …; EXEC`) counts every limited
//! descriptor of a request in one round trip. A descriptor is over its limit when its count
//! passes `requests_per_unit`; its status carries `limit_remaining` and `duration_until_reset`.
//!
//! Redis unavailable: every call fails fast with `UNAVAILABLE` (short connect and response
//! timeouts; after a failed connect, calls fail at once for [`RECONNECT_BACKOFF`] instead of
//! each waiting for a connect), so the caller's `failure_mode_deny` decides and nothing hangs.
//!
//! The gRPC service is served over plain HTTP/2 (h2c) with hyper; tonic provides the framing
//! and the codec (`tonic::server::Grpc`), with no code generation.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::server::UnaryService;

use crate::proto::{self, Code, DescriptorStatus, RateLimit, RateLimitRequest, RateLimitResponse};
use crate::rules::Rules;

/// After a failed connect to Redis, calls fail at once for this long.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Options of `portico ratelimit`.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    pub listen: SocketAddr,
    pub redis: String,
    pub rules: Vec<PathBuf>,
    /// Connect and response timeout for Redis.
    pub redis_timeout: Duration,
    pub workers: Option<usize>,
}

/// The counters, in Redis.
pub struct Store {
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    failed_at: Mutex<Option<Instant>>,
    timeout: Duration,
}

/// Redis could not answer.
#[derive(Debug, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct StoreError(String);

impl Store {
    pub fn new(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(e.to_string()))?;
        Ok(Store {
            client,
            conn: Mutex::new(None),
            failed_at: Mutex::new(None),
            timeout,
        })
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Ok(c) = self.conn.lock()
            && let Some(c) = c.as_ref()
        {
            return Ok(c.clone());
        }
        if let Ok(f) = self.failed_at.lock()
            && f.is_some_and(|at| at.elapsed() < RECONNECT_BACKOFF)
        {
            return Err(StoreError("down (backing off)".into()));
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let attempt = tokio::time::timeout(
            self.timeout,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await;
        match attempt {
            Ok(Ok(c)) => {
                if let Ok(mut g) = self.conn.lock() {
                    *g = Some(c.clone());
                }
                if let Ok(mut f) = self.failed_at.lock()
                    && f.take().is_some()
                {
                    tracing::info!("redis reachable again");
                }
                Ok(c)
            }
            Ok(Err(e)) => Err(self.failed(e.to_string())),
            Err(_) => Err(self.failed("connect timed out".into())),
        }
    }

    fn failed(&self, why: String) -> StoreError {
        if let Ok(mut f) = self.failed_at.lock() {
            if f.is_none() {
                tracing::warn!(error = %why, "redis unavailable");
            }
            *f = Some(Instant::now());
        }
        StoreError(why)
    }

    /// Adds `hits` to each key (creating it with a time to live of its window) and returns the
    /// new counts, in one atomic round trip.
    pub async fn incr(&self, keys: &[(String, u64)], hits: u64) -> Result<Vec<u64>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, ttl) in keys {
            pipe.incr(key, hits)
                .expire(key, i64::try_from(*ttl).unwrap_or(i64::MAX))
                .ignore();
        }
        match tokio::time::timeout(self.timeout, pipe.query_async::<Vec<u64>>(&mut conn)).await {
            Ok(Ok(v)) if v.len() == keys.len() => Ok(v),
            Ok(Ok(v)) => Err(StoreError(format!(
                "unexpected reply: {} counts for {} keys",
                v.len(),
                keys.len()
            ))),
            Ok(Err(e)) => {
                self.drop_connection();
                Err(self.failed(e.to_string()))
            }
            Err(_) => {
                self.drop_connection();
                Err(self.failed("response timed out".into()))
            }
        }
    }

    fn drop_connection(&self) {
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
    }
}

/// The rate limit service: rules plus counters.
pub struct RateLimiter {
    pub rules: Rules,
    pub store: Store,
}

/// The Redis key of one descriptor's counter in one window: lengths prefix every part, so no
/// key or value can forge another descriptor's key.
pub fn counter_key(domain: &str, entries: &[proto::Entry], window_start: u64) -> String {
    use std::fmt::Write as _;
    let mut k = String::with_capacity(32 + domain.len());
    let _ = write!(k, "portico_rl:{}:{domain}", domain.len());
    for e in entries {
        let _ = write!(
            k,
            "|{}:{}={}:{}",
            e.key.len(),
            e.key,
            e.value.len(),
            e.value
        );
    }
    let _ = write!(k, "|{window_start}");
    k
}

impl RateLimiter {
    pub async fn should_rate_limit(
        &self,
        req: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now_secs = now.as_secs();
        let hits = u64::from(req.hits_addend.max(1));
        let mut statuses: Vec<DescriptorStatus> = Vec::with_capacity(req.descriptors.len());
        // (index in statuses, limit, window start, window) of the counted descriptors
        let mut counted = Vec::new();
        let mut keys = Vec::new();
        for d in &req.descriptors {
            let limit = self.rules.lookup(&req.domain, &d.entries);
            statuses.push(DescriptorStatus {
                code: Code::Ok as i32,
                ..Default::default()
            });
            let Some(limit) = limit.filter(|l| !l.unlimited) else {
                continue;
            };
            let window = limit.window_secs();
            let start = now_secs / window * window;
            keys.push((counter_key(&req.domain, &d.entries, start), window));
            counted.push((statuses.len() - 1, limit, start, window));
        }
        let counts = self
            .store
            .incr(&keys, hits)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut overall = Code::Ok;
        for ((i, limit, start, window), count) in counted.into_iter().zip(counts) {
            let rpu = u64::from(limit.requests_per_unit);
            let over = count > rpu && !limit.shadow;
            if over {
                overall = Code::OverLimit;
            }
            let reset = Duration::from_secs(start + window).saturating_sub(now);
            statuses[i] = DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: limit.requests_per_unit,
                    unit: limit.unit as i32,
                    name: limit.name.clone(),
                }),
                limit_remaining: u32::try_from(rpu.saturating_sub(count)).unwrap_or(u32::MAX),
                duration_until_reset: Some(proto::duration(reset)),
                ..Default::default()
            };
        }
        Ok(RateLimitResponse {
            overall_code: overall as i32,
            statuses,
            ..Default::default()
        })
    }
}

/// `ShouldRateLimit` as a tonic unary service.
struct ShouldRateLimit(Arc<RateLimiter>);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl UnaryService<RateLimitRequest> for ShouldRateLimit {
    type Response = RateLimitResponse;
    type Future = BoxFuture<Result<tonic::Response<RateLimitResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<RateLimitRequest>) -> Self::Future {
        let limiter = self.0.clone();
        Box::pin(async move {
            limiter
                .should_rate_limit(request.into_inner())
                .await
                .map(tonic::Response::new)
        })
    }
}

async fn handle(
    limiter: Arc<RateLimiter>,
    req: Request<Incoming>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if req.uri().path() != proto::SHOULD_RATE_LIMIT {
        let msg = format!("unknown method {}", req.uri().path());
        return Ok(Status::unimplemented(msg).into_http());
    }
    let codec = tonic_prost::ProstCodec::<RateLimitResponse, RateLimitRequest>::default();
    let mut grpc = tonic::server::Grpc::new(codec);
    Ok(grpc.unary(ShouldRateLimit(limiter), req).await)
}

/// Serves `limiter` on `listener` (gRPC over h2c) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    limiter: Arc<RateLimiter>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1024);
    let builder = builder.http2_only();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let limiter = limiter.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(limiter.clone(), req));
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "rate limit connection ended");
            }
        });
    }
}

/// Runs `portico ratelimit` until SIGTERM or SIGINT.
pub fn run(opts: ServerOpts) -> anyhow::Result<()> {
    let rules = Rules::load(&opts.rules)?;
    let store = Store::new(&opts.redis, opts.redis_timeout)?;
    let limiter = Arc::new(RateLimiter { rules, store });
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = opts.workers {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(opts.listen).await?;
        let domains: Vec<&str> = limiter.rules.domains().collect();
        tracing::info!(address = %listener.local_addr()?, ?domains, "rate limit service listening");
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        serve(listener, limiter, shutdown).await;
        tracing::info!("stopped");
        Ok(())
    })
}
