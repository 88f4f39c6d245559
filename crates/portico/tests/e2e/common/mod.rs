//! Test harness: real `portico` binary, real loopback upstreams (in-process hyper servers),
//! real clients (hyper). Everything binds 127.0.0.1 on ports the test picks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Says on the real stderr that a test skips (part of) what it checks: libtest captures the
/// `eprintln!` of a passing test, but not a direct write, so this shows in every run.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A free loopback port (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

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

/// A running `portico run` process.
pub struct Portico {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub admin: u16,
    pub access_log: PathBuf,
}

pub const API: &str = "apiVersion: portico.dev/v1";

/// A Listener document on `port`.
pub fn listener(port: u16) -> String {
    format!(
        "{API}\nkind: Listener\nmetadata: {{ name: main }}\nspec: {{ address: 127.0.0.1, port: {port} }}\n"
    )
}

impl Portico {
    /// Starts portico with a listener on a free port plus `docs` (YAML documents joined by `---`).
    pub async fn start(docs: &str) -> Portico {
        Self::start_with(docs, &[]).await
    }

    pub async fn start_with(docs: &str, extra_args: &[&str]) -> Portico {
        // `free_port` releases the port before Portico binds it; another test process may
        // take it in between. Then Portico exits at once, and a fresh port is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port();
            let dir = tempfile::tempdir().expect("tempdir");
            let config = dir.path().join("portico.yaml");
            std::fs::write(&config, format!("{}---\n{docs}", listener(port)))
                .expect("write config");
            let mut args: Vec<String> = vec!["-c".into(), config.display().to_string()];
            args.extend(extra_args.iter().map(|a| a.to_string()));
            match Self::try_spawn(dir, config, port, &args).await {
                Ok(p) => return p,
                Err(e) if attempt < 3 && e.contains("in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Runs `portico run ARGS` with the admin, workers and access-log flags added, and waits
    /// until it is ready. Every start helper goes through here.
    async fn spawn(dir: tempfile::TempDir, config: PathBuf, port: u16, args: &[String]) -> Portico {
        match Self::try_spawn(dir, config, port, args).await {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Portico::spawn`], with an early exit returned as an error (its stderr).
    async fn try_spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        port: u16,
        args: &[String],
    ) -> Result<Portico, String> {
        let admin = free_port();
        let access_log = dir.path().join("access.log");
        let child = Command::new(portico_bin())
            .arg("run")
            .args(args)
            .args([
                "--admin",
                &format!("127.0.0.1:{admin}"),
                "--workers",
                "2",
                "--access-log",
            ])
            .arg(&access_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).expect("stderr file"))
            .spawn()
            .expect("spawn portico");
        let mut p = Portico {
            child,
            dir,
            config,
            port,
            admin,
            access_log,
        };
        p.ready().await?;
        Ok(p)
    }

    pub async fn wait_ready(&mut self) {
        if let Err(e) = self.ready().await {
            panic!("{e}");
        }
    }

    /// Waits until `/ready` answers 200; an early exit is an error carrying stderr.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "portico exited early ({status}): {}",
                    self.stderr()
                ));
            }
            if let Ok(r) = http_get(&format!("http://127.0.0.1:{}/ready", self.admin), &[]).await
                && r.status == StatusCode::OK
            {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "portico not ready in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What portico wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// Rewrites the config file (listener kept) without triggering anything else.
    pub fn write_config(&self, docs: &str) {
        let tmp = self.dir.path().join("portico.yaml.tmp");
        std::fs::write(&tmp, format!("{}---\n{docs}", listener(self.port))).expect("write");
        std::fs::rename(&tmp, &self.config).expect("rename");
    }

    /// Access log lines so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the access log until `n` lines are there (the writer is asynchronous).
    pub async fn wait_log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Cl = Client<HttpConnector, Full<Bytes>>;

fn client(h2: bool) -> Cl {
    let mut b = Client::builder(TokioExecutor::new());
    b.pool_idle_timeout(Duration::from_secs(5));
    if h2 {
        b.http2_only(true);
    }
    b.build_http()
}

thread_local! {
    static H1: Cl = client(false);
    static H2: Cl = client(true);
}

pub async fn send(req: Request<Full<Bytes>>, h2: bool) -> Result<Got, String> {
    let c = if h2 {
        H2.with(|c| c.clone())
    } else {
        H1.with(|c| c.clone())
    };
    let fut = c.request(req);
    let resp = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e:?}"))?
        .to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.into())).expect("request")
}

pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<Got, String> {
    send(request("GET", url, headers, Bytes::new()), false).await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    http_get(url, headers).await.expect("request failed")
}

pub async fn post(url: &str, body: &str) -> Got {
    send(request("POST", url, &[], body.to_string()), false)
        .await
        .expect("request failed")
}

/// The value of one series (`name{labels}`, exactly as printed) in the admin `/metrics`.
pub async fn metric(p: &Portico, series: &str) -> Option<f64> {
    let r = get(&p.admin_url("/metrics"), &[]).await;
    r.text().lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|rest| rest.starts_with(' '))
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Header map of a Seen as simple name -> first value strings.
pub fn header_map(h: &HeaderMap) -> HashMap<String, String> {
    h.iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

impl Portico {
    /// Like [`Portico::start`], with more Listener documents (`extra_listeners`, YAML documents
    /// joined by `---`, ending with a newline) after the default HTTP listener on `port`.
    pub async fn start_with_listeners(extra_listeners: &str, docs: &str) -> Portico {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portico.yaml");
        std::fs::write(
            &config,
            format!("{}---\n{extra_listeners}---\n{docs}", listener(port)),
        )
        .expect("write config");
        let args = vec!["-c".to_string(), config.display().to_string()];
        Self::spawn(dir, config, port, &args).await
    }
}

/// A Listener document named `name` on 127.0.0.1:`port` with `protocol` (HTTP, HTTPS,
/// HTTPPROXY, HTTPSPROXY) and extra spec fields (`extra`, e.g. `"http2: false"`, or "").
pub fn listener_doc(name: &str, port: u16, protocol: &str, extra: &str) -> String {
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "{API}\nkind: Listener\nmetadata: {{ name: {name} }}\nspec: {{ address: 127.0.0.1, port: {port}, protocol: {protocol}{extra} }}\n"
    )
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

/// `GET /upstreams`, the endpoints of upstream `name` as (address, state, ejections).
pub async fn endpoint_states(p: &Portico, name: &str) -> Vec<(String, String, u64)> {
    let r = get(&p.admin_url("/upstreams"), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    v["upstreams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|u| u["name"] == name)
        .flat_map(|u| u["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["address"].as_str().unwrap_or("").to_string(),
                e["state"].as_str().unwrap_or("").to_string(),
                e["ejections"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

impl Portico {
    /// Starts `portico run ARGS` (admin, workers and access log added) without writing a
    /// config: for sources the test builds itself (e.g. `--git file://...` plus a `-c` file
    /// holding a Listener on `port`).
    pub async fn start_args(port: u16, args: &[String]) -> Portico {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("portico.yaml");
        Self::spawn(dir, config, port, args).await
    }
}

/// Runs the `portico` binary to completion (`check`, `diff`, ...) in `cwd`:
/// (exit code, stdout, stderr).
pub fn portico_cmd(cwd: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(portico_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run portico");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------- headless Chromium

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

/// `target/` of this build (the test binary lives in `target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Runs headless chromium on `url` with `extra` flags, in a fresh profile and its own process
/// group; killed (whole group) after `BROWSER_TIMEOUT`. Returns stdout.
pub fn chromium(url: &str, extra: &[String]) -> String {
    use std::os::unix::process::CommandExt;
    let profile = tempfile::tempdir().expect("profile dir");
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            profile.path().join("p").display()
        ))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("spawn chromium");
    let pid = child.id();
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait chromium") {
            break Some(st);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        // Timed out: the browser's helpers (zygote, renderer) share its process group; end
        // them all. (Only then: once the browser has been reaped its pid, hence the group id,
        // is no longer ours to signal.)
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stderr(Stdio::null())
            .status();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    match status {
        None => panic!("chromium did not finish within {BROWSER_TIMEOUT:?}; stderr:\n{stderr}"),
        Some(st) if !st.success() => panic!("chromium failed ({st}); stderr:\n{stderr}"),
        Some(_) => std::fs::read_to_string(&out_path).expect("chromium stdout"),
    }
}

/// Sends `prefix` (e.g. a PROXY protocol header) then an HTTP/1.1 `GET path` with
/// `connection: close` on a fresh connection to 127.0.0.1:`port`; returns what came back (empty
/// when the connection was closed without an answer).
pub async fn raw_exchange(port: u16, prefix: &[u8], path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut data = prefix.to_vec();
    data.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nhost: pp.test\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    s.write_all(&data).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// An `Upstream` named `name` over `addrs` (its spec extended by `extra` lines) and a Mapping
/// `m-NAME` sending everything to it.
pub fn upstream_doc(name: &str, addrs: &[&Controlled], extra: &str) -> String {
    let list: Vec<String> = addrs.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "{API}\nkind: Upstream\nmetadata: {{ name: {name} }}\nspec:\n  endpoints: [{}]\n{extra}---\n{API}\nkind: Mapping\nmetadata: {{ name: m-{name} }}\nspec: {{ prefix: /, service: {name} }}\n",
        list.join(", ")
    )
}

/// Three controllable upstreams `a`, `b`, `c`, answering at once.
pub async fn three_controlled() -> Vec<Controlled> {
    vec![
        Controlled::start("a", Duration::ZERO).await,
        Controlled::start("b", Duration::ZERO).await,
        Controlled::start("c", Duration::ZERO).await,
    ]
}

/// The binary under test: the one cargo built for this test run, or `PORTICO_BIN` (e.g. a
/// release build, for timing-sensitive tests run by hand).
pub fn portico_bin() -> std::path::PathBuf {
    std::env::var_os("PORTICO_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portico").into())
}

/// A raw HTTP/2 frame writer and reader, for tests that must see or send frames a well-behaved
/// client library would not (SETTINGS values, WINDOW_UPDATEs, CONTINUATION floods, invalid
/// frames).
pub mod h2raw {
    use std::time::Instant;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub const DATA: u8 = 0;
    pub const HEADERS: u8 = 1;
    pub const RST_STREAM: u8 = 3;
    pub const SETTINGS: u8 = 4;
    pub const GOAWAY: u8 = 7;
    pub const WINDOW_UPDATE: u8 = 8;
    pub const CONTINUATION: u8 = 9;
    pub const END_STREAM: u8 = 1;
    pub const END_HEADERS: u8 = 4;
    pub const ACK: u8 = 1;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const FRAME_SIZE_ERROR: u32 = 6;
    pub const ENHANCE_YOUR_CALM: u32 = 11;
    /// SETTINGS parameter ids (RFC 9113 §6.5.2).
    pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 3;
    pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 4;

    /// One frame: 9-byte header and payload.
    pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(ty);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK: every field as "literal without indexing, new name", no Huffman (names and
    /// values under 128 bytes).
    pub fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            out.push(0);
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// A frame as read: type, flags, stream id, payload.
    #[derive(Debug, Clone)]
    pub struct Frame {
        pub ty: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        /// The (id, value) pairs of a SETTINGS payload.
        pub fn settings(&self) -> Vec<(u16, u32)> {
            self.payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect()
        }

        /// The first 4-byte big-endian word of the payload (31 bits): a WINDOW_UPDATE
        /// increment, an RST_STREAM code or a GOAWAY's last stream id.
        pub fn word(&self, at: usize) -> Option<u32> {
            let b = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }

    /// Reads frames from a socket, buffering partial ones.
    pub struct Reader {
        buf: Vec<u8>,
    }

    impl Default for Reader {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Reader {
        pub fn new() -> Reader {
            Reader { buf: Vec::new() }
        }

        /// The next frame; `None` when the connection closed (or failed) or `deadline` passed.
        pub async fn next<R: AsyncRead + Unpin>(
            &mut self,
            s: &mut R,
            deadline: Instant,
        ) -> Option<Frame> {
            loop {
                if self.buf.len() >= 9 {
                    let len =
                        u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                    if self.buf.len() >= 9 + len {
                        let f = Frame {
                            ty: self.buf[3],
                            flags: self.buf[4],
                            stream: u32::from_be_bytes([
                                self.buf[5],
                                self.buf[6],
                                self.buf[7],
                                self.buf[8],
                            ]) & 0x7fff_ffff,
                            payload: self.buf[9..9 + len].to_vec(),
                        };
                        self.buf.drain(..9 + len);
                        return Some(f);
                    }
                }
                let mut chunk = [0u8; 16 * 1024];
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, s.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                    Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }

    /// Connects and sends the client preface and an empty SETTINGS frame.
    pub async fn open(port: u16) -> TcpStream {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        s.write_all(&out).await.expect("write preface");
        s
    }
}

/// Standard base64 with padding (Kubernetes `Secret` data).
pub fn base64(data: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(data)
}

// ---------------------------------------------------------------- WebSocket

/// A WebSocket echo server; counts the connections it accepted.
pub async fn echo_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a2 = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            a2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(msg)) = futures_util::StreamExt::next(&mut ws).await {
                    let echo = matches!(
                        msg,
                        tokio_tungstenite::tungstenite::Message::Text(_)
                            | tokio_tungstenite::tungstenite::Message::Binary(_)
                    );
                    if matches!(msg, tokio_tungstenite::tungstenite::Message::Close(_))
                        || (echo && futures_util::SinkExt::send(&mut ws, msg).await.is_err())
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

pub async fn ws_connect(
    port: u16,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let url = format!("ws://127.0.0.1:{port}{path}");
    tokio_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
}
