//! Headless Chromium, for the tests that check what a real browser does (CORS, the dashboard).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
/// group; killed (whole group) after `BROWSER_TIMEOUT`. Returns stdout. A run that hangs
/// (headless Chromium occasionally never exits under heavy load, seen once in 20 runs at a
/// load average of 17 on 2 cores) is tried once more with a fresh profile.
pub fn chromium(url: &str, extra: &[String]) -> String {
    match chromium_once(url, extra) {
        Ok(out) => out,
        Err(first) => {
            eprintln!("chromium hung; trying once more. First attempt's stderr:\n{first}");
            chromium_once(url, extra).unwrap_or_else(|stderr| {
                panic!(
                    "chromium did not finish within {BROWSER_TIMEOUT:?}, twice; stderr:\n{stderr}"
                )
            })
        }
    }
}

/// One headless run: stdout, or `Err(stderr)` when it did not finish in time.
fn chromium_once(url: &str, extra: &[String]) -> Result<String, String> {
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
        None => Err(stderr),
        Some(st) if !st.success() => panic!("chromium failed ({st}); stderr:\n{stderr}"),
        Some(_) => Ok(std::fs::read_to_string(&out_path).expect("chromium stdout")),
    }
}
