//! Test harness: real `portico` binary, real loopback upstreams (in-process hyper servers),
//! real clients (hyper). Everything binds 127.0.0.1 on ports the test picks.
//!
//! By role: `upstreams` (recording and controllable backends), `process` (the Portico
//! process: start, readiness, logs, signals), `clients` (HTTP requests, admin API readers),
//! `cfg` (the YAML documents, built by a typed builder), `h2raw` (raw HTTP/2 frames),
//! `websocket`, `browser` (headless Chromium), `envoy` (`portico xds` and the real Envoy; used as
//! `common::envoy::*` by the xDS tests). Everything but `h2raw` is re-exported here,
//! so a test module says `use crate::common::*;`.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

pub mod browser;
pub mod cfg;
pub mod clients;
pub mod envoy;
pub mod h2raw;
pub mod process;
pub mod upstreams;
pub mod websocket;

pub use browser::*;
pub use cfg::{API, listener, listener_doc, upstream_doc};
pub use clients::*;
pub use process::*;
pub use upstreams::*;
pub use websocket::*;

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

/// Standard base64 with padding (Kubernetes `Secret` data).
pub fn base64(data: &[u8]) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(data)
}

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds or `within` has passed; whether it held. For waits whose
/// failure the caller reports itself (with the state it saw).
pub async fn eventually(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it holds; panics with `what` if it still does not after `within`.
/// The time it took.
pub async fn wait_until(within: Duration, what: &str, cond: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    assert!(eventually(within, cond).await, "{what} (waited {within:?})");
    start.elapsed()
}

/// Polls `f` until it returns a value; panics with `what` after `within`.
pub async fn poll_for<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} (waited {within:?})");
        tokio::time::sleep(POLL).await;
    }
}
