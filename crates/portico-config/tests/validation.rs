//! Every validation rule of the config, with exact positions.

mod common;

use common::*;
use portico_config::{ConfigSource, Diagnostic, Severity, load};

const FIVE_MISTAKES: &str = "\
apiVersion: portico.dev/v1
kind: Listener
metadata: { name: main }
spec:
  port: 80
  protcol: HTTP
---
apiVersion: portico.dev/v1
kind: Mapping
metadata:
  name: quote
spec:
  prefix: /quote/
  service: quote:8080
  timeout_ms: soon
  method: get
---
apiVersion: portico.dev/v1
kind: Mapping
metadata:
  name: legacy
spec:
  prefix: \"/v1/(.*\"
  prefix_regex: true
  service: nothing-here
---
apiVersion: portico.dev/v1
kind: Upstream
metadata:
  name: pool
spec:
  endpoints: [\"10.0.0.1:80\"]
";

#[test]
fn five_mistakes_are_all_reported_with_exact_positions() {
    let r = load_text(FIVE_MISTAKES);
    let got: Vec<(u32, u32, &str, &str)> = r
        .diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.kind.as_str(), d.name.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (6, 3, "Listener", "main"),
            (15, 15, "Mapping", "quote"),
            (16, 11, "Mapping", "quote"),
            (23, 11, "Mapping", "legacy"),
            (25, 12, "Mapping", "legacy"),
        ],
        "{:#?}",
        r.diagnostics
    );
    assert!(r.diagnostics.iter().all(Diagnostic::is_error));
    assert!(r.snapshot.is_none());
    let text: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        text[0],
        "t.yaml:6:3: Listener/main: unknown field `protcol` (did you mean `protocol`?)"
    );
    assert!(
        text[1].contains(
            "timeout_ms: expected an integer number of milliseconds, found the string \"soon\""
        ),
        "{}",
        text[1]
    );
    assert!(text[2].contains("invalid method `get`"), "{}", text[2]);
    assert!(text[3].contains("invalid regex"), "{}", text[3]);
    assert!(text[4].contains("names no Upstream"), "{}", text[4]);

    // The JSON form is valid JSON with the documented fields.
    let json = serde_json::to_string(&r.diagnostics).expect("serialize");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 5);
    assert_eq!(arr[0]["file"], "t.yaml");
    assert_eq!(arr[0]["line"], 6);
    assert_eq!(arr[0]["column"], 3);
    assert_eq!(arr[0]["kind"], "Listener");
    assert_eq!(arr[0]["name"], "main");
    assert_eq!(arr[0]["severity"], "error");
    let empty: Vec<Diagnostic> = Vec::new();
    assert_eq!(serde_json::to_string(&empty).unwrap_or_default(), "[]");
}

#[test]
fn default_config_loads_clean() {
    let r = load(&[ConfigSource::Inline {
        name: "<default>".into(),
        text: portico_config::DEFAULT_CONFIG.into(),
        base_dir: ".".into(),
    }]);
    assert!(r.diagnostics.is_empty(), "{:#?}", r.diagnostics);
    let s = r.snapshot.expect("snapshot");
    assert_eq!(s.listeners.len(), 1);
    assert_eq!(s.listeners[0].address.to_string(), "127.0.0.1");
    assert_eq!(s.listeners[0].port, 8080);
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.routes[0].name, "welcome");
    match &s.routes[0].action {
        portico_config::snapshot::RouteAction::Direct(d) => {
            assert_eq!(d.status, 200);
            assert!(d.body.starts_with(b"Welcome to Portico"));
            assert_eq!(
                d.content_type
                    .as_ref()
                    .map(|c| c.to_str().unwrap_or_default()),
                Some("text/plain")
            );
        }
        other => panic!("unexpected action {other:?}"),
    }
    assert_eq!(s.resources.len(), 2);
}

#[test]
fn yaml_syntax_error_is_file_level() {
    let d = diags("apiVersion: portico.dev/v1\nkind: [Mapping\nmetadata: {}\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].starts_with("t.yaml:3:"), "{}", d[0]);
    assert!(d[0].contains(": -/-: invalid YAML"), "{}", d[0]);
    let d = diags("a: 1\na: 2\n");
    assert_eq!(
        d,
        vec!["t.yaml:2:1: -/-: invalid YAML: duplicated key `a` in mapping"]
    );
}

#[test]
fn unknown_fields_nested_and_top_level() {
    let text = mapping(
        "m",
        "  prefix: /\n  service: a:1\n  retry_policy:\n    num_retries: 2\n    retry_onn: 5xx\n",
    );
    one_error(&text, 11, 5, "unknown field `retry_onn`");
    let text = "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nstatuss: {}\nspec: {port: 1}\n";
    one_error(text, 4, 1, "unknown field `statuss`");
    let text = "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l, uidd: x}\nspec: {port: 1}\n";
    one_error(text, 3, 21, "unknown field `uidd`");
}

#[test]
fn unknown_kind_and_api_versions() {
    one_error(
        "apiVersion: portico.dev/v1\nkind: Route\nmetadata: {name: r}\nspec: {}\n",
        2,
        7,
        "unknown kind `Route`",
    );
    one_error(
        "apiVersion: portico.dev/v2\nkind: Mapping\nmetadata: {name: r}\nspec: {}\n",
        1,
        13,
        "unknown apiVersion",
    );
    one_error(
        "kind: Mapping\nmetadata: {name: r}\nspec: {}\n",
        1,
        1,
        "missing field `apiVersion`",
    );
    // Emissary's schema (docs/reference.md §2.6): its own field names, unknown ones are errors.
    one_error(
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata: {name: r}\nspec: {prefix: /, service: a, cluster_tag: x}\n",
        4,
        31,
        "unknown field `cluster_tag`",
    );
    one_error(
        "apiVersion: portico.dev/v1\nmetadata: {name: r}\nspec: {}\n",
        1,
        1,
        "missing field `kind`",
    );
    one_error("- a\n- b\n", 1, 1, "must be a mapping");
}

#[test]
fn wrong_types() {
    one_error(
        &mapping("m", "  prefix: /\n  service: a:1\n  grpc: \"yes\"\n"),
        9,
        9,
        "grpc: expected true or false, found the string \"yes\"",
    );
    one_error(
        &mapping("m", "  prefix: [/a]\n  service: a:1\n"),
        7,
        11,
        "expected a string",
    );
    one_error(
        &mapping("m", "  prefix: /\n  service: a:1\n  precedence: 1.5\n"),
        9,
        15,
        "precedence: expected an integer, found the number 1.5",
    );
    one_error(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 70000}\n",
        4,
        14,
        "port: expected a whole number from 0 to 65535, found the integer 70000",
    );
    one_error(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: [1]\n",
        4,
        7,
        "expected a mapping for `spec`",
    );
    one_error(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 1, protocol: TCP}\n",
        4,
        27,
        "unknown variant `TCP`",
    );
}

#[test]
fn missing_metadata_name_uses_dash() {
    let d = errors(
        "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {labels: {a: b}}\nspec: {prefix: /, service: a:1}\n",
    );
    assert_eq!(
        d,
        vec!["t.yaml:3:1: Mapping/-: missing field `name` in metadata (metadata.name is required)"]
    );
    let d = errors("apiVersion: portico.dev/v1\nkind: Mapping\nspec: {prefix: /, service: a:1}\n");
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("t.yaml:1:1: Mapping/-: missing field `metadata`"),
        "{d:?}"
    );
}

#[test]
fn duplicate_names_across_sources() {
    let a = mapping("dup", "  prefix: /a\n  service: a:1\n");
    let b = format!(
        "{}{}",
        mapping("other", "  prefix: /b\n  service: a:1\n"),
        mapping("dup", "  prefix: /c\n  service: a:1\n")
    );
    let r = load(&[
        ConfigSource::Inline {
            name: "a.yaml".into(),
            text: a,
            base_dir: ".".into(),
        },
        ConfigSource::Inline {
            name: "b.yaml".into(),
            text: b,
            base_dir: ".".into(),
        },
    ]);
    let d: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        d,
        vec!["b.yaml:13:9: Mapping/dup: duplicate Mapping name `dup` (first defined at a.yaml:5)"]
    );
    // The same name on different kinds is fine.
    let ok = format!(
        "{}---\napiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: dup}}\nspec: {{endpoints: [\"10.0.0.1:80\"]}}\n",
        mapping("dup", "  prefix: /a\n  service: dup\n")
    );
    clean(&ok);
}

#[test]
fn missing_required_fields() {
    one_error(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec:\n  address: 0.0.0.0\n",
        4,
        1,
        "missing field `port`",
    );
    one_error(
        &mapping("m", "  service: a:1\n"),
        6,
        1,
        "missing field `prefix`",
    );
    one_error(
        &mapping("m", "  prefix: /\n"),
        6,
        1,
        "missing field `service`",
    );
    one_error(
        "apiVersion: portico.dev/v1\nkind: Host\nmetadata: {name: h}\nspec: {}\n",
        4,
        1,
        "missing field `hostname`",
    );
    // redirect / direct_response make service optional
    clean(&mapping("m", "  prefix: /\n  redirect: {https: true}\n"));
    clean(&mapping(
        "m",
        "  prefix: /\n  direct_response: {status: 204}\n",
    ));
}

#[test]
fn removed_fields_do_not_also_count_as_missing() {
    let d = errors(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: x}\n",
    );
    assert_eq!(d.len(), 1, "{d:?}");
}

#[test]
fn bare_service_must_name_an_upstream() {
    one_error(
        &mapping("m", "  prefix: /\n  service: quote\n"),
        8,
        12,
        "service `quote` names no Upstream",
    );
    one_error(
        &mapping("m", "  prefix: /\n  service: ftp://quote:21\n"),
        8,
        12,
        "unsupported scheme",
    );
    one_error(
        &mapping("m", "  prefix: /\n  service: quote:99999\n"),
        8,
        12,
        "invalid port",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  shadow: {service: nope}\n  service: a:1\n",
        ),
        8,
        21,
        "names no Upstream",
    );
}

#[test]
fn invalid_regexes() {
    one_error(
        &mapping(
            "m",
            "  prefix: \"/(a\"\n  prefix_regex: true\n  service: a:1\n",
        ),
        7,
        11,
        "invalid regex",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  regex_headers: {x-a: \"[\"}\n",
        ),
        9,
        24,
        "invalid regex",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  regex_query_parameters:\n    v: \"(\"\n",
        ),
        10,
        8,
        "invalid regex",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  regex_rewrite: {pattern: \"(\", substitution: x}\n",
        ),
        9,
        28,
        "invalid regex",
    );
}

#[test]
fn rewrite_and_regex_rewrite_conflict() {
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  rewrite: /\n  regex_rewrite: {pattern: a, substitution: b}\n",
        ),
        10,
        3,
        "either rewrite or regex_rewrite",
    );
}

#[test]
fn canary_weights_over_100_and_unweighted_groups() {
    let text = format!(
        "{}{}{}",
        mapping("a", "  prefix: /c/\n  service: a:1\n  weight: 70\n"),
        mapping("b", "  prefix: /c/\n  service: b:1\n"),
        mapping("c", "  prefix: /c/\n  service: c:1\n  weight: 40\n"),
    );
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("t.yaml:26:11: Mapping/c: canary weights add up to 110, over 100"),
        "{}",
        d[0]
    );
    // A single weight over 100
    one_error(
        &mapping("a", "  prefix: /c/\n  service: a:1\n  weight: 101\n"),
        9,
        11,
        "weight 101 is over 100",
    );

    let text = format!(
        "{}{}",
        mapping("a", "  prefix: /c/\n  service: a:1\n"),
        mapping("b", "  prefix: /c/\n  service: b:1\n"),
    );
    let r = load_text(&text);
    assert!(r.snapshot.is_some());
    let w: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        w,
        vec![
            "t.yaml:15:3: Mapping/b: warning: Mapping/a, Mapping/b have an identical match and no weights; traffic is split equally"
        ]
    );
}

#[test]
fn invalid_header_names_and_values() {
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  headers: {\"x y\": \"1\"}\n",
        ),
        9,
        13,
        "invalid header name `x y`",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  add_request_headers:\n    x-a: \"bad\\u0001\"\n",
        ),
        10,
        10,
        "invalid header value",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  add_response_headers:\n    x-a: {value: \"bad\\n\", append: false}\n",
        ),
        10,
        18,
        "invalid header value",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  remove_request_headers: [ok, \"n o\"]\n",
        ),
        9,
        32,
        "invalid header name",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  host_rewrite: \"a b\"\n",
        ),
        9,
        17,
        "invalid host",
    );
}

#[test]
fn invalid_method() {
    one_error(
        &mapping("m", "  prefix: /\n  service: a:1\n  method: \"GE T\"\n"),
        9,
        11,
        "invalid method",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  cors: {origins: [\"*\"], methods: [GET, post]}\n",
        ),
        9,
        41,
        "invalid method `post`",
    );
    clean(&mapping(
        "m",
        "  prefix: /\n  service: a:1\n  method: PURGE\n",
    ));
}

#[test]
fn status_and_redirect_codes() {
    one_error(
        &mapping("m", "  prefix: /\n  direct_response: {status: 42}\n"),
        8,
        29,
        "status 42 out of range",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  redirect: {https: true, response_code: 200}\n",
        ),
        8,
        42,
        "not a redirect",
    );
    one_error(
        &mapping("m", "  prefix: /\n  redirect: {}\n"),
        8,
        3,
        "at least one of",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  health_checks: [{path: /h, expected_statuses: [\"200-700\"]}]\n",
        ),
        9,
        50,
        "out of range",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  retry_policy: {retriable_status_codes: [503, 99]}\n",
        ),
        9,
        48,
        "status 99 out of range",
    );
}

#[test]
fn retry_on_unknown_value() {
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  retry_policy:\n    retry_on: \"5xx, connect-failure,bogus\"\n",
        ),
        10,
        15,
        "unknown retry_on value `bogus`",
    );
}

#[test]
fn host_tls_files_must_exist_relative_to_the_config_file() {
    let dir = tmp_dir("hosttls");
    std::fs::create_dir_all(dir.join("certs")).expect("mkdir");
    std::fs::write(dir.join("certs/api.pem"), "x").expect("write");
    let text = "apiVersion: portico.dev/v1\nkind: Host\nmetadata: {name: api}\nspec:\n  hostname: api.example.com\n  tls:\n    cert_chain_file: certs/api.pem\n    private_key_file: certs/api.key\n";
    std::fs::write(dir.join("hosts.yaml"), text).expect("write");
    let r = load(&[ConfigSource::Path(dir.join("hosts.yaml"))]);
    assert_eq!(r.diagnostics.len(), 1, "{:#?}", r.diagnostics);
    let e = &r.diagnostics[0];
    assert_eq!((e.line, e.column, e.severity), (8, 23, Severity::Error));
    assert!(
        e.message
            .contains("private_key_file `certs/api.key` does not exist"),
        "{e}"
    );
    std::fs::write(dir.join("certs/api.key"), "x").expect("write");
    let r = load(&[ConfigSource::Path(dir.join("hosts.yaml"))]);
    assert!(r.diagnostics.is_empty(), "{:#?}", r.diagnostics);
    let s = r.snapshot.expect("snapshot");
    let tls = s.hosts[0].tls.as_ref().expect("tls");
    assert_eq!(
        tls.cert_chain_file,
        std::path::absolute(dir.join("certs/api.pem")).unwrap_or_default()
    );
    assert_eq!(tls.alpn_protocols, vec!["h2", "http/1.1"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn conflicting_upstream_settings_on_implicit_upstreams() {
    let text = format!(
        "{}{}{}",
        mapping(
            "a",
            "  prefix: /a\n  service: q:80\n  connect_timeout_ms: 500\n"
        ),
        mapping(
            "b",
            "  prefix: /b\n  service: q:80\n  connect_timeout_ms: 500\n  circuit_breakers: {max_requests: 5}\n"
        ),
        mapping(
            "c",
            "  prefix: /c\n  service: q:80\n  connect_timeout_ms: 700\n"
        ),
    );
    let d = errors(&text);
    assert_eq!(
        d,
        vec![
            "t.yaml:28:3: Mapping/c: connect_timeout_ms conflicts with the value Mapping/a (t.yaml:9) gave upstream `q:80`"
        ]
    );
    // Same settings twice: fine, and they reach the upstream.
    let text = format!(
        "{}{}",
        mapping(
            "a",
            "  prefix: /a\n  service: q:80\n  load_balancer: {policy: least_request}\n"
        ),
        mapping(
            "b",
            "  prefix: /b\n  service: q:80\n  load_balancer: {policy: least_request}\n"
        ),
    );
    let s = clean(&text);
    assert_eq!(s.upstreams.len(), 1);
    assert_eq!(
        s.upstreams[0].lb.policy,
        portico_config::snapshot::LbPolicy::LeastRequest
    );
}

#[test]
fn mapping_settings_on_an_upstream_resource_are_ignored_with_a_warning() {
    let text = format!(
        "apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: pool}}\nspec:\n  endpoints: [\"10.0.0.1:80\"]\n  connect_timeout_ms: 100\n{}{}",
        mapping(
            "a",
            "  prefix: /a\n  service: pool\n  connect_timeout_ms: 100\n"
        ),
        mapping(
            "b",
            "  prefix: /b\n  service: pool\n  connect_timeout_ms: 900\n"
        ),
    );
    let r = load_text(&text);
    let d: Vec<String> = r.diagnostics.iter().map(|d| d.to_string()).collect();
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].starts_with("t.yaml:24:3: Mapping/b: warning: connect_timeout_ms is ignored"),
        "{d:?}"
    );
    let s = r.snapshot.expect("warnings do not reject");
    assert_eq!(s.upstreams[0].connect_timeout.as_millis(), 100);
    let b = s.resources.iter().find(|r| r.name == "b").expect("b");
    assert!(b.status.starts_with("warning: "));
}

#[test]
fn duplicate_listener_address_and_port() {
    let text = "\
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: a}
spec: {port: 8080}
---
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: b}
spec: {address: 127.0.0.1, port: 8080}
---
apiVersion: portico.dev/v1
kind: Listener
metadata: {name: c}
spec: {address: 127.0.0.1, port: 8081}
";
    one_error(text, 9, 34, "conflicts with Listener/a");
}

#[test]
fn cors_credentials_with_any_origin() {
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  cors:\n    origins: [\"https://a.example\", \"*\"]\n    credentials: true\n",
        ),
        10,
        36,
        "cannot be used with credentials",
    );
}

#[test]
fn rate_limits_are_validated() {
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  rate_limits:\n    - key: [remote_address, \"cookie:x\"]\n      requests_per_unit: 5\n",
        ),
        10,
        29,
        "unknown rate limit key part",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  rate_limits:\n    - key: [path]\n      scope: global\n",
        ),
        11,
        14,
        "needs a RateLimitService",
    );
    one_error(
        &mapping(
            "m",
            "  prefix: /\n  service: a:1\n  rate_limits:\n    - key: [path]\n",
        ),
        10,
        7,
        "requests_per_unit",
    );
}

#[test]
fn several_rate_limit_services_are_an_error() {
    let rls = |n: &str| {
        format!(
            "---\napiVersion: portico.dev/v1\nkind: RateLimitService\nmetadata: {{name: {n}}}\nspec: {{service: \"rls:8081\"}}\n"
        )
    };
    let d = errors(&format!("{}{}", rls("one"), rls("two")));
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(
        d[0].contains("RateLimitService/two: only one RateLimitService"),
        "{d:?}"
    );
}

#[test]
fn upstream_resource_rules() {
    let up = |spec: &str| {
        format!("apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: u}}\nspec:\n{spec}")
    };
    one_error(&up("  endpoints: [\"10.0.0.1\"]\n"), 5, 15, "needs a port");
    one_error(
        &up("  endpoints: [\"10.0.0.1:80\"]\n  dns: a:80\n"),
        6,
        3,
        "either endpoints or dns",
    );
    one_error(
        &up("  protocol: http1\n"),
        4,
        1,
        "needs `endpoints` or `dns`",
    );
    one_error(
        &up("  endpoints: [{address: \"a:1\", weight: 0}]\n"),
        5,
        40,
        "weight must be at least 1",
    );
    one_error(
        &up("  dns: a:1\n  protocol: http3\n"),
        6,
        13,
        "unknown variant `http3`",
    );
    one_error(
        &up("  dns: a:1\n  load_balancer: {policy: ring_hash}\n"),
        6,
        27,
        "need one of header, cookie or source_ip",
    );
    one_error(
        &up("  dns: a:1\n  tls: {ca_file: nowhere.pem}\n  protocol: https\n"),
        6,
        18,
        "ca_file `nowhere.pem` does not exist",
    );
}

#[test]
fn directory_sources_are_read_recursively_and_sorted() {
    let dir = tmp_dir("dir");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    std::fs::write(
        dir.join("b.yaml"),
        mapping("b", "  prefix: /b\n  service: q\n"),
    )
    .expect("write");
    std::fs::write(
        dir.join("sub/a.yml"),
        mapping("a", "  prefix: /a\n  service: q\n"),
    )
    .expect("write");
    std::fs::write(dir.join(".git/x.yaml"), "not: [valid").expect("write");
    std::fs::write(dir.join("notes.txt"), "ignored").expect("write");
    let r = load(&[ConfigSource::Path(dir.clone())]);
    let files: Vec<String> = r.diagnostics.iter().map(|d| d.file.clone()).collect();
    assert_eq!(r.diagnostics.len(), 2, "{:#?}", r.diagnostics);
    assert!(
        files[0].ends_with("b.yaml") && files[1].ends_with("sub/a.yml"),
        "{files:?}"
    );
    let missing = load(&[ConfigSource::Path(dir.join("nope.yaml"))]);
    assert_eq!(missing.diagnostics.len(), 1);
    assert!(missing.diagnostics[0].message.starts_with("cannot read"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_listener_without_a_host_with_tls_warns_of_a_self_signed_certificate() {
    let r = load(&[ConfigSource::Inline {
        name: "t.yaml".into(),
        text: "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {port: 443, protocol: HTTPS}\n".into(),
        base_dir: std::env::temp_dir(),
    }]);
    assert!(r.snapshot.is_some(), "{:?}", r.diagnostics);
    assert_eq!(r.diagnostics.len(), 1, "{:?}", r.diagnostics);
    let d = &r.diagnostics[0];
    assert_eq!((d.line, d.column), (4, 19));
    assert!(!d.is_error());
    assert!(
        d.message.contains("self-signed certificate"),
        "{}",
        d.message
    );
}

#[test]
fn invalid_resource_names() {
    one_error(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: \"a:b\"}\nspec: {port: 1}\n",
        3,
        18,
        "invalid name `a:b`",
    );
}

#[test]
fn many_errors_in_one_resource_are_all_reported() {
    let text = mapping(
        "m",
        "  prefix: /\n  service: a:1\n  timeout_ms: -1\n  grpc: 3\n  weight: x\n  cors: {origins: 5}\n  nope: 1\n",
    );
    let d = errors(&text);
    let lines: Vec<&str> = d
        .iter()
        .map(|l| l.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        lines,
        vec![
            "t.yaml:9:15",
            "t.yaml:10:9",
            "t.yaml:11:11",
            "t.yaml:12:19",
            "t.yaml:13:3"
        ],
        "{d:#?}"
    );
}

#[test]
fn header_names_are_case_insensitive_and_regex_case_flags_split_groups() {
    let text = [
        mapping(
            "a",
            "  prefix: /\n  headers: {X-Canary: \"1\"}\n  service: a:1\n",
        ),
        mapping(
            "r1",
            "  prefix: \"/x.*\"\n  prefix_regex: true\n  service: a:1\n",
        ),
        mapping(
            "r2",
            "  prefix: \"/x.*\"\n  prefix_regex: true\n  case_sensitive: false\n  service: a:1\n",
        ),
    ]
    .concat();
    let s = clean(&text);
    assert_eq!(s.routes[2].headers[0].name.as_str(), "x-canary");
    assert_eq!(s.routes[0].group, 0);
    assert_eq!(
        s.routes[1].group, 1,
        "different case flags: different groups"
    );
}

#[test]
fn null_header_match_means_present_and_listener_errors_are_independent() {
    let s = clean(&mapping(
        "m",
        "  prefix: /\n  service: a:1\n  headers:\n    x-present:\n  query_parameters: {flag: ~}\n",
    ));
    assert!(matches!(
        s.routes[0].headers[0].value,
        portico_config::snapshot::ValueMatch::Present
    ));
    assert!(matches!(
        s.routes[0].query[0].value,
        portico_config::snapshot::ValueMatch::Present
    ));
    let d = errors(
        "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {name: l}\nspec: {address: localhost, port: 0}\n",
    );
    assert_eq!(d.len(), 2, "{d:?}");
}

#[test]
fn grpc_mapping_on_an_http1_upstream_warns() {
    let text = format!(
        "apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: u}}\nspec: {{dns: \"a:1\"}}\n{}",
        mapping("m", "  prefix: /\n  service: u\n  grpc: true\n")
    );
    let w = warnings(&text);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("t.yaml:13:3: Mapping/m: warning: grpc needs HTTP/2"),
        "{w:?}"
    );
}

#[test]
fn grpc_mapping_on_an_https_upstream_warns_but_not_on_auto() {
    for (protocol, expected) in [("https", 1), ("auto", 0), ("h2c", 0)] {
        let text = format!(
            "apiVersion: portico.dev/v1\nkind: Upstream\nmetadata: {{name: u}}\nspec: {{dns: \"a:1\", protocol: {protocol}}}\n{}",
            mapping("m", "  prefix: /\n  service: u\n  grpc: true\n")
        );
        let w = warnings(&text);
        assert_eq!(w.len(), expected, "{protocol}: {w:?}");
        if expected == 1 {
            assert!(w[0].contains("grpc needs HTTP/2"), "{w:?}");
            assert!(w[0].contains("auto for TLS"), "{w:?}");
        }
    }
}

#[test]
fn listener_limits_out_of_range_are_positioned_errors() {
    let listener = |field: &str| {
        format!(
            "apiVersion: portico.dev/v1\nkind: Listener\nmetadata: {{name: l}}\nspec:\n  port: 80\n  {field}\n"
        )
    };
    for (field, needle) in [
        (
            "max_request_headers_kb: 0",
            "max_request_headers_kb must be 1-1024",
        ),
        (
            "max_request_headers_kb: 2048",
            "max_request_headers_kb must be 1-1024",
        ),
        ("max_headers_count: 0", "max_headers_count must be 1-10000"),
        ("max_uri_bytes: 70000", "max_uri_bytes must be 1-65534"),
        (
            "max_concurrent_streams: 0",
            "max_concurrent_streams must be 1-65535",
        ),
        (
            "header_read_timeout_ms: 0",
            "header_read_timeout_ms must be 1-3600000",
        ),
        // RFC 9113 flow-control window bounds: 65535 to 2^31-1.
        (
            "initial_stream_window_bytes: 65534",
            "initial_stream_window_bytes must be 65535-2147483647",
        ),
        (
            "initial_stream_window_bytes: 2147483648",
            "initial_stream_window_bytes must be 65535-2147483647",
        ),
        (
            "initial_connection_window_bytes: 1024",
            "initial_connection_window_bytes must be 65535-2147483647",
        ),
        (
            "initial_connection_window_bytes: 4294967295",
            "initial_connection_window_bytes must be 65535-2147483647",
        ),
        (
            "keepalive_timeout_ms: 90000000",
            "keepalive_timeout_ms must be 0-86400000",
        ),
    ] {
        let col = field.find(':').map_or(0, |i| i as u32 + 5);
        one_error(&listener(field), 6, col, needle);
    }
    // Wrong types are rejected by the schema, at the value.
    one_error(
        &listener("request_body_idle_timeout_ms: soon"),
        6,
        33,
        "request_body_idle_timeout_ms: expected an integer number of milliseconds",
    );
    one_error(
        &format!(
            "{}{}",
            listener("max_uri_bytes: 100"),
            mapping(
                "m",
                "  prefix: /\n  service: a:80\n  max_request_body_bytes: -1\n"
            )
        ),
        15,
        27,
        "max_request_body_bytes: expected a whole number (0 or more), found the integer -1",
    );
}
