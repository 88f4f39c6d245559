//! Fuzz target: the request side of the `portico-h1` codec, as the proxy's connection loop
//! drives it (`portico_h1::drive::run_requests`): pipelined request heads, each body decoded
//! by its framing (Content-Length, chunked with extensions and trailers), under the limits.
//!
//! Arbitrary bytes must never panic it, and what it reads (every head's method, target,
//! framing, keep-alive and upgrade flag; every body and trailer; the error that stopped the
//! stream) must be the same whether the bytes arrive whole, split at one or two
//! fuzzer-chosen points, or one byte per read: a verdict that depends on where reads end is
//! how a desync slips through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_h1::Limits;
use portico_h1::drive::run_requests;

/// Limits chosen by the input: the defaults, or small ones so the limit paths are reached
/// with short inputs (bit 0 chooses, the other bits size them).
fn limits(sel: u8) -> Limits {
    if sel & 1 == 0 {
        return Limits::default();
    }
    let s = usize::from(sel >> 1);
    Limits {
        max_head: 48 + s,
        max_headers: 1 + (s & 7),
        max_target: 4 + (s & 31),
        max_chunk_line: 3 + (s & 15),
        max_trailers: 2 + (s & 63),
    }
}

fuzz_target!(|data: &[u8]| {
    // Three control bytes: the limits, then two split points; the rest is the stream.
    if data.len() < 3 {
        return;
    }
    let (ctl, stream) = data.split_at(3);
    let limits = limits(ctl[0]);
    let n = stream.len();
    let a = ctl[1] as usize % (n + 1);
    let b = ctl[2] as usize % (n + 1);
    let (a, b) = (a.min(b), a.max(b));
    let whole = run_requests(&[stream], &limits);
    let two = run_requests(&[&stream[..a], &stream[a..]], &limits);
    assert_eq!(whole, two, "split at {a} changed what was read");
    let three = run_requests(&[&stream[..a], &stream[a..b], &stream[b..]], &limits);
    assert_eq!(whole, three, "splits at {a},{b} changed what was read");
    if n <= 1024 {
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        let ones = run_requests(&bytewise, &limits);
        assert_eq!(whole, ones, "one byte per read changed what was read");
    }
    // What was read is consistent with itself: one body per head; a stream stopped after a
    // last request read no head after it.
    assert_eq!(whole.heads.len(), whole.bodies.len());
    if whole.stopped {
        let last = whole.heads.iter().position(|h| !h.3);
        assert_eq!(last.map(|i| i + 1), Some(whole.heads.len()));
    }
    for (h, (body, trailers)) in whole.heads.iter().zip(&whole.bodies) {
        match h.2 {
            portico_h1::Framing::None => assert!(body.is_empty() && trailers.is_empty()),
            portico_h1::Framing::Length(len) => {
                assert!(body.len() as u64 <= len && trailers.is_empty())
            }
            portico_h1::Framing::Chunked => {}
            // Requests are never close-delimited nor tunnels by their head alone.
            f => panic!("request framing {f:?}"),
        }
    }
    if let Some(e) = whole.error {
        let _ = (e.status(), e.as_str());
    }
});
