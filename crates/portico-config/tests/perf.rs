//! Load + compile time of a large config (issue 2: 10,000 Mappings in under 1 s; issue 16:
//! 10,000 Mappings in 100 files).

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

/// Writes `files` files of `per_file` Mappings each (the first file also has the Upstream) into
/// a fresh directory.
fn write_split_config(tag: &str, files: usize, per_file: usize) -> std::path::PathBuf {
    let dir = common::tmp_dir(tag);
    for f in 0..files {
        let mut text = String::with_capacity(per_file * 170);
        if f == 0 {
            text.push_str("apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {name: pool}\nspec:\n  endpoints: [\"10.0.0.1:8080\", \"10.0.0.2:8080\"]\n");
        }
        for k in 0..per_file {
            let i = f * per_file + k;
            let _ = write!(
                text,
                "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata:\n  name: route-{i}\nspec:\n  prefix: /svc/{i}/api/\n  service: pool\n  rewrite: /\n  timeout_ms: 5000\n"
            );
        }
        std::fs::write(dir.join(format!("m{f:03}.yaml")), text).expect("write config");
    }
    dir
}

fn median(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[v.len() / 2]
}

/// Issue 16: 10,000 Mappings in 100 files, read from a directory, as a reload does. The
/// reload target is 200 ms from the file change to the swap (median of 5, 2 cores); this bound
/// is generous so that it cannot flake on a loaded machine. Prints each stage.
#[test]
#[ignore = "timing test; run in release mode with --ignored"]
fn ten_thousand_mappings_in_a_hundred_files_load_fast() {
    let dir = write_split_config("split-100", 100, 100);
    let sources = [portico_config::ConfigSource::Path(dir.clone())];
    let mut totals = Vec::new();
    for round in 0..5 {
        let r = portico_config::load(&sources);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.first());
        let s = r.snapshot.expect("snapshot");
        assert_eq!(s.routes.len(), 10_000);
        eprintln!("100 files, cold, round {round}: {}", r.timings);
        totals.push(r.timings.total);
    }
    let cold = median(totals);
    eprintln!("10,000 Mappings in 100 files: median of 5 {cold:?}");

    // A reload after one file changed: the other 99 are reused from the cache.
    let cache = portico_config::ParseCache::new();
    let first = portico_config::load_cached(&sources, &cache);
    assert!(first.snapshot.is_some());
    let file = dir.join("m042.yaml");
    let original = std::fs::read_to_string(&file).expect("read");
    let mut totals = Vec::new();
    for round in 0..5 {
        let text = original.replace("timeout_ms: 5000", &format!("timeout_ms: {}", 6000 + round));
        std::fs::write(&file, text).expect("write config");
        let r = portico_config::load_cached(&sources, &cache);
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics.first());
        assert_eq!(r.snapshot.map(|s| s.routes.len()), Some(10_000));
        assert_eq!((r.timings.files_parsed, r.timings.files_reused), (1, 99));
        eprintln!("100 files, one changed, round {round}: {}", r.timings);
        totals.push(r.timings.total);
    }
    let warm = median(totals);
    eprintln!("10,000 Mappings in 100 files, one changed: median of 5 {warm:?}");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(cold.as_millis() < 600, "took {cold:?}");
    assert!(warm.as_millis() < 400, "took {warm:?}");
}

/// 10,000 Mappings of mixed shapes: every 10th on its own hostname, every 20th on a wildcard
/// hostname, every 7th needing a header, every 13th a method, every 17th an exact path.
fn mixed_config(n: usize) -> String {
    let mut text = String::with_capacity(n * 200);
    text.push_str("apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {name: pool}\nspec:\n  endpoints: [\"10.0.0.1:8080\"]\n");
    for i in 0..n {
        let _ = write!(
            text,
            "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata:\n  name: route-{i}\nspec:\n  prefix: /svc/{i}/api/\n  service: pool\n"
        );
        if i % 10 == 3 {
            let _ = writeln!(text, "  hostname: svc{i}.example.com");
        } else if i % 20 == 5 {
            text.push_str("  hostname: \"*.example.com\"\n");
        }
        if i % 7 == 0 {
            let _ = writeln!(text, "  headers: {{ x-tenant: t{i} }}");
        }
        if i % 13 == 0 {
            text.push_str("  method: GET\n");
        }
        if i % 17 == 0 {
            text.push_str("  prefix_exact: true\n");
        }
    }
    text
}

/// Issue 2: route lookup p50 under 2 µs with 10,000 Mappings. Each lookup is timed on its own
/// (the clock costs ~20 ns, counted against us); requests cycle through a route late in match
/// order, a hostname-specific one, a header match, and a request no route takes.
#[test]
#[ignore = "timing test; run in release mode with --ignored"]
fn ten_thousand_mappings_route_lookup_p50_under_two_microseconds() {
    use http::{HeaderMap, HeaderValue, Method};
    use portico_config::router::RequestView;

    let r = common::load_text(&mixed_config(10_000));
    assert!(
        r.diagnostics
            .iter()
            .all(|d| d.severity != portico_config::Severity::Error),
        "{:?}",
        r.diagnostics.first()
    );
    let s = r.snapshot.expect("snapshot");
    assert_eq!(s.routes.len(), 10_000);
    let none = HeaderMap::new();
    let mut tenant = HeaderMap::new();
    tenant.insert("x-tenant", HeaderValue::from_static("t9989"));
    let cases: Vec<(&str, String, &HeaderMap, Option<&str>)> = vec![
        (
            "client.example.org",
            "/svc/1/api/items/42".into(),
            &none,
            Some("route-1"),
        ),
        (
            "svc9993.example.com",
            "/svc/9993/api/x".into(),
            &none,
            Some("route-9993"),
        ),
        (
            "client.example.org",
            "/svc/9989/api/x".into(),
            &tenant,
            Some("route-9989"),
        ),
        (
            "a.example.com",
            "/svc/9985/api/".into(),
            &none,
            Some("route-9985"),
        ),
        ("client.example.org", "/nothing/here".into(), &none, None),
    ];
    let views: Vec<(RequestView<'_>, Option<&str>)> = cases
        .iter()
        .map(|(host, path, headers, want)| {
            (
                RequestView {
                    host,
                    authority: host,
                    path,
                    query: None,
                    method: &Method::GET,
                    headers,
                },
                *want,
            )
        })
        .collect();
    for (v, want) in &views {
        let got = s.router.lookup(v).map(|r| r.name.as_str());
        assert_eq!(got, *want, "{} {}", v.host, v.path);
    }
    let mut samples = Vec::with_capacity(50_000);
    for i in 0..50_000 {
        let (v, _) = &views[i % views.len()];
        let t = Instant::now();
        std::hint::black_box(s.router.lookup(std::hint::black_box(v)));
        samples.push(t.elapsed());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    eprintln!("route lookup over 10,000 Mappings: p50 {p50:?}, p99 {p99:?}");
    assert!(p50.as_nanos() < 2_000, "p50 {p50:?}");
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
