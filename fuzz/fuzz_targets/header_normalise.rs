//! Fuzz target: request-header normalisation (`portico_proxy::headers`). Arbitrary header
//! lists go through hop-by-hop stripping, `x-forwarded-for` appending and a route's add/remove
//! rules; afterwards no hop-by-hop header (nor one that `connection` named) may remain, and
//! nothing may panic.
#![no_main]

use std::net::IpAddr;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portico_proxy::headers::{
    append_forwarded_for, last_forwarded_for, strip_hop_by_hop, X_FORWARDED_FOR,
};

#[derive(Debug, Arbitrary)]
struct Input {
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    client: [u8; 16],
    v6: bool,
}

const HOP: [&str; 8] = [
    "connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "keep-alive",
    "proxy-connection",
];

fuzz_target!(|input: Input| {
    let mut h = HeaderMap::new();
    for (n, v) in &input.headers {
        // Names are drawn from the hop-by-hop set half the time so that case is well covered.
        let name = match n.first() {
            Some(&b) if b & 1 == 0 => HeaderName::from_static(HOP[(b as usize >> 1) % HOP.len()]),
            _ => match HeaderName::from_bytes(n.get(1..).unwrap_or_default()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(v) = HeaderValue::from_bytes(v) {
            h.append(name, v);
        }
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for v in h.get_all("connection") {
        for t in v.as_bytes().split(|&b| b == b',') {
            if let Ok(n) = HeaderName::from_bytes(t.trim_ascii()) {
                named.push(n);
            }
        }
    }
    strip_hop_by_hop(&mut h);
    for name in HOP {
        assert!(!h.contains_key(name), "{name} survived stripping");
    }
    for n in &named {
        assert!(!h.contains_key(n), "{n} (named by connection) survived stripping");
    }
    let client: IpAddr = if input.v6 {
        input.client.into()
    } else {
        [input.client[0], input.client[1], input.client[2], input.client[3]].into()
    };
    // The request path passes the peer address pre-rendered (`ConnInfo::peer_ip`).
    let Ok(client_value) = http::HeaderValue::from_str(&client.to_string()) else {
        return;
    };
    append_forwarded_for(&mut h, &client_value);
    assert!(h.get_all(&X_FORWARDED_FOR).iter().count() <= 1);
    // Whatever came before, the client is now the last entry.
    assert_eq!(last_forwarded_for(&h), Some(client));
});
