//! How many allocations a request costs: parsing a head allocates its field offsets (one
//! `Vec`) and, the first time a connection buffer is split, the `bytes` shared header; body
//! decoding and head writing into a buffer with room allocate nothing. Counted with a
//! wrapper around the system allocator, so this file holds one test (one thread counting).
// Test-only: the counting allocator has to implement the unsafe `GlobalAlloc` trait; it only
// forwards to `System`. The library itself forbids unsafe code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use portico_h1::{BodyDecoder, BodyOut, Limits, RequestParser, Step, write_request_head};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the arguments it was given.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (r, ALLOCS.load(Ordering::Relaxed) - before)
}

#[test]
fn allocations_per_request() {
    let mut input = b"POST /api/v1/items?id=42 HTTP/1.1\r\nHost: example.com\r\n".to_vec();
    for i in 0..20 {
        input.extend_from_slice(format!("X-Header-{i}: value number {i}\r\n").as_bytes());
    }
    input.extend_from_slice(b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n");
    input.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let mut buf = BytesMut::with_capacity(8192);
    buf.extend_from_slice(&input);
    let mut parser = RequestParser::new(Limits::default());
    let limits = Limits::default();
    let mut out = BytesMut::with_capacity(8192);

    let (head, n) = count(|| parser.parse(&mut buf));
    let head = head.unwrap().unwrap();
    assert!(n <= 2, "parsing a head allocated {n} times");
    assert_eq!(head.headers().len(), 23);

    let (total, n) = count(|| {
        let mut d = BodyDecoder::new(head.framing(), &limits);
        let mut total = 0;
        loop {
            match d.decode(&buf) {
                Ok((used, Step::Data(r))) => {
                    total += r.len();
                    bytes::Buf::advance(&mut buf, used);
                }
                Ok((used, Step::End)) => {
                    bytes::Buf::advance(&mut buf, used);
                    break total;
                }
                Ok((used, _)) => bytes::Buf::advance(&mut buf, used),
                Err(e) => panic!("{e}"),
            }
        }
    });
    assert_eq!(total, 11);
    assert_eq!(n, 0, "decoding a chunked body allocated {n} times");

    let ((), n) = count(|| {
        write_request_head(
            &head,
            None,
            BodyOut::Chunked,
            |_, _| true,
            &[(b"x-forwarded-for", b"192.0.2.1")],
            &mut out,
        )
    });
    assert_eq!(
        n, 0,
        "writing a head into a buffer with room allocated {n} times"
    );
    assert!(out.starts_with(b"POST /api/v1/items?id=42 HTTP/1.1\r\nHost: example.com\r\n"));
}
