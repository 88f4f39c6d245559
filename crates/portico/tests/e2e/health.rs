//! Health through the real binary (reference §3.2, §7): outlier ejection and return, active
//! HTTP, gRPC and TCP checks taking endpoints out of rotation and back, the panic threshold, and
//! what `/upstreams` shows.

use crate::common;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn upstream(name: &str, addrs: &[&Controlled], extra: &str) -> String {
    upstream_doc(name, addrs, extra)
}

/// The `/upstreams` state of `addr` in upstream `pool`.
async fn state_of(p: &Portico, u: &Controlled) -> (String, u64) {
    let addr = u.addr.to_string();
    endpoint_states(p, "pool")
        .await
        .into_iter()
        .find(|(a, _, _)| *a == addr)
        .map(|(_, s, e)| (s, e))
        .unwrap_or_default()
}

/// Polls `/upstreams` (every 10 ms, up to `limit`) until `u` is in `state`; the time it took.
async fn wait_state(p: &Portico, u: &Controlled, state: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    let reached = eventually(limit, async || state_of(p, u).await.0 == state).await;
    assert!(
        reached,
        "{} not {state} within {limit:?}: {:?}",
        u.name,
        endpoint_states(p, "pool").await
    );
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejects_returns_and_ejects_again() {
    let u = three_controlled().await;
    u[1].status.store(500, Ordering::SeqCst);
    let p = Portico::start(&upstream(
        "pool",
        &[&u[0], &u[1], &u[2]],
        "  outlier_detection: { consecutive_5xx: 3, base_ejection_time_ms: 1000, interval_ms: 10000 }\n",
    ))
    .await;
    // Round robin: b answers 500 every third request; its third 500 ejects it.
    let mut sent = 0;
    while state_of(&p, &u[1]).await.0 != "ejected" {
        let _ = get(&p.url("/x"), &[]).await;
        sent += 1;
        assert!(sent < 30, "b never ejected");
    }
    let ejected_at = Instant::now();
    assert_eq!(u[1].hits(), 3);
    let mut ok = 0;
    for _ in 0..200 {
        if get(&p.url("/x"), &[]).await.status == 200 {
            ok += 1;
        }
    }
    eprintln!(
        "ejected after {sent} requests; {ok}/200 succeeded next ({:?})",
        ejected_at.elapsed()
    );
    assert!(ok >= 190, "{ok}");
    // Back after base_ejection_time (1 s).
    let back = wait_state(&p, &u[1], "healthy", Duration::from_secs(3)).await;
    let out_for = ejected_at.elapsed();
    eprintln!("back in rotation {out_for:?} after ejection");
    assert!(
        out_for >= Duration::from_millis(900) && out_for < Duration::from_millis(1600),
        "{out_for:?} ({back:?})"
    );
    // Still failing: ejected again (for 2 s this time), twice ejected in all.
    let mut sent = 0;
    while state_of(&p, &u[1]).await.0 != "ejected" {
        let _ = get(&p.url("/x"), &[]).await;
        sent += 1;
        assert!(sent < 30, "b never ejected again");
    }
    let (_, ejections) = state_of(&p, &u[1]).await;
    assert_eq!(ejections, 2);
    let again = Instant::now();
    let back = wait_state(&p, &u[1], "healthy", Duration::from_secs(4)).await;
    eprintln!(
        "re-ejected after {sent} requests; second ejection lasted {:?}",
        again.elapsed()
    );
    assert!(back >= Duration::from_millis(1800), "{back:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&get(&p.admin_url("/upstreams"), &[]).await.body).expect("json");
    assert_eq!(v["upstreams"][0]["ejections_total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_http_health_check_leaves_and_returns() {
    let u = three_controlled().await;
    let p = Portico::start(&upstream(
        "pool",
        &[&u[0], &u[1], &u[2]],
        "  health_checks: [{ path: /healthz, interval_ms: 200, timeout_ms: 100, unhealthy_threshold: 2, healthy_threshold: 3 }]\n",
    ))
    .await;
    // Checks run and pass; all three take traffic.
    wait_until(
        Duration::from_secs(10),
        "no health check arrived",
        async || u[0].health_hits.load(Ordering::SeqCst) >= 1,
    )
    .await;
    for _ in 0..30 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    assert!(u[0].hits() >= 9);

    u[0].health_status.store(503, Ordering::SeqCst);
    let out = wait_state(&p, &u[0], "unhealthy", Duration::from_secs(2)).await;
    eprintln!("unhealthy after {out:?} (threshold 2 x 200 ms)");
    assert!(out <= Duration::from_millis(2 * 220 + 150), "{out:?}");
    let before = u[0].hits();
    for _ in 0..60 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    assert_eq!(u[0].hits(), before, "unhealthy endpoint got traffic");

    // Back only after healthy_threshold (3) passes: not after one or two. Probes counted
    // from before the switch, so every pass is among them.
    let probes_before = u[0].health_hits.load(Ordering::SeqCst);
    u[0].health_status.store(200, Ordering::SeqCst);
    let back = wait_state(&p, &u[0], "healthy", Duration::from_secs(2)).await;
    let probes = u[0].health_hits.load(Ordering::SeqCst) - probes_before;
    eprintln!("healthy again after {back:?} and {probes} probes (threshold 3 x 200 ms)");
    assert!(probes >= 3, "back after {probes} passing probes");
    // The first pass may come at once; the third is two intervals (±10% jitter) later.
    assert!(back >= Duration::from_millis(2 * 180 - 20), "{back:?}");
    assert!(back <= Duration::from_millis(3 * 220 + 150), "{back:?}");
    for _ in 0..30 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    assert!(u[0].hits() >= before + 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_notices_a_dead_endpoint() {
    let mut u = three_controlled().await;
    let p = Portico::start(&upstream(
        "pool",
        &[&u[0], &u[1], &u[2]],
        "  health_checks: [{ tcp: {}, interval_ms: 150, timeout_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }]\n",
    ))
    .await;
    let victim = u.remove(2);
    let addr = victim.addr;
    drop(victim);
    let unhealthy = eventually(Duration::from_secs(2), async || {
        endpoint_states(&p, "pool")
            .await
            .iter()
            .any(|(a, s, _)| *a == addr.to_string() && s == "unhealthy")
    })
    .await;
    assert!(unhealthy, "{:?}", endpoint_states(&p, "pool").await);
    for _ in 0..30 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_panic_threshold_all_endpoints_are_used() {
    let u = three_controlled().await;
    let p = Portico::start(&upstream(
        "pool",
        &[&u[0], &u[1], &u[2]],
        "  health_checks: [{ path: /healthz, interval_ms: 100, timeout_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }]\n",
    ))
    .await;
    // One of three unhealthy (67% available): it gets nothing.
    u[0].health_status.store(500, Ordering::SeqCst);
    wait_state(&p, &u[0], "unhealthy", Duration::from_secs(2)).await;
    let before = u[0].hits();
    for _ in 0..60 {
        let _ = get(&p.url("/x"), &[]).await;
    }
    assert_eq!(u[0].hits(), before);
    // Two of three (33% < 50%): panic mode, all three take traffic.
    u[1].health_status.store(500, Ordering::SeqCst);
    wait_state(&p, &u[1], "unhealthy", Duration::from_secs(2)).await;
    let base: Vec<usize> = u.iter().map(|x| x.hits()).collect();
    for _ in 0..300 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    let got: Vec<usize> = u.iter().zip(&base).map(|(x, b)| x.hits() - b).collect();
    eprintln!("panic mode, 300 requests: {got:?}");
    for g in got {
        assert!(g >= 80, "panic mode should use all endpoints");
    }
}

/// A gRPC health server (h2c): answers `grpc.health.v1.Health/Check` with `serving`
/// (1 = SERVING, 2 = NOT_SERVING) and records the request bodies.
async fn grpc_health_server(
    serving: Arc<AtomicU8>,
    bodies: Arc<Mutex<Vec<(String, Bytes)>>>,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (serving, bodies) = (serving.clone(), bodies.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<Incoming>| {
                    let (serving, bodies) = (serving.clone(), bodies.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        bodies.lock().expect("lock").push((path, body));
                        let msg = vec![0, 0, 0, 0, 2, 0x08, serving.load(Ordering::SeqCst)];
                        let body = Full::new(Bytes::from(msg)).with_trailers(async {
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", http::HeaderValue::from_static("0"));
                            Some(Ok(t))
                        });
                        let mut r = http::Response::new(body);
                        r.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("application/grpc"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_check_follows_serving_status() {
    let serving = Arc::new(AtomicU8::new(1));
    let bodies: Arc<Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let addr = grpc_health_server(serving.clone(), bodies.clone()).await;
    let p = Portico::start(
        &cfg::upstream("pool")
            .endpoints(&[addr])
            .set("protocol", "h2c")
            .raw(
                "health_checks",
                "[{ grpc: { service: quote }, interval_ms: 150, timeout_ms: 100, unhealthy_threshold: 1, healthy_threshold: 1 }]",
            )
            .build(),
    )
    .await;
    let state = || async {
        endpoint_states(&p, "pool")
            .await
            .first()
            .map(|(_, s, _)| s.clone())
            .unwrap_or_default()
    };
    // The first check answered, and the endpoint is healthy.
    wait_until(
        Duration::from_secs(10),
        "no health check arrived",
        async || !bodies.lock().expect("lock").is_empty(),
    )
    .await;
    wait_until(Duration::from_secs(10), "never healthy", async || {
        state().await == "healthy"
    })
    .await;
    assert_eq!(state().await, "healthy");
    {
        let seen = bodies.lock().expect("lock");
        assert!(!seen.is_empty());
        assert_eq!(seen[0].0, "/grpc.health.v1.Health/Check");
        assert_eq!(&seen[0].1[..], b"\0\0\0\0\x07\x0a\x05quote");
    }
    serving.store(2, Ordering::SeqCst);
    wait_until(Duration::from_secs(2), "never unhealthy", async || {
        state().await == "unhealthy"
    })
    .await;
    serving.store(1, Ordering::SeqCst);
    wait_until(Duration::from_secs(2), "never healthy again", async || {
        state().await == "healthy"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ejection_survive_a_reload_that_changes_settings() {
    let u = three_controlled().await;
    // One of three left available is 33%: a panic threshold of 30 keeps panic mode off.
    let checks = "  health_checks: [{ path: /healthz, interval_ms: 200, timeout_ms: 100, unhealthy_threshold: 2, healthy_threshold: 2 }]\n  outlier_detection: { consecutive_5xx: 3, base_ejection_time_ms: 5000 }\n  load_balancer: { healthy_panic_threshold: 30 }\n";
    let p = Portico::start(&upstream("pool", &[&u[0], &u[1], &u[2]], checks)).await;
    u[0].health_status.store(503, Ordering::SeqCst);
    u[1].status.store(500, Ordering::SeqCst);
    wait_state(&p, &u[0], "unhealthy", Duration::from_secs(2)).await;
    let mut sent = 0;
    while state_of(&p, &u[1]).await.0 != "ejected" {
        let _ = get(&p.url("/x"), &[]).await;
        sent += 1;
        assert!(sent < 40, "b never ejected");
    }
    // New settings (a circuit breaker): a new upstream state, same endpoints.
    p.write_config(&upstream(
        "pool",
        &[&u[0], &u[1], &u[2]],
        &format!("{checks}  circuit_breakers: {{ max_requests: 500 }}\n"),
    ));
    let r = post(&p.admin_url("/reload"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let states = endpoint_states(&p, "pool").await;
    assert_eq!(states[0].1, "unhealthy", "{states:?}");
    assert_eq!(states[1].1, "ejected", "{states:?}");
    assert_eq!(states[2].1, "healthy", "{states:?}");
    let before = (u[0].hits(), u[1].hits());
    for _ in 0..30 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    assert_eq!((u[0].hits(), u[1].hits()), before);
    // The new state's checks bring a back.
    u[0].health_status.store(200, Ordering::SeqCst);
    wait_state(&p, &u[0], "healthy", Duration::from_secs(2)).await;
}

/// A loopback address nothing listens on: connecting to it is refused.
fn refusing_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// An Upstream `pool` over `addrs` with `extra` spec lines, and a Mapping sending `/` to it.
fn pool_of(addrs: &[std::net::SocketAddr], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: pool }}\nspec:\n  endpoints: [{}]\n{extra}---\n{API}\nkind: Mapping\nmetadata: {{ name: m-pool }}\nspec: {{ prefix: /, service: pool }}\n",
        list.join(", ")
    )
}

/// `/upstreams` states of `addrs`, in order.
async fn states_of(p: &Portico, addrs: &[std::net::SocketAddr]) -> Vec<String> {
    let all = endpoint_states(p, "pool").await;
    addrs
        .iter()
        .map(|a| {
            all.iter()
                .find(|(x, _, _)| *x == a.to_string())
                .map(|(_, s, _)| s.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_eject_by_consecutive_gateway_failure() {
    // Two endpoints, one refusing connections. consecutive_5xx is out of reach, so only
    // consecutive_gateway_failure (3) can eject; max_ejection_percent 10 of 2 endpoints is 0,
    // but one endpoint can always be ejected while another is available (docs/reference.md §3.2).
    let good = Controlled::start("good", Duration::ZERO).await;
    let dead = refusing_addr();
    let p = Portico::start(&pool_of(
        &[good.addr, dead],
        "  outlier_detection: { consecutive_5xx: 1000, consecutive_gateway_failure: 3, base_ejection_time_ms: 30000, max_ejection_percent: 10 }\n",
    ))
    .await;
    let mut sent = 0;
    while states_of(&p, &[dead]).await[0] != "ejected" {
        // Connect failures fail over to the good endpoint: the client never sees them.
        let r = get(&p.url("/x"), &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        sent += 1;
        assert!(
            sent < 40,
            "never ejected: {:?}",
            endpoint_states(&p, "pool").await
        );
    }
    eprintln!("refusing endpoint ejected after {sent} requests");
    // Round robin: every other request tried it first; the third failure ejects.
    assert!(sent >= 3, "ejected after {sent} requests");
    assert_eq!(states_of(&p, &[good.addr]).await, ["healthy"]);
    assert_eq!(
        metric(&p, "portico_outlier_ejections_total{upstream=\"pool\"}").await,
        Some(1.0)
    );
    // Out of rotation: no more connect attempts to it.
    let failures = "portico_upstream_connect_failures_total{upstream=\"pool\"}";
    let before = metric(&p, failures).await;
    for _ in 0..20 {
        assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    }
    assert_eq!(metric(&p, failures).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ejection_percent_limits_ejections() {
    // Four endpoints, three refusing; 50% may be ejected: two are, the third stays in.
    let good = Controlled::start("good", Duration::ZERO).await;
    let dead = [refusing_addr(), refusing_addr(), refusing_addr()];
    let addrs = [good.addr, dead[0], dead[1], dead[2]];
    let p = Portico::start(&pool_of(
        &addrs,
        "  outlier_detection: { consecutive_gateway_failure: 2, base_ejection_time_ms: 30000, max_ejection_percent: 50 }\n",
    ))
    .await;
    let ejected = |s: &[String]| s.iter().filter(|x| *x == "ejected").count();
    let mut sent = 0;
    loop {
        let s = states_of(&p, &dead).await;
        if ejected(&s) == 2 {
            break;
        }
        let _ = get(&p.url("/x"), &[]).await;
        sent += 1;
        assert!(sent < 100, "not ejected: {s:?}");
    }
    // Keep sending: the third refusing endpoint keeps failing, and stays in.
    let mut ok = 0;
    for _ in 0..60 {
        if get(&p.url("/x"), &[]).await.status == 200 {
            ok += 1;
        }
    }
    let s = states_of(&p, &addrs).await;
    eprintln!("after {sent} + 60 requests ({ok} ok): {s:?}");
    assert_eq!(ejected(&s), 2, "{s:?}");
    assert_eq!(s[0], "healthy");
    assert_eq!(ok, 60, "failover reaches the good endpoint");
    assert_eq!(
        metric(&p, "portico_outlier_ejections_total{upstream=\"pool\"}").await,
        Some(2.0)
    );
}
