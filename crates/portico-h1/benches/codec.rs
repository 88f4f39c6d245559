//! Micro-benchmarks of the HTTP/1 codec's per-request work: parse a browser-ish request
//! head, write the upstream head, parse and write an answer head, decode a chunked body.
//!
//! `cargo bench -p portico-h1 --bench codec`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use portico_h1::{
    BodyDecoder, BodyOut, Framing, Limits, RequestContext, RequestParser, ResponseParser, Step,
    encode_chunk_header, encode_last_chunk, write_request_head, write_response_head,
};

const REQUEST: &[u8] = b"GET /api/v1/items?id=42&sort=asc HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, br\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Cookie: session=abc123; theme=dark\r\n\
Connection: keep-alive\r\n\
X-Request-Id: 0a1b2c3d-0000-4000-8000-000000000000\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: nginx\r\n\
Date: Thu, 26 Nov 2026 22:00:00 GMT\r\n\
Content-Type: application/json\r\n\
Content-Length: 2\r\n\
Connection: keep-alive\r\n\
Cache-Control: no-store\r\n\r\n";

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    c.bench_function("h1/parse_request_head", |b| {
        let mut parser = RequestParser::new(limits);
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(REQUEST));
            black_box(parser.parse(&mut buf).ok().flatten())
        })
    });
    let mut buf = BytesMut::from(REQUEST);
    let head = RequestParser::new(limits).parse(&mut buf).ok().flatten();
    c.bench_function("h1/write_request_head", |b| {
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            if let Some(head) = &head {
                write_request_head(
                    head,
                    None,
                    BodyOut::None,
                    |_, _| true,
                    &[
                        (b"x-forwarded-for", b"192.0.2.1"),
                        (b"x-forwarded-proto", b"http"),
                    ],
                    &mut out,
                );
            }
            black_box(out.len())
        })
    });
    c.bench_function("h1/parse_and_write_response_head", |b| {
        let mut parser = ResponseParser::new(limits);
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(RESPONSE));
            out.clear();
            if let Ok(Some(head)) = parser.parse(&mut buf, RequestContext::default()) {
                write_response_head(&head, BodyOut::Length(2), |_, _| true, &[], &mut out);
            }
            black_box(out.len())
        })
    });
    let mut body = BytesMut::new();
    for _ in 0..16 {
        encode_chunk_header(1024, &mut body);
        body.extend_from_slice(&[b'x'; 1024]);
        body.extend_from_slice(b"\r\n");
    }
    encode_last_chunk(&[], &mut body);
    c.bench_function("h1/decode_chunked_16k", |b| {
        b.iter(|| {
            let mut d = BodyDecoder::new(Framing::Chunked, &limits);
            let input: &[u8] = black_box(&body);
            let mut at = 0;
            let mut total = 0;
            while let Ok((used, step)) = d.decode(&input[at..]) {
                at += used;
                match step {
                    Step::Data(r) => total += r.len(),
                    Step::End | Step::NeedMore => break,
                    Step::Trailer(_) => {}
                }
            }
            black_box(total)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
