//! Fuzz target: the response side of the `portico-h1` codec, as the upstream client drives
//! it (`portico_h1::drive::run_response`): interim 1xx heads, then the final head framed for
//! the request it answers (a `HEAD`, a `CONNECT`, an upgrade: RFC 9112 §6.3 items 1-2), then
//! its body: none (HEAD, 1xx, 204, 304), Content-Length, chunked with trailers, close-delimited,
//! or a tunnel after a 101 / a 2xx to CONNECT.
//!
//! Arbitrary bytes must never panic it; what it reads must not depend on how the bytes were
//! split into reads; and the framing must follow the request: a body-less answer carries
//! no body bytes, whatever its fields say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portico_h1::drive::run_response;
use portico_h1::{Framing, Limits, RequestContext};

/// Bit 3 of the first control byte: small limits, so the limit paths are reached.
fn limits(sel: u8) -> Limits {
    if sel & 8 == 0 {
        return Limits::default();
    }
    let s = usize::from(sel >> 4);
    Limits {
        max_head: 48 + 4 * s,
        max_headers: 1 + (s & 7),
        max_target: 16,
        max_chunk_line: 3 + s,
        max_trailers: 2 + 2 * s,
    }
}

fuzz_target!(|data: &[u8]| {
    // Three control bytes: what the request was and the limits, then two split points.
    if data.len() < 3 {
        return;
    }
    let (ctl, stream) = data.split_at(3);
    let req = RequestContext {
        head: ctl[0] & 1 != 0,
        connect: ctl[0] & 2 != 0,
        upgrade: ctl[0] & 4 != 0,
    };
    let limits = limits(ctl[0]);
    let n = stream.len();
    let a = ctl[1] as usize % (n + 1);
    let b = ctl[2] as usize % (n + 1);
    let (a, b) = (a.min(b), a.max(b));
    let whole = run_response(&[stream], req, &limits);
    let two = run_response(&[&stream[..a], &stream[a..]], req, &limits);
    assert_eq!(whole, two, "split at {a} changed what was read");
    let three = run_response(&[&stream[..a], &stream[a..b], &stream[b..]], req, &limits);
    assert_eq!(whole, three, "splits at {a},{b} changed what was read");
    if n <= 1024 {
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        let ones = run_response(&bytewise, req, &limits);
        assert_eq!(whole, ones, "one byte per read changed what was read");
    }
    // Framing by status and request (RFC 9112 §6.3 items 1-2).
    for (i, &(status, framing, keep_alive)) in whole.heads.iter().enumerate() {
        let last = i + 1 == whole.heads.len();
        if !last {
            // Only interim answers come before the final one.
            assert!(
                (100..200).contains(&status) && status != 101,
                "{status} before the final head"
            );
        }
        if status == 101 {
            assert!(req.upgrade, "101 to a request without an upgrade");
            assert_eq!(framing, Framing::Tunnel);
        } else if req.head || (100..200).contains(&status) || status == 204 || status == 304 {
            assert_eq!(framing, Framing::None, "status {status}, HEAD {}", req.head);
        } else if req.connect && (200..300).contains(&status) {
            assert_eq!(framing, Framing::Tunnel);
        } else {
            assert_ne!(framing, Framing::Tunnel);
        }
        if matches!(framing, Framing::CloseDelimited | Framing::Tunnel) {
            assert!(!keep_alive);
        }
    }
    if let Some(&(_, framing, _)) = whole.heads.last() {
        match framing {
            Framing::None => assert!(whole.body.is_empty()),
            Framing::Length(len) => assert!(whole.body.len() as u64 <= len),
            _ => {}
        }
        if whole.complete {
            assert!(whole.error.is_none());
            assert!(!matches!(
                framing,
                Framing::CloseDelimited | Framing::Tunnel
            ));
        }
        if !matches!(framing, Framing::Chunked) {
            assert!(whole.trailers.is_empty());
        }
    }
    if let Some(e) = whole.error {
        let _ = (e.upstream_status(), e.as_str());
    }
});
