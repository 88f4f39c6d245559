//! The `portico` process under test: start (with a config), readiness, its logs, signals,
//! reloads by file, and one-shot runs of the CLI.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use super::cfg::listener;
use super::clients::http_get;
use super::free_port;

/// A running `portico run` process.
pub struct Portico {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    pub admin: u16,
    pub access_log: PathBuf,
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

/// The binary under test: the one cargo built for this test run, or `PORTICO_BIN` (e.g. a
/// release build, for timing-sensitive tests run by hand).
pub fn portico_bin() -> std::path::PathBuf {
    std::env::var_os("PORTICO_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_portico").into())
}
