//! Rate limiting end to end (reference §4, §4.1): local token buckets in one process, and
//! global limits through `portico ratelimit` servers sharing a real Redis (`redis-server` must
//! be installed: the Redis tests skip with a message otherwise), and the real Envoy binary
//! speaking to `portico ratelimit` (set `ENVOY_BIN`; `scripts/test.sh` fetches it).

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::future::join_all;
use portico_ratelimit::proto::{
    Code, RateLimitRequest, RateLimitResponse, ceil_secs, descriptor, entry, should_rate_limit,
};

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

/// The value of the unlabelled or fully labelled series `series` (e.g.
/// `portico_rate_limit_service_errors_total`) in a Prometheus text answer; panics when the series
/// is missing, so a test cannot pass on a metric that is not there.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("series {series} missing from the metrics:\n{text}"))
}

async fn service_errors(p: &Portico) -> u64 {
    let text = get(&p.admin_url("/metrics"), &[]).await.text();
    metric(&text, "portico_rate_limit_service_errors_total")
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

    // The point: the next one-second window refills the bucket.
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
pub(crate) struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A redis-server of this test's own. `free_port` can hand two tests starting at once the
    /// same port; the Redis answering on it must be the one spawned here (its `process_id`),
    /// or two tests would count in one store. Otherwise: again on another port.
    pub(crate) fn start() -> Option<Redis> {
        for _ in 0..5 {
            let r = Self::start_once()?;
            if r.is_ours() {
                return Some(r);
            }
        }
        panic!("no redis-server of this test's own after 5 ports");
    }

    fn is_ours(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        if s.write_all(b"INFO server\r\n").is_err() {
            return false;
        }
        let want = format!("process_id:{}\r\n", self.child.id());
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if text.contains(&want) {
                return true;
            }
            if text.contains("process_id:") && text.contains("\r\n\r\n") {
                return false;
            }
        }
        false
    }

    fn start_once() -> Option<Redis> {
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
                skipped(
                    "Redis tests",
                    &format!(
                        "redis-server not available ({e}); install it (apt-get install redis-server)"
                    ),
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

    /// Freezes the server (SIGSTOP): connections stay open and nothing is answered, as with a
    /// hung Redis. It runs again when the guard is dropped, also when the test fails.
    fn pause(&self) -> Paused {
        let pid = self.child.id();
        let ok = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -STOP {pid} failed");
        Paused(pid)
    }
}

/// A `redis-server` stopped with SIGSTOP; SIGCONT on drop.
struct Paused(u32);

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
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
pub(crate) struct RlServer {
    child: Child,
    pub(crate) port: u16,
}

impl RlServer {
    pub(crate) fn start(redis: &Redis, rules: &Path) -> RlServer {
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

const RULES: &str = "domain: portico\ndescriptors:\n  - key: generic_key\n    value: api\n    rate_limit:\n      unit: minute\n      requests_per_unit: 100\n  - key: generic_key\n    value: addend\n    rate_limit: { unit: minute, requests_per_unit: 10 }\n  - key: remote_address\n    rate_limit: { unit: minute, requests_per_unit: 5 }\n";

fn rules_file(dir: &Path) -> PathBuf {
    let f = dir.join("rules.yaml");
    std::fs::write(&f, RULES).expect("write rules");
    f
}

pub(crate) fn rls_doc(port: u16, timeout_ms: u64, deny: bool) -> String {
    format!(
        "{API}\nkind: RateLimitService\nmetadata: {{ name: rls }}\nspec:\n  service: 127.0.0.1:{port}\n  domain: portico\n  timeout_ms: {timeout_ms}\n  failure_mode_deny: {deny}\n"
    )
}

/// A gRPC channel to a `portico ratelimit` server (tonic, h2c).
async fn rls_channel(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to portico ratelimit")
}

fn one_descriptor(entries: &[(&str, &str)], hits_addend: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "portico".into(),
        descriptors: vec![descriptor(
            entries.iter().map(|(k, v)| entry(*k, *v)).collect(),
        )],
        hits_addend,
    }
}

async fn call(ch: &tonic::transport::Channel, req: RateLimitRequest) -> RateLimitResponse {
    tokio::time::timeout(Duration::from_secs(5), should_rate_limit(ch.clone(), req))
        .await
        .expect("ShouldRateLimit answered within 5 s")
        .expect("ShouldRateLimit succeeded")
}

/// A TCP listener on a free loopback port that accepts connections and never answers (a hung
/// rate limit service). Counts what it accepted; stops on drop.
struct Silent {
    port: u16,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
        Silent {
            port,
            accepted,
            task,
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until the current minute has at least `need` seconds left (fixed windows).
pub(crate) async fn fresh_window(need: u64) {
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
    // Exactly the ten requests sent while Redis was down failed (the eight before did not).
    let log = open.wait_log_lines(18).await;
    let rlse = log.iter().filter(|l| l["flags"] == "RLSE").count();
    assert_eq!(rlse, 10, "RLSE lines in the access log");
    assert_eq!(service_errors(&open).await, 10, "open: service errors");
    assert_eq!(service_errors(&closed).await, 10, "closed: service errors");

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

#[tokio::test]
async fn ratelimit_server_counts_hits_addend() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RlServer::start(&redis, &rules_file(dir.path()));
    let ch = rls_channel(server.port).await;
    fresh_window(10).await;
    let addend = [("generic_key", "addend")];

    // Limit 10/minute: two calls with hits_addend 5 use it up.
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let r = call(&ch, one_descriptor(&addend, 5)).await;
        assert_eq!(r.overall_code, Code::Ok as i32, "{r:?}");
        let st = &r.statuses[0];
        assert_eq!(
            st.current_limit.as_ref().map(|l| l.requests_per_unit),
            Some(10)
        );
        remaining.push(st.limit_remaining);
    }
    assert_eq!(
        remaining,
        [5, 0],
        "limit_remaining after each call of 5 hits"
    );

    // Exhausted: one more hit is over the limit.
    let r = call(&ch, one_descriptor(&addend, 1)).await;
    assert_eq!(r.overall_code, Code::OverLimit as i32, "{r:?}");
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let reset = r.statuses[0]
        .duration_until_reset
        .expect("duration_until_reset");
    assert!((1..=60).contains(&ceil_secs(&reset)), "{reset:?}");

    // hits_addend 0 counts as 1 (as in Envoy), on a descriptor of its own.
    let r = call(&ch, one_descriptor(&[("remote_address", "192.0.2.1")], 0)).await;
    assert_eq!(r.statuses[0].limit_remaining, 4, "5/minute less one hit");
    eprintln!("hits_addend 5 twice against 10/minute: limit_remaining {remaining:?}, then over");
}

/// Answer times, sorted.
struct Timings(Vec<Duration>);

impl Timings {
    fn worst(&self) -> Duration {
        self.0.last().copied().unwrap_or_default()
    }
    fn median(&self) -> Duration {
        self.0.get(self.0.len() / 2).copied().unwrap_or_default()
    }
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "median {:?}, slowest {:?}", self.median(), self.worst())
    }
}

/// Sends `n` GETs one after another to each of `open` and `closed`, checks their statuses and
/// that each is answered within `bound`; returns the answer times.
async fn timed_requests(
    open: &Portico,
    closed: &Portico,
    n: usize,
    bound: Duration,
) -> (Timings, Timings) {
    let (mut t_open, mut t_closed) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let g = get(&open.url("/"), &[]).await;
        t_open.push(t.elapsed());
        assert_eq!(g.status, 200, "failure_mode_deny: false lets it through");
        let t = Instant::now();
        let g = get(&closed.url("/"), &[]).await;
        t_closed.push(t.elapsed());
        assert_eq!(g.status, 429, "failure_mode_deny: true refuses (docs: 429)");
    }
    t_open.sort();
    t_closed.sort();
    let (t_open, t_closed) = (Timings(t_open), Timings(t_closed));
    assert!(t_open.worst() < bound, "fail-open answers: {t_open}");
    assert!(t_closed.worst() < bound, "fail-closed answers: {t_closed}");
    (t_open, t_closed)
}

/// The last `n` access log lines of `p` (waiting for `total` lines in all) all carry `flags`
/// RLSE and `status`.
async fn last_lines_rlse(p: &Portico, total: usize, n: usize, status: u16) {
    let log = p.wait_log_lines(total).await;
    assert_eq!(log.len(), total, "access log lines");
    for l in &log[total - n..] {
        assert_eq!(l["flags"], "RLSE", "{l}");
        assert_eq!(l["status"], status, "{l}");
    }
}

/// Sends GETs until one is answered without a service error (the gRPC channel is up and the
/// service answers within `timeout_ms`); returns how many were sent.
async fn until_service_answers(p: &Portico) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 0;
    loop {
        let before = service_errors(p).await;
        get(&p.url("/"), &[]).await;
        sent += 1;
        if service_errors(p).await == before {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "the service never answered in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn global_limit_with_redis_hung_fails_open_or_closed_within_the_timeout() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RlServer::start(&redis, &rules_file(dir.path()));
    let up = Upstream::start("a").await;
    let rl = "    - key: [generic:api]\n      scope: global\n";
    let m = mapping("api", "/", &up.addr.to_string(), rl);
    let open = Portico::start(&format!("{}---\n{m}", rls_doc(server.port, 20, false))).await;
    let closed = Portico::start(&format!("{}---\n{m}", rls_doc(server.port, 20, true))).await;
    // (No fixed-window wait: this test stays far below the 100/minute of generic_key=api.)
    let ch = rls_channel(server.port).await;

    // Everything up: the service answers within 20 ms (a loaded machine may miss a few).
    let warm_open = until_service_answers(&open).await;
    let warm_closed = until_service_answers(&closed).await;
    let (base_open, base_closed) = (service_errors(&open).await, service_errors(&closed).await);
    let api = [("generic_key", "api")];
    assert_eq!(
        call(&ch, one_descriptor(&api, 1)).await.overall_code,
        Code::Ok as i32
    );

    let paused = redis.pause();
    // `portico ratelimit` itself answers UNAVAILABLE within its Redis timeout (100 ms).
    let mut worst_server = Duration::ZERO;
    for _ in 0..3 {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            should_rate_limit(ch.clone(), one_descriptor(&api, 1)),
        )
        .await
        .expect("portico ratelimit hung on a hung Redis");
        worst_server = worst_server.max(t.elapsed());
        let status = r.expect_err("no count without Redis");
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    assert!(
        worst_server < Duration::from_millis(1000),
        "portico ratelimit took {worst_server:?} to give up on Redis"
    );

    let n = 10;
    // timeout_ms 20 plus slack for a debug build on a loaded machine.
    let (t_open, t_closed) = timed_requests(&open, &closed, n, Duration::from_millis(500)).await;
    last_lines_rlse(&open, warm_open + n, n, 200).await;
    last_lines_rlse(&closed, warm_closed + n, n, 429).await;
    assert_eq!(service_errors(&open).await, base_open + n as u64);
    assert_eq!(service_errors(&closed).await, base_closed + n as u64);

    // Redis back: answers again without errors.
    drop(paused);
    until_service_answers(&open).await;
    eprintln!(
        "Redis paused, timeout_ms 20: fail-open {t_open}; fail-closed {t_closed}; \
         portico ratelimit answered UNAVAILABLE within {worst_server:?}"
    );
}

#[tokio::test]
async fn global_limit_with_a_service_that_never_answers_fails_within_the_timeout() {
    let silent = Silent::start().await;
    let up = Upstream::start("a").await;
    let rl = "    - key: [remote_address]\n      scope: global\n";
    let m = mapping("by-ip", "/", &up.addr.to_string(), rl);
    let open = Portico::start(&format!("{}---\n{m}", rls_doc(silent.port, 20, false))).await;
    let closed = Portico::start(&format!("{}---\n{m}", rls_doc(silent.port, 20, true))).await;

    let n = 10;
    // timeout_ms 20 plus slack for a debug build on a loaded machine.
    let (t_open, t_closed) = timed_requests(&open, &closed, n, Duration::from_millis(500)).await;
    assert!(
        silent.accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "both proxies connected to the service"
    );
    last_lines_rlse(&open, n, n, 200).await;
    last_lines_rlse(&closed, n, n, 429).await;
    assert_eq!(service_errors(&open).await, n as u64);
    assert_eq!(service_errors(&closed).await, n as u64);
    assert_eq!(
        up.count(),
        n,
        "only the fail-open requests reached the upstream"
    );
    eprintln!(
        "service accepts and never answers, timeout_ms 20: fail-open {t_open}; fail-closed {t_closed}"
    );
}

#[tokio::test]
async fn local_limit_keys_on_the_proxy_protocol_client_address() {
    let up = Upstream::start("a").await;
    let pp_port = free_port();
    let rl = "    - key: [remote_address]\n      requests_per_unit: 1\n      unit: hour\n      burst: 2\n";
    let p = Portico::start_with_listeners(
        &listener_doc("pp", pp_port, "HTTPPROXY", ""),
        &mapping("by-ip", "/", &up.addr.to_string(), rl),
    )
    .await;
    // Every connection comes from 127.0.0.1; the PROXY header names the client.
    for src in ["203.0.113.1", "203.0.113.2"] {
        let header = format!("PROXY TCP4 {src} 127.0.0.1 5555 80\r\n");
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = raw_exchange(pp_port, header.as_bytes(), "/").await;
            statuses.push(r.get(9..12).unwrap_or_default().to_string());
        }
        assert_eq!(statuses, ["200", "200", "429"], "client {src}");
    }
    // The TCP peer itself, on the plain listener, has a bucket of its own.
    assert_eq!(count(&burst(&p.url("/"), 3, &[]).await, 200), 2);
    let log = p.wait_log_lines(9).await;
    for src in ["203.0.113.1", "203.0.113.2", "127.0.0.1"] {
        let flags: Vec<&str> = log
            .iter()
            .filter(|l| l["client"] == src)
            .filter_map(|l| l["flags"].as_str())
            .collect();
        assert_eq!(flags.len(), 3, "{src}: {log:?}");
        assert_eq!(flags.iter().filter(|f| **f == "RL").count(), 1, "{src}");
    }
}

// ------------------------------------------------------------------------ Envoy

#[tokio::test]
async fn envoy_enforces_the_same_limit_through_portico_ratelimit() {
    let Some(envoy) =
        crate::common::envoy::need_envoy("envoy_enforces_the_same_limit_through_portico_ratelimit")
    else {
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
                      timeout: 10s
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
    // The rest are 429s. Envoy answers 500 when a check fails (`failure_mode_deny`); on a
    // loaded machine one check in 150 once did, even though the server was up: allow two.
    let others: Vec<u16> = got
        .iter()
        .map(|g| g.status.as_u16())
        .filter(|s| *s != 200 && *s != 429)
        .collect();
    assert!(
        others.len() <= 2,
        "statuses besides 200 and 429: {others:?}"
    );
    assert_eq!(count(&got, 429), 150 - ok - others.len());
}

/// The phase order: route → CORS preflight → (auth) → rate limits. A preflight that Portico
/// answers itself never reaches the rate limits: it neither spends a token nor gets a 429,
/// while the route's actual requests are limited as before.
#[tokio::test]
async fn cors_preflights_are_answered_before_rate_limits() {
    let up = Upstream::start("a").await;
    let doc = format!(
        "{API}\nkind: Mapping\nmetadata: {{ name: limited }}\nspec:\n  prefix: /\n  service: {}\n  cors: {{ origins: [\"https://app.example.com\"], methods: [GET, POST] }}\n  rate_limits:\n    - key: [remote_address]\n      requests_per_unit: 1\n      unit: minute\n      burst: 1\n",
        up.addr
    );
    let p = Portico::start(&doc).await;
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
    ];
    for i in 0..5 {
        let got = send(request("OPTIONS", &p.url("/x"), &preflight, ""), false)
            .await
            .expect("preflight");
        assert_eq!(got.status, 204, "preflight {i} was not answered by CORS");
    }
    // The one token is still there for the actual request; the next one is limited.
    assert_eq!(get(&p.url("/x"), &[]).await.status, 200);
    assert_eq!(get(&p.url("/x"), &[]).await.status, 429);
}
