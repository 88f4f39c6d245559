//! `GET /explain` and `portico explain` give the same answer, and the proxy does what they say
//! (issue 6): 20 varied requests against a config of 50 Mappings.

use crate::common;
use common::*;

/// The 50 Mappings: every one sends to `up` and tags the request with `x-route: NAME`, so the
/// upstream tells which route the proxy really took.
fn mappings(up: &str) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = vec![
        ("host-a".into(), "hostname: a.example.com, prefix: /".into()),
        ("host-wild".into(), "hostname: \"*.example.org\", prefix: /".into()),
        ("host-b-api".into(), "hostname: b.example.com, prefix: /api/, rewrite: /".into()),
        ("post-orders".into(), "prefix: /orders/, method: POST".into()),
        ("get-orders".into(), "prefix: /orders/, method: GET, rewrite: /read/".into()),
        ("canary-svc1".into(), "prefix: /svc1/, headers: { x-canary: \"1\" }".into()),
        ("curl-svc2".into(), "prefix: /svc2/, regex_headers: { user-agent: \"^curl/.*\" }".into()),
        ("debug-svc3".into(), "prefix: /svc3/, query_parameters: { debug: \"true\" }".into()),
        ("numeric-svc4".into(), "prefix: /svc4/, regex_query_parameters: { v: \"^[0-9]+$\" }".into()),
        ("exact-health".into(), "prefix: /health, prefix_exact: true".into()),
        ("regex-users".into(), "prefix: \"^/users/[0-9]+$\", prefix_regex: true".into()),
        ("svc5-high".into(), "prefix: /svc5/, precedence: 10".into()),
        ("svc5-deep".into(), "prefix: /svc5/deep/".into()),
        ("docs-ci".into(), "prefix: /Docs/, case_sensitive: false".into()),
        ("regex-rewrite".into(), "prefix: /rr/, regex_rewrite: { pattern: \"^/rr/([a-z]+)/(.*)$\", substitution: \"/\\\\2/\\\\1\" }".into()),
        ("redirect-old".into(), "prefix: /old/, redirect: { path: /new/ }".into()),
        ("teapot".into(), "prefix: /teapot, direct_response: { status: 418, body: short and stout }".into()),
    ];
    for i in 0..20 {
        let rewrite = if i % 2 == 0 {
            format!(", rewrite: /v{i}/")
        } else {
            String::new()
        };
        m.push((format!("svc{i}"), format!("prefix: /svc{i}/{rewrite}")));
    }
    let fillers = 50 - m.len();
    for k in 0..fillers {
        m.push((format!("filler{k}"), format!("prefix: /filler/{k}/")));
    }
    assert_eq!(m.len(), 50);
    m.into_iter()
        .map(|(name, spec)| {
            let forwards = !spec.contains("redirect") && !spec.contains("direct_response");
            let spec = if forwards {
                format!("{spec}, service: {up}, add_request_headers: {{ x-route: {name} }}")
            } else {
                spec
            };
            (name, spec)
        })
        .collect()
}

/// A request: method, host, path and query, headers.
struct Case {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const CASES: [Case; 20] = [
    Case {
        method: "GET",
        host: "a.example.com",
        path: "/anything",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "x.example.org",
        path: "/svc3/q",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "b.example.com",
        path: "/api/users",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "b.example.com",
        path: "/other",
        headers: &[],
    },
    Case {
        method: "POST",
        host: "portico.test",
        path: "/orders/1",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/orders/1?x=1",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc1/a",
        headers: &[("x-canary", "1")],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc1/a",
        headers: &[("x-canary", "2")],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc2/b",
        headers: &[("user-agent", "curl/8.5")],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc2/b",
        headers: &[("user-agent", "firefox")],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc3/c?debug=true",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc4/d?v=12",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc4/d?v=abc",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/health",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/healthz",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/users/42",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/svc5/deep/x",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/docs/intro",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/rr/abc/rest/of?q=1",
        headers: &[],
    },
    Case {
        method: "GET",
        host: "portico.test",
        path: "/old/page",
        headers: &[],
    },
];

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_cli_explain_agree_and_match_the_proxy() {
    let up = Upstream::start("u").await;
    let docs: Vec<String> = mappings(&up.addr.to_string())
        .into_iter()
        .map(|(name, spec)| {
            format!("{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {{ {spec} }}\n")
        })
        .collect();
    let p = Portico::start(&docs.join("---\n")).await;
    let cwd = p.config.parent().expect("config dir").to_path_buf();
    let config = p.config.display().to_string();

    let mut routed = 0;
    for (i, c) in CASES.iter().enumerate() {
        let url = format!("http://{}{}", c.host, c.path);
        let header_args: Vec<String> = c.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();

        // The admin API's answer.
        let mut q = format!("/explain?method={}&url={}", c.method, enc(&url));
        for h in &header_args {
            q.push_str(&format!("&header={}", enc(h)));
        }
        let admin = get(&p.admin_url(&q), &[]).await;
        assert_eq!(admin.status, 200, "case {i}: {}", admin.text());
        let admin: serde_json::Value = serde_json::from_slice(&admin.body).expect("json");

        // The CLI's answer, on the same file.
        let mut args = vec![
            "explain",
            "-c",
            config.as_str(),
            "--format",
            "json",
            c.method,
            url.as_str(),
        ];
        for h in &header_args {
            args.push("-H");
            args.push(h);
        }
        let (code, out, err) = portico_cmd(&cwd, &args);
        assert_eq!(code, 0, "case {i}: {err}");
        let cli: serde_json::Value = serde_json::from_str(&out).expect("cli json");
        assert_eq!(admin, cli, "case {i}: {} {url}", c.method);
        eprintln!(
            "{} {url} {:?} -> {} {}",
            c.method, c.headers, admin["route"], admin["rewritten_path"]
        );

        // What the proxy really does with that request.
        let mut headers: Vec<(&str, &str)> = c.headers.to_vec();
        headers.push(("host", c.host));
        let before = up.count();
        let got = send(request(c.method, &p.url(c.path), &headers, ""), false)
            .await
            .expect("request");
        match admin["route"].as_str() {
            None => {
                assert_eq!(got.status, 404, "case {i}: explain says no route");
                assert_eq!(admin["reply"]["status"], 404);
            }
            Some(route) => match &admin["action"] {
                serde_json::Value::String(a) if a == "forward" => {
                    assert_eq!(got.status, 200, "case {i}: {}", got.text());
                    let seen = up.last();
                    assert_eq!(
                        seen.headers.get("x-route").and_then(|v| v.to_str().ok()),
                        Some(route),
                        "case {i}: {} {url}",
                        c.method
                    );
                    assert_eq!(
                        Some(seen.uri.as_str()),
                        admin["rewritten_path"].as_str(),
                        "case {i}"
                    );
                    routed += 1;
                }
                action => {
                    // Answered by Portico itself: the status explain names, nothing upstream.
                    let status = action
                        .get("redirect")
                        .or_else(|| action.get("direct_response"))
                        .and_then(|a| a.get("status").or_else(|| a.get("code")))
                        .and_then(|s| s.as_u64())
                        .expect("status");
                    assert_eq!(u64::from(got.status.as_u16()), status, "case {i}");
                    assert_eq!(up.count(), before, "case {i}");
                }
            },
        }
    }
    assert!(routed >= 15, "most cases reach the upstream: {routed}");
}
