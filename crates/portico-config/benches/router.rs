//! Route index benchmark: 10,000 Mappings with distinct prefixes (`/svc{i}/api/`), every tenth
//! on its own exact hostname, every 20th on a wildcard hostname, every seventh needing a header,
//! every 13th a method. Measures `Router::build` and `lookup` of the last route in match order,
//! a middle one, and a request that matches nothing.
//!
//! `cargo bench -p portico-config --bench router`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portico_config::router::{RequestView, Router};
use portico_config::snapshot::{
    HeaderMatch, HostGlob, PathMatch, Rewrite, Route, RouteAction, ValueMatch,
};

const N: usize = 10_000;

fn route(i: usize) -> Route {
    let hostname = if i % 10 == 3 {
        HostGlob::parse(&format!("svc{i}.example.com"))
    } else if i % 20 == 5 {
        HostGlob::parse("*.example.com")
    } else {
        HostGlob::Any
    };
    let mut headers = Vec::new();
    if i.is_multiple_of(7) {
        headers.push(HeaderMatch {
            name: HeaderName::from_static("x-tenant"),
            value: ValueMatch::Exact(format!("t{i}")),
        });
    }
    Route {
        id: 0,
        name: format!("svc{i}"),
        file: "bench.yaml".into(),
        line: 0,
        hostname,
        path: PathMatch::Prefix {
            prefix: format!("/svc{i}/api/"),
            case_sensitive: i % 11 != 4,
        },
        method: i.is_multiple_of(13).then_some(Method::GET),
        headers,
        query: Vec::new(),
        precedence: 0,
        weight: None,
        effective_weight: 100.0,
        group: 0,
        action: RouteAction::Forward { upstream: 0 },
        rewrite: Rewrite::None,
        host_rewrite: None,
        add_request_headers: Vec::new(),
        remove_request_headers: Vec::new(),
        add_response_headers: Vec::new(),
        remove_response_headers: Vec::new(),
        timeout: None,
        idle_timeout: None,
        grpc: false,
        grpc_timeout_max: None,
        allow_upgrade: Vec::new(),
        retry: None,
        rate_limits: Vec::new(),
        cors: None,
        shadow: None,
        compression: None,
        max_request_body: None,
        auth: Default::default(),
        extra: None,
    }
}

/// Sorted in reference §2.3.1 match order, ids assigned, groups of one.
fn routes() -> Vec<Arc<Route>> {
    let mut routes: Vec<Route> = (0..N).map(route).collect();
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.precedence),
            std::cmp::Reverse(r.hostname.specificity()),
            !matches!(r.path, PathMatch::Exact { .. }),
            std::cmp::Reverse(r.path.order_len()),
            std::cmp::Reverse(r.headers.len()),
            std::cmp::Reverse(r.query.len()),
            r.method.is_none(),
        )
    });
    routes
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r.id = i;
            r.group = i;
            Arc::new(r)
        })
        .collect()
}

/// A request that the given route matches (and, prefixes being distinct, no earlier one).
struct Req {
    host: String,
    path: String,
    headers: HeaderMap,
}

fn request_for(route: &Route) -> Req {
    let host = match &route.hostname {
        HostGlob::Any => "client.example.org".to_string(),
        HostGlob::Suffix(s) => format!("edge{s}"),
        HostGlob::Exact(h) => h.clone(),
    };
    let PathMatch::Prefix { prefix, .. } = &route.path else {
        unreachable!("prefix routes only")
    };
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    for h in &route.headers {
        if let ValueMatch::Exact(v) = &h.value {
            headers.insert(
                h.name.clone(),
                HeaderValue::from_str(v).expect("header value"),
            );
        }
    }
    Req {
        host,
        path: format!("{prefix}items/42"),
        headers,
    }
}

fn bench(c: &mut Criterion) {
    let routes = routes();
    c.bench_function("build_10k", |b| {
        b.iter(|| Router::build(black_box(&routes)))
    });

    let router = Router::build(&routes);
    let cases = [
        ("lookup_last", Some(N - 1), request_for(&routes[N - 1])),
        ("lookup_middle", Some(N / 2), request_for(&routes[N / 2])),
        (
            "lookup_miss",
            None,
            Req {
                host: "client.example.org".into(),
                path: "/svc123/nope/items/42".into(),
                headers: request_for(&routes[0]).headers,
            },
        ),
    ];
    for (name, want, req) in &cases {
        let view = RequestView {
            host: &req.host,
            authority: &req.host,
            path: &req.path,
            query: Some("page=2&sort=asc"),
            method: &Method::GET,
            headers: &req.headers,
        };
        assert_eq!(router.lookup(&view).map(|r| r.id), *want, "{name}");
        c.bench_function(name, |b| {
            b.iter(|| router.lookup(black_box(&view)).map(|r| r.id))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
