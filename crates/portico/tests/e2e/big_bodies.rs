//! 20 MB request and response bodies stream through Portico across protocol translation
//! (HTTP/1.1 downstream → h2c upstream, h2c downstream → HTTP/1.1 upstream) with intact
//! checksums (FNV-1a 64 over every byte, plus the length).

use crate::common;
use common::*;

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;

const SIZE: usize = 20 * 1024 * 1024;

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `SIZE` pseudo-random bytes (xorshift), different per seed.
fn payload(seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(SIZE);
    while v.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(SIZE);
    Bytes::from(v)
}

/// An upstream that reports the checksum of the body it got and answers a 20 MB body.
async fn hashing_upstream(response: Bytes) -> Upstream {
    Upstream::with(
        "big",
        Arc::new(move |s: &Seen| {
            let mut r = Response::new(Full::new(response.clone()));
            let h = r.headers_mut();
            h.insert("x-req-len", s.body.len().into());
            h.insert(
                "x-req-hash",
                format!("{:016x}", fnv1a(&s.body)).parse().expect("hv"),
            );
            r
        }),
    )
    .await
}

async fn round_trip(p: &Portico, path: &str, h2_downstream: bool, up: &Upstream) {
    let req_body = payload(7);
    let resp_body = payload(11);
    let r = send(
        request("POST", &p.url(path), &[], req_body.clone()),
        h2_downstream,
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200, "{}", p.stderr());
    assert_eq!(r.header("x-req-len"), Some(SIZE.to_string().as_str()));
    assert_eq!(
        r.header("x-req-hash"),
        Some(format!("{:016x}", fnv1a(&req_body)).as_str())
    );
    assert_eq!(r.body.len(), SIZE);
    assert_eq!(fnv1a(&r.body), fnv1a(&resp_body));
    let seen = up.last();
    let expect_version = if path.starts_with("/h2/") {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    assert_eq!(seen.version, expect_version);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_megabytes_each_way_across_protocol_translation() {
    let up = hashing_upstream(payload(11)).await;
    let p = Portico::start(&cfg::docs(&[
        cfg::mapping("h2")
            .prefix("/h2/")
            .service(format!("h2c://{}", up.addr))
            .timeout_ms(0),
        cfg::mapping("h1")
            .prefix("/h1/")
            .service(up.addr)
            .timeout_ms(0),
    ]))
    .await;
    // HTTP/1.1 downstream -> HTTP/2 upstream.
    round_trip(&p, "/h2/up", false, &up).await;
    // HTTP/2 downstream -> HTTP/1.1 upstream.
    round_trip(&p, "/h1/up", true, &up).await;
    let log = p.wait_log_lines(2).await;
    for l in &log {
        assert_eq!(l["bytes_received"], SIZE as u64, "{l}");
        assert_eq!(l["bytes_sent"], SIZE as u64, "{l}");
    }
}
