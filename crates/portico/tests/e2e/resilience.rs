//! Resilience against misbehaving upstreams (reference §3.3, §3.4, §5): route timeouts,
//! deadlines from grpc-timeout, retries with their budget, circuit breakers, idle timeouts.

use crate::common;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the scripted upstream does with request number `n` (0-based).
#[derive(Clone, Copy)]
struct Step {
    delay: Duration,
    status: u16,
    /// Close the connection instead of answering.
    reset: bool,
}

fn ok() -> Step {
    Step {
        delay: Duration::ZERO,
        status: 200,
        reset: false,
    }
}

/// An upstream (HTTP/1.1 and h2c) whose answers follow `script(n)`; records request headers
/// and bodies, and the peak number of retries (`x-portico-attempt-count` > 1) it was serving
/// at once.
struct Scripted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    retry_peak: Arc<AtomicUsize>,
}

/// Counts a request in flight while it lives; keeps the peak.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(now: &Arc<AtomicUsize>, peak: &AtomicUsize) -> InFlight {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        InFlight(now.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn scripted(script: impl Fn(usize) -> Step + Send + Sync + 'static) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let retry_peak = Arc::new(AtomicUsize::new(0));
    let retry_now = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let shared = (
        hits.clone(),
        seen.clone(),
        bodies.clone(),
        retry_now,
        retry_peak.clone(),
    );
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (shared, script) = (shared.clone(), script.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let ((hits, seen, bodies, retry_now, retry_peak), script) =
                        (shared.clone(), script.clone());
                    async move {
                        let n = hits.fetch_add(1, Ordering::SeqCst);
                        let retry = req
                            .headers()
                            .get("x-portico-attempt-count")
                            .is_some_and(|v| v != "1");
                        let _in_flight = retry.then(|| InFlight::enter(&retry_now, &retry_peak));
                        seen.lock().expect("lock").push(req.headers().clone());
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        bodies.lock().expect("lock").push(body);
                        let step = script(n);
                        tokio::time::sleep(step.delay).await;
                        if step.reset {
                            return Err("reset".to_string());
                        }
                        let mut r =
                            http::Response::new(Full::new(Bytes::from(format!("answer {n}"))));
                        *r.status_mut() = http::StatusCode::from_u16(step.status).expect("status");
                        Ok::<_, String>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Scripted {
        addr,
        hits,
        seen,
        bodies,
        retry_peak,
    }
}

fn mapping(name: &str, spec: &str) -> String {
    format!("{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_answers_504_in_time() {
    let up = scripted(|_| Step {
        delay: Duration::from_secs(2),
        ..ok()
    })
    .await;
    let p = Portico::start(&mapping(
        "slow",
        &format!("  prefix: /\n  service: {}\n  timeout_ms: 300", up.addr),
    ))
    .await;
    let t = Instant::now();
    let r = get(&p.url("/x"), &[]).await;
    let took = t.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "deadline exceeded\n");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(400),
        "took {took:?}"
    );
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["flags"], "UT");
}

async fn grpc_call(p: &Portico, path: &str, timeout: Option<&str>) -> Got {
    let mut h = vec![("content-type", "application/grpc"), ("te", "trailers")];
    if let Some(t) = timeout {
        h.push(("grpc-timeout", t));
    }
    send(
        request("POST", &p.url(path), &h, Bytes::from_static(b"\0\0\0\0\0")),
        true,
    )
    .await
    .expect("grpc call")
}

fn header_ms(h: &http::HeaderMap, name: &str) -> u64 {
    let v = h
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}"));
    v.trim_end_matches('m')
        .parse()
        .unwrap_or_else(|_| panic!("bad {name}: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_propagate_as_grpc_timeout() {
    let up = scripted(|_| ok()).await;
    let p = Portico::start(&format!(
        "{}{}",
        mapping(
            "g",
            &format!("  prefix: /g/\n  service: {}\n  grpc: true", up.addr)
        ),
        mapping(
            "short",
            &format!(
                "  prefix: /short/\n  service: {}\n  grpc: true\n  timeout_ms: 300",
                up.addr
            )
        ),
    ))
    .await;

    // A 2 s client deadline arrives as a grpc-timeout in (1 s, 2 s].
    let r = grpc_call(&p, "/g/Svc/M", Some("2S")).await;
    assert_eq!(r.status, 200);
    let seen = up.seen.lock().expect("lock").last().cloned().expect("seen");
    let ms = header_ms(&seen, "grpc-timeout");
    assert!(ms > 1000 && ms <= 2000, "grpc-timeout {ms}m");
    assert!(header_ms(&seen, "x-portico-expected-timeout-ms") <= 2000);

    // A 300 ms route timeout under a 5 s client deadline arrives as <= 300 ms.
    let r = grpc_call(&p, "/short/Svc/M", Some("5S")).await;
    assert_eq!(r.status, 200);
    let seen = up.seen.lock().expect("lock").last().cloned().expect("seen");
    assert!(header_ms(&seen, "grpc-timeout") <= 300);
    assert!(header_ms(&seen, "x-portico-expected-timeout-ms") <= 300);

    // A deadline already spent: DEADLINE_EXCEEDED without contacting the upstream.
    let before = up.hits.load(Ordering::SeqCst);
    let r = grpc_call(&p, "/g/Svc/M", Some("0m")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("4"));
    assert_eq!(up.hits.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_success_and_none_without_policy() {
    let up = scripted(|n| {
        if n < 2 {
            Step {
                status: 503,
                ..ok()
            }
        } else {
            ok()
        }
    })
    .await;
    let p = Portico::start(&mapping(
        "r",
        &format!(
            "  prefix: /\n  service: {}\n  retry_policy: {{ retry_on: \"5xx\", num_retries: 2 }}",
            up.addr
        ),
    ))
    .await;
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "answer 2");
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
    let attempts: Vec<String> = up
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|h| {
            h["x-portico-attempt-count"]
                .to_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["attempts"], 3);

    // Without a retry policy: exactly one attempt, the upstream's 503 passes through.
    let up = scripted(|n| {
        if n < 2 {
            Step {
                status: 503,
                ..ok()
            }
        } else {
            ok()
        }
    })
    .await;
    let p = Portico::start(&mapping(
        "r",
        &format!("  prefix: /\n  service: {}", up.addr),
    ))
    .await;
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_return_the_last_status_with_urx() {
    let up = scripted(|_| Step {
        status: 502,
        ..ok()
    })
    .await;
    let p = Portico::start(&mapping(
        "r",
        &format!("  prefix: /\n  service: {}\n  retry_policy: {{ retry_on: gateway-error, num_retries: 2 }}", up.addr),
    ))
    .await;
    let r = post(&p.url("/x"), "replayed body").await;
    assert_eq!(r.status, 502);
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["flags"], "URX");
    assert_eq!(log[0]["bytes_received"], 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_and_per_try_timeouts_are_retried() {
    // First attempt: connection closed without an answer; second: slower than the per-try
    // timeout; third: fine.
    let up = scripted(|n| match n {
        0 => Step {
            reset: true,
            ..ok()
        },
        1 => Step {
            delay: Duration::from_secs(2),
            ..ok()
        },
        _ => ok(),
    })
    .await;
    let p = Portico::start(&mapping(
        "r",
        &format!(
            "  prefix: /\n  service: {}\n  retry_policy: {{ retry_on: \"reset,5xx\", num_retries: 3, per_try_timeout_ms: 200 }}",
            up.addr
        ),
    ))
    .await;
    let t = Instant::now();
    let r = get(&p.url("/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "answer 2");
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(up.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_retries_under_load() {
    let up = scripted(|_| Step {
        delay: Duration::from_millis(300),
        status: 503,
        reset: false,
    })
    .await;
    let p = Portico::start(&mapping(
        "r",
        &format!(
            "  prefix: /\n  service: {}\n  retry_policy: {{ retry_on: \"5xx\", num_retries: 2 }}\n  circuit_breakers: {{ max_retries: 100 }}",
            up.addr
        ),
    ))
    .await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = p.url(&format!("/x{i}"));
        tasks.push(tokio::spawn(async move {
            http_get(&url, &[]).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), Ok(503));
    }
    // The budget bounds retries *in flight* (Envoy's): 20% of the 50 requests in flight
    // retry in the first round; when those fail again, at most min_retry_concurrency (3) more
    // go. With num_retries 2 that is 10 + 3 at most.
    let hits = up.hits.load(Ordering::SeqCst);
    let retries = hits - 50;
    eprintln!("50 requests, {retries} retries");
    assert!(
        retries <= 50 * 20 / 100 + 3,
        "retries {retries} exceed the budget"
    );
    assert!(
        retries >= 3,
        "the budget allows at least min_retry_concurrency retries: {retries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_overflow_is_an_immediate_503() {
    let up = scripted(|_| Step {
        delay: Duration::from_millis(500),
        ..ok()
    })
    .await;
    let p = Portico::start(&mapping(
        "cb",
        &format!(
            "  prefix: /\n  service: {}\n  circuit_breakers: {{ max_requests: 1 }}",
            up.addr
        ),
    ))
    .await;
    let (a, b) = (p.url("/a"), p.url("/b"));
    let t1 = tokio::spawn(async move { http_get(&a, &[]).await });
    let t2 = tokio::spawn(async move { http_get(&b, &[]).await });
    let r1 = t1.await.expect("join").expect("r1");
    let r2 = t2.await.expect("join").expect("r2");
    let mut statuses = [r1.status.as_u16(), r2.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    let over = if r1.status == 503 { &r1 } else { &r2 };
    assert_eq!(over.header("x-portico-overloaded"), Some("true"));
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    let log = p.wait_log_lines(2).await;
    assert!(log.iter().any(|l| l["flags"] == "UO"), "{log:?}");
    // A bare service's upstream label is its host:port.
    let series = format!(
        "portico_circuit_breaker_overflows_total{{upstream=\"{}\"}}",
        up.addr
    );
    assert_eq!(metric(&p, &series).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_a_stalled_response_body() {
    // Headers now, then a body that never comes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req: http::Request<Incoming>| async {
                    let (tx, body) = futures_channel_body();
                    std::mem::forget(tx);
                    Ok::<_, Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let p = Portico::start(&mapping(
        "idle",
        &format!("  prefix: /\n  service: {addr}\n  idle_timeout_ms: 300\n  timeout_ms: 0"),
    ))
    .await;
    let t = Instant::now();
    let r = http_get(&p.url("/stall"), &[]).await;
    let took = t.elapsed();
    eprintln!("stalled body cut after {took:?} (idle_timeout_ms: 300)");
    assert!(r.is_err(), "a stalled body must end in an error: {r:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "took {took:?}"
    );
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["flags"], "SI");
}

/// An upstream that accepts connections, reads what comes and never answers.
async fn silent_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_cuts_the_wait_for_response_headers() {
    let (addr, conns) = silent_upstream().await;
    let p = Portico::start(&mapping(
        "silent",
        &format!("  prefix: /\n  service: {addr}\n  idle_timeout_ms: 300\n  timeout_ms: 0"),
    ))
    .await;
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), get(&p.url("/hang"), &[]))
        .await
        .expect("the client must not hang");
    let took = t.elapsed();
    eprintln!("408 after {took:?} (idle_timeout_ms: 300)");
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.text(), "stream idle timeout\n");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "took {took:?}"
    );
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "the upstream was contacted"
    );
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["status"], 408);
    assert_eq!(log[0]["flags"], "SI");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_before_response_headers_is_grpc_status_4() {
    let (addr, _) = silent_upstream().await;
    let p = Portico::start(&mapping(
        "silent-grpc",
        &format!(
            "  prefix: /\n  service: {addr}\n  grpc: true\n  idle_timeout_ms: 300\n  timeout_ms: 0"
        ),
    ))
    .await;
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), grpc_call(&p, "/pkg.Svc/M", None))
        .await
        .expect("the call must not hang");
    let took = t.elapsed();
    eprintln!("grpc-status 4 after {took:?} (idle_timeout_ms: 300)");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "4");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "took {took:?}"
    );
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["flags"], "SI");
}

/// A body that stays open until its sender is dropped (never, here).
fn futures_channel_body() -> (
    tokio::sync::mpsc::Sender<Bytes>,
    http_body_util::StreamBody<ChanStream>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    (tx, http_body_util::StreamBody::new(ChanStream(rx)))
}

struct ChanStream(tokio::sync::mpsc::Receiver<Bytes>);

impl futures_util::Stream for ChanStream {
    type Item = Result<hyper::body::Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_closed_by_the_upstream_are_not_surfaced() {
    // An upstream that answers one keep-alive response per connection, then closes it
    // without saying so (no `connection: close`): every pooled connection goes stale.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            c2.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Closed without notice.
            });
        }
    });
    let p = Portico::start(&mapping(
        "stale",
        &format!("  prefix: /\n  service: {addr}"),
    ))
    .await;
    for i in 0..20 {
        let r = get(&p.url(&format!("/r{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.text(), "ok");
        // Pacing (the point): the upstream has closed the idle connection by the next one.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        20,
        "each request needed a fresh connection"
    );
    let log = p.wait_log_lines(20).await;
    assert!(log.iter().all(|l| l["flags"] == "-"), "{log:?}");
}

/// An Upstream `pool` over `addrs` (its spec extended by `extra` lines) and a Mapping `m`
/// sending everything to it (its spec extended by `mapping_extra` lines).
fn pool(addrs: &[SocketAddr], extra: &str, mapping_extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: pool }}\nspec:\n  endpoints: [{}]\n{extra}---\n{}",
        list.join(", "),
        mapping(
            "m",
            &format!("  prefix: /\n  service: pool\n{mapping_extra}")
        )
    )
}

/// The `x-request-id`s an upstream saw, with how often each.
fn ids_seen(up: &Scripted) -> std::collections::HashMap<String, usize> {
    let mut m = std::collections::HashMap::new();
    for h in up.seen.lock().expect("lock").iter() {
        let id = h
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_avoid_the_endpoint_that_just_failed() {
    // ring_hash: a key maps to one endpoint every time, so only the avoidance moves its retry
    // elsewhere; random and least_request would send about half the retries back without it.
    for lb in [
        "{ policy: ring_hash, header: x-user }",
        "{ policy: random }",
        "{ policy: least_request }",
    ] {
        let bad = scripted(|_| Step {
            status: 503,
            ..ok()
        })
        .await;
        let good = scripted(|_| ok()).await;
        let p = Portico::start(&pool(
            &[bad.addr, good.addr],
            &format!("  load_balancer: {lb}\n"),
            "  retry_policy: { retry_on: \"5xx\", num_retries: 1 }",
        ))
        .await;
        const N: usize = 60;
        for i in 0..N {
            let (id, user) = (format!("req-{i}"), format!("user-{i}"));
            let r = get(&p.url("/x"), &[("x-request-id", &id), ("x-user", &user)]).await;
            assert_eq!(r.status, 200, "{lb}: request {i}: {}", r.text());
        }
        let (at_bad, at_good) = (ids_seen(&bad), ids_seen(&good));
        eprintln!(
            "{lb}: {N} requests, failing endpoint hit {} times, good one {}",
            bad.hits.load(Ordering::SeqCst),
            good.hits.load(Ordering::SeqCst)
        );
        // The failing endpoint took first attempts (so retries happened) but never a retry.
        assert!(at_bad.len() >= 10, "{lb}: {at_bad:?}");
        assert!(at_bad.values().all(|&n| n == 1), "{lb}: {at_bad:?}");
        assert_eq!(at_good.len(), N, "{lb}");
        assert!(at_good.values().all(|&n| n == 1), "{lb}: {at_good:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_only_unavailable_is_retried_to_success() {
    // Trailers-only answers (HTTP 200, grpc-status in the headers): UNAVAILABLE first, then OK.
    fn flaky(name: &str) -> (Behavior, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let name = name.to_string();
        let b: Behavior = Arc::new(move |_s: &Seen| {
            let i = n2.fetch_add(1, Ordering::SeqCst);
            let mut r = http::Response::new(Full::new(Bytes::new()));
            let h = r.headers_mut();
            h.insert("content-type", "application/grpc".parse().expect("v"));
            h.insert("x-upstream", name.parse().expect("v"));
            if i == 0 {
                h.insert("grpc-status", "14".parse().expect("v"));
                h.insert("grpc-message", "try%20again".parse().expect("v"));
            } else {
                h.insert("grpc-status", "0".parse().expect("v"));
            }
            r
        });
        (b, n)
    }
    let (b, _) = flaky("u");
    let up = Upstream::with("u", b).await;
    let (b, _) = flaky("n");
    let other = Upstream::with("n", b).await;
    let p = Portico::start(&format!(
        "{}{}",
        mapping(
            "retried",
            &format!(
                "  prefix: /u/\n  service: {}\n  grpc: true\n  retry_policy: {{ retry_on: unavailable, num_retries: 1 }}",
                up.addr
            )
        ),
        mapping(
            "other-code",
            &format!(
                "  prefix: /n/\n  service: {}\n  grpc: true\n  retry_policy: {{ retry_on: \"internal,cancelled\", num_retries: 1 }}",
                other.addr
            )
        ),
    ))
    .await;
    let r = grpc_call(&p, "/u/Svc/M", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("0"), "{:?}", r.headers);
    assert_eq!(up.count(), 2);
    let attempts: Vec<String> = up
        .seen
        .lock()
        .expect("lock")
        .iter()
        .map(|s| header_map(&s.headers)["x-portico-attempt-count"].clone())
        .collect();
    assert_eq!(attempts, ["1", "2"]);
    assert!(
        up.seen
            .lock()
            .expect("lock")
            .iter()
            .all(|s| s.version == http::Version::HTTP_2)
    );
    // A policy without `unavailable`: the UNAVAILABLE answer passes through, not retried.
    let r = grpc_call(&p, "/n/Svc/M", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(other.count(), 1);
    let log = p.wait_log_lines(2).await;
    let by_route = |route: &str| {
        log.iter()
            .find(|l| l["route"] == route)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_route("retried")["attempts"], 2);
    assert_eq!(by_route("other-code")["attempts"], 1);
}

/// A body of `n` bytes that is not all one value.
fn patterned(n: usize) -> Bytes {
    (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_up_to_64k_are_replayed_larger_ones_not_retried() {
    // Small: 503, 503, then 200; every try must carry the same 10 KiB.
    let small = scripted(|n| {
        if n < 2 {
            Step {
                status: 503,
                ..ok()
            }
        } else {
            ok()
        }
    })
    .await;
    // Large: the first try fails with 503 after reading the whole body; the second with a
    // closed connection (also after the body). Both would be retried if the body could be.
    let large = scripted(|n| match n {
        0 => Step {
            status: 503,
            ..ok()
        },
        1 => Step {
            reset: true,
            ..ok()
        },
        _ => ok(),
    })
    .await;
    let policy = "  retry_policy: { retry_on: \"5xx,reset\", num_retries: 2 }";
    let p = Portico::start(&format!(
        "{}{}",
        mapping(
            "small",
            &format!("  prefix: /small/\n  service: {}\n{policy}", small.addr)
        ),
        mapping(
            "large",
            &format!("  prefix: /large/\n  service: {}\n{policy}", large.addr)
        ),
    ))
    .await;

    let body = patterned(10 * 1024);
    let r = send(
        request("POST", &p.url("/small/x"), &[], body.clone()),
        false,
    )
    .await
    .expect("post");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(small.hits.load(Ordering::SeqCst), 3);
    let bodies = small.bodies.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 3);
    for (i, b) in bodies.iter().enumerate() {
        assert!(
            *b == body,
            "try {} got {} bytes, not the body",
            i + 1,
            b.len()
        );
    }

    let big = patterned(200 * 1024);
    let r = send(request("POST", &p.url("/large/x"), &[], big.clone()), false)
        .await
        .expect("post");
    assert_eq!(r.status, 503, "the upstream's failure reaches the client");
    assert_eq!(large.hits.load(Ordering::SeqCst), 1, "not retried");
    assert!(
        large.bodies.lock().expect("lock")[0] == big,
        "the body was sent whole"
    );
    let r = send(request("POST", &p.url("/large/y"), &[], big.clone()), false)
        .await
        .expect("post");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(large.hits.load(Ordering::SeqCst), 2, "not retried");
    let log = p.wait_log_lines(3).await;
    let large_lines: Vec<_> = log.iter().filter(|l| l["route"] == "large").collect();
    assert_eq!(large_lines.len(), 2);
    assert!(
        large_lines.iter().all(|l| l["attempts"] == 1),
        "{large_lines:?}"
    );
    assert!(
        large_lines
            .iter()
            .all(|l| l["bytes_received"] == 200 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_never_outlive_the_deadline() {
    let up = scripted(|_| Step {
        delay: Duration::from_millis(100),
        status: 503,
        reset: false,
    })
    .await;
    let p = Portico::start(&mapping(
        "d",
        &format!(
            "  prefix: /\n  service: {}\n  timeout_ms: 300\n  retry_policy: {{ retry_on: \"5xx\", num_retries: 10 }}",
            up.addr
        ),
    ))
    .await;
    let t = Instant::now();
    let r = get(&p.url("/x"), &[]).await;
    let took = t.elapsed();
    let hits = up.hits.load(Ordering::SeqCst);
    let log = p.wait_log_lines(1).await;
    eprintln!(
        "deadline 300 ms, 10 retries allowed: {} after {took:?}, {hits} attempts upstream, flags {}",
        r.status, log[0]["flags"]
    );
    // 100 ms per try plus back-off: at most three tries fit in 300 ms, never ten.
    assert!((1..=3).contains(&hits), "{hits} attempts");
    assert_eq!(log[0]["attempts"], hits);
    // A single try only when the machine was so slow that it left no time for another.
    let first_left = header_ms(
        &up.seen.lock().expect("lock")[0],
        "x-portico-expected-timeout-ms",
    );
    assert!(
        hits >= 2 || first_left < 200,
        "one try with {first_left} ms left"
    );
    assert!(took < Duration::from_millis(450), "{took:?}");
    match r.status.as_u16() {
        // The deadline cut the last try.
        504 => {
            assert_eq!(log[0]["flags"], "UT");
            assert!(took >= Duration::from_millis(300), "{took:?}");
        }
        // The next back-off would have ended past the deadline: the last answer, at once.
        503 => {
            assert_eq!(log[0]["flags"], "URX");
            assert!(took >= Duration::from_millis(200), "{took:?}");
        }
        s => panic!("unexpected {s}"),
    }
}

const OVERFLOWS: &str = "portico_circuit_breaker_overflows_total{upstream=\"pool\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_overflow_is_an_immediate_503() {
    let up = scripted(|_| Step {
        delay: Duration::from_millis(400),
        ..ok()
    })
    .await;
    let p = Portico::start(&pool(
        &[up.addr],
        "  circuit_breakers: { max_connections: 1 }\n",
        "",
    ))
    .await;
    assert_eq!(metric(&p, OVERFLOWS).await, Some(0.0));
    let timed = |url: String| async move {
        let t = Instant::now();
        let r = http_get(&url, &[]).await.expect("request");
        (r, t.elapsed())
    };
    let (a, b) = tokio::join!(timed(p.url("/a")), timed(p.url("/b")));
    let (over, fine) = if a.0.status == 503 { (a, b) } else { (b, a) };
    eprintln!(
        "max_connections 1: {} in {:?}, {} in {:?}",
        fine.0.status, fine.1, over.0.status, over.1
    );
    assert_eq!(fine.0.status, 200);
    assert_eq!(over.0.status, 503);
    assert_eq!(over.0.header("x-portico-overloaded"), Some("true"));
    assert!(
        over.1 < Duration::from_millis(300),
        "not immediate: {:?}",
        over.1
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);
    let log = p.wait_log_lines(2).await;
    assert_eq!(
        log.iter().filter(|l| l["flags"] == "UO").count(),
        1,
        "{log:?}"
    );
    assert_eq!(metric(&p, OVERFLOWS).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_pending_requests_overflow_is_an_immediate_503() {
    // A TLS upstream that accepts connections and never answers the handshake: a connection
    // attempt stays pending until connect_timeout_ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let p = Portico::start(&pool(
        &[addr],
        "  protocol: https\n  tls: { insecure_skip_verify: true }\n  connect_timeout_ms: 800\n  circuit_breakers: { max_pending_requests: 1 }\n",
        "",
    ))
    .await;
    assert_eq!(metric(&p, OVERFLOWS).await, Some(0.0));
    let timed = |url: String| async move {
        let t = Instant::now();
        let r = http_get(&url, &[]).await.expect("request");
        (r, t.elapsed())
    };
    let (a, b) = tokio::join!(timed(p.url("/a")), timed(p.url("/b")));
    let (over, waited) = if a.0.header("x-portico-overloaded").is_some() {
        (a, b)
    } else {
        (b, a)
    };
    eprintln!(
        "max_pending_requests 1: overflow {} in {:?}; pending one {} in {:?}",
        over.0.status, over.1, waited.0.status, waited.1
    );
    assert_eq!(over.0.status, 503);
    assert_eq!(over.0.header("x-portico-overloaded"), Some("true"));
    assert!(
        over.1 < Duration::from_millis(400),
        "not immediate: {:?}",
        over.1
    );
    // The pending one waited for its connect timeout, then failed (UF), without the header.
    assert_eq!(waited.0.status, 503);
    assert_eq!(waited.0.header("x-portico-overloaded"), None);
    assert!(waited.1 >= Duration::from_millis(800), "{:?}", waited.1);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection tried");
    let log = p.wait_log_lines(2).await;
    let mut flags: Vec<String> = log.iter().map(|l| l["flags"].to_string()).collect();
    flags.sort();
    assert_eq!(flags, ["\"UF\"", "\"UO\""], "{log:?}");
    assert_eq!(metric(&p, OVERFLOWS).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_bounds_retries_in_flight_whatever_the_budget() {
    // Everything fails slowly; the budget would allow 100 retries in flight and each request
    // 5 retries, but max_retries (default 3) allows 3 at a time.
    let up = scripted(|_| Step {
        delay: Duration::from_millis(300),
        status: 503,
        reset: false,
    })
    .await;
    let p = Portico::start(&pool(
        &[up.addr],
        "",
        "  retry_policy: { retry_on: \"5xx\", num_retries: 5, retry_budget: { budget_percent: 100, min_retry_concurrency: 100 } }",
    ))
    .await;
    const N: usize = 20;
    let mut tasks = Vec::new();
    for i in 0..N {
        let url = p.url(&format!("/x{i}"));
        tasks.push(tokio::spawn(async move { http_get(&url, &[]).await }));
    }
    for t in tasks {
        let r = t.await.expect("join").expect("request");
        // A retry not made leaves the upstream's answer: no local overflow reply.
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-portico-overloaded"), None);
    }
    let hits = up.hits.load(Ordering::SeqCst);
    let peak = up.retry_peak.load(Ordering::SeqCst);
    let log = p.wait_log_lines(N).await;
    let refused = log
        .iter()
        .filter(|l| l["attempts"].as_u64().is_some_and(|a| a < 6))
        .count();
    eprintln!(
        "{N} requests: {} retries, at most {peak} in flight; {refused} requests had a retry refused",
        hits - N
    );
    assert_eq!(peak, 3, "retries in flight");
    assert!((3..=N * 5).contains(&(hits - N)));
    assert!(log.iter().all(|l| l["flags"] == "URX"), "{log:?}");
    assert!(refused >= N - 3, "{refused}");
    assert_eq!(metric(&p, OVERFLOWS).await, Some(refused as f64));
    assert_eq!(
        metric(&p, "portico_retries_total{route=\"m\"}").await,
        Some((hits - N) as f64)
    );
}

/// An upstream answering `/slow` with ten 100 ms-apart chunks (a stream of ~1 s) and
/// anything else with `ok` at once.
async fn trickling_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<Incoming>| async move {
                    let (tx, body) = futures_channel_body();
                    if req.uri().path() == "/slow" {
                        tokio::spawn(async move {
                            for i in 0..10 {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                if tx.send(Bytes::from(format!("{i}"))).await.is_err() {
                                    return;
                                }
                            }
                        });
                    } else {
                        let _ = tx.try_send(Bytes::from_static(b"ok"));
                    }
                    Ok::<_, Infallible>(http::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// One h2c GET on `client`; the body as text.
async fn h2_get(
    client: h2::client::SendRequest<Bytes>,
    port: u16,
    path: &str,
) -> Result<String, h2::Error> {
    let mut client = client.ready().await?;
    let req = http::Request::get(format!("http://127.0.0.1:{port}{path}"))
        .body(())
        .expect("req");
    let (resp, _) = client.send_request(req, true)?;
    let mut body = resp.await?.into_body();
    let mut text = String::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_are_closed_after_the_keepalive_timeout() {
    let up = trickling_upstream().await;
    let port = free_port();
    let _p = Portico::start_with_listeners(
        &listener_doc("brief", port, "HTTP", "keepalive_timeout_ms: 300"),
        &mapping(
            "trickle",
            &format!("  prefix: /\n  service: {up}\n  timeout_ms: 0"),
        ),
    )
    .await;

    // An h2 connection that served one request and then has nothing open: GOAWAY and close.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let idle_conn = tokio::spawn(conn);
    assert_eq!(
        h2_get(client.clone(), port, "/quick").await.expect("get"),
        "ok"
    );
    let idle_from = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(5), idle_conn).await;
    let idle_for = idle_from.elapsed();
    assert!(ended.is_ok(), "an idle h2 connection stayed open past 5 s");
    eprintln!("idle h2 connection closed after {idle_for:?} (keepalive_timeout_ms: 300)");
    assert!(
        idle_for >= Duration::from_millis(250) && idle_for < Duration::from_millis(1500),
        "closed after {idle_for:?}"
    );
    // The server said goodbye: no new stream on it.
    assert!(h2_get(client, port, "/quick").await.is_err());

    // A connection with a stream open for ~1 s (3x the timeout) is not cut while it streams.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let busy_conn = tokio::spawn(conn);
    let t = Instant::now();
    let body = h2_get(client, port, "/slow")
        .await
        .expect("the long stream");
    let streamed = t.elapsed();
    eprintln!("long stream took {streamed:?}");
    assert_eq!(body, "0123456789");
    assert!(streamed >= Duration::from_millis(900), "{streamed:?}");
    // And once it ended, that connection is idle and closed in turn.
    let ended = tokio::time::timeout(Duration::from_secs(5), busy_conn).await;
    assert!(
        ended.is_ok(),
        "the connection stayed open after its stream ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_bytes_keep_the_idle_timeout_from_firing() {
    // The upstream answers only once the whole body is in; the client sends it a byte every
    // 100 ms for ~1 s (3x the idle timeout). Bytes flowing upstream are traffic: no 408.
    let up = scripted(|_| ok()).await;
    let p = Portico::start(&mapping(
        "upload",
        &format!(
            "  prefix: /\n  service: {}\n  idle_timeout_ms: 300\n  timeout_ms: 0",
            up.addr
        ),
    ))
    .await;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let (chunks, body) = futures_channel_body();
    tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if chunks.send(Bytes::from_static(b"x")).await.is_err() {
                return;
            }
        }
    });
    let req = http::Request::post("/upload")
        .header("host", "x")
        .header("content-length", "10")
        .body(body)
        .expect("request");
    let t = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("no hang")
        .expect("response");
    let took = t.elapsed();
    eprintln!("slow upload answered after {took:?}");
    assert_eq!(resp.status(), 200);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&text[..], b"answer 0");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let log = p.wait_log_lines(1).await;
    assert_eq!(log[0]["flags"], "-");
    assert_eq!(log[0]["bytes_received"], 10);
}
