//! Unit tests of the route translation: match order across virtual hosts, match kinds,
//! rewrites, redirects, direct responses, headers, canary weights, timeouts and retries.

use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, header_matcher::HeaderMatchSpecifier, redirect_action, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use portico_config::snapshot::HostGlob;

use crate::test_util::{snap, unpack};
use crate::{Warnings, translate};

fn rc(yaml: &str) -> RouteConfiguration {
    let t = translate(&snap(yaml));
    assert_eq!(t.resources.routes.len(), 1);
    unpack(&t.resources.routes[0])
}

fn mapping(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: portico.dev/v1\nkind: Mapping\nmetadata: {{ name: {name} }}\nspec:\n{spec}\n"
    )
}

fn vhost<'a>(
    rc: &'a RouteConfiguration,
    domain: &str,
) -> &'a envoy_types::pb::envoy::config::route::v3::VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.domains == [domain])
        .unwrap_or_else(|| panic!("no virtual host {domain}"))
}

fn names(v: &envoy_types::pb::envoy::config::route::v3::VirtualHost) -> Vec<&str> {
    v.routes.iter().map(|r| r.name.as_str()).collect()
}

fn action(r: &envoy_types::pb::envoy::config::route::v3::Route) -> &route_action::ClusterSpecifier {
    match &r.action {
        Some(route::Action::Route(a)) => a.cluster_specifier.as_ref().expect("cluster"),
        other => panic!("not a route action: {other:?}"),
    }
}

fn route_action_of(
    r: &envoy_types::pb::envoy::config::route::v3::Route,
) -> &envoy_types::pb::envoy::config::route::v3::RouteAction {
    match &r.action {
        Some(route::Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn covers_is_glob_inclusion() {
    use crate::routes::covers;
    let any = HostGlob::Any;
    let sfx = HostGlob::parse("*.example.com");
    let sub = HostGlob::parse("*.a.example.com");
    let ex = HostGlob::parse("x.example.com");
    let other = HostGlob::parse("x.other.com");
    assert!(covers(&any, &ex) && covers(&any, &sfx) && covers(&any, &any));
    assert!(covers(&sfx, &ex) && covers(&sfx, &sub) && covers(&sfx, &sfx));
    assert!(!covers(&sfx, &other) && !covers(&sfx, &any) && !covers(&sub, &sfx));
    assert!(covers(&ex, &ex) && !covers(&ex, &sfx) && !covers(&ex, &any));
}

#[test]
fn virtual_hosts_keep_portico_global_order() {
    // A `*` route with higher precedence beats an exact-host route (§2.3.1): the exact host's
    // virtual host must list it first; the exact route must not appear for other hosts.
    let y = [
        mapping(
            "exact",
            "  hostname: a.example.com\n  prefix: /\n  service: 127.0.0.1:1",
        ),
        mapping(
            "star-high",
            "  prefix: /\n  precedence: 5\n  service: 127.0.0.1:2",
        ),
        mapping(
            "wild",
            "  hostname: \"*.example.com\"\n  prefix: /w/\n  service: 127.0.0.1:3",
        ),
        mapping("star", "  prefix: /s/\n  service: 127.0.0.1:4"),
    ]
    .concat();
    let rc = rc(&y);
    assert_eq!(rc.name, "portico");
    assert_eq!(names(vhost(&rc, "*")), ["star-high", "star"]);
    assert_eq!(
        names(vhost(&rc, "*.example.com")),
        ["star-high", "wild", "star"]
    );
    assert_eq!(
        names(vhost(&rc, "a.example.com")),
        ["star-high", "exact", "wild", "star"]
    );
    assert_eq!(rc.virtual_hosts.len(), 3);
}

#[test]
fn match_kinds_translate() {
    let y = [
        mapping("p", "  prefix: /p/\n  service: 127.0.0.1:1"),
        mapping("pi", "  prefix: /PI/\n  case_sensitive: false\n  service: 127.0.0.1:1"),
        mapping("e", "  prefix: /exact\n  prefix_exact: true\n  service: 127.0.0.1:1"),
        mapping("r", "  prefix: \"/r/[0-9]+\"\n  prefix_regex: true\n  service: 127.0.0.1:1"),
        mapping("ri", "  prefix: \"/ri/[a-z]+\"\n  prefix_regex: true\n  case_sensitive: false\n  service: 127.0.0.1:1"),
        mapping(
            "h",
            "  prefix: /h/\n  method: POST\n  headers: { x-a: \"1\", x-present: \"\" }\n  regex_headers: { x-r: \"v[0-9]\" }\n  query_parameters: { q: \"1\" }\n  regex_query_parameters: { rq: \"a.*\" }\n  service: 127.0.0.1:1",
        ),
    ]
    .concat();
    let rc = rc(&y);
    let v = vhost(&rc, "*");
    let by = |n: &str| v.routes.iter().find(|r| r.name == n).expect("route");
    let m = |n: &str| by(n).r#match.clone().expect("match");

    let p = m("p");
    assert_eq!(
        p.path_specifier,
        Some(route_match::PathSpecifier::Prefix("/p/".into()))
    );
    assert_eq!(p.case_sensitive.map(|b| b.value), Some(true));
    let pi = m("pi");
    assert_eq!(
        pi.path_specifier,
        Some(route_match::PathSpecifier::Prefix("/pi/".into()))
    );
    assert_eq!(pi.case_sensitive.map(|b| b.value), Some(false));
    assert_eq!(
        m("e").path_specifier,
        Some(route_match::PathSpecifier::Path("/exact".into()))
    );
    match m("r").path_specifier {
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            assert_eq!(re.regex, "^(?:/r/[0-9]+)$");
        }
        other => panic!("{other:?}"),
    }
    match m("ri").path_specifier {
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            assert_eq!(re.regex, "(?i)^(?:/ri/[a-z]+)$");
        }
        other => panic!("{other:?}"),
    }
    let h = m("h");
    let hdr = |n: &str| {
        h.headers
            .iter()
            .find(|x| x.name == n)
            .and_then(|x| x.header_match_specifier.clone())
            .unwrap_or_else(|| panic!("no header matcher {n}"))
    };
    match hdr(":method") {
        HeaderMatchSpecifier::StringMatch(s) => {
            assert_eq!(s.match_pattern, Some(MatchPattern::Exact("POST".into())));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(hdr("x-present"), HeaderMatchSpecifier::PresentMatch(true));
    match hdr("x-a") {
        HeaderMatchSpecifier::StringMatch(s) => {
            assert_eq!(s.match_pattern, Some(MatchPattern::Exact("1".into())));
        }
        other => panic!("{other:?}"),
    }
    match hdr("x-r") {
        HeaderMatchSpecifier::StringMatch(s) => match s.match_pattern {
            Some(MatchPattern::SafeRegex(re)) => assert_eq!(re.regex, "^(?:v[0-9])$"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert_eq!(h.query_parameters.len(), 2);
    assert!(h.query_parameters.iter().any(|q| q.name == "q"));
    assert!(h.query_parameters.iter().any(|q| q.name == "rq"));
}

#[test]
fn rewrites_redirects_direct_headers() {
    let y = [
        mapping("pre", "  prefix: /api/\n  rewrite: /v1/\n  host_rewrite: internal.example\n  service: 127.0.0.1:1"),
        mapping(
            "rx",
            "  prefix: /rx/\n  regex_rewrite: { pattern: \"^/rx/([a-z]+)/(.*)$\", substitution: \"/\\\\2/\\\\1\" }\n  service: 127.0.0.1:1",
        ),
        mapping("rxp", "  prefix: \"/rp/.*\"\n  prefix_regex: true\n  rewrite: /fixed\n  service: 127.0.0.1:1"),
        mapping("redir", "  prefix: /old/\n  redirect: { https: true, prefix: /new/, response_code: 308 }"),
        mapping("redir-path", "  prefix: /gone\n  redirect: { host: other.example, port: 8443, path: /here }"),
        mapping("direct", "  prefix: /d\n  direct_response: { status: 418, body: teapot, content_type: text/plain }"),
        mapping(
            "hdr",
            "  prefix: /hdr/\n  add_request_headers: { x-add: a, x-set: { value: s, append: false } }\n  remove_request_headers: [x-drop]\n  add_response_headers: { x-resp: r }\n  remove_response_headers: server\n  service: 127.0.0.1:1",
        ),
    ]
    .concat();
    let rc = rc(&y);
    let v = vhost(&rc, "*");
    let by = |n: &str| v.routes.iter().find(|r| r.name == n).expect("route");

    let a = route_action_of(by("pre"));
    assert_eq!(a.prefix_rewrite, "/v1/");
    assert_eq!(
        a.host_rewrite_specifier,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "internal.example".into()
        ))
    );
    let rx = route_action_of(by("rx"))
        .regex_rewrite
        .clone()
        .expect("regex rewrite");
    assert_eq!(rx.pattern.expect("pattern").regex, "^/rx/([a-z]+)/(.*)$");
    assert_eq!(rx.substitution, "/\\2/\\1");
    let rxp = route_action_of(by("rxp"))
        .regex_rewrite
        .clone()
        .expect("whole-path rewrite");
    assert_eq!(rxp.pattern.expect("pattern").regex, "^.*$");
    assert_eq!(rxp.substitution, "/fixed");

    match &by("redir").action {
        Some(route::Action::Redirect(r)) => {
            assert_eq!(
                r.scheme_rewrite_specifier,
                Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true))
            );
            assert_eq!(
                r.path_rewrite_specifier,
                Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                    "/new/".into()
                ))
            );
            assert_eq!(
                r.response_code,
                redirect_action::RedirectResponseCode::PermanentRedirect as i32
            );
            assert!(!r.strip_query);
        }
        other => panic!("{other:?}"),
    }
    match &by("redir-path").action {
        Some(route::Action::Redirect(r)) => {
            assert_eq!(r.host_redirect, "other.example");
            assert_eq!(r.port_redirect, 8443);
            assert_eq!(
                r.path_rewrite_specifier,
                Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                    "/here".into()
                ))
            );
            assert_eq!(
                r.response_code,
                redirect_action::RedirectResponseCode::MovedPermanently as i32
            );
        }
        other => panic!("{other:?}"),
    }
    let d = by("direct");
    match &d.action {
        Some(route::Action::DirectResponse(r)) => {
            assert_eq!(r.status, 418);
            let body = r.body.clone().and_then(|b| b.specifier);
            assert_eq!(
                body,
                Some(
                    envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineBytes(
                        b"teapot".to_vec()
                    )
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(d.response_headers_to_add.iter().any(|h| {
        h.header
            .as_ref()
            .is_some_and(|h| h.key == "content-type" && h.value == "text/plain")
    }));

    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction as A;
    let h = by("hdr");
    let add = |k: &str| {
        h.request_headers_to_add
            .iter()
            .find(|o| o.header.as_ref().is_some_and(|x| x.key == k))
            .map(|o| (o.header.clone().map(|x| x.value), o.append_action))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(
        add("x-add"),
        (Some("a".into()), A::AppendIfExistsOrAdd as i32)
    );
    assert_eq!(
        add("x-set"),
        (Some("s".into()), A::OverwriteIfExistsOrAdd as i32)
    );
    assert_eq!(h.request_headers_to_remove, ["x-drop"]);
    assert_eq!(h.response_headers_to_remove, ["server"]);
    assert_eq!(h.response_headers_to_add.len(), 1);
}

#[test]
fn canary_group_becomes_weighted_clusters() {
    let y = [
        mapping("stable", "  prefix: /c/\n  service: 127.0.0.1:1"),
        mapping(
            "canary",
            "  prefix: /c/\n  weight: 10\n  service: 127.0.0.1:2",
        ),
    ]
    .concat();
    let rc = rc(&y);
    let v = vhost(&rc, "*");
    assert_eq!(v.routes.len(), 1, "one Envoy route per canary group");
    match action(&v.routes[0]) {
        route_action::ClusterSpecifier::WeightedClusters(wc) => {
            let w: Vec<(String, u32)> = wc
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight.map_or(0, |w| w.value)))
                .collect();
            assert_eq!(
                w,
                [
                    ("127.0.0.1:1".to_string(), 9000),
                    ("127.0.0.1:2".to_string(), 1000)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn timeouts_and_retries() {
    let y = [
        mapping(
            "t",
            "  prefix: /t/\n  timeout_ms: 1500\n  idle_timeout_ms: 7000\n  retry_policy: { retry_on: \"5xx,connect-failure,retriable-status-codes\", num_retries: 2, per_try_timeout_ms: 500, retriable_status_codes: [409] }\n  service: 127.0.0.1:1",
        ),
        mapping("none", "  prefix: /n/\n  timeout_ms: 0\n  service: 127.0.0.1:1"),
    ]
    .concat();
    let rc = rc(&y);
    let v = vhost(&rc, "*");
    let by = |n: &str| v.routes.iter().find(|r| r.name == n).expect("route");
    let a = route_action_of(by("t"));
    let t = a.timeout.expect("timeout");
    assert_eq!((t.seconds, t.nanos), (1, 500_000_000));
    assert_eq!(a.idle_timeout.map(|d| d.seconds), Some(7));
    let r = a.retry_policy.clone().expect("retry");
    assert_eq!(r.retry_on, "5xx,connect-failure,retriable-status-codes");
    assert_eq!(r.num_retries.map(|n| n.value), Some(2));
    assert_eq!(r.per_try_timeout.map(|d| d.nanos), Some(500_000_000));
    assert_eq!(r.retriable_status_codes, [409]);
    // timeout_ms: 0 is "no limit": Envoy's 0 s, not its 15 s default.
    let n = route_action_of(by("none"))
        .timeout
        .expect("explicit timeout");
    assert_eq!((n.seconds, n.nanos), (0, 0));
}

#[test]
fn substitution_goes_back_to_backslashes() {
    assert_eq!(super::envoy_substitution("/${2}/${1}"), "/\\2/\\1");
    assert_eq!(super::envoy_substitution("$x ${a} ${"), "$x ${a} ${");
}

#[test]
fn warnings_name_fields() {
    let y = [
        mapping("c", "  prefix: /c/\n  cors: { origins: \"*\" }\n  service: 127.0.0.1:1"),
        mapping("hr", "  hostname: \"[a-z]+\\\\.example\"\n  host_regex: true\n  prefix: /\n  service: 127.0.0.1:1"),
    ]
    .concat();
    let s = snap(&y);
    let mut w = Warnings::default();
    let rc = super::route_configurations(&s, &mut w).remove(0);
    assert!(
        w.0.iter()
            .any(|x| x.resource == "c" && x.field == "spec.cors.methods")
    );
    assert!(
        w.0.iter()
            .any(|x| x.resource == "hr" && x.field == "spec.host_regex")
    );
    // A route Envoy cannot match exactly is left out rather than matching more.
    assert!(
        rc.virtual_hosts
            .iter()
            .all(|v| v.routes.iter().all(|r| r.name != "hr"))
    );
}
