//! Fuzz target: the strict HTTP/1 gate's scanner (`portico_proxy::downstream::h1_guard`). Arbitrary bytes
//! must never panic it, and its verdict must not depend on how the bytes were split across
//! reads (a split-dependent verdict is how a desync slips through).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_proxy::downstream::h1_guard::{Violation, scan_parts};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose split points; the rest is the stream.
    if data.len() < 2 {
        return;
    }
    let (ctl, stream) = data.split_at(2);
    let whole = scan_parts(&[stream]);
    let n = stream.len();
    let a = if n == 0 { 0 } else { ctl[0] as usize % (n + 1) };
    let b = if n == 0 { 0 } else { ctl[1] as usize % (n + 1) };
    let (a, b) = (a.min(b), a.max(b));
    let two = scan_parts(&[&stream[..a], &stream[a..]]);
    let three = scan_parts(&[&stream[..a], &stream[a..b], &stream[b..]]);
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    let ones = if n <= 512 { scan_parts(&bytewise) } else { whole };
    assert_eq!(whole, two, "split at {a} changed the verdict");
    assert_eq!(whole, three, "splits at {a},{b} changed the verdict");
    assert_eq!(whole, ones, "byte-at-a-time changed the verdict");
    let _ = Violation::from_u8(whole as u8).as_str();
});
