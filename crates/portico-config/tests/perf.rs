//! Load + compile time of a large config (CONTRACT/issue 2: 10,000 Mappings in under 1 s).

mod common;

use std::fmt::Write;
use std::time::Instant;

fn big_config(n: usize) -> String {
    let mut text = String::with_capacity(n * 160);
    text.push_str("apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {name: pool}\nspec:\n  endpoints: [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]\n");
    for i in 0..n {
        let _ = write!(
            text,
            "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata:\n  name: route-{i}\nspec:\n  prefix: /svc/{i}/api/\n  service: pool\n  rewrite: /\n  timeout_ms: 5000\n"
        );
    }
    text
}

/// Ignored by default because the 1 s budget is only meaningful in release mode:
/// `cargo test --release -p portico-config -- --ignored`.
#[test]
#[ignore = "timing test; run in release mode with --ignored"]
fn ten_thousand_mappings_load_in_under_a_second() {
    let text = big_config(10_000);
    let t = Instant::now();
    let docs = portico_config::node::parse_documents(&text)
        .map(|d| d.len())
        .unwrap_or_default();
    eprintln!("YAML parse alone: {:?} ({docs} documents)", t.elapsed());
    let start = Instant::now();
    let r = common::load_text(&text);
    let elapsed = start.elapsed();
    assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.first());
    let s = r.snapshot.expect("snapshot");
    assert_eq!(s.routes.len(), 10_000);
    assert_eq!(s.upstreams.len(), 1);
    eprintln!("10,000 Mappings: load + compile + route index in {elapsed:?}");
    assert!(elapsed.as_millis() < 1000, "took {elapsed:?}");
}

/// A smaller version that always runs (correctness of a big config, not timing).
#[test]
fn many_mappings_compile() {
    let r = common::load_text(&big_config(300));
    assert!(r.diagnostics.is_empty());
    let s = r.snapshot.expect("snapshot");
    assert_eq!(s.routes.len(), 300);
    // Longer prefixes first: /svc/100/api/ (3 digits) before /svc/10/api/.
    assert_eq!(s.routes[0].name, "route-100");
}
