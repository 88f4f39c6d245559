//! Fuzz target: the route index. A fixed config (exact, wildcard and catch-all hosts; prefix,
//! exact, regex and case-insensitive paths; methods, headers, queries, a canary group) is
//! compiled once; fuzzed requests go through `Router::first_match` and `Router::lookup`, and the
//! index must agree with the linear scan of `Router::explain` (never panic, never disagree).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use portico_config::{ConfigSource, RequestView, Snapshot, load};

const CONFIG: &str = r#"apiVersion: portico.dev/v1
kind: Listener
metadata: { name: main }
spec: { address: 127.0.0.1, port: 8080 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: api-exact-host }
spec: { hostname: api.example.com, prefix: /v1/, service: 127.0.0.1:1 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: wildcard }
spec: { hostname: "*.example.com", prefix: /v1/users, service: 127.0.0.1:2 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: deep-wildcard }
spec: { hostname: "*.a.example.com", prefix: /, service: 127.0.0.1:3 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: exact-path }
spec: { prefix: /health, prefix_exact: true, service: 127.0.0.1:4 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: regex-path }
spec: { prefix: "/items/[0-9]+/detail", prefix_regex: true, service: 127.0.0.1:5 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: nocase }
spec: { prefix: /Static/, case_sensitive: false, service: 127.0.0.1:6 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: nocase-regex }
spec: { prefix: "/ci/[a-z]+", prefix_regex: true, case_sensitive: false, service: 127.0.0.1:7 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: post-only }
spec: { prefix: /v1/, method: POST, service: 127.0.0.1:8 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: header-canary }
spec: { prefix: /v1/, headers: { x-canary: "1" }, service: 127.0.0.1:9 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: header-present }
spec: { prefix: /v1/, headers: { x-present: "" }, regex_headers: { user-agent: ".*Mobile.*" }, service: 127.0.0.1:10 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: query }
spec: { prefix: /search, query_parameters: { v: "2" }, regex_query_parameters: { q: "[a-z%]+" }, service: 127.0.0.1:11 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: precedence }
spec: { prefix: /p, precedence: 10, service: 127.0.0.1:12 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: canary-a }
spec: { prefix: /canary/, weight: 20, service: 127.0.0.1:13 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: canary-b }
spec: { prefix: /canary/, service: 127.0.0.1:14 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: unicode }
spec: { prefix: "/ünï/", service: 127.0.0.1:15 }
---
apiVersion: portico.dev/v1
kind: Mapping
metadata: { name: catch-all }
spec: { prefix: /, service: 127.0.0.1:16 }
"#;

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let r = load(&[ConfigSource::Inline {
            name: "router.yaml".into(),
            text: CONFIG.into(),
            base_dir: PathBuf::from("/nonexistent-portico-fuzz"),
        }]);
        match r.snapshot {
            Some(s) => s,
            None => panic!("fixed config invalid: {:?}", r.diagnostics),
        }
    })
}

#[derive(Debug, Arbitrary)]
struct Req {
    method: u8,
    custom_method: Vec<u8>,
    host: String,
    path: String,
    query: Option<String>,
    headers: Vec<(u8, Vec<u8>)>,
}

const NAMES: [&str; 5] = ["x-canary", "x-present", "user-agent", "host", "x-other"];

fuzz_target!(|req: Req| {
    let snap = snapshot();
    let method = match req.method % 8 {
        0 => Method::GET,
        1 => Method::POST,
        2 => Method::PUT,
        3 => Method::DELETE,
        4 => Method::HEAD,
        5 => Method::OPTIONS,
        6 => Method::PATCH,
        _ => Method::from_bytes(&req.custom_method).unwrap_or(Method::GET),
    };
    let mut headers = HeaderMap::new();
    for (n, v) in &req.headers {
        let name = HeaderName::from_static(NAMES[*n as usize % NAMES.len()]);
        if let Ok(v) = HeaderValue::from_bytes(v) {
            headers.append(name, v);
        }
    }
    // The handler lowercases the authority and strips its port before routing.
    let host = req.host.to_ascii_lowercase();
    let view = RequestView {
        host: &host,
        authority: &req.host,
        path: &req.path,
        query: req.query.as_deref(),
        method: &method,
        headers: &headers,
    };
    let fast = snap.router.first_match(&view);
    let slow = snap.router.explain(&view).chosen;
    assert_eq!(fast, slow, "index and linear scan disagree for {req:?}");
    if let Some(route) = snap.router.lookup(&view) {
        // The weighted pick stays inside the matched canary group.
        let first = fast.unwrap_or(usize::MAX);
        assert_eq!(snap.routes[route.id].group, first);
    } else {
        assert!(fast.is_none());
    }
});
