//! Fuzz target: an upstream's answer (interim heads, the final head, its body) through the
//! codec, for every kind of request (HEAD, CONNECT, upgrade). It must never panic, and the
//! result must not depend on how the bytes were split into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_h1::drive::run_response;
use portico_h1::{Limits, RequestContext};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (ctl, stream) = data.split_at(3);
    let req = RequestContext {
        head: ctl[0] & 1 != 0,
        connect: ctl[0] & 2 != 0,
        upgrade: ctl[0] & 4 != 0,
    };
    let limits = if ctl[0] & 8 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head: 64,
            max_headers: 4,
            max_target: 16,
            max_chunk_line: 12,
            max_trailers: 24,
        }
    };
    let whole = run_response(&[stream], req, &limits);
    let n = stream.len();
    let a = ctl[1] as usize % (n + 1);
    let b = ctl[2] as usize % (n + 1);
    let (a, b) = (a.min(b), a.max(b));
    assert_eq!(
        whole,
        run_response(&[&stream[..a], &stream[a..]], req, &limits),
        "split at {a}"
    );
    assert_eq!(
        whole,
        run_response(&[&stream[..a], &stream[a..b], &stream[b..]], req, &limits),
        "splits at {a},{b}"
    );
    if n <= 1024 {
        let ones: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(whole, run_response(&ones, req, &limits), "byte-at-a-time");
    }
});
