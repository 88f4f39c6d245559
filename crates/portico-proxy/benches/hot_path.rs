//! Micro-benchmarks of request-path pieces (issue 8): header rewriting and the local rate
//! limiter. Route lookup has its own in `portico-config/benches/router.rs`.
//!
//! `cargo bench -p portico-proxy --bench hot_path`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use portico_config::snapshot::{HeaderAdd, RateLimitUnit};
use portico_proxy::headers;
use portico_proxy::ratelimit::LocalLimiter;

/// What a browser-ish client sends, plus what an upstream answers.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "api.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-US,en;q=0.5"),
        ("cookie", "session=abc123; theme=dark"),
        ("x-request-id", "0a1b2c3d-0000-4000-8000-000000000000"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("server", "nginx"),
        ("date", "Thu, 26 Nov 2026 22:00:00 GMT"),
        ("content-type", "application/json"),
        ("content-length", "2"),
        ("connection", "keep-alive"),
    ] {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h
}

fn header_rewriting(c: &mut Criterion) {
    let client = headers::ip_value("203.0.113.7".parse().expect("ip"));
    let add = vec![HeaderAdd {
        name: HeaderName::from_static("x-route"),
        value: HeaderValue::from_static("api"),
        append: false,
    }];
    let remove = vec![HeaderName::from_static("cookie")];
    c.bench_function("request_headers_forwarded", |b| {
        b.iter_batched(
            request_headers,
            |mut h| {
                black_box(headers::strip_hop_by_hop(&mut h));
                headers::append_forwarded_for(&mut h, &client);
                headers::apply_rules(&mut h, &remove, &add);
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("response_hop_by_hop", |b| {
        b.iter_batched(
            response_headers,
            |mut h| {
                black_box(headers::strip_hop_by_hop(&mut h));
                h
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("new_request_id", |b| b.iter(headers::new_request_id));
}

fn rate_limiter(c: &mut Criterion) {
    let limiter = LocalLimiter::new(1_000_000_000, RateLimitUnit::Second, 0);
    c.bench_function("local_limit_one_key", |b| {
        b.iter(|| black_box(limiter.check(black_box(42))))
    });
    let many = LocalLimiter::new(1_000_000_000, RateLimitUnit::Second, 0);
    let mut k = 0u64;
    c.bench_function("local_limit_10k_keys", |b| {
        b.iter(|| {
            k = (k + 7919) % 10_000;
            black_box(many.check(black_box(k)))
        })
    });
}

criterion_group!(benches, header_rewriting, rate_limiter);
criterion_main!(benches);
