//! Routing features of issue 2, end to end: the real `portico` binary in front of real loopback
//! upstreams. Every test asserts what the upstream received and what the client got.

use crate::common;
use common::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

/// A Mapping document; `spec` is a YAML flow mapping (`{ prefix: /a/, service: ... }`).
fn mapping(name: &str, spec: &str) -> String {
    format!("{API}\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec: {spec}\n")
}

fn docs(d: &[String]) -> String {
    d.join("---\n")
}

/// GET `path` with a Host header; returns the response.
async fn get_host(p: &Portico, host: &str, path: &str) -> Got {
    get(&p.url(path), &[("host", host)]).await
}

/// Which upstream answered (`x-upstream`), or `-` for a local reply.
fn who(r: &Got) -> String {
    r.header("x-upstream").unwrap_or("-").to_string()
}

/// Starts upstreams with the given names.
async fn ups(names: &[&str]) -> Vec<Upstream> {
    let mut v = Vec::new();
    for n in names {
        v.push(Upstream::start(n).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_globs_exact_wildcard_star_and_specificity() {
    let u = ups(&["exact", "wild", "eu", "star", "only"]).await;
    let p = Portico::start(&docs(&[
        // Declared least specific first: the order in the file must not matter.
        mapping(
            "h-star",
            &format!("{{ hostname: '*', prefix: /h/, service: {} }}", u[3].addr),
        ),
        mapping(
            "h-wild",
            &format!(
                "{{ hostname: '*.example.com', prefix: /h/, service: {} }}",
                u[1].addr
            ),
        ),
        mapping(
            "h-eu",
            &format!(
                "{{ hostname: '*.eu.example.com', prefix: /h/, service: {} }}",
                u[2].addr
            ),
        ),
        mapping(
            "h-exact",
            &format!(
                "{{ hostname: api.example.com, prefix: /h/, service: {} }}",
                u[0].addr
            ),
        ),
        mapping(
            "only-api",
            &format!(
                "{{ hostname: api.example.com, prefix: /only/, service: {} }}",
                u[4].addr
            ),
        ),
    ]))
    .await;

    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8443", "exact"),
        ("Api.Example.Com:80", "exact"),
        ("www.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("WWW.EXAMPLE.COM:9000", "wild"),
        ("x.eu.example.com", "eu"),
        ("X.EU.example.com:1", "eu"),
        ("example.com", "star"),
        ("other.org", "star"),
        ("127.0.0.1", "star"),
    ];
    for (host, want) in cases {
        let r = get_host(&p, host, "/h/x?y=1").await;
        assert_eq!(r.status, 200, "host {host}");
        assert_eq!(who(&r), want, "host {host}");
    }
    // The upstream sees the client's Host unchanged and the path unchanged.
    let seen = u[0].last();
    assert_eq!(seen.headers["host"], "Api.Example.Com:80");
    assert_eq!(seen.uri, "/h/x?y=1");
    assert_eq!(u[0].count(), 4);
    assert_eq!(u[1].count(), 3);
    assert_eq!(u[2].count(), 2);
    assert_eq!(u[3].count(), 3);

    // A route bound to one hostname is invisible to others.
    let r = get_host(&p, "API.example.com:1234", "/only/a").await;
    assert_eq!((r.status.as_u16(), who(&r)), (200, "only".into()));
    let r = get_host(&p, "www.example.com", "/only/a").await;
    assert_eq!(r.status, 404);
    let r = get_host(&p, "api.example.com.evil.org", "/only/a").await;
    assert_eq!(r.status, 404);
    assert_eq!(u[4].count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_exact_regex_and_case_insensitive() {
    let u = ups(&["prefix", "exact", "regex", "ci", "ciexact"]).await;
    let p = Portico::start(&docs(&[
        mapping(
            "prefix",
            &format!("{{ prefix: /p/, service: {} }}", u[0].addr),
        ),
        mapping(
            "exact",
            &format!(
                "{{ prefix: /exact, prefix_exact: true, service: {} }}",
                u[1].addr
            ),
        ),
        mapping(
            "regex",
            &format!(
                "{{ prefix: '/re/[0-9]+', prefix_regex: true, service: {} }}",
                u[2].addr
            ),
        ),
        mapping(
            "ci",
            &format!(
                "{{ prefix: /ci/, case_sensitive: false, service: {} }}",
                u[3].addr
            ),
        ),
        mapping(
            "ci-exact",
            &format!(
                "{{ prefix: /CiExact, prefix_exact: true, case_sensitive: false, service: {} }}",
                u[4].addr
            ),
        ),
    ]))
    .await;

    let cases: &[(&str, Option<&str>)] = &[
        ("/p/", Some("prefix")),
        ("/p/a/b?c=d", Some("prefix")),
        ("/p", None),
        ("/px", None),
        ("/P/a", None), // case-sensitive by default
        ("/exact", Some("exact")),
        ("/exact?q=1", Some("exact")),
        ("/exact/", None),
        ("/exactly", None),
        ("/EXACT", None),
        ("/re/123", Some("regex")),
        ("/re/0?x=y", Some("regex")),
        ("/re/123/x", None), // the regex must match the whole path
        ("/re/abc", None),
        ("/re/", None),
        ("/x/re/1", None),
        ("/ci/a", Some("ci")),
        ("/CI/A", Some("ci")),
        ("/Ci/", Some("ci")),
        ("/ci", None),
        ("/ciexact", Some("ciexact")),
        ("/CIEXACT?z=1", Some("ciexact")),
        ("/ciexact/", None),
    ];
    for (path, want) in cases {
        let r = get(&p.url(path), &[]).await;
        match want {
            Some(w) => {
                assert_eq!(r.status, 200, "{path}");
                assert_eq!(who(&r), *w, "{path}");
                let up = u.iter().find(|x| x.name == *w).unwrap();
                // The path reaches the upstream unchanged (no rewrite configured).
                assert_eq!(up.last().uri, *path, "{path}");
            }
            None => {
                assert_eq!(r.status, 404, "{path}");
                assert_eq!(r.text(), "no route\n", "{path}");
            }
        }
    }
    assert_eq!(u[0].count(), 2);
    assert_eq!(u[1].count(), 2);
    assert_eq!(u[2].count(), 2);
    assert_eq!(u[3].count(), 3);
    assert_eq!(u[4].count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_headers_and_query_matches() {
    let u = ups(&[
        "post",
        "any",
        "exact",
        "present",
        "regex",
        "hfallback",
        "qexact",
        "qregex",
        "qenc",
        "qencre",
        "qfallback",
    ])
    .await;
    let a = |i: usize| u[i].addr;
    let p = Portico::start(&docs(&[
        mapping("m-any", &format!("{{ prefix: /m/, service: {} }}", a(1))),
        mapping(
            "m-post",
            &format!("{{ prefix: /m/, method: POST, service: {} }}", a(0)),
        ),
        mapping(
            "h-fallback",
            &format!("{{ prefix: /hd/, service: {} }}", a(5)),
        ),
        mapping(
            "h-exact",
            &format!(
                "{{ prefix: /hd/, headers: {{ x-canary: '1' }}, service: {} }}",
                a(2)
            ),
        ),
        mapping(
            "h-present",
            &format!(
                "{{ prefix: /hd/, headers: {{ x-present: '' }}, service: {} }}",
                a(3)
            ),
        ),
        mapping(
            "h-regex",
            &format!(
                "{{ prefix: /hd/, regex_headers: {{ user-agent: '.*Mobile.*' }}, service: {} }}",
                a(4)
            ),
        ),
        mapping(
            "q-fallback",
            &format!("{{ prefix: /q/, service: {} }}", a(10)),
        ),
        mapping(
            "q-exact",
            &format!(
                "{{ prefix: /q/, query_parameters: {{ v: '2' }}, service: {} }}",
                a(6)
            ),
        ),
        mapping(
            "q-regex",
            &format!(
                "{{ prefix: /q/, regex_query_parameters: {{ id: '^[0-9]+$' }}, service: {} }}",
                a(7)
            ),
        ),
        mapping(
            "q-enc",
            &format!(
                "{{ prefix: /q/, query_parameters: {{ name: 'a b/c' }}, service: {} }}",
                a(8)
            ),
        ),
        mapping(
            "q-enc-re",
            &format!(
                "{{ prefix: /q/, regex_query_parameters: {{ tag: '^é&x$' }}, service: {} }}",
                a(9)
            ),
        ),
    ]))
    .await;

    // method
    let r = post(&p.url("/m/x"), "body").await;
    assert_eq!(who(&r), "post");
    assert_eq!(u[0].last().method, "POST");
    assert_eq!(u[0].last().body, "body");
    let r = get(&p.url("/m/x"), &[]).await;
    assert_eq!(who(&r), "any");
    let r = send(request("PUT", &p.url("/m/x"), &[], "z"), false)
        .await
        .unwrap();
    assert_eq!(who(&r), "any");
    assert_eq!(u[1].last().method, "PUT");

    // headers
    let hcases: &[(&[(&str, &str)], &str)] = &[
        (&[("x-canary", "1")], "exact"),
        (&[("x-canary", "2")], "hfallback"),
        (&[("x-canary", "10")], "hfallback"),
        (&[("x-present", "anything")], "present"),
        (&[("x-present", "")], "present"),
        (&[("user-agent", "Foo Mobile Bar")], "regex"),
        (&[("user-agent", "Mobile")], "regex"),
        (&[("user-agent", "Desktop")], "hfallback"),
        (&[], "hfallback"),
    ];
    for (h, want) in hcases {
        let r = get(&p.url("/hd/x"), h).await;
        assert_eq!(r.status, 200, "{h:?}");
        assert_eq!(who(&r), *want, "{h:?}");
    }
    // The matched header reaches the upstream.
    assert_eq!(u[2].last().headers["x-canary"], "1");
    assert_eq!(u[4].last().headers["user-agent"], "Mobile");

    // query parameters (values compared after percent-decoding); the query reaches the
    // upstream exactly as the client sent it.
    let qcases: &[(&str, &str)] = &[
        ("/q/?v=2", "qexact"),
        ("/q/a?x=1&v=2&y=3", "qexact"),
        ("/q/?v=3", "qfallback"),
        ("/q/?v=22", "qfallback"),
        ("/q/?V=2", "qfallback"),
        ("/q/?id=42", "qregex"),
        ("/q/?id=4x", "qfallback"),
        ("/q/?name=a%20b%2Fc", "qenc"),
        ("/q/?name=a%20b%2fc&z", "qenc"),
        ("/q/?name=a%20b", "qfallback"),
        ("/q/?tag=%C3%A9%26x", "qencre"),
        ("/q/?tag=%C3%A9", "qfallback"),
        ("/q/", "qfallback"),
    ];
    for (path, want) in qcases {
        let r = get(&p.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(who(&r), *want, "{path}");
        let up = u.iter().find(|x| x.name == *want).unwrap();
        assert_eq!(up.last().uri, *path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precedence_then_longer_prefix_then_more_header_matches() {
    let u = ups(&["pre", "prelong", "lp", "lplong", "one", "two", "regexlong"]).await;
    let a = |i: usize| u[i].addr;
    let p = Portico::start(&docs(&[
        mapping(
            "pre-long",
            &format!("{{ prefix: /pre/longer/, service: {} }}", a(1)),
        ),
        mapping(
            "pre",
            &format!("{{ prefix: /pre/, precedence: 10, service: {} }}", a(0)),
        ),
        mapping("lp", &format!("{{ prefix: /lp/, service: {} }}", a(2))),
        mapping(
            "lp-long",
            &format!("{{ prefix: /lp/longer/, service: {} }}", a(3)),
        ),
        mapping(
            "hm-two",
            &format!(
                "{{ prefix: /hm/, headers: {{ x-a: '1', x-b: '1' }}, service: {} }}",
                a(5)
            ),
        ),
        mapping(
            "hm-one",
            &format!(
                "{{ prefix: /hm/, headers: {{ x-a: '1' }}, service: {} }}",
                a(4)
            ),
        ),
        mapping(
            "lp-regex",
            &format!(
                "{{ prefix: '/lp/longer/[a-z]+/[0-9]+', prefix_regex: true, service: {} }}",
                a(6)
            ),
        ),
    ]))
    .await;

    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/pre/longer/x", &[], "pre"), // precedence beats the longer prefix
        ("/pre/x", &[], "pre"),
        ("/lp/longer/x", &[], "lplong"), // longer prefix wins otherwise
        ("/lp/other", &[], "lp"),
        ("/lp/longer/abc/123", &[], "regexlong"), // a regex counts its pattern's length
        ("/hm/x", &[("x-a", "1"), ("x-b", "1")], "two"), // more header matches win
        ("/hm/x", &[("x-a", "1")], "one"),
        ("/hm/x", &[("x-a", "1"), ("x-b", "2")], "one"),
    ];
    for (path, h, want) in cases {
        let r = get(&p.url(path), h).await;
        assert_eq!(r.status, 200, "{path} {h:?}");
        assert_eq!(who(&r), *want, "{path} {h:?}");
        let up = u.iter().find(|x| x.name == *want).unwrap();
        assert_eq!(up.last().uri, *path);
    }
    let r = get(&p.url("/hm/x"), &[("x-b", "1")]).await;
    assert_eq!(r.status, 404);
    assert_eq!(u[1].count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_regex_rewrite_and_host_rewrite() {
    let up = Upstream::start("rw").await;
    let s = up.addr;
    let p = Portico::start(&docs(&[
        mapping("rw", &format!("{{ prefix: /rw/, rewrite: /new/, service: {s} }}")),
        mapping("rw-root", &format!("{{ prefix: /rwroot/, rewrite: /, service: {s} }}")),
        mapping(
            "rw-exact",
            &format!("{{ prefix: /old, prefix_exact: true, rewrite: /brand-new, service: {s} }}"),
        ),
        mapping(
            "rw-regex",
            &format!(
                "{{ prefix: '/rx/[a-z]+', prefix_regex: true, rewrite: /fixed, service: {s} }}"
            ),
        ),
        mapping(
            "rrw",
            &format!(
                "{{ prefix: /v1/, regex_rewrite: {{ pattern: '^/v1/(.*)$', substitution: '/\\1' }}, service: {s} }}"
            ),
        ),
        mapping(
            "rrw2",
            &format!(
                "{{ prefix: /swap/, regex_rewrite: {{ pattern: '^/swap/([^/]+)/([^/]+)$', substitution: '/\\2/\\1' }}, service: {s} }}"
            ),
        ),
        mapping(
            "hr",
            &format!("{{ prefix: /hr/, host_rewrite: quote.internal, service: {s} }}"),
        ),
    ]))
    .await;

    let cases: &[(&str, &str)] = &[
        ("/rw/x/y?q=1&r=%20", "/new/x/y?q=1&r=%20"),
        ("/rw/", "/new/"),
        ("/rwroot/a/b?k", "/a/b?k"),
        ("/old?k=v", "/brand-new?k=v"),
        ("/rx/abc?z=1", "/fixed?z=1"),
        ("/v1/users/7?x=1", "/users/7?x=1"),
        ("/v1/", "/"),
        ("/swap/a/b?q", "/b/a?q"),
    ];
    for (path, want) in cases {
        let r = get(&p.url(path), &[]).await;
        assert_eq!(r.status, 200, "{path}");
        let seen = up.last();
        assert_eq!(seen.uri, *want, "{path}");
        // No host_rewrite: the client's Host passes through.
        assert_eq!(seen.headers["host"], format!("127.0.0.1:{}", p.port));
    }

    let r = get(&p.url("/hr/z?a=b"), &[("host", "public.example.com")]).await;
    assert_eq!(r.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["host"], "quote.internal");
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
    assert_eq!(seen.uri, "/hr/z?a=b");
    // h2c downstream: the authority is rewritten too.
    let r = send(request("GET", &p.url("/hr/h2"), &[], ""), true)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(up.last().headers["host"], "quote.internal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_request_and_response_headers() {
    let up = Upstream::with(
        "hdr",
        Arc::new(|_s: &Seen| {
            Response::builder()
                .header("server", "upstream-server")
                .header("x-upstream-secret", "s3cr3t")
                .header("x-keep", "k")
                .header("x-rr", "from-upstream")
                .header("x-ra", "from-upstream")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap()
        }),
    )
    .await;
    let spec = format!(
        "{{ prefix: /hdr/, service: {}, \
         add_request_headers: {{ x-edge: portico, x-multi: added, x-replace: {{ value: new, append: false }} }}, \
         remove_request_headers: [cookie, X-Secret], \
         add_response_headers: {{ strict-transport-security: 'max-age=31536000', x-ra: edge, x-rr: {{ value: edge, append: false }} }}, \
         remove_response_headers: [server, X-Upstream-Secret] }}",
        up.addr
    );
    let p = Portico::start(&mapping("hdr", &spec)).await;

    let r = get(
        &p.url("/hdr/a"),
        &[
            ("x-multi", "orig"),
            ("x-replace", "old"),
            ("x-replace", "old2"),
            ("cookie", "session=1"),
            ("x-secret", "s"),
            ("x-other", "o"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");

    let seen = up.last();
    let all = |n: &str| -> Vec<String> {
        seen.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all("x-edge"), ["portico"]);
    assert_eq!(
        all("x-multi"),
        ["orig", "added"],
        "append keeps the client's value"
    );
    assert_eq!(all("x-replace"), ["new"], "append: false replaces");
    assert!(all("cookie").is_empty());
    assert!(all("x-secret").is_empty());
    assert_eq!(all("x-other"), ["o"]);

    let rall = |n: &str| -> Vec<String> {
        r.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(rall("strict-transport-security"), ["max-age=31536000"]);
    assert_eq!(rall("x-ra"), ["from-upstream", "edge"]);
    assert_eq!(rall("x-rr"), ["edge"]);
    assert_eq!(rall("x-keep"), ["k"]);
    assert!(rall("server").is_empty(), "server removed");
    assert!(rall("x-upstream-secret").is_empty());
}

/// Sends `n` GETs to `path` (8 at a time) and counts the answers per upstream.
async fn tally(p: &Portico, path: &str, n: usize) -> HashMap<String, usize> {
    use futures_util::StreamExt;
    let url = p.url(path);
    let results: Vec<Got> = futures_util::stream::iter(0..n)
        .map(|_| {
            let url = url.clone();
            async move { get(&url, &[]).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut m = HashMap::new();
    for r in results {
        assert_eq!(r.status, 200);
        *m.entry(who(&r)).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_split_traffic() {
    let u = ups(&["w20", "w80", "evenA", "evenB", "w50", "restA", "restB"]).await;
    let a = |i: usize| u[i].addr;
    let p = Portico::start(&docs(&[
        mapping(
            "w20",
            &format!("{{ prefix: /canary/, weight: 20, service: {} }}", a(0)),
        ),
        mapping(
            "w80",
            &format!("{{ prefix: /canary/, weight: 80, service: {} }}", a(1)),
        ),
        mapping(
            "even-a",
            &format!("{{ prefix: /even/, service: {} }}", a(2)),
        ),
        mapping(
            "even-b",
            &format!("{{ prefix: /even/, service: {} }}", a(3)),
        ),
        mapping(
            "w50",
            &format!("{{ prefix: /mixed/, weight: 50, service: {} }}", a(4)),
        ),
        mapping(
            "rest-a",
            &format!("{{ prefix: /mixed/, service: {} }}", a(5)),
        ),
        mapping(
            "rest-b",
            &format!("{{ prefix: /mixed/, service: {} }}", a(6)),
        ),
    ]))
    .await;

    // 20/80 over 1000 requests: binomial sd is ~12.6, the band is ~±5 sd.
    let m = tally(&p, "/canary/x", 1000).await;
    eprintln!("canary 20/80 over 1000: {m:?}");
    let w20 = m.get("w20").copied().unwrap_or(0);
    let w80 = m.get("w80").copied().unwrap_or(0);
    assert_eq!(w20 + w80, 1000);
    assert!((140..=260).contains(&w20), "w20 got {w20}");
    assert_eq!(u[0].count(), w20);
    assert_eq!(u[0].last().uri, "/canary/x");

    // Two unweighted Mappings split ~50/50 (sd ~15.8).
    let m = tally(&p, "/even/y", 1000).await;
    eprintln!("unweighted pair over 1000: {m:?}");
    let ea = m.get("evenA").copied().unwrap_or(0);
    assert_eq!(ea + m.get("evenB").copied().unwrap_or(0), 1000);
    assert!((420..=580).contains(&ea), "evenA got {ea}");

    // 50 weighted + two unweighted sharing the remaining 50: 50/25/25 (sd ~13.7 for 25%).
    let m = tally(&p, "/mixed/z", 1000).await;
    eprintln!("50 + two unweighted over 1000: {m:?}");
    let w50 = m.get("w50").copied().unwrap_or(0);
    let ra = m.get("restA").copied().unwrap_or(0);
    let rb = m.get("restB").copied().unwrap_or(0);
    assert_eq!(w50 + ra + rb, 1000);
    assert!((420..=580).contains(&w50), "w50 got {w50}");
    assert!((180..=320).contains(&ra), "restA got {ra}");
    assert!((180..=320).contains(&rb), "restB got {rb}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_direct_response() {
    let catch = Upstream::start("catch").await;
    let p = Portico::start(&docs(&[
        mapping("catch", &format!("{{ prefix: /, service: {} }}", catch.addr)),
        mapping("r-host", "{ prefix: /redir/, redirect: { host: new.example.com } }"),
        mapping("r-https", "{ prefix: /secure/, redirect: { https: true } }"),
        mapping("r-https-port", "{ prefix: /secport/, redirect: { https: true, port: 8443 } }"),
        mapping(
            "r-path",
            "{ prefix: /moved, prefix_exact: true, redirect: { path: /elsewhere, response_code: 308 } }",
        ),
        mapping(
            "r-prefix",
            "{ prefix: /oldp/, redirect: { prefix: /newp/, response_code: 302 } }",
        ),
        mapping("r-303", "{ prefix: /see/, redirect: { response_code: 303, host: other.org:81 } }"),
        mapping("r-307", "{ prefix: /tmp/, redirect: { response_code: 307, path: /t } }"),
        mapping(
            "d-tea",
            "{ prefix: /tea, prefix_exact: true, direct_response: { status: 418, body: \"short and stout\\n\", content_type: text/plain } }",
        ),
        mapping(
            "d-json",
            "{ prefix: /json, direct_response: { status: 200, body: '{\"ok\":true}', content_type: application/json } }",
        ),
        mapping("d-empty", "{ prefix: /empty, direct_response: { status: 204 } }"),
    ]))
    .await;
    let me = format!("127.0.0.1:{}", p.port);

    let cases: Vec<(&str, &str, u16, String)> = vec![
        (
            "/redir/x?q=1",
            "www.example.com:8080",
            301,
            "http://new.example.com/redir/x?q=1".into(),
        ),
        (
            "/secure/a?b=c",
            "www.example.com:8080",
            301,
            "https://www.example.com/secure/a?b=c".into(),
        ),
        (
            "/secure/",
            "www.example.com",
            301,
            "https://www.example.com/secure/".into(),
        ),
        (
            "/secport/a",
            "www.example.com:8080",
            301,
            "https://www.example.com:8443/secport/a".into(),
        ),
        ("/moved?x=1", &me, 308, format!("http://{me}/elsewhere?x=1")),
        ("/oldp/x/y?z", &me, 302, format!("http://{me}/newp/x/y?z")),
        ("/see/s", &me, 303, "http://other.org:81/see/s".into()),
        ("/tmp/a?b", &me, 307, format!("http://{me}/t?b")),
    ];
    for (path, host, code, loc) in &cases {
        let r = get_host(&p, host, path).await;
        assert_eq!(r.status.as_u16(), *code, "{path}");
        assert_eq!(r.header("location"), Some(loc.as_str()), "{path}");
    }

    let r = get(&p.url("/tea"), &[]).await;
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "short and stout\n");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-length"), Some("16"));
    let r = post(&p.url("/json/anything"), "ignored").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"ok\":true}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&p.url("/empty"), &[]).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());

    // None of those reached an upstream; the catch-all still does.
    assert_eq!(catch.count(), 0);
    let r = get(&p.url("/tea/more"), &[]).await;
    assert_eq!(who(&r), "catch");
    assert_eq!(catch.last().uri, "/tea/more");

    // Access log: local answers carry the route and no upstream.
    let log = p.wait_log_lines(cases.len() + 4).await;
    let tea = log.iter().find(|l| l["path"] == "/tea").expect("log");
    assert_eq!(tea["status"], 418);
    assert_eq!(tea["route"], "d-tea");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_upstream_endpoints() {
    let u = ups(&["e1", "e2", "e3"]).await;
    let p = Portico::start(&docs(&[
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: pool }}\nspec: {{ endpoints: [\"{}\", \"{}\", \"{}\"] }}\n",
            u[0].addr, u[1].addr, u[2].addr
        ),
        mapping("rr", "{ prefix: /rr/, service: pool }"),
    ]))
    .await;

    // Sequential requests: round robin should be exact or nearly so.
    let mut m: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let r = get(&p.url(&format!("/rr/{i}")), &[]).await;
        assert_eq!(r.status, 200);
        *m.entry(who(&r)).or_insert(0) += 1;
    }
    eprintln!("round robin over 3 endpoints, 300 sequential requests: {m:?}");
    for e in ["e1", "e2", "e3"] {
        let n = m.get(e).copied().unwrap_or(0);
        assert!((90..=110).contains(&n), "{e} got {n}: {m:?}");
    }
    // Each endpoint saw its requests with the path unchanged.
    assert!(u[0].last().uri.starts_with("/rr/"));
    let log = p.wait_log_lines(300).await;
    let line = log.iter().find(|l| l["path"] == "/rr/0").expect("log line");
    assert_eq!(line["upstream"], "pool");

    // Concurrent requests too.
    let m = tally(&p, "/rr/c", 300).await;
    eprintln!("round robin over 3 endpoints, 300 requests 8 at a time: {m:?}");
    for e in ["e1", "e2", "e3"] {
        let n = m.get(e).copied().unwrap_or(0);
        assert!((80..=120).contains(&n), "{e} got {n}: {m:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_service_and_upstream_dns() {
    // The upstream binds 127.0.0.1 only. In this environment `localhost` resolves to
    // 127.0.0.1 alone (/etc/hosts); where it also resolves to ::1, the proxy must fail over
    // from the refused ::1 connection to 127.0.0.1, so every request must succeed either way.
    let up = Upstream::start("dns").await;
    let up2 = Upstream::start("dns2").await;
    let port = up.addr.port();
    let p = Portico::start(&docs(&[
        mapping("by-name", &format!("{{ prefix: /dns/, service: 'localhost:{port}' }}")),
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: resolved }}\nspec: {{ dns: 'localhost:{}' }}\n",
            up2.addr.port()
        ),
        mapping("by-upstream", "{ prefix: /dnsup/, service: resolved }"),
    ]))
    .await;
    for i in 0..50 {
        let r = get(&p.url(&format!("/dns/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(who(&r), "dns");
        let r = get(&p.url(&format!("/dnsup/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(who(&r), "dns2");
    }
    assert_eq!(up.count(), 50);
    assert_eq!(up.last().uri, "/dns/49");
    assert_eq!(up2.count(), 50);

    // What resolved endpoints the proxy shows.
    let ups = get(&p.admin_url("/upstreams"), &[]).await;
    eprintln!("/upstreams: {}", ups.text());
    let log = p.wait_log_lines(100).await;
    let line = log.iter().find(|l| l["path"] == "/dns/0").expect("log");
    assert_eq!(line["upstream_addr"], up.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_replies_no_route_and_upstream_down() {
    let dead = free_port(); // nothing listens there
    let p = Portico::start(&docs(&[
        mapping(
            "down",
            &format!("{{ prefix: /down/, service: '127.0.0.1:{dead}' }}"),
        ),
        // A name that resolves to nothing: an upstream without a single endpoint.
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: nowhere }}\nspec: {{ dns: 'does-not-exist.invalid:80' }}\n"
        ),
        mapping("empty", "{ prefix: /empty/, service: nowhere }"),
    ]))
    .await;
    let r = get(&p.url("/empty/a"), &[]).await;
    assert_eq!(r.status, 503);
    let r = send(
        request(
            "POST",
            &p.url("/empty/grpc"),
            &[("content-type", "application/grpc")],
            "",
        ),
        true,
    )
    .await
    .expect("grpc request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"), "UNAVAILABLE");
    let r = get(&p.url("/nowhere?x=1"), &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route\n");
    let r = get(&p.url("/down/a"), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text().lines().count(),
        1,
        "one short line: {:?}",
        r.text()
    );

    let log = p.wait_log_lines(4).await;
    let nr = log
        .iter()
        .find(|l| l["path"] == "/nowhere?x=1")
        .expect("NR line");
    assert_eq!(nr["flags"], "NR");
    assert_eq!(nr["status"], 404);
    let uf = log
        .iter()
        .find(|l| l["path"] == "/down/a")
        .expect("UF line");
    assert_eq!(uf["status"], 503);
    assert_eq!(uf["flags"], "UF");
    assert_eq!(uf["route"], "down");
    let uh = log
        .iter()
        .find(|l| l["path"] == "/empty/a")
        .expect("UH line");
    assert_eq!(uh["status"], 503);
    assert_eq!(uh["flags"], "UH");
    assert_eq!(uh["route"], "empty");
}

/// A raw upstream that answers every connection with `reply` and closes.
async fn raw_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                // Read the request head, then answer and close.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(reply).await;
                let _ = s.flush().await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_mid_response_gives_error_not_hang() {
    let partial = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\nonly part of it",
    )
    .await;
    let nothing = raw_upstream(b"").await;
    let garbage = raw_upstream(b"NOT HTTP AT ALL\r\n\r\n").await;
    let p = Portico::start(&docs(&[
        mapping(
            "partial",
            &format!("{{ prefix: /partial/, service: {partial} }}"),
        ),
        mapping(
            "nothing",
            &format!("{{ prefix: /nothing/, service: {nothing} }}"),
        ),
        mapping(
            "garbage",
            &format!("{{ prefix: /garbage/, service: {garbage} }}"),
        ),
    ]))
    .await;

    for h2 in [false, true] {
        // Headers were already sent: the client must see a body error (reset), within bounds.
        let r = tokio::time::timeout(
            Duration::from_secs(8),
            send(request("GET", &p.url("/partial/x"), &[], ""), h2),
        )
        .await
        .expect("client hung on a truncated upstream response");
        match r {
            Err(e) => eprintln!("truncated response (h2={h2}): client error {e}"),
            Ok(g) => panic!(
                "truncated upstream body delivered as a complete response (h2={h2}): {} {:?}",
                g.status,
                g.text()
            ),
        }

        // Closed before any response: 502 (UC).
        let r = tokio::time::timeout(
            Duration::from_secs(8),
            send(request("GET", &p.url("/nothing/x"), &[], ""), h2),
        )
        .await
        .expect("hang")
        .expect("local reply");
        assert_eq!(r.status, 502, "h2={h2}");
        // Not HTTP: 502 too.
        let r = tokio::time::timeout(
            Duration::from_secs(8),
            send(request("GET", &p.url("/garbage/x"), &[], ""), h2),
        )
        .await
        .expect("hang")
        .expect("local reply");
        assert_eq!(r.status, 502, "h2={h2}");
    }
    let log = p.wait_log_lines(6).await;
    let uc = log
        .iter()
        .find(|l| l["path"] == "/nothing/x")
        .expect("log line");
    assert_eq!(uc["status"], 502);
    assert_eq!(uc["flags"], "UC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_over_upstream_endpoints() {
    let u = ups(&["w1", "w2"]).await;
    let p = Portico::start(&docs(&[
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: wpool }}\nspec: {{ endpoints: [\"{}\", {{ address: \"{}\", weight: 2 }}] }}\n",
            u[0].addr, u[1].addr
        ),
        mapping("wrr", "{ prefix: /wrr/, service: wpool }"),
    ]))
    .await;
    let mut m: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let r = get(&p.url("/wrr/x"), &[]).await;
        assert_eq!(r.status, 200);
        *m.entry(who(&r)).or_insert(0) += 1;
    }
    eprintln!("weighted round robin 1:2 over 300 requests: {m:?}");
    let w1 = m.get("w1").copied().unwrap_or(0);
    let w2 = m.get("w2").copied().unwrap_or(0);
    assert_eq!(w1 + w2, 300);
    assert!((85..=115).contains(&w1), "w1 got {w1}: {m:?}");
    assert_eq!(u[1].last().uri, "/wrr/x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_fails_over_to_another_endpoint() {
    let u = ups(&["alive1", "alive2"]).await;
    let dead = free_port();
    let p = Portico::start(&docs(&[
        format!(
            "{API}\nkind: Upstream\nmetadata: {{ name: half }}\nspec: {{ endpoints: [\"127.0.0.1:{dead}\", \"{}\", \"{}\"] }}\n",
            u[0].addr, u[1].addr
        ),
        mapping("fo", "{ prefix: /fo/, service: half }"),
    ]))
    .await;
    for i in 0..60 {
        let r = get(&p.url(&format!("/fo/{i}")), &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(u[0].count() + u[1].count(), 60);
    assert!(
        u[0].count() >= 10 && u[1].count() >= 10,
        "{} / {}",
        u[0].count(),
        u[1].count()
    );
    // Some requests hit the dead endpoint first and needed a second attempt.
    let log = p.wait_log_lines(60).await;
    let retried = log
        .iter()
        .filter(|l| l["attempts"].as_u64() == Some(2))
        .count();
    eprintln!("requests that failed over after a refused connect: {retried}/60");
    assert!(retried >= 1, "{log:?}");
    assert!(log.iter().all(|l| l["status"] == 200 && l["flags"] == "-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_agrees_with_the_route_taken() {
    let u = ups(&["a", "b", "c", "d"]).await;
    let a = |i: usize| u[i].addr;
    let p = Portico::start(&docs(&[
        mapping("ex-star", &format!("{{ prefix: /x/, service: {} }}", a(0))),
        mapping(
            "ex-host",
            &format!("{{ hostname: '*.example.com', prefix: /x/, rewrite: /y/, service: {} }}", a(1)),
        ),
        mapping(
            "ex-hdr",
            &format!("{{ prefix: /x/, headers: {{ x-v: '2' }}, service: {} }}", a(2)),
        ),
        mapping(
            "ex-regex-ci",
            &format!(
                "{{ prefix: '/x/[a-z]+/[0-9]+', prefix_regex: true, case_sensitive: false, service: {} }}",
                a(3)
            ),
        ),
    ]))
    .await;
    let cases: &[(&str, &str, Option<&str>, &str, &str)] = &[
        // (host, path, header x-v, expected route, path the upstream sees)
        ("127.0.0.1", "/x/1", None, "ex-star", "/x/1"),
        ("www.example.com", "/x/1?q", None, "ex-host", "/y/1?q"),
        ("127.0.0.1", "/x/1", Some("2"), "ex-hdr", "/x/1"),
        ("127.0.0.1", "/X/ABC/42", None, "ex-regex-ci", "/X/ABC/42"),
    ];
    for (i, (host, path, xv, route, upath)) in cases.iter().enumerate() {
        let mut h = vec![("host", *host)];
        if let Some(v) = xv {
            h.push(("x-v", v));
        }
        let r = get(&p.url(path), &h).await;
        assert_eq!(r.status, 200, "{path}");
        let log = p.wait_log_lines(i + 1).await;
        assert_eq!(log[i]["route"], *route, "{path}");
        let served = u.iter().find(|x| x.name == who(&r)).unwrap();
        assert_eq!(served.last().uri, *upath);

        let mut q = format!(
            "/explain?method=GET&url=http%3A%2F%2F{host}{}",
            path.replace('?', "%3F")
        );
        if let Some(v) = xv {
            q.push_str(&format!("&header=x-v%3A{v}"));
        }
        let e = get(&p.admin_url(&q), &[]).await;
        assert_eq!(e.status, 200, "{}", e.text());
        let v: serde_json::Value = serde_json::from_slice(&e.body).expect("json");
        assert_eq!(v["route"], *route, "{v:#}");
        assert_eq!(v["rewritten_path"], *upath, "{v:#}");
    }
}
