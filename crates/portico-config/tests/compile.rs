//! Compilation into the snapshot: match order, canary groups, service resolution, defaults.

mod common;

use std::time::Duration;

use common::*;
use portico_config::snapshot::*;

fn names(s: &Snapshot) -> Vec<&str> {
    s.routes.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn routes_are_sorted_in_match_order() {
    let text = [
        mapping("short", "  prefix: /a/\n  service: a:1\n"),
        mapping("long", "  prefix: /a/b/c/\n  service: a:1\n"),
        mapping("regex", "  prefix: \"/a/[0-9]+\"\n  prefix_regex: true\n  service: a:1\n"),
        mapping("exact", "  prefix: /a/\n  prefix_exact: true\n  service: a:1\n"),
        mapping("prec", "  prefix: /\n  precedence: 10\n  service: a:1\n"),
        mapping("host-exact", "  hostname: api.example.com\n  prefix: /\n  service: a:1\n"),
        mapping("host-wild-long", "  hostname: \"*.api.example.com\"\n  prefix: /\n  service: a:1\n"),
        mapping("host-wild", "  hostname: \"*.com\"\n  prefix: /\n  service: a:1\n"),
        mapping("hdr", "  prefix: /a/\n  headers: {x-a: \"1\"}\n  service: a:1\n"),
        mapping("hdr2", "  prefix: /a/\n  headers: {x-a: \"1\"}\n  regex_headers: {x-b: \".*\"}\n  service: a:1\n"),
        mapping("query", "  prefix: /a/\n  query_parameters: {v: \"2\"}\n  service: a:1\n"),
        mapping("method", "  prefix: /a/\n  method: GET\n  service: a:1\n"),
        mapping("neg", "  prefix: /a/b/c/d/e/f/\n  precedence: -1\n  service: a:1\n"),
    ]
    .concat();
    let s = clean(&text);
    assert_eq!(
        names(&s),
        vec![
            "prec",
            "host-exact",
            "host-wild-long",
            "host-wild",
            "exact",
            "regex",
            "long",
            "hdr2",
            "hdr",
            "query",
            "method",
            "short",
            "neg",
        ]
    );
    for (i, r) in s.routes.iter().enumerate() {
        assert_eq!(r.id, i);
        assert_eq!(r.group, i, "no canary groups here");
        assert_eq!(r.effective_weight, 100.0);
    }
}

#[test]
fn canary_groups_are_adjacent_with_effective_weights() {
    let text = [
        mapping("a", "  prefix: /c/\n  service: a:1\n  weight: 20\n"),
        mapping("other", "  prefix: /d/\n  service: a:1\n"),
        mapping("b", "  prefix: /c/\n  service: b:1\n"),
        mapping("c", "  prefix: /c/\n  service: c:1\n"),
        mapping(
            "d",
            "  prefix: /C/\n  case_sensitive: false\n  service: d:1\n",
        ),
        mapping("w1", "  prefix: /w/\n  service: a:1\n  weight: 10\n"),
        mapping("w2", "  prefix: /w/\n  service: b:1\n  weight: 30\n"),
    ]
    .concat();
    let s = clean(&text);
    let got: Vec<(&str, usize, usize, f64)> = s
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.id, r.group, r.effective_weight))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 0, 0, 20.0),
            ("b", 1, 0, 40.0),
            ("c", 2, 0, 40.0),
            ("other", 3, 3, 100.0),
            // case-insensitive prefix is a different group (stored lowercase)
            ("d", 4, 4, 100.0),
            // all weighted, under 100: scaled to 100
            ("w1", 5, 5, 25.0),
            ("w2", 6, 5, 75.0),
        ]
    );
    match &s.routes[4].path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => {
            assert_eq!(prefix, "/c/");
            assert!(!case_sensitive);
        }
        other => panic!("{other:?}"),
    }
    let w = warnings(&text);
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn service_resolution_and_implicit_upstreams() {
    let text = [
        "apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {name: pool}\nspec:\n  endpoints: [\"10.0.0.1:80\", {address: \"10.0.0.2:80\", weight: 2}]\n".to_string(),
        mapping("a", "  prefix: /a\n  service: quote:8080\n"),
        mapping("b", "  prefix: /b\n  service: http://quote:8080\n"),
        mapping("c", "  prefix: /c\n  service: https://quote:8443\n"),
        mapping("d", "  prefix: /d\n  service: 127.0.0.1:9000\n  grpc: true\n"),
        mapping("e", "  prefix: /e\n  service: pool\n"),
        mapping("f", "  prefix: /f\n  service: \"[::1]:81\"\n"),
        mapping("g", "  prefix: /g\n  service: https://secure\n"),
        mapping("h", "  prefix: /h\n  service: quote:8080\n  grpc: true\n"),
    ]
    .concat();
    let s = clean(&text);
    let up = |route: &str| {
        let r = s.routes.iter().find(|r| r.name == route).expect("route");
        &s.upstreams[r.upstream().expect("forward")]
    };
    assert_eq!(up("e").name, "pool");
    assert_eq!(
        up("e").endpoints,
        EndpointSource::Static(vec![
            EndpointConf {
                address: "10.0.0.1:80".into(),
                weight: 1
            },
            EndpointConf {
                address: "10.0.0.2:80".into(),
                weight: 2
            },
        ])
    );
    assert_eq!(up("a").id, up("b").id, "deduplicated");
    assert_eq!(up("a").name, "quote:8080");
    assert_eq!(up("a").protocol, UpstreamProtocol::Http1);
    assert_eq!(
        up("a").endpoints,
        EndpointSource::Dns {
            host: "quote".into(),
            port: 8080,
            refresh: Duration::from_secs(5)
        }
    );
    assert_eq!(up("c").protocol, UpstreamProtocol::Https);
    assert_eq!(
        up("c").tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("quote")
    );
    assert_eq!(up("d").protocol, UpstreamProtocol::H2c);
    assert_eq!(
        up("d").endpoints,
        EndpointSource::Static(vec![EndpointConf {
            address: "127.0.0.1:9000".into(),
            weight: 1
        }])
    );
    assert_eq!(up("f").name, "[::1]:81");
    assert_eq!(up("g").name, "secure:443");
    // Same host:port, other protocol: a separate upstream with a distinct name.
    assert_ne!(up("h").id, up("a").id);
    assert_eq!(up("h").name, "h2c://quote:8080");
    for (i, u) in s.upstreams.iter().enumerate() {
        assert_eq!(u.id, i);
        assert_eq!(u.connect_timeout, Duration::from_millis(3000));
        assert_eq!(u.max_idle_connections_per_endpoint, 64);
        assert_eq!(u.idle_connection_timeout, Duration::from_millis(60_000));
    }
}

#[test]
fn mapping_fields_compile() {
    let spec = r#"  hostname: "*.Example.com"
  prefix: /API/
  case_sensitive: false
  method: POST
  headers: {x-canary: "1", x-present: ""}
  regex_headers: {user-agent: ".*Mobile.*"}
  query_parameters: {v: 2}
  regex_query_parameters: {q: "a+"}
  precedence: 3
  service: quote:8080
  regex_rewrite: {pattern: "^/api/(.*)$", substitution: "/v2/\\1$"}
  host_rewrite: quote.internal
  add_request_headers: {x-edge: portico, x-replace: {value: "1", append: false}}
  remove_request_headers: [cookie]
  add_response_headers: {strict-transport-security: "max-age=31536000"}
  remove_response_headers: server
  timeout_ms: 0
  idle_timeout_ms: 1000
  connect_timeout_ms: 250
  grpc_timeout_max_ms: 5000
  allow_upgrade: [WebSocket]
  retry_policy:
    retry_on: "5xx,connect-failure,reset"
    num_retries: 2
    per_try_timeout_ms: 500
    retriable_status_codes: [409]
    retry_budget: {budget_percent: 30, min_retry_concurrency: 5}
  circuit_breakers: {max_connections: 10, max_retries: 1}
  load_balancer: {policy: ring_hash, cookie: {name: sticky, ttl_ms: 60000}, healthy_panic_threshold: 30, slow_start_window_ms: 2000}
  health_checks:
    - {path: /healthz, expected_statuses: [200, "300-399"], interval_ms: 2000}
    - grpc: {service: quote}
    - tcp: {}
  outlier_detection: {consecutive_5xx: 3}
  rate_limits:
    - key: [remote_address, "header:x-user", "generic:api", path, method]
      requests_per_unit: 100
      unit: minute
  cors: {origins: ["https://app.example.com", "https://*.example.org"], methods: [GET, POST], headers: [content-type], credentials: true, max_age: 600}
  shadow: {service: "quote-next:8080", percent: 10}
  compression: {min_bytes: 10}
"#;
    let s = clean(&mapping("full", spec));
    let r = &s.routes[0];
    assert_eq!(r.hostname, HostGlob::Suffix(".example.com".into()));
    assert!(
        matches!(&r.path, PathMatch::Prefix { prefix, case_sensitive: false } if prefix == "/api/")
    );
    assert_eq!(r.method, Some(http::Method::POST));
    assert_eq!(r.headers.len(), 3);
    assert!(matches!(r.headers[1].value, ValueMatch::Present));
    assert!(
        matches!(&r.headers[2].value, ValueMatch::Regex(re) if re.as_str() == "^(?:.*Mobile.*)$")
    );
    assert!(matches!(&r.query[0].value, ValueMatch::Exact(v) if v == "2"));
    assert_eq!(r.precedence, 3);
    match &r.rewrite {
        Rewrite::Regex {
            regex,
            substitution,
        } => {
            assert_eq!(substitution, "/v2/${1}$$");
            assert_eq!(regex.replace("/api/x/y", substitution.as_str()), "/v2/x/y$");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.host_rewrite
            .as_ref()
            .map(|h| h.to_str().unwrap_or_default()),
        Some("quote.internal")
    );
    assert_eq!(r.add_request_headers.len(), 2);
    assert!(r.add_request_headers[0].append);
    assert!(!r.add_request_headers[1].append);
    assert_eq!(r.remove_response_headers.len(), 1);
    assert_eq!(r.timeout, None);
    assert_eq!(r.idle_timeout, Some(Duration::from_millis(1000)));
    assert_eq!(r.grpc_timeout_max, Some(Duration::from_millis(5000)));
    assert_eq!(r.allow_upgrade, vec!["websocket"]);
    let retry = r.retry.as_ref().expect("retry");
    assert!(retry.retry_on.has(RetryOn::FIVE_XX) && retry.retry_on.has(RetryOn::RESET));
    assert!(retry.retry_on.has(RetryOn::RETRIABLE_STATUS_CODES));
    assert_eq!(retry.num_retries, 2);
    assert_eq!(retry.retriable_status_codes, vec![409]);
    assert_eq!(retry.budget_percent, 30.0);
    assert_eq!(r.rate_limits[0].key.len(), 5);
    assert_eq!(r.rate_limits[0].burst, 100);
    assert_eq!(r.rate_limits[0].unit, RateLimitUnit::Minute);
    let cors = r.cors.as_ref().expect("cors");
    assert!(
        matches!(&cors.origins[1], OriginMatch::Glob(re) if re.is_match("https://a.b.example.org") && !re.is_match("https://example.org"))
    );
    let shadow = r.shadow.as_ref().expect("shadow");
    assert_eq!(s.upstreams[shadow.upstream].name, "quote-next:8080");
    assert_eq!(r.compression.as_ref().map(|c| c.min_bytes), Some(10));

    let u = &s.upstreams[r.upstream().expect("forward")];
    assert_eq!(u.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        u.circuit_breakers,
        CircuitBreakerConf {
            max_connections: 10,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 1
        }
    );
    assert_eq!(u.lb.policy, LbPolicy::RingHash);
    assert_eq!(
        u.lb.hash_on,
        Some(HashOn::Cookie {
            name: "sticky".into(),
            ttl: Some(Duration::from_secs(60))
        })
    );
    assert_eq!(u.lb.healthy_panic_threshold, 30);
    assert_eq!(u.health_checks.len(), 3);
    assert!(
        matches!(&u.health_checks[0].kind, HealthCheckKind::Http { expected_statuses, .. } if expected_statuses == &vec![(200, 200), (300, 399)])
    );
    assert!(
        matches!(&u.health_checks[1].kind, HealthCheckKind::Grpc { service: Some(s) } if s == "quote")
    );
    assert!(matches!(u.health_checks[2].kind, HealthCheckKind::Tcp));
    assert_eq!(u.outlier.as_ref().map(|o| o.consecutive_5xx), Some(3));
    // the shadow upstream does not get the Mapping's upstream-level settings
    assert_eq!(
        s.upstreams[shadow.upstream].connect_timeout,
        Duration::from_millis(3000)
    );
}

#[test]
fn defaults() {
    let s = clean(&mapping("m", "  prefix: /\n  service: a:1\n"));
    let r = &s.routes[0];
    assert_eq!(r.hostname, HostGlob::Any);
    assert_eq!(r.timeout, Some(Duration::from_millis(15_000)));
    assert_eq!(r.idle_timeout, Some(Duration::from_millis(300_000)));
    assert!(matches!(r.rewrite, Rewrite::None));
    assert!(r.retry.is_none());
    assert_eq!(r.file, "t.yaml");
    assert_eq!(r.line, 2);
    // No Listener: one HTTP listener on 0.0.0.0:8080
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].name, "default");
    assert_eq!(s.listeners[0].address.to_string(), "0.0.0.0");
    assert_eq!(s.listeners[0].port, 8080);
    assert!(s.listeners[0].http2);
    assert_eq!(s.resources.len(), 1);
    assert_eq!(s.resources[0].status, "applied");
    assert!(s.rate_limit_service.is_none());
}

#[test]
fn regex_paths_and_exact_paths() {
    let text = [
        mapping("re", "  prefix: \"/users/[0-9]+\"\n  prefix_regex: true\n  case_sensitive: false\n  service: a:1\n  rewrite: /user\n"),
        mapping("ex", "  prefix: /Exact\n  prefix_exact: true\n  service: a:1\n"),
    ]
    .concat();
    let s = clean(&text);
    let re = s.routes.iter().find(|r| r.name == "re").expect("re");
    assert!(re.path.matches("/USERS/12"));
    assert!(!re.path.matches("/users/12/x"));
    assert!(matches!(&re.rewrite, Rewrite::Prefix(p) if p == "/user"));
    let ex = s.routes.iter().find(|r| r.name == "ex").expect("ex");
    assert!(
        matches!(&ex.path, PathMatch::Exact { path, case_sensitive: true } if path == "/Exact")
    );
}

#[test]
fn listeners_hosts_and_rate_limit_service() {
    let dir = tmp_dir("lhr");
    for f in ["a.pem", "a.key", "ca.pem"] {
        std::fs::write(dir.join(f), "x").expect("write");
    }
    let text = "\
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: https}
spec: {port: 8443, protocol: HTTPS, http2: false, max_connections: 10, trust_forwarded: true}
---
apiVersion: portico.dev/v1
kind: Host
metadata: {name: any}
spec: {hostname: \"*\"}
---
apiVersion: portico.dev/v1
kind: Host
metadata: {name: wild}
spec: {hostname: \"*.example.com\", requestPolicy: {insecure: {action: Reject}}}
---
apiVersion: portico.dev/v1
kind: Host
metadata: {name: api}
spec:
  hostname: api.example.com
  tls: {cert_chain_file: a.pem, private_key_file: a.key, ca_file: ca.pem, min_tls_version: v1.3, alpn_protocols: \"http/1.1\"}
---
apiVersion: portico.dev/v1
kind: RateLimitService
metadata: {name: rls}
spec: {service: \"rls.internal:8081\", domain: edge, failure_mode_deny: true}
";
    std::fs::write(dir.join("c.yaml"), text).expect("write");
    let r = portico_config::load(&[portico_config::ConfigSource::Path(dir.join("c.yaml"))]);
    assert!(r.diagnostics.is_empty(), "{:#?}", r.diagnostics);
    let s = r.snapshot.expect("snapshot");
    assert_eq!(s.listeners[0].protocol, ListenerProtocol::Https);
    assert!(!s.listeners[0].http2 && s.listeners[0].trust_forwarded);
    let hosts: Vec<&str> = s.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, vec!["api", "wild", "any"]);
    assert_eq!(s.hosts[1].insecure, InsecureAction::Reject);
    assert_eq!(s.hosts[0].insecure, InsecureAction::Redirect);
    let tls = s.hosts[0].tls.as_ref().expect("tls");
    assert_eq!(tls.min_tls_version, TlsVersion::V1_3);
    assert_eq!(tls.alpn_protocols, vec!["http/1.1"]);
    assert!(tls.ca_file.is_some());
    let rls = s.rate_limit_service.as_ref().expect("rls");
    assert_eq!(rls.domain, "edge");
    assert!(rls.failure_mode_deny);
    assert_eq!(rls.timeout, Duration::from_millis(20));
    assert_eq!(s.upstreams[rls.upstream].protocol, UpstreamProtocol::H2c);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn upstream_resource_dns_and_tls() {
    let text = "\
apiVersion: portico.dev/v1
kind: Upstream
metadata: {name: u}
spec:
  dns: Quote.internal:8443
  dns_refresh_ms: 1000
  protocol: auto
  max_idle_connections_per_endpoint: 8
  idle_connection_timeout_ms: 1000
";
    let text = format!("{text}{}", mapping("m", "  prefix: /\n  service: u\n"));
    let s = clean(&text);
    let u = &s.upstreams[0];
    assert_eq!(
        u.endpoints,
        EndpointSource::Dns {
            host: "quote.internal".into(),
            port: 8443,
            refresh: Duration::from_secs(1)
        }
    );
    assert_eq!(u.protocol, UpstreamProtocol::Auto);
    assert_eq!(
        u.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("quote.internal")
    );
    assert_eq!(u.max_idle_connections_per_endpoint, 8);
}

#[test]
fn listener_limits_defaults_and_values() {
    let text = "\
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: plain}
spec: {port: 8080}
---
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: tuned}
spec:
  port: 8081
  max_request_headers_kb: 8
  max_headers_count: 20
  max_uri_bytes: 2048
  max_concurrent_streams: 10
  initial_stream_window_bytes: 65535
  initial_connection_window_bytes: 2147483647
  header_read_timeout_ms: 2000
  request_body_idle_timeout_ms: 0
  keepalive_timeout_ms: 0
---
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: brief}
spec:
  port: 8082
  keepalive_timeout_ms: 5000
";
    let text = format!(
        "{text}{}{}",
        mapping(
            "capped",
            "  prefix: /a/\n  service: a:80\n  max_request_body_bytes: 1048576\n"
        ),
        mapping(
            "free",
            "  prefix: /b/\n  service: a:80\n  max_request_body_bytes: 0\n"
        ),
    );
    let s = clean(&text);
    let plain = s
        .listeners
        .iter()
        .find(|l| l.name == "plain")
        .expect("plain");
    assert_eq!(plain.limits, ListenerLimits::default());
    assert_eq!(plain.limits.max_request_headers_bytes, 60 * 1024);
    assert_eq!(plain.limits.max_headers_count, 100);
    assert_eq!(plain.limits.max_uri_bytes, 8192);
    assert_eq!(plain.limits.max_concurrent_streams, 100);
    assert_eq!(plain.limits.initial_stream_window_bytes, 1024 * 1024);
    assert_eq!(
        plain.limits.initial_connection_window_bytes,
        2 * 1024 * 1024
    );
    assert_eq!(plain.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(
        plain.limits.request_body_idle_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        plain.limits.keepalive_timeout,
        Some(Duration::from_secs(75))
    );
    let brief = s
        .listeners
        .iter()
        .find(|l| l.name == "brief")
        .expect("brief");
    assert_eq!(brief.limits.keepalive_timeout, Some(Duration::from_secs(5)));
    let tuned = s
        .listeners
        .iter()
        .find(|l| l.name == "tuned")
        .expect("tuned");
    assert_eq!(
        tuned.limits,
        ListenerLimits {
            max_request_headers_bytes: 8 * 1024,
            max_headers_count: 20,
            max_uri_bytes: 2048,
            max_concurrent_streams: 10,
            initial_stream_window_bytes: 65_535,
            initial_connection_window_bytes: 2_147_483_647,
            header_read_timeout: Duration::from_secs(2),
            request_body_idle_timeout: None,
            keepalive_timeout: None,
        }
    );
    let route = |n: &str| s.routes.iter().find(|r| r.name == n).expect("route");
    assert_eq!(route("capped").max_request_body, Some(1_048_576));
    assert_eq!(route("free").max_request_body, None);
}

/// Files are parsed in parallel and, with a `ParseCache`, reused when unchanged: the
/// diagnostics (errors in several files, a duplicate name across files, foreign kinds warned
/// once over all files) and the routes must be exactly those of a plain load, cold and warm.
#[test]
fn cached_and_parallel_loads_match_a_plain_load() {
    use portico_config::{ConfigSource, ParseCache, load, load_cached};
    let dir = tmp_dir("cache-agree");
    let m = |name: &str, prefix: &str| {
        format!(
            "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ prefix: {prefix}, service: a:80 }}\n"
        )
    };
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d }\n";
    let files = [
        ("a.yaml", format!("{}---\n{deploy}", m("one", "/one/"))),
        ("b.yaml", format!("{deploy}---\n{}", m("one", "/dup/"))),
        ("c.yaml", "key: [unclosed\n".to_string()),
        (
            "d.yaml",
            format!(
                "{}---\n{}",
                m("bad", "/x/").replace("a:80", "a:99999"),
                m("two", "/two/")
            ),
        ),
        (
            "e.yaml",
            m("three", "/three/").replace("a:80", "a:80, timeout_ms: fast"),
        ),
    ];
    for (name, text) in &files {
        std::fs::write(dir.join(name), text).expect("write config");
    }
    let sources = [ConfigSource::Path(dir.clone())];
    let plain = load(&sources);
    let text = |r: &portico_config::LoadResult| -> Vec<String> {
        r.diagnostics.iter().map(|d| d.to_string()).collect()
    };
    assert!(plain.diagnostics.len() >= 4, "{:?}", text(&plain));
    let cache = ParseCache::new();
    for round in 0..3 {
        let r = load_cached(&sources, &cache);
        assert_eq!(text(&r), text(&plain), "round {round}");
        assert_eq!(r.timings.files_reused, if round == 0 { 0 } else { 5 });
    }
    // Fix the broken files one by one: the others stay reused, the result matches a plain load.
    std::fs::write(dir.join("c.yaml"), m("four", "/four/")).expect("write config");
    std::fs::write(dir.join("b.yaml"), m("five", "/five/")).expect("write config");
    let warm = load_cached(&sources, &cache);
    let plain = load(&sources);
    assert_eq!(text(&warm), text(&plain));
    assert_eq!(
        (warm.timings.files_parsed, warm.timings.files_reused),
        (2, 3)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `http3` (reference §10): off by default, only on HTTPS listeners, with its handshake
/// threshold (default 1000, at least 1).
#[test]
fn listener_http3_defaults_and_rules() {
    let s = clean(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 8080}\n",
    );
    assert!(!s.listeners[0].http3);
    assert_eq!(s.listeners[0].http3_max_handshakes, 1000);
    // (A warning only: no Host has tls, so the listener serves a self-signed certificate.)
    let s = load_text(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 8443, protocol: HTTPS, http3: true, http3_max_handshakes: 5}\n",
    )
    .snapshot
    .expect("snapshot");
    assert!(s.listeners[0].http3);
    assert_eq!(s.listeners[0].http3_max_handshakes, 5);
    let e = errors(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 8080, http3: true}\n",
    );
    assert!(
        e.iter().any(|m| m.contains("http3 needs protocol: HTTPS")),
        "{e:?}"
    );
    let e = errors(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 8443, protocol: HTTPS, http3: true, http3_max_handshakes: 0}\n",
    );
    assert!(
        e.iter().any(|m| m.contains("http3_max_handshakes")),
        "{e:?}"
    );
}
