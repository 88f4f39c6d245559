//! Header work on the request path: hop-by-hop stripping, forwarding headers, request ids,
//! and the route's add/remove rules. Each function touches the map as little as it can:
//! header work is a large share of a proxy's per-request cost (PERFORMANCE.md).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use portico_config::snapshot::HeaderAdd;

/// The headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop headers, and any header the `connection` header names. Returns whether
/// the client asked for `te: trailers` (gRPC needs it forwarded over HTTP/2).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass to find out whether there is anything to do at all (the common case: no).
    let mut found = false;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found = true;
            break;
        }
    }
    if !found {
        return false;
    }
    let mut te_trailers = false;
    if let Some(te) = headers.get(header::TE) {
        te_trailers = te
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            if let Ok(n) = HeaderName::from_bytes(token.trim_ascii()) {
                named.push(n);
            }
        }
    }
    for n in named {
        headers.remove(n);
    }
    headers.remove(header::CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::UPGRADE);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    te_trailers
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_EXPECTED_TIMEOUT: HeaderName =
    HeaderName::from_static("x-portico-expected-timeout-ms");
pub static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-portico-attempt-count");

/// Appends `client` to `x-forwarded-for`.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let ip = client.to_string();
    let mut joined = String::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s.trim());
        }
    }
    let value = if joined.is_empty() {
        ip
    } else {
        joined.push_str(", ");
        joined.push_str(&ip);
        joined
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// The last address in `x-forwarded-for`, for listeners that trust their front proxy.
pub fn last_forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all(&X_FORWARDED_FOR).iter().next_back()?;
    let s = last.to_str().ok()?;
    s.rsplit(',').next()?.trim().parse().ok()
}

/// A random request id in UUID v4 form.
pub fn new_request_id() -> HeaderValue {
    let r = fastrand::u128(..);
    let r = (r & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let s = format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        (r >> 96) as u32,
        (r >> 80) as u16,
        (r >> 64) as u16,
        (r >> 48) as u16,
        r & 0xffff_ffff_ffff
    );
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Applies a route's add/remove rules.
pub fn apply_rules(headers: &mut HeaderMap, remove: &[HeaderName], add: &[HeaderAdd]) {
    for name in remove {
        headers.remove(name);
    }
    for a in add {
        if a.append {
            headers.append(a.name.clone(), a.value.clone());
        } else {
            headers.insert(a.name.clone(), a.value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_named_and_fixed_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        assert!(strip_hop_by_hop(&mut h));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "10.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        append_forwarded_for(&mut h, "10.0.0.2".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2");
        assert_eq!(last_forwarded_for(&h), Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        let s = id.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
    }
}
