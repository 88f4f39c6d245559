//! Fuzz target: a downstream byte stream (pipelined request heads and bodies) through the
//! codec. It must never panic, and what it reads (heads, bodies, trailers, the error) must
//! not depend on how the bytes were split into reads: a split-dependent verdict is how a
//! desync slips past a gate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_h1::Limits;
use portico_h1::drive::run_requests;

fuzz_target!(|data: &[u8]| {
    // Byte 0 picks the limits (small ones reach the limit paths), bytes 1-2 the split points.
    if data.len() < 3 {
        return;
    }
    let (ctl, stream) = data.split_at(3);
    let limits = if ctl[0] & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_head: 48 + (ctl[0] as usize >> 1),
            max_headers: 4,
            max_target: 16,
            max_chunk_line: 12,
            max_trailers: 24,
        }
    };
    let whole = run_requests(&[stream], &limits);
    let n = stream.len();
    let a = ctl[1] as usize % (n + 1);
    let b = ctl[2] as usize % (n + 1);
    let (a, b) = (a.min(b), a.max(b));
    let two = run_requests(&[&stream[..a], &stream[a..]], &limits);
    assert_eq!(whole, two, "split at {a} changed the result");
    let three = run_requests(&[&stream[..a], &stream[a..b], &stream[b..]], &limits);
    assert_eq!(whole, three, "splits at {a},{b} changed the result");
    if n <= 1024 {
        let ones: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(
            whole,
            run_requests(&ones, &limits),
            "byte-at-a-time changed the result"
        );
    }
    if let Some(e) = whole.error {
        let _ = (e.as_str(), e.status());
    }
});
