//! In-process loopback upstreams: `Upstream` records every request and answers with a
//! behaviour; `Controlled` is changed by the test while it runs (status, delay, health).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What an upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

pub type Behavior = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

/// An in-process HTTP/1.1 + h2c upstream that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Upstream {
    /// Answers 200 with body `upstream NAME` and header `x-upstream: NAME`.
    pub async fn start(name: &str) -> Upstream {
        let n = name.to_string();
        Self::with(
            name,
            Arc::new(move |_s: &Seen| {
                let mut r = Response::new(Full::new(Bytes::from(format!("upstream {n}"))));
                r.headers_mut()
                    .insert("x-upstream", n.parse().expect("header"));
                r
            }),
        )
        .await
    }

    pub async fn with(name: &str, behavior: Behavior) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = &mut stop_rx => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                // As real servers do: without it, Nagle holds the tail of each flow-control
                // window until a delayed ACK (tens of ms per window over HTTP/2).
                let _ = stream.set_nodelay(true);
                let seen = seen2.clone();
                let behavior = behavior.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let behavior = behavior.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                                version: parts.version,
                            };
                            let resp = behavior(&s);
                            seen.lock().expect("lock").push(s);
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            seen,
            stop: Some(stop_tx),
        }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("upstream saw no request")
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback upstream (HTTP/1.1 + h2c) whose behaviour a test changes while it runs:
/// `status` and `delay_ms` for ordinary requests, `health_status` for paths starting with
/// `/healthz`. Answers carry `x-upstream: NAME`; `hits` counts ordinary requests only.
/// `connections` counts the connections it accepted and `peak` the most ordinary requests it
/// had in flight at once (multiplexing checks).
pub struct Controlled {
    pub addr: SocketAddr,
    pub name: String,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    pub health_status: Arc<std::sync::atomic::AtomicU16>,
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    pub health_hits: Arc<std::sync::atomic::AtomicUsize>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub peak: Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Controlled {
    pub async fn start(name: &str, delay: Duration) -> Controlled {
        use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(200));
        let health_status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let hits = Arc::new(AtomicUsize::new(0));
        let health_hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = (
            status.clone(),
            health_status.clone(),
            delay_ms.clone(),
            hits.clone(),
            health_hits.clone(),
            name.to_string(),
            (in_flight, peak.clone()),
        );
        let accepted_count = connections.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = &mut stop_rx => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                // As real servers do: without it, Nagle holds the tail of each flow-control
                // window until a delayed ACK (tens of ms per window over HTTP/2).
                let _ = stream.set_nodelay(true);
                accepted_count.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (
                            status,
                            health_status,
                            delay_ms,
                            hits,
                            health_hits,
                            name,
                            (in_flight, peak),
                        ) = shared.clone();
                        async move {
                            let health = req.uri().path().starts_with("/healthz");
                            let _ = req.into_body().collect().await;
                            let code = if health {
                                health_hits.fetch_add(1, Ordering::SeqCst);
                                health_status.load(Ordering::SeqCst)
                            } else {
                                hits.fetch_add(1, Ordering::SeqCst);
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                let d = delay_ms.load(Ordering::SeqCst);
                                if d > 0 {
                                    tokio::time::sleep(Duration::from_millis(d)).await;
                                }
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                status.load(Ordering::SeqCst)
                            };
                            let mut r =
                                Response::new(Full::new(Bytes::from(format!("upstream {name}"))));
                            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
                            r.headers_mut()
                                .insert("x-upstream", name.parse().expect("header"));
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Controlled {
            addr,
            name: name.to_string(),
            status,
            health_status,
            delay_ms,
            hits,
            health_hits,
            connections,
            peak,
            stop: Some(stop_tx),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Controlled {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Three controllable upstreams `a`, `b`, `c`, answering at once.
pub async fn three_controlled() -> Vec<Controlled> {
    vec![
        Controlled::start("a", Duration::ZERO).await,
        Controlled::start("b", Duration::ZERO).await,
        Controlled::start("c", Duration::ZERO).await,
    ]
}
